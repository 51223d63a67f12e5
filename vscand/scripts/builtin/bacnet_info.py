"""``bacnet-info``: a BACnet device's identity, by ReadProperty requests (BACnet/IP, Annex J).

Runs on port 47808 or service ``bacnet`` (udp and tcp, intensity >= 7, not
excluded). One connection; every request is the same 17-byte BVLC
Original-Unicast-NPDU carrying a confirmed ReadProperty of the device object
with instance 4194303 (the wildcard), differing only in the property id.
Each answer is one read (UDP: one datagram) with NSE's default socket
timeout, 30 s. Nmap binds source port 47808 first when it can (it cannot
when the service runs on the same host); we always use an ephemeral port.

The first request asks for the object identifier (0x4b). An answer must start
with 0x81; byte 7 of 0x50 (a BACnet Error PDU) makes the output the string
``\\nBACNet ADPU Type: Error (5) \\n\\t<answer in hex>``. Otherwise the output
table gets, in order: ``Vendor ID`` (property 0x78: byte 18 is 0x21 or 0x22,
then a one- or two-byte vendor number, named from the table ``vendor_id`` of
the installed Nmap's ``bacnet-info.nse``), ``Vendor Name`` (0x79),
``Object-identifier`` (the first answer's bytes 20-22), ``Firmware`` (0x2c),
``Application Software`` (0x0c), ``Object Name`` (0x4d), ``Model Name``
(0x46), ``Description`` (0x1c), ``Location`` (0x3a). A string property is
read as Nmap does: its length from byte 18 (or 19), a character-set byte,
then the text; UCS-2 (set 4) becomes UTF-8 with NSE's ``unicode`` library
(:func:`~vscand.scripts.proto.luastring.utf16be_to_utf8`). A property whose
answer is missing, not BACnet, or an Error PDU is left out.

Version fields (hard match): name ``bacnet``, the rest kept; the port is made
``open`` — as soon as the first answer is BACnet, before the other requests,
so where Nmap's Lua dies later (a short answer) they stand and the output is
Nmap's error line.
"""

from __future__ import annotations

import struct
from collections.abc import Mapping

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table, lua_str
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import Connection, ExchangeError
from vscand.scripts.proto.luastring import (
    LuaError,
    byte,
    unpack_c,
    unpack_int,
    utf16be_to_utf8,
)
from vscand.scripts.proto.luatable import nse_table
from vscand.scripts.shortport import version_port_or_service
from vscand.scripts.streams import NSE_SOCKET_TIMEOUT

__all__ = ["BacnetInfo", "field_size", "query", "vendor_number"]

OBJECT_ID = 0x4B
VENDOR_ID = 0x78
#: the output's string properties, in the order the script asks for them after the vendor id
PROPERTIES = (("Vendor Name", 0x79), ("Firmware", 0x2C), ("Application Software", 0x0C),
              ("Object Name", 0x4D), ("Model Name", 0x46), ("Description", 0x1C),
              ("Location", 0x3A))  # fmt: skip

_rule = version_port_or_service([47808], ["bacnet"], ("udp", "tcp"))


def query(property_id: int) -> bytes:
    """ReadProperty(device 4194303, property_id) in a BVLC Original-Unicast-NPDU."""
    return struct.pack(">BBHBBBBBBBIBB", 0x81, 0x0A, 0x0011, 0x01, 0x04, 0x00, 0x05, 0x01,
                       0x0C, 0x0C, 0x023FFFFF, 0x19, property_id)  # fmt: skip


def field_size(packet: bytes, release: str = "7.93") -> str:
    """``field_size``: a string property's value; LuaError where Nmap's Lua dies."""
    value = byte(packet, 18)
    if value is None:
        raise LuaError("attempt to perform arithmetic on a nil value (local 'value')")
    if value % 0x10 < 5:
        size, offset = value % 0x10 - 1, 19
    else:
        length = byte(packet, 19)
        if length is None:
            raise LuaError("attempt to perform arithmetic on a nil value")
        size, offset = length - 1, 20
    if size < 0:
        raise LuaError("missing size for format option 'c'")
    charset, offset = unpack_int(packet, offset, 1)
    info, _ = unpack_c(packet, offset, size)
    if charset == 4:
        info = utf16be_to_utf8(info, release)
    return info.decode("latin-1")


def vendor_number(response: bytes, vendors: Mapping[int, str]) -> str | None:
    """``vendornum_query``'s parse of an answer (LuaError where Lua dies)."""
    if byte(response, 1) != 0x81 or byte(response, 7) == 0x50:
        return None
    kind = byte(response, 18)
    if kind == 0x21:
        number = byte(response, 19)
        if number is None:
            raise LuaError("bad argument #3 to 'format' (number expected, got nil)")
    elif kind == 0x22:
        number, _ = unpack_int(response, 19, 2, big=True)
    else:
        return None
    return f"{vendors.get(number, 'Unknown Vendor Number')} ({number})"


def _property(response: bytes, release: str) -> str | None:
    """``standard_query``'s parse of an answer."""
    if byte(response, 1) != 0x81 or byte(response, 7) == 0x50:
        return None
    return field_size(response, release)


class BacnetInfo(BaseScript):
    name = "bacnet-info"

    def __init__(self, vendors: Mapping[int, str] | None = None) -> None:
        self._vendors = vendors

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    @staticmethod
    async def _ask(conn: Connection, property_id: int) -> bytes | None:
        """Send one query, read one answer (None: NSE's status string, never 0x81)."""
        try:
            conn.send(query(property_id))
            return await conn.receive(NSE_SOCKET_TIMEOUT)
        except ExchangeError:
            return None

    async def action(self, run: ScriptRun) -> str | ScriptOutput | None:
        try:
            conn = await run.exchange.connect(timeout=NSE_SOCKET_TIMEOUT)
        except ExchangeError:
            return None
        first = await self._ask(conn, OBJECT_ID)
        if first is None or byte(first, 1) != 0x81:
            return None
        run.set_version(VersionUpdate(name="bacnet"))
        run.set_port_state("open")
        if byte(first, 7) == 0x50:
            return "\nBACNet ADPU Type: Error (5) \n\t" + first.hex()
        vendors = self._vendors
        if vendors is None:
            vendors = nse_table("bacnet-info.nse", "vendor_id")
        output = Table()
        try:
            answer = await self._ask(conn, VENDOR_ID)
            output["Vendor ID"] = vendor_number(answer, vendors) if answer is not None else None
            for index, (key, property_id) in enumerate(PROPERTIES):
                answer = await self._ask(conn, property_id)
                output[key] = _property(answer, run.release) if answer is not None else None
                if index == 0:
                    instance, _ = unpack_int(first, 20, 3, big=True)
                    output["Object-identifier"] = lua_str(instance)
        except LuaError as exc:
            raise ScriptFailed(str(exc)) from None
        finally:
            conn.close()
        return ScriptOutput(table=output)
