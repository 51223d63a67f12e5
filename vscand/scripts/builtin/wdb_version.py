"""``wdb-version``: a VxWorks WDB (Wind DeBug) agent, over ONC RPC on UDP.

Runs on port 17185 or service ``wdbrpc`` (udp, intensity >= 7, not excluded).
Sends WDB_TARGET_CONNECT as NSE builds it: an RPC CALL (random xid, program
``wdb`` looked up in ``nmap-rpc`` (0x55555555), version 1, procedure 1,
AUTH_NULL), then ``ffff`` + a 16-bit one's-complement checksum, a wrapper
(length 60, sequence number 1) and three 32-bit words (2, 0, 0). It reads one
datagram (timeout ``stdnse.get_timeout(host, 10000)``: 2.29 s for a host
timeout of 1 s); any answer makes the port ``open``.

The answer is read as NSE's ``rpc.Comm:DecodeHeader`` and the script's
``decode_reply`` read it, their off-by-one checks and the header decoder's
extra reads (for a header shorter than 20 bytes, or a verifier longer than
8, it reads more datagrams into its own copy) included; where Lua's
``string.unpack`` would fail on a short answer, the script dies
(:class:`ScriptFailed`, after the port was made open). A WDB error (bits
0xc0000000) or an undecodable header ends it silently.

Version fields (hard match): name ``wdb``, product ``Wind DeBug Agent``,
version = the agent version without trailing NULs; ostype ``VxWorks <rt
version>`` only when the port already had an OS type (NSE's test). Then
WDB_TARGET_DISCONNECT (sequence number 2) is sent, nothing read. Output: the
"VULNERABLE" line, then ``Agent version``, ``VxWorks version``, ``Board
Support Package``, ``Boot line`` (those present). NSE binds a reserved
source port when privileged; we use an ephemeral one.
"""

from __future__ import annotations

import functools
import random
import struct
from collections.abc import Callable
from dataclasses import dataclass, field

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table
from vscand.rpc.programs import load_rpc_programs
from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import Connection, ExchangeError
from vscand.scripts.shortport import version_port_or_service

__all__ = ["WdbError", "WdbInfo", "WdbVersion", "checksum", "decode_header", "decode_reply",
           "request"]  # fmt: skip

#: ``stdnse.get_timeout(host, 10000)`` for a host timeout of 1 s: 1 * (10000 + 6000) / 7 ms
TIMEOUT = 16.0 / 7
TARGET_CONNECT, TARGET_DISCONNECT = 1, 2
CONNECT_ARGS = struct.pack(">III", 2, 0, 0)
VULNERABLE = (
    "VULNERABLE: Wind River Systems VxWorks debug service enabled. "
    "See http://www.kb.cert.org/vuls/id/362332"
)
MSG_DENIED = 1
HEADER_LEN = 20
#: the most datagrams the header decoder reads beyond the first (bounded by time anyway)
MAX_EXTRA_DATAGRAMS = 1000

_rule = version_port_or_service([17185], ["wdbrpc"], ("udp",))


class WdbError(Exception):
    """Where NSE's Lua dies: ``string.unpack`` past the end of the answer."""


@functools.cache
def wdb_program() -> int | None:
    """The number ``nmap-rpc`` gives the name ``wdb`` (NSE's ``ProgNameToNumber``)."""
    try:
        programs = load_rpc_programs()
    except OSError:
        return None
    found = [number for name, number in programs.in_file_order() if name == "wdb"]
    return found[-1] if found else None


def checksum(data: bytes) -> int:
    """The script's checksum: 16-bit words from byte 4 on, folded once, complemented."""
    total = 0
    pos = 4
    while pos + 1 < len(data):  # Lua: while p < #data (1-based p)
        total += (data[pos] << 8) | data[pos + 1]
        pos += 2
    total = (total & 0xFFFF) + (total >> 16)
    return ~total & 0xFFFF


def request(program: int, procedure: int, xid: int, sequence: int, body: bytes) -> bytes:
    """One WDB request datagram (RPC CALL header, checksum word, wrapper, body)."""
    packet = struct.pack(">10I", xid, 0, 2, program, 1, procedure, 0, 0, 0, 0)
    wrapper = struct.pack(">II", len(body) + len(packet) + 8, sequence)
    total = checksum(packet + b"\x00\x00\x00\x00" + wrapper + body)
    return packet + struct.pack(">HH", 0xFFFF, total) + wrapper + body


class _Lua:
    """``string.unpack`` over ``data`` at a 0-based position: past the end is a Lua error."""

    def __init__(self, data: bytes, pos: int) -> None:
        self.data = data
        self.pos = pos

    def u32(self) -> int:
        if self.pos < 0 or self.pos + 4 > len(self.data):
            raise WdbError("data string too short")
        value = int.from_bytes(self.data[self.pos : self.pos + 4], "big")
        self.pos += 4
        return value

    def take(self, length: int) -> bytes:
        """``string.unpack("c" .. length)``"""
        if self.pos < 0 or self.pos + length > len(self.data):
            raise WdbError("data string too short")
        value = self.data[self.pos : self.pos + length]
        self.pos += length
        return value

    def opaque(self, length: int) -> bytes:
        """``rpc.Util.unmarshall_vopaque``: the bytes, then the padding skipped unchecked."""
        value = self.take(length)
        self.pos += (4 - length % 4) % 4
        return value

    @property
    def at_done(self) -> bool:
        """NSE's ``pos == done`` (1-based pos, done = #data): one byte left."""
        return self.pos + 1 == len(self.data)


@dataclass
class WdbInfo:
    error: int = 0
    agent_ver: bytes | None = None
    rt_vers: bytes | None = None
    bsp_name: bytes | None = None
    bootline: bytes | None = None
    numbers: dict[str, int] = field(default_factory=dict)


def decode_reply(data: bytes, pos: int) -> WdbInfo:
    """The script's ``decode_reply`` from 0-based ``pos``; ``error`` set means a WDB error."""
    lua = _Lua(data, pos)
    info = WdbInfo()
    lua.u32()
    lua.u32()
    info.error = lua.u32() & 0xC0000000
    if info.error:
        return info
    length = lua.u32()
    if length:
        info.agent_ver = lua.opaque(length)
    for key in ("agent_mtu", "agent_mod", "rt_type"):
        info.numbers[key] = lua.u32()
    length = lua.u32()
    if lua.at_done:
        return info
    if length:
        info.rt_vers = lua.opaque(length)
    for key in ("rt_cpu_type", "rt_has_fpp", "rt_has_wp", "rt_page_size", "rt_endian"):
        info.numbers[key] = lua.u32()
    length = lua.u32()
    if length:
        info.bsp_name = lua.opaque(length)
    length = lua.u32()
    if length:
        info.bootline = lua.opaque(length)
    for key in ("rt_membase", "rt_memsize", "rt_region_count"):
        if lua.at_done:
            return info
        info.numbers[key] = lua.u32()
    if lua.at_done:
        return info
    for _ in range(lua.u32()):  # bounded: each read consumes 4 bytes or fails
        lua.u32()
    if lua.at_done:
        return info
    length = lua.u32()
    if length:
        lua.opaque(length)
    if lua.at_done:
        return info
    length = lua.u32()
    if length:
        lua.opaque(length)
    return info


async def _more(conn: Connection, data: bytes, pos: int, needed: int) -> bytes | None:
    """``Comm:GetAdditionalBytes``: datagrams appended until ``needed`` bytes from
    0-based ``pos`` are there; None when a read fails (NSE then gives up)."""
    missing = needed - (len(data) - pos)
    reads = 0
    while missing > 0:
        if reads >= MAX_EXTRA_DATAGRAMS:
            return None
        try:
            chunk = await conn.receive(TIMEOUT)
        except ExchangeError:
            return None
        reads += 1
        missing -= len(chunk)
        data += chunk
    return data


async def decode_header(conn: Connection, data: bytes) -> int | None:
    """``Comm:DecodeHeader(data, 1)`` over its own copy of ``data`` (which may grow):
    the 0-based position after the header, or None (the extra reads failed)."""
    if len(data) < HEADER_LEN:
        more = await _more(conn, data, 0, HEADER_LEN - (len(data) - 1))
        if more is None:
            return None
        data = data + more  # NSE appends the grown copy to itself
    lua = _Lua(data, 0)
    lua.u32()
    lua.u32()
    state = lua.u32()
    if state == MSG_DENIED:
        lua.u32()
        return lua.pos
    lua.u32()
    verifier = lua.u32()
    if verifier - 8 > 0:
        grown = await _more(conn, data, lua.pos, verifier - 8)
        if grown is None:
            return None
        lua.data = grown
        lua.take(verifier - 8)
    lua.u32()
    return lua.pos


def _stripnull(raw: bytes) -> str:
    return raw.rstrip(b"\x00").decode("latin-1")


class WdbVersion(BaseScript):
    name = "wdb-version"

    def __init__(
        self,
        program: Callable[[], int | None] = wdb_program,
        xid: Callable[[], int] = lambda: random.randint(1, 1234567890),
    ) -> None:
        self._program = program
        self._xid = xid

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        program = self._program()
        if program is None:
            raise ScriptFailed("no program named wdb in nmap-rpc")
        try:
            conn = await run.exchange.connect(timeout=TIMEOUT)
        except ExchangeError:
            return None
        try:
            return await self._talk(run, conn, program)
        finally:
            conn.close()

    async def _talk(self, run: ScriptRun, conn: Connection, program: int) -> ScriptOutput | None:
        try:
            conn.send(request(program, TARGET_CONNECT, self._xid(), 1, CONNECT_ARGS))
            data = await conn.receive(TIMEOUT)
        except ExchangeError:
            return None
        run.set_port_state("open")
        try:
            pos = await decode_header(conn, data)
            if pos is None or pos + 1 == len(data):
                return None
            info = decode_reply(data, pos)
            if info.error:
                return None
            if info.agent_ver is None:
                raise WdbError("stripnull(nil)")
            ostype: str | None = KEEP  # type: ignore[assignment]
            if run.port.ostype is not None:
                if info.rt_vers is None:
                    raise WdbError("stripnull(nil)")
                ostype = "VxWorks " + _stripnull(info.rt_vers)
        except WdbError as exc:
            raise ScriptFailed(str(exc)) from None
        agent = _stripnull(info.agent_ver)
        run.set_version(
            VersionUpdate(name="wdb", product="Wind DeBug Agent", version=agent, ostype=ostype)
        )
        try:
            conn.send(request(program, TARGET_DISCONNECT, self._xid(), 2, CONNECT_ARGS))
        except ExchangeError:
            return None
        out = Table([VULNERABLE])
        out["Agent version"] = agent
        if info.rt_vers is not None:
            out["VxWorks version"] = _stripnull(info.rt_vers)
        if info.bsp_name is not None:
            out["Board Support Package"] = _stripnull(info.bsp_name)
        if info.bootline is not None:
            out["Boot line"] = _stripnull(info.bootline)
        return ScriptOutput(table=out)
