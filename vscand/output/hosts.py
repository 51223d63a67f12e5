"""What Nmap's report formats share: hosts, port order, ignored states, times.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

Result = Mapping[str, Any]

#: Nmap 7.93 collapses a non-open state into "Not shown" / <extraports> when more
#: ports than this are in it (PortList::isIgnoredState at verbosity 0; checked
#: with nmap -sT on 127.0.0.1: 25 closed ports are listed, 26 are not).
MAX_SHOWN_PER_STATE = 25
#: states never collapsed (Nmap: open; also the transient ones it never prints)
NEVER_IGNORED = frozenset({"open"})
_PROTO_ORDER = {"tcp": 0, "udp": 1, "sctp": 2, "ip": 3}


@dataclass(frozen=True)
class ScanMeta:
    """Run-level facts the reports print (Nmap's command line, times)."""

    args: str
    start: float
    end: float
    #: -sV ran: the VERSION column, the `?` rule, the footer line
    version_scan: bool = True
    #: ports requested per protocol (XML <scaninfo>); default: those in the results
    ports: Mapping[str, Sequence[int]] | None = None
    #: targets given but found down / not scanned (counted in "N IP addresses")
    hosts_down: int = 0
    program: str = "vscan"
    nmap_version: str = "7.93"
    #: the run was interrupted (Ctrl-C): the reports hold the ports that had ended, and say so
    interrupted: str | None = None
    #: print the version scripts' output (-oN ``|`` lines, -oX ``<script>``): Nmap does only
    #: when script scanning was asked for (``o.script``: ``nmap -sV --script=version``), never
    #: for ``-sV`` alone
    script_output: bool = False


@dataclass
class Host:
    """One address and its port results in Nmap's order (tcp, then udp; by port)."""

    address: str
    hostname: str | None
    ports: list[Result] = field(default_factory=list)
    #: the hostname's other addresses, not scanned (the results' ``other_addresses``)
    other_addresses: tuple[str, ...] = ()

    def name_ip(self) -> str:
        """Nmap's ``NameIP``: ``name (addr)`` or just ``addr``."""
        return f"{self.hostname} ({self.address})" if self.hostname else self.address

    @property
    def addrtype(self) -> str:
        return "ipv6" if ":" in self.address else "ipv4"

    def times(self, meta: ScanMeta) -> tuple[int, int]:
        """(start, end) Unix seconds of this host's scan (from the results if they say)."""
        starts: list[float] = []
        ends: list[float] = []
        for result in self.ports:
            when = parse_time(result.get("scanned_at"))
            if when is None:
                continue
            # scanned_at is when the port's scan ended (DESIGN's result format)
            starts.append(when - (result.get("duration_ms") or 0) / 1000.0)
            ends.append(when)
        start = min(starts) if starts else meta.start
        end = max(ends) if ends else meta.end
        # inside the run's own times (scanned_at has whole seconds: a port that ended at
        # .9 s would otherwise seem to start before the run did)
        start = min(max(start, meta.start), meta.end)
        end = max(min(end, meta.end), start)
        return int(start), int(end)


@dataclass(frozen=True)
class IgnoredGroup:
    """One collapsed state: its count and, per (protocol, reason), the ports."""

    state: str
    count: int
    reasons: tuple[tuple[str, str, tuple[int, ...]], ...]  # (proto, reason, ports)


def parse_time(value: object) -> float | None:
    if isinstance(value, int | float):
        return float(value)
    if not isinstance(value, str) or not value:
        return None
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError:
        return None


def port_key(result: Result) -> tuple[int, int]:
    return (_PROTO_ORDER.get(str(result.get("protocol")), 9), int(result["port"]))


def group_hosts(results: Iterable[Result]) -> list[Host]:
    """Hosts in first-seen order; each host's ports sorted as Nmap lists them."""
    hosts: dict[str, Host] = {}
    for result in results:
        address = str(result["host"])
        host = hosts.get(address)
        if host is None:
            host = hosts[address] = Host(address, None)
        if host.hostname is None and result.get("hostname"):
            host.hostname = result["hostname"]
            host.other_addresses = tuple(map(str, result.get("other_addresses") or ()))
        host.ports.append(result)
    for host in hosts.values():
        host.ports.sort(key=port_key)
    return list(hosts.values())


def _by_count(counts: dict[Any, int]) -> list[Any]:
    """Keys by descending count, ties in first-seen order."""
    order = {key: i for i, key in enumerate(counts)}
    return sorted(counts, key=lambda key: (-counts[key], order[key]))


def ignored_groups(ports: Sequence[Result]) -> list[IgnoredGroup]:
    """The states Nmap collapses, most common first."""
    counts: dict[str, int] = {}
    for result in ports:
        state = str(result.get("state"))
        counts[state] = counts.get(state, 0) + 1
    groups = []
    for state in _by_count(counts):
        if state in NEVER_IGNORED or counts[state] <= MAX_SHOWN_PER_STATE:
            continue
        per_reason: dict[tuple[str, str], list[int]] = {}
        for result in ports:
            if result.get("state") == state:
                key = (str(result.get("protocol")), str(result.get("reason") or "unknown"))
                per_reason.setdefault(key, []).append(int(result["port"]))
        sizes = {key: len(value) for key, value in per_reason.items()}
        reasons = tuple(
            (proto, reason, tuple(per_reason[(proto, reason)]))
            for proto, reason in _by_count(sizes)
        )
        groups.append(IgnoredGroup(state, counts[state], reasons))
    return groups


def port_ranges(ports: Iterable[int]) -> str:
    """``1-21,23,25-30``: Nmap's compact port list."""
    values = sorted(set(ports))
    out: list[str] = []
    i = 0
    while i < len(values):
        j = i
        while j + 1 < len(values) and values[j + 1] == values[j] + 1:
            j += 1
        out.append(str(values[i]) if i == j else f"{values[i]}-{values[j]}")
        i = j + 1
    return ",".join(out)


def ctime(when: float) -> str:
    """Nmap's date form: ``Sun Nov 22 11:47:29 2026`` (local time)."""
    return time.ctime(when)


def plural(count: int, word: str, suffix: str = "s") -> str:
    return f"{count} {word}{'' if count == 1 else suffix}"


def done_summary(hosts_up: int, hosts_down: int, elapsed: float) -> str:
    """``1 IP address (1 host up) scanned in 0.04 seconds``."""
    total = hosts_up + hosts_down
    return (
        f"{plural(total, 'IP address', 'es')} ({plural(hosts_up, 'host')} up) "
        f"scanned in {elapsed:.2f} seconds"
    )
