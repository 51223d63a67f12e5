"""``ndmp-version``: vendor and host of an NDMP (Network Data Management Protocol) server.

Rule: port 10000 or service ``ndmp`` (tcp, open or open|filtered, not excluded,
intensity >= 7).

Action (one connection, 10 s per read): CONFIG_GET_HOST_INFO, then
CONFIG_GET_SERVER_INFO (sequence 1 and 2), each message a fragment header (last,
length 24) and NSE's 24-byte header. Messages are read as NSE's ndmp library
reads them (4-byte fragment header, 24-byte header, ``length - 24`` bytes), each
parsed by its type (host info, server info, file-system info) whether or not it
is the reply waited for; the reply is the first whose ``reply_seq`` is the
request's. Strings are XDR (32-bit length, padded to 4). A failed read ends the
script quietly; where NSE's Lua dies (a body cut short, a fragment under 24
bytes, a server-info reply of another type, a number Lua cannot hold) we raise
ScriptFailed.

Version fields (hard match): name ``ndmp``, product = the vendor (``VERITAS`` in
it: ``Symantec/Veritas Backup Exec ndmp``); with host info (not NOT_AUTHORIZED):
extrainfo ``Name: <host>; `` and, when the OS version says ``Major Version=a Minor
Version=b Build Number=c ServicePack Major=d ServicePack Minor=e``, ``OS ver:
a.b; OS Build: c; OS Service Pack: d``; ostype = the OS type. No output.
"""

from __future__ import annotations

import re
import struct
import time
from dataclasses import dataclass, field

from vscand.output.script_output import ScriptFailed
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import Connection, ExchangeError
from vscand.scripts.shortport import version_port_or_service

__all__ = ["NdmpMessage", "NdmpVersion", "parse_message", "request"]

SOCKET_TIMEOUT = 10.0
GET_HOST_INFO, GET_FS_INFO, GET_SERVER_INFO = 0x100, 0x105, 0x108
NOT_AUTHORIZED = 4

_rule = version_port_or_service([10000], ["ndmp"])
_OSVER = re.compile(
    r"Major Version=([0-9]+) Minor Version=([0-9]+) Build Number=([0-9]+)"
    r" ServicePack Major=([0-9]+) ServicePack Minor=([0-9]+)"
)


def request(seq: int, message: int, now: int) -> bytes:
    """A request with no body: fragment header (last, 24), then seq, time, type 0,
    the message, reply_seq 0, error 0."""
    return struct.pack(">IIIIIII", 0x80000018, seq, now & 0xFFFFFFFF, 0, message, 0, 0)


@dataclass
class NdmpMessage:
    msg: int
    reply_seq: int
    error: int
    hostinfo: dict[str, str] | None = None
    serverinfo: dict[str, str] | None = None
    extra: dict[str, int] = field(default_factory=dict)


class _Reader:
    """``string.unpack`` over a body with Lua's errors (ScriptFailed)."""

    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, size: int) -> bytes:
        if self.pos + size > len(self.data):
            raise ScriptFailed("data string too short")
        chunk = self.data[self.pos : self.pos + size]
        self.pos += size
        return chunk

    def uint(self, size: int = 4) -> int:
        return int.from_bytes(self.take(size), "big")

    def xdr_string(self) -> str:
        if self.pos > len(self.data):
            raise ScriptFailed("initial position out of string")
        text = self.take(self.uint()).decode("latin-1")
        self.pos += -len(text) % 4
        return text


def _strings(reader: _Reader, names: tuple[str, ...]) -> dict[str, str]:
    reader.uint()  # the error field of the body
    return {name: reader.xdr_string() for name in names}


def _fs_info(reader: _Reader) -> None:
    """File-system info is parsed (and may kill the script) but never used."""
    reader.uint()
    for _ in range(reader.uint()):
        reader.uint()
        for _ in range(3):
            reader.xdr_string()
        reader.take(40)
        for _ in range(2):
            reader.xdr_string()


def parse_message(header: bytes, body: bytes) -> NdmpMessage:
    """A message as NSE's ndmp library parses it, by its type."""
    _seq, _time, _type, msg, reply_seq, error = struct.unpack(">IIIIII", header)
    message = NdmpMessage(msg, reply_seq, error)
    reader = _Reader(body)
    if msg == GET_SERVER_INFO:
        message.serverinfo = _strings(reader, ("vendor", "product", "version"))
    elif msg == GET_HOST_INFO and error != NOT_AUTHORIZED:
        message.hostinfo = _strings(reader, ("hostname", "ostype", "osver", "hostid"))
    elif msg == GET_FS_INFO and error != NOT_AUTHORIZED:
        _fs_info(reader)
    return message


async def _receive(conn: Connection) -> NdmpMessage:
    (fragment,) = struct.unpack(">I", await conn.receive_exactly(4, SOCKET_TIMEOUT))
    header = await conn.receive_exactly(24, SOCKET_TIMEOUT)
    length = (fragment & 0x7FFFFFFF) - 24
    if length < 0:
        raise ScriptFailed("numbytes of a negative count")
    body = await conn.receive_exactly(length, SOCKET_TIMEOUT) if length else b""
    return parse_message(header, body)


async def _exchange(conn: Connection, seq: int, message: int) -> NdmpMessage:
    conn.send(request(seq, message, int(time.time())))
    while True:
        reply = await _receive(conn)
        if reply.reply_seq == seq:
            return reply


def _lua_int(digits: str) -> int:
    significant = digits.lstrip("0") or "0"
    if len(significant) > 19 or int(significant) >= 1 << 63:
        raise ScriptFailed("number has no integer representation")
    return int(significant)


class NdmpVersion(BaseScript):
    name = "ndmp-version"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> None:
        try:
            conn = await run.exchange.connect(timeout=SOCKET_TIMEOUT)
        except ExchangeError:
            return None
        try:
            host = await _exchange(conn, 1, GET_HOST_INFO)
            server = await _exchange(conn, 2, GET_SERVER_INFO)
        except ExchangeError:
            return None
        finally:
            conn.close()
        if server.serverinfo is None:
            raise ScriptFailed("attempt to index a nil value (field 'serverinfo')")
        vendor = server.serverinfo["vendor"]
        update = VersionUpdate(
            name="ndmp",
            product="Symantec/Veritas Backup Exec ndmp" if "VERITAS" in vendor else vendor,
        )
        info = host.hostinfo
        if info is not None:
            extrainfo = f"Name: {info['hostname']}; "
            found = _OSVER.search(info["osver"])
            if found:
                major, minor, build, sp_major = (_lua_int(d) for d in found.groups()[:4])
                extrainfo += (
                    f"OS ver: {major}.{minor}; OS Build: {build}; OS Service Pack: {sp_major}"
                )
            update = VersionUpdate(
                name="ndmp", product=update.product, extrainfo=extrainfo, ostype=info["ostype"]
            )
        run.set_version(update)
        return None
