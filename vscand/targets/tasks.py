"""Targets × ports → :class:`~vscand.scan.model.PortTask`\\ s: the tasks of a scan.

The pipeline, as :func:`plan_tasks` runs it: :func:`~vscand.targets.parse.parse_target`
each TARGET string, :func:`~vscand.targets.resolve.resolve_targets` (literals checked
against the :class:`~vscand.targets.policy.TargetPolicy` first, each distinct hostname
resolved once, then checked), then :func:`iter_tasks`: one task per (address, protocol,
port), deduplicated, ordered by address (IPv4 first), then tcp before udp, then port.
:func:`select_ports` reads ``-p SPEC`` (or the default top ports).
"""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence

from twisted.internet.defer import Deferred

from vscand.ports import PortSpecError, ServicesTable, load_services, parse_port_spec
from vscand.scan.model import PortTask, Protocol
from vscand.targets.parse import IPAddress, Target, parse_target
from vscand.targets.policy import CheckedTarget, TargetPolicy
from vscand.targets.resolve import Resolver, ntop, resolve_targets

DEFAULT_TOP_PORTS = 1000

_PROTO_PREFIX = re.compile(r"\b[TUSPtusp]:")
_NEEDS_SERVICES = re.compile(r"[A-Za-z*?\[]")


def select_ports(
    spec: str | None,
    services: ServicesTable | None = None,
    protocols: Sequence[str] = ("tcp",),
    top: int = DEFAULT_TOP_PORTS,
) -> dict[str, list[int]]:
    """Ports per protocol for ``-p SPEC``; default: the top *top* TCP ports.

    Unprefixed ports go to *protocols*; ``services`` is loaded when needed
    (service names, ``[...]``, the default).
    """
    if spec is None:
        return {"tcp": (services or load_services()).top_ports(top)}
    needs_table = _NEEDS_SERVICES.search(_PROTO_PREFIX.sub("", spec)) is not None
    table = services if services is not None or not needs_table else load_services()
    resolved = parse_port_spec(spec, table).resolved(tuple(protocols))
    if "sctp" in resolved:
        raise PortSpecError("SCTP ports are not supported (version detection is TCP and UDP)")
    out: dict[str, list[int]] = {}
    if "tcp" in resolved:
        out["tcp"] = resolved["tcp"]
    if "udp" in resolved:
        out["udp"] = resolved["udp"]
    return out


def _address_key(address: IPAddress) -> tuple[int, int, str]:
    scope = address.scope_id if isinstance(address, ipaddress.IPv6Address) else None
    return (address.version, int(address), scope or "")


class _HostPlan:
    __slots__ = ("hostname", "other_addresses", "tcp", "udp")

    def __init__(self, hostname: str | None, other_addresses: tuple[str, ...]) -> None:
        self.hostname = hostname
        self.other_addresses = other_addresses
        self.tcp: list[Sequence[int]] = []
        self.udp: list[Sequence[int]] = []

    def add(self, protocol: Protocol, ports: Sequence[int]) -> None:
        if ports:
            (self.tcp if protocol == "tcp" else self.udp).append(ports)

    @staticmethod
    def merged(sources: list[Sequence[int]]) -> Sequence[int]:
        if len(sources) == 1:
            return sources[0]
        return sorted(set().union(*sources))


def iter_tasks(
    checked: Iterable[CheckedTarget], ports: Mapping[str, Sequence[int]]
) -> Iterator[PortTask]:
    """Tasks for every address × *ports* (sorted lists) plus endpoints, deduplicated.

    Ordered by address (IPv4 first), then tcp before udp, then port. A host
    named twice keeps the first hostname given, and that name's other addresses
    (in :func:`ntop`'s text). Port lists are shared, not
    copied, so a /16 with default ports stays small until iterated.
    """
    hosts: dict[IPAddress, _HostPlan] = {}
    tcp = sorted(set(ports.get("tcp", ())))
    udp = sorted(set(ports.get("udp", ())))

    def plan(address: IPAddress, hostname: str | None, others: tuple[str, ...]) -> _HostPlan:
        found = hosts.get(address)
        if found is None:
            found = hosts[address] = _HostPlan(hostname, others)
        elif found.hostname is None:
            found.hostname = hostname
            found.other_addresses = others
        return found

    for item in checked:
        others = tuple(map(ntop, item.other_addresses))
        port = item.target.port
        if port is not None:
            assert item.address is not None
            plan(item.address, item.hostname, others).add(item.target.protocol, (port,))
            continue
        for address in item.addresses():
            host = plan(address, item.hostname, others)
            host.add("tcp", tcp)
            host.add("udp", udp)

    for address in sorted(hosts, key=_address_key):
        host = hosts[address]
        text = str(address)
        for protocol, sources in (("tcp", host.tcp), ("udp", host.udp)):
            if not sources:
                continue
            proto: Protocol = "tcp" if protocol == "tcp" else "udp"
            for port in _HostPlan.merged(sources):
                yield PortTask(text, port, proto, host.hostname, host.other_addresses)


def build_tasks(
    checked: Iterable[CheckedTarget], ports: Mapping[str, Sequence[int]]
) -> list[PortTask]:
    return list(iter_tasks(checked, ports))


def plan_tasks(
    targets: Iterable[str | Target],
    policy: TargetPolicy,
    resolver: Resolver,
    ports: Mapping[str, Sequence[int]],
) -> Deferred[list[PortTask]]:
    """Parse, resolve, check and expand: the tasks of a scan (fails with TargetError).

    *ports* applies to every target that is not an endpoint (see :func:`select_ports`).
    """
    return Deferred.fromCoroutine(_plan_tasks(targets, policy, resolver, ports))


async def _plan_tasks(
    targets: Iterable[str | Target],
    policy: TargetPolicy,
    resolver: Resolver,
    ports: Mapping[str, Sequence[int]],
) -> list[PortTask]:
    parsed = [t if isinstance(t, Target) else parse_target(t) for t in targets]
    checked = await resolve_targets(parsed, policy, resolver)
    return build_tasks(checked, ports)
