"""Nmap's service fingerprint (``SF-Port…``), SPEC §8.4.

A fingerprint collects the responses of probes that ended without a hard
match, in the exact text form Nmap 7.93 prints and asks users to submit.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import time
from typing import Literal

__all__ = ["ServiceFingerprint", "escape_response", "servicefp", "wrap"]

#: characters Nmap writes behind a backslash
_BACKSLASHED = frozenset(b'\\?"[]().*+$^|')
#: wrap marker: newline plus the continuation prefix (counts toward the length)
_WRAP = "\nSF:"
_LINE = 75  # 74 visible characters plus the newline


def _escape_table() -> tuple[str, ...]:
    table: list[str] = []
    for byte in range(256):
        char = chr(byte)
        if char.isascii() and char.isalnum():
            table.append(char)
        elif byte in _BACKSLASHED:
            table.append("\\" + char)
        elif 0x21 <= byte <= 0x7E:
            table.append(char)
        elif byte == 0x0D:
            table.append("\\r")
        elif byte == 0x0A:
            table.append("\\n")
        elif byte == 0x09:
            table.append("\\t")
        elif byte == 0:
            table.append("\\0")
        else:
            table.append(f"\\x{byte:02x}")
    return tuple(table)


_ESCAPES = _escape_table()
_DIGITS = frozenset(b"0123456789")


def escape_response(data: bytes) -> str:
    """The escaped form of ``data`` as it appears inside ``%r(…,"…")``.

    A NUL is ``\\0`` unless the next byte of ``data`` is an ASCII digit, in
    which case it is ``\\x00`` (so the digit cannot be read as octal).
    The caller cuts ``data`` to the kept bytes first.
    """
    out: list[str] = []
    last = len(data) - 1
    for i, byte in enumerate(data):
        if byte == 0 and i < last and data[i + 1] in _DIGITS:
            out.append("\\x00")
        else:
            out.append(_ESCAPES[byte])
    return "".join(out)


def servicefp(text: str) -> str:
    """The fingerprint as XML's ``servicefp`` attribute carries it: one line."""
    return text.replace(_WRAP, "")


def wrap(flat: str) -> str:
    """The inverse of :func:`servicefp`: Nmap's 74-column form of a one-line fingerprint."""
    body = flat[:-1] if flat.endswith(";") else flat
    out: list[str] = []
    length = 0
    for char in body:
        if length % _LINE == _LINE - 1:
            out.append(_WRAP)
            length += len(_WRAP)
        out.append(char)
        length += 1
    return "".join(out) + (";" if flat.endswith(";") else "")


class ServiceFingerprint:
    """Incremental builder of one port's fingerprint.

    ``when`` is the Unix time written as ``%D`` (local month/day) and
    ``%Time`` (uppercase hex); ``ssl`` adds ``%T=SSL`` to the header, which is
    written just before the first entry (so set ``ssl`` before adding).
    ``debugging`` ≥ 1 raises the limits as Nmap's ``-d``/``--version-trace``
    do: 1300 bytes per response and 10000 characters in all.
    """

    def __init__(
        self,
        port: int,
        protocol: Literal["TCP", "UDP"],
        intensity: int,
        ssl: bool,
        when: float,
        platform: str = "x86_64-pc-linux-gnu",
        nmap_version: str = "7.93",
        debugging: int = 0,
    ) -> None:
        self.port = port
        self.protocol = protocol
        self.intensity = intensity
        self.ssl = ssl
        self.when = when
        self.platform = platform
        self.nmap_version = nmap_version
        self.debugging = debugging
        self._parts: list[str] = []
        self._length = 0

    @property
    def max_bytes(self) -> int:
        """Bytes of each response that are written out."""
        return 1300 if self.debugging else 900

    @property
    def max_chars(self) -> int:
        """Once the text is longer than this, further responses are skipped."""
        return 10000 if self.debugging else 2200

    def __len__(self) -> int:
        return self._length

    def __bool__(self) -> bool:
        return self._length > 0

    def header(self) -> str:
        local = time.localtime(self.when)
        return (
            f"SF-Port{self.port}-{self.protocol}:V={self.nmap_version}"
            f"{'%T=SSL' if self.ssl else ''}%I={self.intensity}"
            f"%D={local.tm_mon}/{local.tm_mday}%Time={int(self.when):X}%P={self.platform}"
        )

    def _append(self, text: str) -> None:
        """Append with Nmap's wrap rule: a line never exceeds 74 characters."""
        length = self._length
        parts = self._parts
        pos = 0
        while pos < len(text):
            room = _LINE - 1 - length % _LINE  # characters until L % 75 == 74
            if room == 0:
                parts.append(_WRAP)
                length += len(_WRAP)
                continue
            chunk = text[pos : pos + room]
            parts.append(chunk)
            length += len(chunk)
            pos += len(chunk)
        self._length = length

    def add(self, probe_name: str, response: bytes) -> None:
        """Record a probe's response (ignored once the text is too long)."""
        if self._length > self.max_chars:
            return
        if not self._parts:
            self._append(self.header())
        kept = response[: self.max_bytes]
        self._append(f'%r({probe_name},{len(response):X},"{escape_response(kept)}")')

    def reset(self, ssl: bool | None = None) -> None:
        """Forget everything (the SSL restart); optionally change the tunnel flag."""
        self._parts = []
        self._length = 0
        if ssl is not None:
            self.ssl = ssl

    def text(self) -> str | None:
        """The finished fingerprint (normal-output form, final ``;``), or None."""
        if not self._parts:
            return None
        return "".join(self._parts) + ";"
