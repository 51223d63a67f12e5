"""``stun-version``: the SOFTWARE ("server") attribute of a STUN Binding response.

Runs on port 3478 or service ``stun`` (udp, intensity >= 7, not excluded).
Sends a Binding Request (RFC 5389 magic cookie, 12 random transaction bytes,
no attributes) and reads a 20-byte header and its body as Nmap's ``stun``
library does: the message must be a Binding Response (0x0101; the
transaction id is not checked); attributes are walked without RFC 5389's
4-byte padding (as Nmap), MAPPED-ADDRESS (0x0001) and SOFTWARE (0x8022) are
looked at; at least one of them must be there.

Version fields: the port becomes ``open``; name ``stun``, product = the
SOFTWARE text (empty when absent, i.e. no product); hard match.

Output: none (NSE's script returns nothing, and its failures go through
``stdnse.format_output(false, ...)``, which is nil without debugging). An
attribute cut short (header, or an address value shorter than 8 bytes) is a
Lua error in Nmap's parser: :class:`ScriptFailed`, nothing set.
"""

from __future__ import annotations

import os
import struct
from collections.abc import Callable
from dataclasses import dataclass

from vscand.output.script_output import ScriptFailed
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun, VersionUpdate
from vscand.scripts.exchange import ExchangeError
from vscand.scripts.shortport import version_port_or_service
from vscand.scripts.streams import BufferedReader

__all__ = ["StunError", "StunResponse", "StunVersion", "binding_request", "parse_binding_response"]

MAGIC_COOKIE = b"\x21\x12\xa4\x42"
BINDING_REQUEST = 0x0001
BINDING_RESPONSE = 0x0101
MAPPED_ADDRESS = 0x0001
SOFTWARE = 0x8022
_ADDRESS_TYPES = frozenset({0x0001, 0x0002, 0x0004, 0x0005})
#: ``stun.Comm``'s default timeout
TIMEOUT = 10.0

_rule = version_port_or_service([3478], ["stun"], ("udp",))


class StunError(Exception):
    """Where Nmap's parser raises a Lua error (an attribute cut short)."""


@dataclass(frozen=True)
class StunResponse:
    mapped_address: str | None
    server: bytes | None


def binding_request(transaction: bytes) -> bytes:
    """A Binding Request with ``MAGIC_COOKIE + transaction`` (12 bytes) as its id."""
    if len(transaction) != 12:
        raise ValueError("a transaction id has 12 bytes after the magic cookie")
    return struct.pack(">HH", BINDING_REQUEST, 0) + MAGIC_COOKIE + transaction


def header_length(header: bytes) -> tuple[int, int]:
    message_type, length = struct.unpack_from(">HH", header)
    return message_type, length


def parse_binding_response(data: bytes) -> StunResponse:
    """A Binding Response's attributes (header + body), walked as Nmap walks them."""
    pos = 20
    mapped: str | None = None
    server: bytes | None = None
    seen = False
    while pos < len(data) - 1:  # Lua: while pos < #data, pos 1-based
        if pos + 4 > len(data):
            raise StunError("attribute header cut short")
        kind, length = struct.unpack_from(">HH", data, pos)
        if kind in _ADDRESS_TYPES:
            if pos + 12 > len(data):
                raise StunError("address attribute cut short")
            address = ".".join(str(b) for b in data[pos + 8 : pos + 12])
            if kind == MAPPED_ADDRESS:
                mapped, seen = address, True
        elif kind == SOFTWARE:
            server, seen = data[pos + 4 : pos + 4 + length], True
        pos += length + 4
    if not seen:
        raise StunError("Server returned no response")
    return StunResponse(mapped, server)


class StunVersion(BaseScript):
    name = "stun-version"

    def __init__(self, random_bytes: Callable[[int], bytes] = os.urandom) -> None:
        self._random = random_bytes

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return _rule(port, ctx)

    async def action(self, run: ScriptRun) -> str | None:
        try:
            conn = await run.exchange.connect(timeout=TIMEOUT)
        except ExchangeError:
            return None  # "Failed to connect to server", printed only with -d
        try:
            conn.send(binding_request(self._random(12)))
            reader = BufferedReader(conn, timeout=TIMEOUT)
            header = await reader.read_exactly(20)
            message_type, length = header_length(header)
            if message_type != BINDING_RESPONSE:
                return None  # "Failed to retrieve external IP", printed only with -d
            try:
                body = await reader.read_exactly(length)
            except ExchangeError:
                # Nmap appends the socket's error text ("TIMEOUT") to the header and
                # walks that: one unknown attribute, "no response"
                return None
            response = parse_binding_response(header + body)
        except ExchangeError:
            return None
        except StunError as exc:
            raise ScriptFailed(str(exc)) from exc
        finally:
            conn.close()
        product = (response.server or b"").decode("latin-1")
        run.set_port_state("open")
        run.set_version(VersionUpdate(name="stun", product=product or None))
        return None
