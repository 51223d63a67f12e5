"""``netbus-version``: tells NetBuster (a honeypot mimicking NetBus) from NetBus.

Rule: service ``netbus`` (tcp, open or open|filtered, intensity >= 7, not
excluded). One connection, 5 s socket timeout. The first ``\\r``-terminated
piece the peer sends (``stdnse.make_buffer``) must start ``NetBus``; then it
sends ``Password;0;\\r`` and reads the next piece: NetBus answers; NSE's
buffer gives *nil* when the socket fails (5 s timeout, close) with nothing
left over, or after it has handed out a last piece without ``\\r``. On *nil*:
name ``netbus``, product ``NetBuster``, extrainfo ``honeypot``, no version;
hard match. No output.
"""

from __future__ import annotations

import contextlib

from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import Connection, ExchangeError
from vscand.scripts.shortport import version_port_or_service

__all__ = ["NetbusVersion", "SeparatorBuffer"]

TIMEOUT = 5.0
PASSWORD = b"Password;0;\r"

_rule = version_port_or_service([], ["netbus"], ("tcp",))


class SeparatorBuffer:
    """``stdnse.make_buffer(socket, sep)``: each call gives the next piece before
    ``sep``; when the socket fails (timeout, close), the rest once, then None —
    None at once when there is no rest (NSE's socket returns nil on errors)."""

    def __init__(self, conn: Connection, sep: bytes, timeout: float) -> None:
        self._conn, self._sep, self._timeout = conn, sep, timeout
        self._point, self._left = 0, b""
        self._buffer: bytes | None = None
        self._done = False

    async def next(self) -> bytes | None:
        while True:
            if self._done:
                return None
            if self._buffer is None:
                try:
                    data = await self._conn.receive(self._timeout)
                except ExchangeError:
                    if not self._left:
                        return None
                    self._done = True
                    return self._left
                self._buffer = self._left + data
                continue
            at = self._buffer.find(self._sep, self._point)
            if at >= 0:
                piece = self._buffer[self._point : at]
                self._point = at + len(self._sep)
                return piece
            self._left, self._point, self._buffer = self._buffer[self._point :], 0, None


class NetbusVersion(BaseScript):
    name = "netbus-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> None:
        try:
            conn = await run.exchange.connect(timeout=TIMEOUT)
        except ExchangeError:
            return
        try:
            buffer = SeparatorBuffer(conn, b"\r", TIMEOUT)
            banner = await buffer.next()
            if not (banner and banner.startswith(b"NetBus")):
                return
            with contextlib.suppress(ExchangeError):  # NSE ignores send's status
                conn.send(PASSWORD)
            if await buffer.next() is not None:
                return  # NetBus answers (or bytes were left after the banner)
        finally:
            conn.close()
        run.set_version(
            VersionUpdate(name="netbus", product="NetBuster", extrainfo="honeypot", version=None)
        )
