"""``tftp-version`` (Nmap 7.95 on): a TFTP server's answer to a read request.

Runs on port 69 or service ``tftp`` (udp, intensity >= 7, not excluded);
part of the version category from Nmap 7.95 (``registry.SINCE``). Sends a
read request (RRQ) for a random DOS 8.3 name (8 characters of letters,
digits and ``_``, a dot, 3 letters) in ``octet`` mode, and waits for one
datagram to the same local port from *any* port of the host (a TFTP server
answers from a new port, its transfer id): ``stdnse.get_timeout(host)``,
2 s for a host timeout of 1 s. NSE listens with pcap when privileged (any
sender, then checks the address) or a socket; we use one unconnected
socket that keeps only the scanned host's datagrams.

The answer (at least 4 bytes) is read as NSE's ``parse``: DATA (its data, up
to 512 bytes), ERROR and ACK (a NUL-terminated message; none at all is a
Lua error), RRQ/WRQ (two strings); another opcode is not TFTP. Then the
port becomes ``open`` and the answer is looked up in Nmap's
``nselib/data/tftp-fingerprints.lua`` (read at run time, parsed as a Lua
literal): the first row of its opcode with the same error code and message
(and source port, when the row names one).

Version fields (hard match; the name is kept: NSE sets ``service``, which
``set_port_version`` does not read): without a row, nothing else changes and
the output is the answer's fields under Nmap's "please submit" key (opcode,
errcode, length, rport, errmsg, mode); with a row, its product, version,
extra info, hostname, OS and device type fill the fields that are empty,
its CPEs are added; no output unless a field the port already had differs
(Nmap then prints the row, a Lua hash table: its order is not Nmap's fixed
one; we print p, v, i, h, o, d, cpe, then the rest).
"""

from __future__ import annotations

import functools
import random
import string
import struct
from collections.abc import Callable
from dataclasses import dataclass

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table, lua_str
from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import ExchangeError
from vscand.scripts.lua_literal import LuaSyntaxError, LuaTable, LuaValue, parse_assignments
from vscand.scripts.shortport import version_port_or_service
from vscand.scripts.streams import DataFile

__all__ = ["TftpPacket", "TftpVersion", "load_fingerprints", "match", "parse", "read_request"]

FINGERPRINT_FILES = DataFile(
    "/usr/share/nmap/nselib/data/tftp-fingerprints.lua",
    "/usr/local/share/nmap/nselib/data/tftp-fingerprints.lua",
    relative="nselib/data/tftp-fingerprints.lua",
)
#: ``stdnse.get_timeout(host)`` for a host timeout of 1 s: 1 * (8000 + 6000) / 7 ms
TIMEOUT = 2.0
RRQ, WRQ, DATA, ACK, ERROR = 1, 2, 3, 4, 5
SUBMIT = (
    "If you know the name or version of the software running on this port, please submit"
    " it to dev@nmap.org along with the following information"
)
NAME_CHARS = string.ascii_uppercase + string.ascii_lowercase + string.digits + "_"
EXTENSION_CHARS = string.ascii_uppercase + string.ascii_lowercase
#: (port.version field, the row's letter)
FIELDS = (("product", "p"), ("version", "v"), ("extrainfo", "i"), ("hostname", "h"),
          ("ostype", "o"), ("devicetype", "d"))  # fmt: skip

_rule = version_port_or_service([69], ["tftp"], ("udp",))


class TftpError(Exception):
    """Where NSE's Lua dies (a message without its terminating NUL)."""


def read_request(path: str) -> bytes:
    return struct.pack(">H", RRQ) + path.encode("latin-1") + b"\x00octet\x00"


def random_path(choice: Callable[[str], str] = random.choice) -> str:
    return (
        "".join(choice(NAME_CHARS) for _ in range(8))
        + "."
        + "".join(choice(EXTENSION_CHARS) for _ in range(3))
    )


@dataclass(frozen=True)
class TftpPacket:
    opcode: int
    errcode: int
    length: int
    rport: int | None
    errmsg: str | None = None
    mode: str | None = None

    def table(self) -> Table:
        out = Table()
        out["opcode"] = lua_str(self.opcode)
        out["errcode"] = lua_str(self.errcode)
        out["length"] = lua_str(self.length)
        if self.rport is not None:
            out["rport"] = lua_str(self.rport)
        out["errmsg"] = self.errmsg
        out["mode"] = self.mode
        return out


def _z(buf: bytes, pos: int) -> tuple[str, int]:
    """``("z"):unpack(buf, pos)`` with a 0-based pos: the string and the position after its NUL."""
    end = buf.find(b"\x00", pos)
    if end < 0:
        raise TftpError("unfinished string for format 'z'")
    return buf[pos:end].decode("latin-1"), end + 1


def parse(buf: bytes, rport: int | None) -> TftpPacket | None:
    """NSE's ``parse``; None: not a TFTP answer. Raises :class:`TftpError` as Lua dies."""
    if len(buf) < 4:
        return None
    opcode, num = struct.unpack_from(">HH", buf)
    if opcode == DATA:
        errmsg = None if len(buf) > 2 + 2 + 512 else buf[4:].decode("latin-1")
        return TftpPacket(opcode, num, len(buf), rport, errmsg)
    if opcode in (ERROR, ACK):
        errmsg, _ = _z(buf, 4)
        return TftpPacket(opcode, num, len(buf), rport, errmsg)
    if opcode in (RRQ, WRQ):
        errmsg, pos = _z(buf, 2)
        mode = None
        if pos + 1 < len(buf):  # Lua: pos < #buf, 1-based
            mode, pos = _z(buf, pos)
        return TftpPacket(opcode, num, len(buf), rport, errmsg, mode)
    return None


def _as_table(value: LuaValue) -> LuaTable | None:
    return value if isinstance(value, LuaTable) else None


def parse_fingerprints(text: str) -> LuaTable | None:
    """The chunk's returned table (``fingerprints``), None when it has none."""
    try:
        found = parse_assignments(text).get("fingerprints")
    except LuaSyntaxError:
        return None
    table = _as_table(found)
    return table if table is not None and table.array else None


@functools.cache
def load_fingerprints() -> LuaTable | None:
    try:
        return parse_fingerprints(FINGERPRINT_FILES.read_text())
    except OSError:
        return None


def match(packet: TftpPacket, fingerprints: LuaTable) -> LuaTable | None:
    """The first row of the packet's opcode that matches: its ``product`` table."""
    rows = _as_table(fingerprints.get(packet.opcode))
    if rows is None:
        raise TftpError("ipairs over nil")  # NSE dies: no row list for the opcode
    for value in rows.ipairs():
        row = _as_table(value)
        if row is None:
            raise TftpError("a fingerprint that is not a table")
        errcode, errmsg, rport = row.get("errcode"), row.get("errmsg"), row.get("rport")
        if errcode != packet.errcode or errmsg != packet.errmsg:
            continue
        if rport is not None and rport is not False and packet.rport != rport:
            continue
        return _as_table(row.get("product"))
    return None


def _text(value: LuaValue) -> str | None:
    if value is None or value is False:
        return None
    if isinstance(value, LuaTable):
        raise TftpError("a table where a string was expected")
    return value if isinstance(value, str) else lua_str(value)


def _row_output(row: LuaTable) -> Table:
    out = Table()
    keys: list[str | int | float | bool] = ["p", "v", "i", "h", "o", "d", "cpe"]
    keys += [k for k in row.fields if k not in keys]
    for key in keys:
        value = row.get(key) if isinstance(key, str | int) else row.fields.get(key)
        if isinstance(value, LuaTable):
            out[str(key)] = Table([_text(v) or "" for v in value.array])
        elif value is not None:
            out[str(key)] = _text(value)
    return out


class TftpVersion(BaseScript):
    name = "tftp-version"

    def __init__(
        self,
        fingerprints: Callable[[], LuaTable | None] = load_fingerprints,
        choice: Callable[[str], str] = random.choice,
    ) -> None:
        self._fingerprints = fingerprints
        self._choice = choice

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | ScriptOutput | None:
        try:
            conn = await run.exchange.connect(timeout=TIMEOUT, any_source_port=True)
        except ExchangeError:
            return None
        try:
            conn.send(read_request(random_path(self._choice)))
            data = await conn.receive(TIMEOUT)
        except ExchangeError:
            return None
        finally:
            conn.close()
        rport: int | None = getattr(conn, "peer_port", None)
        try:
            packet = parse(data, rport)
            if packet is None:
                return None
            run.set_port_state("open")
            fingerprints = self._fingerprints()
            if fingerprints is None:
                return None
            row = match(packet, fingerprints)
            if row is None:
                run.set_version(VersionUpdate())
                return ScriptOutput(table=Table(fields=[(SUBMIT, packet.table())]))
            return self._apply(run, row)
        except TftpError as exc:
            raise ScriptFailed(str(exc)) from None

    def _apply(self, run: ScriptRun, row: LuaTable) -> ScriptOutput | None:
        port = run.port
        emit = False
        changes: dict[str, str | None] = {}
        for key, letter in FIELDS:
            current = getattr(port, key)
            wanted = _text(row.get(letter))
            if current is None:
                changes[key] = wanted
            elif wanted is not None and current != wanted:
                emit = True
        cpe = list(port.cpe)
        extra = _as_table(row.get("cpe"))
        if extra is not None:
            for value in extra.ipairs():
                text = _text(value)
                if text is not None and text not in port.cpe:
                    cpe.append(text)
        run.set_version(
            VersionUpdate(
                product=changes.get("product", KEEP),
                version=changes.get("version", KEEP),
                extrainfo=changes.get("extrainfo", KEEP),
                hostname=changes.get("hostname", KEEP),
                ostype=changes.get("ostype", KEEP),
                devicetype=changes.get("devicetype", KEEP),
                cpe=tuple(cpe),
            )
        )
        return ScriptOutput(table=_row_output(row)) if emit else None
