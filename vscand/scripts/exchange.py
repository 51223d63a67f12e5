"""Bounded connections for version scripts: TCP, TCP over TLS, UDP.

An :class:`Exchange` belongs to one port's script run and can only reach the
host being scanned (whose address the engine already checked against the
allow/deny policy). Every connection first takes a token from the engine's
:class:`~vscand.scan.pacing.ConnectLimiter`, every wait is bounded by a
timeout on the injected clock, and every connection reads at most
``max_bytes`` (then stops reading). Tests use their own fake exchange
implementing the same protocol.
"""

from __future__ import annotations

import ipaddress
from collections import deque
from typing import Any, Literal, Protocol

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IHandshakeListener, IReactorTime
from twisted.internet.protocol import DatagramProtocol, Factory
from twisted.internet.protocol import Protocol as StreamProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vscand.scan.datagram import MAX_DATAGRAM, ConnectedUDPPort
from vscand.scan.pacing import ConnectLimiter

log = Logger()

__all__ = [
    "Connection",
    "Exchange",
    "ExchangeClosed",
    "ExchangeError",
    "ExchangeTimeout",
    "ReactorExchange",
]

#: a connection stops reading once it has buffered this much
DEFAULT_MAX_BYTES = 1 << 20


class ExchangeError(Exception):
    """A script's connection failed (connect error, timeout, peer closed)."""


class ExchangeTimeout(ExchangeError):
    pass


class ExchangeClosed(ExchangeError):
    pass


class Connection(Protocol):
    """One open connection (TCP stream, or UDP datagrams) to the port."""

    def send(self, data: bytes) -> None: ...

    async def receive(self, timeout: float, max_bytes: int | None = None) -> bytes:
        """At least one byte (UDP: one datagram); raises ExchangeTimeout/ExchangeClosed."""

    async def receive_exactly(self, count: int, timeout: float) -> bytes:
        """Exactly ``count`` bytes (the rest stays buffered), or raises."""

    async def receive_at_least(self, count: int, timeout: float) -> bytes:
        """Everything buffered once ``count`` bytes are there; on timeout or EOF
        whatever arrived (raises only when nothing did)."""

    def close(self) -> None: ...


class Exchange(Protocol):
    """Connections to the scanned port (or another port of the same host)."""

    address: str
    port: int
    protocol: str

    async def connect(
        self,
        *,
        port: int | None = None,
        protocol: Literal["tcp", "udp"] | None = None,
        tls: bool = False,
        timeout: float | None = None,
        any_source_port: bool = False,  # UDP: answers from any port of the host (TFTP)
    ) -> Connection: ...


class _Buffered:
    """The receive side shared by TCP and UDP: a byte buffer and one waiter."""

    def __init__(self, clock: IReactorTime, max_bytes: int) -> None:
        self._clock = clock
        self._max_bytes = max_bytes
        self._buffer = bytearray()
        self._datagrams: deque[bytes] = deque()
        self._eof = False
        self._waiter: defer.Deferred[None] | None = None
        self._want = 0
        self.received = 0

    def _fed(self) -> None:
        waiter = self._waiter
        if waiter is not None and (self._eof or self._available() >= self._want):
            self._waiter = None
            waiter.callback(None)

    def _available(self) -> int:
        return len(self._buffer)

    async def _wait(self, count: int, timeout: float) -> None:
        if self._available() >= count or self._eof:
            return
        if self._waiter is not None:
            raise ExchangeError("one receive at a time")

        def cancelled(_: defer.Deferred[None]) -> None:
            self._waiter = None

        waiter: defer.Deferred[None] = defer.Deferred(cancelled)
        self._waiter = waiter
        self._want = count
        waiter.addTimeout(timeout, self._clock)
        try:
            await waiter
        except (defer.CancelledError, defer.TimeoutError):
            # addTimeout turns its own cancellation into TimeoutError
            raise ExchangeTimeout(f"no {count} bytes within {timeout:g} s") from None

    async def receive(self, timeout: float, max_bytes: int | None = None) -> bytes:
        await self._wait(1, timeout)
        if not self._buffer:
            raise ExchangeClosed("connection closed")
        size = len(self._buffer) if max_bytes is None else max_bytes
        data = bytes(self._buffer[:size])
        del self._buffer[:size]
        return data

    async def receive_exactly(self, count: int, timeout: float) -> bytes:
        await self._wait(count, timeout)
        if len(self._buffer) < count:
            raise ExchangeClosed(f"connection closed after {len(self._buffer)} of {count} bytes")
        data = bytes(self._buffer[:count])
        del self._buffer[:count]
        return data

    async def receive_at_least(self, count: int, timeout: float) -> bytes:
        try:
            await self._wait(count, timeout)
        except ExchangeTimeout:
            if not self._buffer:
                raise
        if not self._buffer:
            raise ExchangeClosed("connection closed")
        data = bytes(self._buffer)
        self._buffer.clear()
        return data


@implementer(IHandshakeListener)
class _TCPConnection(_Buffered, StreamProtocol):
    def __init__(self, clock: IReactorTime, max_bytes: int) -> None:
        _Buffered.__init__(self, clock, max_bytes)
        self._paused = False
        #: fires when a TLS handshake under this connection completes
        self.handshake: defer.Deferred[None] | None = None

    def handshakeCompleted(self) -> None:
        if self.handshake is not None and not self.handshake.called:
            self.handshake.callback(None)

    def dataReceived(self, data: bytes) -> None:
        room = self._max_bytes - self.received
        if room <= 0:
            return
        data = data[:room]
        self.received += len(data)
        self._buffer += data
        if self.received >= self._max_bytes and not self._paused and self.transport is not None:
            self._paused = True
            self.transport.pauseProducing()  # type: ignore[attr-defined]
        self._fed()

    def connectionLost(self, reason: Failure | None = None) -> None:
        self._eof = True
        if self.handshake is not None and not self.handshake.called:
            self.handshake.errback(ExchangeClosed("closed before the TLS handshake completed"))
        self._fed()

    def send(self, data: bytes) -> None:
        if self.transport is None or self._eof:
            raise ExchangeClosed("connection closed")
        self.transport.write(data)

    def close(self) -> None:
        if self.transport is not None and not self._eof:
            self.transport.abortConnection()  # type: ignore[attr-defined]


class _UDPConnection(_Buffered, DatagramProtocol):
    """A connected UDP socket: ``receive`` returns one datagram.

    ICMP port unreachable (``connectionRefused``) or another asynchronous
    socket error (``socketError``, from :class:`ConnectedUDPPort`) ends it:
    a waiting receive raises ``ExchangeClosed`` at once, later sends too.
    With ``target`` the socket is not connected: it sends to ``target`` and keeps
    only datagrams from its address (any source port: ``peer_port`` tells which).
    """

    def __init__(
        self, clock: IReactorTime, max_bytes: int, target: tuple[str, int] | None = None
    ) -> None:
        _Buffered.__init__(self, clock, max_bytes)
        self._port: Any = None
        self._target = target
        self._peer = ipaddress.ip_address(target[0]).compressed if target is not None else None
        self._sources: deque[int | None] = deque()
        self.peer_port: int | None = None

    def _available(self) -> int:
        return len(self._datagrams[0]) if self._datagrams else 0

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        if self._peer is not None and addr[0] != self._peer:
            return  # an unconnected socket: only the scanned host's datagrams count
        room = self._max_bytes - self.received
        if room <= 0:
            return
        datagram = datagram[:room]
        self.received += len(datagram)
        if datagram:
            self._datagrams.append(datagram)
            self._sources.append(addr[1] if isinstance(addr, tuple) else None)
        self._fed()

    def connectionRefused(self) -> None:
        self._eof = True
        self._fed()

    def socketError(self, code: int) -> None:
        """Host/network unreachable and the like (ConnectedUDPPort's report)."""
        self._eof = True
        self._fed()

    def send(self, data: bytes) -> None:
        if self.transport is None or self._eof:
            raise ExchangeClosed("socket closed (port unreachable)")
        if self._target is not None:
            self.transport.write(data, self._target)
            return
        self.transport.write(data)  # type: ignore[call-arg]  # connected: no address

    async def receive(self, timeout: float, max_bytes: int | None = None) -> bytes:
        await self._wait(1, timeout)
        if not self._datagrams:
            raise ExchangeClosed("port unreachable")
        data = self._datagrams.popleft()
        self.peer_port = self._sources.popleft() if self._sources else None
        return data if max_bytes is None else data[:max_bytes]

    async def receive_exactly(self, count: int, timeout: float) -> bytes:
        data = await self.receive(timeout)
        if len(data) < count:
            raise ExchangeClosed(f"datagram of {len(data)} bytes, {count} wanted")
        return data[:count]

    async def receive_at_least(self, count: int, timeout: float) -> bytes:
        return await self.receive(timeout)

    def close(self) -> None:
        self._eof = True
        if self._port is not None:
            port, self._port = self._port, None
            port.stopListening()


class _OneProtocol(Factory):
    noisy = False

    def __init__(self, protocol: StreamProtocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> StreamProtocol:
        return self._protocol


class ReactorExchange:
    """The real :class:`Exchange`: Twisted endpoints and UDP ports on ``reactor``.

    Every connection made is remembered and closed by :meth:`close_all` (the
    runner calls it when the script ends, however it ends).
    """

    def __init__(
        self,
        reactor: Any,
        address: str,
        port: int,
        protocol: str,
        *,
        limiter: ConnectLimiter | None = None,
        connect_timeout: float = 5.0,
        tls_connect_timeout: float = 8.0,
        max_bytes: int = DEFAULT_MAX_BYTES,
    ) -> None:
        self._reactor = reactor
        self.address = address
        self.port = port
        self.protocol = protocol
        self._limiter = limiter
        self._connect_timeout = connect_timeout
        self._tls_connect_timeout = tls_connect_timeout
        self._max_bytes = max_bytes
        self._open: list[_TCPConnection | _UDPConnection] = []
        self.connections = 0

    async def connect(
        self,
        *,
        port: int | None = None,
        protocol: Literal["tcp", "udp"] | None = None,
        tls: bool = False,
        timeout: float | None = None,
        any_source_port: bool = False,
    ) -> Connection:
        number = self.port if port is None else port
        proto = protocol or self.protocol
        if self._limiter is not None:
            await self._limiter.acquire()
        self.connections += 1
        if proto == "udp":
            return self._udp(number, any_source_port)
        limit = timeout if timeout is not None else self._connect_timeout
        if tls:
            limit = timeout if timeout is not None else self._tls_connect_timeout
        return await self._tcp(number, tls, limit)

    def _udp(self, number: int, any_source_port: bool = False) -> _UDPConnection:
        # the engine's port class (reads bounded per turn: a flood cannot hold the reactor;
        # ICMP handled): on a poll-like reactor (epoll), Twisted's own
        # closes a connected socket on ICMP port unreachable without telling
        # the protocol, and the script would wait for its timeout
        target = (self.address, number) if any_source_port else None  # not connected
        conn = _UDPConnection(self._reactor, self._max_bytes, target)
        interface = "::" if ":" in self.address else "0.0.0.0"
        udp_port = ConnectedUDPPort(0, conn, interface, MAX_DATAGRAM, self._reactor)  # type: ignore[no-untyped-call]
        udp_port.startListening()  # type: ignore[no-untyped-call]
        conn._port = udp_port
        self._open.append(conn)
        try:
            if target is None:
                udp_port.connect(self.address, number)  # type: ignore[no-untyped-call]
        except OSError as exc:
            conn.close()
            raise ExchangeError(f"UDP connect to port {number}: {exc}") from None
        return conn

    async def _tcp(self, number: int, tls: bool, timeout: float) -> _TCPConnection:
        conn = _TCPConnection(self._reactor, self._max_bytes)
        endpoint: TCP4ClientEndpoint | TCP6ClientEndpoint
        if ":" in self.address:
            endpoint = TCP6ClientEndpoint(self._reactor, self.address, number, timeout=timeout)  # type: ignore[no-untyped-call]
        else:
            endpoint = TCP4ClientEndpoint(self._reactor, self.address, number, timeout=timeout)
        factory: Any = _OneProtocol(conn)
        handshake: defer.Deferred[None] | None = None
        if tls:
            from twisted.internet.ssl import CertificateOptions  # noqa: PLC0415
            from twisted.protocols.tls import TLSMemoryBIOFactory  # noqa: PLC0415

            # a scanner completes the handshake with any certificate
            factory = TLSMemoryBIOFactory(CertificateOptions(), True, factory)
            handshake = conn.handshake = defer.Deferred()
        self._open.append(conn)
        connecting = endpoint.connect(factory)
        connecting.addTimeout(timeout, self._reactor)
        try:
            await connecting
            if handshake is not None:
                handshake.addTimeout(timeout, self._reactor)
                await handshake
        except defer.CancelledError:
            conn.close()
            raise ExchangeTimeout(f"connect to port {number} timed out") from None
        except ExchangeError:
            conn.close()
            raise
        except Exception as exc:
            conn.close()
            raise ExchangeError(f"connect to port {number}: {exc}") from None
        return conn

    def close_all(self) -> None:
        for conn in self._open:
            conn.close()
        self._open.clear()
