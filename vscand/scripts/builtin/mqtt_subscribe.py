"""``mqtt-subscribe``: subscribe to ``$SYS/#`` and ``#`` and read what the broker publishes.

Runs on ports 1883/8883 or services mqtt/secure-mqtt (tcp, intensity >= 7,
not excluded). As Nmap's ``mqtt`` library: CONNECT (protocol ``MQTT`` level
4, client id ``nmap`` + 16 letters, no flags, keep-alive 30 s) sent the
``comm.tryssl`` way, whose first answer must be exactly a 4-byte accepted
CONNACK; SUBSCRIBE (packet id 2, both filters QoS 0) and its SUBACK (at least
one filter granted); then PUBLISH messages for 5 seconds or 100 messages.
A packet type whose parser Nmap lacks (anything but CONNACK, PUBLISH,
SUBACK) ends the conversation. When ``$SYS/broker/version`` was published,
its last payload becomes the port's service *name* (as Nmap 7.93 does: e.g.
``mosquitto version 2.0.11``), hard match; nothing else changes.

Output (NSE's output table): ``Topics and their most recent payloads``, a
table topic -> last payload (NSE's is a plain Lua table, printed in hash
order: a different order on every run of Nmap; ours is sorted). On failure,
``ERROR`` = the library's message, which is also the output string.

Packet building and parsing are pure functions.
"""

from __future__ import annotations

import contextlib
import random
import string
import struct
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import ExchangeError, ExchangeTimeout
from vscand.scripts.shortport import version_port_or_service
from vscand.scripts.streams import BufferedReader, open_best

__all__ = [
    "MqttError",
    "MqttSubscribe",
    "Packet",
    "build_connect",
    "build_subscribe",
    "encode_length",
    "parse_length",
    "parse_packet",
]

_rule = version_port_or_service([1883, 8883], ["mqtt", "secure-mqtt"], ("tcp",))

TYPES = {1: "CONNECT", 2: "CONNACK", 3: "PUBLISH", 4: "PUBACK", 5: "PUBREC", 6: "PUBREL",
         7: "PUBCOMP", 8: "SUBSCRIBE", 9: "SUBACK", 10: "UNSUBSCRIBE", 11: "UNSUBACK",
         12: "PINGREQ", 13: "PINGRESP", 14: "DISCONNECT"}  # fmt: skip
DISCONNECT = b"\xe0\x00"
DEFAULT_TOPICS = ("$SYS/#", "#")
LISTEN_SECONDS = 5.0
LISTEN_MESSAGES = 100
#: ``Helper.receive``'s default wait for SUBACK
RECEIVE_SECONDS = 5.0


class MqttError(Exception):
    pass


@dataclass
class Packet:
    type: str
    accepted: bool = False
    reason: str = ""
    granted: list[bool] = field(default_factory=list)
    topic: bytes = b""
    payload: bytes = b""


def encode_length(number: int) -> bytes:
    """MQTT's variable-length "remaining length" (1 to 4 bytes)."""
    if not 0 <= number < 0x10000000:
        raise ValueError(number)
    out = bytearray()
    while True:
        byte, number = number & 0x7F, number >> 7
        out.append(byte | (0x80 if number else 0))
        if not number:
            return bytes(out)


def parse_length(buf: bytes, pos: int = 0) -> tuple[int, int]:
    """``(position after, number)``; raises MqttError like Nmap's ``length_parse``."""
    if not buf:
        raise MqttError("Cannot parse an empty string.")
    multiplier, offset, number = 1, 0, 0
    while True:
        if pos >= len(buf):
            raise MqttError(
                "Reached end of buffer before variable-length numeric field was parsed."
            )
        byte = buf[pos]
        pos += 1
        number += (byte & 0x7F) * multiplier
        if offset > 3:
            raise MqttError("Buffer contained an invalid variable-length numeric field.")
        multiplier <<= 7
        offset += 1
        if not byte & 0x80:
            return pos, number


def _utf8(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">H", len(raw)) + raw


def _fixed(kind: int, flags: int, body: bytes) -> bytes:
    return bytes([(kind << 4) | flags]) + encode_length(len(body)) + body


def build_connect(client_id: str, keep_alive: int = 30) -> bytes:
    head = _utf8("MQTT") + bytes([4, 0x00]) + struct.pack(">H", keep_alive)
    return _fixed(1, 0, head + _utf8(client_id))


def build_subscribe(packet_id: int, filters: tuple[str, ...]) -> bytes:
    body = struct.pack(">H", packet_id) + b"".join(_utf8(f) + b"\x00" for f in filters)
    return _fixed(8, 0x2, body)


_REASONS = {
    1: "Unacceptable Protocol Version",
    2: "Client Identifier Rejected",
    3: "Server Unavailable",
    4: "Bad User Name or Password",
    5: "Not Authorized",
}


def parse_packet(buf: bytes) -> Packet:
    """One control packet as Nmap's ``Comm.parse`` reads it (CONNACK, SUBACK, PUBLISH)."""
    if not buf:
        raise MqttError("Failed to parse control packet.")
    first = buf[0]
    pos, length = parse_length(buf, 1)
    if pos + length > len(buf):
        raise MqttError("End of packet body goes past end of buffer.")
    body = buf[pos : pos + length]
    name = TYPES.get(first >> 4)
    if name is None:
        raise MqttError(f"Control packet type '{first >> 4}' is not known.")
    flags = first & 0x0F
    if name == "CONNACK":
        if len(body) < 2:
            raise MqttError("CONNACK too short")
        code = body[1]
        return Packet(name, accepted=code == 0,
                      reason=_REASONS.get(code, "Unrecognized Connect Return Code"))  # fmt: skip
    if name == "SUBACK":
        if len(body) < 2:
            raise MqttError("Failed to parse SUBACK packet, too short.")
        return Packet(name, granted=[code <= 2 for code in body[2:]])
    if name == "PUBLISH":
        if len(body) < 2:
            raise MqttError("Cannot parse a string of less than two bytes.")
        size = struct.unpack_from(">H", body)[0]
        if 1 + size >= len(body):
            raise MqttError("Buffer has no space for the topic.")
        topic, at = body[2 : 2 + size], 2 + size
        if (flags & 0x6) >> 1 in (1, 2):
            if len(body) - at < 2:
                raise MqttError("packet truncated")
            at += 2
        return Packet(name, topic=topic, payload=body[at:])
    raise MqttError(f"Control packet type '{name}' is not implemented.")


def _length_end(buf: bytes) -> int | None:
    """How many bytes ``Comm.receive`` takes for the length field (up to 4)."""
    for i, byte in enumerate(buf[:4]):
        if byte < 128:
            return i + 1
    return 4 if len(buf) >= 4 else None


def socket_error(exc: ExchangeError) -> str:
    """The text of an nsock error as NSE's socket calls return it."""
    return "TIMEOUT" if isinstance(exc, ExchangeTimeout) else "EOF"


async def _receive_packet(reader: BufferedReader) -> bytes:
    try:
        first = await reader.read_exactly(1)
    except ExchangeError as exc:
        raise MqttError("Failed to receive control packet from server.") from exc
    try:
        length = await reader.read_until(_length_end)
        _pos, number = parse_length(length)
        body = await reader.read_exactly(number)
    except ExchangeError as exc:
        raise MqttError(socket_error(exc)) from exc
    return first + length + body


async def _receive(
    reader: BufferedReader, types: tuple[str, ...], now: Callable[[], float], seconds: float
) -> Packet:
    """``Helper.receive``: packets until one of ``types`` (others skipped for ``seconds``)."""
    end = now() + seconds
    while True:
        packet = parse_packet(await _receive_packet(reader))
        if packet.type in types:
            return packet
        if seconds > 0 and now() >= end:
            if not float(seconds).is_integer():
                # Lua's %d of a fractional number: a runtime error
                raise ScriptFailed("bad argument to format")
            raise MqttError(
                f"No messages received in {int(seconds)} seconds matching desired types."
            )


def _error(message: str) -> ScriptOutput:
    """NSE's ``output.ERROR = msg; return output, output.ERROR``."""
    return ScriptOutput(table=Table.of({"ERROR": message}), text=message)


class MqttSubscribe(BaseScript):
    name = "mqtt-subscribe"

    def __init__(
        self, now: Callable[[], float] = time.monotonic, rng: random.Random | None = None
    ) -> None:
        #: reads the time (the listening deadline); tests give ``Clock.seconds``
        self._now = now
        self._rng = rng or random.SystemRandom()

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        client_id = "nmap" + "".join(self._rng.choice(string.ascii_letters) for _ in range(16))
        opened = await open_best(run.exchange, run.port, build_connect(client_id))
        if opened is None:
            return _error("TIMEOUT")  # comm.tryssl's error text
        conn, answer, _how = opened
        try:
            if len(answer) != 4:
                return _error("More bytes were returned from tryssl() than expected.")
            connack = parse_packet(answer)
            if connack.type != "CONNACK":
                return _error(
                    f"Received control packet type '{connack.type}' instead of 'CONNACK'."
                )
            if not connack.accepted:
                return _error(f"Connection rejected: {connack.reason}")
            reader = BufferedReader(conn, timeout=RECEIVE_SECONDS)
            conn.send(build_subscribe(2, DEFAULT_TOPICS))
            suback = await _receive(reader, ("SUBACK",), self._now, RECEIVE_SECONDS)
            if not any(suback.granted):
                return _error("Every topic filter was rejected.")
            topics, failure = await self._listen(reader)
        except MqttError as exc:
            return _error(str(exc))
        except ExchangeError as exc:
            return _error(socket_error(exc))
        finally:
            with contextlib.suppress(ExchangeError):
                conn.send(DISCONNECT)
            conn.close()
        if failure is not None and not topics:
            return _error(failure)
        version = topics.get(b"$SYS/broker/version")
        if version is not None:
            run.set_version(VersionUpdate(name=version.decode("latin-1")))
        shown = Table()
        for key, value in sorted(topics.items()):
            shown[key.decode("latin-1")] = value.decode("latin-1")
        return ScriptOutput(table=Table.of({"Topics and their most recent payloads": shown}))

    async def _listen(self, reader: BufferedReader) -> tuple[dict[bytes, bytes], str | None]:
        """The topics heard, and the error that ended the listening (None: time/count)."""
        now = self._now
        end = now() + LISTEN_SECONDS
        topics: dict[bytes, bytes] = {}
        messages = 0
        while True:
            left = end - now()
            if left <= 0:
                break
            reader.timeout = left
            try:
                packet = await _receive(reader, ("PUBLISH",), self._now, left)
            except MqttError as exc:
                return topics, str(exc)
            except ExchangeError as exc:
                return topics, socket_error(exc)
            topics[packet.topic] = packet.payload
            messages += 1
            if messages >= LISTEN_MESSAGES:
                break
        return topics, None
