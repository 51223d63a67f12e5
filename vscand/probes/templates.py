"""Version-info template expansion (SPEC §1.11-1.13), quirks included.

Nmap expands each template into a fixed C buffer (product 80 bytes, extrainfo
256, ...).  This module reproduces that buffer arithmetic byte for byte: which
length fails a field, NUL bytes in captures cutting that substitution (before
the length check; literal text after it is kept), trailing whitespace and
commas stripped from the end of the *buffer*, ``$P``/``$SUBST``/``$I``
argument parsing, and CPE escaping.

A failed field is empty; the match itself still counts (Nmap prints a warning).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from vscand.probes.lines import EscapeError, cstring_unescape
from vscand.probes.model import Templates
from vscand.probes.pcre import Match

FIELD_SIZES = {
    "product": 80,
    "version": 80,
    "extrainfo": 256,
    "hostname": 80,
    "ostype": 32,
    "devicetype": 32,
}
CPE_SIZE = 80
FIELDS = tuple(FIELD_SIZES)

_C_SPACE = frozenset(b" \t\n\v\f\r")
_STRIP = _C_SPACE | {ord(",")}
SUBST_MAX_ARGS = 5
SUBST_STRLEN = 128
_CPE_SPECIAL = frozenset(b":/?#[]@!$&'()*+,;=%<>\"")


class _Failure(Exception):
    """The template cannot be expanded: the whole field is left empty."""


def printable(value: bytes) -> str:
    """Nmap's ``replacenonprintable``: bytes outside 0x20-0x7E become ``.``."""
    return "".join(chr(b) if 0x20 <= b <= 0x7E else "." for b in value)


def cpe_escape(value: bytes) -> bytes:
    """Escaping applied to every substituted value inside a ``cpe:`` template."""
    out = bytearray()
    for b in value:
        if b in _CPE_SPECIAL:
            out += b"%%%02X" % b
        elif b in _C_SPACE:
            out.append(ord("_"))
        elif 0x41 <= b <= 0x5A:
            out.append(b + 32)
        else:
            out.append(b)
    return bytes(out)


@dataclass
class _Args:
    ints: list[int | None]
    strs: list[bytes | None]


def _strtol_auto(text: bytes, pos: int) -> tuple[int | None, int]:
    """``strtol(s, &end, 0)``: optional space and sign, 0x hex, 0 octal, decimal."""
    n = len(text)
    i = pos
    while i < n and text[i] in _C_SPACE:
        i += 1
    sign = 1
    if i < n and text[i] in b"+-":
        sign = -1 if text[i] == ord("-") else 1
        i += 1
    digits = b"0123456789"
    base = 10
    if i < n and text[i] == ord("0"):
        if (
            i + 2 < n + 1
            and text[i + 1 : i + 2] in (b"x", b"X")
            and i + 2 < n
            and (text[i + 2] in b"0123456789abcdefABCDEF")
        ):
            base = 16
            i += 2
            digits = b"0123456789abcdefABCDEF"
        else:
            base = 8
            digits = b"01234567"
    start = i
    while i < n and text[i] in digits:
        i += 1
    if i == start:
        return None, pos
    value = sign * int(text[start:i], base)
    # (int) cast of a long, as Nmap does
    value = (value + 2**31) % 2**32 - 2**31
    return value, i


def _parse_args(tmpl: bytes, pos: int) -> tuple[_Args, int]:
    """Nmap's ``getsubstcommandargs`` from just after ``(``."""
    args = _Args(ints=[], strs=[])
    n = len(tmpl)
    i = pos
    while i < n and tmpl[i] != ord(")"):
        while i < n and tmpl[i] in _C_SPACE:
            i += 1
        if i >= n or tmpl[i] == ord(")"):
            break
        if len(args.ints) == SUBST_MAX_ARGS:
            raise _Failure("too many arguments")
        if tmpl[i] == ord('"'):
            raw = bytearray()
            while True:
                i += 1
                if i >= n:
                    raise _Failure("unterminated string argument")
                prev = tmpl[i - 1]
                prev2 = tmpl[i - 2] if i >= 2 else 0
                if tmpl[i] == ord('"') and (prev != ord("\\") or prev2 == ord("\\")):
                    break
                if len(raw) >= SUBST_STRLEN - 1:
                    raise _Failure("string argument too long")
                raw.append(tmpl[i])
            try:
                value = cstring_unescape(bytes(raw))
            except EscapeError:
                raise _Failure("bad escape in string argument") from None
            args.strs.append(value)
            args.ints.append(None)
            i += 1
        else:
            number, end = _strtol_auto(tmpl, i)
            if number is None:
                raise _Failure("bad integer argument")
            args.ints.append(number)
            args.strs.append(None)
            i = end
        comma = _find_any(tmpl, i, b",)")
        if comma < 0:
            raise _Failure("no ',' or ')' after argument")
        i = comma + 1 if tmpl[comma] == ord(",") else comma
    if i < n and tmpl[i] == ord(")"):
        i += 1
    return args, i


def _find_any(data: bytes, pos: int, chars: bytes) -> int:
    for j in range(pos, len(data)):
        if data[j] in chars:
            return j
    return -1


def _cstr(value: bytes) -> bytes:
    """``value`` read back as a C string: up to its first NUL byte."""
    nul = value.find(b"\0")
    return value if nul < 0 else value[:nul]


def _capture(subject: bytes, match: Match, subnum: int | None) -> bytes:
    if subnum is None or subnum > 9 or subnum <= 0 or subnum >= match.rc:
        raise _Failure(f"no capture group {subnum}")
    start, end = match.groups[subnum]
    if start < 0 or end < 0:
        # Nmap 7.93 aborts on an assertion here; later versions and we fail the field.
        raise _Failure(f"capture group {subnum} did not participate")
    return subject[start:end]


def _substitute(
    tmpl: bytes, pos: int, subject: bytes, match: Match, room: int, cpe: bool
) -> tuple[bytes, int]:
    """One ``$…`` item at ``pos``; returns the bytes written and the next position."""
    i = pos + 1
    if i < len(tmpl) and 0x30 <= tmpl[i] <= 0x39:
        # The capture is a C string from here on: cut at its first NUL *before*
        # the length check (a long capture with an early NUL fits; literal text
        # after it is kept) -- verified against nmap 7.93 by the oracle tests.
        value = _cstr(_capture(subject, match, tmpl[i] - 0x30))
        i += 1
        if cpe:
            value = cpe_escape(value)
        if len(value) >= room:
            raise _Failure("capture exceeds the field's length")
        return value, i
    paren = tmpl.find(b"(", i)
    if paren < 0:
        raise _Failure("'$' not followed by a group number or a command")
    command = tmpl[i:paren]
    if not command or len(command) >= 16:
        raise _Failure("bad command name")
    args, end = _parse_args(tmpl, paren + 1)
    if not args.ints:
        raise _Failure("command without arguments")
    out = bytearray()
    if command == b"P":
        if len(args.ints) != 1 or args.ints[0] is None:
            raise _Failure("$P takes one group number")
        for b in _capture(subject, match, args.ints[0]):
            if 0x20 <= b <= 0x7E:
                if len(out) >= room - 1:
                    raise _Failure("$P result exceeds the field's length")
                out.append(b)
    elif command == b"SUBST":
        if len(args.ints) != 3 or args.ints[0] is None or None in (args.strs[1], args.strs[2]):
            raise _Failure("$SUBST takes a group number and two strings")
        find = args.strs[1]
        repl = args.strs[2]
        assert find is not None and repl is not None
        if not find:
            # Nmap loops forever on an empty search string; we refuse it.
            raise _Failure("$SUBST with an empty search string")
        # only the capture's bytes before its first NUL are substituted (oracle-verified)
        value = _cstr(_capture(subject, match, args.ints[0]))
        j = 0
        while j < len(value):
            if len(out) >= room - 1:
                raise _Failure("$SUBST result exceeds the field's length")
            if value.startswith(find, j):
                if room - 1 - len(out) < len(repl):
                    raise _Failure("$SUBST result exceeds the field's length")
                out += repl
                j += len(find)
            else:
                out.append(value[j])
                j += 1
    elif command == b"I":
        if (
            len(args.ints) != 2
            or args.ints[0] is None
            or args.strs[1] is None
            or args.strs[1] not in (b">", b"<")
        ):
            raise _Failure('$I takes a group number and ">" or "<"')
        value = _capture(subject, match, args.ints[0])
        if len(value) > 8:
            raise _Failure("$I capture longer than 8 bytes")
        order: Literal["big", "little"] = "big" if args.strs[1] == b">" else "little"
        out += str(int.from_bytes(value, order)).encode()
    else:
        raise _Failure(f"unknown command ${command.decode('latin-1')}")
    result = _cstr(bytes(out))
    if cpe:
        result = cpe_escape(result)
    if len(result) >= room:
        raise _Failure("substitution exceeds the field's length")
    return result, end


def expand(
    tmpl: bytes, subject: bytes, match: Match, size: int, *, cpe: bool = False
) -> bytes | None:
    """Expand one template into a ``size``-byte C buffer; ``None`` when it fails."""
    try:
        return _expand(tmpl, subject, match, size, cpe)
    except _Failure:
        return None


def _finish(buf: bytearray) -> bytes:
    end = len(buf)
    while end > 0 and buf[end - 1] in _STRIP:
        end -= 1
    value = bytes(buf[:end])
    nul = value.find(b"\0")
    return value if nul < 0 else value[:nul]


def _expand(tmpl: bytes, subject: bytes, match: Match, size: int, cpe: bool) -> bytes:
    if size < 3:
        raise _Failure("buffer too small")
    buf = bytearray()
    pos = 0
    n = len(tmpl)
    while pos < n:
        dollar = tmpl.find(b"$", pos)
        if dollar < 0:
            for b in tmpl[pos:]:
                if len(buf) >= size - 1:
                    raise _Failure("literal text exceeds the field's length")
                buf.append(b)
            return _finish(buf)
        literal = tmpl[pos:dollar]
        if literal:
            if size - len(buf) <= len(literal) - 1:
                raise _Failure("literal text exceeds the field's length")
            buf += literal
        value, pos = _substitute(tmpl, dollar, subject, match, size - len(buf), cpe)
        buf += value
    if len(buf) >= size - 1:
        raise _Failure("result exceeds the field's length")
    return _finish(buf)


@dataclass(frozen=True)
class VersionInfo:
    """The fields one match line produced (printable ASCII, empty = absent)."""

    product: str | None = None
    version: str | None = None
    extrainfo: str | None = None
    hostname: str | None = None
    ostype: str | None = None
    devicetype: str | None = None
    cpe_a: str | None = None
    cpe_h: str | None = None
    cpe_o: str | None = None
    warnings: tuple[str, ...] = ()

    @property
    def cpes(self) -> tuple[str, ...]:
        return tuple(c for c in (self.cpe_a, self.cpe_h, self.cpe_o) if c)


def expand_all(templates: Templates, subject: bytes, match: Match, where: str = "") -> VersionInfo:
    """Every template of a match line, as Nmap's ``getVersionStr``."""
    values: dict[str, str | None] = {}
    warnings: list[str] = []
    for name in FIELDS:
        tmpl = getattr(templates, name)
        if tmpl is None:
            values[name] = None
            continue
        result = expand(tmpl, subject, match, FIELD_SIZES[name])
        if result is None:
            warnings.append(f"failed to fill {name} template {tmpl!r} ({where})")
            values[name] = None
        else:
            values[name] = printable(result) or None
    slots: dict[str, str | None] = {"a": None, "h": None, "o": None}
    for tmpl in templates.cpes:
        part = chr(tmpl[5]) if len(tmpl) > 5 else ""
        if part not in slots:
            warnings.append(f"CPE template {tmpl!r} has an unknown part ({where})")
            continue
        result = expand(tmpl, subject, match, CPE_SIZE, cpe=True)
        if result is None:
            warnings.append(f"failed to fill CPE template {tmpl!r} ({where})")
            slots[part] = None
        else:
            slots[part] = printable(result) or None
    return VersionInfo(
        **values,
        cpe_a=slots["a"],
        cpe_h=slots["h"],
        cpe_o=slots["o"],
        warnings=tuple(warnings),
    )
