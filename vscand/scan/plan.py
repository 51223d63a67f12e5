"""Which probe comes next for a port: Nmap's ``nextProbe`` (SPEC §3).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from vscand.probes.model import Probe, ProbeDatabase


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
        self._port = port
        self._intensity = intensity
        self._ssl = tunnel_ssl
        self._stage = 0  # 0: NULL, 1: port-listed, 2: the rest, 3: exhausted
        self._position = 0

    def _wanted(self, probe: Probe, listed_stage: bool, soft: str | None) -> bool:
        if probe.protocol != self._protocol:
            return False
        listed = self._port in probe.port_list(self._ssl)
        if listed != listed_stage:
            return False
        if soft is not None:
            return self._intensity >= 9 or soft in probe.services
        return listed_stage or probe.rarity <= self._intensity

    def next(self, soft_service: str | None = None) -> Probe | None:
        """The next probe to send, given the soft-matched service so far."""
        if self._stage == 0:
            self._stage = 1
            null = self._db.null_probe
            if self._protocol == "TCP" and null is not None:
                return null
        probes = self._db.probes
        while self._stage in (1, 2):
            listed_stage = self._stage == 1
            while self._position < len(probes):
                probe = probes[self._position]
                self._position += 1
                if self._wanted(probe, listed_stage, soft_service):
                    return probe
            self._stage += 1
            self._position = 0
        return None
