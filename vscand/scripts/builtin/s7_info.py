"""``s7-info``: a Siemens S7 PLC's identity, over COTP (ISO 8073 on TPKT) and S7comm.

Runs on port 102 or service ``iso-tsap`` (tcp, intensity >= 7, not excluded).
One connection (NSE's default socket timeout, 30 s per read): a COTP
Connection Request to TSAP 0x0102, or, when the answer's sixth byte is not a
Connection Confirm (0xd0), on a new connection the same request to TSAP
0x0200; then an S7comm Setup Communication, a Read SZL, and two SZL reads
(ids 0x0011 and 0x001c). Each read is NSE's ``receive_bytes(n)``: everything
that arrived once ``n`` bytes did, or whatever arrived by a timeout or the
peer's close; a failed read is NSE's status *string* (``TIMEOUT``, ``EOF``),
which the script goes on parsing as an answer (its test for a failed read,
``== false``, never holds: NSE returns nil), and a failed send is not noticed.

The first SZL answer (protocol id 0x32 at byte 8, at least 125 bytes) gives
``Module`` (NUL-terminated at 44), ``Basic Hardware`` (at 72) and
``Version`` (bytes 123-125 joined by dots); the second gives ``System Name``,
``Module Type``, ``Serial Number``, ``Plant Identification`` and
``Copyright`` at 40/74/176/108/142 (+4 unless byte 31 is 0x1c), each when the
answer is longer than its offset. Empty strings are then removed, with NSE's
quirk: removing a key while iterating skips the key after it.

Version fields (hard match, only when the table is not empty): name
``iso-tsap``, product ``Siemens S7 PLC``, devicetype ``specialized``; the
port is made ``open``. Output: the table (an empty table when nothing was
read). Where Nmap's Lua dies (an answer that is not S7comm after a good
first SZL answer, a string without its NUL, a failed first SZL parse) the
script fails with Nmap's error output and sets nothing.
"""

from __future__ import annotations

import contextlib

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table, lua_str
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import Connection, ExchangeError, ExchangeTimeout
from vscand.scripts.proto.luastring import LuaError, byte, unpack_z
from vscand.scripts.shortport import version_port_or_service
from vscand.scripts.streams import NSE_SOCKET_TIMEOUT

__all__ = ["S7Info", "first_szl", "remove_empty", "second_szl"]

COTP = bytes.fromhex("0300001611e00000001400c1020100c2020102c0010a")
ALT_COTP = bytes.fromhex("0300001611e00000000500c1020100c2020200c0010a")
ROSCTR_SETUP = bytes.fromhex("0300001902f08032010000000000080000f0000001000101e0")
READ_SZL = bytes.fromhex("0300002102f080320700000000000800080001120411440100ff09000400110001")
FIRST_SZL = READ_SZL
SECOND_SZL = bytes.fromhex("0300002102f080320700000000000800080001120411440100ff090004001c0001")
#: second SZL answer: key -> offset (before the +4), in the order the script sets them
SECOND_FIELDS = (("System Name", 40), ("Module Type", 74), ("Serial Number", 176),
                 ("Plant Identification", 108), ("Copyright", 142))  # fmt: skip

_rule = version_port_or_service([102], ["iso-tsap"], ("tcp",))


def _text(raw: bytes) -> str:
    return raw.decode("latin-1")


def first_szl(response: bytes, output: Table) -> Table | None:
    """``parse_response``: the first SZL answer into ``output``, or None when not S7comm."""
    if byte(response, 8) != 0x32 or len(response) < 125:
        return None
    output["Module"] = _text(unpack_z(response, 44)[0])
    output["Basic Hardware"] = _text(unpack_z(response, 72)[0])
    output["Version"] = ".".join(lua_str(b) for b in response[122:125])
    return output


def remove_empty(output: Table) -> None:
    """NSE's ``for key in pairs(output) do if #value == 0 then output[key] = nil``
    over an output table: a removal shifts the order, so the next key is skipped."""
    i = 0
    while i < len(output.fields):
        key, value = output.fields[i]
        if isinstance(value, str) and value == "":
            output[key] = None
        i += 1


def second_szl(response: bytes, output: Table | None) -> Table | None:
    """``second_parse_response``; raises LuaError where Lua would (``output`` nil)."""
    if byte(response, 8) != 0x32:
        return None
    offset = 0 if byte(response, 31) == 0x1C else 4
    for key, base in SECOND_FIELDS:
        if len(response) > base + offset:
            value = _text(unpack_z(response, base + offset)[0])
            if output is None:
                raise LuaError("attempt to index a nil value (local 'output')")
            output[key] = value
    if output is None:
        raise LuaError("bad argument #1 to 'for iterator' (table expected, got nil)")
    remove_empty(output)
    return output


class S7Info(BaseScript):
    name = "s7-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def _connect(self, run: ScriptRun) -> Connection | None:
        try:
            return await run.exchange.connect(timeout=NSE_SOCKET_TIMEOUT)
        except ExchangeError:
            return None

    @staticmethod
    async def _send_receive(conn: Connection, query: bytes, count: int) -> bytes:
        """NSE's send (its failure unchecked) and ``receive_bytes``; a failed read gives
        NSE's status string (the script's ``== false`` test never holds for nil)."""
        with contextlib.suppress(ExchangeError):
            conn.send(query)
        try:
            return await conn.receive_at_least(count, NSE_SOCKET_TIMEOUT)
        except ExchangeTimeout:
            return b"TIMEOUT"
        except ExchangeError:
            return b"EOF"

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        conn = await self._connect(run)
        if conn is None:
            return None
        response = await self._send_receive(conn, COTP, 6)
        if byte(response, 6) != 0xD0:
            conn.close()
            conn = await self._connect(run)
            if conn is None:
                return None
            response = await self._send_receive(conn, ALT_COTP, 6)
            if byte(response, 6) != 0xD0:
                return None
        for query in (ROSCTR_SETUP, READ_SZL):
            response = await self._send_receive(conn, query, 8)
            if byte(response, 8) != 0x32:
                return None
        try:
            output = first_szl(await self._send_receive(conn, FIRST_SZL, 125), Table())
            second = second_szl(await self._send_receive(conn, SECOND_SZL, 180), output)
        except LuaError as exc:
            raise ScriptFailed(str(exc)) from None
        conn.close()
        if second is None:
            raise ScriptFailed("attempt to get length of a nil value (local 'output')")
        if second.fields:
            run.set_version(
                VersionUpdate(name="iso-tsap", devicetype="specialized", product="Siemens S7 PLC")
            )
            run.set_port_state("open")
        return ScriptOutput(table=second)
