"""One kept-up connection to Redis: a :class:`ClientService` with backoff
(:func:`retry_policy`), the handshake (AUTH, ROLE: a replica is refused, CLIENT SETNAME)
bounded in time, and our RESP protocol with its reply caps.
:class:`~vscand.queue.client.RedisClient` holds two of these: the command link and the
blocking reader.
"""

from __future__ import annotations

import random
import warnings
from collections.abc import Callable
from typing import Any

from twisted.application.internet import ClientService
from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.interfaces import IDelayedCall, IStreamClientEndpoint
from twisted.internet.protocol import Factory
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.queue.redis_url import (
    RedisURL,
)
from vscand.queue.resp import ReplyCap, ReplyCapError, ReplyLimits

with warnings.catch_warnings():
    # its module body builds a set mixing b"subscribe" and "subscribe" (python -b warns)
    warnings.simplefilter("ignore", BytesWarning)
    import txredisapi as txredisapi  # noqa: PLC0414 - re-exported: client.py, sentinel.py

from vscand.queue.errors import RedisUnavailable

log = Logger(namespace="vscand.redis")

Arg = str | bytes | int | float


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


class RespProtocol(txredisapi.RedisProtocol):  # type: ignore[misc]
    """txredisapi's protocol, with status replies as ``bytes`` like every other string."""

    link: Link
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


class LinkFactory(Factory):
    """Builds the protocols of one link; absorbs txredisapi's "stop trying" on a failed AUTH."""

    isLazy = False  # txredisapi reads it: do not also log through the legacy logger
    noisy = False

    def __init__(self, link: Link, url: RedisURL, clock: Any) -> None:
        self.link = link
        self.url = url
        self.clock = clock

    def buildProtocol(self, addr: Any) -> RespProtocol:
        url = self.url
        proto = RespProtocol(
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


class Link:
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
        self.ready: RespProtocol | None = None
        self.stopped = False
        self._policy = policy
        self._rejected = 0  # connections in a row that never became ready
        self._waiters: list[Deferred[RespProtocol]] = []
        self._handshakes: dict[RespProtocol, IDelayedCall] = {}
        self._service = ClientService(
            endpoint,
            LinkFactory(self, url, clock),
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

    def connection(self, timeout: float) -> Deferred[RespProtocol]:
        """The ready protocol, or the next one; :class:`RedisUnavailable` after *timeout*."""
        if self.stopped:
            return defer.fail(RedisUnavailable("the Redis client was disconnected"))
        self.start()
        if self.ready is not None and self.ready.connected:
            return defer.succeed(self.ready)

        def cancel(d: Deferred[RespProtocol]) -> None:
            if d in self._waiters:
                self._waiters.remove(d)

        waiter: Deferred[RespProtocol] = Deferred(cancel)
        self._waiters.append(waiter)
        waiter.addTimeout(timeout, self.clock)

        def not_connected(failure: Failure) -> Failure:
            if isinstance(failure.value, defer.TimeoutError):
                raise RedisUnavailable(
                    f"not connected to Redis at {self.url.address} (waited {timeout:g} s)"
                )
            return failure

        return waiter.addErrback(not_connected)

    def drop(self, proto: RespProtocol) -> None:
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

    def built(self, proto: RespProtocol) -> None:
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

    def _handshake_timeout(self, proto: RespProtocol) -> None:
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

    def _authenticated(self, proto: RespProtocol) -> None:
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

    def _role(self, proto: RespProtocol, reply: Any) -> None:
        role = reply[0] if isinstance(reply, list) and reply else None
        if role in (b"master", "master"):
            self._setname(proto)
            return
        log.warn(
            "Redis at {peer} is not the master ({role!r}); asking the sentinels again",
            peer=peer_text(proto),
            role=role,
        )
        self._rejected += 1
        self.drop(proto)

    def _setname(self, proto: RespProtocol) -> None:
        try:
            d = proto.execute_command("CLIENT", "SETNAME", self.name)
        except txredisapi.ConnectionError:
            return
        d.addCallbacks(lambda _: self._usable(proto), lambda f: self._setname_failed(f, proto))

    def _setname_failed(self, failure: Failure, proto: RespProtocol) -> None:
        if isinstance(
            failure.value, txredisapi.ResponseError
        ):  # an ACL may forbid CLIENT: still usable
            log.info("CLIENT SETNAME refused by Redis: {error}", error=failure.getErrorMessage())
            self._usable(proto)

    def _usable(self, proto: RespProtocol) -> None:
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

    def _lost(self, proto: RespProtocol) -> None:
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


def peer_text(proto: Any) -> str:
    try:
        peer = proto.transport.getPeer()
        return f"{peer.host}:{peer.port}"
    except Exception:
        return "?"
