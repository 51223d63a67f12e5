"""Optional multi-pattern prefilter built with Hyperscan.

Every match line's pattern is compiled in Hyperscan's *prefilter* mode, which
may report a pattern that does not really match but never misses one that
does.  One scan of a response yields the candidate lines; the matcher then
confirms candidates in chain order with PCRE, so answers are exactly those of
the plain path.  A pattern Hyperscan cannot compile is a candidate for every
response.

Hyperscan reads patterns as PCRE 8 does.  Under PCRE2 (Nmap 7.95 and later) a line
whose braces PCRE 8 reads as literal text but PCRE2 10.43+ may read as a quantifier
(``{,3}``, ``{ 2 }``) could be missed, so such lines are candidates for every
response (:func:`pcre2_brace_risk`).

The compiled database is cached on disk, keyed by the probe files' content, the
Hyperscan version and, for PCRE2, the engine (library version and Nmap profile), so a
warm start only loads it.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import hashlib
import logging
import os
import re
import tempfile
import threading
from collections.abc import Callable, Collection, Sequence
from pathlib import Path
from typing import Any

from vscand.cachedir import user_cache_dir
from vscand.probes.model import MatchLine

log = logging.getLogger(__name__)

_hs: Any
try:  # the accelerator is optional
    import hyperscan as _hs
except ImportError:  # pragma: no cover - exercised by the plain-path tests via `disabled`
    _hs = None

CACHE_FORMAT = 1


def available() -> bool:
    return _hs is not None and os.environ.get("VSCAND_NO_HYPERSCAN", "") in ("", "0")


def default_cache_dir() -> Path:
    """The user's cache directory (:func:`vscand.cachedir.user_cache_dir`)."""
    return user_cache_dir()


def _flags(line: MatchLine) -> int:
    assert _hs is not None
    flags = _hs.HS_FLAG_PREFILTER | _hs.HS_FLAG_SINGLEMATCH | _hs.HS_FLAG_ALLOWEMPTY
    if line.caseless:
        flags |= _hs.HS_FLAG_CASELESS
    if line.dotall:
        flags |= _hs.HS_FLAG_DOTALL
    return int(flags)


class Prefilter:
    """Candidate match lines for a response, from one Hyperscan scan."""

    def __init__(self, database: Any, always: frozenset[int]) -> None:
        assert _hs is not None
        self._db = database
        self.always = always
        self._local = threading.local()

    def _scratch(self) -> Any:
        assert _hs is not None
        scratch = getattr(self._local, "scratch", None)
        if scratch is None:
            scratch = _hs.Scratch(self._db)
            self._local.scratch = scratch
        return scratch

    def candidates(self, data: bytes) -> Collection[int]:
        """Indices of the lines that may match ``data`` (each at most once), unordered."""
        if not data:
            # Hyperscan reports nothing on an empty block; patterns that can
            # match the empty string are confirmed by PCRE.
            return self.empty_candidates
        found: list[int] = []
        # the context argument carries the list: no closure is made per scan,
        # and HS_FLAG_SINGLEMATCH reports each pattern at most once
        self._db.scan(data, match_event_handler=_collect, context=found, scratch=self._scratch())
        if self.always:
            return self.always.union(found)
        return found

    empty_candidates: frozenset[int] = frozenset()

    @classmethod
    def build(
        cls, lines: Sequence[MatchLine], always_candidates: Collection[int] = ()
    ) -> tuple[Prefilter, bytes]:
        """Compile all lines; returns the prefilter and its serialised form.

        ``always_candidates``: indices of lines to confirm on every response, unscanned.
        """
        assert _hs is not None
        usable: list[MatchLine] = []
        always: set[int] = set(always_candidates)
        if always:
            lines_to_scan = [line for line in lines if line.index not in always]
        else:
            lines_to_scan = list(lines)
        try:
            database = _compile(lines_to_scan)
            usable = lines_to_scan
        except _hs.error:
            # find the patterns Hyperscan refuses, one by one, and leave them to PCRE
            for line in lines_to_scan:
                try:
                    _compile([line])
                    usable.append(line)
                except _hs.error as exc:
                    log.info("prefilter: line %s left to PCRE alone: %s", line.where(), exc)
                    always.add(line.index)
            database = _compile(usable) if usable else None
        if database is None:
            raise RuntimeError("no pattern could be compiled for the prefilter")
        blob = _hs.dumpb(database)
        header = (",".join(str(i) for i in sorted(always))).encode()
        payload = len(header).to_bytes(4, "big") + header + blob
        prefilter = cls(database, frozenset(always))
        prefilter.empty_candidates = frozenset(line.index for line in lines)
        return prefilter, payload

    @classmethod
    def from_bytes(cls, payload: bytes, lines: Sequence[MatchLine]) -> Prefilter:
        assert _hs is not None
        size = int.from_bytes(payload[:4], "big")
        header = payload[4 : 4 + size].decode()
        always = frozenset(int(i) for i in header.split(",") if i)
        database = _hs.loadb(payload[4 + size :], _hs.HS_MODE_BLOCK)
        prefilter = cls(database, always)
        prefilter.empty_candidates = frozenset(line.index for line in lines)
        return prefilter


def _collect(pattern_id: int, start: int, end: int, flags: int, found: list[int]) -> None:
    found.append(pattern_id)


def _compile(lines: Sequence[MatchLine]) -> Any:
    assert _hs is not None
    database = _hs.Database(mode=_hs.HS_MODE_BLOCK)
    database.compile(
        expressions=[line.pattern for line in lines],
        ids=[line.index for line in lines],
        elements=len(lines),
        flags=[_flags(line) for line in lines],
    )
    return database


def cache_key(digest: str, engine_tag: str = "") -> str:
    """The cache file's key; ``engine_tag`` is empty for PCRE 8 (the key of old caches)."""
    assert _hs is not None
    version = getattr(_hs, "__version__", "?")
    raw = f"{CACHE_FORMAT}:{version}:{digest}"
    if engine_tag:
        raw += f":{engine_tag}"
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


# a {...} of digits, commas and blanks that PCRE 8 (and Hyperscan) does not read as a
# quantifier ({n}, {n,}, {n,m}) but PCRE2 10.43+ may ({,m}, blanks inside)
_BRACES = re.compile(rb"\{[0-9, \t]*\}")
_PCRE8_QUANTIFIER = re.compile(rb"\{[0-9]+(?:,[0-9]*)?\}")


def pcre2_brace_risk(pattern: bytes) -> bool:
    """Whether PCRE2 may read a brace group of ``pattern`` unlike Hyperscan (PCRE 8)."""
    return any(
        _PCRE8_QUANTIFIER.fullmatch(group) is None and (b"," in group or group[1:-1].strip())
        for group in _BRACES.findall(pattern)
    )


def load_or_build(
    lines: Sequence[MatchLine],
    digest: str,
    cache_dir: Path | None,
    *,
    engine_tag: str = "",
    notice: Callable[[str], None] | None = None,
) -> tuple[Prefilter, str]:
    """The prefilter for these lines, from the cache when possible.

    Returns the prefilter and how it was obtained (``cache`` or ``built``).
    A cache that cannot be read or written is not an error: it is rebuilt.
    ``engine_tag`` (:attr:`vscand.probes.engine.Engine.cache_tag`) is empty for PCRE 8;
    otherwise it is part of the key and lines at risk under PCRE2 are always candidates.
    """
    always = [line.index for line in lines if pcre2_brace_risk(line.pattern)] if engine_tag else []
    path = None
    if cache_dir is not None:
        path = cache_dir / f"prefilter-{cache_key(digest, engine_tag)}.hsdb"
        try:
            payload = path.read_bytes()
        except OSError:
            payload = b""
        if payload:
            try:
                return Prefilter.from_bytes(payload, lines), "cache"
            except Exception as exc:  # a corrupt or foreign cache file: rebuild it
                log.warning("prefilter cache %s unusable (%s); rebuilding", path, exc)
    if notice is not None:  # a person waits: say why (a cold build takes ~20 s)
        where = f"; it is kept in {path.parent} for later runs" if path is not None else ""
        notice(f"compiling the prefilter of {len(lines)} match lines (once{where})")
    prefilter, payload = Prefilter.build(lines, always)
    if path is not None:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            with tempfile.NamedTemporaryFile(dir=path.parent, delete=False) as tmp:
                tmp.write(payload)
            os.replace(tmp.name, path)
        except OSError as exc:
            log.warning("prefilter cache %s not written: %s", path, exc)
    return prefilter, "built"
