"""Nmap port specifications (``-p`` syntax) and the ``nmap-services`` table.

Which ``nmap-services``: the one named (``--services``, ``services_file``), else the
one beside a probe file that was named (``--probes``, ``probes_file``: the data
directory of the Nmap release whose probes are used, as Nmap reads every data file
from one directory), else the usual places. The table's names are read as the
reproduced release reads them (:meth:`ServicesTable.for_release`).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from vscand.probes.grammar import Grammar


SERVICES_FILE = "nmap-services"
DEFAULT_SERVICES_PATHS = (
    "/usr/share/nmap/nmap-services",
    "/usr/local/share/nmap/nmap-services",
)


class PortSpecError(ValueError):
    pass


@dataclass(frozen=True)
class ServiceEntry:
    name: str
    port: int
    protocol: str
    frequency: float


@dataclass
class ServicesTable:
    """``nmap-services``: port/protocol → service name, with open frequencies."""

    entries: list[ServiceEntry]
    #: Nmap 7.94+ (services.cc ``nmap_services_init``, b7c76ea08): a line naming its port
    #: ``unknown`` is stored without a name, so the port is reported as an unlisted one
    #: (no ``<service>`` element where nothing else names it)
    unknown_unnamed: bool = False
    _by_port: dict[tuple[int, str], ServiceEntry] = field(
        default_factory=dict, init=False, repr=False
    )

    def __post_init__(self) -> None:
        for entry in self.entries:
            # the first line for a port/protocol wins, as in Nmap
            self._by_port.setdefault((entry.port, entry.protocol), entry)

    def for_release(self, grammar: Grammar) -> ServicesTable:
        """The table as the Nmap release of *grammar* (the probe database's) reads it."""
        if grammar.unknown_service_unnamed == self.unknown_unnamed:
            return self
        return replace(self, unknown_unnamed=grammar.unknown_service_unnamed)

    def name(self, port: int, protocol: str) -> str | None:
        """The port's name for version detection's table answer (None: no name)."""
        entry = self._by_port.get((port, protocol.lower()))
        if entry is None or (self.unknown_unnamed and entry.name == "unknown"):
            return None
        return entry.name

    def top_ports(self, count: int, protocol: str = "tcp") -> list[int]:
        ranked = sorted(
            (e for e in self._by_port.values() if e.protocol == protocol),
            key=lambda e: (-e.frequency, e.port),
        )
        return sorted(e.port for e in ranked[:count])

    def ports_named(self, pattern: str, protocol: str) -> list[int]:
        return sorted(
            port
            for (port, proto), entry in self._by_port.items()
            if proto == protocol and fnmatch.fnmatchcase(entry.name, pattern)
        )

    def has_port(self, port: int, protocol: str) -> bool:
        return (port, protocol) in self._by_port


def parse_services(text: str) -> ServicesTable:
    entries = []
    for raw in text.splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        parts = line.split()
        if len(parts) < 2 or "/" not in parts[1]:
            continue
        port_text, proto = parts[1].split("/", 1)
        try:
            port = int(port_text)
            freq = float(parts[2]) if len(parts) > 2 else 0.0
        except ValueError:
            continue
        entries.append(ServiceEntry(parts[0], port, proto.lower(), freq))
    return ServicesTable(entries)


def find_services_file(path: str | None = None, probes_file: str | None = None) -> str:
    """The ``nmap-services`` to read: *path* if given, else the one in *probes_file*'s
    directory if there is one, else the first of ``DEFAULT_SERVICES_PATHS``."""
    if path:
        if not os.path.isfile(path):
            raise FileNotFoundError(f"nmap-services file {path} not found")
        return path
    candidates = list(DEFAULT_SERVICES_PATHS)
    if probes_file:
        candidates.insert(0, os.path.join(os.path.dirname(probes_file), SERVICES_FILE))
    for candidate in candidates:
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        "nmap-services not found; install Debian's nmap-common package or set services_file"
    )


def load_services(path: str | None = None, *, probes_file: str | None = None) -> ServicesTable:
    """Read ``find_services_file(path, probes_file)``."""
    found = find_services_file(path, probes_file)
    return parse_services(Path(found).read_text("latin-1"))


@dataclass
class PortSpec:
    """Ports by protocol; ``unprefixed`` holds ports given without T:/U:/S:."""

    tcp: set[int] = field(default_factory=set)
    udp: set[int] = field(default_factory=set)
    sctp: set[int] = field(default_factory=set)
    unprefixed: set[int] = field(default_factory=set)

    def resolved(self, default_protocols: tuple[str, ...] = ("tcp",)) -> dict[str, list[int]]:
        """Ports per protocol once unprefixed ports go to the scanned protocols."""
        out = {"tcp": set(self.tcp), "udp": set(self.udp), "sctp": set(self.sctp)}
        for proto in default_protocols:
            out[proto] |= self.unprefixed
        return {k: sorted(v) for k, v in out.items() if v}


def _parse_number(text: str, item: str) -> int:
    # ASCII digits only: str.isdigit() is also true of "²" and other digits int() refuses
    if not (text.isascii() and text.isdigit()):
        raise PortSpecError(f"bad port {item!r}")
    if len(text.lstrip("0")) > 5:  # before int(): thousands of digits cost, and raise
        shown = text if len(text) <= 12 else text[:12] + "..."
        raise PortSpecError(f"port {shown} is out of range (0-65535)")
    value = int(text)
    if value > 65535:
        raise PortSpecError(f"port {value} is out of range (0-65535)")
    return value


def parse_port_spec(text: str, services: ServicesTable | None = None) -> PortSpec:
    """Parse ``22,80,1000-2000,T:443,U:53,http*,[1-1024]``."""
    spec = PortSpec()
    target = spec.unprefixed
    proto_name: str | None = None
    if not text.strip():
        raise PortSpecError("empty port specification")
    for raw in text.split(","):
        item = raw.strip()
        if not item:
            raise PortSpecError(f"empty item in port specification {text!r}")
        if len(item) >= 2 and item[1] == ":" and item[0].upper() in "TUSP":
            letter = item[0].upper()
            if letter == "P":
                raise PortSpecError("IP protocol scans (P:) are not supported")
            proto_name = {"T": "tcp", "U": "udp", "S": "sctp"}[letter]
            target = getattr(spec, proto_name)
            item = item[2:].strip()
            if not item:
                raise PortSpecError(f"no ports after {letter}:")
        only_known = False
        if item.startswith("[") and item.endswith("]"):
            only_known = True
            item = item[1:-1]
        ports = _expand_item(item, raw, proto_name, services)
        if only_known:
            if services is None:
                raise PortSpecError("[...] needs the nmap-services table")
            protos = [proto_name] if proto_name else ["tcp", "udp", "sctp"]
            ports = [p for p in ports if any(services.has_port(p, pr) for pr in protos)]
        target.update(ports)
    return spec


def _expand_item(
    item: str, raw: str, proto_name: str | None, services: ServicesTable | None
) -> list[int]:
    if item and (item[0].isdigit() or item[0] == "-"):
        if "-" in item:
            low_text, high_text = item.split("-", 1)
            low = _parse_number(low_text, raw) if low_text else 1
            high = _parse_number(high_text, raw) if high_text else 65535
            if high < low:
                raise PortSpecError(f"bad range {raw.strip()!r}: {low} > {high}")
            return list(range(low, high + 1))
        return [_parse_number(item, raw)]
    if not item:
        raise PortSpecError(f"bad port {raw.strip()!r}")
    if services is None:
        raise PortSpecError(f"service name {item!r} needs the nmap-services table")
    protos = [proto_name] if proto_name else ["tcp", "udp", "sctp"]
    found = sorted({p for pr in protos for p in services.ports_named(item, pr)})
    if not found:
        raise PortSpecError(f"no service named {item!r} in nmap-services")
    return found
