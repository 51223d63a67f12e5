"""Lua 5.3/5.4 value semantics NSE scripts depend on, for parsers that must
agree with them byte for byte: ``tonumber`` on a string, ``string.sub``,
``string.format("%q")``.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import re

__all__ = ["lua_q", "lua_sub", "lua_tonumber"]

_LUA_DEC = re.compile(
    rb"[ \t\n\v\f\r]*([-+]?)((?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][-+]?[0-9]+)?)[ \t\n\v\f\r]*\Z"
)
_LUA_HEX = re.compile(
    rb"[ \t\n\v\f\r]*([-+]?)0[xX]([0-9a-fA-F]*)(?:\.([0-9a-fA-F]*))?(?:[pP]([-+]?[0-9]+))?"
    rb"[ \t\n\v\f\r]*\Z"
)


def lua_tonumber(text: bytes) -> int | float | None:
    """Lua 5.3's ``tonumber(s)`` on a string: decimal or hex integers and floats,
    surrounding whitespace allowed; None when it is no number."""
    if b"\0" in text:
        return None
    hexa = _LUA_HEX.match(text)
    if hexa is not None:
        sign, whole, frac, exp = hexa.groups()
        if not whole and not frac:
            return None
        if frac is None and exp is None:
            value = int(whole, 16) & 0xFFFFFFFFFFFFFFFF  # wraps around, as Lua's integers
            value = value - (1 << 64) if value >= 1 << 63 else value
            return -value if sign == b"-" else value
        number = float(int(whole or b"0", 16)) + (int(frac, 16) / 16 ** len(frac) if frac else 0.0)
        number *= 2.0 ** int(exp or b"0")
        return -number if sign == b"-" else number
    dec = _LUA_DEC.match(text)
    if dec is None:
        return None
    sign, body = dec.groups()
    if re.fullmatch(rb"[0-9]+", body):
        value = int(body)
        if value < 1 << 63 or (sign == b"-" and value == 1 << 63):
            return -value if sign == b"-" else value
    number = float(body)
    return -number if sign == b"-" else number


def lua_sub(text: bytes, i: int, j: int = -1) -> bytes:
    """``string.sub(text, i, j)``: 1-based, inclusive, negative counts from the end."""
    n = len(text)
    if i < 0:
        i = max(n + i + 1, 1)
    elif i == 0:
        i = 1
    if j < 0:
        j = n + j + 1
    elif j > n:
        j = n
    return text[i - 1 : j] if i <= j else b""


def lua_q(text: bytes) -> bytes:
    """``string.format("%q", text)`` (Lua 5.3 and 5.4 alike): quoted; ``"``, ``\\``
    and newline escaped by a backslash; other control bytes as ``\\ddd`` in decimal
    (three digits when a digit follows)."""
    out = bytearray(b'"')
    for i, byte in enumerate(text):
        if byte in b'"\\\n':
            out += b"\\" + bytes([byte])
        elif byte < 32 or byte == 127:
            follows_digit = i + 1 < len(text) and 48 <= text[i + 1] <= 57
            out += (b"\\%03d" if follows_digit else b"\\%d") % byte
        else:
            out.append(byte)
    return bytes(out + b'"')
