"""``rfc868-time``: the Time protocol (RFC 868): seconds since 1900 as 32 bits.

Rule: port 37 or service ``time``, tcp or udp (open or open|filtered,
intensity >= 7, not excluded). ``comm.exchange`` with nothing to send (over
UDP: one empty datagram) and at least 4 bytes to read. An answer of exactly
4 bytes is ``32 bits``, of 8 bytes ``64 bits`` (its first 4 bytes are the
time); anything else ends the script. When the port is named ``time`` the
extrainfo is set (hard match; NSE's computed confidence is not used by
``set_port_version``). Output: the time, UTC, ``YYYY-MM-DDTHH:MM:SS`` (it is
the peer's clock: the end-to-end test masks it).
"""

from __future__ import annotations

import datetime

from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import exchange
from vscand.scripts.shortport import version_port_or_service

__all__ = ["RFC868_EPOCH_OFFSET", "Rfc868Time", "format_timestamp", "parse_time"]

#: seconds from 1900-01-01 to 1970-01-01
RFC868_EPOCH_OFFSET = 2208988800
_WIDTHS = {4: "32 bits", 8: "64 bits"}

_rule = version_port_or_service([37], ["time"], ("tcp", "udp"))


def parse_time(answer: bytes) -> tuple[int, str] | None:
    """(Unix time, ``32 bits``/``64 bits``) from a 4- or 8-byte answer, else None."""
    width = _WIDTHS.get(len(answer))
    if width is None:
        return None
    return int.from_bytes(answer[:4], "big") - RFC868_EPOCH_OFFSET, width


def format_timestamp(stamp: int) -> str:
    """``datetime.format_timestamp`` for a whole number of seconds (UTC)."""
    moment = datetime.datetime(1970, 1, 1) + datetime.timedelta(seconds=stamp)
    return f"{moment.year}-{moment:%m-%dT%H:%M:%S}"


class Rfc868Time(BaseScript):
    name = "rfc868-time"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        answer = await exchange(run.exchange, b"", min_bytes=4)
        if answer is None:
            return None
        parsed = parse_time(answer)
        if parsed is None:
            return None
        stamp, width = parsed
        if run.port.name == "time":
            run.set_version(VersionUpdate(extrainfo=width))
        return format_timestamp(stamp)
