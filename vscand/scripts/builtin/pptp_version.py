"""``pptp-version``: a PPTP server's Start-Control-Connection-Reply.

Runs on port 1723 (tcp, open or open|filtered, intensity >= 7, not excluded).
Sends a Start-Control-Connection-Request (protocol 1.0, host name ``none``,
vendor ``nmap``) and looks for the reply's first six bytes (length 156,
control message, magic cookie's first half) anywhere in the answer. With more
than 88 bytes after them, it reads the firmware revision, the 64-byte host
name and the vendor at the reply's offsets (RFC 2637; checked against nmap
7.93 end to end).

Version fields (hard match): name ``pptp``, product = vendor up to its first
NUL (kept when there is none), version ``(Firmware: N)`` unless N is 0,
hostname = host name up to its first NUL (kept when there is none), no
tunnel.
"""

from __future__ import annotations

from dataclasses import dataclass

from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.comm import exchange
from vscand.scripts.shortport import version_port_or_service

__all__ = ["REQUEST", "PptpReply", "PptpVersion", "parse_reply"]

REQUEST = (
    b"\x00\x9c\x00\x01\x1a\x2b\x3c\x4d"  # length 156, control message, magic cookie
    b"\x00\x01\x00\x00\x01\x00\x00\x00"  # Start-Control-Connection-Request, protocol 1.0
    b"\x00\x00\x00\x01\x00\x00\x00\x01"  # framing, bearer capabilities
    b"\xff\xff\x00\x01"  # maximum channels, firmware revision
    + b"none".ljust(64, b"\x00")
    + b"nmap".ljust(64, b"\x00")
)
REPLY_PREFIX = b"\x00\x9c\x00\x01\x1a\x2b"

_rule = version_port_or_service([1723])


@dataclass(frozen=True)
class PptpReply:
    firmware: int
    hostname: str | None
    vendor: str | None


def _until_nul(raw: bytes) -> str | None:
    at = raw.find(b"\x00")
    return None if at < 0 else raw[:at].decode("latin-1")


def parse_reply(response: bytes) -> PptpReply | None:
    at = response.find(REPLY_PREFIX)
    if at < 0:
        return None
    result = response[at + len(REPLY_PREFIX) :]
    if len(result) <= 88:
        return None
    firmware = int.from_bytes(result[20:22], "big")
    return PptpReply(firmware, _until_nul(result[22:86]), _until_nul(result[86:]))


class PptpVersion(BaseScript):
    name = "pptp-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        response = await exchange(run.exchange, REQUEST)
        if response is None:
            return None
        reply = parse_reply(response)
        if reply is None:
            return None
        run.set_version(
            VersionUpdate(
                name="pptp",
                product=reply.vendor if reply.vendor is not None else KEEP,
                version=f"(Firmware: {reply.firmware})" if reply.firmware != 0 else KEEP,
                hostname=reply.hostname if reply.hostname is not None else KEEP,
                tunnel=None,
            )
        )
        return None
