"""The small text helpers of NSE's libraries that scripts print with.

``format_output`` is ``stdnse.format_output(true, data)`` (the nested-list
layout several older scripts return); ``tohex`` is ``stdnse.tohex`` (with its
release difference); ``format_time`` is ``datetime.format_time`` for whole
seconds; ``str_to_ip`` is ``ipOps.str_to_ip``; ``lua_value`` turns a decoded
value into an output-table value as Lua's ``tostring`` would print it.
Written from the behaviour of Nmap's Lua (none of it copied). Pure code.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Union

from vscand.output.script_output import Table, lua_str

__all__ = ["Nested", "format_output", "format_time", "lua_value", "str_to_ip", "tohex"]

#: a ``format_output`` list: strings (lines) and nested lists
Nested = Sequence[Union[str, "Nested"]]

_LINE = re.compile(r"([^\r\n]*?)\n")


def _format_sub(data: Nested, depth: int, top: bool) -> str:
    if not data:
        return ""
    out = ["\n"] if top else []
    pad = "  " * depth
    for value in data:
        if isinstance(value, str):
            text = value if value.endswith("\n") else value + "\n"
            out.extend(f"{pad}  {line}\n" for line in _LINE.findall(text))
        else:
            out.append(_format_sub(value, depth + 1, False))
    return "".join(out)


def format_output(data: Nested) -> str | None:
    """``stdnse.format_output(true, data)``: None for an empty list."""
    if not data:
        return None
    result = _format_sub(data, 0, True)
    return None if result == "\n" else result


def tohex(data: bytes, release: str | None = None, *, separator: bool = False) -> str:
    """``stdnse.tohex``: lower-case hex. With a separator, Nmap 7.93 still
    returns the plain hex (its grouping result is discarded); 7.95 groups
    the digits in pairs from the right with ``:``."""
    text = data.hex()
    if not separator or release is None or release < "7.95":
        return text
    head = len(text) % 2
    groups = ([text[:head]] if head else []) + [text[i : i + 2] for i in range(head, len(text), 2)]
    return ":".join(groups)


def format_time(seconds: int) -> str:
    """``datetime.format_time(n)`` for an integer number of seconds."""
    sign = "-" if seconds < 0 else ""
    value = abs(seconds)
    sec = value % 60
    value //= 60
    minutes = value % 60
    value //= 60
    hours = value % 24
    days = value // 24
    text = f"{days}d{hours:02d}h{minutes:02d}m{sec:02d}s"
    found = re.search(r"[1-9].*", text)
    return sign + (found.group(0) if found else "0s")


def str_to_ip(raw: bytes) -> str | None:
    """``ipOps.str_to_ip``: 4 bytes dotted, 16 bytes Nmap's IPv6 text, else None."""
    if len(raw) == 4:
        return ".".join(str(b) for b in raw)
    if len(raw) == 16:
        full = ":".join(f"{int.from_bytes(raw[i : i + 2], 'big'):x}" for i in range(0, 16, 2))
        full = re.sub(r":[:0]+", "::", full, count=1)
        return re.sub(r"^0::", "::", full, count=1)
    return None


def lua_value(value: object) -> str | Table | None:
    """A decoded value as an output table holds it (None: Lua's nil)."""
    if value is None:
        return None
    if isinstance(value, (bytes, bytearray)):
        return bytes(value).decode("latin-1")
    if isinstance(value, (list, tuple)):
        table = Table()
        for item in value:
            converted = lua_value(item)
            if converted is None:
                break
            table.append(converted)
        return table
    return lua_str(value)
