"""``nmap-rpc``: RPC program names and numbers, as NSE reads the file.

Pure code. Two views of the same lines (``^\\s*([^\\s#]+)\\s+(\\d+)``):
:meth:`RpcPrograms.in_file_order` (rpc-grind's iterator: every line in order,
duplicates included) and :meth:`RpcPrograms.name` (``ProgNumberToName``: the
*last* line with that number wins, as NSE's table fill does).
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

__all__ = ["DEFAULT_PATHS", "RpcPrograms", "find_rpc_file", "load_rpc_programs"]

DEFAULT_PATHS = ("/usr/share/nmap/nmap-rpc", "/usr/local/share/nmap/nmap-rpc")
_LINE = re.compile(r"^\s*([^\s#]+)\s+(\d+)")


@dataclass(frozen=True)
class RpcPrograms:
    entries: tuple[tuple[str, int], ...]
    _names: dict[int, str] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, lines: Iterable[str]) -> RpcPrograms:
        entries: list[tuple[str, int]] = []
        names: dict[int, str] = {}
        for line in lines:
            found = _LINE.match(line)
            if not found:
                continue
            name, number = found.group(1), int(found.group(2))
            entries.append((name, number))
            names[number] = name
        return cls(tuple(entries), names)

    def in_file_order(self) -> tuple[tuple[str, int], ...]:
        return self.entries

    def name(self, number: int) -> str | None:
        return self._names.get(number)


def find_rpc_file(path: str | None = None) -> Path:
    """``path``, else the first of :data:`DEFAULT_PATHS` that exists."""
    candidates = [path] if path else list(DEFAULT_PATHS)
    for candidate in candidates:
        if candidate and Path(candidate).is_file():
            return Path(candidate)
    raise FileNotFoundError(f"nmap-rpc not found (tried {', '.join(c for c in candidates if c)})")


def load_rpc_programs(path: str | None = None) -> RpcPrograms:
    with open(find_rpc_file(path), encoding="latin-1") as stream:
        return RpcPrograms.parse(stream)
