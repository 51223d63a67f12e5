"""``teamspeak2-version``: a TeamSpeak 2 server's answer to a login request.

Rule: port 8767 or service ``teamspeak2``, udp, intensity >= 7, not excluded.

Sends the login request (the same bytes as the probe file's TeamSpeak2 probe,
which the script also carries) and reads one datagram (``comm.exchange``
with a 3 s timeout: 6 s). Any answer makes the port ``open``. The answer
must match the script's Lua pattern: ``\\xf4\\xbe\\x04`` and five zero
bytes, 13 bytes, the server name (no NUL), one or more non-graphic bytes,
the platform (no NUL), NUL bytes, then 8 bytes: four little-endian 16-bit
version numbers. :func:`match_login_reply` finds the captures Lua's
backtracking matcher finds, in linear time.

Version fields: name ``teamspeak2``, product ``TeamSpeak``; with an empty
server name (a password-protected server) version ``2``; else version
``a.b.c.d``, extra info ``name: NAME; no password`` and ostype ``Windows``
(platform ``Win32``) or ``Linux`` (``Linux``; else kept); hard match. No
output.
"""

from __future__ import annotations

import struct

from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.builtin.game_query import request_timeout, udp_exchange
from vscand.scripts.shortport import version_port_or_service

__all__ = ["LOGIN", "TeamSpeak2Version", "match_login_reply"]

#: the login request: header, client "TeamSpeak" on "Windows XP", version 2.0.32.60,
#: login name "nickname" (Wireshark's TeamSpeak2 dissector documents the layout)
LOGIN = (
    bytes.fromhex("f4be0300000000000000000001000000") + bytes.fromhex("3278ba85")
    + b"\x09TeamSpeak".ljust(30, b"\x00") + b"\x0aWindows XP".ljust(30, b"\x00")
    + bytes.fromhex("020000002000") + bytes.fromhex("3c000001") + b"\x00" * 60
    + b"\x08nickname".ljust(30, b"\x00")
)  # fmt: skip
HEADER = b"\xf4\xbe\x04\x00\x00\x00\x00\x00"
NAME_AT = len(HEADER) + 13
TIMEOUT = request_timeout(3000)

_rule = version_port_or_service([8767], ["teamspeak2"], ("udp",))


def _graphic(byte: int) -> bool:
    return 0x21 <= byte <= 0x7E


def match_login_reply(data: bytes) -> tuple[bytes, bytes, bytes] | None:
    """``(name, platform, version bytes)`` as the script's pattern captures them, or None.

    Lua tries the longest name first, then the longest run of non-graphic bytes,
    the longest platform and the longest run of NULs, backing off until eight
    bytes remain for the version: the first name end ``n`` (from the longest)
    with a non-graphic byte at ``n`` and at least nine bytes from ``n`` on wins.
    """
    size = len(data)
    if not data.startswith(HEADER) or size < NAME_AT:
        return None
    first_nul = data.find(b"\x00", NAME_AT)
    longest = size if first_nul < 0 else first_nul
    for end in range(min(longest, size - 9), NAME_AT - 1, -1):
        if _graphic(data[end]):
            continue
        # %G+ from end: its longest run, backed off so 8 bytes stay after the platform
        run_end = end + 1
        while run_end < size and not _graphic(data[run_end]):
            run_end += 1
        start = min(run_end, size - 8)
        nul = data.find(b"\x00", start)
        platform_end = size if nul < 0 else nul
        if platform_end + 8 <= size:
            zeros_end = platform_end
            while zeros_end < size and data[zeros_end] == 0:
                zeros_end += 1
            version_at = min(zeros_end, size - 8)
        else:
            platform_end = version_at = size - 8
        return data[NAME_AT:end], data[start:platform_end], data[version_at : version_at + 8]
    return None


class TeamSpeak2Version(BaseScript):
    name = "teamspeak2-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> None:
        data = await udp_exchange(run.exchange, LOGIN, TIMEOUT)
        if data is None:
            return None
        run.set_port_state("open")
        found = match_login_reply(data)
        if found is None:
            return None
        name, platform, version = found
        if name == b"":
            run.set_version(VersionUpdate(name="teamspeak2", product="TeamSpeak", version="2"))
            return None
        numbers = struct.unpack("<HHHH", version)
        ostype: str | object = KEEP
        if platform == b"Win32":
            ostype = "Windows"
        elif platform == b"Linux":
            ostype = "Linux"
        run.set_version(
            VersionUpdate(
                name="teamspeak2",
                product="TeamSpeak",
                version=".".join(str(n) for n in numbers),
                extrainfo=f"name: {name.decode('latin-1')}; no password",
                ostype=ostype,  # type: ignore[arg-type]
            )
        )
        return None
