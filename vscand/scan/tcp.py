"""One TCP port's version detection, faithful mode: Nmap's per-port algorithm (SPEC §2, §4).

``TCPPortScan`` is the port walk (:mod:`vscand.scan.walk`) run over one connection at a
time. Its protocol objects are thin adapters (:class:`~vscand.scan.stream.ProbeConnection`)
that forward ``dataReceived``/``connectionLost`` as inputs; the machine owns every timer
and in-flight Deferred of its current state and cancels them on every exit; the final
state absorbs late events.

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
import time
from collections.abc import Callable

from twisted.internet import defer, error
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe, ProbeDatabase
from vscand.scan.ending import MatchFunction, PortEnding
from vscand.scan.model import PortTask, Result, ScanOptions
from vscand.scan.report import FinalState
from vscand.scan.stream import (
    Dialer,
    ProbeConnection,
    end_kind,
    failed_with,
    reset_after_handshake,
)
from vscand.scan.tls import session_facts
from vscand.scan.walk import READ_CAP, EndKind

log = Logger()

#: the walk's restart: a hard ``ssl`` match in plain text goes on inside TLS
TLS_SERVICES = frozenset({"ssl"})


class _State(enum.Enum):
    CONNECTING = "connecting"
    READING = "reading"
    DONE = "done"


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
        super().__init__(
            task,
            db=db,
            match=match,
            clock=clock,
            options=options,
            table_name=table_name,
            wallclock=wallclock,
            tunnel_services=TLS_SERVICES,
            port_state="open",
            reason="syn-ack",
        )
        self._dial = dial
        self._state = _State.CONNECTING
        # what the current state owns
        self._conn: ProbeConnection | None = None
        self._connecting: defer.Deferred[Protocol] | None = None
        self._pending: list[int] = []  # buffer lengths still to be matched, in order
        self._lost: EndKind | None = None  # held while matching

    # -- public ---------------------------------------------------------------

    def run(self) -> defer.Deferred[Result]:
        self._started = self._clock.seconds()
        self._probe = self._walk.plan.next()
        self._connect(first=True)
        return self._done

    @property
    def state(self) -> str:
        return self._state.value

    # -- connecting -----------------------------------------------------------

    def _connect_timeout(self) -> float:
        options = self._options
        return options.ssl_connect_timeout if self._walk.tunnel_ssl else options.connect_timeout

    def _connect(self, first: bool = False) -> None:
        self._state = _State.CONNECTING
        conn = ProbeConnection(self)
        d = self._dial(self.task, conn, self._connect_timeout(), self._walk.tunnel_ssl)
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
        if self._walk.tunnel_ssl and self._tls is None:
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
        if failed_with(failure, defer.CancelledError):
            return
        if first:
            self._port_scan_failed(failure)
            return
        # a later connection failed: the port finishes INCOMPLETE (SPEC §4.2)
        self._finish(FinalState.INCOMPLETE)

    def _port_scan_failed(self, failure: Failure) -> None:
        """The first connection is our port scan: refused = closed, silence = filtered."""
        if reset_after_handshake(failure):
            # ECONNRESET (not ECONNREFUSED) on connect: the handshake completed and the
            # peer reset before we saw it (RST on accept).  The port is open, as Nmap's port
            # scan finds; its service connection failed: INCOMPLETE, tcpwrapped by the
            # override since nothing was read (SPEC §4.2).
            self._finish(FinalState.INCOMPLETE)
        elif failed_with(failure, error.ConnectionRefusedError):
            self._report_port("closed", "conn-refused")
        elif failed_with(failure, error.TimeoutError, error.TCPTimedOutError):
            self._report_port("filtered", "no-response")
        elif failed_with(failure, error.NoRouteError):
            self._report_port("filtered", "host-unreach")
        else:
            log.info(
                "connect to {address}:{port} failed: {error}",
                address=self.task.address,
                port=self.task.port,
                error=failure.getErrorMessage(),
            )
            self._report_port("filtered", "no-response")

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
        self._walk.heard()
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
        if failed_with(failure, defer.CancelledError):
            return
        self.log_match_failure(failure)
        self._match_done(None, len(self._response))

    def log_match_failure(self, failure: Failure) -> None:
        log.failure(
            "matching failed on {address}:{port}",
            failure,
            address=self.task.address,
            port=self.task.port,
        )

    def _match_done(self, found: ServiceMatch | None, length: int) -> None:
        self._matching = None
        if self._state is not _State.READING:
            return
        assert self._probe is not None
        decision = self._walk.matched(self._probe, found)
        if decision is not None:
            self._decide(decision)
            return
        if self._pending:
            self._match_next()
            return
        if self._lost is not None:
            kind, self._lost = self._lost, None
            self._connection_ended(kind)
            return
        if self._deadline_passed or self._capped:
            # the probe is over after data: no EOF-style restart (SPEC §4.3)
            self._probe_ended(EndKind.DEADLINE if self._deadline_passed else EndKind.CAP)

    def _restart_in_tunnel(self, probe: Probe | None) -> None:
        """A hard ``ssl`` match in plain text: everything again, inside TLS (SPEC §5.2).

        The walk dropped what plain text found and starts its plan over (NULL probe, then
        the probes whose ``sslports`` list the port); every later connection is a TLS
        one, whose failed handshake ends the port INCOMPLETE.  Inside the tunnel a hard
        ``ssl`` match is final (no recursion).
        """
        self._cancel_deadline()
        self._pending.clear()
        self._lost = None
        self._close_connection()
        self._probe = probe
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
        self._probe_ended(EndKind.DEADLINE)

    def connection_lost(self, conn: ProbeConnection, reason: Failure) -> None:
        if conn is not self._conn or self._state is not _State.READING:
            return
        kind = end_kind(reason)
        if self._matching is not None or self._pending:
            # data that arrived before the close is matched first
            self._lost = kind
            return
        self._connection_ended(kind)

    def _connection_ended(self, kind: EndKind) -> None:
        self._conn = None
        self._probe_ended(kind)

    def _reusable(self) -> bool:
        return self._conn is not None

    def _send_probe(self, probe: Probe, *, reuse: bool) -> None:
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
        connecting, self._connecting = self._connecting, None
        if connecting is not None:
            connecting.cancel()
        self._cancel_matching()
        self._pending.clear()
        self._close_connection()

    def _ended(self) -> bool:
        return self._state is _State.DONE
