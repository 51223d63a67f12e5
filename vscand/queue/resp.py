"""Bounded replies: a streaming filter in front of the RESP parser.

A stream entry is written by other services, so the reply that delivers it is untrusted
input of any size. txredisapi's parser keeps a whole reply in memory (and copies its
buffer for every chunk that arrives), so an 80 MiB entry used to cost gigabytes of RSS and
seconds of reactor time before a single check could refuse it. :class:`ReplyCap` sits
between the socket and that parser and rewrites, as the bytes arrive:

* a bulk string longer than ``max_bulk``, or one that would take the reply past
  ``max_reply`` bytes of bulk data, into a short *cut marker* (its bytes are dropped as
  they arrive, never buffered);
* an array of more than ``max_items`` elements into a cut marker (its elements, nested
  ones included, are dropped).

A cut marker is a bulk string: ``<token>:<kind>:<size>`` where *token* is random per
process (a value from Redis cannot forge one), *kind* is ``bulk``, ``reply`` (over the
reply budget) or ``array``, and *size* the bytes or elements it replaced.
:func:`cut_size` reads one back. Lua scripts that return untrusted values cap them the
same way, with the token passed as an argument (``vscand/queue/consumer.py``).

RESP2 only (what txredisapi speaks): ``+ - : $ *``. Anything else, or a header line over
64 KiB, is a protocol error (:class:`ReplyCapError`): the caller drops the connection.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import secrets
from dataclasses import dataclass

CRLF = b"\r\n"
MAX_LINE = 65536


class ReplyCapError(ValueError):
    """The byte stream is not RESP2 (or a header line is absurdly long)."""


@dataclass(frozen=True)
class ReplyLimits:
    """What one connection's replies may hold: bytes per bulk string, elements per array,
    bytes of bulk data per top-level reply."""

    max_bulk: int
    max_items: int = 1024
    max_reply: int = 16 * 1024 * 1024


def new_token() -> bytes:
    """A cut-marker token: random, so no stored value can pass for a marker."""
    return b"\x00vscand-cut:" + secrets.token_hex(16).encode()


def marker(token: bytes, kind: str, size: int) -> bytes:
    return token + b":" + kind.encode() + b":" + str(size).encode()


def cut_size(token: bytes, value: object) -> tuple[str, int] | None:
    """``(kind, size)`` if *value* is a cut marker made with *token*, else ``None``."""
    if not isinstance(value, bytes) or not value.startswith(token + b":"):
        return None
    kind, _, size = value[len(token) + 1 :].partition(b":")
    if not size.isdigit():
        return None
    return kind.decode("ascii", "replace"), int(size)


class ReplyCap:
    """The filter of one connection: :meth:`feed` takes what the socket read and returns
    what the parser may see. Memory: one partial header line, a few counters."""

    def __init__(self, limits: ReplyLimits, token: bytes) -> None:
        if limits.max_bulk < 0 or limits.max_items < 0 or limits.max_reply < 0:
            raise ValueError("reply limits must not be negative")
        self.limits = limits
        self.token = token
        self._line = b""  # a header line not yet complete
        self._pass = 0  # bytes of a bulk body (and its CRLF) to hand on
        self._drop = 0  # bytes of a cut bulk body (and its CRLF) to drop
        self._open: list[int] = []  # elements still to come in the arrays being passed
        self._skip: list[int] = []  # elements still to come in the arrays being dropped
        self._spent = 0  # bulk bytes passed in the current top-level reply
        #: how many values were cut (for tests and logs)
        self.cuts = 0

    def feed(self, data: bytes) -> bytes:
        out: list[bytes] = []
        buf = self._line + data if self._line else data
        self._line = b""
        i, n = 0, len(buf)
        while i < n:
            if self._pass:
                take = min(self._pass, n - i)
                out.append(buf[i : i + take])
                i += take
                self._pass -= take
                if not self._pass:
                    self._element_done()
                continue
            if self._drop:
                take = min(self._drop, n - i)
                i += take
                self._drop -= take
                if not self._drop:
                    self._skipped_one() if self._skip else self._element_done()
                continue
            j = buf.find(CRLF, i)
            if j < 0:
                self._line = buf[i:]
                if len(self._line) > MAX_LINE:
                    raise ReplyCapError(f"a reply header line over {MAX_LINE} bytes")
                break
            if j - i > MAX_LINE:
                raise ReplyCapError(f"a reply header line over {MAX_LINE} bytes")
            line = buf[i:j]
            i = j + 2
            self._header(line, out)
        return b"".join(out)

    # one header line: +, -, :, $ or *
    def _header(self, line: bytes, out: list[bytes]) -> None:
        kind = line[:1]
        if kind not in (b"+", b"-", b":", b"$", b"*"):
            raise ReplyCapError(f"not RESP2: a reply line starts with {kind!r}")
        if kind in (b"$", b"*"):
            try:
                size = int(line[1:])
            except ValueError:
                raise ReplyCapError(f"bad length in reply line {line[:40]!r}") from None
        if self._skip:  # inside an array being dropped
            if kind == b"*" and size > 0:
                self._skip.append(size)
            elif kind == b"$" and size >= 0:
                self._drop = size + 2
            else:
                self._skipped_one()
            return
        if kind == b"$":
            if size < 0:
                out.append(line + CRLF)
                self._element_done()
            elif size > self.limits.max_bulk:
                self._cut(out, "bulk", size)
                self._drop = size + 2
            elif self._spent + size > self.limits.max_reply:
                self._cut(out, "reply", size)
                self._drop = size + 2
            else:
                out.append(line + CRLF)
                self._spent += size
                self._pass = size + 2
        elif kind == b"*":
            if size > self.limits.max_items:
                self._cut(out, "array", size)
                self._skip.append(size)
            elif size <= 0:
                out.append(line + CRLF)
                self._element_done()
            else:
                out.append(line + CRLF)
                self._open.append(size)
        else:
            out.append(line + CRLF)
            self._element_done()

    def _cut(self, out: list[bytes], kind: str, size: int) -> None:
        value = marker(self.token, kind, size)
        out.append(b"$" + str(len(value)).encode() + CRLF + value + CRLF)
        self.cuts += 1

    def _skipped_one(self) -> None:
        """One element of the innermost dropped array ended."""
        while self._skip:
            self._skip[-1] -= 1
            if self._skip[-1] > 0:
                return
            self._skip.pop()  # that array ended: one element of the one around it
        self._element_done()  # the dropped array (its marker) ended

    def _element_done(self) -> None:
        """One element of the innermost passed array ended (or a top-level reply)."""
        while self._open:
            self._open[-1] -= 1
            if self._open[-1] > 0:
                return
            self._open.pop()
        self._spent = 0  # a top-level reply ended
