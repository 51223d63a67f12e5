"""RedisClient: pin-level contract tests of txredisapi 1.6.0 as we use it (reliability.md §5
row 15, §2) against a real loopback ``redis-server``, plus Clock-driven unit tests of the
timing: reconnection backoff, bounded commands, the blocking-read watchdog."""

from __future__ import annotations

import socket
import time
from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.address import IPv4Address
from twisted.internet.defer import Deferred
from twisted.internet.error import ConnectionDone, ConnectionRefusedError
from twisted.internet.interfaces import IProtocolFactory, IStreamClientEndpoint
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.logger import formatEvent
from twisted.python.failure import Failure
from zope.interface import implementer

from tests.hostile.measure import allowed
from tests.reactor_thread import ReactorThread
from tests.redis_server import RedisServer
from vscand.queue.client import RedisClient, RedisURL, parse_redis_url
from vscand.queue.errors import RedisRefused, RedisReplyError, RedisUnavailable
from vscand.queue.link import retry_policy

FAST_RETRY = retry_policy(initial=0.1, cap=1.0, jitter=0.0)
#: the longest the client waits, once Redis is back, before a PING succeeds: FAST_RETRY's
#: capped delay plus one PING's timeout (``eventually``); allowed() is the suite's machine
#: allowance (tests/hostile/measure.py)
BACK_WITHIN = allowed(FAST_RETRY(64) + 0.5)


def make_client(rt: ReactorThread, url: str, **kwargs: Any) -> RedisClient:
    kwargs.setdefault("retry", FAST_RETRY)
    client: RedisClient = rt.call(lambda: RedisClient(rt.reactor, url, **kwargs))
    return client


@pytest.fixture
def client(reactor_thread: ReactorThread, redis_server: RedisServer) -> Iterator[RedisClient]:
    c = make_client(reactor_thread, redis_server.url, command_timeout=2.0)
    reactor_thread.call(c.connect)
    try:
        yield c
    finally:
        reactor_thread.call(c.disconnect)


def eventually(rt: ReactorThread, client: RedisClient, within: float, *args: Any) -> Any:
    """Retry a command until it succeeds; its reply (fails after *within* seconds)."""
    deadline = time.monotonic() + within
    while True:
        try:
            return rt.call(lambda: client.execute(*args, timeout=0.5))
        except RedisUnavailable:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.05)


# -- URLs ---------------------------------------------------------------------------------------


def test_parse_urls() -> None:
    assert parse_redis_url("redis://127.0.0.1:6380/2") == RedisURL("127.0.0.1", 6380, 2)
    url = parse_redis_url("rediss://alice:p%40ss@redis.example:6390/1")
    assert (url.host, url.port, url.db, url.username, url.password, url.ssl) == (
        "redis.example", 6390, 1, "alice", "p@ss", True,
    )  # fmt: skip
    assert parse_redis_url("redis://:pw@[::1]/0").host == "::1"
    assert parse_redis_url("redis://localhost").port == 6379
    unix = parse_redis_url("unix:///run/redis/redis.sock?db=3&password=pw")
    assert (unix.unix_path, unix.db, unix.password, unix.host) == (
        "/run/redis/redis.sock", 3, "pw", None,
    )  # fmt: skip
    for bad in ("http://x", "redis://", "redis://h/x", "unix://", "redis://h:99999"):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


def test_parse_sentinel_urls() -> None:
    url = parse_redis_url(
        "redis+sentinel://:s%40cret@127.0.0.1:26379,[::1]:26380,sentinel-3/vscand/2"
        "?sentinel_password=sp"
    )
    assert url.sentinels == (("127.0.0.1", 26379), ("::1", 26380), ("sentinel-3", 26379))
    assert (url.service, url.db, url.password, url.sentinel_password, url.ssl) == (
        "vscand", 2, "s@cret", "sp", False,
    )  # fmt: skip
    assert url.sentinel
    assert str(url) == "redis+sentinel://:***@127.0.0.1:26379,[::1]:26380,sentinel-3:26379/vscand/2"
    assert "cret" not in repr(url) and "sp'" not in repr(url)
    tls = parse_redis_url("rediss+sentinel://h1:1,h2:2/mymaster")
    assert (tls.ssl, tls.db, tls.service) == (True, 0, "mymaster")
    for bad in (
        "redis+sentinel://h:1/",  # no service
        "redis+sentinel://h:1,,h:2/s",  # an empty address
        "redis+sentinel://h:99999/s",
        "redis+sentinel://h:x/s",
        "redis+sentinel://h:1/s/x",  # db not a number
        "redis+sentinel://h:1/s/0/more",
    ):
        with pytest.raises(ValueError):
            parse_redis_url(bad)


def test_password_never_shown() -> None:
    url = parse_redis_url("redis://bob:hunter2@10.0.0.1:6379/0")
    assert "hunter2" not in repr(url) and "hunter2" not in str(url)
    assert str(url) == "redis://bob:***@10.0.0.1:6379/0"
    client = RedisClient(Clock(), "redis://:hunter2@10.0.0.1/0", endpoint=FakeEndpoint())
    assert "hunter2" not in repr(client)


# -- contract tests against a real redis-server ---------------------------------------------------


def test_replies_stay_raw(reactor_thread: ReactorThread, client: RedisClient) -> None:
    """convertNumbers off, charset None: "0080" stays b"0080", banners stay bytes."""
    rt = reactor_thread
    banner = b"\xff\xfe\x00SSH-2.0\r\n"
    rt.call(lambda: client.execute("XADD", "s", "*", "port", "0080", "ver", "1.10", "b", banner))
    [[_entry_id, fields]] = rt.call(lambda: client.execute("XRANGE", "s", "-", "+"))
    assert fields == [b"port", b"0080", b"ver", b"1.10", b"b", banner]
    assert rt.call(lambda: client.execute("SET", "k", "007")) == b"OK"
    assert rt.call(lambda: client.execute("GET", "k")) == b"007"
    assert rt.call(lambda: client.execute("INCR", "n")) == 1
    assert rt.call(lambda: client.execute("GET", "missing")) is None


def test_error_replies(reactor_thread: ReactorThread, client: RedisClient) -> None:
    rt = reactor_thread
    rt.call(lambda: client.execute("SET", "k", "x"))
    with pytest.raises(RedisReplyError) as info:
        rt.call(lambda: client.execute("INCR", "k"))
    assert info.value.code == "ERR" and "not an integer" in info.value.message
    with pytest.raises(RedisReplyError) as info:
        rt.call(lambda: client.execute("XREADGROUP", "GROUP", "g", "c", "STREAMS", "s", ">"))
    assert info.value.code == "NOGROUP"
    # the connection is still in step after errors
    assert rt.call(lambda: client.execute("GET", "k")) == b"x"


def test_refusals_for_now_are_unavailability_not_errors(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    """OOM under ``noeviction`` (Redis refusing writes) is retried like an outage by every
    caller that retries on RedisUnavailable; a script refused that way wrote nothing."""
    rt = reactor_thread
    script = "redis.call('SET', 'a', '1'); redis.call('XADD', 's', '*', 'f', ARGV[1]); return 1"
    info = rt.call(lambda: client.execute("INFO", "memory")).decode()
    used = int(next(line for line in info.splitlines() if line.startswith("used_memory:"))[12:])
    rt.call(lambda: client.execute("CONFIG", "SET", "maxmemory-policy", "noeviction"))
    rt.call(lambda: client.execute("CONFIG", "SET", "maxmemory", str(used)))
    try:
        with pytest.raises(RedisRefused) as refused:
            rt.call(lambda: client.eval(script, [], ["x" * 4096]))
        assert isinstance(refused.value, RedisUnavailable)
        assert "OOM" in str(refused.value)
    finally:
        rt.call(lambda: client.execute("CONFIG", "SET", "maxmemory", "0"))
    assert rt.call(lambda: client.execute("EXISTS", "a", "s")) == 0
    assert rt.call(lambda: client.eval(script, [], ["x"])) == 1
    # a real error stays an error
    with pytest.raises(RedisReplyError):
        rt.call(lambda: client.execute("INCR", "s"))


def test_eval_falls_back_to_eval_on_noscript(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    script = "return {KEYS[1], ARGV[1], tonumber(ARGV[2]) + 1}"
    assert rt.call(lambda: client.eval(script, ["k"], ["0080", 41])) == [b"k", b"0080", 42]
    rt.call(lambda: client.execute("SCRIPT", "FLUSH"))
    assert rt.call(lambda: client.eval(script, ["k"], ["a", 1])) == [b"k", b"a", 2]


def test_blocking_read_outlives_command_timeout(
    reactor_thread: ReactorThread, redis_server: RedisServer
) -> None:
    """A 1.5 s BLOCK is not cut by a 0.3 s command timeout (txredisapi's replyTimeout would)."""
    rt = reactor_thread
    c = make_client(rt, redis_server.url, command_timeout=0.3)
    rt.call(lambda: c.execute("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"))
    started = time.monotonic()
    reply = rt.call(
        lambda: c.blocking(
            "XREADGROUP", "GROUP", "g", "c", "BLOCK", 1500, "STREAMS", "s", ">", block_ms=1500
        )
    )
    assert reply is None
    assert time.monotonic() - started >= 1.4
    rt.call(c.disconnect)


def test_blocking_read_does_not_delay_commands(
    reactor_thread: ReactorThread, client: RedisClient
) -> None:
    rt = reactor_thread
    rt.call(lambda: client.execute("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"))
    read = rt.start(
        lambda: client.blocking(
            "XREADGROUP", "GROUP", "g", "c", "BLOCK", 10000, "STREAMS", "s", ">", block_ms=10000
        )
    )
    time.sleep(0.2)  # the read is blocked on the server
    for i in range(20):
        rt.call(lambda i=i: client.execute("SET", f"k{i}", i))
    # commands queued behind the read could not have been answered before it ended (its
    # BLOCK, or the XADD below): no wall-clock bound needed
    assert not rt.call(lambda: read.called)
    entry_id = rt.call(lambda: client.execute("XADD", "s", "*", "job", "x"))
    [[stream, [[got_id, _fields]]]] = rt.call(lambda: read)
    assert (stream, got_id) == (b"s", entry_id)


def test_in_flight_read_fails_when_redis_dies(
    reactor_thread: ReactorThread, client: RedisClient, redis_server: RedisServer
) -> None:
    rt = reactor_thread
    rt.call(lambda: client.execute("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"))
    read = rt.start(
        lambda: client.blocking(
            "XREADGROUP", "GROUP", "g", "c", "BLOCK", 10000, "STREAMS", "s", ">", block_ms=10000
        )
    )
    time.sleep(0.2)
    started = time.monotonic()
    redis_server.kill()
    with pytest.raises(RedisUnavailable):
        rt.call(lambda: read)
    # a read that outlived the dead connection would end at its BLOCK (10 s) at the soonest
    assert time.monotonic() - started < 10000 / 1000


def test_commands_during_an_outage_fail_within_their_timeout(
    reactor_thread: ReactorThread, client: RedisClient, redis_server: RedisServer
) -> None:
    rt = reactor_thread
    redis_server.kill()
    time.sleep(0.1)
    for _ in range(2):
        started = time.monotonic()
        with pytest.raises(RedisUnavailable):
            rt.call(lambda: client.execute("GET", "k", timeout=0.5))
        # at its own 0.5 s timeout (a timer never fires early), before the client's 2 s
        # command_timeout (what it would wait if it ignored the call's timeout)
        assert 0.4 < time.monotonic() - started < client.command_timeout
    assert not client.connected


def test_recovers_after_redis_restart(
    reactor_thread: ReactorThread, client: RedisClient, redis_server: RedisServer
) -> None:
    rt = reactor_thread
    rt.call(lambda: client.execute("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"))
    rt.call(lambda: client.blocking("XREADGROUP", "GROUP", "g", "c", "BLOCK", 10,
                                    "STREAMS", "s", ">", block_ms=10))  # fmt: skip
    redis_server.restart()
    started = time.monotonic()
    assert eventually(rt, client, BACK_WITHIN, "PING") == b"PONG"
    assert time.monotonic() - started < BACK_WITHIN
    # the reader connection comes back too
    rt.call(lambda: client.execute("XGROUP", "CREATE", "s", "g", "$", "MKSTREAM"))
    reply = rt.call(lambda: client.blocking("XREADGROUP", "GROUP", "g", "c", "BLOCK", 10,
                                            "STREAMS", "s", ">", block_ms=10))  # fmt: skip
    assert reply is None


def test_recovers_after_client_kill(
    reactor_thread: ReactorThread, client: RedisClient, redis_server: RedisServer
) -> None:
    rt = reactor_thread
    rt.call(lambda: client.blocking("PING", block_ms=0))
    listed = rt.call(lambda: client.execute("CLIENT", "LIST"))
    assert b"name=vscand " in listed and b"name=vscand:reader " in listed
    assert redis_server.command("CLIENT", "KILL", "TYPE", "normal").startswith(b":2")
    assert eventually(rt, client, 5.0, "PING") == b"PONG"
    deadline = time.monotonic() + 5
    while True:
        try:
            assert rt.call(lambda: client.blocking("PING", block_ms=0)) == b"PONG"
            break
        except RedisUnavailable:
            assert time.monotonic() < deadline
            time.sleep(0.05)


class Admin:
    """A persistent, authenticated raw connection: it keeps its slot under maxclients."""

    def __init__(self, port: int, password: str) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = self.sock.makefile("rb")
        assert self.call("AUTH", password) == b"+OK"

    def call(self, *args: str) -> bytes:
        parts = [a.encode() for a in args]
        self.sock.sendall(
            b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        )
        line = self.reader.readline()
        if line.startswith(b"$"):
            return self.reader.read(int(line[1:]) + 2)[:-2]
        return line.rstrip(b"\r\n")

    def close(self) -> None:
        self.reader.close()
        self.sock.close()


def test_recovers_from_the_auth_maxclients_trap(
    reactor_thread: ReactorThread,
    redis_server: RedisServer,
    logged_errors: list[dict[str, Any]],
) -> None:
    """txredisapi's own pool stops reconnecting for good when AUTH fails during a reconnect
    ("max number of clients reached" is enough, reliability.md §2.4); ours goes on."""
    rt = reactor_thread
    password = "s3cret-Pa55"
    redis_server.command("CONFIG", "SET", "requirepass", password)
    admin = Admin(redis_server.port, password)
    seen: list[str] = []
    from twisted.logger import globalLogPublisher

    def observe(event: dict[str, Any]) -> None:
        seen.append(formatEvent(event) or "")

    globalLogPublisher.addObserver(observe)
    client = make_client(
        rt, f"redis://:{password}@127.0.0.1:{redis_server.port}/0", command_timeout=0.5
    )
    try:
        assert rt.call(lambda: client.execute("PING")) == b"PONG"
        assert admin.call("CONFIG", "SET", "maxclients", "1") == b"+OK"  # admin holds it
        assert admin.call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes") == b":1"
        time.sleep(1.5)  # reconnection attempts are rejected meanwhile
        info = admin.call("INFO", "stats")
        rejected = int(info.split(b"rejected_connections:")[1].split(b"\r\n")[0])
        assert rejected >= 2
        assert not client.connected
        with pytest.raises(RedisUnavailable):
            rt.call(lambda: client.execute("PING"))
        assert admin.call("CONFIG", "SET", "maxclients", "10000") == b"+OK"
        started = time.monotonic()
        assert eventually(rt, client, BACK_WITHIN, "PING") == b"PONG"
        assert time.monotonic() - started < BACK_WITHIN
    finally:
        rt.call(client.disconnect)
        globalLogPublisher.removeObserver(observe)
        admin.close()
    assert any("rejected the vscand connection" in line for line in seen)
    assert not [line for line in seen if password in line]
    assert not logged_errors


# -- Clock-driven unit tests -------------------------------------------------------------------


@implementer(IStreamClientEndpoint)
class FakeEndpoint:
    """Connection attempts wait for the test to accept or refuse them."""

    def __init__(self) -> None:
        self.pending: list[tuple[IProtocolFactory, Deferred[Any]]] = []

    def connect(self, factory: IProtocolFactory) -> Deferred[Any]:
        d: Deferred[Any] = Deferred()
        self.pending.append((factory, d))
        return d

    def accept(self) -> tuple[Any, StringTransport]:
        factory, d = self.pending.pop(0)
        proto = factory.buildProtocol(IPv4Address("TCP", "127.0.0.1", 6379))
        transport = StringTransport()
        assert proto is not None
        proto.makeConnection(transport)
        d.callback(proto)
        return proto, transport

    def refuse(self) -> None:
        _factory, d = self.pending.pop(0)
        d.errback(ConnectionRefusedError())


def handshake(endpoint: FakeEndpoint, auth: bytes | None = None) -> tuple[Any, StringTransport]:
    proto, transport = endpoint.accept()
    if auth is not None:
        assert b"AUTH" in transport.value()
        proto.dataReceived(auth)
        if not auth.startswith(b"+"):
            return proto, transport
    assert b"SETNAME" in transport.value()
    transport.clear()
    proto.dataReceived(b"+OK\r\n")
    return proto, transport


def lose(proto: Any) -> None:
    proto.connectionLost(Failure(ConnectionDone()))


def test_reconnects_with_backoff_through_rejected_handshakes() -> None:
    clock = Clock()
    endpoint = FakeEndpoint()
    client = RedisClient(
        clock, "redis://:pw@127.0.0.1/0", endpoint=endpoint,
        retry=retry_policy(initial=0.1, cap=5.0, factor=2.0, jitter=0.0),
    )  # fmt: skip
    connected = client.connect()
    proto, _ = handshake(endpoint, auth=b"+OK\r\n")
    assert connected.called and client.connected
    lose(proto)
    assert not client.connected
    delays = []
    for _ in range(8):
        [call] = clock.getDelayedCalls()
        delays.append(round(call.getTime() - clock.seconds(), 3))
        clock.advance(call.getTime() - clock.seconds())
        proto, transport = handshake(endpoint, auth=b"-ERR max number of clients reached\r\n")
        assert transport.disconnecting
        lose(proto)
    assert delays == [0.1, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2, 5.0]
    # refused TCP connections back off too
    [call] = clock.getDelayedCalls()
    clock.advance(call.getTime() - clock.seconds())
    endpoint.refuse()
    [call] = clock.getDelayedCalls()
    assert call.getTime() - clock.seconds() == 5.0
    clock.advance(5.0)
    proto, transport = handshake(endpoint, auth=b"+OK\r\n")
    assert client.connected
    reply = client.execute("PING")
    assert b"PING" in transport.value()
    proto.dataReceived(b"+PONG\r\n")
    assert reply.result == b"PONG"
    client.disconnect()
    lose(proto)
    assert clock.getDelayedCalls() == []


def test_commands_fail_after_their_timeout_while_disconnected() -> None:
    clock = Clock()
    endpoint = FakeEndpoint()
    client = RedisClient(clock, "redis://127.0.0.1/0", endpoint=endpoint, command_timeout=5.0)
    reply = client.execute("GET", "k")
    clock.advance(4.9)
    assert not reply.called
    clock.advance(0.2)
    failure = reply.result
    reply.addErrback(lambda _: None)
    assert isinstance(failure.value, RedisUnavailable)
    client.disconnect()
    assert clock.getDelayedCalls() == []


def test_unanswered_command_drops_the_connection() -> None:
    clock = Clock()
    endpoint = FakeEndpoint()
    client = RedisClient(clock, "redis://127.0.0.1/0", endpoint=endpoint, command_timeout=2.0)
    client.connect()
    proto, transport = handshake(endpoint)
    reply = client.execute("GET", "k")
    clock.advance(2.0)
    failures: list[Failure] = []
    reply.addErrback(failures.append)
    assert isinstance(failures[0].value, RedisUnavailable)
    assert transport.disconnected  # aborted: a new connection is made
    lose(proto)
    clock.advance(1.0)
    handshake(endpoint)
    assert client.connected
    client.disconnect()


def test_blocking_read_watchdog_drops_a_silent_reader() -> None:
    """A half-open reader connection: no reply to BLOCK 1000 within 1 s + command_timeout."""
    clock = Clock()
    endpoint = FakeEndpoint()
    client = RedisClient(clock, "redis://127.0.0.1/0", endpoint=endpoint, command_timeout=2.0)
    client.connect()
    handshake(endpoint)
    read = client.blocking("XREADGROUP", "BLOCK", 1000, block_ms=1000)
    reader, transport = handshake(endpoint)
    assert b"XREADGROUP" in transport.value()
    clock.advance(2.9)
    assert not read.called
    clock.advance(0.1)
    failures: list[Failure] = []
    read.addErrback(failures.append)
    assert isinstance(failures[0].value, RedisUnavailable)
    assert transport.disconnected
    lose(reader)
    clock.advance(1.0)
    reader, transport = handshake(endpoint)
    read = client.blocking("XREADGROUP", "BLOCK", 1000, block_ms=1000)
    reader.dataReceived(b"*-1\r\n")
    assert read.result is None
    client.disconnect()


def test_cancelled_blocking_read_drops_the_reader() -> None:
    clock = Clock()
    endpoint = FakeEndpoint()
    client = RedisClient(clock, "redis://127.0.0.1/0", endpoint=endpoint)
    client.connect()
    handshake(endpoint)
    read = client.blocking("XREADGROUP", "BLOCK", 5000, block_ms=5000)
    _reader, transport = handshake(endpoint)
    read.cancel()
    read.addErrback(lambda _: None)
    assert transport.disconnected
    client.disconnect()
