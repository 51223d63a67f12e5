"""In-memory fakes for testing version scripts (no sockets, no reactor).

:class:`FakeExchange` answers connections from a script: a ``respond``
function maps (what was sent so far on this connection, tls, protocol, port)
to the bytes the peer sends back, or None (silence). Every connection is
recorded (``connections``) so tests can assert what a script sent. Waits never
block: a receive with nothing to give raises ``ExchangeTimeout`` at once (the
peer is silent) or ``ExchangeClosed`` once the peer said it closes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Literal

from vscand.scripts.exchange import ExchangeClosed, ExchangeError, ExchangeTimeout

__all__ = ["FakeConnection", "FakeExchange", "Reply"]


@dataclass
class Reply:
    """What the fake peer sends after a ``send``: chunks (UDP: datagrams), then maybe EOF."""

    chunks: list[bytes] = field(default_factory=list)
    close: bool = False


Respond = Callable[["FakeConnection", bytes], Reply | bytes | None]


@dataclass
class FakeConnection:
    port: int
    protocol: str
    tls: bool
    respond: Respond
    sent: list[bytes] = field(default_factory=list)
    pending: list[bytes] = field(default_factory=list)
    eof: bool = False
    closed: bool = False
    #: UDP ``any_source_port``: the peer's source port (``respond`` may set it)
    peer_port: int | None = None
    any_source_port: bool = False

    def send(self, data: bytes) -> None:
        if self.closed or self.eof:
            raise ExchangeClosed("closed")
        self.sent.append(data)
        reply = self.respond(self, data)
        if reply is None:
            return
        if isinstance(reply, bytes):
            reply = Reply([reply])
        self.pending.extend(c for c in reply.chunks if c)
        self.eof = self.eof or reply.close

    def _none_left(self) -> ExchangeError:
        return ExchangeClosed("peer closed") if self.eof else ExchangeTimeout("peer silent")

    async def receive(self, timeout: float, max_bytes: int | None = None) -> bytes:
        if not self.pending:
            raise self._none_left()
        chunk = self.pending.pop(0)
        if max_bytes is not None and len(chunk) > max_bytes and self.protocol == "tcp":
            self.pending.insert(0, chunk[max_bytes:])
            chunk = chunk[:max_bytes]
        return chunk

    async def receive_exactly(self, count: int, timeout: float) -> bytes:
        if self.protocol == "udp":
            data = await self.receive(timeout)
            if len(data) < count:
                raise ExchangeClosed("short datagram")
            return data[:count]
        buffer = b"".join(self.pending)
        if len(buffer) < count:
            raise self._none_left()
        self.pending = [buffer[count:]] if len(buffer) > count else []
        return buffer[:count]

    async def receive_at_least(self, count: int, timeout: float) -> bytes:
        if self.protocol == "udp":
            return await self.receive(timeout)
        buffer = b"".join(self.pending)
        self.pending = []
        if not buffer:
            raise self._none_left()
        return buffer

    def close(self) -> None:
        self.closed = True


class FakeExchange:
    """An :class:`~vscand.scripts.exchange.Exchange` talking to ``respond``.

    ``refuse`` makes every connect fail (a closed port); ``tls_ok`` False makes
    TLS connects fail (a plain-text service).
    """

    def __init__(
        self,
        respond: Respond,
        *,
        address: str = "127.0.0.1",
        port: int = 80,
        protocol: str = "tcp",
        refuse: bool = False,
        tls_ok: bool = False,
    ) -> None:
        self.address = address
        self.port = port
        self.protocol = protocol
        self._respond = respond
        self._refuse = refuse
        self._tls_ok = tls_ok
        self.connections: list[FakeConnection] = []
        #: every connect attempt: (port, protocol, tls), refused ones included
        self.attempts: list[tuple[int, str, bool]] = []

    async def connect(
        self,
        *,
        port: int | None = None,
        protocol: Literal["tcp", "udp"] | None = None,
        tls: bool = False,
        timeout: float | None = None,
        any_source_port: bool = False,
    ) -> FakeConnection:
        self.attempts.append((self.port if port is None else port, protocol or self.protocol, tls))
        if self._refuse or (tls and not self._tls_ok):
            raise ExchangeClosed("connection refused" if self._refuse else "TLS handshake failed")
        conn = FakeConnection(
            self.port if port is None else port, protocol or self.protocol, tls, self._respond
        )
        conn.any_source_port = any_source_port
        self.connections.append(conn)
        return conn
