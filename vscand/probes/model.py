"""The probe database as data: probes, their match lines and port lists.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import bisect
import threading
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from typing import Literal

from vscand.probes.engine import CompiledPattern, Engine, default_engine
from vscand.probes.grammar import Grammar, grammar_for

Protocol = Literal["TCP", "UDP"]


class PortRanges:
    """A set of ports stored as sorted, merged ``(low, high)`` ranges."""

    __slots__ = ("_highs", "_lows")

    def __init__(self, ranges: Iterable[tuple[int, int]] = ()) -> None:
        merged: list[list[int]] = []
        for low, high in sorted(ranges):
            if merged and low <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], high)
            else:
                merged.append([low, high])
        self._lows = [r[0] for r in merged]
        self._highs = [r[1] for r in merged]

    def __contains__(self, port: object) -> bool:
        if not isinstance(port, int):
            return False
        i = bisect.bisect_right(self._lows, port) - 1
        return i >= 0 and port <= self._highs[i]

    def __bool__(self) -> bool:
        return bool(self._lows)

    def __eq__(self, other: object) -> bool:
        return isinstance(other, PortRanges) and self.ranges() == other.ranges()

    def __hash__(self) -> int:
        return hash(tuple(self.ranges()))

    def ranges(self) -> list[tuple[int, int]]:
        return list(zip(self._lows, self._highs, strict=True))

    def union(self, other: PortRanges) -> PortRanges:
        return PortRanges(self.ranges() + other.ranges())

    def __len__(self) -> int:
        return sum(h - lo + 1 for lo, h in zip(self._lows, self._highs, strict=True))

    def __iter__(self) -> Iterator[int]:
        for low, high in zip(self._lows, self._highs, strict=True):
            yield from range(low, high + 1)

    def __repr__(self) -> str:
        return (
            "PortRanges("
            + ",".join(f"{lo}" if lo == h else f"{lo}-{h}" for lo, h in self.ranges())
            + ")"
        )


@dataclass(frozen=True)
class Templates:
    """Version-info templates of one match line, unexpanded (bytes)."""

    product: bytes | None = None
    version: bytes | None = None
    extrainfo: bytes | None = None
    hostname: bytes | None = None
    ostype: bytes | None = None
    devicetype: bytes | None = None
    cpes: tuple[bytes, ...] = ()


@dataclass(eq=False)
class MatchLine:
    """One ``match`` or ``softmatch`` line."""

    service: str
    pattern: bytes
    caseless: bool
    dotall: bool
    soft: bool
    templates: Templates
    probe_name: str
    probe_protocol: Protocol
    filename: str
    lineno: int
    #: position of this line in the whole database (file order, extra files after)
    index: int = -1
    _compiled: CompiledPattern | None = field(default=None, repr=False)
    #: the regex library and limits this line is compiled with (the database's)
    engine: Engine = field(default_factory=default_engine, repr=False)

    @property
    def compiled(self) -> CompiledPattern:
        pattern = self._compiled
        if pattern is None:
            with _COMPILE_LOCK:
                pattern = self._compiled
                if pattern is None:
                    pattern = self.engine.compile(
                        self.pattern, caseless=self.caseless, dotall=self.dotall
                    )
                    self._compiled = pattern
        return pattern

    def where(self) -> str:
        return f"{self.filename}:{self.lineno}"


_COMPILE_LOCK = threading.Lock()


@dataclass(eq=False)
class Probe:
    protocol: Protocol
    name: str
    string: bytes
    filename: str
    lineno: int
    #: ``no-payload`` after the probe string (read from Nmap 7.94 on): Nmap's UDP port
    #: scan (-sU) does not send this probe as a payload; version detection (-sV) still
    #: sends it. Only UDP probes matter: the port scan's payloads are the UDP probes of
    #: the file (7.94 merged nmap-payloads into it), listed by their ``ports``.
    no_payload: bool = False
    #: the words after the probe string, as written (``no-payload``, ``source=500``);
    #: Nmap 7.93 ignores them all, later releases read only ``no-payload``
    options: tuple[str, ...] = ()
    ports: PortRanges = field(default_factory=PortRanges)
    sslports: PortRanges = field(default_factory=PortRanges)
    rarity: int = 5
    totalwaitms: int = 5000
    tcpwrappedms: int = 2000
    fallback_names: tuple[str, ...] = ()
    matches: list[MatchLine] = field(default_factory=list)
    #: the resolved chain whose lines are tried against this probe's responses
    chain: list[Probe] = field(default_factory=list, repr=False)

    @property
    def is_null(self) -> bool:
        return not self.string

    @property
    def source_port(self) -> int | None:
        """``source=N`` after the probe string: the fixed source port nmap-payloads had
        for the probe (IKE's 500). Recorded only: no Nmap release's code reads it."""
        for word in self.options:
            if word.startswith("source="):
                value = word[7:]
                if value.isdigit() and int(value) <= 65535:
                    return int(value)
        return None

    @property
    def services(self) -> frozenset[str]:
        """Service names this probe's own lines can name (soft-match pruning)."""
        return frozenset(m.service for m in self.matches)

    def port_list(self, tunnel_ssl: bool) -> PortRanges:
        return self.sslports if tunnel_ssl else self.ports


@dataclass(frozen=True)
class ExcludeSpec:
    """The ``Exclude`` directive: ports by protocol, and unprefixed ports.

    Unprefixed ports apply only to the protocols being scanned (Nmap's getpts
    quirk), which the scanner resolves with :meth:`excludes`.
    """

    tcp: PortRanges = field(default_factory=PortRanges)
    udp: PortRanges = field(default_factory=PortRanges)
    sctp: PortRanges = field(default_factory=PortRanges)
    any_proto: PortRanges = field(default_factory=PortRanges)

    def excludes(self, protocol: str, port: int, scanned_protocols: Iterable[str]) -> bool:
        proto = protocol.upper()
        table = {"TCP": self.tcp, "UDP": self.udp, "SCTP": self.sctp}
        if port in table.get(proto, PortRanges()):
            return True
        scanned = {p.upper() for p in scanned_protocols}
        return proto in scanned and port in self.any_proto


@dataclass
class ProbeDatabase:
    """Every probe of the loaded files, in file order, and the NULL probe."""

    probes: list[Probe]
    null_probe: Probe | None
    exclude: ExcludeSpec
    files: list[str]
    #: every match line in database order (``lines[i].index == i``)
    lines: list[MatchLine]
    digest: str = ""
    #: the Nmap release grammar the files were read with
    grammar: Grammar = field(default_factory=grammar_for)
    #: match lines whose empty-match refusal (``grammar.refuse_empty_match``) could not
    #: be checked: the regex engine has no ``matches_empty()`` (PCRE 8)
    empty_match_unchecked: int = 0
    #: the regex library and limits every line is compiled with
    engine: Engine = field(default_factory=default_engine)

    @property
    def nmap_release(self) -> str:
        """The Nmap release reproduced, as its service fingerprints' ``V=`` field says: the
        engine's release when known (``auto`` found the file's) and the files were read with
        that release's grammar, else the grammar's release (7.93 by default)."""
        release = self.engine.release
        if release is not None and grammar_for(release) == self.grammar:
            return release
        return self.grammar.release

    def find(self, name: str, protocol: str | None = None) -> Probe:
        """A probe by name; TCP first when the protocol is not given."""
        if name == "NULL" and self.null_probe is not None and protocol in (None, "TCP"):
            return self.null_probe
        candidates = [p for p in self.probes if p.name == name]
        if protocol is not None:
            candidates = [p for p in candidates if p.protocol == protocol.upper()]
        if not candidates:
            raise KeyError(name if protocol is None else f"{protocol.upper()}/{name}")
        tcp = [p for p in candidates if p.protocol == "TCP"]
        return (tcp or candidates)[0]

    def all_probes(self) -> list[Probe]:
        return ([self.null_probe] if self.null_probe else []) + self.probes
