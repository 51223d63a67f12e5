"""What each Nmap release's loader accepts in ``nmap-service-probes``, as data.

The parser (``parser.py``) reads one grammar; where Nmap releases differ it asks
the :class:`Grammar` it was given. Each profile applies from its first release
until the next profile's; the facts, and the Nmap source commit each one comes
from, are listed in DESIGN.md ("Nmap releases and their probe grammar").

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from vscand.probes.engine import Profile, profile_for_release

__all__ = [
    "DEFAULT_RELEASE",
    "GRAMMARS",
    "Grammar",
    "grammar_for",
    "release_key",
]

RegexLibrary = Literal["pcre", "pcre2"]  # engine.EngineName


@dataclass(frozen=True)
class Grammar:
    """One release range's probe-file grammar and the regex settings it compiles with."""

    #: the first Nmap release with this grammar ("7.93", "7.94", …)
    release: str
    #: fgets() buffer of parse_nmap_service_probe_file: a line holds at most this - 1
    #: bytes including its newline
    line_buffer: int
    #: True: Nmap itself refuses a longer line (fatal "too long"); False: Nmap splits it
    #: and parses the tail as a line of its own, which we refuse instead of guessing
    long_line_fatal: bool
    #: True: the words after a Probe's string are read (``no-payload``); False: ignored
    probe_flags: bool
    #: True: next_template() with char[4] buffers: a mode of at most 3 letters,
    #: ``cpe:`` only with '/', at most 3 flag letters then whitespace
    compact_templates: bool
    #: True: ``nmap -sU`` sends the UDP probes of this file that are not ``no-payload``
    #: (nmap-payloads merged in); False: it reads a separate ``nmap-payloads`` file
    udp_payloads_from_probes: bool
    #: True: a UDP service matched as ``dtls`` is probed again through DTLS, with the
    #: UDP probes' ``sslports``
    dtls_tunnel: bool
    #: True: every UDP probe is sent from a new socket (``startNextProbe`` deletes the
    #: probe's nsock iod and makes a new one, as for TCP); False: one socket per port,
    #: so a late reply to one probe is read by the next
    udp_socket_per_probe: bool
    #: True: an ``nmap-services`` line naming its port ``unknown`` gives no name
    #: (``nmap_services_init`` stores NULL), as if the port were not listed
    unknown_service_unnamed: bool

    # The regex rules of the release: those of its engine profile (vscand.probes.engine), the
    # one place they are kept.

    @property
    def _profile(self) -> Profile:
        return profile_for_release(self.release)

    @property
    def refuse_empty_match(self) -> bool:
        """A pattern that can match the empty string fails the load (PCRE2_INFO_MATCHEMPTY;
        the regex engine answers, see ``parser.EmptyMatchCheck``)."""
        return self._profile.refuse_empty

    @property
    def regex_library(self) -> RegexLibrary:
        """The regex library Nmap compiles match lines with."""
        return self._profile.engine

    @property
    def match_limit(self) -> int:
        return self._profile.match_limit

    @property
    def depth_limit(self) -> int:
        """PCRE's recursion limit, PCRE2's depth limit."""
        return self._profile.depth_limit

    @property
    def heap_limit_kib(self) -> int | None:
        """PCRE2's heap limit (``None``: the library's default, or PCRE)."""
        return self._profile.heap_limit_kib


GRAMMARS: tuple[Grammar, ...] = (
    Grammar(
        release="7.93",
        line_buffer=2048,
        long_line_fatal=False,
        probe_flags=False,
        compact_templates=False,
        udp_payloads_from_probes=False,
        dtls_tunnel=False,
        udp_socket_per_probe=False,
        unknown_service_unnamed=False,
    ),
    Grammar(
        release="7.94",
        line_buffer=2048,
        long_line_fatal=False,
        probe_flags=True,
        compact_templates=True,
        udp_payloads_from_probes=True,
        dtls_tunnel=True,
        udp_socket_per_probe=True,
        unknown_service_unnamed=True,
    ),
    Grammar(
        release="7.95",
        line_buffer=2048,
        long_line_fatal=False,
        probe_flags=True,
        compact_templates=True,
        udp_payloads_from_probes=True,
        dtls_tunnel=True,
        udp_socket_per_probe=True,
        unknown_service_unnamed=True,
    ),
    Grammar(
        release="7.991",
        line_buffer=8192,
        long_line_fatal=True,
        probe_flags=True,
        compact_templates=True,
        udp_payloads_from_probes=True,
        dtls_tunnel=True,
        udp_socket_per_probe=True,
        unknown_service_unnamed=True,
    ),
)

#: what the parser reads when no release is named: Debian 12's Nmap
DEFAULT_RELEASE = "7.93"

_VERSION = re.compile(r"^\s*(\d+)\.(\d+)")


def release_key(version: str) -> tuple[int, int]:
    """``"7.95"``, ``"7.95+dfsg-3"`` or ``"Nmap version 7.95"`` → ``(7, 95)``.

    Nmap numbers its releases as decimals, and 7.991 follows 7.99: comparing the
    digits after the point as an integer keeps that order for every release so far.
    """
    text = version.removeprefix("Nmap version ").strip()
    found = _VERSION.match(text)
    if not found:
        raise ValueError(f"not an Nmap release number: {version!r}")
    return int(found.group(1)), int(found.group(2))


def grammar_for(release: str | Grammar | None = None) -> Grammar:
    """The grammar of an Nmap release (a later, unknown one gets the newest grammar)."""
    if isinstance(release, Grammar):
        return release
    key = release_key(release if release is not None else DEFAULT_RELEASE)
    chosen: Grammar | None = None
    for grammar in GRAMMARS:
        if release_key(grammar.release) <= key:
            chosen = grammar
    if chosen is None:
        raise ValueError(
            f"Nmap {release} is older than the oldest grammar known here ({GRAMMARS[0].release})"
        )
    return chosen
