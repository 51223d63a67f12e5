"""``iax2-version``: an Inter-Asterisk eXchange v2 peer answering a POKE.

Runs on port 4569 (udp, intensity >= 7, not excluded). Sends one IAX2 full
frame, a POKE (frame type 6 "IAX control", subclass 0x1e; all call numbers,
timestamps and sequence numbers zero), through ``comm.exchange`` with a
10 s timeout (10 s to connect, 10 + 10 s to read one datagram).

An answer of exactly 12 bytes (a full frame without information elements)
whose frame type is 6 and subclass 3 (PONG) or 4 (ACK) is IAX2: the port
becomes ``open``; name ``iax2`` (the rest kept); hard match. Anything else
changes nothing. No output.
"""

from __future__ import annotations

from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import ExchangeError
from vscand.scripts.shortport import version_port_or_service

__all__ = ["POKE", "Iax2Version", "is_iax2_answer"]

POKE = b"\x80\x00\x00\x00\x00\x00\x00\x00\x00\x00\x06\x1e"
#: ``comm.exchange(..., {timeout = 10000})``
CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 20.0
IAX_CONTROL = 6
PONG, ACK = 3, 4

_rule = version_port_or_service([4569], (), ("udp",))


def is_iax2_answer(data: bytes) -> bool:
    return len(data) == 12 and data[10] == IAX_CONTROL and data[11] in (PONG, ACK)


class Iax2Version(BaseScript):
    name = "iax2-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        try:
            conn = await run.exchange.connect(timeout=CONNECT_TIMEOUT)
        except ExchangeError:
            return None
        try:
            conn.send(POKE)
            data = await conn.receive(READ_TIMEOUT)
        except ExchangeError:
            return None
        finally:
            conn.close()
        if is_iax2_answer(data):
            run.set_port_state("open")
            run.set_version(VersionUpdate(name="iax2"))
        return None
