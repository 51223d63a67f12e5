"""OpenLookup's banner: netstrings (``N:bytes,``) holding NSON values (``s`` string,
``i`` int, ``f`` float, ``d`` dictionary, ``a`` array), parsed exactly as
``openlookup-info.nse`` parses them — lengths read with Lua's ``tonumber``, the
byte after a chunk skipped unread, values kept raw (NSON-encoded).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from vscand.output.script_output import ScriptFailed
from vscand.scripts.proto.lua_values import lua_sub, lua_tonumber

__all__ = ["hello_options", "parse_chunk", "parse_dict", "parse_string"]


def parse_chunk(data: bytes) -> tuple[bytes | None, bytes]:
    """``parsechunk``: (the netstring's body, the rest), or (None, data)."""
    head, colon, body = data.partition(b":")
    if not colon:
        return None, data
    size = lua_tonumber(head)
    if size is None:
        return None, data
    if len(body) < size:
        return None, data
    if isinstance(size, float):
        if not size.is_integer() or abs(size) >= 2**63:
            raise ScriptFailed("number has no integer representation")
        size = int(size)
    chunk = lua_sub(body, 1, size)
    return chunk, body[len(chunk) + 1 :]


def parse_string(data: bytes) -> bytes | None:
    """``parsestring``: an NSON string's text, or None."""
    return data[1:] if data[:1] == b"s" else None


def parse_dict(data: bytes) -> dict[bytes, bytes] | None:
    """``parsedict``: key -> raw NSON value, or None. A key that is no NSON string
    is Lua's "table index is nil" (:class:`ScriptFailed`)."""
    if data[:1] != b"d":
        return None
    rest = data[1:]
    found: dict[bytes, bytes] = {}
    while rest:
        chunk, rest = parse_chunk(rest)
        if chunk is None:
            return None
        key = parse_string(chunk)
        value, rest = parse_chunk(rest)
        if value is None:
            return None
        if key is None:
            raise ScriptFailed("table index is nil")
        found[key] = value
    return found


def hello_options(banner: bytes) -> dict[bytes, bytes] | None:
    """The options of a ``hello`` banner (``formatoptions`` on its first netstring):
    raw NSON values by key, ``{}`` for a hello without options, None otherwise."""
    header, _rest = parse_chunk(banner)
    if header is None:
        return None
    message = parse_dict(header)
    if message is None or b"method" not in message:
        return None
    if parse_string(message[b"method"]) != b"hello":
        return None
    if b"options" not in message:
        return {}
    return parse_dict(message[b"options"])
