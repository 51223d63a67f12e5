"""``quake1-info``: a Quake 1 server's info and its players (NetQuake control packets).

Rule (a function in NSE, not shortport): udp, state open or open|filtered,
port 26000-26004 or service ``quake``, intensity >= 7 (no Exclude check).

Sends the server-info request (control packet 0x8000, length 12, opcode 0x02,
game ``QUAKE``, protocol 3) and reads one datagram (``comm.exchange``: 8 s).
No answer, or fewer than 4 bytes: nothing. Otherwise the port becomes
``open``; then the reply must be a control packet whose length field is the
datagram's length, opcode 0x83, three zero-terminated strings (address,
host name, level) and three bytes (players, max players, protocol version)
ending exactly at the end; else nothing more (NSE's script swallows its own
error and prints nothing without ``-d``).

Version fields: name ``quake``, product ``Quake 1 server``, version = the
protocol's name (``net_protocol_versions`` of the installed script: 3 is
``released``; cleared when unknown); the rest (the probe's extra info) kept;
hard match. Then one player-info request per player (opcode 0x03, number
from 0), one after the other, each 8 s at most: a player's entry is its
table (name, address, connect time, frags, shirt and pants colours from the
script's ``color_codes``), or the error table of the check that failed, or
Lua's message when ``string.unpack`` itself failed (Lua 5.3 and 5.4 word an
unterminated string differently).

Output: NSE's (table, text) pair; the text is the script's own formatter
(keys with ``_`` as spaces, the two ratio keys spelled out, a player's name
on its heading line).
"""

from __future__ import annotations

import functools
import re
import struct

from vscand.output.script_output import ScriptOutput, Table, Value, lua_str
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.builtin.game_query import (
    LuaUnpackError,
    lua_unpack,
    nse_location,
    nse_source,
    request_timeout,
    udp_exchange,
)

__all__ = ["Quake1Info", "format_results", "player_request", "server_request"]

CONTROL = 0x8000
SERVER_INFO, SERVER_INFO_REPLY = 0x02, 0x83
PLAYER_INFO, PLAYER_INFO_REPLY = 0x03, 0x84
GAME = b"QUAKE"
PROTOCOL_RELEASED = 0x03
TIMEOUT = request_timeout(None)
PLAYER_FORMAT = ">BBzBxxx<i4I4>z"

_XLATE = {
    "player_ratio": "player info exchange payload amplification",
    "server_ratio": "server info exchange payload amplification",
}


def server_request() -> bytes:
    body = struct.pack(">B", SERVER_INFO) + GAME + b"\x00" + struct.pack(">B", PROTOCOL_RELEASED)
    return struct.pack(">HH", CONTROL, 4 + len(body)) + body


def player_request(number: int) -> bytes:
    """The request for player ``number`` (1-based, as the script counts)."""
    return struct.pack(">HHBB", CONTROL, 6, PLAYER_INFO, (number - 1) & 0xFF)


def _ratio(received: int, sent: int) -> str:
    return f"{received}/{sent}={received / sent:f}"


@functools.cache
def _lua_table(name: str) -> dict[int, str]:
    """``local name = { [ 0x.. ] = "..", ... }`` of the installed quake1-info.nse."""
    source = nse_source("quake1-info")
    if source is None:
        return {}
    block = re.search(r"local\s+" + name + r"\s*=\s*\{(.*?)\}", source[1], re.DOTALL)
    if block is None:
        return {}
    entries = re.findall(r"\[\s*(0[xX][0-9a-fA-F]+|\d+)\s*\]\s*=\s*\"([^\"]*)\"", block.group(1))
    return {int(key, 0): value for key, value in entries}


def protocol_versions() -> dict[int, str]:
    return _lua_table("net_protocol_versions")


def color_codes() -> dict[int, str]:
    return _lua_table("color_codes")


def _text(raw: bytes | int) -> str:
    return raw.decode("latin-1") if isinstance(raw, bytes) else lua_str(raw)


def parse_player(reply: bytes, sent: int, release: str = "7.93") -> Value:
    """One player's entry: its table, an error table, or Lua's error message."""
    if len(reply) < 4:
        return Table.of({"ERROR": "Response too small for packet header"})
    info = Table.of({"player_ratio": _ratio(len(reply), sent)})
    kind, length = struct.unpack_from(">HH", reply)
    if length != len(reply):
        info["ERROR"] = (
            f"Incorrect reply packet length: {length} received, {len(reply)} bytes in packet"
        )
        return info
    if kind != CONTROL:
        info["ERROR"] = "Bad reply packet type"
        return info
    try:
        values, pos = lua_unpack(PLAYER_FORMAT, reply, 4, release)
    except LuaUnpackError as error:
        where = nse_location("quake1-info", f"string.unpack('{PLAYER_FORMAT}'", 155, release)
        return where + str(error)
    opcode, _number, name, colors, frags, connect_time, address = values
    assert isinstance(opcode, int) and isinstance(colors, int)
    if pos != length:
        info["ERROR"] = "Error parsing reply (packet type/ length)"
        return info
    if opcode != PLAYER_INFO_REPLY:
        info["ERROR"] = (
            f"Incorrect operation code 0x{opcode:x} in reply, should be 0x{PLAYER_INFO_REPLY:x}"
        )
        return info
    codes = color_codes()
    info["name"] = _text(name)
    info["client_address"] = _text(address)
    info["connect_time"] = f"{_text(connect_time)} secs"
    info["frags"] = _text(frags)
    info["shirt"] = codes.get(colors >> 4, "INVALID")
    info["pants"] = codes.get(colors & 0x0F, "INVALID")
    return info


def _xlate(key: str) -> str:
    return _XLATE.get(key) or key.replace("_", " ")


def format_results(table: Table, indent: int = 0, offset: int = 2) -> str:
    """The script's formatter: a ``name`` key on the heading line, the rest below."""
    out: list[str] = []
    if "name" in table:
        out.append(("\n" if indent == 0 else ": ") + str(table["name"]))
    pad = " " * (indent + offset)
    for key, value in table.fields:
        if key == "name":
            continue
        if isinstance(value, Table):
            out.append(f"\n{pad}{_xlate(key)}")
            out.append(format_results(value, indent + offset, offset))
        else:
            out.append(f"\n{pad}{_xlate(key)}: {value}")
    return "".join(out)


class Quake1Info(BaseScript):
    name = "quake1-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return (
            port.state in ("open", "open|filtered")
            and port.protocol == "udp"
            and (26000 <= port.number <= 26004 or port.name == "quake")
            and ctx.intensity >= 7
        )

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        request = server_request()
        reply = await udp_exchange(run.exchange, request, TIMEOUT)
        if reply is None or len(reply) < 4:
            return None
        run.set_port_state("open")
        kind, length = struct.unpack_from(">HH", reply)
        if kind != CONTROL or length != len(reply):
            return None
        try:
            (opcode,), pos = lua_unpack(">B", reply, 4, run.release)
            if opcode != SERVER_INFO_REPLY:
                return None
            values, pos = lua_unpack(">zzzBBB", reply, pos, run.release)
        except LuaUnpackError:
            return None
        if pos != length:
            return None
        address, host_name, level, players, max_players, protocol = values
        assert isinstance(players, int) and isinstance(protocol, int)
        versions = protocol_versions()
        run.set_version(
            VersionUpdate(name="quake", product="Quake 1 server", version=versions.get(protocol))
        )
        player_table = Table()
        for number in range(1, players + 1):
            sent = player_request(number)
            answer = await udp_exchange(run.exchange, sent, TIMEOUT)
            entry: Value = (
                Table.of({"ERROR": "No response to request for player info"})
                if answer is None
                else parse_player(answer, len(sent), run.release)
            )
            player_table[f"player {number}"] = entry
        table = Table.of(
            {
                "server_ratio": _ratio(len(reply), len(request)),
                "listen_address": _text(address),
                "server_name": _text(host_name),
                "level_name": _text(level),
                "players": f"{players}/{_text(max_players)}",
                "player_table": player_table,
                "protocol_version": f"{versions.get(protocol, 'nil')} (0x{protocol:x})",
            }
        )
        return ScriptOutput(table=table, text=format_results(table))
