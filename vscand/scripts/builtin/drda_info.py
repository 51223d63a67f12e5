"""``drda-info``: a DRDA server's EXCSAT reply (IBM DB2, Informix, Apache Derby).

Rule: ports 50000, 60000, 9090, 1526, 1527 or services ``drda``/``ibm-db2`` (tcp,
open or open|filtered, not excluded, intensity >= 7).

Action (one connection, NSE's 30 s socket timeout): an EXCSAT command with empty
names and NSE's manager-level list (the bytes of nmap-service-probes' ``drda``
probe), then DRDA messages are read as NSE's drda library reads them: a 10-byte
DDM header, ``length - 10`` more bytes, parameters (length, code point, data)
until at most one byte is left, the next message while the format says chained.
From the first EXCSATRD: EXTNAM, SRVCLSNM, SRVNAM, SRVRLSLV, converted from
EBCDIC with the table of the installed ``nselib/drda.lua`` (read at run time).

Where NSE's Lua dies (a parameter cut short, a length under 4, a wanted
parameter without data, a release level missing for a known server class) we
raise ScriptFailed. A message of 10-13 bytes makes NSE's parameter loop spin
forever (Nmap hangs); we stop and change nothing.

Version fields (hard match) and state ``open``: server class containing
``IDS/``, ``Apache Derby`` or ``DB2`` -> name ``drda``, product IBM Informix Dynamic
Server / Apache Derby Server / IBM DB2 Database Server; extrainfo = the server
class. Output (``stdnse.format_output``): ``<Informix|Derby|DB2> Version: V`` (or
``Version: <release>``), ``Server Platform``, ``Instance Name``, ``External Name``
(``nil`` when absent). No EXCSATRD: the output is ``The response contained no
EXCSATRD`` and nothing is set.
"""

from __future__ import annotations

import functools
import re
import struct
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vscand.output.script_output import ScriptFailed
from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import Connection, ExchangeError
from vscand.scripts.proto.nse_text import format_output
from vscand.scripts.shortport import version_port_or_service

__all__ = [
    "DRDA_LIBRARIES",
    "EXCSAT",
    "Ddm",
    "DrdaInfo",
    "Spin",
    "parse_parameters",
    "parse_version",
    "server_info",
]

SOCKET_TIMEOUT = 30.0
#: where the installed Nmap keeps its drda library (its EBCDIC table is read from it)
DRDA_LIBRARIES = ("/usr/share/nmap/nselib/drda.lua", "/usr/local/share/nmap/nselib/drda.lua")

CODEPOINT_EXCSATRD = 0x1443
EXTNAM, SRVCLSNM, SRVNAM, SRVRLSLV = 0x115E, 0x1147, 0x116D, 0x115A
#: EXCSAT (0x1041): EXTNAM, SRVNAM, SRVRLSLV empty, MGRLVLLS (five managers), SRVCLSNM empty
EXCSAT = bytes.fromhex(
    "0032d0010001002c1041"
    "0004115e" "0004116d" "0004115a"
    "001814041403000724070008240f00081440000814740008"
    "00041147"
)  # fmt: skip

_rule = version_port_or_service([50000, 60000, 9090, 1526, 1527], ["drda", "ibm-db2"])


class Spin(Exception):
    """NSE's parameter loop would never end on this message (Nmap hangs)."""


@dataclass
class Ddm:
    length: int
    fmt: int
    codepoint: int
    parameters: list[tuple[int, bytes | None]] = field(default_factory=list)

    def parameter(self, codepoint: int) -> tuple[int, bytes | None] | None:
        return next((p for p in self.parameters if p[0] == codepoint), None)


@functools.cache
def ebcdic_table(paths: Sequence[str] = DRDA_LIBRARIES) -> bytes | None:
    """The 256-byte EBCDIC-to-ASCII table of the installed drda library, or None."""
    for path in paths:
        try:
            text = Path(path).read_text(encoding="latin-1")
        except OSError:
            continue
        found = re.search(r'e2a_hex\s*=\s*"((?:[^"\\]|\\.)*)"', text, re.S)
        if found is None:
            continue
        digits = re.sub(r"\\z\s*", "", found.group(1))
        try:
            table = bytes.fromhex(digits)
        except ValueError:
            continue
        if len(table) == 256:
            return table
    return None


def parse_parameters(data: bytes) -> list[tuple[int, bytes | None]]:
    """NSE's parameter loop over a message body; ScriptFailed where Lua errors,
    :class:`Spin` where the loop would not end."""
    if len(data) < 4:
        raise Spin("message body under 4 bytes")
    params: list[tuple[int, bytes | None]] = []
    pos = 0
    while True:
        if pos + 4 > len(data):
            raise ScriptFailed("data string too short")
        length, codepoint = struct.unpack_from(">HH", data, pos)
        pos += 4
        value: bytes | None = None
        if length > 0:
            if length < 4:
                raise ScriptFailed("missing size for format option 'c'")
            if pos + length - 4 > len(data):
                raise ScriptFailed("data string too short")
            value = data[pos : pos + length - 4]
            pos += length - 4
        params.append((codepoint, value))
        # Lua's "until #data <= pos" with pos 1-based
        if len(data) <= pos + 1:
            return params


async def read_ddm(conn: Connection) -> Ddm:
    header = await conn.receive_exactly(10, SOCKET_TIMEOUT)
    length, _magic, fmt, _corel, _length2, codepoint = struct.unpack(">HBBHHH", header)
    if length < 10:
        raise ScriptFailed("numbytes of a negative count")
    body = await conn.receive_exactly(length - 10, SOCKET_TIMEOUT) if length > 10 else b""
    return Ddm(length, fmt, codepoint, parse_parameters(body))


def server_info(ddms: list[Ddm], table: bytes) -> dict[str, str] | None:
    """The names of the first EXCSATRD in ASCII, or None without one."""
    reply = next((d for d in ddms if d.codepoint == CODEPOINT_EXCSATRD), None)
    if reply is None:
        return None
    info: dict[str, str] = {}
    for key, codepoint in (
        ("extname", EXTNAM),
        ("srvclass", SRVCLSNM),
        ("srvname", SRVNAM),
        ("prodrel", SRVRLSLV),
    ):
        param = reply.parameter(codepoint)
        if param is None:
            continue
        if param[1] is None:
            raise ScriptFailed("bad argument #1 to 'gsub' (string expected, got nil)")
        info[key] = param[1].translate(table).decode("latin-1")
    return info


def parse_version(release: str | None) -> str:
    """The release level as the script shows it (``SQL09074`` -> ``9.07.4``)."""
    if release is None:
        raise ScriptFailed("bad argument #1 to 'sub' (string expected, got nil)")
    prefix = release[:3]
    if prefix in ("SQL", "IFX"):
        major = release[3:5]
        if major[:1] == "0":
            major = major[1:]
        return f"{major}.{release[5:7]}.{release[7:]}"
    if prefix == "CSS":
        found = re.search(r"[A-Za-z0-9]+/(.*)", release, re.S)
        return found.group(1) if found else "nil"
    return release


_SERVERS = (
    ("IDS/", "IBM Informix Dynamic Server", "Informix"),
    ("Apache Derby", "Apache Derby Server", "Derby"),
    ("DB2", "IBM DB2 Database Server", "DB2"),
)


class DrdaInfo(BaseScript):
    name = "drda-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        table = ebcdic_table()
        if table is None:
            return None  # Nmap without its drda library cannot run the script
        try:
            conn = await run.exchange.connect(timeout=SOCKET_TIMEOUT)
        except ExchangeError:
            return None
        ddms: list[Ddm] = []
        try:
            conn.send(EXCSAT)
            while True:
                ddm = await read_ddm(conn)
                ddms.append(ddm)
                if not ddm.fmt & 0x40:
                    break
        except (ExchangeError, Spin):
            return None
        finally:
            conn.close()
        info = server_info(ddms, table)
        if info is None:
            return "The response contained no EXCSATRD"
        srvclass = info.get("srvclass")
        update = VersionUpdate(extrainfo=srvclass if srvclass is not None else KEEP)
        first = None
        for needle, product, label in _SERVERS:
            if srvclass is not None and needle in srvclass:
                first = f"{label} Version: {parse_version(info.get('prodrel'))}"
                update = VersionUpdate(name="drda", product=product, extrainfo=update.extrainfo)
                break
        if first is None:
            first = f"Version: {info.get('prodrel', 'nil')}"
        run.set_state("open")
        run.set_version(update)
        lines = [
            first,
            f"Server Platform: {info.get('srvclass', 'nil')}",
            f"Instance Name: {info.get('srvname', 'nil')}",
            f"External Name: {info.get('extname', 'nil')}",
        ]
        return format_output(lines)
