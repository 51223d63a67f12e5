"""Whether PCRE 8 (``libpcre.so.3``, Debian's ``libpcre3``) loads on this system.

Nmap 7.93's regex library, behind vscand's ``pcre`` engine. Debian 12 has it (``make``
installs it there); Debian 13 has no ``libpcre3`` package at all, and its Nmap 7.95 probe
file selects the PCRE2 engine. Tests of the PCRE 8 engine itself are skipped where the
library does not exist, with the reason; under CI on Debian 12 or older, where ``make``
installs it, they run (and fail) instead.
"""

from __future__ import annotations

import os

import pytest

from vscand.probes import pcre


def _missing() -> str | None:
    try:
        pcre.library()
    except pcre.PcreError as exc:
        return str(exc).split(" (tried:")[0]
    return None


def _has_libpcre3_package() -> bool:
    """Debian 12 and older ship libpcre3 (VERSION_ID of /etc/os-release)."""
    try:
        with open("/etc/os-release", encoding="utf-8") as release:
            fields = dict(line.rstrip("\n").split("=", 1) for line in release if "=" in line)
    except OSError:
        return False
    version = fields.get("VERSION_ID", "").strip('"')
    return fields.get("ID") == "debian" and version.isdigit() and int(version) <= 12


MISSING = _missing()
AVAILABLE = MISSING is None
_SKIP = not AVAILABLE and not (os.environ.get("CI") == "true" and _has_libpcre3_package())

#: mark for tests that need PCRE 8 itself (the ``pcre`` engine, Nmap 7.93's profile)
needs_pcre8 = pytest.mark.skipif(
    _SKIP, reason=f"PCRE 8 is not on this system (Debian 13 has no libpcre3): {MISSING}"
)
