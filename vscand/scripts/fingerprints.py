"""A probe's response read back from the service fingerprint Nmap (and vscand) keep
for an unrecognised port: what NSE's ``lpeg-utility.get_response`` gives scripts.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

__all__ = ["fingerprint_response"]


def _unescape(text: str) -> bytes:
    """The bytes of an escaped response (``\\r \\n \\t \\0``, ``\\xHH``, ``\\c``)."""
    out = bytearray()
    i, n = 0, len(text)
    while i < n:
        char = text[i]
        if char != "\\":
            out += char.encode("latin-1", "replace")
            i += 1
            continue
        i += 1
        if i >= n:
            break
        code = text[i]
        if code in "trn0":
            out.append({"t": 9, "r": 13, "n": 10, "0": 0}[code])
            i += 1
        elif code == "x":
            digits = ""
            i += 1
            while i < n and len(digits) < 2 and text[i] in "0123456789abcdefABCDEF":
                digits += text[i]
                i += 1
            out.append(int(digits, 16) if digits else 0)
        else:
            out += code.encode("latin-1", "replace")
            i += 1
    return bytes(out)


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
