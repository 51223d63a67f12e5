"""Ventrilo's UDP status encryption, as ventrilo-info decrypts it (Luigi Auriemma's
published reversing of the protocol).

The three 256-byte tables (header key stream, data key stream, CRC) are the
ones in Nmap's installed ``ventrilo-info.nse``: :func:`load_tables` reads the
Lua table literals at run time (they are never copied here). Without the
installed script there are no tables and the script finds nothing.

A datagram is a 20-byte header and a data part. The header's first two bytes
are its key (swapped); the other 18 are shifted down by the table entry of a
running index plus ``(i - 3) % 5``, then swapped by pairs, giving
little-endian 16-bit fields: (unused, command,) request id, total length,
this part's length, packet count, packet number, the data key, the CRC of the
whole data. The data part is shifted the same way with the data table and
``(i - 1) % 72`` (a data key whose low byte is 0 leaves it "undecrypted": NSE
then concatenates the bytes' decimal values, which we reproduce).

Pure code: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

import functools
import re
from dataclasses import dataclass

from vscand.scripts.builtin.game_query import nse_source

__all__ = [
    "PROBE_ID",
    "STATUS_REQUEST",
    "Header",
    "Tables",
    "crc",
    "decode_data",
    "decode_header",
    "load_tables",
    "parse_tables",
]

#: the request id of the script's fixed status request
PROBE_ID = 0x33CF
#: the script's fixed status request (command 2, no password, header 20 and data 16 bytes)
STATUS_REQUEST = bytes.fromhex(
    "49dedfd065c921c4900dbf23a2c88b657d43159b30c2e223d213e329ade863ff17313350"
)
HEADER_SIZE = 20


@dataclass(frozen=True)
class Tables:
    head: tuple[int, ...]
    data: tuple[int, ...]
    crc: tuple[int, ...]


def parse_tables(text: str) -> Tables | None:
    """The ``crypt_head``, ``crypt_data`` and ``crypt_crc`` literals of the script's source."""
    found = []
    for name in ("crypt_head", "crypt_data", "crypt_crc"):
        block = re.search(r"local\s+" + name + r"\s*=\s*\{([^}]*)\}", text)
        if block is None:
            return None
        body = re.sub(r"--[^\n]*", "", block.group(1))
        values = tuple(int(v, 0) for v in re.findall(r"0[xX][0-9a-fA-F]+|\d+", body))
        if len(values) != 256:
            return None
        found.append(values)
    return Tables(*found)


@functools.cache
def load_tables() -> Tables | None:
    source = nse_source("ventrilo-info")
    return parse_tables(source[1]) if source is not None else None


@dataclass(frozen=True)
class Header:
    id: int
    length: int
    total: int
    packet: int
    packets: int
    key: int
    crc: int


def decode_header(datagram: bytes, tables: Tables) -> Header | None:
    """The decrypted header, or None where NSE's Lua dies (under 20 bytes, key byte 0)."""
    if len(datagram) < HEADER_SIZE or datagram[1] == 0:
        return None
    head = list(datagram[:HEADER_SIZE])
    head[0], head[1] = head[1], head[0]
    step, index = head[0], head[1]
    for i in range(2, HEADER_SIZE):
        head[i] = (head[i] - (tables.head[index] + (i - 2) % 5)) & 0xFF
        index = (index + step) & 0xFF
    for i in range(2, HEADER_SIZE, 2):
        head[i], head[i + 1] = head[i + 1], head[i]

    def word(at: int) -> int:
        return head[at] | head[at + 1] << 8

    return Header(
        id=word(6),
        total=word(8),
        length=word(10),
        packets=word(12),
        packet=word(14),
        key=word(16),
        crc=word(18),
    )


def decode_data(datagram: bytes, length: int, key: int, tables: Tables) -> bytes | None:
    """The decrypted data part of ``length`` bytes, or None where NSE's Lua dies
    (fewer bytes than announced)."""
    data = list(datagram[HEADER_SIZE : HEADER_SIZE + length])
    step = key & 0xFF
    if step == 0:
        return "".join(str(b) for b in data).encode()
    if len(data) < length:
        return None
    index = key >> 8
    for i in range(length):
        data[i] = (data[i] - (tables.data[index] + i % 72)) & 0xFF
        index = (index + step) & 0xFF
    return bytes(data)


def crc(data: bytes, tables: Tables) -> int:
    total = 0
    for byte in data:
        total = (tables.crc[total >> 8] ^ byte ^ (total << 8)) & 0xFFFF
    return total
