"""``amqp-info``: the server properties of an AMQP broker's Connection.Start.

Runs on port 5672 or service ``amqp`` (tcp, open, intensity >= 7, not
excluded). Sends the protocol header ``AMQP\\0\\0\\x09\\x01`` (0-9-1) and reads
the Connection.Start frame as Nmap's ``amqp`` library does: an 11-byte frame
header (type 1, method 0x000A000A), the protocol version (``0-8`` for 8.0,
``0-9`` for 0.9; anything else fails), the server-properties table, then the
mechanisms and locales strings. The table decoder knows only ``F`` (table),
``S`` (long string) and ``t`` (boolean) values, and like Nmap's it does not
skip the value of any other type (the next key is then read from inside that
value). Hard match: name ``amqp``, product = the last ``product`` string,
version = the last ``version`` string (either cleared when absent), extra
info = the protocol version.

:func:`parse_connection_start` is pure; it raises :class:`NeedMore` while the
bytes so far end inside the frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field

from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import ExchangeError
from vscand.scripts.shortport import version_port_or_service
from vscand.scripts.streams import NSE_SOCKET_TIMEOUT

__all__ = [
    "CLIENT_HEADER",
    "AmqpError",
    "AmqpInfo",
    "AmqpStart",
    "NeedMore",
    "parse_connection_start",
]

#: "AMQP" + 0-9-1 (the library's default ``amqp.version``)
CLIENT_HEADER = b"AMQP\x00\x00\x09\x01"
#: Connection.Start's version-major/minor as one big-endian 16-bit number
PROTOCOL_VERSIONS = {0x0800: "0-8", 0x0009: "0-9"}

_rule = version_port_or_service([5672], ["amqp"], ("tcp",), ("open",))


class NeedMore(Exception):
    """The bytes so far end inside the Connection.Start frame."""


class AmqpError(Exception):
    """Not a Connection.Start Nmap accepts."""


@dataclass
class AmqpStart:
    protocol: str
    product: str | None = None
    version: str | None = None
    #: "key: value" lines in Nmap's order (nested tables indented)
    properties: list[str] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int) -> bytes:
        if self.pos + count > len(self.data):
            raise NeedMore
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def uint(self, size: int) -> int:
        return int.from_bytes(self.take(size), "big")


def _text(raw: bytes) -> str:
    return raw.decode("latin-1")


def _decode_table(reader: _Reader, size: int, start: AmqpStart, out: list[str], depth: int) -> None:
    read = 0
    pad = "  " * depth
    while read < size:
        key_length = reader.uint(1)
        read += 1
        key = _text(reader.take(key_length))
        read += key_length
        kind = reader.take(1)
        read += 1
        if kind == b"F":
            nested = reader.uint(4)
            read += 4
            out.append(f"{pad}{key}: ")
            _decode_table(reader, nested, start, out, depth + 1)
            read += nested
        elif kind == b"S":
            length = reader.uint(4)
            value = _text(reader.take(length))
            read += 4 + length
            if key == "product":
                start.product = value
            elif key == "version":
                start.version = value
            out.append(f"{pad}{key}: {value}")
        elif kind == b"t":
            value = "YES" if reader.uint(1) == 1 else "NO"
            read += 1
            out.append(f"{pad}{key}: {value}")
        # any other type: its value is not consumed (as Nmap's decoder)


def parse_connection_start(data: bytes) -> AmqpStart:
    """The broker's answer to :data:`CLIENT_HEADER`, decoded as Nmap decodes it."""
    reader = _Reader(data)
    frame_type, _channel, _size, method = struct.unpack(">BHII", reader.take(11))
    if frame_type != 1:
        raise AmqpError(f"expected a method frame (1), got {frame_type}")
    if method != 0x000A000A:
        raise AmqpError(f"expected connection.start, got {method:x}")
    version = reader.uint(2)
    protocol = PROTOCOL_VERSIONS.get(version)
    if protocol is None:
        raise AmqpError(f"unsupported version {version:x}")
    start = AmqpStart(protocol)
    table_size = reader.uint(4)
    _decode_table(reader, table_size, start, start.properties, 0)
    for name in ("mechanisms", "locales"):
        length = reader.uint(4)
        start.properties.append(f"{name}: {_text(reader.take(length))}")
    return start


class AmqpInfo(BaseScript):
    name = "amqp-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        try:
            conn = await run.exchange.connect(timeout=NSE_SOCKET_TIMEOUT)
        except ExchangeError as exc:
            return f"Unable to open connection: {exc}"
        data = b""
        try:
            conn.send(CLIENT_HEADER)
            while True:
                try:
                    start = parse_connection_start(data)
                    break
                except NeedMore:
                    data += await conn.receive(NSE_SOCKET_TIMEOUT)
        except (ExchangeError, AmqpError) as exc:
            return f"ERROR: AMQP:handshake {exc}"
        finally:
            conn.close()
        run.set_version(
            VersionUpdate(
                name="amqp",
                product=start.product,
                version=start.version,
                extrainfo=start.protocol,
            )
        )
        return "\n".join(start.properties)
