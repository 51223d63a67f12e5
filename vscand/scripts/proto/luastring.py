"""Lua's string functions as NSE scripts use them on a peer's bytes, errors included.

NSE scripts parse answers with ``string.byte`` and ``string.unpack``; where the
bytes are short or a ``z`` string has no terminator, Lua raises a runtime error
and the script dies (Nmap prints ``ERROR: Script execution failed``). These
helpers take Lua's 1-based positions and raise :class:`LuaError` exactly where
Lua 5.3/5.4's ``lstrlib.c`` does, so a script can turn that into
:class:`~vscand.output.script_output.ScriptFailed`.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from vscand.probes.grammar import release_key

__all__ = [
    "LuaError",
    "byte",
    "c_hex",
    "unpack_c",
    "unpack_int",
    "unpack_s1",
    "unpack_z",
    "utf16be_to_utf8",
]


#: the first Nmap release on Lua 5.4 (7.93 is on 5.3)
LUA54_FROM = release_key("7.94")


class LuaError(Exception):
    """Where the NSE script's Lua would raise a runtime error."""


def byte(data: bytes, index: int) -> int | None:
    """``string.byte(data, index)`` for index >= 1: None past the end (Lua's nil)."""
    return data[index - 1] if 1 <= index <= len(data) else None


def _start(data: bytes, pos: int) -> int:
    """The 0-based offset of Lua position ``pos`` (``str_unpack``'s initial check)."""
    if pos < 1 or pos - 1 > len(data):
        raise LuaError("bad argument #3 to 'unpack' (initial position out of string)")
    return pos - 1


def unpack_int(data: bytes, pos: int, size: int, *, big: bool = False) -> tuple[int, int]:
    """``string.unpack("<I<size>")`` (or ``">I..."``, ``"B"`` with size 1): (value, next pos)."""
    at = _start(data, pos)
    if size > len(data) - at:
        raise LuaError("bad argument #2 to 'unpack' (data string too short)")
    return int.from_bytes(data[at : at + size], "big" if big else "little"), pos + size


def unpack_z(data: bytes, pos: int) -> tuple[bytes, int]:
    """``string.unpack("z", data, pos)``: the bytes up to a NUL, and the position after it."""
    at = _start(data, pos)
    end = data.find(b"\x00", at)
    if end < 0:
        raise LuaError("bad argument #2 to 'unpack' (unfinished string for format 'z')")
    return data[at:end], end + 2


def unpack_c(data: bytes, pos: int, size: int) -> tuple[bytes, int]:
    """``string.unpack("c<size>", data, pos)`` (size >= 0)."""
    at = _start(data, pos)
    if size > len(data) - at:
        raise LuaError("bad argument #2 to 'unpack' (data string too short)")
    return data[at : at + size], pos + size


def unpack_s1(data: bytes, pos: int) -> tuple[bytes, int]:
    """``string.unpack("s1", data, pos)``: a string after its one-byte length."""
    length, after = unpack_int(data, pos, 1)
    return unpack_c(data, after, length)


def c_hex(value: int, precision: int) -> str:
    """C's ``printf("%#0.<precision>x", value)`` (Lua's ``string.format``): no ``0x``
    for zero, at least ``precision`` digits."""
    digits = format(value, "x").rjust(precision, "0")
    return digits if value == 0 else "0x" + digits


def _utf8_lua54(code: int) -> bytes:
    """Lua 5.4's ``utf8.char`` (``luaO_utf8esc``): up to 6 bytes, code points to 2^31."""
    if code < 0x80:
        return bytes([code])
    out: list[int] = []
    first_max = 0x3F
    while True:
        out.append(0x80 | (code & 0x3F))
        code >>= 6
        first_max >>= 1
        if code <= first_max:
            break
    out.append(((~first_max << 1) | code) & 0xFF)
    return bytes(reversed(out))


def utf16be_to_utf8(data: bytes, release: str = "7.93") -> bytes:
    """``unicode.transcode(data, utf16_dec, utf8_enc, true)``, Nmap's way.

    Any unit from 0xD800 to 0xDFFF takes the next unit as its low half
    (no check that it is one); a unit cut short is a Lua error. Code points
    above U+10FFFF are dropped by 7.93's encoder and written by 7.95's
    (Lua 5.4's ``utf8.char``).
    """
    out = bytearray()
    pos = 0
    while pos < len(data):
        if len(data) - pos < 2:
            raise LuaError("bad argument #2 to 'unpack' (data string too short)")
        code = int.from_bytes(data[pos : pos + 2], "big")
        pos += 2
        if 0xD800 <= code <= 0xDFFF:
            if len(data) - pos < 2:
                raise LuaError("bad argument #2 to 'unpack' (data string too short)")
            high = (code - 0xD800) << 10
            code = 0x10000 + high + int.from_bytes(data[pos : pos + 2], "big") - 0xDC00
            pos += 2
        if code <= 0x10FFFF or release_key(release) >= LUA54_FROM:
            out += _utf8_lua54(code)
    return bytes(out)
