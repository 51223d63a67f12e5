"""The regex engine Nmap 7.93 uses: PCRE 8 (``libpcre.so.3``), through ctypes.

Nmap compiles every ``match``/``softmatch`` pattern with ``pcre_compile`` using
only ``PCRE_CASELESS`` (flag ``i``) and ``PCRE_DOTALL`` (flag ``s``), studies it
with ``pcre_study(…, 0, …)`` and runs ``pcre_exec`` over the whole response
buffer with a match limit of 100 000 and a recursion limit of 10 000.  Hitting a
limit counts as "no match".  (``service_scan.cc`` at ``9732e6979``, Nmap 7.93, lines
407-440 and 505-530; 7.94 is the same.  Nmap 7.95 and later use PCRE2: :mod:`pcre2`.)

Calling the very library Nmap links against (Debian's ``libpcre3``) means there
is no dialect to translate: anchors, octal and hex escapes, POSIX classes,
``\\Q…\\E``, ``{,n}``, inline options, byte case folding and the limits all
behave as they do in Nmap, and the limits bound the cost of every match
attempt.  ctypes releases the GIL while ``pcre_exec`` runs, so matching can
run on worker threads.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import ctypes.util
import os
import threading
from dataclasses import dataclass
from typing import Any

import cffi

PCRE_CASELESS = 0x00000001
PCRE_DOTALL = 0x00000004

PCRE_EXTRA_MATCH_LIMIT = 0x0002
PCRE_EXTRA_MATCH_LIMIT_RECURSION = 0x0010

PCRE_ERROR_NOMATCH = -1
PCRE_ERROR_MATCHLIMIT = -8
PCRE_ERROR_RECURSIONLIMIT = -21

PCRE_INFO_CAPTURECOUNT = 2

#: Nmap 7.93's limits (service_scan.cc).
MATCH_LIMIT = 100_000
MATCH_LIMIT_RECURSION = 10_000
#: Nmap passes a 150-int ovector: up to 50 (start, end) pairs are reported.
OVECTOR_INTS = 150

_CDEF = """
typedef struct {
  unsigned long int flags;
  void *study_data;
  unsigned long int match_limit;
  void *callout_data;
  const unsigned char *tables;
  unsigned long int match_limit_recursion;
  unsigned char **mark;
  void *executable_jit;
} pcre_extra;
void *pcre_compile(const char *pattern, int options, const char **errptr,
                   int *erroffset, const unsigned char *tableptr);
pcre_extra *pcre_study(const void *code, int options, const char **errptr);
int pcre_exec(const void *code, const pcre_extra *extra, const char *subject,
              int length, int startoffset, int options, int *ovector, int ovecsize);
int pcre_fullinfo(const void *code, const pcre_extra *extra, int what, void *where);
const char *pcre_version(void);
"""


class PcreError(Exception):
    """A pattern PCRE refuses to compile, or the library is missing."""


_CANDIDATE_NAMES = ("libpcre.so.3", "libpcre.so.1", "libpcre.so")

_ffi = cffi.FFI()
_ffi.cdef(_CDEF)
_lib: Any = None
_lock = threading.Lock()


def library() -> Any:
    """The loaded libpcre (PCRE 8), via cffi's ABI mode."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        names: list[str] = []
        override = os.environ.get("VSCAND_LIBPCRE")
        if override:
            names.append(override)
        names.extend(_CANDIDATE_NAMES)
        found = ctypes.util.find_library("pcre")
        if found:
            names.append(found)
        errors = []
        for name in names:
            try:
                _lib = _ffi.dlopen(name)
            except OSError as exc:
                errors.append(f"{name}: {exc}")
                continue
            return _lib
    raise PcreError(
        "PCRE 8 (libpcre.so.3) is required, the regex library Nmap itself uses; "
        "install Debian's libpcre3 package (tried: " + "; ".join(errors) + ")"
    )


def version() -> str:
    """The loaded PCRE library's version string, e.g. ``8.39 2016-06-14``."""
    return str(_ffi.string(library().pcre_version()).decode("ascii"))


@dataclass(frozen=True)
class Match:
    """A successful ``pcre_exec``: ``rc`` as PCRE returns it, and the offsets.

    ``groups[g]`` is ``(start, end)`` or ``(-1, -1)`` for a group that did not
    participate; only groups below ``rc`` are meaningful, as in Nmap.
    """

    rc: int
    groups: tuple[tuple[int, int], ...]

    def group(self, subject: bytes, index: int) -> bytes | None:
        if index >= self.rc or index >= len(self.groups):
            return None
        start, end = self.groups[index]
        if start < 0 or end < 0:
            return None
        return subject[start:end]


class Pattern:
    """One compiled and studied pattern, with Nmap's limits attached."""

    __slots__ = ("__weakref__", "_code", "_exec", "_extra", "capture_count", "flags", "source")

    def __init__(self, source: bytes, *, caseless: bool = False, dotall: bool = False) -> None:
        if b"\0" in source:
            # Nmap reads patterns as C strings: a NUL byte cannot be part of one.
            raise PcreError("pattern contains a NUL byte")
        lib = library()
        self.source = source
        options = (PCRE_CASELESS if caseless else 0) | (PCRE_DOTALL if dotall else 0)
        self.flags = options
        err = _ffi.new("const char **")
        erroffset = _ffi.new("int *")
        code = lib.pcre_compile(source, options, err, erroffset, _ffi.NULL)
        if code == _ffi.NULL:
            message = _ffi.string(err[0]).decode("ascii", "replace") if err[0] else "unknown error"
            raise PcreError(f"{message} at offset {erroffset[0]}")
        self._code = code
        extra = lib.pcre_study(code, 0, err)
        if err[0] != _ffi.NULL:
            raise PcreError("pcre_study: " + _ffi.string(err[0]).decode("ascii", "replace"))
        if extra == _ffi.NULL:
            # Nmap allocates a zeroed pcre_extra when study found nothing to add.
            extra = _ffi.new("pcre_extra *")
        extra.flags |= PCRE_EXTRA_MATCH_LIMIT | PCRE_EXTRA_MATCH_LIMIT_RECURSION
        extra.match_limit = MATCH_LIMIT
        extra.match_limit_recursion = MATCH_LIMIT_RECURSION
        self._extra = extra
        self._exec = lib.pcre_exec
        count = _ffi.new("int *")
        lib.pcre_fullinfo(code, extra, PCRE_INFO_CAPTURECOUNT, count)
        self.capture_count = count[0]

    def search(self, subject: bytes) -> Match | None:
        """Unanchored search over the whole buffer, as Nmap's ``testMatch``.

        Returns ``None`` for no match and for a match that hit PCRE's limits.
        """
        ovector = _ffi.new("int[]", OVECTOR_INTS)
        rc = self._exec(self._code, self._extra, subject, len(subject), 0, 0, ovector, OVECTOR_INTS)
        if rc < 0:
            if rc in (PCRE_ERROR_NOMATCH, PCRE_ERROR_MATCHLIMIT, PCRE_ERROR_RECURSIONLIMIT):
                return None
            raise PcreError(f"pcre_exec returned {rc}")
        pairs = rc if rc > 0 else OVECTOR_INTS // 3
        groups = tuple((ovector[2 * i], ovector[2 * i + 1]) for i in range(pairs))
        return Match(rc=rc, groups=groups)

    def hits(self, subject: bytes) -> bool:
        """Whether the pattern matches (within the limits), without captures."""
        rc = self._exec(self._code, self._extra, subject, len(subject), 0, 0, _ffi.NULL, 0)
        return bool(rc >= 0)

    def search_status(self, subject: bytes) -> int:
        """The raw ``pcre_exec`` return code (``-8``: match limit hit)."""
        return int(self._exec(self._code, self._extra, subject, len(subject), 0, 0, _ffi.NULL, 0))

    # The compiled code is owned by libpcre's allocator; patterns live as long
    # as the probe database, which lives as long as the process, so they are
    # not freed explicitly.
