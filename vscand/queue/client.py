"""Our small interface over txredisapi: bounded commands, a dedicated blocking reader, supervision.

txredisapi 1.6.0 is used for its RESP protocol only (``RedisProtocol`` with ``charset=None``
and ``convertNumbers=False``: bulk strings stay ``bytes``, ``"0080"`` stays ``b"0080"``).
Connection management is ours, one :class:`ClientService` per connection, because the
library's own pool has the traps measured in ``reliability.md`` §2:

* an AUTH/SELECT error during a reconnect (``max number of clients reached`` after a Redis
  restart is enough) makes it stop reconnecting for good; here the protocol's
  ``factory.stopTrying()`` is a no-op, the rejected connection is dropped and
  :class:`ClientService` tries again with backoff, so that trap cannot happen;
* commands issued while disconnected wait forever; here every call is bounded
  (:meth:`RedisClient.execute` by ``command_timeout``, waiting for a connection included),
  and a command that gets no reply in time drops its connection, since a connection that
  does not answer (half-open TCP, a wedged server) would make every later command time out
  too;
* ``replyTimeout`` aborts a ``BLOCK`` read and a pooled blocking read stalls other
  commands; here blocking reads have their own connection, opened on first use, with
  ``apply_timeout=False`` and our own watchdog.

Replies are raw: bulk strings ``bytes``, status replies ``bytes`` (``b"OK"``), integers
``int``, nil ``None``, arrays ``list``. Atomic multi-command steps are Lua scripts
(:meth:`RedisClient.eval`); MULTI/EXEC is not supported on the shared connection.
"""

from __future__ import annotations

import hashlib
import random
import warnings
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from twisted.application.internet import ClientService
from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, DeferredLock
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure
from zope.interface import implementer

from vscand.queue.redis_url import (
    DEFAULT_PORT,
    DEFAULT_SENTINEL_PORT,
    RedisURL,
    parse_redis_url,
)
from vscand.queue.resp import ReplyCap, ReplyCapError, ReplyLimits, cut_size, new_token

with warnings.catch_warnings():
    # its module body builds a set mixing b"subscribe" and "subscribe" (python -b warns)
    warnings.simplefilter("ignore", BytesWarning)
    import txredisapi

log = Logger(namespace="vscand.redis")

Arg = str | bytes | int | float


class RedisUnavailable(Exception):
    """Redis could not be reached: not connected, the connection was lost, or no reply in time.

    Whether a write sent before the connection was lost was applied is unknown, which is
    why everything written to Redis is idempotent.
    """


class RedisReplyError(Exception):
    """Redis answered with an error reply (``NOGROUP``, ``OOM``, ``READONLY``, ``WRONGTYPE``...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        """The error code: the first word (``NOGROUP``, ``NOSCRIPT``, ``BUSYGROUP``, ``ERR``...)."""
        return self.message.split(" ", 1)[0] if self.message else ""


__all__ = ["DEFAULT_PORT", "DEFAULT_SENTINEL_PORT", "RedisURL", "parse_redis_url"]


@implementer(IStreamClientEndpoint)
class SentinelEndpoint:
    """Asks the sentinels for the current master of a service before every connection
    (txredisapi's ``Sentinel.discover_master``: the first sentinel that answers with a
    master it sees up), then connects there. Each link's :class:`ClientService` reconnects
    through it, so a failover is followed by itself: the old master's connection drops
    (or answers ``READONLY``, which drops it too), and the next attempt finds the new one.
    """

    def __init__(
        self,
        reactor: Any,
        url: RedisURL,
        *,
        timeout: float,
        sentinel: Any | None = None,
    ) -> None:
        self._reactor = reactor
        self.url = url
        self.timeout = timeout
        if sentinel is None:
            extra = {} if url.sentinel_password is None else {"password": url.sentinel_password}
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", BytesWarning)
                sentinel = txredisapi.Sentinel(list(url.sentinels), **extra)
            sentinel.discovery_timeout = timeout
        self.sentinel = sentinel
        #: the master the last connection went to (for logs and tests)
        self.master: tuple[str, int] | None = None

    def connect(self, protocolFactory: Any) -> Deferred[Any]:
        return Deferred.fromCoroutine(self._connect(protocolFactory))

    async def _connect(self, protocolFactory: Any) -> Any:
        assert self.url.service is not None
        try:
            host, port = await self.sentinel.discover_master(self.url.service)
        except txredisapi.MasterNotFoundError as exc:
            raise RedisUnavailable(f"Sentinel: {exc}") from None
        address = (_text_host(host), int(port))
        if address != self.master:
            log.info(
                "Sentinel: the master of {service} is {host}:{port}",
                service=self.url.service,
                host=address[0],
                port=address[1],
            )
            self.master = address
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, address[0], address[1], timeout=self.timeout
        )
        if self.url.ssl:
            from twisted.internet.ssl import optionsForClientTLS  # noqa: PLC0415

            endpoint = wrapClientTLS(optionsForClientTLS(address[0]), endpoint)
        return await endpoint.connect(protocolFactory)

    def close(self) -> Deferred[Any]:
        """Close the connections to the sentinels."""
        return defer.maybeDeferred(self.sentinel.disconnect)


def _text_host(host: Any) -> str:
    return host.decode() if isinstance(host, bytes) else str(host)


# -- reconnection policy ----------------------------------------------------------------------


def retry_policy(
    initial: float = 0.1,
    cap: float = 5.0,
    factor: float = 2.0,
    jitter: float = 0.2,
    rand: Callable[[], float] = random.random,
) -> Callable[[int], float]:
    """Seconds before consecutive reconnection attempt *n* (1, 2, ...): exponential, capped.

    Like Twisted's ``backoffPolicy`` but the first delay is *initial* and the jitter is
    proportional (up to ``jitter`` of the delay), so a fleet that lost Redis together does
    not come back in lock step, also at the cap.
    """

    def policy(attempt: int) -> float:
        exponent = min(max(attempt, 1) - 1, 64)
        delay = min(initial * factor**exponent, cap)
        return delay * (1.0 + jitter * rand())

    return policy


# -- one supervised connection ----------------------------------------------------------------


class _RedisProtocol(txredisapi.RedisProtocol):  # type: ignore[misc]
    """txredisapi's protocol, with status replies as ``bytes`` like every other string."""

    link: _Link
    #: the reply filter of this connection (:mod:`vscand.queue.resp`), when its link has limits
    cap: ReplyCap | None = None

    def dataReceived(self, data: bytes, unpause: bool = False) -> None:
        # unpause=True is the parser handing itself bytes it already had (filtered ones)
        if self.cap is not None and not unpause:
            try:
                data = self.cap.feed(data)
            except ReplyCapError as exc:
                log.error("Redis reply refused ({error}); dropping the connection", error=exc)
                self.cap = None
                self.transport.abortConnection()
                return
        super().dataReceived(data, unpause)

    def replyReceived(self, reply: Any) -> None:
        super().replyReceived(reply.encode() if isinstance(reply, str) else reply)

    def handleMultiBulkElement(self, element: Any) -> None:
        super().handleMultiBulkElement(element.encode() if isinstance(element, str) else element)


class _ProtocolFactory(Factory):
    """Builds the protocols of one link; absorbs txredisapi's "stop trying" on a failed AUTH."""

    isLazy = False  # txredisapi reads it: do not also log through the legacy logger
    noisy = False

    def __init__(self, link: _Link, url: RedisURL, clock: Any) -> None:
        self.link = link
        self.url = url
        self.clock = clock

    def buildProtocol(self, addr: Any) -> _RedisProtocol:
        url = self.url
        proto = _RedisProtocol(
            charset=None,
            replyTimeout=None,
            password=url.password,
            dbid=url.db or None,
            convertNumbers=False,
            username=url.username if url.password is not None else None,
        )
        proto.factory = self
        proto.link = self.link
        if self.link.limits is not None:
            proto.cap = ReplyCap(self.link.limits, self.link.token)
        proto.callLater = self.clock.callLater  # the line parser defers leftovers with it
        self.link.built(proto)
        return proto

    def stopTrying(self) -> None:
        """Called by txredisapi when AUTH or SELECT fails: we keep trying, with backoff."""

    def connectionError(self, why: str) -> None:
        # txredisapi's message: "Redis error: could not auth: <reply>" (never the password)
        self.link.handshake_failed(why)


class _Link:
    """One Redis connection, kept up by a :class:`ClientService`: ready after AUTH, SELECT and
    CLIENT SETNAME, dropped when the handshake fails or takes longer than *connect_timeout*."""

    def __init__(
        self,
        *,
        clock: Any,
        endpoint: IStreamClientEndpoint,
        url: RedisURL,
        name: str,
        policy: Callable[[int], float],
        connect_timeout: float,
        limits: ReplyLimits | None = None,
        token: bytes = b"",
    ) -> None:
        self.clock = clock
        self.limits = limits
        self.token = token
        self.url = url
        self.name = name
        self.connect_timeout = connect_timeout
        self.ready: _RedisProtocol | None = None
        self.stopped = False
        self._policy = policy
        self._rejected = 0  # connections in a row that never became ready
        self._waiters: list[Deferred[_RedisProtocol]] = []
        self._handshakes: dict[_RedisProtocol, IDelayedCall] = {}
        self._service = ClientService(
            endpoint,
            _ProtocolFactory(self, url, clock),
            retryPolicy=self._retry_delay,
            clock=clock,
            prepareConnection=self._prepare,
        )

    @property
    def running(self) -> bool:
        return bool(self._service.running)

    def start(self) -> None:
        if not self._service.running and not self.stopped:
            self._service.startService()

    def stop(self) -> Deferred[None]:
        self.stopped = True
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.errback(RedisUnavailable("the Redis client was disconnected"))
        for timer in self._handshakes.values():
            if timer.active():
                timer.cancel()
        self._handshakes.clear()
        if not self._service.running:
            return defer.succeed(None)
        return self._service.stopService()

    def connection(self, timeout: float) -> Deferred[_RedisProtocol]:
        """The ready protocol, or the next one; :class:`RedisUnavailable` after *timeout*."""
        if self.stopped:
            return defer.fail(RedisUnavailable("the Redis client was disconnected"))
        self.start()
        if self.ready is not None and self.ready.connected:
            return defer.succeed(self.ready)

        def cancel(d: Deferred[_RedisProtocol]) -> None:
            if d in self._waiters:
                self._waiters.remove(d)

        waiter: Deferred[_RedisProtocol] = Deferred(cancel)
        self._waiters.append(waiter)
        waiter.addTimeout(timeout, self.clock)

        def not_connected(failure: Failure) -> Failure:
            if isinstance(failure.value, defer.TimeoutError):
                raise RedisUnavailable(
                    f"not connected to Redis at {self.url.address} (waited {timeout:g} s)"
                )
            return failure

        return waiter.addErrback(not_connected)

    def drop(self, proto: _RedisProtocol) -> None:
        """Abort a connection that stopped answering; ClientService makes a new one."""
        transport = proto.transport
        if transport is not None and proto.connected:
            transport.abortConnection()

    def handshake_failed(self, why: str) -> None:
        log.warn(
            "Redis at {address} rejected the {link} connection ({error}); "
            "reconnecting with backoff",
            address=self.url.address,
            link=self.name,
            error=why,
        )

    # ClientService callbacks

    def _retry_delay(self, attempt: int) -> float:
        # ClientService counts failed TCP connects only; a connection that is accepted and
        # then rejected (AUTH "max number of clients reached") must also back off
        return self._policy(max(attempt, self._rejected))

    def built(self, proto: _RedisProtocol) -> None:
        """A new connection is being made: watch its handshake and its end."""
        self._handshakes[proto] = self.clock.callLater(
            self.connect_timeout, self._handshake_timeout, proto
        )
        proto.whenDisconnected().addCallback(self._lost)
        proto.whenConnected().addCallback(self._authenticated)

    def _prepare(self, proxy: Any) -> None:
        # Returns at once: ClientService has no transition for a connection lost while a
        # prepareConnection Deferred is pending, so readiness is tracked by built() instead
        self._rejected += 1
        keepalive = getattr(proxy.transport, "setTcpKeepAlive", None)
        if keepalive is not None:
            keepalive(1)

    def _handshake_timeout(self, proto: _RedisProtocol) -> None:
        self._handshakes.pop(proto, None)
        if self.ready is not proto:
            log.warn(
                "Redis at {address}: the {link} connection handshake took over {timeout} s; "
                "reconnecting",
                address=self.url.address,
                link=self.name,
                timeout=self.connect_timeout,
            )
            self.drop(proto)

    def _authenticated(self, proto: _RedisProtocol) -> None:
        if self.url.sentinel:
            # Sentinel named it the master a moment ago; make sure it still is (a failover
            # may be under way): a replica is dropped and the sentinels asked again
            try:
                role = proto.execute_command("ROLE")
            except txredisapi.ConnectionError:
                return
            role.addCallbacks(
                lambda reply: self._role(proto, reply), lambda f: self._role(proto, None)
            )
            return
        self._setname(proto)

    def _role(self, proto: _RedisProtocol, reply: Any) -> None:
        role = reply[0] if isinstance(reply, list) and reply else None
        if role in (b"master", "master"):
            self._setname(proto)
            return
        log.warn(
            "Redis at {peer} is not the master ({role!r}); asking the sentinels again",
            peer=_peer(proto),
            role=role,
        )
        self._rejected += 1
        self.drop(proto)

    def _setname(self, proto: _RedisProtocol) -> None:
        try:
            d = proto.execute_command("CLIENT", "SETNAME", self.name)
        except txredisapi.ConnectionError:
            return
        d.addCallbacks(lambda _: self._usable(proto), lambda f: self._setname_failed(f, proto))

    def _setname_failed(self, failure: Failure, proto: _RedisProtocol) -> None:
        if isinstance(
            failure.value, txredisapi.ResponseError
        ):  # an ACL may forbid CLIENT: still usable
            log.info("CLIENT SETNAME refused by Redis: {error}", error=failure.getErrorMessage())
            self._usable(proto)

    def _usable(self, proto: _RedisProtocol) -> None:
        timer = self._handshakes.pop(proto, None)
        if timer is not None and timer.active():
            timer.cancel()
        if not proto.connected or self.stopped:
            return
        self._rejected = 0
        self.ready = proto
        log.info(
            "Connected to Redis at {address} ({link})", address=self.url.address, link=self.name
        )
        waiters, self._waiters = self._waiters, []
        for waiter in waiters:
            waiter.callback(proto)

    def _lost(self, proto: _RedisProtocol) -> None:
        timer = self._handshakes.pop(proto, None)
        if timer is not None and timer.active():
            timer.cancel()
        if self.ready is proto:
            self.ready = None
            if not self.stopped:
                log.warn(
                    "Lost the {link} connection to Redis at {address}; reconnecting",
                    address=self.url.address,
                    link=self.name,
                )


# -- the client -------------------------------------------------------------------------------


#: error replies that say "not now" rather than "wrong": the command was refused as a whole
#: (a script that starts runs to its end, so none was half-applied) and may be retried —
#: out of memory under ``noeviction``, loading its data after a restart, a script running
#: too long, a replica promoted or a master down, a cluster resharding
TRANSIENT_REPLY_CODES = frozenset(
    {"OOM", "LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN"}
)


class RedisRefused(RedisUnavailable):
    """Redis refused the command for now (one of :data:`TRANSIENT_REPLY_CODES`): retried
    like an outage, never treated as a bug."""


def _map_error(failure: Failure) -> Failure:
    if isinstance(failure.value, txredisapi.ResponseError):
        message = str(failure.value)
        if message.split(" ", 1)[0] in TRANSIENT_REPLY_CODES:
            raise RedisRefused(f"Redis refused the command: {message}") from None
        raise RedisReplyError(message) from None
    if isinstance(failure.value, txredisapi.ConnectionError):
        raise RedisUnavailable(f"Redis connection: {failure.getErrorMessage()}") from None
    return failure


def _peer(proto: Any) -> str:
    try:
        peer = proto.transport.getPeer()
        return f"{peer.host}:{peer.port}"
    except Exception:
        return "?"


def _safe_name(name: str) -> str:
    return "".join(c if c.isprintable() and not c.isspace() else "_" for c in name) or "vscand"


class RedisClient:
    """Bounded Redis commands over one connection, blocking reads over a dedicated one.

    Both connections reconnect on their own, with backoff, for ever (until
    :meth:`disconnect`), whatever ended the previous one: a restart, ``CLIENT KILL``, a
    rejected AUTH, ``max number of clients reached``.
    """

    #: Name suffix of the dedicated blocking-read connection (``CLIENT LIST``).
    READER_SUFFIX: ClassVar[str] = ":reader"

    def __init__(
        self,
        reactor: Any,
        url: str,
        *,
        command_timeout: float = 5.0,
        connect_timeout: float = 5.0,
        client_name: str = "vscand",
        retry: Callable[[int], float] | None = None,
        endpoint: IStreamClientEndpoint | None = None,
        reader_limits: ReplyLimits | None = None,
    ) -> None:
        """*reactor* provides ``IReactorTime`` (and TCP/UNIX for the default endpoints).

        *retry* is the reconnection policy (seconds before attempt n, see
        :func:`retry_policy`); *endpoint* replaces the one built from *url* (tests).
        *reader_limits* bounds the replies of the blocking reader (where stream entries
        written by others arrive): larger values come as cut markers (:mod:`.resp`,
        :meth:`cut`).
        """
        self.cut_token = new_token()
        self.reader_limits = reader_limits
        self._reactor = reactor
        self.url = parse_redis_url(url)
        self.command_timeout = command_timeout
        self.connect_timeout = connect_timeout
        self.client_name = _safe_name(client_name)
        self._policy = retry or retry_policy()
        self._endpoint = endpoint
        self._sentinel: SentinelEndpoint | None = None
        self._commands = self._make_link(self.client_name)
        self._reader: _Link | None = None
        self._reader_lock = DeferredLock()
        self._disconnected = False

    def __repr__(self) -> str:
        return f"<RedisClient {self.url} connected={self.connected}>"

    def _make_endpoint(self) -> IStreamClientEndpoint:
        if self._endpoint is not None:
            return self._endpoint
        url = self.url
        if url.sentinel:
            if self._sentinel is None:  # one set of sentinel connections for both links
                self._sentinel = SentinelEndpoint(self._reactor, url, timeout=self.connect_timeout)
            return self._sentinel
        if url.unix_path is not None:
            return UNIXClientEndpoint(  # type: ignore[no-untyped-call]
                self._reactor, url.unix_path, timeout=self.connect_timeout
            )
        assert url.host is not None
        endpoint: IStreamClientEndpoint = HostnameEndpoint(
            self._reactor, url.host, url.port, timeout=self.connect_timeout
        )
        if url.ssl:
            from twisted.internet.ssl import optionsForClientTLS  # noqa: PLC0415

            # verifies the certificate and the hostname against the platform's trust store
            endpoint = wrapClientTLS(optionsForClientTLS(url.host), endpoint)
        return endpoint

    def cut(self, value: object) -> tuple[str, int] | None:
        """``(kind, size)`` when *value* is a cut marker of this client (a value over the
        reader's limits, or one a script capped with :attr:`cut_token`), else ``None``."""
        return cut_size(self.cut_token, value)

    def _make_link(self, name: str, limits: ReplyLimits | None = None) -> _Link:
        return _Link(
            clock=self._reactor,
            endpoint=self._make_endpoint(),
            url=self.url,
            name=name,
            policy=self._policy,
            connect_timeout=self.connect_timeout,
            limits=limits,
            token=self.cut_token,
        )

    @property
    def connected(self) -> bool:
        """Whether the command connection is up and ready (not a health check: see the
        consumer's ``last_progress``)."""
        ready = self._commands.ready
        return ready is not None and bool(ready.connected)

    def connect(self) -> Deferred[None]:
        """Start connecting (if not yet); fires when the command connection is ready, or fails
        with :class:`RedisUnavailable` after ``connect_timeout``. Reconnection goes on either
        way."""
        d = self._commands.connection(self.connect_timeout)
        return d.addCallback(lambda _: None)

    def execute(self, *args: Arg, timeout: float | None = None) -> Deferred[Any]:
        """Send one command; its raw reply. Fails with :class:`RedisReplyError` on an error
        reply and :class:`RedisUnavailable` when there is no connection or no reply within
        *timeout* (default ``command_timeout``), waiting for a connection included."""
        bound = self.command_timeout if timeout is None else timeout
        return Deferred.fromCoroutine(self._execute(args, bound))

    def blocking(self, *args: Arg, block_ms: int) -> Deferred[Any]:
        """Send a blocking command (``XREADGROUP ... BLOCK block_ms``) on the dedicated reader
        connection, one at a time. A watchdog of ``block_ms / 1000 + command_timeout``
        replaces txredisapi's reply timeout; when it expires the reader connection is dropped
        (a half-open connection would otherwise hang until TCP gives up) and
        :class:`RedisUnavailable` is raised. Cancelling drops the reader connection too, so the
        server does not keep it blocked; entries delivered meanwhile stay in the PEL."""
        return Deferred.fromCoroutine(self._blocking(args, block_ms))

    def eval(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Deferred[Any]:
        """Run a Lua script: EVALSHA, then EVAL when Redis answers NOSCRIPT."""
        return Deferred.fromCoroutine(self._eval(script, keys, args))

    def disconnect(self) -> Deferred[None]:
        """Close both connections and stop reconnecting; pending waits fail."""
        self._disconnected = True
        links = [self._commands, *([self._reader] if self._reader is not None else [])]
        stops = [link.stop() for link in links]
        if self._sentinel is not None:
            stops.append(self._sentinel.close())
        stopped = defer.gatherResults(stops, consumeErrors=True)
        return stopped.addCallback(lambda _: None)

    # implementation

    def _send(self, proto: _RedisProtocol, args: Sequence[Arg], *, blocking: bool) -> Deferred[Any]:
        try:
            d: Deferred[Any] = proto.execute_command(*args, apply_timeout=not blocking)
        except txredisapi.ConnectionError:
            return defer.fail(RedisUnavailable(f"not connected to Redis at {self.url.address}"))
        except txredisapi.InvalidData as exc:
            return defer.fail(ValueError(str(exc)))
        return d.addErrback(_map_error)

    async def _execute(self, args: Sequence[Arg], timeout: float) -> Any:
        clock = self._reactor
        started = clock.seconds()
        proto = await self._commands.connection(timeout)
        remaining = max(0.0, timeout - (clock.seconds() - started))
        reply = self._send(proto, args, blocking=False)
        reply.addTimeout(remaining, clock)
        try:
            return await reply
        except RedisRefused as exc:
            if self.url.sentinel and "READONLY" in str(exc):
                # a master demoted by a failover: ask the sentinels again
                log.warn(
                    "Redis at {address} is a replica now; finding the new master",
                    address=self.url.address,
                )
                self._commands.drop(proto)
            raise
        except defer.TimeoutError:
            log.warn(
                "Redis at {address} did not answer {command} within {timeout} s; "
                "dropping the connection",
                address=self.url.address,
                command=_command_name(args),
                timeout=timeout,
            )
            self._commands.drop(proto)
            raise RedisUnavailable(
                f"no reply from Redis at {self.url.address} to {_command_name(args)} "
                f"within {timeout:g} s"
            ) from None

    def _reader_link(self) -> _Link:
        if self._reader is None:
            self._reader = self._make_link(
                self.client_name + self.READER_SUFFIX, self.reader_limits
            )
            if self._disconnected:
                self._reader.stopped = True
        return self._reader

    async def _blocking(self, args: Sequence[Arg], block_ms: int) -> Any:
        link = self._reader_link()
        watchdog = block_ms / 1000.0 + self.command_timeout
        await self._reader_lock.acquire()
        try:
            proto = await link.connection(self.command_timeout)
            reply = self._send(proto, args, blocking=True)
            reply.addTimeout(watchdog, self._reactor)
            try:
                return await reply
            except defer.TimeoutError:
                log.warn(
                    "Redis at {address}: no reply to a {block_ms} ms blocking read in "
                    "{watchdog} s; dropping the reader connection",
                    address=self.url.address,
                    block_ms=block_ms,
                    watchdog=watchdog,
                )
                link.drop(proto)
                raise RedisUnavailable(
                    f"no reply from Redis at {self.url.address} to a blocking read "
                    f"within {watchdog:g} s"
                ) from None
            except CancelledError:
                link.drop(proto)  # do not leave it blocked on the server
                raise
        finally:
            self._reader_lock.release()

    async def _eval(self, script: str, keys: Sequence[str], args: Sequence[Arg]) -> Any:
        sha = hashlib.sha1(script.encode()).hexdigest()
        try:
            return await self.execute("EVALSHA", sha, len(keys), *keys, *args)
        except RedisReplyError as exc:
            if exc.code != "NOSCRIPT":
                raise
        return await self.execute("EVAL", script, len(keys), *keys, *args)


def _command_name(args: Sequence[Arg]) -> str:
    if not args:
        return "(empty command)"
    first = args[0]
    return first.decode("ascii", "replace") if isinstance(first, bytes) else str(first)
