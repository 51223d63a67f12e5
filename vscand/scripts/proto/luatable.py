"""Fact tables kept inside NSE scripts, read at run time from the installed Nmap.

Some NSE scripts carry a lookup table as a Lua table constructor
(``local vendor_id = { [0] = "Reserved", [1] = "...", ... }``). We do not copy
those tables: :func:`nse_table` reads the one of the Nmap installed (the
release reproduced) when a script first needs it. :func:`parse_table`
understands what such constructors hold: ``[integer] = string`` fields
separated by ``,`` or ``;``, Lua comments, short strings with Lua's escapes
and long-bracket strings. Text is read as latin-1, so a value's characters
are its bytes.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import functools
import re

__all__ = ["NSE_SCRIPT_DIRS", "LuaTableError", "nse_table", "parse_table"]

#: where Nmap's scripts are installed (``nmap.fetchfile``'s search, scripts/)
NSE_SCRIPT_DIRS = ("/usr/share/nmap/scripts", "/usr/local/share/nmap/scripts")


class LuaTableError(ValueError):
    """The source has no such table, or the constructor holds something else."""


_SIMPLE_ESCAPES = {"a": 7, "b": 8, "f": 12, "n": 10, "r": 13, "t": 9, "v": 11,
                   "\\": 92, '"': 34, "'": 39, "\n": 10}  # fmt: skip
_LONG_OPEN = re.compile(r"\[(=*)\[")


class _Reader:
    def __init__(self, text: str, pos: int) -> None:
        self.text = text
        self.pos = pos

    def fail(self, what: str) -> LuaTableError:
        return LuaTableError(f"{what} at offset {self.pos}")

    def skip(self) -> None:
        """Whitespace and comments."""
        text = self.text
        while self.pos < len(text):
            if text[self.pos].isspace():
                self.pos += 1
            elif text.startswith("--", self.pos):
                long = _LONG_OPEN.match(text, self.pos + 2)
                if long:
                    end = text.find("]" + long.group(1) + "]", long.end())
                    if end < 0:
                        raise self.fail("unfinished long comment")
                    self.pos = end + len(long.group(1)) + 2
                else:
                    end = text.find("\n", self.pos)
                    self.pos = len(text) if end < 0 else end + 1
            else:
                return

    def expect(self, token: str) -> None:
        self.skip()
        if not self.text.startswith(token, self.pos):
            raise self.fail(f"expected {token!r}")
        self.pos += len(token)

    def integer(self) -> int:
        self.skip()
        found = re.compile(r"-?(0[xX][0-9a-fA-F]+|\d+)").match(self.text, self.pos)
        if not found:
            raise self.fail("expected an integer key")
        self.pos = found.end()
        return int(found.group(0), 0)

    def string(self) -> str:
        self.skip()
        text = self.text
        long = _LONG_OPEN.match(text, self.pos)
        if long:
            close = "]" + long.group(1) + "]"
            end = text.find(close, long.end())
            if end < 0:
                raise self.fail("unfinished long string")
            value = text[long.end() : end]
            self.pos = end + len(close)
            return value[1:] if value.startswith("\n") else value
        if self.pos >= len(text) or text[self.pos] not in "\"'":
            raise self.fail("expected a string")
        quote = text[self.pos]
        self.pos += 1
        out: list[str] = []
        while True:
            if self.pos >= len(text) or text[self.pos] == "\n":
                raise self.fail("unfinished string")
            char = text[self.pos]
            self.pos += 1
            if char == quote:
                return "".join(out)
            if char != "\\":
                out.append(char)
                continue
            out.append(self._escape())

    def _escape(self) -> str:
        text = self.text
        if self.pos >= len(text):
            raise self.fail("unfinished escape")
        code = text[self.pos]
        self.pos += 1
        if code in _SIMPLE_ESCAPES:
            return chr(_SIMPLE_ESCAPES[code])
        if code == "x":
            digits = text[self.pos : self.pos + 2]
            if not re.fullmatch(r"[0-9a-fA-F]{2}", digits):
                raise self.fail("bad \\x escape")
            self.pos += 2
            return chr(int(digits, 16))
        if code == "z":
            while self.pos < len(text) and text[self.pos].isspace():
                self.pos += 1
            return ""
        if code.isdigit():
            decimal = re.compile(r"\d{1,3}").match(text, self.pos - 1)
            assert decimal is not None
            self.pos = decimal.end()
            value = int(decimal.group(0))
            if value > 255:
                raise self.fail("decimal escape too large")
            return chr(value)
        if code == "u":
            found = re.compile(r"\{([0-9a-fA-F]+)\}").match(text, self.pos)
            if not found:
                raise self.fail("bad \\u escape")
            self.pos = found.end()
            return bytes(chr(int(found.group(1), 16)), "utf-8").decode("latin-1")
        raise self.fail("invalid escape")


def parse_table(source: str, name: str) -> dict[int, str]:
    """The ``[integer] = string`` fields of ``local <name> = { ... }`` in ``source``
    (a later field of the same key wins, as in Lua)."""
    found = re.search(rf"(?m)^\s*local\s+{re.escape(name)}\s*=\s*\{{", source)
    if not found:
        raise LuaTableError(f"no table {name!r}")
    reader = _Reader(source, found.end())
    table: dict[int, str] = {}
    while True:
        reader.skip()
        if source.startswith("}", reader.pos):
            return table
        reader.expect("[")
        key = reader.integer()
        reader.expect("]")
        reader.expect("=")
        table[key] = reader.string()
        reader.skip()
        if source.startswith((",", ";"), reader.pos):
            reader.pos += 1
        elif not source.startswith("}", reader.pos):
            raise reader.fail("expected ',' or '}'")


@functools.cache
def nse_table(
    script_file: str, name: str, dirs: tuple[str, ...] = NSE_SCRIPT_DIRS
) -> dict[int, str]:
    """Table ``name`` of the installed ``script_file`` (e.g. ``enip-info.nse``), read once.

    An empty dict when no installed script has it (lookups then give the
    script's "unknown" text, as NSE would with an empty table).
    """
    for directory in dirs:
        try:
            with open(f"{directory}/{script_file}", encoding="latin-1") as handle:
                source = handle.read()
        except OSError:
            continue
        try:
            return parse_table(source, name)
        except LuaTableError:
            return {}
    return {}
