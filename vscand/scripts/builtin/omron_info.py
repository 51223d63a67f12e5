"""``omron-info``: an Omron PLC's Controller Data Read over FINS.

Runs on port 9600 or service ``fins`` (tcp and udp, intensity >= 7, not
excluded). NSE's default socket timeout (30 s) on every read.

* UDP: one FINS Controller Data Read (command 05 01) and one datagram back.
* TCP: first a FINS/TCP node address request (``FINS`` header, command 0);
  when the answer starts with ``F`` (0x46), its byte 24 is our node address,
  put into the FINS/TCP-framed Controller Data Read; one read for each. An
  answer that does not start with ``F`` stands for Nmap's ``"ERROR"``.

A failed read is NSE's status string, parsed like an answer. An answer whose
first byte is 0xc0, 0xc1 or 0x46 names the port (hard match: name ``fins``,
the rest kept; the port is made ``open``); then the response code, read as a
little-endian 16-bit number at byte 13 (29 over TCP) as Nmap does: 2081, 290
and 0 have their texts, anything else is ``Unknown Response Code``. With 0,
the controller model, version and the system-use field (NUL-terminated at 15,
35, 55), program area size, IOM size, DM words, timer/counter, expansion DM
size, steps/transitions, the memory card kind (``memcard`` names) and size
follow at Nmap's offsets. Where Nmap's Lua dies on a short answer after the
port was named, the name stands and the output is Nmap's error line.
"""

from __future__ import annotations

import contextlib

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table, lua_str
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import Connection, ExchangeError, ExchangeTimeout
from vscand.scripts.proto.luastring import LuaError, byte, unpack_int, unpack_z
from vscand.scripts.shortport import version_port_or_service
from vscand.scripts.streams import NSE_SOCKET_TIMEOUT

__all__ = ["OmronInfo", "parse_controller_data", "tcp_request"]

UDP_REQUEST = bytes.fromhex("800002000000006300ef050100")
ADDRESS_REQUEST = bytes.fromhex("46494e530000000c000000000000000000000000")
TCP_HEAD = bytes.fromhex("46494e5300000015000000020000000080000200")
TCP_TAIL = bytes.fromhex("000000ef050501")
RESPONSE_CODES = {2081: "Data cannot be changed (0x2108)",
                  290: "The mode is wrong (executing) (0x2201)"}  # fmt: skip
MEMORY_CARDS = {0: "No Memory Card", 1: "SPRAM", 2: "EPROM", 3: "EEPROM"}

_rule = version_port_or_service([9600], ["fins"], ("tcp", "udp"))


def tcp_request(address_answer: bytes) -> bytes:
    """The Controller Data Read over FINS/TCP, addressed with the answer's byte 24."""
    address = byte(address_answer, 24)
    if address is None:
        raise LuaError("bad argument #3 to 'format' (number expected, got nil)")
    return TCP_HEAD + bytes([address]) + TCP_TAIL + b"\x00"


def parse_controller_data(response: bytes, offset: int) -> Table | None:
    """The output table (None: not FINS); LuaError where Nmap's Lua dies."""
    if byte(response, 1) not in (0xC0, 0xC1, 0x46):
        return None
    output = Table()
    code, _ = unpack_int(response, 13 + offset, 2)
    if code in RESPONSE_CODES:
        output["Response Code"] = RESPONSE_CODES[code]
        return output
    if code != 0:
        output["Response Code"] = "Unknown Response Code"
        return output
    output["Response Code"] = "Normal completion (0x0000)"
    for key, at in (("Controller Model", 15), ("Controller Version", 35), ("For System Use", 55)):
        output[key] = unpack_z(response, at + offset)[0].decode("latin-1")
    pos = 95 + offset
    for key, size in (("Program Area Size", 2), ("IOM size", 1), ("No. DM Words", 2),
                      ("Timer/Counter", 1), ("Expansion DM Size", 1),
                      ("No. of steps/transitions", 2)):  # fmt: skip
        value, pos = unpack_int(response, pos, size, big=True)
        output[key] = lua_str(value)
    card, pos = unpack_int(response, pos, 1)
    output["Kind of Memory Card"] = MEMORY_CARDS.get(card, "Unknown Memory Card Type")
    size, pos = unpack_int(response, pos, 2, big=True)
    output["Memory Card Size"] = lua_str(size)
    return output


async def _exchange(conn: Connection, request: bytes) -> bytes:
    """NSE's send (unchecked) and receive: the data, or NSE's status string."""
    with contextlib.suppress(ExchangeError):
        conn.send(request)
    try:
        return await conn.receive(NSE_SOCKET_TIMEOUT)
    except ExchangeTimeout:
        return b"TIMEOUT"
    except ExchangeError:
        return b"EOF"


class OmronInfo(BaseScript):
    name = "omron-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        try:
            conn = await run.exchange.connect(timeout=NSE_SOCKET_TIMEOUT)
        except ExchangeError:
            return None
        try:
            if run.port.protocol == "tcp":
                offset = 16
                response = await _exchange(conn, ADDRESS_REQUEST)
                if byte(response, 1) == 0x46:
                    response = await _exchange(conn, tcp_request(response))
                else:
                    response = b"ERROR"
            else:
                offset = 0
                response = await _exchange(conn, UDP_REQUEST)
            if byte(response, 1) not in (0xC0, 0xC1, 0x46):
                return None
            run.set_version(VersionUpdate(name="fins"))
            run.set_port_state("open")
            output = parse_controller_data(response, offset)
        except LuaError as exc:
            raise ScriptFailed(str(exc)) from None
        finally:
            conn.close()
        return ScriptOutput(table=output)
