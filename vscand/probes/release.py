"""Which Nmap release a probe file belongs to: the installed Nmap's (Debian's
``nmap-common``, else ``nmap --version``), a known release's file by its content, or
the release its ``$Id:`` header dates it to. ``engine.resolve`` asks these in turn.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import functools
import hashlib
import os
import re
import subprocess
from collections.abc import Callable, Sequence

#: release dates (CHANGELOG), to date a probe file by its ``$Id:`` header
RELEASE_DATES: tuple[tuple[str, str], ...] = (
    ("7.93", "2022-09-01"),
    ("7.94", "2023-05-19"),
    ("7.95", "2024-04-23"),
    ("7.96", "2025-05-01"),
    ("7.97", "2025-05-12"),
    ("7.98", "2025-08-21"),
    ("7.99", "2026-03-26"),
    ("7.991", "2026-08-06"),
)

#: SHA-256 of each release's nmap-service-probes with its ``$Id`` keyword line reduced to
#: ``$Id$`` (:func:`content_digest`), from Nmap's repository at the release commits:
#: 9732e6979 (7.93; the same as Debian 12's installed file), 72d67cf40 (7.94), 95b974b10
#: (7.95), c66baf785 (7.96; 7.97's ec3b1d264 is the same file), 58874849d (7.98), deb076224
#: (7.99), 542eda7cf (7.991)
RELEASE_FILES: dict[str, str] = {
    "146693dae873015b201e64f711e2321721a702b21f3a6113b4ee798961e7301f": "7.93",
    "4ca666674246ee3737c6dee767eaddc4b1be9ff2edd1a42da53431a47e9716d5": "7.94",
    "b1e8e8c2d4fe33c67c4180e0e50971e49ff176a525102f5af5ac4f4dd72b571a": "7.95",
    "6aac5268edf770b6a715725050d6c1da14f91b26162581f2f90cac36892c603c": "7.96",
    "df5d5e897becbf52fbae2b577bc087962466037e4a84e0cf48ee5a363647e919": "7.98",
    "4d24a09dd6c33bb84295b0ea36dcd9bfe6f46e2e3ca63a6d3a1094de3f8d9137": "7.99",
    "96ed82b551b7eba85e4c8f0020be95e6b95838332c7c7a9befae5bc4ec53eb87": "7.991",
}


Runner = Callable[[Sequence[str]], "str | None"]


def run_command(argv: Sequence[str]) -> str | None:
    """``argv``'s standard output, or ``None`` when it cannot run or fails."""
    try:
        done = subprocess.run(
            list(argv),
            capture_output=True,
            text=True,
            timeout=10,
            check=False,
            env={**os.environ, "LC_ALL": "C"},
        )
    except (OSError, subprocess.SubprocessError):
        return None
    return done.stdout if done.returncode == 0 else None


def installed_release(run: Runner = run_command) -> tuple[str, str] | None:
    """The installed Nmap's release and how it was found, or ``None``.

    Debian's ``nmap-common`` (the package that ships the probe file) first, then the
    ``nmap`` on ``$PATH``.
    """
    out = run(["dpkg-query", "-W", "-f=${db:Status-Status} ${Version}", "nmap-common"])
    if out:
        status, _, version = out.strip().partition(" ")
        found = re.match(r"(?:[0-9]+:)?([0-9]+\.[0-9]+)", version)
        if status == "installed" and found:
            return found[1], f"dpkg-query: nmap-common {version}"
    out = run(["nmap", "--version"])
    if out:
        found = re.search(r"Nmap version ([0-9]+\.[0-9]+)", out)
        if found:
            return found[1], f"nmap --version: {found[1]}"
    return None


@functools.cache
def installed_release_cached() -> tuple[str, str] | None:
    return installed_release()


_ID_KEYWORD = re.compile(rb"^(#[ \t]*)\$Id(?::[^$\n]*)?\$", re.MULTILINE)


def content_digest(data: bytes) -> str:
    """SHA-256 of a probe file with its ``$Id`` line (in the first 4 KiB) made ``$Id$``."""
    head = _ID_KEYWORD.sub(rb"\1$Id$", data[:4096], count=1)
    return hashlib.sha256(head + data[4096:]).hexdigest()


def content_release(data: bytes) -> tuple[str, str] | None:
    """The release whose probe file ``data`` is, if it is one of :data:`RELEASE_FILES`."""
    release = RELEASE_FILES.get(content_digest(data))
    if release is None:
        return None
    return release, f"probe file content: Nmap {release}'s nmap-service-probes"


_ID_HEADER = re.compile(
    rb"^#[ \t]*\$Id: nmap-service-probes[ ,v]* [0-9.]+ ([0-9]{4})[-/]([0-9]{2})[-/]([0-9]{2})",
    re.MULTILINE,
)


def header_release(head: bytes) -> tuple[str | None, str] | None:
    """The release a probe file's ``$Id:`` header dates it to: the first release on or after
    the file's last change.  ``(None, why)`` when the date is outside the known releases."""
    found = _ID_HEADER.search(head)
    if found is None:
        return None
    date = "-".join(part.decode() for part in found.groups())
    for release, released in RELEASE_DATES:
        if date <= released:
            return release, f"probe file $Id: dated {date}"
    newest = RELEASE_DATES[-1][0]
    return None, f"probe file $Id: dated {date}, after Nmap {newest}"
