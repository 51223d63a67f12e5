"""The regex engine of Nmap 7.95 and later: PCRE2 (``libpcre2-8.so.0``), through cffi.

What Nmap does with PCRE2 (``service_scan.cc``; commits of github.com/nmap/nmap):

* Options (7.95 = ``95b974b10``, lines 421-428; unchanged at HEAD ``db4aefddf``, 421-428):
  ``pcre2_compile`` of the pattern as a C string (``PCRE2_ZERO_TERMINATED``) with only
  ``PCRE2_CASELESS`` for flag ``i`` and ``PCRE2_DOTALL`` for ``s``, no compile context.
  No JIT: Nmap's own sources never call ``pcre2_jit_compile``, so ``pcre2_match`` runs the
  interpreter (the one whose limits are below).
* Matching (7.95: 533; HEAD: 542): ``pcre2_match`` over the whole response, length given
  (binary-safe: NUL bytes are ordinary), start offset 0, no options, match data made by
  ``pcre2_match_data_create_from_pattern`` (7.95: 434; HEAD: 440), so the ovector has exactly
  ``capture count + 1`` pairs.
* Limits, set on a match context (7.95: 442-456; HEAD: 448-465):

  - Nmap 7.95 to 7.99: ``pcre2_set_match_limit(100000)`` and ``pcre2_set_depth_limit(10000)``
    (the PCRE 8 values); the heap limit is the library's default.
  - Nmap 7.991 (``542eda7cf``, 2026-08-06) and HEAD: match limit 50000, depth limit 1000 and
    ``pcre2_set_heap_limit(10240)`` KiB (commits ``b150def88``, ``0916eb02b``, ``7f2cf3a81``).

* Match errors (7.95: 534-546): no match, a match-limit or a depth-limit hit (-47, -53) count
  as no match; any other error is fatal to the scan in 7.95. From 7.96 (``e263e6482``,
  2024-09-27; HEAD: 543-553) every error counts as no match.  We always count every error
  as no match (a fatal error is no answer to reproduce).
* Empty matches: from 7.991 (``713f8091b``; HEAD: 433-436) a pattern for which
  ``PCRE2_INFO_MATCHEMPTY`` is set (it can match the empty string) fails the load with a
  parse error; 7.95 to 7.99 accept it.  :class:`Limits` ``refuse_empty`` reproduces that.
* Captures for ``$1``..``$9`` (7.95: 740-752; HEAD: 756-768): a group number at or beyond
  the ovector count, or a group whose start is ``PCRE2_UNSET``, fails the template.  This
  module reports groups as :class:`vscand.probes.pcre.Match` does for PCRE 8 (``rc`` pairs,
  ``(-1, -1)`` for an unset group), which the template code reads with the same outcome.

Syntax follows the installed library, as Nmap's does when it links the system's: Debian 12
ships PCRE2 10.42, Debian 13 10.46, and Nmap 7.95's bundled copy is 10.43.  From 10.43,
``x{,3}`` is a quantifier (``x{0,3}``; literal before), spaces are allowed inside
quantifier braces, and bounded variable-length lookbehinds compile.

cffi's ABI mode releases the GIL during every call.  Compiled patterns and match contexts
are read-only while matching and shared by all threads; the match data (ovector and
backtracking frames) is per thread and per set of limits.  Nmap keeps one match data per
pattern; PCRE2 (10.41 and later) keeps the frames vector in the match data and checks the
heap limit only when the vector grows, so a vector shared by patterns of the *same* heap
limit never holds more frames than that limit allows, while one grown under a larger limit
would let a later pattern exceed its own: hence one per set of limits.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import ctypes.util
import os
import threading
from dataclasses import dataclass
from typing import Any

import cffi

from vscand.probes.pcre import Match, PcreError

PCRE2_CASELESS = 0x00000008
PCRE2_DOTALL = 0x00000020

PCRE2_ERROR_NOMATCH = -1
PCRE2_ERROR_MATCHLIMIT = -47
PCRE2_ERROR_NOMEMORY = -48
PCRE2_ERROR_DEPTHLIMIT = -53
PCRE2_ERROR_HEAPLIMIT = -63

PCRE2_INFO_CAPTURECOUNT = 4
PCRE2_INFO_MATCHEMPTY = 13

PCRE2_CONFIG_MATCHLIMIT = 4
PCRE2_CONFIG_DEPTHLIMIT = 7
PCRE2_CONFIG_VERSION = 11
PCRE2_CONFIG_HEAPLIMIT = 12

#: ovector pairs of a thread's match data when first made (grown for patterns with more groups)
_INITIAL_PAIRS = 64

_CDEF = """
void *pcre2_compile_8(const char *pattern, size_t length, uint32_t options,
                      int *errorcode, size_t *erroroffset, void *ccontext);
void pcre2_code_free_8(void *code);
int pcre2_pattern_info_8(const void *code, uint32_t what, void *where);
void *pcre2_match_context_create_8(void *gcontext);
int pcre2_set_match_limit_8(void *mcontext, uint32_t value);
int pcre2_set_depth_limit_8(void *mcontext, uint32_t value);
int pcre2_set_heap_limit_8(void *mcontext, uint32_t value);
void *pcre2_match_data_create_8(uint32_t ovecsize, void *gcontext);
void pcre2_match_data_free_8(void *match_data);
int pcre2_match_8(const void *code, const char *subject, size_t length, size_t startoffset,
                  uint32_t options, void *match_data, void *mcontext);
size_t *pcre2_get_ovector_pointer_8(void *match_data);
int pcre2_get_error_message_8(int errorcode, char *buffer, size_t bufflen);
int pcre2_config_8(uint32_t what, void *where);
"""


class Pcre2Error(PcreError):
    """A pattern PCRE2 refuses (or one Nmap's rules refuse), or the library is missing."""


@dataclass(frozen=True)
class Limits:
    """The match-context limits and load rules of one Nmap release (module docstring)."""

    match_limit: int
    depth_limit: int
    #: KiB; ``None``: the library's default (Nmap 7.95-7.99 set none)
    heap_limit_kib: int | None
    #: refuse patterns that can match the empty string (Nmap 7.991 and later)
    refuse_empty: bool


#: Nmap 7.95 to 7.99 (service_scan.cc at 95b974b10, lines 449-456)
NMAP_7_95 = Limits(match_limit=100_000, depth_limit=10_000, heap_limit_kib=None, refuse_empty=False)
#: Nmap 7.991 and HEAD (service_scan.cc at db4aefddf, lines 433-436 and 455-465)
NMAP_7_991 = Limits(match_limit=50_000, depth_limit=1_000, heap_limit_kib=10_240, refuse_empty=True)

_CANDIDATE_NAMES = ("libpcre2-8.so.0", "libpcre2-8.so")

_ffi = cffi.FFI()
_ffi.cdef(_CDEF)
_lib: Any = None
_lock = threading.Lock()
#: PCRE2_UNSET: ``~(size_t)0``
UNSET = (1 << (8 * _ffi.sizeof("size_t"))) - 1


def library() -> Any:
    """The loaded libpcre2-8, via cffi's ABI mode (``$VSCAND_LIBPCRE2`` first)."""
    global _lib
    if _lib is not None:
        return _lib
    with _lock:
        if _lib is not None:
            return _lib
        names: list[str] = []
        override = os.environ.get("VSCAND_LIBPCRE2")
        if override:
            names.append(override)
        names.extend(_CANDIDATE_NAMES)
        found = ctypes.util.find_library("pcre2-8")
        if found:
            names.append(found)
        errors = []
        for name in names:
            try:
                lib = _ffi.dlopen(name)
                lib.pcre2_match_8  # noqa: B018 - a library without the 8-bit API is no use
            except (OSError, AttributeError) as exc:
                errors.append(f"{name}: {exc}")
                continue
            _lib = lib
            return _lib
    raise Pcre2Error(
        "PCRE2 (libpcre2-8.so.0) is required, the regex library of Nmap 7.95 and later; "
        "install Debian's libpcre2-8-0 package or set $VSCAND_LIBPCRE2 "
        "(tried: " + "; ".join(errors) + ")"
    )


def version() -> str:
    """The loaded PCRE2 library's version string, e.g. ``10.42 2022-12-11``."""
    buffer = _ffi.new("char[]", 64)
    library().pcre2_config_8(PCRE2_CONFIG_VERSION, buffer)
    return str(_ffi.string(buffer).decode("ascii"))


def library_defaults() -> dict[str, int]:
    """The library's built-in match, depth and heap (KiB) limits."""
    lib = library()
    value = _ffi.new("uint32_t *")
    out = {}
    for key, what in (
        ("match_limit", PCRE2_CONFIG_MATCHLIMIT),
        ("depth_limit", PCRE2_CONFIG_DEPTHLIMIT),
        ("heap_limit_kib", PCRE2_CONFIG_HEAPLIMIT),
    ):
        lib.pcre2_config_8(what, value)
        out[key] = int(value[0])
    return out


def error_message(code: int) -> str:
    buffer = _ffi.new("char[]", 256)
    library().pcre2_get_error_message_8(code, buffer, 256)
    return str(_ffi.string(buffer).decode("ascii", "replace"))


_contexts: dict[Limits, Any] = {}


def _match_context(limits: Limits) -> Any:
    """One match context per set of limits, shared (read-only while matching)."""
    context = _contexts.get(limits)
    if context is not None:
        return context
    lib = library()
    with _lock:
        context = _contexts.get(limits)
        if context is None:
            context = lib.pcre2_match_context_create_8(_ffi.NULL)
            if context == _ffi.NULL:
                raise Pcre2Error("pcre2_match_context_create failed")
            lib.pcre2_set_match_limit_8(context, limits.match_limit)
            lib.pcre2_set_depth_limit_8(context, limits.depth_limit)
            if limits.heap_limit_kib is not None:
                lib.pcre2_set_heap_limit_8(context, limits.heap_limit_kib)
            # lives as long as the process, like the patterns that use it
            _contexts[limits] = context
    return context


class _ThreadData(threading.local):
    """A thread's match data for one set of limits: ovector and backtracking frames."""

    def __init__(self) -> None:
        self.pairs = 0
        self.data: Any = None
        self.ovector: Any = None

    def grow(self, pairs: int) -> Any:
        lib = library()
        size = max(pairs, _INITIAL_PAIRS)
        data = lib.pcre2_match_data_create_8(size, _ffi.NULL)
        if data == _ffi.NULL:
            raise MemoryError("pcre2_match_data_create failed")
        self.data = _ffi.gc(data, lib.pcre2_match_data_free_8)
        self.ovector = lib.pcre2_get_ovector_pointer_8(self.data)
        self.pairs = size
        return self.data


_thread_data: dict[Limits, _ThreadData] = {}


def _thread_data_for(limits: Limits) -> _ThreadData:
    with _lock:
        return _thread_data.setdefault(limits, _ThreadData())


class Pattern:
    """One compiled pattern with the limits of the Nmap release being reproduced.

    The same interface as :class:`vscand.probes.pcre.Pattern`.
    """

    __slots__ = (
        "__weakref__",
        "_code",
        "_context",
        "_match",
        "_pairs",
        "_thread",
        "capture_count",
        "flags",
        "limits",
        "match_empty",
        "source",
    )

    def __init__(
        self,
        source: bytes,
        *,
        caseless: bool = False,
        dotall: bool = False,
        limits: Limits = NMAP_7_95,
    ) -> None:
        if b"\0" in source:
            # Nmap passes the pattern as a C string: a NUL byte cannot be part of one.
            raise Pcre2Error("pattern contains a NUL byte")
        lib = library()
        self.source = source
        self.limits = limits
        options = (PCRE2_CASELESS if caseless else 0) | (PCRE2_DOTALL if dotall else 0)
        self.flags = options
        errorcode = _ffi.new("int *")
        erroroffset = _ffi.new("size_t *")
        code = lib.pcre2_compile_8(source, len(source), options, errorcode, erroroffset, _ffi.NULL)
        if code == _ffi.NULL:
            raise Pcre2Error(f"{error_message(errorcode[0])} at offset {erroroffset[0]}")
        self._code = _ffi.gc(code, lib.pcre2_code_free_8)
        value = _ffi.new("uint32_t *")
        lib.pcre2_pattern_info_8(self._code, PCRE2_INFO_MATCHEMPTY, value)
        self.match_empty = bool(value[0])
        if limits.refuse_empty and self.match_empty:
            raise Pcre2Error("pattern matches zero-length string (refused since Nmap 7.991)")
        lib.pcre2_pattern_info_8(self._code, PCRE2_INFO_CAPTURECOUNT, value)
        self.capture_count = int(value[0])
        self._pairs = self.capture_count + 1
        self._context = _match_context(limits)
        self._thread = _thread_data_for(limits)
        self._match = lib.pcre2_match_8

    def search_status(self, subject: bytes) -> int:
        """The raw ``pcre2_match`` return code (-47: match limit, -53: depth limit)."""
        thread = self._thread
        data = thread.data if thread.pairs else thread.grow(1)
        return int(self._match(self._code, subject, len(subject), 0, 0, data, self._context))

    def hits(self, subject: bytes) -> bool:
        """Whether the pattern matches (within the limits); captures are not read."""
        thread = self._thread
        data = thread.data if thread.pairs else thread.grow(1)
        return bool(self._match(self._code, subject, len(subject), 0, 0, data, self._context) >= 0)

    def search(self, subject: bytes) -> Match | None:
        """Unanchored search over the whole buffer, as Nmap's ``testMatch``.

        Returns ``None`` for no match and for any error (a limit hit among them).
        """
        thread = self._thread
        data = thread.data if thread.pairs >= self._pairs else thread.grow(self._pairs)
        rc = self._match(self._code, subject, len(subject), 0, 0, data, self._context)
        if rc <= 0:
            # rc == 0 (ovector too small) cannot happen: the match data has room for every group
            return None
        ovector = thread.ovector
        groups = []
        for i in range(rc):
            start = ovector[2 * i]
            if start == UNSET:
                groups.append((-1, -1))
            else:
                groups.append((int(start), int(ovector[2 * i + 1])))
        return Match(rc=rc, groups=tuple(groups))
