"""What the game-server scripts share: one UDP query (NSE's ``comm.exchange``),
Lua's ``string.unpack`` for the options they use, and where Nmap's script files are.

* :func:`udp_exchange`: a datagram out, one datagram back, within the
  script's request timeout (``comm.exchange``: the ``timeout`` option counts
  twice, connect and request; without it 6 s plus the connect timeout);
  None when nothing (or an ICMP refusal) came back.
* :func:`lua_unpack`: ``string.unpack`` over bytes, 0-based positions, with
  the error messages of the Lua of the release reproduced (Nmap 7.93 embeds
  Lua 5.3, 7.95 Lua 5.4: an unterminated ``z`` string is "data string too
  short" in the former only when an option follows it, and "unfinished
  string for format 'z'" in the latter).
* :func:`nse_location`: ``"<script path>:<line>: "``, the prefix Lua puts on
  a runtime error raised at a line of an installed ``.nse`` file.

Pure code: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

import functools
import re

from vscand.probes.grammar import release_key
from vscand.scripts.comm import REQUEST_TIMEOUT
from vscand.scripts.exchange import Exchange, ExchangeError

__all__ = [
    "NSE_SCRIPT_DIRS",
    "LuaUnpackError",
    "lua_tonumber",
    "lua_unpack",
    "nse_location",
    "nse_source",
    "request_timeout",
    "udp_exchange",
]

#: where Nmap's scripts are installed (``nmap.fetchfile`` order)
NSE_SCRIPT_DIRS = ("/usr/share/nmap/scripts", "/usr/local/share/nmap/scripts")

#: a Lua value ``string.unpack`` returns
Unpacked = int | bytes


def request_timeout(option_ms: int | None) -> float:
    """``comm.exchange``'s read timeout for a ``timeout`` option (ms), or without one."""
    if option_ms is None:
        return REQUEST_TIMEOUT
    return 2 * option_ms / 1000.0


async def udp_exchange(
    exchange: Exchange, data: bytes, timeout: float, *, port: int | None = None
) -> bytes | None:
    """Send one datagram, read one datagram (``comm.exchange`` over UDP)."""
    try:
        conn = await exchange.connect(port=port, protocol="udp", timeout=timeout)
    except ExchangeError:
        return None
    try:
        conn.send(data)
        return await conn.receive(timeout)
    except ExchangeError:
        return None
    finally:
        conn.close()


class LuaUnpackError(Exception):
    """``string.unpack`` raised: ``str(error)`` is Lua's message (without location)."""


_TOKEN = re.compile(r"\s*([<>]|[BbzxIis])(\d*)")
_TOO_SHORT = "bad argument #2 to 'unpack' (data string too short)"
_UNFINISHED = "bad argument #2 to 'unpack' (unfinished string for format 'z')"


def _lua54(release: str) -> bool:
    return release_key(release) >= release_key("7.95")


def lua_unpack(
    fmt: str, data: bytes, pos: int = 0, release: str = "7.93"
) -> tuple[list[Unpacked], int]:
    """``string.unpack(fmt, data, pos + 1)``: the values and the next position (0-based).

    Options: ``<`` ``>`` (endianness), ``B``/``b`` (a byte), ``I``/``i`` with a
    size, ``x`` (one padding byte), ``z`` (zero-terminated), ``s1`` (a
    1-byte length, then that many bytes). Raises :class:`LuaUnpackError`.
    Lua 5.3 reads an unterminated ``z`` up to the end of the data and one past
    it (its strings end with a hidden NUL), so the next option fails.
    """
    if pos > len(data):
        raise LuaUnpackError("bad argument #3 to 'unpack' (initial position out of string)")
    order = "<"
    values: list[Unpacked] = []
    index = 0
    while index < len(fmt):
        match = _TOKEN.match(fmt, index)
        if match is None:
            if fmt[index:].strip():
                raise ValueError(f"unsupported format {fmt[index:]!r}")
            break
        index = match.end()
        option, digits = match.groups()
        if option in "<>":
            order = option
            continue
        if option in "Bb":
            size = 1
        elif option in "Ii":
            size = int(digits or 4)
        elif option == "s":
            size = int(digits or 8)
        elif option == "x":
            size = 1
        else:
            size = 0
        if pos + size > len(data):
            raise LuaUnpackError(_TOO_SHORT)
        if option == "z":
            end = data.find(b"\x00", pos)
            if end < 0:
                if _lua54(release):
                    raise LuaUnpackError(_UNFINISHED)
                end = len(data)
            values.append(data[pos:end])
            pos = end + 1
        elif option == "x":
            pos += 1
        elif option == "s":
            length = int.from_bytes(data[pos : pos + size], "little" if order == "<" else "big")
            if pos + size + length > len(data):
                raise LuaUnpackError(_TOO_SHORT)
            values.append(data[pos + size : pos + size + length])
            pos += size + length
        else:
            chunk = data[pos : pos + size]
            number = int.from_bytes(
                chunk, "little" if order == "<" else "big", signed=option in "bi"
            )
            values.append(number)
            pos += size
    return values, pos


def nse_source(name: str) -> tuple[str, str] | None:
    """``(path, text)`` of Nmap's installed ``name.nse``, or None."""
    return _nse_source(name)


@functools.cache
def _nse_source(name: str) -> tuple[str, str] | None:
    for folder in NSE_SCRIPT_DIRS:
        path = f"{folder}/{name}.nse"
        try:
            with open(path, encoding="latin-1") as handle:
                return path, handle.read()
        except OSError:
            continue
    return None


def nse_location(name: str, needle: str, fallback_line: int, release: str = "7.93") -> str:
    """``"path:line: "``: Lua's prefix for an error raised on the line of ``name.nse``
    that contains ``needle`` (``fallback_line`` when the script is not installed).

    The path is the one Nmap loaded the script from: Debian 12's 7.93 names
    ``/usr/share/nmap/scripts/...``, Debian 13's 7.95 the directory it found
    next to its executable, ``/usr/bin/../share/nmap/scripts/...`` (both seen
    end to end).
    """
    source = nse_source(name)
    path, line = f"{NSE_SCRIPT_DIRS[0]}/{name}.nse", fallback_line
    if source is not None:
        path = source[0]
        for number, text in enumerate(source[1].splitlines(), 1):
            if needle in text:
                line = number
                break
    if _lua54(release) and path.startswith("/usr/share/nmap/"):
        path = "/usr/bin/../" + path[len("/usr/") :]
    return f"{path}:{line}: "


_LUA_NUMBER = re.compile(
    r"\s*(?P<sign>[-+]?)(?:0[xX](?P<hex>[0-9a-fA-F]+)|(?P<dec>(?:\d+\.?\d*|\.\d+)(?:[eE][-+]?\d+)?))\s*"
)


def lua_tonumber(text: str) -> int | float | None:
    """Lua's ``tonumber`` on a string (decimal and hex integers, decimal floats)."""
    match = _LUA_NUMBER.fullmatch(text)
    if match is None:
        return None
    negative = match.group("sign") == "-"
    if match.group("hex") is not None:
        value = int(match.group("hex"), 16) & 0xFFFFFFFFFFFFFFFF
        if value >= 1 << 63:
            value -= 1 << 64
        return -value if negative else value
    dec = match.group("dec")
    if re.fullmatch(r"\d+", dec) and -(2**63) <= int(dec) < 2**63:
        return -int(dec) if negative else int(dec)
    number = float(dec)
    return -number if negative else number
