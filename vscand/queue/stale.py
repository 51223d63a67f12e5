"""Staleness rescans: the inventory entries last scanned more than N seconds ago.

A job with ``stale_after`` (``vscan submit --stale 24h``, or a schedule made with
``vscan schedule add NAME --every 1h --stale 24h``) names no endpoints of its own. The
worker that takes it reads the inventory (``vscand:inventory-hosts``, then each host's
hash, in pipelined batches) and scans every entry whose ``scanned_at`` is older than
``stale_after`` seconds by Redis's clock (the hosts' clocks need not agree), oldest first,
up to the job's port limit; a later run takes the rest. An entry without a readable time
counts as the oldest. ``targets`` (addresses, networks) narrow the hosts; entries whose
address the worker's policy refuses are left out and counted, so one address outside a
vantage point's reach does not fail the rescan of the others. From there the job is an
ordinary job of endpoints: sharded into tasks when big, results and change events as
for any scan.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet.defer import FirstError, gatherResults

from vscand.output.hosts import parse_time
from vscand.queue.client import RedisClient
from vscand.queue.keys import Keys
from vscand.scan.model import Protocol, endpoint_text
from vscand.targets.parse import IPAddress, Target, TargetError, parse_address, parse_target
from vscand.targets.policy import TargetPolicy, canonical_address

#: hosts whose hashes are read per round of pipelined HGETALLs
HOST_BATCH = 200


@dataclass
class StaleSelection:
    """What a staleness rescan will scan, and what it looked at."""

    endpoints: list[Target] = field(default_factory=list)
    #: inventory entries examined (of the hosts within the job's targets)
    examined: int = 0
    #: stale entries left out: address refused by the worker's policy
    denied: int = 0
    #: stale entries left for a later run (over the job's port limit)
    deferred: int = 0
    #: inventory host keys that are not addresses (skipped)
    unreadable_hosts: int = 0


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _within(address: IPAddress, narrowing: Sequence[Target]) -> bool:
    if not narrowing:
        return True
    for target in narrowing:
        if target.address is not None and canonical_address(target.address) == address:
            return True
        network = target.network
        if network is not None and address.version == network.version and address in network:
            return True
    return False


def _endpoint(address: IPAddress, port: int, protocol: Protocol) -> Target:
    text = endpoint_text(str(address), port, protocol)
    return Target(text=text, address=address, port=port, protocol=protocol)


def _port_key(key: str) -> tuple[int, Protocol] | None:
    number, _, proto = key.partition("/")
    if not number.isdigit() or not 0 < int(number) < 65536 or proto not in ("tcp", "udp"):
        return None
    return int(number), "udp" if proto == "udp" else "tcp"


async def redis_time(client: RedisClient) -> float:
    seconds, micros = await client.execute("TIME")
    return int(seconds) + int(micros) / 1e6


async def stale_endpoints(
    client: RedisClient,
    keys: Keys,
    *,
    stale_after: float,
    targets: Sequence[str],
    policy: TargetPolicy,
    limit: int,
) -> StaleSelection:
    """The endpoints a staleness rescan scans (see the module docstring)."""
    cutoff = await redis_time(client) - stale_after
    narrowing = [parse_target(text) for text in targets]
    selection = StaleSelection()
    hosts: list[IPAddress] = []
    for raw in await client.execute("SMEMBERS", keys.inventory_hosts):
        try:
            address = canonical_address(parse_address(_text(raw)))
        except TargetError:
            selection.unreadable_hosts += 1
            continue
        if _within(address, narrowing):
            hosts.append(address)
    hosts.sort(key=lambda a: (a.version, int(a)))
    found: list[tuple[float, int, int, int, IPAddress, Protocol]] = []
    refused: dict[IPAddress, bool] = {}
    for start in range(0, len(hosts), HOST_BATCH):
        batch = hosts[start : start + HOST_BATCH]
        try:
            replies = await gatherResults(
                [client.execute("HGETALL", keys.inventory(str(address))) for address in batch],
                consumeErrors=True,
            )
        except FirstError as wrapped:  # the caller retries RedisUnavailable: unwrap it
            wrapped.subFailure.raiseException()
        for address, reply in zip(batch, replies, strict=True):
            flat = list(reply or [])
            for i in range(0, len(flat) - 1, 2):
                parsed = _port_key(_text(flat[i]))
                if parsed is None:
                    continue
                selection.examined += 1
                port, protocol = parsed
                try:
                    when = parse_time(json.loads(flat[i + 1]).get("scanned_at"))
                except (ValueError, AttributeError):
                    when = None
                if when is not None and when >= cutoff:
                    continue
                if address not in refused:
                    try:
                        policy.check_address(address)
                        refused[address] = False
                    except TargetError:
                        refused[address] = True
                if refused[address]:
                    selection.denied += 1
                    continue
                found.append((when or 0.0, address.version, int(address), port, address, protocol))
    found.sort(key=lambda row: (row[0], row[1], row[2], row[3], row[5]))
    selection.deferred = max(0, len(found) - limit)
    selection.endpoints = [_endpoint(a, port, proto) for *_, port, a, proto in found[:limit]]
    return selection
