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
from vscand.scan.fingerprint import ServiceFingerprint
from vscand.scan.model import PortTask, Protocol, Result, ScanOptions, target_fields
from vscand.scan.report import FinalState, Findings, build_service, table_service


class PortEnding:
    """The ending half of a port machine."""

    #: the result's ``protocol``
    PROTOCOL: ClassVar[Protocol] = "tcp"

    # set by the machine's __init__
    task: PortTask
    tcpwrap_possible: bool
    _options: ScanOptions
    #: the probe database (its ``nmap_release`` is the fingerprints' ``V=``)
    _db: ProbeDatabase
    _findings: Findings
    _fingerprint: ServiceFingerprint | None
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

    def _tunnel(self) -> tuple[bool, dict[str, Any] | None]:
        """Whether the probes ran inside TLS, and what the handshake showed."""
        return False, None

    def _record_response(self, probe_name: str, response: bytes) -> None:
        """Add one probe's response to the port's fingerprint (made at the first)."""
        if self._fingerprint is None:
            tunnel_ssl, _ = self._tunnel()
            self._fingerprint = ServiceFingerprint(
                port=self.task.port,
                protocol="UDP" if self.PROTOCOL == "udp" else "TCP",
                intensity=self._options.intensity,
                ssl=tunnel_ssl,
                when=self._wallclock(),
                nmap_version=self._db.nmap_release,
                debugging=self._options.debugging,
            )
        self._fingerprint.add(probe_name, response)

    def _add_fingerprint(self) -> None:
        """Record the current probe's response."""
        assert self._probe is not None
        self._record_response(self._probe.name, bytes(self._response))

    def _cancel_deadline(self) -> None:
        if self._deadline is not None and self._deadline.active():
            self._deadline.cancel()
        self._deadline = None

    def _finish(self, state: FinalState, *, interrupted: bool = False) -> None:
        if self._ended():
            return
        self._interrupted = interrupted
        if self.tcpwrap_possible and state is not FinalState.EXCLUDED and not interrupted:
            # the final-state override of SPEC §2: nothing was ever read (and, over UDP, no
            # read timed out)
            state = FinalState.TCPWRAPPED
        fingerprint = self._fingerprint.text() if self._fingerprint is not None else None
        self._teardown()
        if state is FinalState.HARDMATCHED:
            fingerprint = None
        tunnel_ssl, tls = self._tunnel()
        service = build_service(
            state,
            self._findings,
            table_name=self._table_name,
            tunnel_ssl=tunnel_ssl,
            intensity=self._options.intensity,
            fingerprint=fingerprint,
        )
        if service["tunnel"] == "ssl" and tls is not None:
            service["tls"] = tls
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
                for p, m, n, s in self._findings.trace
            ]
        self._done.callback(result)

    def _cancelled(self, _: defer.Deferred[Result]) -> None:
        """``run()``'s Deferred was cancelled: stop, keep what was found (INCOMPLETE)."""
        if self._ended():
            return
        # Nmap's tcpwrapped override is about what the peer did; our own interruption
        # (cancel, job timeout, shutdown) says nothing about the service, so it is not applied
        self._finish(FinalState.INCOMPLETE, interrupted=True)
