"""The datagrams Nmap's UDP port scan sends: the ``nmap-payloads`` file.

Nmap 7.93 finds UDP port states with ``-sU`` before version detection; for a
port listed in ``nmap-payloads`` it sends that protocol-specific payload (every
one listed for the port), else an empty datagram.  ``UDPPortScan`` sends the
same datagrams on its check socket so that a service answering only them is
``open``, as in Nmap.  The file is read from the installed Nmap at run time.

Grammar (as the file itself documents it): ``udp <portlist> "<string>"...
[source <port>]``; strings are C-like with ``\\xHH``, ``\\0``, ``\\r``, ``\\n``,
``\\t``, ``\\\\`` and ``\\"`` escapes, adjacent strings concatenate, ``#`` starts a
comment outside a string.  ``source`` (a fixed source port) is ignored.

From Nmap 7.94 the file is gone: ``payload.cc: init_payloads()`` takes the port scan's
payloads from the probe file instead, every UDP probe without ``no-payload`` for each port of
its ``ports`` line, in file order (:func:`payloads_from_probes`; the probe database's grammar
says which, ``Grammar.udp_payloads_from_probes``). Not reproduced: 7.94+'s
``payload_service_match()``, a version answer from the port scan's reply before ``-sV``.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vscand.probes.model import ProbeDatabase

__all__ = [
    "PAYLOAD_PATHS",
    "PayloadError",
    "UDPPayloads",
    "load_payloads",
    "parse_payloads",
    "payloads_from_probes",
    "port_scan_payloads",
]

PAYLOAD_PATHS = ("/usr/share/nmap/nmap-payloads", "/usr/local/share/nmap/nmap-payloads")

_SIMPLE = {"0": 0, "r": 13, "n": 10, "t": 9, "\\": 92, '"': 34, "a": 7, "b": 8, "f": 12, "v": 11}


class PayloadError(ValueError):
    pass


def _tokens(text: str) -> Iterator[tuple[str, str | bytes, int]]:
    """("word", text, line) or ("string", bytes, line), comments skipped."""
    i, line, n = 0, 1, len(text)
    while i < n:
        c = text[i]
        if c == "\n":
            line += 1
            i += 1
        elif c.isspace():
            i += 1
        elif c == "#":
            while i < n and text[i] != "\n":
                i += 1
        elif c == '"':
            out = bytearray()
            i += 1
            while True:
                if i >= n or text[i] == "\n":
                    raise PayloadError(f"line {line}: unterminated string")
                c = text[i]
                if c == '"':
                    i += 1
                    break
                if c == "\\":
                    if i + 1 >= n:
                        raise PayloadError(f"line {line}: dangling backslash")
                    e = text[i + 1]
                    if e == "x":
                        digits = text[i + 2 : i + 4]
                        try:
                            out.append(int(digits, 16))
                        except ValueError:
                            raise PayloadError(f"line {line}: bad \\x escape") from None
                        i += 4
                        continue
                    if e in _SIMPLE:
                        out.append(_SIMPLE[e])
                        i += 2
                        continue
                    raise PayloadError(f"line {line}: unknown escape \\{e}")
                out += c.encode("latin-1")
                i += 1
            yield ("string", bytes(out), line)
        else:
            start = i
            while i < n and not text[i].isspace() and text[i] not in '"#':
                i += 1
            yield ("word", text[start:i], line)


def _ports(spec: str, line: int) -> list[tuple[int, int]]:
    ranges = []
    for part in spec.split(","):
        lo, _, hi = part.partition("-")
        try:
            first, last = int(lo), int(hi or lo)
        except ValueError:
            raise PayloadError(f"line {line}: bad port list {spec!r}") from None
        if not 0 <= first <= last <= 65535:
            raise PayloadError(f"line {line}: bad port range {part!r}")
        ranges.append((first, last))
    return ranges


class UDPPayloads:
    """Port → the payloads Nmap's UDP scan sends to it, in file order."""

    def __init__(self, entries: list[tuple[list[tuple[int, int]], bytes]]) -> None:
        self._entries = entries

    def __len__(self) -> int:
        return len(self._entries)

    def for_port(self, port: int) -> tuple[bytes, ...]:
        return tuple(
            payload
            for ranges, payload in self._entries
            if any(lo <= port <= hi for lo, hi in ranges)
        )


def parse_payloads(text: str) -> UDPPayloads:
    entries: list[tuple[list[tuple[int, int]], bytes]] = []
    tokens = list(_tokens(text))
    i = 0
    while i < len(tokens):
        kind, value, line = tokens[i]
        if kind != "word" or value != "udp":
            raise PayloadError(f"line {line}: expected 'udp', got {value!r}")
        if i + 1 >= len(tokens) or tokens[i + 1][0] != "word":
            raise PayloadError(f"line {line}: 'udp' without a port list")
        ranges = _ports(str(tokens[i + 1][1]), line)
        i += 2
        payload = b""
        while i < len(tokens) and tokens[i][0] == "string":
            payload += bytes(tokens[i][1])  # type: ignore[arg-type]
            i += 1
        if i < len(tokens) and tokens[i][:2] == ("word", "source"):
            i += 2  # a fixed source port: not reproduced
        entries.append((ranges, payload))
    return UDPPayloads(entries)


def load_payloads(path: str | None = None) -> UDPPayloads:
    """The installed ``nmap-payloads`` (empty when there is none: empty datagrams)."""
    candidates = [path] if path else list(PAYLOAD_PATHS)
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return parse_payloads(Path(candidate).read_text(encoding="latin-1"))
    return UDPPayloads([])


def payloads_from_probes(db: ProbeDatabase) -> UDPPayloads:
    """Nmap 7.94+'s port scan payloads: the file's UDP probes without ``no-payload``, each for
    the ports of its ``ports`` line, in file order (``init_payloads()``)."""
    return UDPPayloads(
        [
            (probe.ports.ranges(), probe.string)
            for probe in db.probes
            if probe.protocol == "UDP" and not probe.no_payload and probe.ports
        ]
    )


def port_scan_payloads(db: ProbeDatabase, path: str | None = None) -> UDPPayloads:
    """The port scan's payloads of the release whose grammar read ``db``: from the probe file
    (7.94+), else the installed ``nmap-payloads`` (7.93)."""
    if db.grammar.udp_payloads_from_probes:
        return payloads_from_probes(db)
    return load_payloads(path)
