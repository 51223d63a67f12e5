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
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from twisted.internet import defer
from twisted.internet.defer import CancelledError, Deferred, DeferredLock
from twisted.internet.endpoints import HostnameEndpoint, UNIXClientEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.queue.errors import (
    TRANSIENT_REPLY_CODES,
    RedisRefused,
    RedisReplyError,
    RedisUnavailable,
)
from vscand.queue.link import Arg, Link, RespProtocol, retry_policy, txredisapi
from vscand.queue.redis_url import (
    DEFAULT_PORT,
    DEFAULT_SENTINEL_PORT,
    RedisURL,
    parse_redis_url,
)
from vscand.queue.resp import ReplyLimits, cut_size, new_token
from vscand.queue.sentinel import SentinelEndpoint

log = Logger(namespace="vscand.redis")


__all__ = ["DEFAULT_PORT", "DEFAULT_SENTINEL_PORT", "RedisURL", "parse_redis_url"]


def _map_error(failure: Failure) -> Failure:
    if isinstance(failure.value, txredisapi.ResponseError):
        message = str(failure.value)
        if message.split(" ", 1)[0] in TRANSIENT_REPLY_CODES:
            raise RedisRefused(f"Redis refused the command: {message}") from None
        raise RedisReplyError(message) from None
    if isinstance(failure.value, txredisapi.ConnectionError):
        raise RedisUnavailable(f"Redis connection: {failure.getErrorMessage()}") from None
    return failure


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
        self._reader: Link | None = None
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

    def _make_link(self, name: str, limits: ReplyLimits | None = None) -> Link:
        return Link(
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

    def _send(self, proto: RespProtocol, args: Sequence[Arg], *, blocking: bool) -> Deferred[Any]:
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

    def _reader_link(self) -> Link:
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
