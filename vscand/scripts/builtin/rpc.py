"""The RPC grinder (SPEC §7.2): ``rpcinfo`` and ``rpc-grind``.

``rpcinfo`` (port 111, tcp/udp, intensity >= 7) asks the portmapper for its
registrations (DUMP, rpcbind v4 then v3 then portmapper v2) and rewrites every
registered port of the host that the scan found open or open|filtered: name
from ``nmap-rpc``, version ``low-high`` of the registered versions, extra info
``RPC #<program>``, soft match. Its guard is NSE's: the target port has no
name, or a name from the table, or port 111 itself is named ``rpcbind``.
Output: a table program -> transport -> ``port``, ``addr``, ``owner``,
``version`` (NSE's are plain Lua tables, printed in hash order, a different
order on every Nmap run; ours follow the DUMP), and the string
``stdnse.format_output`` makes of the sorted ``program version port/proto
service`` lines (nothing found: no string, an empty table).
``rpc-grind`` prints nothing (NSE returns nil).

``rpc-grind`` (intensity >= 7, not excluded; ports without a name, named from
the table, or named ``rpcbind``; runs after rpcinfo) confirms the port speaks
RPC (a NULL call to program 100000 v2, unless already ``rpcbind``), then 4
workers each send NULL calls with a bogus version for every program of
``nmap-rpc`` in file order until one gets PROG_MISMATCH: the program is found
and the reply's last 8 bytes are its low and high versions. Hard match. Any
answer to the confirmation call makes the port ``open`` (NSE's
``set_port_state``: a UDP port left ``open|filtered`` by the scan that answers
it).
Over TCP every call is one record; replies are reassembled from fragments
(at most 1 MiB, 400 fragments); over UDP calls and replies are bare
datagrams.
"""

from __future__ import annotations

import random
import re
import struct
from collections.abc import Iterator
from dataclasses import dataclass

from twisted.internet import defer

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table, lua_str
from vscand.rpc.messages import (
    ACCEPT_PROG_MISMATCH,
    ACCEPT_PROG_UNAVAIL,
    ACCEPT_SUCCESS,
    MSG_ACCEPTED,
    PMAP_PROGRAM,
    RecordReader,
    RpcError,
    build_call,
    dump_call,
    mismatch_versions,
    parse_dump,
    parse_reply,
    record,
)
from vscand.rpc.programs import RpcPrograms
from vscand.scripts.api import (
    BaseScript,
    PortView,
    RpcInfo,
    RuleContext,
    ScriptRun,
    VersionUpdate,
)
from vscand.scripts.exchange import Connection, ExchangeError
from vscand.scripts.nsefmt import format_output

__all__ = ["RPC_TIMEOUT", "RpcGrind", "RpcInfoScript", "rpc_exchange"]

#: NSE's rpc socket timeout on a loopback target (stdnse.get_timeout(host, 10000)
#: is ~1 s there); doubled so a loaded machine does not miss replies
RPC_TIMEOUT = 2.0
#: receives per reply: with the per-port script budget, bounds a peer that drips bytes
MAX_READS = 1000


async def rpc_exchange(conn: Connection, protocol: str, message: bytes, timeout: float) -> bytes:
    """Send one call and return the reply message (record marking over TCP).

    Raises ExchangeError (no answer, closed) or RpcError (a reply we refuse to
    read: too large, too many fragments).
    """
    if protocol == "udp":
        conn.send(message)
        return await conn.receive(timeout)
    conn.send(record(message))
    reader = RecordReader()
    for _ in range(MAX_READS):
        reply = reader.feed(await conn.receive(timeout))
        if reply is not None:
            return reply
    raise RpcError(f"no complete record after {MAX_READS} reads")


def _version_text(low: int, high: int) -> str:
    return f"{low}-{high}" if low != high else str(low)


class RpcInfoScript(BaseScript):
    name = "rpcinfo"
    updates_other_ports = True

    def __init__(self, programs: RpcPrograms, *, timeout: float = RPC_TIMEOUT) -> None:
        self._programs = programs
        self._timeout = timeout

    def may_apply(self, number: int, protocol: str) -> bool:
        return number == 111 and protocol in ("tcp", "udp")

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return (
            ctx.intensity >= 7
            and port.number == 111
            and port.protocol in ("tcp", "udp")
            and port.state in ("open", "open|filtered")
        )

    async def _dump(self, run: ScriptRun) -> dict[int, dict[str, _Registered]] | None:
        proto = run.port.protocol
        for pversion in (4, 3, 2):
            try:
                conn = await run.exchange.connect()
            except ExchangeError:
                return None
            try:
                xid = random.randint(1, 1234567890)
                reply = await rpc_exchange(conn, proto, dump_call(xid, pversion), self._timeout)
                header = parse_reply(reply)
                if (
                    header.msg_type != 1
                    or header.reply_state != MSG_ACCEPTED
                    or header.accept_state != ACCEPT_SUCCESS
                ):
                    continue
                entries = parse_dump(reply, header.body, pversion)
            except (ExchangeError, RpcError):
                continue
            finally:
                conn.close()
            table: dict[int, dict[str, _Registered]] = {}
            for entry in entries:
                by_proto = table.setdefault(entry.program, {})
                old = by_proto.get(entry.protocol)
                versions = sorted([*(old.versions if old else []), entry.version])
                address = entry.address
                if (
                    pversion > 2
                    and entry.port is None
                    and re.fullmatch(r"[tu][cd]p6?", entry.protocol)
                ):
                    address = None  # NSE: the universal address did not parse
                by_proto[entry.protocol] = _Registered(entry.port, address, entry.owner, versions)
            return table
        return None

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        table = await self._dump(run)
        if table is None:
            return None  # stdnse.format_output(false, ...): nil without -d
        lines: list[str] = []
        xmlout = Table()
        rpcbind_here = run.port.name == "rpcbind"
        for program, by_proto in table.items():
            name = self._programs.name(program)
            xmlout[str(program)] = _registrations(by_proto)
            for proto, registered in by_proto.items():
                number, versions = registered.port, registered.versions
                target = None
                if proto in ("tcp", "udp") and number is not None:
                    target = run.host.port(number, proto)
                if (
                    target is not None
                    and target.state in ("open", "open|filtered")
                    and (target.name is None or target.method == "table" or rpcbind_here)
                ):
                    run.set_version(
                        VersionUpdate(
                            name=name,
                            extrainfo=f"RPC #{program}",
                            version=_version_text(versions[0], versions[-1]),
                            rpc=RpcInfo(program, name, versions[0], versions[-1]),
                        ),
                        "softmatched",
                        port=target.key,
                    )
                if number is not None:
                    shown = ",".join(str(v) for v in versions)
                    label = name or ""
                    lines.append(f"{program:<7d} {shown:<10s} {number:5d}/{proto:<4s}  {label}")
        lines.sort()
        if lines:
            lines.insert(0, "program version    port/proto  service")
        return ScriptOutput(table=xmlout, text=format_output(lines))


@dataclass
class _Registered:
    """One program's registration on one transport, as NSE's DUMP table keeps it."""

    port: int | None
    address: str | None
    owner: str | None
    versions: list[int]


def _registrations(by_proto: dict[str, _Registered]) -> Table:
    out = Table()
    for proto, registered in by_proto.items():
        entry = Table()
        entry["port"] = lua_str(registered.port) if registered.port is not None else None
        entry["addr"] = registered.address
        entry["owner"] = registered.owner
        entry["version"] = Table([lua_str(v) for v in registered.versions])
        if proto.isdigit():
            if proto == "1":
                out.append(entry)  # a v2 protocol number: Lua's integer key 1
            continue  # other integer keys are not printed (ipairs stops)
        out[proto] = entry
    return out


@dataclass
class _Found:
    name: str
    number: int
    low: int
    high: int


class RpcGrind(BaseScript):
    name = "rpc-grind"
    dependencies: tuple[str, ...] = ("rpcinfo",)

    def __init__(
        self, programs: RpcPrograms, *, threads: int = 4, timeout: float = RPC_TIMEOUT
    ) -> None:
        self._programs = programs
        self._threads = max(1, threads)
        self._timeout = timeout

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        if ctx.is_excluded(port.number, port.protocol):
            return False
        if port.name is not None and port.method != "table" and port.name != "rpcbind":
            return False
        return ctx.intensity >= 7

    async def _is_rpc(self, run: ScriptRun) -> bool:
        if run.port.name == "rpcbind":
            return True
        try:
            conn = await run.exchange.connect()
        except ExchangeError:
            return False
        try:
            xid = random.randint(1, 1234567890)
            message = build_call(xid, PMAP_PROGRAM, 2)
            reply = await rpc_exchange(conn, run.port.protocol, message, self._timeout)
        except (ExchangeError, RpcError):
            return False
        finally:
            conn.close()
        # NSE: any answer makes the port open (an open|filtered UDP port that
        # ignored every probe but answers this call), RPC or not
        run.set_state("open")
        if len(reply) < 8:
            # NSE's unpack fails: a Lua error, the state stays set
            raise ScriptFailed("reply shorter than 8 bytes")
        reply_xid, msg_type = struct.unpack_from(">II", reply)
        return bool(reply_xid == xid and msg_type == 1)

    async def _worker(
        self, run: ScriptRun, programs: Iterator[tuple[str, int]], found: list[_Found]
    ) -> None:
        xid = random.randint(1, 123456789)
        version = random.randint(12345, 123456789)
        try:
            conn = await run.exchange.connect()
        except ExchangeError:
            return
        try:
            for name, number in programs:
                if found:
                    return
                xid = (xid + 1) & 0xFFFFFFFF
                message = build_call(xid, number, version)
                try:
                    reply = await rpc_exchange(conn, run.port.protocol, message, self._timeout)
                    header = parse_reply(reply)
                except (ExchangeError, RpcError):
                    return  # NSE: the worker stops on any socket error
                if header.accept_state == ACCEPT_PROG_MISMATCH:
                    low, high = mismatch_versions(reply)
                    found.append(_Found(name, number, low, high))
                elif header.accept_state != ACCEPT_PROG_UNAVAIL:
                    continue  # logged and ignored by NSE
        finally:
            conn.close()

    async def action(self, run: ScriptRun) -> str | None:
        if not await self._is_rpc(run):
            return None
        programs = iter(self._programs.in_file_order())
        found: list[_Found] = []
        workers = [
            defer.Deferred.fromCoroutine(self._worker(run, programs, found))
            for _ in range(self._threads)
        ]
        await defer.gatherResults(workers, consumeErrors=True)
        if not found:
            return None
        hit = found[0]
        run.set_version(
            VersionUpdate(
                name=hit.name,
                extrainfo=f"RPC #{hit.number}",
                version=_version_text(hit.low, hit.high),
                rpc=RpcInfo(hit.number, hit.name, hit.low, hit.high),
            ),
            "hardmatched",
        )
        return None
