"""The port walk: Nmap's per-port decisions over probe events (SPEC §2-§4), written once.

Pure code: nothing here imports ``twisted.internet``. A port machine (faithful TCP, fast
mode's lanes, UDP) runs the transport and tells the walk what happened to the current
probe: a read hard-matched or not (:meth:`ProbeWalk.matched`), the probe ended with an
:class:`EndKind` (:meth:`ProbeWalk.ended`). The walk answers with a :class:`Decision`:
send the next probe (on the same connection or a new one), restart inside the tunnel
(TLS over TCP, DTLS over UDP), or finish in a :class:`FinalState`.

What the walk holds is the port's scan record of SPEC §2: the plan (soft-match
narrowing is :class:`ProbePlan`'s), the findings, the service fingerprint, the
tcpwrapped evidence and whether the probes run inside a tunnel.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe, ProbeDatabase
from vscand.scan.findings import FinalState, Findings
from vscand.scan.fingerprint import ServiceFingerprint
from vscand.scan.plan import ProbePlan

#: no further read is issued for a probe once its buffer holds this many bytes
READ_CAP = 4096
#: fast mode: the quiet window is at least this many round-trip bounds (srtt + 4 rttvar)
QUIET_FACTOR = 4.0


class EndKind(enum.Enum):
    """How a probe's reading ended (SPEC §4.4 outcomes, plus our connect failure)."""

    DEADLINE = "deadline"  # its wait ran out: totalwaitms, or fast mode's quiet window
    CAP = "cap"  # a read brought the buffer to READ_CAP
    EOF = "eof"  # the peer closed (TCP FIN; a zero-length datagram)
    RESET = "reset"  # the peer refused (TCP RST; ICMP port-unreachable): buffer not kept
    UNREACHABLE = "unreachable"  # the host went away: the port is given up
    OTHER = "other"
    CONNECT_FAILED = "connect-failed"  # a later connection (or handshake) failed


@dataclass(frozen=True)
class Finish:
    """The port ends in ``state``."""

    state: FinalState


@dataclass(frozen=True)
class SendProbe:
    """Run ``probe`` next; ``reuse``: on the connection the NULL probe timed out on."""

    probe: Probe
    reuse: bool


@dataclass(frozen=True)
class RestartInTunnel:
    """Everything again inside TLS/DTLS, from ``probe`` (None: the tunnel has no probe)."""

    probe: Probe | None


Decision = Finish | SendProbe | RestartInTunnel


@dataclass(frozen=True)
class WalkSettings:
    """What a walk needs to know of the scan (from ``ScanOptions``)."""

    intensity: int
    debugging: int = 0


class ProbeWalk:
    """One port's walk through its probes: the decisions, none of the I/O."""

    def __init__(
        self,
        db: ProbeDatabase,
        protocol: str,
        port: int,
        settings: WalkSettings,
        *,
        tunnel_services: frozenset[str],
        wallclock: Callable[[], float],
    ) -> None:
        self._db = db
        self._protocol = protocol.upper()
        self._port = port
        self._settings = settings
        self._tunnel_services = tunnel_services
        self._wallclock = wallclock
        self.plan = ProbePlan(db, self._protocol, port, settings.intensity)
        self.findings = Findings()
        self.fingerprint: ServiceFingerprint | None = None
        #: SPEC §2's tcpwrapped evidence: nothing read yet (and no read timed out)
        self.tcpwrap_possible = True
        self.tunnel_ssl = False

    # -- what the probes found ------------------------------------------------------

    def heard(self) -> None:
        """Bytes arrived: the port is not tcpwrapped."""
        self.tcpwrap_possible = False

    def matched(self, probe: Probe, found: ServiceMatch | None) -> Decision | None:
        """A read was matched: a decision when it hard-matched, else None (read on)."""
        if found is None or not self.findings.apply(found, probe.name):
            return None
        if self.findings.service in self._tunnel_services and not self.tunnel_ssl:
            return RestartInTunnel(self.restart_in_tunnel())
        return Finish(FinalState.HARDMATCHED)

    def record(self, probe_name: str, response: bytes) -> None:
        """Add one probe's response to the port's fingerprint (made at the first)."""
        if self.fingerprint is None:
            self.fingerprint = ServiceFingerprint(
                port=self._port,
                protocol="UDP" if self._protocol == "UDP" else "TCP",
                intensity=self._settings.intensity,
                ssl=self.tunnel_ssl,
                when=self._wallclock(),
                nmap_version=self._db.nmap_release,
                debugging=self._settings.debugging,
            )
        self.fingerprint.add(probe_name, response)

    # -- the end of a probe -----------------------------------------------------------

    def ended(
        self, probe: Probe, kind: EndKind, response: bytes, elapsed_ms: float, *, reusable: bool
    ) -> Decision:
        """``probe`` ended with ``kind`` after ``elapsed_ms``, ``response`` read.

        ``reusable``: the connection is still open (a NULL probe that ended by its
        deadline or the read cap hands it to the next probe).
        """
        if kind is EndKind.CONNECT_FAILED:
            return Finish(FinalState.INCOMPLETE)  # a later connection failed (SPEC §4.2)
        if kind is EndKind.UNREACHABLE:
            self.tcpwrap_possible = False
            return Finish(FinalState.INCOMPLETE)
        wrapped_window = (
            probe.is_null
            and self.tcpwrap_possible
            and not response
            and elapsed_ms < probe.tcpwrappedms
        )
        reuse = False
        if kind in (EndKind.DEADLINE, EndKind.CAP):
            if kind is EndKind.DEADLINE:
                self.tcpwrap_possible = False  # a read timeout
            if response:
                self.record(probe.name, response)
            # the probe is over after data: no EOF-style restart (SPEC §4.3)
            reuse = probe.is_null and reusable
        elif kind is EndKind.EOF:
            if response:
                self.record(probe.name, response)
                self.tcpwrap_possible = False
            if wrapped_window:
                return Finish(FinalState.TCPWRAPPED)
        elif kind is EndKind.RESET and wrapped_window:
            return Finish(FinalState.TCPWRAPPED)
        return self.next_probe(reuse=reuse)

    def next_probe(self, *, reuse: bool = False) -> Decision:
        """The plan's next probe given the soft match so far, or the end of the plan."""
        soft = self.findings.service if self.findings.soft_found else None
        probe = self.plan.next(soft)
        if probe is None:
            return Finish(
                FinalState.SOFTMATCHED if self.findings.soft_found else FinalState.NOMATCH
            )
        return SendProbe(probe, reuse)

    def soft_service(self) -> str | None:
        return self.findings.service if self.findings.soft_found else None

    # -- the tunnel -----------------------------------------------------------------

    def restart_in_tunnel(self) -> Probe | None:
        """A hard ``ssl`` (``dtls``) match in plain text: start over inside the tunnel
        (SPEC §5.2; Nmap's ``scanThroughTunnel`` + ``resetProbes(true)``). What plain
        text found and the fingerprint are dropped; the plan starts over with the
        ``sslports`` lists; ``tcpwrap_possible`` stays as it is (data was read)."""
        self.findings.reset()
        self.fingerprint = None
        self.tunnel_ssl = True
        self.plan = ProbePlan(
            self._db, self._protocol, self._port, self._settings.intensity, tunnel_ssl=True
        )
        return self.plan.next()
