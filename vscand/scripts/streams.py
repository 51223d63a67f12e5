"""Stream helpers for scripts that hold a conversation: NSE's ``receive_buf``,
``comm.tryssl`` that keeps the connection, and STARTTLS on an open connection.

NSE scripts read with ``receive_buf(match.numbytes(n))`` or
``match.pattern_limit(...)``: bytes beyond what was asked stay buffered for
the next read. :class:`BufferedReader` does the same over a
:class:`~vscand.scripts.exchange.Connection`.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

from vscand.scripts.api import PortView
from vscand.scripts.comm import CONNECT_TIMEOUT, REQUEST_TIMEOUT, bestoption
from vscand.scripts.exchange import Connection, Exchange, ExchangeError

__all__ = ["NSE_SOCKET_TIMEOUT", "BufferedReader", "DataFile", "open_best", "start_tls"]

#: ``nmap.new_socket()``'s default timeout (30 s)
NSE_SOCKET_TIMEOUT = 30.0


class BufferedReader:
    """``receive_buf`` over one connection: what a read does not take stays buffered."""

    def __init__(self, conn: Connection, timeout: float = NSE_SOCKET_TIMEOUT) -> None:
        self.conn = conn
        self.timeout = timeout
        self.buffer = b""

    async def read_until(self, find: Callable[[bytes], int | None]) -> bytes:
        """``find(buffer)`` says how many bytes make one read (None: not yet)."""
        while True:
            end = find(self.buffer)
            if end is not None:
                data, self.buffer = self.buffer[:end], self.buffer[end:]
                return data
            self.buffer += await self.conn.receive(self.timeout)

    async def read_exactly(self, count: int) -> bytes:
        """``match.numbytes(count)``"""
        return await self.read_until(lambda b: count if len(b) >= count else None)


async def open_best(
    exchange: Exchange, port: PortView, data: bytes
) -> tuple[Connection, bytes, str] | None:
    """``comm.tryssl`` that returns the open connection: send ``data`` (TLS or
    not, the better guess first), read one chunk; ``(conn, chunk, "tcp"|"ssl")``."""
    for option in dict.fromkeys(bestoption(port)):
        try:
            conn = await exchange.connect(
                tls=option == "ssl",
                protocol="udp" if option == "udp" else None,
                timeout=CONNECT_TIMEOUT,
            )
        except ExchangeError:
            continue
        try:
            conn.send(data)
            chunk = await conn.receive(REQUEST_TIMEOUT)
        except ExchangeError:
            conn.close()
            continue
        return conn, chunk, option
    return None


async def start_tls(conn: Connection, timeout: float) -> bool:
    """Start TLS on an open connection (NSE's ``reconnect_ssl``): True once the
    handshake completed. A connection that cannot (a fake without
    ``start_tls``) gives False."""
    upgrade: Any = getattr(conn, "start_tls", None)
    if upgrade is not None:
        return bool(await upgrade(timeout))
    transport: Any = getattr(conn, "transport", None)
    if transport is None or not hasattr(transport, "startTLS"):
        return False
    from twisted.internet import defer  # noqa: PLC0415
    from twisted.internet.ssl import CertificateOptions  # noqa: PLC0415

    handshake: defer.Deferred[None] = defer.Deferred()
    conn.handshake = handshake  # type: ignore[attr-defined]
    clock: Any = getattr(conn, "_clock", None)
    try:
        # a scanner completes the handshake with any certificate
        transport.startTLS(CertificateOptions())
        if clock is not None:
            handshake.addTimeout(timeout, clock)
        await handshake
    except (ExchangeError, defer.CancelledError, Exception):
        return False
    return True


class DataFile:
    """The first of ``paths`` that exists (Nmap's ``nmap.fetchfile`` search).

    With ``relative`` (the file's path in Nmap's data directory) and ``$NMAPDIR``
    set, ``$NMAPDIR/relative`` is tried first, as Nmap does: a scan reproducing
    another release's Nmap (``--probes`` of that release) reads that release's
    data files this way."""

    def __init__(self, *paths: str, relative: str | None = None) -> None:
        self.paths = paths
        self.relative = relative

    def candidates(self) -> list[str]:
        nmapdir = os.environ.get("NMAPDIR")
        first = [os.path.join(nmapdir, self.relative)] if nmapdir and self.relative else []
        return [*first, *self.paths]

    def read_text(self) -> str:
        for path in self.candidates():
            try:
                with open(path, encoding="latin-1") as handle:
                    return handle.read()
            except OSError:
                continue
        raise OSError(f"none of {', '.join(self.candidates())} can be read")
