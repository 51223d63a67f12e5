"""``ventrilo-info``: a Ventrilo server's UDP status answer (encrypted), on its TCP and UDP port.

Rule: port 3784 or service ``ventrilo``, tcp or udp, intensity >= 7, not excluded.

Whichever of the two ports of a number runs first queries the UDP port of
that number; the other waits for it and uses the same answer (NSE's
``host.registry`` under a mutex). The query: the script's fixed status
request (command 2, request id 0x33CF), up to three times, each waiting 2 s
for a datagram; an answer makes the UDP port ``open``. Then datagrams are
read (2 s each) until the announced packets and bytes are complete: each
20-byte header and each data part are decrypted with the algorithm and the
three 256-byte tables of Nmap's installed ``ventrilo-info.nse`` (read at run
time, never copied: :mod:`vscand.scripts.builtin.ventrilo_crypt`); packets of
another request id are skipped; an inconsistent count ends the script with
nothing, and so does a CRC (the script's table) that does not match.

The plain text (``NAME: ...\\n`` lines, ``CHANNEL:``/``CLIENT:`` lines of
``FIELD=value`` pairs) becomes the output table (:func:`parse_status`), and
the version fields: name ``ventrilo``, product ``Ventrilo``, version and
ostype = VERSION and PLATFORM, extra info ``voice port`` (tcp) or ``status
port`` (udp), then ``; name: NAME; uptime: Hh:Mm; auth: none|pw|user/pw``;
hard match. Output: the table and the script's own text (:func:`format_status`).

Where NSE's Lua dies (an answer shorter than 20 bytes, a header key of 0, a
data part shorter than announced, a channel without a name when printing)
the script fails (``ScriptFailed``) with what it set before.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from twisted.internet import defer

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.builtin.ventrilo_crypt import (
    PROBE_ID,
    STATUS_REQUEST,
    Tables,
    crc,
    decode_data,
    decode_header,
    load_tables,
)
from vscand.scripts.builtin.ventrilo_status import auth_str, format_status, parse_status, uptime_str
from vscand.scripts.exchange import ExchangeError
from vscand.scripts.shortport import version_port_or_service

__all__ = ["VentriloInfo", "auth_str", "format_status", "parse_status", "uptime_str"]

#: ``socket:set_timeout(2000)``
TIMEOUT = 2.0
ATTEMPTS = 3
#: a status data part is at most this long (the script's own check)
MAX_PART = 492

_rule = version_port_or_service([3784], ["ventrilo"], ("tcp", "udp"))


@dataclass
class _Shared:
    """One port number's query, shared by its TCP and UDP runs."""

    done: bool = False
    #: the UDP port answered (every run on that UDP port makes it open)
    answered: bool = False
    info: Table | None = None
    waiters: list[defer.Deferred[None]] = field(default_factory=list)

    def finish(self, info: Table | None) -> None:
        self.done, self.info = True, info
        for waiter in self.waiters:
            if not waiter.called:
                waiter.callback(None)


def assemble(parts: dict[int, bytes]) -> bytes:
    """``table.concat(fulldata)``: the parts from number 0 on, up to the first gap."""
    out = []
    number = 0
    while number in parts:
        out.append(parts[number])
        number += 1
    return b"".join(out)


class VentriloInfo(BaseScript):
    name = "ventrilo-info"

    def __init__(self, tables: Tables | None = None) -> None:
        self._tables = tables
        self._shared: dict[tuple[str, int], _Shared] = {}

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def _query(self, run: ScriptRun, tables: Tables) -> Table | None:
        number = run.port.number
        try:
            conn = await run.exchange.connect(port=number, protocol="udp", timeout=TIMEOUT)
        except ExchangeError:
            return None
        try:
            response = None
            for _ in range(ATTEMPTS):
                conn.send(STATUS_REQUEST)
                try:
                    response = await conn.receive(TIMEOUT)
                except ExchangeError:
                    continue
                run.set_state("open", port=(number, "udp"))
                self._shared[(run.port.address, number)].answered = True
                break
            if response is None:
                return None
            parts: dict[int, bytes] = {}
            current = 0
            header_crc: int | None = None
            while True:
                header = decode_header(response, tables)
                if header is None:
                    raise ScriptFailed("the status answer's header cannot be decrypted")
                if header.id == PROBE_ID:
                    current += header.length
                    header_crc = header.crc
                    if (
                        header.packet >= header.packets
                        or header.length > MAX_PART
                        or current > header.total
                    ):
                        return None
                    data = decode_data(response, header.length, header.key, tables)
                    if data is None:
                        raise ScriptFailed("a status data part is shorter than announced")
                    parts[header.packet] = data
                count = len(parts)
                if (
                    count > header.packets
                    or current > header.total
                    or (count == header.packets and current != header.total)
                    or (current == header.total and count != header.packets)
                ):
                    return None
                if count == header.packets and current == header.total:
                    break
                try:
                    response = await conn.receive(TIMEOUT)
                except ExchangeError:
                    return None
        except ExchangeError:
            return None
        finally:
            conn.close()
        text = assemble(parts)
        if header_crc is None or crc(text, tables) != header_crc:
            return None
        return parse_status(text)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        key = (run.port.address, run.port.number)
        shared = self._shared.get(key)
        if shared is None:
            shared = self._shared[key] = _Shared()
            tables = self._tables if self._tables is not None else load_tables()
            info = None
            try:
                if tables is not None:
                    info = await self._query(run, tables)
            finally:
                shared.finish(info)
        elif not shared.done:
            waiter: defer.Deferred[None] = defer.Deferred()
            shared.waiters.append(waiter)
            await waiter
        if shared.answered and run.port.protocol == "udp":
            run.set_state("open")  # NSE: the first run set it, whichever port it ran on
        info = shared.info
        if info is None:
            return None
        extrainfo = (
            ("voice port" if run.port.protocol == "tcp" else "status port")
            + f"; name: {info['name']}; uptime: {uptime_str(str(info['uptime']))}"
            + f"; auth: {auth_str(str(info['auth']))}"
        )
        run.set_version(
            VersionUpdate(
                name="ventrilo",
                product="Ventrilo",
                version=str(info["version"]),
                ostype=str(info["platform"]),
                extrainfo=extrainfo,
            )
        )
        return ScriptOutput(table=info, text=format_status(info))
