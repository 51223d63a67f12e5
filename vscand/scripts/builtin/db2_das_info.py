"""``db2-das-info``: the server profile an IBM DB2 Administration Server exports.

Rule: port 523, tcp or udp (open or open|filtered, not excluded, intensity >= 7).

Action (one connection, 10 s per read, over the port's protocol): four DAS
transactions (requests of magic 2, 5, 10, then two of magic 6) with NSE's bytes;
after each of the first three, and after the last pair, one DAS packet is read:
at least its 41-byte header (``\\0\\0\\0\\0DB2DAS``, the data length at byte 38,
little-endian when byte 23 says ``9z``), then until the data is all there.
From the last packet's data: the release at byte 97 (zero-terminated), the
profile's length at byte 158 (big-endian), the profile from byte 160 (NSE's
slice, one byte short of its own length), shown from its 37th byte on.

A read or send that fails ends the script quietly (NSE's ``try``). Where NSE's
Lua dies (the last packet is no DAS packet or shorter than NSE's offsets, no
terminator after the release, a header cut short) we raise ScriptFailed.

Version fields (only with a profile; hard match) and state ``open``: name
``ibm-db2``, product ``IBM DB2 Database Server``, version ``M.mm.f`` from an
``SQLMMmmf...`` release when it has more dots than the current one. Output:
``DB2 Administration Server Settings\\r\\n`` and the profile; ``false`` when the
profile is too short (no update then).
"""

from __future__ import annotations

import struct
from dataclasses import dataclass

from vscand.output.script_output import ScriptFailed
from vscand.scripts.api import KEEP, BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import Connection, ExchangeClosed, ExchangeError, ExchangeTimeout
from vscand.scripts.shortport import version_port_or_service

__all__ = ["DasPacket", "DasResponse", "Db2DasInfo", "das_packet", "parse_das", "server_version"]

SOCKET_TIMEOUT = 10.0
HEADER_LEN = 41
DAS_MAGIC = b"\x00\x00\x00\x00DB2DAS"
_HEADER_HEAD = (
    DAS_MAGIC
    + b"      \x01\x04\x00\x00\x00\x10\x39\x7a\x00\x05\x00\x00\x00\x00\x00\x00\x00\x00\x00\x00"
)

#: the requests' data, in NSE's order: (magic, data)
_NO_LIMIT = b"\x00\x00\x00\x10\x00\x00\x00\x0c\x00\x00\x00\x4c\xff\xff\xff\xff"
_EXPORT_TAG = b"\x00\x00\x00\x20\x00\x00\x00\x0c\x00\x00\x00\x04\x00\x00\x04\xb8"
REQUESTS: tuple[tuple[int, bytes], ...] = (
    (0x02, b"\x00\x00\x00\x0d\x00\x00\x00\x0c\x00\x00\x00\x4a\x00"),
    (
        0x05,
        bytes.fromhex(
            "0000002c0000000c0000000859e71f4b79f0907285e08f3e384538e3e512c43be97de2f5f078cc816f875f91"
        ),
    ),
    (
        0x0A,
        b"\x00\x00\x00\x0d\x00\x00\x00\x0c\x00\x00\x00\x4a\x01\x00\x00\x00\x10\x00\x00\x00"
        b"\x0c\x00\x00\x00\x4c\xff\xff\xff\xff"
        + _EXPORT_TAG
        + b"db2dasKnownDscv\x00"
        + _EXPORT_TAG
        + b"db2KnownDscvSrv\x00",
    ),
    (
        0x06,
        b"\x00\x00\x00\x0d\x00\x00\x00\x0c\x00\x00\x00\x4a\x01\x00\x00\x00\x20\x00\x00\x00"
        b"\x0c\x00\x00\x00\x08\x00\x00\x00\x00\x00\x00\x03\x48\x00\x00\x00\x00\x4a\xfb\x42"
        b"\x90\x00\x00\x24\x93"
        + _NO_LIMIT * 2
        + _EXPORT_TAG
        + b"db2KnownDscvSrv\x00"
        + _EXPORT_TAG
        + b"db2dasKnownDscv\x00"
        b"\x00\x00\x00\x0c\x00\x00\x00\x0c\x00\x00\x00\x04"
        + _NO_LIMIT * 2
        + b"\x00\x00\x00\x11\x00\x00\x00\x0c\x00\x00\x00\x04\x00\x00\x04\xb8\x00",
    ),
    (
        0x06,
        _EXPORT_TAG + b"db2dasKnownDscv\x00" + _EXPORT_TAG + b"db2KnownDscvSrv\x00"
        b"\x00\x00\x00\x10\x00\x00\x00\x0c\x00\x00\x00\x4c\x00\x00\x00\x00"
        b"\x00\x00\x00\x10\x00\x00\x00\x0c\x00\x00\x00\x4c\x00\x00\x00\x01"
        b"\x00\x00\x00\x10\x00\x00\x00\x0c\x00\x00\x00\x4c\x00\x00\x00\x00"
        b"\x00\x00\x00\x0c\x00\x00\x00\x0c\x00\x00\x00\x08"
        b"\x00\x00\x00\x10\x00\x00\x00\x0c\x00\x00\x00\x4c\x00\x00\x00\x01"
        b"\x00\x00\x00\x18\x00\x00\x00\x0c\x00\x00\x00\x08\x00\x00\x00\x0c"
        b"\x00\x00\x00\x0c\x00\x00\x00\x18",
    ),
)
#: after which requests a packet is read (the fourth is answered with the fifth)
_READ_AFTER = (True, True, True, False, True)

_rule = version_port_or_service([523], [], ("tcp", "udp"))


def das_packet(magic: int, data: bytes) -> bytes:
    """NSE's ``create_das_packet``: the 41-byte header (magic, 16-bit length) and the data."""
    return _HEADER_HEAD + struct.pack("<BH", magic, len(data) & 0xFFFF) + b"\x00\x00" + data


@dataclass(frozen=True)
class DasPacket:
    data_len: int
    data: bytes


@dataclass(frozen=True)
class DasResponse:
    release: str
    info: str


class _TryFailed(Exception):
    """NSE's ``try`` gave up: the script ends without output."""


async def _receive_bytes(conn: Connection, count: int) -> bytes:
    """nsock's read of at least ``count`` bytes: what arrived when the peer stops or
    the read times out counts too; nothing at all fails."""
    data = b""
    while len(data) < count:
        try:
            data += await conn.receive(SOCKET_TIMEOUT)
        except (ExchangeTimeout, ExchangeClosed):
            if data:
                return data
            raise _TryFailed from None
    return data


async def read_das_packet(conn: Connection) -> DasPacket | None:
    buf = await _receive_bytes(conn, HEADER_LEN)
    header = buf[:HEADER_LEN]
    if header[:10] != DAS_MAGIC:
        return None
    if len(header) < HEADER_LEN:
        raise ScriptFailed("DAS header cut short")
    fmt = "<I" if header[22:24] == b"9z" else ">I"
    data_len = int(struct.unpack_from(fmt, header, 37)[0])
    while HEADER_LEN + data_len > len(buf):
        buf += await _receive_bytes(conn, HEADER_LEN + data_len - len(buf))
    return DasPacket(data_len, buf[HEADER_LEN:])


def parse_das(packet: DasPacket | None) -> DasResponse:
    """NSE's ``parse_db2_packet`` on the last packet; ScriptFailed where its Lua dies."""
    if packet is None or packet.data_len < 158 or len(packet.data) < 159:
        raise ScriptFailed("no DB2 DAS response to parse")
    (length,) = struct.unpack_from(">H", packet.data, 157)
    end = packet.data.find(b"\x00", 96)
    if end < 0:
        raise ScriptFailed("unfinished string for format 'z'")
    release = packet.data[96:end].decode("latin-1")
    return DasResponse(release, packet.data[159 : length + 154].decode("latin-1"))


def server_version(release: str) -> str | None:
    """``SQLMMmmf...`` -> ``M.mm.f...`` (a leading 0 of MM dropped), else None."""
    if release[:3] != "SQL":
        return None
    major = release[3:5]
    if major[:1] == "0":
        major = major[1:]
    return f"{major}.{release[5:7]}.{release[7:]}"


class Db2DasInfo(BaseScript):
    name = "db2-das-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        try:
            conn = await run.exchange.connect(
                protocol="udp" if run.port.protocol == "udp" else "tcp", timeout=SOCKET_TIMEOUT
            )
        except ExchangeError:
            return None
        try:
            packet = None
            for (magic, data), read in zip(REQUESTS, _READ_AFTER, strict=True):
                conn.send(das_packet(magic, data))
                if read:
                    packet = await read_das_packet(conn)
        except (_TryFailed, ExchangeError):
            return None
        finally:
            conn.close()
        response = parse_das(packet)
        new = server_version(response.release)
        current = (run.port.version or "").count(".")
        version = new if new is not None and current < new.count(".") else None
        profile = response.info[36:] if len(response.info) >= 37 else None
        if profile is None:
            return "false"
        run.set_version(
            VersionUpdate(
                name="ibm-db2",
                product="IBM DB2 Database Server",
                version=version if version is not None else KEEP,
            )
        )
        run.set_state("open")
        return "DB2 Administration Server Settings\r\n" + profile
