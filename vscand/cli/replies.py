"""Redis replies made printable: text from bytes, values from an untrusted store made safe
for a terminal, and the column tables the fleet commands print."""

from __future__ import annotations

import re
from typing import Any

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def text(value: Any) -> str:
    """A reply value as text (bytes decoded as UTF-8, bad bytes replaced)."""
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


def untrusted_text(value: Any) -> str:
    """A reply value as text, bad bytes kept as ``\\xNN`` escapes; nil is ``""``."""
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return "" if value is None else str(value)


def shown(value: Any, width: int = 0) -> str:
    """*value* safe for a terminal: one line, control characters escaped, at most *width*."""
    line = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", untrusted_text(value))
    if width and len(line) > width:
        line = line[: width - 3] + "..."
    return line


def pairs(reply: Any) -> dict[str, Any]:
    """A flat ``[name, value, ...]`` reply (HGETALL, XINFO, stream fields) as a dict."""
    items = list(reply or [])
    return {untrusted_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    """Left-aligned columns two spaces apart, a header line first."""
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())
