"""Which regex engine matches, with which limits: those of the Nmap release reproduced.

Nmap changed its regex library once and its limits twice (facts from ``service_scan.cc``;
see :mod:`vscand.probes.pcre` and :mod:`vscand.probes.pcre2` for lines and commits):

============  ==========  ===========  ===========  ==========  =======================
profile       releases    library      match limit  depth       heap / empty patterns
============  ==========  ===========  ===========  ==========  =======================
nmap-7.93     7.93, 7.94  PCRE 8       100 000      10 000      - / accepted
nmap-7.95     7.95-7.99   PCRE2        100 000      10 000      library default / accepted
nmap-7.991    7.991-      PCRE2        50 000       1 000       10 240 KiB / refused
============  ==========  ===========  ===========  ==========  =======================

``regex_engine`` (config key, ``--regex-engine``) is one of:

``auto`` (default)
    the profile of the Nmap release that goes with the probe file: for Nmap's installed
    file, the installed Nmap (``dpkg-query`` of ``nmap-common``, else ``nmap --version``);
    for any other file, the release whose file it is
    (:data:`~vscand.probes.release.RELEASE_FILES`: content digests, ``$Id:`` line aside,
    so a copy from a tarball, a package or Nmap's git repository is recognised alike), else
    the release its ``$Id:`` header dates it to, else the installed Nmap; when nothing
    tells, ``nmap-7.93`` (vscand's reference).
``pcre``
    ``nmap-7.93``.
``pcre2``
    ``nmap-7.95``: the PCRE2 engine as Debian 13's Nmap 7.95 runs it.
``nmap-X.Y``
    the profile of Nmap release X.Y (7.93 or later), e.g. ``nmap-7.95`` for a 7.95 probe
    file on a machine whose installed Nmap is 7.93.

Pure code: nothing here imports Twisted.  The libraries are loaded on first compile.
"""

from __future__ import annotations

import functools
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, Protocol

from vscand.probes.release import (
    Runner,
    content_release,
    header_release,
    installed_release,
    installed_release_cached,
)

if TYPE_CHECKING:
    from vscand.probes import pcre2
    from vscand.probes.pcre import Match

EngineName = Literal["pcre", "pcre2"]


class CompiledPattern(Protocol):
    """What the matcher and the templates use of a compiled pattern (either engine)."""

    source: bytes
    flags: int
    capture_count: int

    def search(self, subject: bytes) -> Match | None: ...

    def hits(self, subject: bytes) -> bool: ...

    def search_status(self, subject: bytes) -> int: ...


@dataclass(frozen=True)
class Profile:
    """The regex library and limits of a range of Nmap releases."""

    name: str
    engine: EngineName
    #: first release of the range, as (major, minor)
    since: tuple[int, int]
    releases: str
    match_limit: int
    #: PCRE 8's ``match_limit_recursion``, PCRE2's depth limit
    depth_limit: int
    #: PCRE2's heap limit in KiB; ``None``: the library's default (PCRE 8 has none)
    heap_limit_kib: int | None
    #: patterns that can match the empty string fail the load
    refuse_empty: bool
    #: where the values come from
    reference: str


NMAP_7_93 = Profile(
    name="nmap-7.93",
    engine="pcre",
    since=(7, 93),
    releases="7.93-7.94",
    match_limit=100_000,
    depth_limit=10_000,
    heap_limit_kib=None,
    refuse_empty=False,
    reference="service_scan.cc at 9732e6979 (Nmap 7.93), lines 407-440 and 505-530",
)
NMAP_7_95 = Profile(
    name="nmap-7.95",
    engine="pcre2",
    since=(7, 95),
    releases="7.95-7.99",
    match_limit=100_000,
    depth_limit=10_000,
    heap_limit_kib=None,
    refuse_empty=False,
    reference="service_scan.cc at 95b974b10 (Nmap 7.95), lines 421-456 and 533-546",
)
NMAP_7_991 = Profile(
    name="nmap-7.991",
    engine="pcre2",
    since=(7, 991),
    releases="7.991-",
    match_limit=50_000,
    depth_limit=1_000,
    heap_limit_kib=10_240,
    refuse_empty=True,
    reference="service_scan.cc at db4aefddf (HEAD; values as in 7.991, 542eda7cf), "
    "lines 421-465 and 542-553",
)
PROFILES = (NMAP_7_93, NMAP_7_95, NMAP_7_991)

SPEC_CHOICES = ("auto", "pcre", "pcre2")
_RELEASE = re.compile(r"nmap-([0-9]+)\.([0-9]+)")
SPEC_HELP = "auto, pcre, pcre2 or nmap-X.Y (the engine and limits of Nmap release X.Y)"


class EngineSpecError(ValueError):
    """A ``regex_engine`` value that is not one of the forms above."""


def release_key(release: str) -> tuple[int, int]:
    major, _, minor = release.partition(".")
    return int(major), int(minor)


def profile_for_release(release: str) -> Profile:
    key = release_key(release)
    if key < NMAP_7_93.since:
        raise EngineSpecError(f"Nmap {release} is older than 7.93, the first release reproduced")
    chosen = NMAP_7_93
    for profile in PROFILES:
        if key >= profile.since:
            chosen = profile
    return chosen


def check_spec(value: str) -> str:
    """``value`` normalised (lower case, trimmed), or :class:`EngineSpecError`."""
    text = value.strip().lower()
    if text in SPEC_CHOICES:
        return text
    found = _RELEASE.fullmatch(text)
    if found is None:
        raise EngineSpecError(f"must be {SPEC_HELP}, not {value!r}")
    profile_for_release(f"{found[1]}.{found[2]}")
    return text


@dataclass(frozen=True)
class Engine:
    """A profile, and why it was chosen; compiles patterns with its library and limits."""

    profile: Profile
    #: the ``regex_engine`` value asked for
    requested: str = "pcre"
    #: the Nmap release reproduced, when known
    release: str | None = None
    #: how the profile was chosen
    reason: str = "default"

    @property
    def name(self) -> EngineName:
        return self.profile.engine

    def compile(
        self, source: bytes, *, caseless: bool = False, dotall: bool = False
    ) -> CompiledPattern:
        # the libraries' modules are imported on first use: the config does not need cffi
        if self.profile.engine == "pcre":
            from vscand.probes import pcre  # noqa: PLC0415

            return pcre.Pattern(source, caseless=caseless, dotall=dotall)
        from vscand.probes import pcre2  # noqa: PLC0415

        return pcre2.Pattern(source, caseless=caseless, dotall=dotall, limits=_limits(self.profile))

    def library_version(self) -> str:
        if self.profile.engine == "pcre":
            from vscand.probes import pcre  # noqa: PLC0415

            return pcre.version()
        from vscand.probes import pcre2  # noqa: PLC0415

        return pcre2.version()

    @property
    def cache_tag(self) -> str:
        """What the prefilter cache key adds for this engine ("" for PCRE 8: key unchanged)."""
        if self.profile.engine == "pcre":
            return ""
        return f"{self.profile.engine}:{self.library_version()}:{self.profile.name}"

    def describe(self) -> dict[str, Any]:
        """For ``vscan probes --stats``: the engine, its library and the limits in force."""
        profile = self.profile
        heap = profile.heap_limit_kib
        heap_source = "nmap"
        if profile.engine == "pcre2" and heap is None:
            from vscand.probes import pcre2  # noqa: PLC0415

            heap = pcre2.library_defaults()["heap_limit_kib"]
            heap_source = "library default"
        return {
            "name": profile.engine,
            "library": self.library_version(),
            "profile": profile.name,
            "nmap_releases": profile.releases,
            "nmap_release": self.release,
            "requested": self.requested,
            "chosen_by": self.reason,
            "match_limit": profile.match_limit,
            "depth_limit": profile.depth_limit,
            "heap_limit_kib": heap,
            "heap_limit_source": heap_source if heap is not None else None,
            "refuse_empty_patterns": profile.refuse_empty,
            "jit": False,
        }


@functools.cache
def _limits(profile: Profile) -> pcre2.Limits:
    from vscand.probes import pcre2  # noqa: PLC0415

    return pcre2.Limits(
        match_limit=profile.match_limit,
        depth_limit=profile.depth_limit,
        heap_limit_kib=profile.heap_limit_kib,
        refuse_empty=profile.refuse_empty,
    )


@functools.cache
def default_engine() -> Engine:
    """The engine of a database or a line no ``regex_engine`` was chosen for (probe text held
    in memory, a line built by hand): the installed Nmap's, as ``auto`` picks for Nmap's own
    file, so that a machine uses the regex library its Nmap links (Debian 12: PCRE 8;
    Debian 13, which has no PCRE 8: PCRE2); 7.93's when no Nmap is installed.  Resolved once
    per process, on first use."""
    found = installed_release_cached()
    if found is None:
        return Engine(NMAP_7_93, "default", None, "no Nmap installed: 7.93's rules")
    release, how = found
    try:
        profile = profile_for_release(release)
    except EngineSpecError:
        return Engine(NMAP_7_93, "default", release, f"{how}; before 7.93: 7.93's rules")
    return Engine(profile, "default", release, f"installed Nmap ({how})")


def _read(path: str) -> bytes:
    try:
        with open(path, "rb") as f:
            return f.read()
    except OSError:
        return b""


def _same_file(a: str, b: str) -> bool:
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def resolve(
    spec: str,
    probes_file: str,
    *,
    installed_paths: Sequence[str] = (),
    run: Runner | None = None,
) -> Engine:
    """The engine for ``regex_engine = spec`` and the primary probe file ``probes_file``.

    ``installed_paths``: where Nmap's installed probe file may be (the parser's defaults);
    ``run``: how commands are run (tests); default: really, once per process.
    """
    requested = check_spec(spec)
    if requested == "pcre":
        return Engine(NMAP_7_93, requested, None, "regex_engine = pcre")
    if requested == "pcre2":
        return Engine(NMAP_7_95, requested, None, "regex_engine = pcre2")
    if requested != "auto":
        given = requested.removeprefix("nmap-")
        return Engine(profile_for_release(given), requested, given, f"regex_engine = {requested}")

    def installed() -> tuple[str, str] | None:
        return installed_release_cached() if run is None else installed_release(run)

    is_installed = any(_same_file(probes_file, path) for path in installed_paths)
    candidates: list[tuple[str | None, str] | None] = []
    if is_installed:
        candidates.append(installed())
    data = _read(probes_file)
    candidates.append(content_release(data))
    candidates.append(header_release(data[:4096]))
    if not is_installed:
        found = installed()
        if found is not None:
            candidates.append((found[0], f"installed Nmap ({found[1]})"))
    for candidate in candidates:
        if candidate is None:
            continue
        release, reason = candidate
        if release is None:
            # dated after the newest release we know: its successors keep the newest rules
            return Engine(PROFILES[-1], requested, None, reason)
        try:
            return Engine(profile_for_release(release), requested, release, reason)
        except EngineSpecError:
            return Engine(NMAP_7_93, requested, release, f"{reason}; before 7.93: 7.93's rules")
    return Engine(NMAP_7_93, requested, None, "no Nmap release found: 7.93's rules")
