"""One TCP port's version detection, faithful mode: Nmap's per-port algorithm (SPEC §2, §4).

``TCPPortScan`` is the port walk (:mod:`vscand.scan.walk`) run over one connection at a
time. Its protocol objects are thin adapters (:class:`~vscand.scan.stream.ProbeConnection`)
that forward ``dataReceived``/``connectionLost`` as inputs. States::

    CONNECTING --connected--> READING --the probe ended; the walk says:
        |   ^                (a ProbeReading:    |-- next probe, same connection --> READING
        |   |                 reading <-> matching)|-- next probe, new connection --> CONNECTING
        |   '------------------------------------- |-- restart through TLS --------> CONNECTING
        '--- port scan failed ----> DONE <---------'-- finish (hard match, no probe left,
                                                        tcpwrapped, a later connect failed)

Each state owns what it waits on (CONNECTING the connect, READING the probe's
:class:`~vscand.scan.reading.ProbeReading`: its timer and match in flight); the transition
function ``_enter`` cancels them when the state is left; DONE absorbs late events.

Collaborators are injected: the clock, the dialer (connects a protocol to the
target, honouring the connection-rate limit), the match function (runs the
matcher off the reactor thread in production), the probe database and the
services table.
"""

from __future__ import annotations

import enum
from typing import Unpack

from twisted.internet import defer, error
from twisted.internet.protocol import Protocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.probes.model import Probe
from vscand.scan.ending import MachineArgs, PortEnding, cancel_deferred
from vscand.scan.findings import FinalState
from vscand.scan.model import PortTask, Result
from vscand.scan.reading import ProbeReading, ReadState
from vscand.scan.stream import (
    Dialer,
    ProbeConnection,
    end_kind,
    failed_with,
    reset_after_handshake,
)
from vscand.scan.tls import session_facts
from vscand.scan.walk import EndKind

log = Logger()

#: the walk's restart: a hard ``ssl`` match in plain text goes on inside TLS
TLS_SERVICES = frozenset({"ssl"})


class _State(enum.Enum):
    CONNECTING = "connecting"
    READING = "reading"
    DONE = "done"


class TCPPortScan(PortEnding):
    """Version detection of one open-or-not TCP port; ``run()`` fires with the result."""

    _log = log

    def __init__(self, task: PortTask, *, dial: Dialer, **machine: Unpack[MachineArgs]) -> None:
        super().__init__(
            task, tunnel_services=TLS_SERVICES, port_state="open", reason="syn-ack", **machine
        )
        self._dial = dial
        self._state = _State.CONNECTING
        # what the current state owns
        self._conn: ProbeConnection | None = None
        self._connecting: defer.Deferred[Protocol] | None = None
        #: the READING state's probe: it owns the probe's timer and match in flight
        self._reading: ProbeReading | None = None

    # -- public ---------------------------------------------------------------

    def run(self) -> defer.Deferred[Result]:
        self._started = self._clock.seconds()
        self._probe = self._walk.plan.next()
        self._connect(first=True)
        return self._done

    @property
    def state(self) -> str:
        """connecting, reading, matching (a read of the probe is being matched) or done."""
        reading = self._reading
        if self._state is _State.READING and reading and reading.state is ReadState.MATCHING:
            return ReadState.MATCHING.value
        return self._state.value

    # -- connecting -----------------------------------------------------------

    def _connect_timeout(self) -> float:
        options = self._options
        return options.ssl_connect_timeout if self._walk.tunnel_ssl else options.connect_timeout

    def _connect(self, first: bool = False) -> None:
        self._enter(_State.CONNECTING)
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

    # -- probing --------------------------------------------------------------

    def _start_probe(self, probe: Probe, *, reuse: bool) -> None:
        assert self._conn is not None
        self._enter(_State.READING)
        self._probe = probe
        self._probe_start = self._clock.seconds()
        if not reuse:
            self._response = bytearray()
        reading = ProbeReading(
            probe, self._response, clock=self._clock, match=self._match, owner=self
        )
        self._reading = reading
        if probe.string:
            transport = self._conn.transport
            assert transport is not None
            transport.write(probe.string)
        reading.arm()

    def _current_reading(self, conn: ProbeConnection) -> ProbeReading | None:
        """The probe reading on ``conn``, if any (late events of other states are dropped)."""
        if conn is not self._conn or self._state is not _State.READING:
            return None
        return self._reading

    def data_received(self, conn: ProbeConnection, data: bytes) -> None:
        reading = self._current_reading(conn)
        if reading is None or not data or not reading.accepts():
            # (a read that brought this probe's buffer to the cap: Nmap reads no more)
            return
        self._walk.heard()
        reading.take(data)

    def connection_lost(self, conn: ProbeConnection, reason: Failure) -> None:
        reading = self._current_reading(conn)
        if reading is not None:
            # data that arrived before the close is matched first
            reading.lose(end_kind(reason))

    # -- what the reading tells (ReadingOwner) ------------------------------------

    def read_waiting(self, reading: ProbeReading) -> None:
        """Nothing to do: the one connection reads on."""

    def reading_ended(self, reading: ProbeReading, kind: EndKind) -> None:
        if kind not in (EndKind.DEADLINE, EndKind.CAP):
            self._conn = None  # the connection ended with the probe
        # after data, a deadline or the cap is no EOF-style restart (SPEC §4.3)
        self._probe_ended(kind)

    def _restart_in_tunnel(self, probe: Probe | None) -> None:
        """A hard ``ssl`` match in plain text: everything again, inside TLS (SPEC §5.2).

        The walk dropped what plain text found and starts its plan over (NULL probe, then
        the probes whose ``sslports`` list the port); every later connection is a TLS
        one, whose failed handshake ends the port INCOMPLETE.  Inside the tunnel a hard
        ``ssl`` match is final (no recursion).
        """
        self._close_connection()
        self._probe = probe
        self._response = bytearray()
        self._connect()

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

    def _enter(self, state: _State) -> None:
        """The transition function: leaving a state cancels what it owned (CONNECTING:
        the connect in flight; READING: the probe's timer and match)."""
        self._state = state
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.stop()
        connecting, self._connecting = self._connecting, None
        cancel_deferred(connecting)

    def _teardown(self) -> None:
        self._enter(_State.DONE)
        self._close_connection()

    def _ended(self) -> bool:
        return self._state is _State.DONE
