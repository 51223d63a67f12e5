"""``maxdb-info``: version and databases of a SAP MaxDB server (its DBM server).

Rule: port 7210 or service ``maxdb`` (tcp, open or open|filtered, not excluded,
intensity >= 7).

Action (one connection, 10 s per read): NSE's three packets, each answered by one
packet whose first two bytes are its length (little-endian; when the first read
holds a different count, one more read is appended, as NSE does): the connect
packet, ``dbm_version`` (lines ``KEY = value`` from byte 28 on: VERSION, BUILD,
OS, INSTROOT, SYSNAME shown), then ``db_enum``, whose answer must be 26 bytes or
more with ``OK`` at bytes 25-26; its tab-separated lines from byte 28 on become
the database table (``tab.dump``). A failed exchange ends the script without
output (NSE's ``format_output(false, ...)``); an answer of one byte makes NSE's
Lua die (ScriptFailed).

Version fields (hard match): name ``maxdb``, product ``SAP MaxDB``, version =
VERSION, ostype = SYSNAME (each cleared when absent). Output
(``stdnse.format_output``): ``Version``, ``Build``, ``OS``, ``Instroot``,
``Sysname`` (``nil`` when absent), then ``Databases`` and the table.
"""

from __future__ import annotations

import re
import struct

from vscand.output.script_output import ScriptFailed
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import Connection, ExchangeError
from vscand.scripts.proto.nse_text import Group, format_output, tab_dump
from vscand.scripts.shortport import version_port_or_service

__all__ = [
    "DBM_VERSION",
    "DB_ENUM",
    "HANDSHAKE",
    "MaxdbInfo",
    "database_row",
    "parse_databases",
    "parse_version",
]

SOCKET_TIMEOUT = 10.0
HANDSHAKE = bytes.fromhex(
    "5a000000035b000001000000ffffffff000004005a000000000242000409000000400000d03f0000004000"
    "0070000000000500000004000000020000000300000749343231360004501c2a035201037201097064626d"
    "73727600"
)
DBM_VERSION = bytes.fromhex(
    "28000000033f000001000000ac130000000004002800000064626d5f76657273696f6e2020202020"
)
DB_ENUM = bytes.fromhex("20000000033f000001000000ac130000000004002000000064625f656e756d20")

_rule = version_port_or_service([7210], ["maxdb"])

_S = r"[ \t\n\v\f\r]"  # Lua's %s (C locale isspace)
_KEY_VALUE = re.compile(rf"^([^ \t\n\v\f\r]+){_S}*?={_S}(.*){_S}*\Z", re.S)
_WS = frozenset(" \t\n\v\f\r")
_SHOWN = ("Version", "Build", "OS", "Instroot", "Sysname")


class _Failed(Exception):
    """An exchange failed: NSE's ``fail()`` (no output at debugging level 0)."""


def parse_version(data: bytes) -> dict[str, str]:
    """``KEY = value`` lines of a ``dbm_version`` answer (the last of a key wins)."""
    info: dict[str, str] = {}
    if len(data) > 27:
        for line in data[27:].decode("latin-1").split("\n"):
            found = _KEY_VALUE.match(line)
            if found:
                info[found.group(1)] = found.group(2)
    return info


def database_row(line: str) -> list[str] | None:
    """The five cells Lua's ``^(.-)%s*\\t(.-)%s*\\t(.-)%s*\\t(.-)%s-\\t(.-)%s-$``
    captures in ``line``, or None: the backtracking matcher's first match, in linear time.

    ``can[k][i]``: the pattern from its (k+1)-th cell on can match from position i.
    The choices are then made in the backtracking order (a lazy cell shortest first,
    ``%s*`` longest first, ``%s-`` shortest first), each taking the first option
    whose remainder can match. Lua's own matcher (and a regex) can take exponential
    time on a hostile line; the answer is the same.
    """
    n = len(line)
    space = [c in _WS for c in line] + [False]
    can: list[list[bool]] = [[True] * (n + 2)]  # the last cell and its trailing spaces
    for _ in range(4):
        rest, here, later = can[0], [False] * (n + 2), [False] * (n + 2)
        for i in range(n - 1, -1, -1):
            here[i] = (line[i] == "\t" and rest[i + 1]) or (space[i] and here[i + 1])
        for i in range(n, -1, -1):
            later[i] = here[i] or later[i + 1]
        can.insert(0, later)
    if not can[0][0]:
        return None
    cells: list[str] = []
    pos = 0
    for k in range(4):
        after = can[k + 1]
        # the tab to take from each position: the last (``%s*``) or first (``%s-``) tab
        # of the whitespace run there after which the rest can match
        pick = [-1] * (n + 1)
        for i in range(n - 1, -1, -1):
            if not space[i]:
                continue
            good = line[i] == "\t" and after[i + 1]
            if k < 3:
                pick[i] = pick[i + 1] if pick[i + 1] >= 0 else (i if good else -1)
            else:
                pick[i] = i if good else pick[i + 1]
        start = pos
        while pick[pos] < 0:
            pos += 1
        cells.append(line[start:pos])
        pos = pick[pos] + 1
    end = n
    while end > pos and space[end - 1]:
        end -= 1
    cells.append(line[pos:end])
    return cells


def parse_databases(data: bytes) -> str:
    """The ``db_enum`` answer's rows under NSE's header row, as ``tab.dump`` prints them."""
    rows = [["instance", "path", "version", "kernel", "state"]]
    for line in data[27:].decode("latin-1").split("\n"):
        row = database_row(line)
        if row is not None:
            rows.append(row)
    return tab_dump(rows)


async def _exchange(conn: Connection, packet: bytes) -> bytes:
    try:
        conn.send(packet)
        data = await conn.receive(SOCKET_TIMEOUT)
    except ExchangeError:
        raise _Failed from None
    if len(data) < 2:
        raise ScriptFailed("data string too short")
    (length,) = struct.unpack_from("<H", data)
    if length != len(data):
        try:
            if length > len(data):
                data += await conn.receive_at_least(length - len(data), SOCKET_TIMEOUT)
            else:
                data += await conn.receive(SOCKET_TIMEOUT)
        except ExchangeError:
            raise _Failed from None
    return data


class MaxdbInfo(BaseScript):
    name = "maxdb-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        try:
            conn = await run.exchange.connect(timeout=SOCKET_TIMEOUT)
        except ExchangeError:
            return None  # NSE goes on with an unconnected socket: its first send fails
        try:
            await _exchange(conn, HANDSHAKE)
            info = parse_version(await _exchange(conn, DBM_VERSION))
            enum = await _exchange(conn, DB_ENUM)
        except _Failed:
            return None
        finally:
            conn.close()
        if len(enum) < 26 or enum[24:26] != b"OK":
            return None
        run.set_version(
            VersionUpdate(
                name="maxdb",
                product="SAP MaxDB",
                version=info.get("VERSION"),
                ostype=info.get("SYSNAME"),
            )
        )
        lines: list[str | Group] = [f"{key}: {info.get(key.upper(), 'nil')}" for key in _SHOWN]
        lines.append(Group("Databases", [parse_databases(enum)]))
        return format_output(lines)
