"""``murmur-version``: a Murmur (Mumble server) answering Mumble's UDP ping.

Runs on port 64738 or service ``murmur`` (tcp or udp, intensity >= 7, not
excluded). Whichever protocol the port is, the ping goes to the *UDP* port of
that number: 12 bytes, four zero bytes and the 8-byte ident ``abcdefgh``
(``comm.exchange`` over UDP, 3 s connect and 3 + 3 s read). One ping per port
number and scan: the TCP and UDP runs of the same number share its answer
(NSE's ``host.registry`` under a mutex; a scan's script instances are its
own, so the registry lives on the instance).

An answer makes the UDP port ``open`` (when it is a port of the scan). A
24-byte answer with a zero first byte and the ident echoed at bytes 4-11 is
Murmur: bytes 1-3 are the version, then three big-endian 32-bit numbers
(users, maximum users, bandwidth). Version fields (hard match): name
``murmur``, product ``Murmur``, version ``a.b.c``, extra info ``control port;
users: N; max. users: M; bandwidth: B b/s`` (``voice port`` on UDP). No
output.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from twisted.internet import defer

from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import ExchangeError
from vscand.scripts.shortport import version_port_or_service

__all__ = ["PING", "MurmurInfo", "MurmurVersion", "parse_pong"]

PING = b"\x00\x00\x00\x00abcdefgh"
#: ``comm.exchange(..., {timeout = 3000})``: connect 3 s, read 3 s + 3 s
CONNECT_TIMEOUT = 3.0
READ_TIMEOUT = 6.0

_rule = version_port_or_service([64738], ["murmur"], ("tcp", "udp"))


@dataclass(frozen=True)
class MurmurInfo:
    version: tuple[int, int, int]
    users: int
    max_users: int
    bandwidth: int

    def extrainfo(self, protocol: str) -> str:
        kind = "control port" if protocol == "tcp" else "voice port"
        return (
            f"{kind}; users: {self.users}; max. users: {self.max_users}; "
            f"bandwidth: {self.bandwidth} b/s"
        )


def parse_pong(data: bytes) -> MurmurInfo | None:
    """The ping's answer, as Nmap's Lua pattern and unpack read it (None: not Murmur)."""
    if len(data) != 24 or data[0] != 0 or data[4:12] != PING[4:]:
        return None
    major, minor, patch = data[1], data[2], data[3]
    users, max_users, bandwidth = struct.unpack_from(">III", data, 12)
    return MurmurInfo((major, minor, patch), users, max_users, bandwidth)


#: what the registry keeps for a port number: the answer (None: nothing or not Murmur)
_Entry = MurmurInfo | None


class MurmurVersion(BaseScript):
    name = "murmur-version"

    def __init__(self) -> None:
        self._registry: dict[tuple[str, int], _Entry] = {}
        self._locks: dict[tuple[str, int], defer.DeferredLock] = {}

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def _ping(self, run: ScriptRun) -> tuple[bool, _Entry]:
        """(answered, info): one UDP ping to the port's number."""
        try:
            conn = await run.exchange.connect(protocol="udp", timeout=CONNECT_TIMEOUT)
        except ExchangeError:
            return False, None
        try:
            conn.send(PING)
            data = await conn.receive(READ_TIMEOUT)
        except ExchangeError:
            return False, None
        finally:
            conn.close()
        return True, parse_pong(data)

    async def action(self, run: ScriptRun) -> str | None:
        port = run.port
        key = (port.address, port.number)
        lock = self._locks.setdefault(key, defer.DeferredLock())
        await lock.acquire()
        try:
            if key not in self._registry:
                self._registry[key] = None
                answered, info = await self._ping(run)
                if not answered:
                    return None
                run.set_state("open", port=(port.number, "udp"))
                self._registry[key] = info
            info = self._registry[key]
        finally:
            lock.release()
        if info is None:
            return None
        run.set_version(
            VersionUpdate(
                name="murmur",
                product="Murmur",
                version=".".join(str(n) for n in info.version),
                extrainfo=info.extrainfo(port.protocol),
            )
        )
        return None
