"""What the port machines share, from the probe responses they record to the end of the
scan: the TCP machine (and fast mode's, a TCP machine too) and the UDP machine. The service
fingerprint, the probe deadline, the final-state override of SPEC §2, the service record,
the result dict and what a cancelled ``run()`` does.

A machine subclasses :class:`PortEnding`, sets the attributes declared here in its own
``__init__`` and supplies :meth:`PortEnding._ended` and :meth:`PortEnding._teardown` (what
it owns: sockets, timers, matching in progress).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, ClassVar

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime

from vscand.probes.model import Probe, ProbeDatabase
from vscand.scan.model import PortTask, Protocol, Result, ScanOptions, target_fields
from vscand.scan.report import FinalState, build_service, table_service
from vscand.scan.walk import Decision, Finish, ProbeWalk, RestartInTunnel, WalkSettings


class PortEnding:
    """The ending half of a port machine."""

    #: the result's ``protocol``
    PROTOCOL: ClassVar[Protocol] = "tcp"

    # set by the machine's __init__
    task: PortTask
    _options: ScanOptions
    #: the port's walk: plan, findings, fingerprint, tcpwrapped evidence, tunnel
    _walk: ProbeWalk
    #: what the first completed TLS/DTLS handshake showed (the result's ``tls``)
    _tls: dict[str, Any] | None
    #: the probe being run and what it has read so far
    _probe: Probe | None
    _response: bytearray
    #: when the current wait ends
    _deadline: IDelayedCall | None
    _table_name: str | None
    _port_state: str
    _reason: str
    #: the port was stopped by us (cancel, job timeout, shutdown), not by its peer
    _interrupted: bool
    _done: defer.Deferred[Result]
    _clock: IReactorTime
    _started: float
    _wallclock: Callable[[], float]

    def _ended(self) -> bool:
        """Whether the machine has delivered its result (or is delivering it)."""
        raise NotImplementedError

    def _teardown(self) -> None:
        """Enter the final state and release everything the machine owns."""
        raise NotImplementedError

    def _send_probe(self, probe: Probe, *, reuse: bool) -> None:
        """Run ``probe`` next (``reuse``: on the connection still open)."""
        raise NotImplementedError

    def _restart_in_tunnel(self, probe: Probe | None) -> None:
        """The walk restarted inside TLS/DTLS: run its first ``probe`` there."""
        raise NotImplementedError

    def _decide(self, decision: Decision) -> None:
        """Carry out the walk's decision."""
        if isinstance(decision, Finish):
            self._finish(decision.state)
        elif isinstance(decision, RestartInTunnel):
            self._restart_in_tunnel(decision.probe)
        else:
            self._send_probe(decision.probe, reuse=decision.reuse)

    def _new_walk(self, db: ProbeDatabase, tunnel_services: frozenset[str]) -> ProbeWalk:
        return ProbeWalk(
            db,
            self.PROTOCOL,
            self.task.port,
            WalkSettings(self._options.intensity, self._options.debugging),
            tunnel_services=tunnel_services,
            wallclock=self._wallclock,
        )

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _finish(self, state: FinalState, *, interrupted: bool = False) -> None:
        if self._ended():
            return
        self._interrupted = interrupted
        walk = self._walk
        if walk.tcpwrap_possible and state is not FinalState.EXCLUDED and not interrupted:
            # the final-state override of SPEC §2: nothing was ever read (and, over UDP, no
            # read timed out)
            state = FinalState.TCPWRAPPED
        fingerprint = walk.fingerprint.text() if walk.fingerprint is not None else None
        self._teardown()
        if state is FinalState.HARDMATCHED:
            fingerprint = None
        service = build_service(
            state,
            walk.findings,
            table_name=self._table_name,
            tunnel_ssl=walk.tunnel_ssl,
            intensity=self._options.intensity,
            fingerprint=fingerprint,
        )
        if service["tunnel"] == "ssl" and self._tls is not None:
            service["tls"] = self._tls
        self._deliver(service, final_state=state.value)

    def _report_port(self, port_state: str, reason: str) -> None:
        """End with a port state only (closed, filtered, ...): no version detection ran."""
        self._port_state = port_state
        self._reason = reason
        self._teardown()
        self._deliver(table_service(self._table_name), final_state=None)

    def _deliver(self, service: dict[str, Any], final_state: str | None) -> None:
        options = self._options
        result: Result = {
            "job": options.job,
            **target_fields(self.task),
            "port": self.task.port,
            "protocol": self.PROTOCOL,
            "state": self._port_state,
            "reason": self._reason,
            "service": service,
            "tags": dict(options.tags),
            "worker": options.worker,
            "scanned_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(self._wallclock())),
            "duration_ms": round((self._clock.seconds() - self._started) * 1000),
        }
        if options.fast:
            result["fast"] = True
        if final_state is not None:
            result["final_state"] = final_state
            if self._interrupted:
                result["interrupted"] = True
            result["matches"] = [
                {"probe": p, "matched_probe": m, "line": n, "soft": s}
                for p, m, n, s in self._walk.findings.trace
            ]
        self._done.callback(result)

    def _cancelled(self, _: defer.Deferred[Result]) -> None:
        """``run()``'s Deferred was cancelled: stop, keep what was found (INCOMPLETE)."""
        if self._ended():
            return
        # Nmap's tcpwrapped override is about what the peer did; our own interruption
        # (cancel, job timeout, shutdown) says nothing about the service, so it is not applied
        self._finish(FinalState.INCOMPLETE, interrupted=True)
