"""Nmap's ``ipOps.ip_to_str`` as a yes/no question: does NSE take this text for an address?

fox-info keeps a ``hostName`` as the port's host name unless
``ipOps.ip_to_str`` accepts it as an IPv4 or IPv6 address. The library is
lenient in its own ways (``"1.2"`` and ``"..."`` are IPv4 addresses, missing
octets being zeros; Lua's ``tonumber(s, base)`` wraps around 2^64, so some
huge numbers pass its range checks) and dies on a few inputs (``":"``; an
octet or group that wrapped to a negative number or needs a float): those
raise :class:`~vscand.scripts.proto.luastring.LuaError`, as Nmap's Lua would.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import re

from vscand.scripts.proto.luastring import LuaError

__all__ = ["ip_to_str_accepts"]

_INT64 = 1 << 64


def _wrap(value: int) -> int:
    """Lua 5.3 integer arithmetic: modulo 2^64, as a signed number."""
    value %= _INT64
    return value - _INT64 if value >= 1 << 63 else value


def _expand_ipv4(ip: str) -> list[str] | None:
    if re.search(r"[^.0-9]", ip):
        return None
    octets = re.findall(r"[0-9]+", ip)
    if any(_wrap(int(octet)) > 255 for octet in octets) or len(octets) > 4:
        return None
    return octets + ["0"] * (4 - len(octets))


def _expand_ipv6(ip: str) -> list[str] | None:
    if re.search(r"[^.:0-9A-Fa-f]", ip):
        return None
    groups = re.findall(r"[.z0-9A-Fa-f]+", ip.replace("::", ":z:"))
    if not groups:
        raise LuaError("attempt to index a nil value (field '?')")
    if "." in groups[-1]:
        octets = _expand_ipv4(groups[-1])
        if octets is None:
            return None
        t = [_wrap(int(octet)) for octet in octets]
        groups[-1] = format(_wrap(256 * t[0] + t[1]) % _INT64, "x")
        groups.append(format(_wrap(256 * t[2] + t[3]) % _INT64, "x"))
    z_done = False
    i = 0
    while i < len(groups):
        value = groups[i]
        if "." in value:
            return None
        if value == "z":
            if z_done:
                return None
            z_done = True
            groups[i] = "0"
            for k in range(1, 8 - len(groups) + 1):
                groups.insert(i + k, "0")
        elif _wrap(int(value, 16)) > 65535:
            return None
        i += 1
    if len(groups) > 8:
        return None
    return groups + ["0"] * (8 - len(groups))


def ip_to_str_accepts(text: str) -> bool:
    """True when ``ipOps.ip_to_str(text)`` returns a string (the text is an address).

    Raises ``LuaError`` where the library itself raises a Lua error.
    """
    if text == "":
        return False
    if ":" not in text:
        octets = _expand_ipv4(text)
        if octets is None:
            return False
        for octet in octets:  # string.pack("B", octet): the string converted again
            if int(octet) >= 1 << 63:
                raise LuaError("bad argument #2 to 'pack' (number has no integer representation)")
        return True
    groups = _expand_ipv6(text)
    if groups is None:
        return False
    for group in groups:  # string.pack(">I2", tonumber(group, 16))
        if _wrap(int(group, 16)) < 0:
            raise LuaError("bad argument #2 to 'pack' (unsigned overflow)")
    return True
