"""``fingerprint-strings``: the readable strings of an unrecognised port's responses.

Runs on every port that has a service fingerprint (any protocol, any
intensity; no traffic). The fingerprint is decoded as NSE's
``lpeg-utility.parse_fp`` decodes it (:func:`parse_fingerprint`); for each
probe, in byte order of the names, the response is reduced to its runs of at
least ``n`` (4) printable characters (a run of spaces and tabs counts as one
and is printed as one space), each on its own line indented four spaces;
probes whose strings are the same are listed together (``A, B``). Output: a
table, label -> strings, labels in byte order. Changes nothing.
"""

from __future__ import annotations

import re

from vscand.output.script_output import ScriptFailed, ScriptOutput, Table
from vscand.scripts.api import BaseScript, PortView, RuleContext, ScriptRun
from vscand.scripts.fingerprints import FingerprintError, parse_fingerprint

__all__ = ["MIN_LENGTH", "FingerprintStrings", "fingerprint_strings", "readable_strings"]

#: the script's ``fingerprint-strings.n`` default
MIN_LENGTH = 4
_SEPARATOR = b"\n    "


def _printable(byte: int) -> bool:
    return 0x21 <= byte <= 0x7E


def _plain(blob: bytes, pos: int, n: int) -> tuple[bytes, int] | None:
    """At least ``n`` elements: a printable byte, or a run of spaces/tabs (one space)."""
    out = bytearray()
    count, i, size = 0, pos, len(blob)
    while i < size:
        byte = blob[i]
        if _printable(byte):
            out.append(byte)
            i += 1
        elif byte in (0x20, 0x09):
            while i < size and blob[i] in (0x20, 0x09):
                i += 1
            out.append(0x20)
        else:
            break
        count += 1
    return (bytes(out), i) if count >= n else None


def _skip(blob: bytes, pos: int, n: int) -> int | None:
    """Repeatedly: fewer than ``n`` printable bytes, then at least one other byte
    (space included). The end, or None when not even once."""
    i, size, matched = pos, len(blob), False
    while True:
        j = i
        while j < size and j - i < n - 1 and _printable(blob[j]):
            j += 1
        if j >= size or _printable(blob[j]):
            break
        while j < size and not _printable(blob[j]):
            j += 1
        i, matched = j, True
    return i if matched else None


def readable_strings(blob: bytes, n: int = MIN_LENGTH) -> bytes | None:
    """The script's ``strings``: long-enough runs kept, everything between them
    replaced by a newline and four spaces; what follows the last run that
    matched is dropped. None when nothing matches at the start (LPeg's nil)."""
    out = bytearray()
    pos, matched = 0, False
    while True:
        plain = _plain(blob, pos, n)
        if plain is not None:
            out += plain[0]
            pos, matched = plain[1], True
            continue
        skipped = _skip(blob, pos, n)
        if skipped is None:
            break
        out += _SEPARATOR
        pos, matched = skipped, True
    return bytes(out) if matched else None


_LEADING = re.compile(rb"^[\n ]*")


def fingerprint_strings(fingerprint: str, n: int = MIN_LENGTH) -> Table | None:
    """The script's output table for ``fingerprint``, or None (nothing printed).

    Raises :class:`ScriptFailed` where NSE's Lua dies: a fingerprint that does
    not parse (``tableaux.keys(nil)``) or an undecodable escape.
    """
    try:
        responses = parse_fingerprint(fingerprint)
    except FingerprintError as exc:
        raise ScriptFailed(str(exc)) from exc
    if responses is None:
        raise ScriptFailed("the fingerprint has no response")
    invert: dict[bytes, list[str]] = {}
    for probe in sorted(responses, key=lambda name: name.encode("latin-1", "replace")):
        plain = readable_strings(responses[probe], n)
        if plain is None:
            continue
        plain = _LEADING.sub(_SEPARATOR, plain, count=1).rstrip(b"\n ")
        if plain:
            invert.setdefault(plain, []).append(probe)
    if not invert:
        return None
    labels = {", ".join(probes): plain for plain, probes in invert.items()}
    table = Table()
    for label in sorted(labels, key=lambda name: name.encode("latin-1", "replace")):
        table[label] = labels[label].decode("ascii")
    return table


class FingerprintStrings(BaseScript):
    name = "fingerprint-strings"

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return bool(port.fingerprint)

    async def action(self, run: ScriptRun) -> ScriptOutput | None:
        fingerprint = run.port.fingerprint
        if not fingerprint:
            return None
        table = fingerprint_strings(fingerprint)
        return None if table is None else ScriptOutput(table=table)
