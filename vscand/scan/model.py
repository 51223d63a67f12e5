"""Shared records of the scan engine: what to scan, options, and the result.

Pure code: nothing here imports Twisted.

A port's result is a plain dict in the result format of ``CONTRACTS.md``
(one per port: JSON lines, Redis stream entries, ``-oJ``)::

    {"job": None, "host": "127.0.0.1", "hostname": None, "port": 22, "protocol": "tcp",
     "state": "open", "reason": "syn-ack", "service": {...}, "tags": {},
     "worker": "host-a", "scanned_at": "2026-11-22T10:00:00Z", "duration_ms": 812}

``state`` is one of ``open``, ``closed``, ``filtered``, ``open|filtered``;
``reason`` one of ``syn-ack``, ``conn-refused``, ``no-response``,
``host-unreach``, ``net-unreach``, ``udp-response``, ``port-unreach``.
``service`` is the dict of ``vscand.service`` (``SERVICE_KEYS``); for closed and
filtered ports it carries the ``nmap-services`` name with method ``table``,
conf 3, as Nmap's XML does. ``other_addresses`` (after ``hostname``; absent when
empty) lists the addresses the name also resolved to that were not scanned
(:attr:`PortTask.other_addresses`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

Result = dict[str, Any]
Protocol = Literal["tcp", "udp"]


def endpoint_text(host: str, port: int, protocol: str = "tcp") -> str:
    """``HOST:PORT[/udp]`` as ``vscand.targets.parse.parse_target`` reads it (an IPv6
    address in brackets)."""
    bracketed = f"[{host}]" if ":" in host else host
    return f"{bracketed}:{port}" + ("/udp" if protocol == "udp" else "")


@dataclass(frozen=True)
class PortTask:
    """One (address, port, protocol) to scan.

    ``address`` is the literal IP address that is dialled (hostnames are resolved
    once, before tasks are made, and the checked address is the dialled one);
    ``hostname`` is the name the user gave, if any (output, TLS SNI);
    ``other_addresses`` are that name's other addresses, which are not scanned
    (Nmap's "Other addresses for NAME (not scanned)"), as ``inet_ntop`` writes them.
    """

    address: str
    port: int
    protocol: Protocol = "tcp"
    hostname: str | None = None
    other_addresses: tuple[str, ...] = ()


def target_fields(task: PortTask) -> Result:
    """The fields of a port's result that say what was scanned, in the result's order
    (``other_addresses`` only when there are some)."""
    fields: Result = {"host": task.address, "hostname": task.hostname}
    if task.other_addresses:
        fields["other_addresses"] = list(task.other_addresses)
    return fields


@dataclass(frozen=True)
class ScanOptions:
    """Version-detection options (Nmap's ``--version-*`` and friends)."""

    intensity: int = 7
    allports: bool = False
    connect_timeout: float = 5.0
    ssl_connect_timeout: float = 8.0
    #: Nmap's debugging level changes fingerprint limits (900 B / 2200 chars)
    debugging: int = 0
    #: tags echoed into every result (job field)
    tags: dict[str, str] = field(default_factory=dict)
    job: str | None = None
    worker: str | None = None
    #: protocols the whole scan covers (Exclude's unprefixed ports apply to these)
    scanned_protocols: tuple[str, ...] = ("tcp",)
    #: fast mode (``vscan scan --fast``, job field ``fast``): same answers sooner (scan/fast.py)
    fast: bool = False
    #: fast mode's quiet-window floor in seconds. 0 (the default): every probe waits its
    #: full totalwaitms, the answer is faithful mode's (DESIGN.md, "Fast mode: the
    #: guarantee"); above 0 a probe also ends after that much silence: sooner, and
    #: outside the guarantee (its documented exceptions)
    fast_wait: float = 0.0
    #: fast mode: speculative connections (lanes) per port at once
    fast_lanes: int = 32


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_result(
    task: PortTask,
    message: str,
    *,
    started: float,
    ended: float,
    options: ScanOptions | None = None,
) -> Result:
    """The result of a port whose scan failed: state ``unknown``, reason ``error``.

    ``unknown`` is Nmap's own name for a port state it could not determine
    (``PORT_UNKNOWN``); the ``error`` key says why.
    """
    opts = options or ScanOptions()
    return {
        "job": opts.job,
        **target_fields(task),
        "port": task.port,
        "protocol": task.protocol,
        "state": "unknown",
        "reason": "error",
        "service": None,
        "tags": dict(opts.tags),
        "worker": opts.worker,
        "scanned_at": _timestamp(ended),
        "duration_ms": max(0, round((ended - started) * 1000)),
        "error": message,
    }
