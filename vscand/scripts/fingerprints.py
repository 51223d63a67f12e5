"""A probe's response read back from the service fingerprint Nmap (and vscand) keep
for an unrecognised port: what NSE's ``lpeg-utility.get_response`` gives scripts.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import re

__all__ = ["FingerprintError", "fingerprint_response", "nse_get_response", "parse_fingerprint"]


def _unescape(text: str) -> bytes:
    """The bytes of an escaped response (``\\r \\n \\t \\0``, ``\\xHH``, ``\\c``); a ``\\x``
    without a hex digit is a NUL here (NSE's reading, :func:`_nse_unescape`, fails)."""
    return _decode_escapes(text, strict_hex=False)


def fingerprint_response(fingerprint: str | None, probe: str) -> bytes | None:
    """The response to ``probe`` kept in a service fingerprint, or None.

    NSE's ``lpeg-utility.get_response``: the first ``<probe>,<hex>,"`` in the
    fingerprint (with its ``\\nSF:`` wraps removed), then the quoted text up to
    the first unescaped ``"``, unescaped. Only what the fingerprint kept (900
    bytes per response) can be read back.
    """
    if not fingerprint:
        return None
    text = fingerprint.replace("\nSF:", "")
    start = 0
    head = f"{probe},"
    while True:
        at = text.find(head, start)
        if at < 0:
            return None
        pos = at + len(head)
        hex_end = pos
        while hex_end < len(text) and text[hex_end] in "0123456789abcdefABCDEF":
            hex_end += 1
        if hex_end > pos and text.startswith(',"', hex_end):
            break
        start = at + 1
    i = hex_end + 2
    body_start = i
    while i < len(text):
        if text[i] == "\\":
            i += 2
            continue
        if text[i] == '"':
            break
        i += 1
    return _unescape(text[body_start:i])


class FingerprintError(ValueError):
    """An escape NSE's Lua cannot decode (``\\x`` without a hex digit): the script dies."""


def _unquote(text: str) -> str:
    """``escaped_quote``'s capture: ``\\\\`` and ``\\"`` lose their backslash, other
    escapes stay for the unescaping pass (NSE decodes a fingerprint twice)."""
    return re.sub(r'\\([\\"])', r"\1", text)


def _quoted(text: str, start: int) -> tuple[str, int] | None:
    """The quoted string at ``start`` (``escaped_quote``): its raw content and the
    index after the closing quote, or None (no opening or no closing quote)."""
    if not text.startswith('"', start):
        return None
    i, n = start + 1, len(text)
    while i < n:
        char = text[i]
        if char == '"':
            return text[start + 1 : i], i + 1
        if char == "\\":
            if i + 1 >= n:
                return None
            i += 2
            continue
        i += 1
    return None


_HEX_DIGITS = frozenset("0123456789abcdefABCDEF")


def _nse_unescape(text: str) -> bytes:
    """``lpeg-utility``'s unescape pass: ``\\t \\r \\n \\0``, ``\\xH``/``\\xHH``, else
    the escaped character; a trailing lone backslash ends the string there."""
    return _decode_escapes(text, strict_hex=True)


def _decode_escapes(text: str, *, strict_hex: bool) -> bytes:
    """One pass over a fingerprint's escapes; ``strict_hex``: a ``\\x`` without a hex digit
    raises :class:`FingerprintError` (else it gives a NUL)."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char != "\\":
            out += char.encode("latin-1", "replace")
            i += 1
            continue
        if i + 1 >= n:
            break
        code = text[i + 1]
        i += 2
        if code in "trn0":
            out.append({"t": 9, "r": 13, "n": 10, "0": 0}[code])
        elif code == "x":
            digits = ""
            while i < n and len(digits) < 2 and text[i] in _HEX_DIGITS:
                digits += text[i]
                i += 1
            if not digits and strict_hex:
                raise FingerprintError("\\x without a hex digit")
            out.append(int(digits, 16) if digits else 0)
        else:
            out += code.encode("latin-1", "replace")
    return bytes(out)


_UPPER_HEX = frozenset("0123456789ABCDEF")


def parse_fingerprint(fingerprint: str) -> dict[str, bytes] | None:
    """Every probe's response in a service fingerprint (NSE's ``lpeg-utility.parse_fp``).

    From the first ``%r(``: ``NAME,HEX,"..."`` entries, each optionally followed by
    ``)%r(``; a later entry of the same name replaces an earlier one. None when
    there is no ``%r(`` or its first entry does not parse (NSE's ``nil``).
    Raises :class:`FingerprintError` where NSE's decoding dies.
    """
    text = fingerprint.replace("\nSF:", "")
    at = text.find("%r(")
    if at < 0:
        return None
    pos = at + 3
    found: dict[str, bytes] = {}
    n = len(text)
    while True:
        comma = text.find(",", pos)
        if comma <= pos:
            break
        hex_end = comma + 1
        while hex_end < n and text[hex_end] in _UPPER_HEX:
            hex_end += 1
        if hex_end == comma + 1 or not text.startswith(",", hex_end):
            break
        quoted = _quoted(text, hex_end + 1)
        if quoted is None:
            break
        found[text[pos:comma]] = _nse_unescape(_unquote(quoted[0]))
        pos = quoted[1]
        if text.startswith(")%r(", pos):
            pos += 4
    return found if found else None


def nse_get_response(fingerprint: str, probe: str) -> bytes | None:
    """NSE's ``get_response`` exactly: like :func:`fingerprint_response`, but decoded
    twice as NSE does (``escaped_quote`` then the unescaping pass), so a response
    holding a backslash reads back as NSE's scripts see it. Raises
    :class:`FingerprintError` where NSE's decoding dies."""
    text = fingerprint.replace("\nSF:", "")
    found = re.search(re.escape(probe) + ",[0-9a-fA-F]+,", text)
    if found is None:
        return None
    quoted = _quoted(text, found.end())
    if quoted is None:
        raise FingerprintError("no quoted response after the probe name")
    return _nse_unescape(_unquote(quoted[0]))
