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

Output: ``stdnse.format_output(true, properties)``, the lines ``key: value``
(booleans ``YES``/``NO``; a nested table is the line ``key: `` and its
entries indented two more spaces), then ``mechanisms: ...`` and
``locales: ...``. When the answer is not what Nmap accepts, the output is the
library's error string (``ERROR: AMQP:handshake connection closed
unexpectedly while reading <what>``, ``ERROR: AQMP:handshake expected ...``),
as NSE's script returns it.

:func:`parse_connection_start` is pure; it raises :class:`NeedMore` (saying
what it was reading) while the bytes so far end inside the frame.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import ExchangeError, ExchangeTimeout
from vscand.scripts.nsefmt import Nested, format_output
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
    """The bytes so far end inside the Connection.Start frame; ``str()``: what was being read."""


class AmqpError(Exception):
    """Not a Connection.Start Nmap accepts."""


@dataclass
class AmqpStart:
    protocol: str
    product: str | None = None
    version: str | None = None
    #: "key: value" lines in Nmap's order, a nested table as a nested list
    properties: list[str | list[Any]] = field(default_factory=list)


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def take(self, count: int, what: str) -> bytes:
        if self.pos + count > len(self.data):
            raise NeedMore(what)
        chunk = self.data[self.pos : self.pos + count]
        self.pos += count
        return chunk

    def uint(self, size: int, what: str) -> int:
        return int.from_bytes(self.take(size, what), "big")


def _text(raw: bytes) -> str:
    return raw.decode("latin-1")


def _decode_table(reader: _Reader, size: int, start: AmqpStart, out: list[Any]) -> None:
    read = 0
    while read < size:
        key_length = reader.uint(1, "key length")
        read += 1
        key = _text(reader.take(key_length, "key"))
        read += key_length
        kind = reader.take(1, f"value type for {key}")
        read += 1
        if kind == b"F":
            nested_size = reader.uint(4, "table size")
            read += 4
            nested: list[Any] = []
            out.append(f"{key}: ")
            out.append(nested)
            _decode_table(reader, nested_size, start, nested)
            read += nested_size
        elif kind == b"S":
            length = reader.uint(4, f"value size for {key}")
            value = _text(reader.take(length, f"value for {key}"))
            read += 4 + length
            if key == "product":
                start.product = value
            elif key == "version":
                start.version = value
            out.append(f"{key}: {value}")
        elif kind == b"t":
            value = "YES" if reader.uint(1, f"value for {key}") == 1 else "NO"
            read += 1
            out.append(f"{key}: {value}")
        # any other type: its value is not consumed (as Nmap's decoder)


def parse_connection_start(data: bytes) -> AmqpStart:
    """The broker's answer to :data:`CLIENT_HEADER`, decoded as Nmap decodes it.

    Raises :class:`AmqpError` with Nmap's message for what it refuses."""
    reader = _Reader(data)
    header = reader.take(11, "frame header")
    frame_type, _channel, _size, method = struct.unpack(">BHII", header)
    if frame_type != 1:
        raise AmqpError(f"ERROR: AQMP:handshake expected header (1) frame, but was {frame_type}")
    if method != 0x000A000A:
        raise AmqpError(
            "ERROR: AQMP:handshake expected connection.start (0x000A000A) method,"
            f" but was {method:x}"
        )
    version = reader.uint(2, "version")
    protocol = PROTOCOL_VERSIONS.get(version)
    if protocol is None:
        raise AmqpError(f"ERROR: AMQP:handshake unsupported version ({version:x})")
    start = AmqpStart(protocol)
    table_size = reader.uint(4, "server properties size")
    _decode_table(reader, table_size, start, start.properties)
    for name in ("mechanisms", "locales"):
        length = reader.uint(4, f"value size for {name}")
        start.properties.append(f"{name}: {_text(reader.take(length, f'value for {name}'))}")
    return start


class AmqpInfo(BaseScript):
    name = "amqp-info"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        try:
            conn = await run.exchange.connect(timeout=NSE_SOCKET_TIMEOUT)
        except ExchangeError as exc:
            # nsock's connect error text: TIMEOUT, else ERROR (as nmap printed it for a
            # refused connection)
            reason = "TIMEOUT" if isinstance(exc, ExchangeTimeout) else "ERROR"
            return f"Unable to open connection: {reason}"
        data = b""
        try:
            conn.send(CLIENT_HEADER)
            while True:
                try:
                    start = parse_connection_start(data)
                    break
                except NeedMore as need:
                    try:
                        data += await conn.receive(NSE_SOCKET_TIMEOUT)
                    except ExchangeError:
                        return (
                            "ERROR: AMQP:handshake connection closed unexpectedly"
                            f" while reading {need}"
                        )
        except AmqpError as exc:
            return str(exc)
        except ExchangeError:
            return "ERROR: AMQP:handshake failed while sending client version"
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
        properties: Nested = start.properties
        return format_output(properties)
