"""``allseeingeye-info``: the All-Seeing Eye status answer of a game server.

Rule: ports 1258, 2126, 3123, 12444, 13200, 23196, 26000, 27138, 27244,
27777, 28138 or service ``allseeingeye``, udp, intensity >= 7, not excluded.

Sends ``s`` and reads one datagram (``comm.exchange`` with a 3 s timeout:
6 s). Any answer makes the port ``open``; one not starting with ``EYE1``
changes nothing more. Then nine 1-byte-length strings (game, port, server
name, game type, map, version, passworded, players, max players), key/value
string pairs up to a ``\\x01`` byte (the nine keys in reverse order: Lua assigns
``o[a], o[b], ... = string.unpack(...)`` right to left), then players: a flags byte and, per flag
bit 1/2/4/8/16/32, name, team, skin, score, ping, time. A string cut short
(or no ``\\x01`` before the end) is a Lua runtime error in NSE's script
(``ScriptFailed``; the port stays open).

Version fields: name ``ase``, product ``All-Seeing Eye``, extra info ``game:
GAME VERSION; port: PORT; no password`` (``has password`` unless the
passworded string is ``0``); hard match. Output: the table (settings and
players nested).
"""

from __future__ import annotations

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.builtin.game_query import (
    LuaUnpackError,
    lua_unpack,
    request_timeout,
    udp_exchange,
)
from vscand.scripts.shortport import version_port_or_service

__all__ = ["AllSeeingEyeInfo", "parse_status"]

PORTS = (1258, 2126, 3123, 12444, 13200, 23196, 26000, 27138, 27244, 27777, 28138)
TIMEOUT = request_timeout(3000)
HEADINGS = ("game", "port", "server name", "game type", "map", "version", "passworded",
            "num players", "max players")  # fmt: skip
PLAYER_FIELDS = ((1, "name"), (2, "team"), (4, "skin"), (8, "score"), (16, "ping"), (32, "time"))

_rule = version_port_or_service(PORTS, ["allseeingeye"], ("udp",))


def _text(raw: object) -> str:
    assert isinstance(raw, bytes)
    return raw.decode("latin-1")


def parse_status(data: bytes) -> Table:
    """The output table of an ``EYE1`` answer; raises :class:`LuaUnpackError` where
    NSE's script dies."""
    values, pos = lua_unpack("s1" * 9, data, 4)
    out = Table()
    # Lua assigns a multiple assignment right to left: the output table gets the
    # nine keys last first (nmap 7.93 and 7.95 print "max players" first)
    for key, value in reversed(list(zip(HEADINGS, values, strict=True))):
        out[key] = _text(value)
    settings: dict[str, str] = {}  # a dict keeps a reassigned key in place, as output_table
    out["settings"] = Table()
    while pos >= len(data) or data[pos] != 1:
        (name, value), pos = lua_unpack("s1s1", data, pos)
        settings[_text(name)] = _text(value)
    out["settings"] = Table(fields=list(settings.items()))
    pos += 1
    players = Table()
    out["players"] = players
    while pos < len(data):
        flags = data[pos]
        pos += 1
        player = Table()
        for bit, field in PLAYER_FIELDS:
            if flags & bit:
                (value,), pos = lua_unpack("s1", data, pos)
                player[field] = _text(value)
        # "player N" keys are new each time: appended directly (Table's own lookup is linear)
        players.fields.append((f"player {len(players.fields)}", player))
    return out


class AllSeeingEyeInfo(BaseScript):
    name = "allseeingeye-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        data = await udp_exchange(run.exchange, b"s", TIMEOUT)
        if data is None:
            return None
        run.set_port_state("open")
        if not data.startswith(b"EYE1"):
            return None
        try:
            out = parse_status(data)
        except LuaUnpackError as error:
            raise ScriptFailed(str(error)) from error
        password = "; no password" if out["passworded"] == "0" else "; has password"
        extrainfo = f"game: {out['game']} {out['version']}; port: {out['port']}{password}"
        run.set_version(VersionUpdate(name="ase", product="All-Seeing Eye", extrainfo=extrainfo))
        return ScriptOutput(table=out)
