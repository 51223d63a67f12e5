"""``freelancer-info``: a Freelancer (FLServer) status answer.

Rule: port 2302 or service ``freelancer``, udp, intensity >= 7, not excluded.

Sends the status query (the same bytes as the probe file's FreelancerStatus)
and reads one datagram (``comm.exchange`` with a 3 s timeout: 6 s). Any
answer makes the port ``open``. The answer must then match the script's Lua
pattern: ``\\x00\\x03\\xf1\\x26``, bytes at offsets 16 (password flag: bit
7), 20 (max players + 1), 24 (players + 1), from offset 92 the server name up
to ``\\0\\0``, PvP and new-players flags between colons, three more colons,
the description, and ``\\0\\0`` at the very end. The pattern is greedy
(``(.*)`` takes the last possible split); :func:`match_status` finds the same
captures as Lua's backtracking matcher, in linear time.

Version fields: name ``freelancer``, product ``Freelancer``, extra info
``name: NAME; players: N/MAX; password: yes|no`` (the name without bytes
that are neither printable nor space, as the script's ``[^%g%s]``); hard
match. Output: the table (name, description, players, max. players,
password, PvP and new-players flags: ``yes``/``no``/``n/a``).
"""

from __future__ import annotations

from dataclasses import dataclass

from vscand.output.script_output import ScriptOutput, Table, lua_str
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.builtin.game_query import request_timeout, udp_exchange
from vscand.scripts.shortport import version_port_or_service

__all__ = ["QUERY", "FreelancerInfo", "Status", "clean", "match_status"]

QUERY = bytes.fromhex("0002f1260126f090a6f026574eaca0ecf868e48d21")
PREFIX = b"\x00\x03\xf1\x26"
NAME_AT = 92
TIMEOUT = request_timeout(3000)

_rule = version_port_or_service([2302], ["freelancer"], ("udp",))


@dataclass(frozen=True)
class Status:
    password: int
    max_players: int
    players: int
    name: bytes
    pvp: bytes
    new_players: bytes
    description: bytes


def match_status(data: bytes) -> Status | None:
    """The captures of the script's pattern, as Lua's matcher finds them, or None."""
    size = len(data)
    if not data.startswith(PREFIX) or size < NAME_AT + 11 or data[-2:] != b"\x00\x00":
        return None
    tail = size - 2  # the colons and the description end before the final \0\0
    # colons[i]: colons in data[i:tail]
    colons = [0] * (tail + 1)
    for i in range(tail - 1, -1, -1):
        colons[i] = colons[i + 1] + (data[i] == 0x3A)
    for end in range(tail - 6, NAME_AT - 1, -1):
        if (
            data[end] == 0
            and data[end + 1] == 0
            and data[end + 3] == 0x3A
            and data[end + 5] == 0x3A
            and colons[end + 6] >= 3
        ):
            last = data.rindex(b":", end + 6, tail)
            return Status(
                data[16], data[20], data[24], data[NAME_AT:end],
                data[end + 2 : end + 3], data[end + 4 : end + 5], data[last + 1 : tail],
            )  # fmt: skip
    return None


def clean(raw: bytes) -> str:
    """``gsub("[^%g%s]", "")`` in the C locale: printable ASCII and white space stay."""
    return bytes(b for b in raw if 0x20 <= b <= 0x7E or 0x09 <= b <= 0x0D).decode("latin-1")


def _flag(value: bytes) -> str:
    return {b"1": "yes", b"0": "no"}.get(value, "n/a")


class FreelancerInfo(BaseScript):
    name = "freelancer-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        data = await udp_exchange(run.exchange, QUERY, TIMEOUT)
        if data is None:
            return None
        run.set_port_state("open")
        status = match_status(data)
        if status is None:
            return None
        name = clean(status.name)
        players, max_players = status.players - 1, status.max_players - 1
        password = "yes" if status.password & 0x80 else "no"
        out = Table.of(
            {
                "server name": name,
                "server description": clean(status.description),
                "players": lua_str(players),
                "max. players": lua_str(max_players),
                "password": password,
                "allow players to harm other players": _flag(status.pvp),
                "allow new players": _flag(status.new_players),
            }
        )
        run.set_version(
            VersionUpdate(
                name="freelancer",
                product="Freelancer",
                extrainfo=f"name: {name}; players: {players}/{max_players}; password: {password}",
            )
        )
        return ScriptOutput(table=out)
