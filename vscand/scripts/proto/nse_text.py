"""NSE's text helpers as the older scripts print with them: ``stdnse.format_output``
(status true, at debugging level 0) and ``tab.dump``.

Peer bytes travel as latin-1 ``str`` (one character per byte), so lengths are
Lua's ``#`` and Nmap's escapes see the original bytes.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

__all__ = ["Group", "format_output", "tab_dump"]


@dataclass(frozen=True)
class Group:
    """A nested table of ``format_output``'s data: its ``name`` line, then its items."""

    name: str | None
    items: Sequence[Item] = field(default_factory=tuple)


Item = str | Group

#: ``gmatch(value, "([^\r\n]-)\n")``: the pieces before each newline; a line ending in
#: ``\r\n`` yields only what follows its ``\r`` (nothing), as Lua's matcher does
_LINE = re.compile(r"([^\r\n]*?)\n")


def _sub(items: Sequence[Item], depth: int | None, name: str | None) -> str:
    if not items:
        return ""
    out: list[str] = ["\n"] if depth is None else []
    level = depth or 0
    if name is not None:
        out.append("  " * level + name + "\n")
    for item in items:
        if isinstance(item, Group):
            out.append(_sub(item.items, level + 1, item.name))
            continue
        text = item if item.endswith("\n") else item + "\n"
        out.extend("  " * level + "  " + line + "\n" for line in _LINE.findall(text))
    return "".join(out)


def format_output(items: Sequence[Item]) -> str | None:
    """``stdnse.format_output(true, items)``: a leading newline, each line indented two
    spaces per level (a group's name one level up); None for no items."""
    if not items:
        return None
    result = _sub(items, None, None)
    return None if result == "\n" else result


def tab_dump(rows: Sequence[Sequence[str]]) -> str:
    """``tab.dump``: columns padded to their widest cell (the last cell of a row is not),
    joined by two spaces, each row ending in a newline."""
    widths: dict[int, int] = {}
    for row in rows:
        for x, cell in enumerate(row):
            widths[x] = max(widths.get(x, 0), len(cell))
    lines = []
    for row in rows:
        cells = [
            cell + " " * (widths[x] - len(cell)) if x < len(row) - 1 else cell
            for x, cell in enumerate(row)
        ]
        lines.append("  ".join(cells) + "\n")
    return "".join(lines)
