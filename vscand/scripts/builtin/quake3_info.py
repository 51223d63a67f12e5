"""``quake3-info``: a Quake 3 server's ``getstatus`` answer (players and options).

Rule: port 27960-27970 or service ``quake3``, udp, intensity >= 7, not
excluded (``shortport.version_port_or_service``).

Sends ``\\xff\\xff\\xff\\xffgetstatus\\n`` and reads one datagram
(``comm.exchange``: 8 s). The answer is split on ``\\n``: the first line must
be ``\\xff\\xff\\xff\\xffstatusResponse``, there must be at least two more,
and the last must be empty (the datagram ends with a newline); else nothing.
The second line holds the options (``\\key\\value...``; a line not starting
with a backslash gives none), each further line a player (``frags ping
"name"``: exactly three space-separated parts, the name quoted).

Version fields, when a ``version`` option exists: its space-separated words
are product, version and platform; name ``quake3``; ostype ``Linux`` or
``Windows`` when the platform contains ``linux`` / ``win`` (else kept);
hard match. A version of fewer than three words makes NSE's script die
before ``set_port_version`` (``ScriptFailed``).

Output: ``stdnse.format_output`` of two lists: the players (sorted by frags,
name, ping, descending, as strings) as ``N. name (frags: F/FRAGLIMIT, ping:
P)`` and the options without ``_`` in their names, sorted; the options with
``_`` only at verbosity > 0 (we print what ``nmap -sV`` prints: verbosity 0).
"""

from __future__ import annotations

import re

from vscand.output.script_output import ScriptFailed
from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.builtin.game_query import request_timeout, udp_exchange
from vscand.scripts.shortport import version_port_or_service

__all__ = ["GETSTATUS", "Quake3Info", "format_output", "parse_status"]

GETSTATUS = b"\xff\xff\xff\xffgetstatus\n"
STATUS_RESPONSE = b"\xff\xff\xff\xffstatusResponse"
TIMEOUT = request_timeout(None)

_rule = version_port_or_service(range(27960, 27971), ["quake3"], ("udp",))

#: a list for ``format_output``: its heading and its lines
Section = tuple[str, list[str]]


def parse_fields(data: bytes) -> dict[bytes, bytes]:
    parts = data.split(b"\\")
    if parts.pop(0) != b"":
        return {}
    fields: dict[bytes, bytes] = {}
    for i in range(0, len(parts), 2):
        key = parts[i]
        if i + 1 < len(parts):
            fields[key] = parts[i + 1]
        else:
            fields.pop(key, None)  # Lua: fields[key] = nil
    return fields


def parse_player(line: bytes) -> tuple[bytes, bytes, bytes] | None:
    parts = line.split(b" ")
    if len(parts) != 3:
        return None
    quoted = parts[2].split(b'"')
    if len(quoted) != 3 or quoted[0] + quoted[2] != b"":
        return None
    return parts[0], parts[1], quoted[1]


def parse_status(
    data: bytes,
) -> tuple[dict[bytes, bytes], list[tuple[bytes, bytes, bytes]]] | None:
    """``(fields, players)`` of a statusResponse, or None when NSE's script gives up."""
    parts = data.split(b"\n")
    if parts.pop(0) != STATUS_RESPONSE or len(parts) < 2:
        return None
    if parts.pop() != b"":
        return None
    fields = parse_fields(parts.pop(0))
    players = [p for p in map(parse_player, parts) if p is not None]
    return fields, players


def _lines(value: bytes) -> list[bytes]:
    """``gmatch(value .. "\\n"?, "([^\\r\\n]-)\\n")``"""
    if not value.endswith(b"\n"):
        value += b"\n"
    return re.findall(rb"([^\r\n]*?)\n", value)


def format_output(sections: list[tuple[bytes, list[bytes]]]) -> str:
    """``stdnse.format_output(true, {t1, t2, ...})``, each ``t`` a named list of strings."""
    out = ["\n"]
    for name, items in sections:
        out.append("  " + name.decode("latin-1") + "\n")
        for item in items:
            out.extend("    " + line.decode("latin-1") + "\n" for line in _lines(item))
    return "".join(out)


class Quake3Info(BaseScript):
    name = "quake3-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        data = await udp_exchange(run.exchange, GETSTATUS, TIMEOUT)
        if data is None:
            return None
        parsed = parse_status(data)
        if parsed is None:
            return None
        fields, players = parsed
        basic = {k: v for k, v in fields.items() if b"_" not in k}
        version_line = basic.get(b"version")
        if version_line is not None:
            words = version_line.split(b" ")
            if len(words) < 3:
                raise ScriptFailed("string.find on a missing platform word")
            product, version, platform = words[0], words[1], words[2]
            ostype: str | object = KEEP
            if b"linux" in platform:
                ostype = "Linux"
            if b"win" in platform:
                ostype = "Windows"
            run.set_version(
                VersionUpdate(
                    name="quake3",
                    product=product.decode("latin-1"),
                    version=version.decode("latin-1"),
                    ostype=ostype,  # type: ignore[arg-type]
                )
            )
        fraglimit = fields.get(b"fraglimit", b"?")
        ordered = sorted(players, key=lambda p: (p[0], p[2], p[1]), reverse=True)
        player_lines = [
            b"%d. %s (frags: %s/%s, ping: %s)" % (i, name, frags, fraglimit, ping)
            for i, (frags, ping, name) in enumerate(ordered, 1)
        ]
        options = sorted(k + b": " + v for k, v in basic.items())
        return format_output([(b"PLAYERS:", player_lines), (b"BASIC OPTIONS:", options)])
