"""Sentinel discovery: :class:`SentinelEndpoint` asks the configured Sentinels for the
master's address (``SENTINEL get-master-addr-by-name``) on every connection attempt, so a
link reconnects to the promoted master after a failover.
"""

from __future__ import annotations

import warnings
from typing import Any

from twisted.internet import defer
from twisted.internet.defer import Deferred
from twisted.internet.endpoints import HostnameEndpoint, wrapClientTLS
from twisted.internet.interfaces import IStreamClientEndpoint
from twisted.logger import Logger
from zope.interface import implementer

from vscand.queue.errors import RedisUnavailable
from vscand.queue.link import txredisapi
from vscand.queue.redis_url import RedisURL

log = Logger(namespace="vscand.redis")


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
