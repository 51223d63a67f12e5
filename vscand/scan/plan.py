"""Which probe comes next for a port: Nmap's ``nextProbe`` (SPEC §3).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import bisect
import threading
from dataclasses import dataclass

from vscand.probes.model import Probe, ProbeDatabase


@dataclass(frozen=True)
class _ProtocolIndex:
    """One protocol's probes in file order, with what the plan needs precomputed."""

    probes: tuple[Probe, ...]
    rarity: tuple[int, ...]
    services: tuple[frozenset[str], ...]
    #: port → positions (in ``probes``) of the probes listing it, per tunnel (plain, ssl)
    listed: tuple[dict[int, tuple[int, ...]], dict[int, tuple[int, ...]]]
    #: intensity → positions of the probes whose rarity is within it
    by_intensity: tuple[tuple[int, ...], ...]
    #: intensity → the sum of those probes' ``totalwaitms``
    wait_ms_by_intensity: tuple[int, ...]


_INDEXES: dict[int, tuple[ProbeDatabase, dict[str, _ProtocolIndex]]] = {}
_LOCK = threading.Lock()


def _index(db: ProbeDatabase) -> dict[str, _ProtocolIndex]:
    """The plan index of a database, built once (the database is never mutated)."""
    cached = _INDEXES.get(id(db))
    if cached is not None and cached[0] is db:
        return cached[1]
    with _LOCK:
        cached = _INDEXES.get(id(db))
        if cached is not None and cached[0] is db:
            return cached[1]
        index: dict[str, _ProtocolIndex] = {}
        for protocol in ("TCP", "UDP"):
            probes = tuple(p for p in db.probes if p.protocol == protocol)
            listed: tuple[dict[int, list[int]], dict[int, list[int]]] = ({}, {})
            for position, probe in enumerate(probes):
                for tunnel, ports in ((0, probe.ports), (1, probe.sslports)):
                    for port in ports:
                        listed[tunnel].setdefault(port, []).append(position)
            index[protocol] = _ProtocolIndex(
                probes=probes,
                rarity=tuple(p.rarity for p in probes),
                services=tuple(p.services for p in probes),
                listed=(
                    {k: tuple(v) for k, v in listed[0].items()},
                    {k: tuple(v) for k, v in listed[1].items()},
                ),
                by_intensity=tuple(
                    tuple(i for i, p in enumerate(probes) if p.rarity <= level)
                    for level in range(10)
                ),
                wait_ms_by_intensity=tuple(
                    sum(p.totalwaitms for p in probes if p.rarity <= level) for level in range(10)
                ),
            )
        _INDEXES[id(db)] = (db, index)
        return index


class ProbePlan:
    """The NULL probe (TCP), then port-listed probes, then the rest by rarity.

    The filter is evaluated lazily as the walk advances, so a soft match found
    mid-walk prunes only the probes not reached yet; probes already passed are
    never revisited.
    """

    def __init__(
        self,
        db: ProbeDatabase,
        protocol: str,
        port: int,
        intensity: int,
        *,
        tunnel_ssl: bool = False,
    ) -> None:
        self._db = db
        self._protocol = protocol.upper()
        self._intensity = intensity
        self._index = _index(db).get(self._protocol)
        listed = self._index.listed[1 if tunnel_ssl else 0].get(port, ()) if self._index else ()
        self._listed = listed
        self._listed_set = frozenset(listed)
        self._stage = 0  # 0: NULL, 1: port-listed, 2: the rest, 3: exhausted
        self._position = 0

    def next(self, soft_service: str | None = None) -> Probe | None:
        """The next probe to send, given the soft-matched service so far."""
        if self._stage == 0:
            self._stage = 1
            null = self._db.null_probe
            if self._protocol == "TCP" and null is not None:
                return null
        index = self._index
        if index is None:
            self._stage = 3
            return None
        intensity = self._intensity
        prune = soft_service is not None and intensity < 9
        if self._stage == 1:
            listed = self._listed
            while self._position < len(listed):
                position = listed[self._position]
                self._position += 1
                if not prune or soft_service in index.services[position]:
                    return index.probes[position]
            self._stage = 2
            self._position = 0
        if self._stage == 2:
            probes = index.probes
            skip = self._listed_set
            # _position is the next file position to consider (the walk is in file order)
            if soft_service is None:
                eligible = index.by_intensity[max(0, min(9, intensity))]
                i = bisect.bisect_left(eligible, self._position)
                while i < len(eligible):
                    position = eligible[i]
                    i += 1
                    if position not in skip:
                        self._position = position + 1
                        return probes[position]
                self._position = len(probes)
            else:
                while self._position < len(probes):
                    position = self._position
                    self._position += 1
                    if position in skip:
                        continue
                    if not prune or soft_service in index.services[position]:
                        return probes[position]
            self._stage = 3
        return None


def plan_wait_seconds(
    db: ProbeDatabase, protocol: str, port: int, intensity: int, *, tunnel_ssl: bool = False
) -> float:
    """The longest a port's probes can take: every probe its plan can send (no soft match
    prunes the walk), each waiting its whole ``totalwaitms``, as a silent or dripping peer
    makes them. The same sum as walking :meth:`ProbePlan.next` to its end, without the
    walk: the NULL probe (TCP), the probes listing the port, the rest within the intensity.
    """
    proto = protocol.upper()
    null = db.null_probe
    ms = null.totalwaitms if proto == "TCP" and null is not None else 0
    index = _index(db).get(proto)
    if index is None:
        return ms / 1000.0
    level = max(0, min(9, intensity))
    eligible = index.by_intensity[level]
    ms += index.wait_ms_by_intensity[level]
    for position in index.listed[1 if tunnel_ssl else 0].get(port, ()):
        at = bisect.bisect_left(eligible, position)
        if at == len(eligible) or eligible[at] != position:  # listed, beyond the intensity
            ms += index.probes[position].totalwaitms
    return ms / 1000.0
