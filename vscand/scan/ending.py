"""What the port machines share, around the walk: the TCP machine (and fast mode's, a TCP
machine too) and the UDP machine. The port's walk and what the current probe holds, the
walk's decisions carried out, the final-state override of SPEC §2, the service record,
the result dict and what a cancelled ``run()`` does.

A machine subclasses :class:`PortEnding`, calls its ``__init__`` and supplies
:meth:`PortEnding._ended`, :meth:`PortEnding._teardown` (what it owns: sockets, timers,
matching in progress), :meth:`PortEnding._send_probe` and
:meth:`PortEnding._restart_in_tunnel` (its transport's side of the walk's decisions).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, ClassVar, NotRequired, TypedDict, Unpack

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe, ProbeDatabase
from vscand.scan.findings import FinalState, build_service, table_service
from vscand.scan.model import PortTask, Protocol, Result, ScanOptions, target_fields
from vscand.scan.walk import Decision, EndKind, Finish, ProbeWalk, RestartInTunnel, WalkSettings

#: match(probe, buffer) -> Deferred firing with the first line that matched (or None)
MatchFunction = Callable[[Probe, bytes], "defer.Deferred[ServiceMatch | None]"]


def cancel_call(call: IDelayedCall | None) -> None:
    """Cancel a delayed call that may have run already."""
    if call is not None and call.active():
        call.cancel()


def cancel_deferred(d: defer.Deferred[Any] | None) -> None:
    """Cancel an operation in flight (a connect, a socket opening, a match), if any."""
    if d is not None:
        d.cancel()


if TYPE_CHECKING:
    from vscand.scan.reading import ProbeReading


class MachineArgs(TypedDict):
    """The collaborators every port machine takes (keyword arguments)."""

    db: ProbeDatabase
    match: MatchFunction
    clock: IReactorTime
    options: ScanOptions
    #: the services table's name for the port (nmap-services)
    table_name: str | None
    #: the wall clock of the fingerprints and ``scanned_at`` (tests fix it)
    wallclock: NotRequired[Callable[[], float]]


class PortEnding:
    """The walk's half of a port machine, and its ending."""

    #: the result's ``protocol``
    PROTOCOL: ClassVar[Protocol] = "tcp"
    #: the machine's module logger, and what it says when matching fails
    _log: ClassVar[Logger]
    _MATCH_FAILED: ClassVar[str] = "matching failed on {address}:{port}"

    def __init__(
        self,
        task: PortTask,
        *,
        tunnel_services: frozenset[str],
        port_state: str,
        reason: str,
        **machine: Unpack[MachineArgs],
    ) -> None:
        self.task = task
        self._db = db = machine["db"]
        self._match = machine["match"]
        self._clock = machine["clock"]
        self._options = options = machine["options"]
        self._table_name = machine["table_name"]
        self._wallclock = wallclock = machine.get("wallclock", time.time)
        self._done: defer.Deferred[Result] = defer.Deferred(self._cancelled)
        self._started = 0.0
        self._port_state = port_state
        self._reason = reason
        #: the port's walk: plan, findings, fingerprint, tcpwrapped evidence, tunnel
        self._walk = ProbeWalk(
            db,
            self.PROTOCOL,
            task.port,
            WalkSettings(options.intensity, options.debugging),
            tunnel_services=tunnel_services,
            wallclock=wallclock,
        )
        #: what the first completed TLS/DTLS handshake showed (the result's ``tls``)
        self._tls: dict[str, Any] | None = None
        #: the probe being run, when it started and what it has read so far
        self._probe: Probe | None = None
        self._probe_start = 0.0
        self._response = bytearray()
        #: the port was stopped by us (cancel, job timeout, shutdown), not by its peer
        self._interrupted = False

    def _ended(self) -> bool:
        """Whether the machine has delivered its result (or is delivering it)."""
        raise NotImplementedError

    def _teardown(self) -> None:
        """Enter the final state and release everything the machine owns."""
        raise NotImplementedError

    # -- what a probe's reading tells (ReadingOwner) -----------------------------------

    def read_matched(self, reading: ProbeReading, found: ServiceMatch | None, length: int) -> None:
        decision = self._walk.matched(reading.probe, found)
        if decision is not None:
            self._decide(decision)

    def log_match_failure(self, failure: Failure) -> None:
        self._log.failure(
            self._MATCH_FAILED, failure, address=self.task.address, port=self.task.port
        )

    def _excluded(self) -> bool:
        """The probe file's ``Exclude`` lists the port (unless ``--allports``)."""
        if self._options.allports:
            return False
        scanned = [p.upper() for p in self._options.scanned_protocols]
        return self._db.exclude.excludes(self.PROTOCOL.upper(), self.task.port, scanned)

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

    def _reusable(self) -> bool:
        """Whether the current probe's connection could carry the next probe."""
        return False

    def _probe_ended(self, kind: EndKind) -> None:
        """The current probe ended (SPEC §4.3, §4.4): the walk says what comes next."""
        assert self._probe is not None
        elapsed_ms = (self._clock.seconds() - self._probe_start) * 1000.0
        decision = self._walk.ended(
            self._probe, kind, bytes(self._response), elapsed_ms, reusable=self._reusable()
        )
        self._decide(decision)

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
