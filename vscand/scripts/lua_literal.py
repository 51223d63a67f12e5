"""Lua table literals, read as data: the fact tables Nmap keeps in Lua files.

Some of Nmap's data files (``nselib/data/tftp-fingerprints.lua``) are Lua
chunks made of assignments of constructors (``name = { ... }``) and a
``return``. :func:`parse_assignments` reads such a chunk without running it:
strings (both quotes, long brackets, Lua's escapes), numbers, ``true``,
``false``, ``nil``, nested constructors with positional, ``name =`` and
``[key] =`` fields; comments are skipped. Anything else (a function call, an
expression) raises :class:`LuaSyntaxError`. A table is a :class:`LuaTable`:
its positional values in ``array`` (1-based in Lua) and its keyed fields in
``fields`` (in the order written).

Pure code; bounded: the nesting depth is limited.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Union

__all__ = ["LuaSyntaxError", "LuaTable", "LuaValue", "parse_assignments"]

LuaValue = Union[str, int, float, bool, None, "LuaTable"]
#: deepest constructor nesting accepted
MAX_DEPTH = 64


class LuaSyntaxError(ValueError):
    """Not a chunk of literal assignments."""


@dataclass
class LuaTable:
    array: list[LuaValue] = field(default_factory=list)
    fields: dict[str | int | float | bool, LuaValue] = field(default_factory=dict)

    def get(self, key: str | int) -> LuaValue:
        """``t[key]``: integer keys 1..n are the positional values."""
        if isinstance(key, int) and not isinstance(key, bool) and 1 <= key <= len(self.array):
            return self.array[key - 1]
        return self.fields.get(key)

    def ipairs(self) -> list[LuaValue]:
        """Lua's ``ipairs``: t[1], t[2], ... up to the first nil."""
        out: list[LuaValue] = []
        index = 1
        while True:
            value = self.get(index)
            if value is None:
                return out
            out.append(value)
            index += 1


_TOKEN = re.compile(
    r"""
    (?P<space>\s+)
  | (?P<long_comment>--\[(?P<lc_eq>=*)\[.*?\](?P=lc_eq)\])
  | (?P<comment>--[^\n]*)
  | (?P<long_string>\[(?P<ls_eq>=*)\[(?P<ls_body>.*?)\](?P=ls_eq)\])
  | (?P<string>"(?:[^"\\\n]|\\.|\\\n)*"|'(?:[^'\\\n]|\\.|\\\n)*')
  | (?P<number>0[xX][0-9a-fA-F]+|(?:[0-9]+\.?[0-9]*|\.[0-9]+)(?:[eE][+-]?[0-9]+)?)
  | (?P<name>[A-Za-z_][A-Za-z0-9_]*)
  | (?P<punct>[{}\[\]=,;])
    """,
    re.VERBOSE | re.DOTALL,
)
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "a": "\a", "b": "\b", "f": "\f", "v": "\v",
            "\\": "\\", '"': '"', "'": "'", "\n": "\n"}  # fmt: skip
_ESCAPE = re.compile(r"\\(x[0-9a-fA-F]{2}|[0-9]{1,3}|z\s*|.)", re.DOTALL)


def _unescape(body: str) -> str:
    def one(match: re.Match[str]) -> str:
        code = match.group(1)
        if code[0] == "x":
            return chr(int(code[1:], 16))
        if code.isdigit():
            value = int(code)
            if value > 255:
                raise LuaSyntaxError(f"escape \\{code} too large")
            return chr(value)
        if code[0] == "z":
            return ""
        if code in _ESCAPES:
            return _ESCAPES[code]
        raise LuaSyntaxError(f"invalid escape \\{code}")

    return _ESCAPE.sub(one, body)


def _tokens(text: str) -> list[tuple[str, str]]:
    out: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        match = _TOKEN.match(text, pos)
        if match is None:
            raise LuaSyntaxError(f"unexpected {text[pos : pos + 10]!r} at {pos}")
        pos = match.end()
        kind = match.lastgroup
        if kind in ("space", "long_comment", "comment"):
            continue
        if match.group("long_string") is not None:
            body = match.group("ls_body")
            out.append(("string", body[1:] if body.startswith("\n") else body))
        elif kind == "string":
            out.append(("string", _unescape(match.group(0)[1:-1])))
        else:
            assert kind is not None
            out.append((kind, match.group(0)))
    return out


class _Parser:
    def __init__(self, tokens: list[tuple[str, str]]) -> None:
        self.tokens = tokens
        self.pos = 0

    def peek(self, offset: int = 0) -> tuple[str, str]:
        at = self.pos + offset
        return self.tokens[at] if at < len(self.tokens) else ("eof", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if value is not None and token[1] != value:
            raise LuaSyntaxError(f"expected {value!r}, got {token[1]!r}")
        if token[0] == "eof":
            raise LuaSyntaxError("unexpected end")
        self.pos += 1
        return token

    def value(self, depth: int) -> LuaValue:
        kind, text = self.take()
        if kind == "string":
            return text
        if kind == "number":
            if text.lower().startswith("0x"):
                return int(text, 16)
            return float(text) if any(c in text for c in ".eE") else int(text)
        if kind == "name" and text in ("true", "false", "nil"):
            return {"true": True, "false": False, "nil": None}[text]
        if text == "{":
            return self.table(depth + 1)
        raise LuaSyntaxError(f"not a literal: {text!r}")

    def table(self, depth: int) -> LuaTable:
        if depth > MAX_DEPTH:
            raise LuaSyntaxError("tables nested too deep")
        table = LuaTable()
        while self.peek()[1] != "}":
            kind, text = self.peek()
            if text == "[":
                self.take()
                key = self.value(depth)
                self.take("]")
                self.take("=")
                if key is None or isinstance(key, LuaTable):
                    raise LuaSyntaxError("a table key must be a string, number or boolean")
                self._set(table, key, self.value(depth))
            elif kind == "name" and self.peek(1)[1] == "=":
                self.take()
                self.take("=")
                self._set(table, text, self.value(depth))
            else:
                table.array.append(self.value(depth))
            if self.peek()[1] in (",", ";"):
                self.take()
            elif self.peek()[1] != "}":
                raise LuaSyntaxError(f"expected ',' or '}}', got {self.peek()[1]!r}")
        self.take("}")
        return table

    @staticmethod
    def _set(table: LuaTable, key: str | int | float | bool, value: LuaValue) -> None:
        if isinstance(key, float) and key.is_integer():
            key = int(key)
        if isinstance(key, int) and not isinstance(key, bool) and key == len(table.array) + 1:
            table.array.append(value)
            return
        table.fields[key] = value


def parse_assignments(text: str) -> dict[str, LuaValue]:
    """The ``name = literal`` statements of a chunk (``local`` allowed; a final
    ``return name`` ignored)."""
    parser = _Parser(_tokens(text))
    out: dict[str, LuaValue] = {}
    while parser.peek()[0] != "eof":
        kind, text_ = parser.take()
        if kind == "name" and text_ == "local":
            kind, text_ = parser.take()
        if kind == "name" and text_ == "return":
            if parser.peek()[0] == "name":
                parser.take()
            continue
        if kind != "name":
            raise LuaSyntaxError(f"expected a name, got {text_!r}")
        parser.take("=")
        out[text_] = parser.value(0)
        if parser.peek()[1] == ";":
            parser.take()
    return out
