"""In-memory TCP peers on a ``Clock``: scripted services for the port machines' tests.

A :class:`FakeNetwork` is a dialer (the ``Dialer`` signature of ``vscand.scan.stream``):
each dial becomes, one ``LATENCY`` later, a :class:`PeerConnection` whose behaviour
(a :class:`Peer`) decides what the service does on connect and on data, with delays
on the same clock.  The same peer can be scanned by the faithful machine and by
the fast one, which is how their answers are compared deterministically.

A peer with ``serial = True`` serves one connection at a time, as ``openssl s_server``
does: the kernel completes every connect (the client sees it connected and may write),
but the service only sees a connection — its connect, then the bytes written meanwhile
— once every earlier one has closed.

Every action a peer schedules belongs to its connection and is cancelled when the
connection closes, so once a machine has closed its connections the clock holds
only what the machine itself left behind.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from twisted.internet import defer, error
from twisted.internet.address import IPv4Address
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from vscand.scan.model import PortTask

#: one-way delay of every segment and of the connect
LATENCY = 0.001


class PeerConnection:
    """One accepted connection, seen from the service's side."""

    def __init__(self, net: FakeNetwork, protocol: Protocol, tls: bool, index: int) -> None:
        self.net = net
        self.protocol = protocol
        self.tls = tls
        self.index = index  # 0 for the first connection to this port, 1 for the next...
        self.received = b""
        self.open = True
        self.sent_first = False
        #: the service has taken this connection (always, unless the peer is serial)
        self.served = True
        self.backlog = b""  # written by the client before the service took it
        self._calls: list[IDelayedCall] = []
        self.transport = _ClientTransport(self)

    # what the service does -------------------------------------------------------

    def later(self, delay: float, action: Callable[[], None]) -> None:
        """Run ``action`` after ``delay`` seconds, unless the connection closes first."""

        def run() -> None:
            if self.open:
                action()

        self._calls.append(self.net.clock.callLater(delay, run))

    def send(self, data: bytes, delay: float = 0.0) -> None:
        self.later(delay + LATENCY, lambda: self.protocol.dataReceived(data))

    def close(self, delay: float = 0.0) -> None:
        self.later(delay + LATENCY, lambda: self._lost(error.ConnectionDone()))

    def reset(self, delay: float = 0.0) -> None:
        self.later(delay + LATENCY, lambda: self._lost(error.ConnectionLost()))

    # plumbing --------------------------------------------------------------------

    def _lost(self, exc: Exception) -> None:
        self._shut()
        self.protocol.connectionLost(Failure(exc))

    def _shut(self) -> None:
        if not self.open:
            return
        self.open = False
        self.net.open_now -= 1
        for call in self._calls:
            if call.active():
                call.cancel()
        self._calls.clear()
        self.net.closed(self)

    def client_wrote(self, data: bytes) -> None:
        def arrive() -> None:
            if not self.served:
                self.backlog += data
                return
            self.received += data
            self.net.peer.received(self, data)

        self.later(LATENCY, arrive)

    def client_closed(self) -> None:
        if not self.open:
            return
        self._shut()
        lost = Failure(error.ConnectionDone())
        if self.net.late_loss:
            # as Twisted's reactor: the loss of a connection we close is reported a turn later
            self.net.clock.callLater(0, self.protocol.connectionLost, lost)
        else:
            self.protocol.connectionLost(lost)


class _ClientTransport:
    """The client side's transport: writes go to the peer, closes end the connection."""

    disconnecting = False

    def __init__(self, conn: PeerConnection) -> None:
        self._conn = conn
        self.written = b""

    def write(self, data: bytes) -> None:
        if self._conn.open:
            self.written += data
            self._conn.client_wrote(data)

    def writeSequence(self, data: list[bytes]) -> None:
        self.write(b"".join(data))

    def loseConnection(self) -> None:
        self.disconnecting = True
        self._conn.client_closed()

    def abortConnection(self) -> None:
        self.loseConnection()

    def getPeer(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 7001)

    def getHost(self) -> IPv4Address:
        return IPv4Address("TCP", "127.0.0.1", 40000 + self._conn.index)


class Peer:
    """A scripted service; subclass or build with :func:`peer`."""

    #: refuse a connection while this many are open (0: no limit)
    max_open = 0
    #: refuse every connection (a closed port)
    refuse = False
    #: serve one connection at a time (the others wait, connected, in the accept queue)
    serial = False

    def connected(self, conn: PeerConnection) -> None:
        pass

    def received(self, conn: PeerConnection, data: bytes) -> None:
        pass


class FakeNetwork:
    """The dialer: connects protocols to ``peer`` one LATENCY later."""

    def __init__(self, clock: Clock, peer: Peer) -> None:
        self.clock = clock
        self.peer = peer
        self.connections: list[PeerConnection] = []
        self.dials = 0
        self.open_now = 0
        self.max_open = 0
        self.refused = 0
        self.serving: PeerConnection | None = None
        self.queue: list[PeerConnection] = []
        #: report the loss of a connection the client closed one reactor turn later
        self.late_loss = False

    def closed(self, conn: PeerConnection) -> None:
        if conn in self.queue:
            self.queue.remove(conn)  # closed while queued: the service never sees it
        if self.serving is conn:
            self.serving = None
            self._serve_next()

    def _serve_next(self) -> None:
        """A serial peer takes the oldest queued connection: its connect, then its backlog."""
        while self.queue and self.serving is None:
            conn = self.queue.pop(0)
            if not conn.open:
                continue
            conn.served = True
            self.serving = conn
            self.peer.connected(conn)
            if conn.open and conn.backlog:
                data, conn.backlog = conn.backlog, b""
                conn.received += data
                self.peer.received(conn, data)

    def __call__(
        self, task: PortTask, protocol: Protocol, timeout: float, tls: bool
    ) -> defer.Deferred[Protocol]:
        self.dials += 1
        call: list[IDelayedCall] = []
        d: defer.Deferred[Protocol] = defer.Deferred(lambda _: call[0].cancel())

        def complete() -> None:
            peer = self.peer
            if peer.refuse or (peer.max_open and self.open_now >= peer.max_open):
                self.refused += 1
                d.errback(error.ConnectionRefusedError())
                return
            conn = PeerConnection(self, protocol, tls, len(self.connections))
            self.connections.append(conn)
            self.open_now += 1
            self.max_open = max(self.max_open, self.open_now)
            protocol.makeConnection(conn.transport)  # type: ignore[arg-type]
            d.callback(protocol)
            if not conn.open:
                return
            if peer.serial and self.serving is not None:
                conn.served = False
                self.queue.append(conn)
                return
            self.serving = conn
            peer.connected(conn)

        call.append(self.clock.callLater(LATENCY, complete))
        return d


def peer(
    connected: Callable[[PeerConnection], None] | None = None,
    received: Callable[[PeerConnection, bytes], None] | None = None,
    **attributes: Any,
) -> Peer:
    """A :class:`Peer` from two functions."""
    made = Peer()
    if connected is not None:
        made.connected = connected  # type: ignore[method-assign]
    if received is not None:
        made.received = received  # type: ignore[method-assign]
    for key, value in attributes.items():
        setattr(made, key, value)
    return made


def run_until_result(clock: Clock, results: list[Any], limit: float = 10_000.0) -> None:
    """Advance the clock call by call until the machine has delivered its result."""
    while not results:
        calls = clock.getDelayedCalls()
        if not calls:
            raise AssertionError("the machine is stuck: no result and nothing scheduled")
        step = max(0.0, min(c.getTime() for c in calls) - clock.seconds())
        if clock.seconds() + step > limit:
            raise AssertionError(f"no result after {limit} s of clock time")
        clock.advance(step)
