"""One TCP port's version detection: Nmap's per-port algorithm (SPEC §2, §4).

``TCPPortScan`` is the state machine for one (address, port).  Its protocol
objects are thin adapters that forward ``connectionMade``/``dataReceived``/
``connectionLost`` as inputs; the machine owns every timer and in-flight
Deferred of its current state and cancels them on every exit; the final state
absorbs late events.

States::

    CONNECTING --connected--> READING <--match done--> MATCHING
        |                       |  ^                      |
        |                       |  '-- next probe (reuse or reconnect)
        '--- failed --------->  DONE  <-- finish (hard match, no probes left,
                                           tcpwrapped, connect failure)

Collaborators are injected: the clock, the dialer (connects a protocol to the
target, honouring the connection-rate limit), the match function (runs the
matcher off the reactor thread in production), the probe database and the
services table.
"""

from __future__ import annotations

import enum
import errno
import time
from collections.abc import Callable
from typing import Any

from twisted.internet import defer, error
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe, ProbeDatabase
from vscand.scan.ending import PortEnding
from vscand.scan.fingerprint import ServiceFingerprint
from vscand.scan.model import PortTask, Result, ScanOptions
from vscand.scan.plan import ProbePlan
from vscand.scan.report import FinalState, Findings
from vscand.scan.tls import session_facts

log = Logger()

#: no further read is issued for a probe once its buffer holds this many bytes
READ_CAP = 4096

MatchFunction = Callable[[Probe, bytes], "defer.Deferred[ServiceMatch | None]"]
#: dial(task, protocol, timeout_seconds, tls) -> Deferred firing with the protocol once connected
Dialer = Callable[[PortTask, Protocol, float, bool], "defer.Deferred[Protocol]"]


class _State(enum.Enum):
    CONNECTING = "connecting"
    READING = "reading"
    DONE = "done"


class _LostKind(enum.Enum):
    EOF = "eof"
    RESET = "reset"
    UNREACHABLE = "unreachable"
    OTHER = "other"


def _failed_with(failure: Failure, *kinds: type[BaseException]) -> bool:
    """``Failure.check`` with a type mypy can see."""
    return isinstance(failure.value, kinds)


def _reset_after_handshake(failure: Failure) -> bool:
    """A connect that failed with ECONNRESET: the peer accepted, then reset at once."""
    value = failure.value
    return (
        isinstance(value, error.ConnectError)
        and not isinstance(value, error.ConnectionRefusedError)
        and getattr(value, "osError", None) == errno.ECONNRESET
    )


def _classify(reason: Failure) -> _LostKind:
    if _failed_with(reason, error.ConnectionDone):
        return _LostKind.EOF
    if _failed_with(reason, error.ConnectionRefusedError):
        return _LostKind.RESET
    if _failed_with(reason, error.ConnectionLost):
        return _LostKind.RESET
    if _failed_with(reason, error.NoRouteError):
        return _LostKind.UNREACHABLE
    return _LostKind.OTHER


class ProbeConnection(Protocol):
    """Thin adapter: forwards the transport's events to its port machine."""

    def __init__(self, machine: TCPPortScan) -> None:
        self.machine = machine
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.machine.data_received(self, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self.machine.connection_lost(self, reason)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()


class TCPPortScan(PortEnding):
    """Version detection of one open-or-not TCP port; ``run()`` fires with the result."""

    def __init__(
        self,
        task: PortTask,
        *,
        db: ProbeDatabase,
        match: MatchFunction,
        dial: Dialer,
        clock: IReactorTime,
        options: ScanOptions,
        table_name: str | None,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.task = task
        self._db = db
        self._match = match
        self._dial = dial
        self._clock = clock
        self._options = options
        self._table_name = table_name
        self._wallclock = wallclock
        self._state = _State.CONNECTING
        self._done: defer.Deferred[Result] = defer.Deferred(self._cancelled)
        self._started = 0.0
        self._port_state = "open"
        self._reason = "syn-ack"
        # per-port scan record (SPEC §2)
        self._plan = ProbePlan(db, "TCP", task.port, options.intensity)
        self._probe: Probe | None = None
        self._response = bytearray()
        self._probe_start = 0.0
        self.tcpwrap_possible = True
        self._findings = Findings()
        self._fingerprint: ServiceFingerprint | None = None
        self._tunnel_ssl = False
        #: what the first completed TLS handshake showed (the result's ``tls``)
        self._tls: dict[str, Any] | None = None
        self._first_connection = True
        # what the current state owns
        self._conn: ProbeConnection | None = None
        self._connecting: defer.Deferred[Protocol] | None = None
        self._deadline: IDelayedCall | None = None
        self._deadline_passed = False
        self._capped = False
        #: the port was stopped by us (cancel, job timeout, shutdown), not by its peer
        self._interrupted = False
        self._matching: defer.Deferred[ServiceMatch | None] | None = None
        self._pending: list[int] = []  # buffer lengths still to be matched, in order
        self._lost: tuple[_LostKind, bool] | None = None  # held while matching

    # -- public ---------------------------------------------------------------

    def run(self) -> defer.Deferred[Result]:
        self._started = self._clock.seconds()
        probe = self._plan.next()
        self._probe = probe
        self._connect(first=True)
        return self._done

    @property
    def state(self) -> str:
        return self._state.value

    # -- connecting -----------------------------------------------------------

    def _connect(self, first: bool = False) -> None:
        self._state = _State.CONNECTING
        conn = ProbeConnection(self)
        timeout = (
            self._options.ssl_connect_timeout if self._tunnel_ssl else self._options.connect_timeout
        )
        d = self._dial(self.task, conn, timeout, self._tunnel_ssl)
        self._connecting = d
        d.addCallbacks(
            lambda _: self._connected(conn, first),
            lambda failure: self._connect_failed(failure, first),
        )

    def _connected(self, conn: ProbeConnection, first: bool) -> None:
        self._connecting = None
        if self._state is _State.DONE:
            conn.abort()
            return
        self._conn = conn
        if self._tunnel_ssl and self._tls is None:
            self._tls = session_facts(conn.transport)
        if first and self._excluded():
            self._finish(FinalState.EXCLUDED)
            return
        if self._probe is None:
            # the file has no probe for this port: Nmap finishes NOMATCH at once
            self._finish(FinalState.NOMATCH)
            return
        self._start_probe(self._probe, reuse=False)

    def _connect_failed(self, failure: Failure, first: bool) -> None:
        self._connecting = None
        if self._state is _State.DONE:
            return
        if _failed_with(failure, defer.CancelledError):
            return
        if first and _reset_after_handshake(failure):
            # ECONNRESET (not ECONNREFUSED) on connect: the handshake completed and the
            # peer reset before we saw it (RST on accept).  The port is open, as Nmap's port
            # scan finds; its service connection failed: INCOMPLETE, tcpwrapped by the
            # override since nothing was read (SPEC §4.2).
            self._finish(FinalState.INCOMPLETE)
            return
        if first:
            # the first connection is our port scan: refused = closed, silence = filtered
            if _failed_with(failure, error.ConnectionRefusedError):
                self._report_port("closed", "conn-refused")
            elif _failed_with(failure, error.TimeoutError, error.TCPTimedOutError):
                self._report_port("filtered", "no-response")
            elif _failed_with(failure, error.NoRouteError):
                self._report_port("filtered", "host-unreach")
            else:
                log.info(
                    "connect to {address}:{port} failed: {error}",
                    address=self.task.address,
                    port=self.task.port,
                    error=failure.getErrorMessage(),
                )
                self._report_port("filtered", "no-response")
            return
        # a later connection failed: the port finishes INCOMPLETE (SPEC §4.2)
        self._finish(FinalState.INCOMPLETE)

    def _excluded(self) -> bool:
        if self._options.allports:
            return False
        return self._db.exclude.excludes(
            "TCP", self.task.port, [p.upper() for p in self._options.scanned_protocols]
        )

    # -- probing --------------------------------------------------------------

    def _start_probe(self, probe: Probe, *, reuse: bool) -> None:
        assert self._conn is not None
        self._state = _State.READING
        self._probe = probe
        self._probe_start = self._clock.seconds()
        self._deadline_passed = False
        self._capped = False
        if not reuse:
            self._response = bytearray()
        if probe.string:
            transport = self._conn.transport
            assert transport is not None
            transport.write(probe.string)
        self._deadline = self._clock.callLater(probe.totalwaitms / 1000.0, self._deadline_hit)

    def data_received(self, conn: ProbeConnection, data: bytes) -> None:
        if conn is not self._conn or self._state is not _State.READING or not data:
            return
        if self._capped:
            # a read already brought this probe's buffer to the cap: Nmap reads no more
            return
        self.tcpwrap_possible = False
        self._response += data
        if len(self._response) >= READ_CAP:
            self._capped = True
        self._pending.append(len(self._response))
        if self._matching is None:
            self._match_next()

    def _match_next(self) -> None:
        assert self._probe is not None
        length = self._pending.pop(0)
        buffer = bytes(self._response[:length])
        d = self._match(self._probe, buffer)
        self._matching = d
        d.addCallbacks(
            lambda found: self._match_done(found, length),
            self._match_failed,
        )

    def _match_failed(self, failure: Failure) -> None:
        if _failed_with(failure, defer.CancelledError):
            return
        log.failure(
            "matching failed on {address}:{port}",
            failure,
            address=self.task.address,
            port=self.task.port,
        )
        self._match_done(None, len(self._response))

    def _match_done(self, found: ServiceMatch | None, length: int) -> None:
        self._matching = None
        if self._state is not _State.READING:
            return
        assert self._probe is not None
        if found is not None and self._findings.apply(found, self._probe.name):
            self._hard_match()
            return
        if self._pending:
            self._match_next()
            return
        if self._lost is not None:
            kind, _ = self._lost
            self._lost = None
            self._connection_ended(kind)
            return
        if self._deadline_passed or self._capped:
            # the probe is over after data: no EOF-style restart (SPEC §4.3)
            self._probe_over(reuse_null=True)

    def _hard_match(self) -> None:
        if self._findings.service == "ssl" and not self._tunnel_ssl:
            self._restart_through_tls()
            return
        self._finish(FinalState.HARDMATCHED)

    def _restart_through_tls(self) -> None:
        """A hard ``ssl`` match in plain text: everything again, inside TLS (SPEC §5.2).

        What plain text found and the fingerprint are dropped; the plan starts over
        (NULL probe, then the probes whose ``sslports`` list the port); every later
        connection is a TLS one, whose failed handshake ends the port INCOMPLETE.
        ``tcpwrap_possible`` stays false (data was read).  Inside the tunnel a hard
        ``ssl`` match is final (no recursion).
        """
        self._cancel_deadline()
        self._pending.clear()
        self._lost = None
        self._close_connection()
        self._findings.reset()
        self._fingerprint = None
        self._tunnel_ssl = True
        self._plan = ProbePlan(
            self._db, "TCP", self.task.port, self._options.intensity, tunnel_ssl=True
        )
        self._probe = self._plan.next()
        self._response = bytearray()
        self._connect()

    def _deadline_hit(self) -> None:
        self._deadline = None
        if self._state is not _State.READING:
            return
        if self._matching is not None or self._pending:
            self._deadline_passed = True
            return
        # read timeout
        self.tcpwrap_possible = False
        self._probe_over(reuse_null=True)

    def connection_lost(self, conn: ProbeConnection, reason: Failure) -> None:
        if conn is not self._conn or self._state is not _State.READING:
            return
        kind = _classify(reason)
        if self._matching is not None or self._pending:
            # data that arrived before the close is matched first
            self._lost = (kind, True)
            return
        self._connection_ended(kind)

    def _connection_ended(self, kind: _LostKind) -> None:
        assert self._probe is not None
        self._conn = None
        self._cancel_deadline()
        elapsed_ms = (self._clock.seconds() - self._probe_start) * 1000.0
        probe = self._probe
        wrapped_window = (
            probe.is_null
            and self.tcpwrap_possible
            and not self._response
            and elapsed_ms < probe.tcpwrappedms
        )
        if kind is _LostKind.EOF:
            if self._response:
                self._add_fingerprint()
                self.tcpwrap_possible = False
            if wrapped_window:
                self._finish(FinalState.TCPWRAPPED)
                return
        elif kind is _LostKind.RESET:
            if wrapped_window:
                self._finish(FinalState.TCPWRAPPED)
                return
        elif kind is _LostKind.UNREACHABLE:
            self.tcpwrap_possible = False
            self._finish(FinalState.INCOMPLETE)
            return
        self._next_probe(reuse=False)

    def _probe_over(self, *, reuse_null: bool) -> None:
        """The current probe ended by deadline or read cap (not EOF/error)."""
        assert self._probe is not None
        self._cancel_deadline()
        if self._response:
            self._add_fingerprint()
        reuse = reuse_null and self._probe.is_null and self._conn is not None
        self._next_probe(reuse=reuse)

    def _next_probe(self, *, reuse: bool) -> None:
        soft = self._findings.service if self._findings.soft_found else None
        probe = self._plan.next(soft)
        if probe is None:
            self._finish(
                FinalState.SOFTMATCHED if self._findings.soft_found else FinalState.NOMATCH
            )
            return
        if reuse and self._conn is not None:
            # the NULL probe's connection is reused; its response stays in front
            self._start_probe(probe, reuse=True)
            return
        self._close_connection()
        self._response = bytearray()
        self._probe = probe
        self._connect()

    # -- ending ---------------------------------------------------------------

    def _close_connection(self) -> None:
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.close()

    def _teardown(self) -> None:
        self._state = _State.DONE
        self._cancel_deadline()
        if self._connecting is not None:
            connecting = self._connecting
            self._connecting = None
            connecting.cancel()
        if self._matching is not None:
            matching = self._matching
            self._matching = None
            matching.cancel()
        self._pending.clear()
        conn = self._conn
        self._conn = None
        if conn is not None:
            conn.close()

    def _ended(self) -> bool:
        return self._state is _State.DONE

    def _tunnel(self) -> tuple[bool, dict[str, Any] | None]:
        return self._tunnel_ssl, self._tls
