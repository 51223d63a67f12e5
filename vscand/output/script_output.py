"""Script output as NSE keeps it: a structured table, a string, or both.

An NSE action returns up to two values (``nse_main.lua``'s ``set_output``):
a table (usually ``stdnse.output_table()``, which keeps its keys in insertion
order) and/or a string. Nmap prints the string when there is one, else the
table formatted by ``format_table``; ``-oX`` carries the string as the
``output`` attribute and the table as nested ``<elem>``/``<table>``.

:class:`Table` is that table: the *array* part (Lua's integer keys, printed
first) and the *fields* (string keys, in insertion order). Values are strings
(use :func:`lua_str` for numbers and booleans, as Lua's ``tostring``) or
nested tables. :class:`ScriptOutput` is what an action returns; a plain
``str`` return is ``ScriptOutput(text=...)``.

The renderers of the output formats (``-oN`` ``|``/``|_`` lines, ``-oX``
``<script>``) live in :mod:`vscand.output`; here are the pure parts they and
the result's JSON share. Pure code: no Twisted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Union

__all__ = [
    "MAX_DEPTH",
    "MAX_ELEMENTS",
    "MAX_OUTPUT_CHARS",
    "SCRIPT_ERROR_OUTPUT",
    "ScriptFailed",
    "ScriptOutput",
    "Table",
    "Value",
    "format_table",
    "from_json",
    "lua_str",
    "protect_xml",
    "screen_text",
    "script_items",
    "script_result",
]

#: what Nmap prints for a script whose Lua died with a runtime error (no ``-d``)
SCRIPT_ERROR_OUTPUT = "ERROR: Script execution failed (use -d to debug)"

Value = Union[str, "Table"]

#: the longest printed output kept per script (characters); more is cut (``truncated``)
MAX_OUTPUT_CHARS = 32 * 1024
#: the most structured entries (``elem`` and ``table`` nodes, at any depth) kept per script
MAX_ELEMENTS = 1000
#: the deepest nesting of structured tables kept (the script's own table is depth 1)
MAX_DEPTH = 16


class ScriptFailed(Exception):
    """The script died as NSE's Lua would with a runtime error (not ``nmap.new_try``).

    Raise it where the NSE script itself crashes on an odd answer: the
    runner applies the updates made before (NSE's ``set_port_version`` takes
    effect at once) and the port's output for the script is
    :data:`SCRIPT_ERROR_OUTPUT`, as ``nmap -sV`` prints it.
    """


@dataclass
class Table:
    """An NSE output table: integer-keyed values, then string-keyed ones in order."""

    array: list[Value] = field(default_factory=list)
    fields: list[tuple[str, Value]] = field(default_factory=list)

    def append(self, value: Value) -> Table:
        self.array.append(value)
        return self

    #: key -> position in ``fields`` (a cache, rebuilt when ``fields`` changed behind it)
    _index: dict[str, int] = field(default_factory=dict, compare=False, repr=False)

    def _find(self, key: str) -> int | None:
        at = self._index.get(key)
        if at is not None and at < len(self.fields) and self.fields[at][0] == key:
            return at
        if at is not None or len(self._index) != len(self.fields):
            # the first of equal keys wins, as a linear search finds it
            self._index = {k: n for n, (k, _) in reversed(list(enumerate(self.fields)))}
            return self._index.get(key)
        return None

    def __setitem__(self, key: str, value: Value | None) -> None:
        """``t[key] = value`` as in ``stdnse.output_table``: a new key goes last,
        an existing one keeps its place, ``None`` removes it (O(1) but for removals)."""
        at = self._find(key)
        if at is not None:
            if value is None:
                del self.fields[at]
                self._index = {}
            else:
                self.fields[at] = (key, value)
        elif value is not None:
            self.fields.append((key, value))
            if len(self._index) == len(self.fields) - 1:
                self._index[key] = len(self.fields) - 1

    def __getitem__(self, key: str) -> Value:
        at = self._find(key)
        if at is None:
            raise KeyError(key)
        return self.fields[at][1]

    def __contains__(self, key: object) -> bool:
        return isinstance(key, str) and self._find(key) is not None

    def __bool__(self) -> bool:
        """Lua's ``#t > 0 or next(t)``: a table with anything in it."""
        return bool(self.array or self.fields)

    @classmethod
    def of(
        cls, fields: Mapping[str, Value | None] | None = None, array: Iterable[Value] = ()
    ) -> Table:
        table = cls(list(array))
        for key, value in (fields or {}).items():
            table[key] = value
        return table

    def to_json(self) -> list[dict[str, Any]]:
        """The elements as JSON: each ``{"key", "value"}`` or ``{"key", "table": [...]}``."""
        items: list[dict[str, Any]] = []
        for key, value in [(None, v) for v in self.array] + list(self.fields):
            if isinstance(value, Table):
                items.append({"key": key, "table": value.to_json()})
            else:
                items.append({"key": key, "value": value})
        return items


def _from_elements(elements: Sequence[Mapping[str, Any]]) -> Table:
    table = Table()
    for item in elements:
        value: Value = _from_elements(item["table"]) if "table" in item else str(item["value"])
        key = item.get("key")
        if key is None:
            table.array.append(value)
        else:
            table.fields.append((str(key), value))
    return table


def _release_key(release: str) -> tuple[int, ...]:
    return tuple(int(part) for part in release.split(".") if part.isdigit())


@dataclass(frozen=True)
class ScriptOutput:
    """What an action returns: NSE's (table, string) pair; at least one is set."""

    table: Table | None = None
    text: str | None = None

    @property
    def output(self) -> str:
        """The string Nmap 7.93 prints (``ScriptResult::get_output_str``)."""
        return self.printed()

    def printed(self, release: str = "7.93") -> str:
        """The string Nmap prints: the script's string, else its table formatted. An empty
        string falls back to the table in 7.93 (it tests ``empty()``); from 7.95 on any
        string the script returned is the output, ``""`` too (it tests for a Lua string)."""
        if self.text is not None and (self.text != "" or _release_key(release) >= (7, 95)):
            return self.text
        if self.table is not None:
            return format_table(self.table)
        return ""

    def to_json(self, script_id: str, release: str = "7.93") -> dict[str, Any]:
        return {
            "id": script_id,
            "output": self.printed(release),
            "elements": self.table.to_json() if self.table is not None else None,
        }


def from_json(item: Mapping[str, Any]) -> ScriptOutput:
    """The inverse of :meth:`ScriptOutput.to_json` (for writers reading results back)."""
    elements = item.get("elements")
    table = _from_elements(elements) if elements is not None else None
    return ScriptOutput(table=table, text=str(item.get("output") or ""))


def format_table(value: Value, indent: str = "  ") -> str:
    """``nse_main.lua``'s ``format_table``: each entry on a new line, nested two more spaces."""
    if not isinstance(value, Table):
        return value
    parts: list[str] = []
    for item in value.array:
        parts += ["\n", indent, format_table(item, indent + "  ")]
    for key, item in value.fields:
        parts += ["\n", indent, key, ": ", format_table(item, indent + "  ")]
    return "".join(parts)


def lua_str(value: object) -> str:
    """Lua 5.3's ``tostring`` for the values scripts put in tables."""
    if isinstance(value, bool):
        return "true" if value else "false"
    if value is None:
        return "nil"
    if isinstance(value, float):
        if value.is_integer() and abs(value) < 2**63:
            return f"{value:.1f}"
        return f"{value:.14g}"
    return str(value)


def _escape(text: str, keep: str) -> str:
    out: list[str] = []
    for char in text:
        code = ord(char)
        if char in keep or 0x20 <= code <= 0x7E:
            out.append(char)
        else:
            for byte in (
                char.encode("latin-1", errors="replace") if code < 256 else char.encode("utf-8")
            ):
                out.append(f"\\x{byte:02X}")
    return "".join(out)


def screen_text(text: str) -> str:
    """Nmap's ``escape_for_screen`` (``-oN``): tab and newline kept, others ``\\xHH``."""
    return _escape(text, "\t\n")


def protect_xml(text: str) -> str:
    """Nmap's ``protect_xml`` (``-oX``): tab, CR and newline kept, others ``\\xHH``."""
    return _escape(text, "\t\r\n")


class _Budget:
    """What is left of :data:`MAX_ELEMENTS` while copying one script's elements."""

    def __init__(self) -> None:
        self.left = MAX_ELEMENTS
        self.cut = False


def _bounded_elements(items: object, depth: int, budget: _Budget) -> list[dict[str, Any]]:
    """A well-formed copy of JSON elements within the bounds; anything else is dropped."""
    if not isinstance(items, list):
        budget.cut = True
        return []
    out: list[dict[str, Any]] = []
    for item in items:
        if budget.left <= 0:
            budget.cut = True
            break
        if not isinstance(item, Mapping):
            budget.cut = True
            continue
        key = item.get("key")
        if key is not None and not isinstance(key, str):
            key = lua_str(key)
        if "table" in item:
            if depth >= MAX_DEPTH:
                budget.cut = True
                continue
            budget.left -= 1
            out.append({"key": key, "table": _bounded_elements(item["table"], depth + 1, budget)})
        elif "value" in item:
            budget.left -= 1
            value = item["value"]
            text = value if isinstance(value, str) else lua_str(value)
            if len(text) > MAX_OUTPUT_CHARS:
                text, budget.cut = text[:MAX_OUTPUT_CHARS], True
            out.append({"key": key, "value": text})
        else:
            budget.cut = True
    return out


def script_result(item: object) -> dict[str, Any] | None:
    """One ``service.script_results`` entry, well formed and bounded, or None.

    The runner stores every entry through this (so a result, in Redis too, never
    holds more than :data:`MAX_OUTPUT_CHARS` of output per script, nor more than
    :data:`MAX_ELEMENTS` structured entries nested at most :data:`MAX_DEPTH` deep),
    and the writers read stored results through it (a result written by an older or
    foreign producer cannot make them fail). What was cut is flagged
    ``"truncated": true``; Nmap itself bounds none of this.
    """
    if not isinstance(item, Mapping):
        return None
    script_id, output = item.get("id"), item.get("output")
    if not isinstance(script_id, str) or not script_id:
        return None
    text = output if isinstance(output, str) else ""
    budget = _Budget()
    if len(text) > MAX_OUTPUT_CHARS:
        text, budget.cut = text[:MAX_OUTPUT_CHARS], True
    elements = item.get("elements")
    bounded = None if elements is None else _bounded_elements(elements, 1, budget)
    out: dict[str, Any] = {"id": script_id, "output": text, "elements": bounded}
    if budget.cut or item.get("truncated") is True:
        out["truncated"] = True
    return out


def script_items(service: object) -> list[dict[str, Any]]:
    """A stored service's ``script_results``, each through :func:`script_result`."""
    if not isinstance(service, Mapping):
        return []
    items = service.get("script_results")
    if not isinstance(items, list | tuple):
        return []
    return [r for r in (script_result(i) for i in items) if r is not None]
