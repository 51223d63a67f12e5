"""Nmap port specifications (``-p`` syntax) and the ``nmap-services`` table.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import fnmatch
import os
from dataclasses import dataclass, field
from pathlib import Path

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
    _by_port: dict[tuple[int, str], ServiceEntry] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for entry in self.entries:
            # the first line for a port/protocol wins, as in Nmap
            self._by_port.setdefault((entry.port, entry.protocol), entry)

    def name(self, port: int, protocol: str) -> str | None:
        entry = self._by_port.get((port, protocol.lower()))
        return entry.name if entry else None

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


def load_services(path: str | None = None) -> ServicesTable:
    candidates = [path] if path else list(DEFAULT_SERVICES_PATHS)
    for candidate in candidates:
        if candidate and os.path.exists(candidate):
            return parse_services(Path(candidate).read_text("latin-1"))
    raise FileNotFoundError(
        "nmap-services not found; install Debian's nmap-common package or set services_file"
    )


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
    if not text.isdigit():
        raise PortSpecError(f"bad port {item!r}")
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
