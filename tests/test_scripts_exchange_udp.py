"""The real UDP path of the scripts' :class:`ReactorExchange`, against loopback UDP servers.

A Python UDP server on 127.0.0.1 (a thread with a plain socket) answers each
datagram; the exchange runs on a real reactor in a thread — the poll-like
reactor ``vscan scan`` and the daemon use on Linux (epoll), and the select
reactor — and a script's view of it is checked: one datagram per receive,
datagrams in arrival order, a silent peer is a timeout, a closed port (ICMP
port unreachable) is ``ExchangeClosed`` rather than a silent socket, and
``close_all`` releases the socket.
"""

from __future__ import annotations

import contextlib
import os
import queue
import select
import socket
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.task import Clock, deferLater
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.loopback import free_port
from vscand.scripts.exchange import (
    ExchangeClosed,
    ExchangeTimeout,
    ReactorExchange,
    _TCPConnection,
    _UDPConnection,
)

LOOPBACK = "127.0.0.1"


class UDPServer:
    """Answers each datagram with ``reply(datagram)`` (a list of datagrams to send back)."""

    def __init__(self, reply: Callable[[bytes], list[bytes]]) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.port: int = self.sock.getsockname()[1]
        self.received: list[bytes] = []
        self.peers: set[tuple[str, int]] = set()
        self._reply = reply
        threading.Thread(target=self._loop, daemon=True).start()

    def _loop(self) -> None:
        while True:
            try:
                data, peer = self.sock.recvfrom(65536)
            except OSError:
                return
            self.received.append(data)
            self.peers.add(peer)
            for answer in self._reply(data):
                self.sock.sendto(answer, peer)

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self.sock.close()


class RealReactor:
    """A private reactor of the given kind running in a thread (never the global one)."""

    def __init__(self, kind: str) -> None:
        if kind == "epoll":
            from twisted.internet.epollreactor import EPollReactor

            self.reactor: Any = EPollReactor()  # type: ignore[no-untyped-call]
        else:
            from twisted.internet.selectreactor import SelectReactor

            self.reactor = SelectReactor()  # type: ignore[no-untyped-call]
        self.thread = threading.Thread(
            target=self.reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
        )
        self.thread.start()

    def run(self, function: Callable[[], Any], timeout: float = 30.0) -> Any:
        """Run ``function`` (an ``async def`` of no argument, or a plain one) in the reactor
        thread and return its result."""
        results: queue.Queue[Any] = queue.Queue()

        def start() -> None:
            maybeDeferred(
                lambda: _as_deferred(function())  # coroutine -> Deferred
            ).addBoth(results.put)

        self.reactor.callFromThread(start)
        result = results.get(timeout=timeout)
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def stop(self) -> None:
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(10)


def _as_deferred(value: Any) -> Any:
    if hasattr(value, "__await__") and not isinstance(value, Deferred):
        return Deferred.fromCoroutine(value)
    return value


@pytest.fixture(params=["epoll", "select"])
def real(request: pytest.FixtureRequest) -> Iterator[RealReactor]:
    if request.param == "epoll" and not hasattr(select, "epoll"):
        pytest.skip("no epoll on this system")
    runner = RealReactor(request.param)
    try:
        yield runner
    finally:
        runner.stop()


def test_udp_exchange_sends_datagrams_and_receives_one_per_call(real: RealReactor) -> None:
    server = UDPServer(lambda data: [b"first:" + data, b"second:" + data])
    try:
        exchange = ReactorExchange(real.reactor, LOOPBACK, server.port, "udp")

        async def talk() -> list[bytes]:
            conn = await exchange.connect()
            conn.send(b"hello")
            got = [await conn.receive(5.0), await conn.receive(5.0)]
            conn.send(b"again")
            got.append(await conn.receive_exactly(6, 5.0))  # the first 6 bytes of one datagram
            got.append(await conn.receive_at_least(1, 5.0))
            return got

        assert real.run(talk) == [b"first:hello", b"second:hello", b"first:", b"second:again"]
        assert server.received == [b"hello", b"again"]
        assert len(server.peers) == 1  # one connected socket for the whole conversation
        real.run(exchange.close_all)
    finally:
        server.close()


def _own_udp_ports() -> set[int]:
    """Local ports of the UDP sockets this process holds (from /proc)."""
    inodes = set()
    for fd in os.listdir("/proc/self/fd"):
        with contextlib.suppress(OSError):
            target = os.readlink(f"/proc/self/fd/{fd}")
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    ports = set()
    for table in ("/proc/net/udp", "/proc/net/udp6"):
        with contextlib.suppress(OSError), open(table, encoding="ascii") as lines:
            for line in list(lines)[1:]:
                fields = line.split()
                if fields[9] in inodes:
                    ports.add(int(fields[1].rsplit(":", 1)[1], 16))
    return ports


def test_udp_exchange_silent_peer_times_out_and_close_releases_the_socket(
    real: RealReactor,
) -> None:
    server = UDPServer(lambda data: [])
    try:
        exchange = ReactorExchange(real.reactor, LOOPBACK, server.port, "udp")
        holder: list[Any] = []

        async def wait_silence() -> str:
            conn = await exchange.connect()
            holder.append(conn)
            conn.send(b"anyone?")
            try:
                await conn.receive(0.3)
            except ExchangeTimeout:
                return "timeout"
            return "answered"

        assert real.run(wait_silence) == "timeout"
        local = holder[0]._port.getHost().port
        assert local in _own_udp_ports()  # the check sees a socket while it is open
        real.run(exchange.close_all)

        async def a_turn() -> None:
            await deferLater(real.reactor, 0.05)

        # the socket is gone: no descriptor of this process is a UDP socket on that port
        # (binding the number again would race with other processes' ephemeral ports); a
        # port's close completes on a later reactor turn, so give the reactor a few
        for _ in range(40):
            if local not in _own_udp_ports():
                break
            real.run(a_turn)
        assert local not in _own_udp_ports()
    finally:
        server.close()


def test_udp_exchange_port_unreachable_is_closed_not_silence(real: RealReactor) -> None:
    """ICMP port unreachable ends the conversation at once (ExchangeClosed), on every
    reactor: the epoll reactor must not just drop the socket and leave the script waiting."""
    # nothing is bound to a free port: the kernel answers ICMP port unreachable
    exchange = ReactorExchange(real.reactor, LOOPBACK, free_port(), "udp")

    async def talk() -> list[str]:
        conn = await exchange.connect()
        outcome = []
        conn.send(b"ping")
        try:
            await conn.receive(10.0)
        except ExchangeClosed:
            outcome.append("closed")
        except ExchangeTimeout:
            outcome.append("timeout")
        try:
            conn.send(b"ping again")
        except ExchangeClosed:
            outcome.append("send refused")
        return outcome

    assert real.run(talk) == ["closed", "send refused"]
    real.run(exchange.close_all)


def test_udp_exchange_reaches_a_different_port_of_the_host(real: RealReactor) -> None:
    """``connect(port=..., protocol="udp")`` from a TCP port's exchange (as rpcinfo may)."""
    server = UDPServer(lambda data: [data[::-1]])
    try:
        exchange = ReactorExchange(real.reactor, LOOPBACK, 1, "tcp")

        async def talk() -> bytes:
            conn = await exchange.connect(port=server.port, protocol="udp")
            conn.send(b"abc")
            return await conn.receive(5.0)

        assert real.run(talk) == b"cba"
        real.run(exchange.close_all)
    finally:
        server.close()


def test_udp_any_source_port_takes_the_hosts_answer_from_a_new_port(real: RealReactor) -> None:
    """``any_source_port`` (tftp-version): the answer comes from another port of the host
    (a TFTP transfer id); a datagram from another address (127.0.0.2) is not taken."""
    stranger = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    stranger.bind(("127.0.0.2", 0))
    fresh = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    fresh.bind((LOOPBACK, 0))

    def reply(data: bytes) -> list[bytes]:
        peer = next(iter(server.peers))
        stranger.sendto(b"not the host", peer)
        fresh.sendto(b"from a new port", peer)
        return []

    server = UDPServer(reply)
    try:
        exchange = ReactorExchange(real.reactor, LOOPBACK, server.port, "udp")

        async def talk() -> tuple[bytes, int | None]:
            conn = await exchange.connect(any_source_port=True)
            conn.send(b"\x00\x01A.b\x00octet\x00")
            data = await conn.receive(5.0)
            return data, getattr(conn, "peer_port", None)

        assert real.run(talk) == (b"from a new port", fresh.getsockname()[1])
        real.run(exchange.close_all)
    finally:
        server.close()
        stranger.close()
        fresh.close()


@pytest.mark.parametrize("kind", ["tcp", "udp"])
def test_receive_timeout_is_an_exchange_timeout(kind: str) -> None:
    """A receive that times out raises ExchangeTimeout, which scripts catch (``addTimeout``
    turns its cancellation into Twisted's TimeoutError, which they would not)."""
    clock = Clock()
    conn: Any = _TCPConnection(clock, 1 << 20) if kind == "tcp" else _UDPConnection(clock, 1 << 20)
    conn.makeConnection(StringTransport())
    waiting = Deferred.fromCoroutine(conn.receive(2.0))
    clock.advance(1.9)
    assert not waiting.called
    clock.advance(0.1)
    failure = waiting.result
    waiting.addErrback(lambda _: None)
    assert isinstance(failure, Failure)
    assert failure.check(ExchangeTimeout), failure
    assert not clock.getDelayedCalls()
