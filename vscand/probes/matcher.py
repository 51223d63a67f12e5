"""Match a response against a probe's fallback chain, as Nmap does.

For a probe and the bytes read so far, the chain (the probe itself, its
fallbacks, then the NULL probe for TCP) is walked in order and each member's
lines are tried in file order; the first line that matches wins, soft or hard.

With the Hyperscan prefilter, only the lines the prefilter names are confirmed
with PCRE, in the same order, so both paths give the same answer.

Which PCRE -- PCRE 8 as Nmap 7.93 uses it, or PCRE2 with the limits of Nmap 7.95 or
7.991 -- is the ``regex_engine`` choice (:mod:`vscand.probes.engine`).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from vscand.probes import engine as engine_mod
from vscand.probes import prefilter as prefilter_mod
from vscand.probes.model import MatchLine, Probe, ProbeDatabase
from vscand.probes.parser import DEFAULT_PROBE_PATHS, find_probe_file, load_probe_files
from vscand.probes.templates import VersionInfo, expand_all

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class ServiceMatch:
    """The first line of a chain that matched a response."""

    service: str
    soft: bool
    info: VersionInfo
    line: MatchLine
    #: the chain member whose line matched (the probe itself, a fallback, or NULL)
    matched_probe: str

    @property
    def warnings(self) -> tuple[str, ...]:
        return self.info.warnings


@dataclass
class LoadStats:
    files: list[str]
    seconds: float
    prefilter: str  # "cache", "built", "disabled" or "unavailable"
    prefilter_seconds: float = 0.0


@dataclass
class Matcher:
    """The probe database with its (optional) prefilter."""

    db: ProbeDatabase
    prefilter: prefilter_mod.Prefilter | None = None
    stats: LoadStats | None = None
    #: this database's probes by identity (a probe from elsewhere gets no table)
    _probes: dict[int, Probe] = field(default_factory=dict, repr=False)
    #: per line index: the probe whose line it is and its place among that probe's lines
    _owner: dict[int, tuple[Probe, int]] = field(default_factory=dict, repr=False)
    #: per probe: the place in its chain of each member (by identity; first occurrence)
    _order: dict[int, dict[int, int]] = field(default_factory=dict, repr=False)
    #: per probe, built on first use on the plain path: its lines' ``hits`` tests
    _tests: dict[int, list[Callable[[bytes], bool]]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for probe in self.db.all_probes():
            self._probes[id(probe)] = probe
            self._order[id(probe)] = _chain_order(probe)
            for place, line in enumerate(probe.matches):
                self._owner[line.index] = (probe, place)

    def match(self, probe: Probe, response: bytes) -> ServiceMatch | None:
        """The first match of ``response`` in ``probe``'s chain, or ``None``."""
        own = self._probes.get(id(probe)) is probe
        if self.prefilter is None or not own:
            return self._match_plain(probe, response)
        candidates = self.prefilter.candidates(response)
        if not candidates:
            return None
        order = self._order[id(probe)]
        owner = self._owner
        keyed: list[tuple[int, int, Probe]] = []
        for index in candidates:
            member, place = owner[index]
            rank = order.get(id(member))
            if rank is not None:
                keyed.append((rank, place, member))
        if len(keyed) > 1:
            # chain order: member by member, each member's lines in file order
            keyed.sort(key=_rank_place)
        for _, place, member in keyed:
            line = member.matches[place]
            found = self._try(line, member, response)
            if found is not None:
                return found
        return None

    def _match_plain(self, probe: Probe, response: bytes) -> ServiceMatch | None:
        """Every line of the chain in turn: what Nmap does."""
        for member in probe.chain:
            tests = self._tests.get(id(member))
            if tests is None or self._probes.get(id(member)) is not member:
                tests = [line.compiled.hits for line in member.matches]
                if self._probes.get(id(member)) is member:
                    self._tests[id(member)] = tests
            for place, hits in enumerate(tests):
                # the cheap test first: no capture vector for the (usual) miss
                if hits(response):
                    found = self._confirm(member.matches[place], member, response)
                    if found is not None:
                        return found
        return None

    def _try(self, line: MatchLine, member: Probe, response: bytes) -> ServiceMatch | None:
        # the cheap test first: no capture vector for the (usual) miss
        if not line.compiled.hits(response):
            return None
        return self._confirm(line, member, response)

    def _confirm(self, line: MatchLine, member: Probe, response: bytes) -> ServiceMatch | None:
        """The match of a line whose pattern hits, with its version info."""
        hit = line.compiled.search(response)
        if hit is None:
            return None
        info = expand_all(line.templates, response, hit, line.where())
        for warning in info.warnings:
            log.debug("servicescan: %s", warning)
        return ServiceMatch(
            service=line.service,
            soft=line.soft,
            info=info,
            line=line,
            matched_probe=member.name,
        )


def _chain_order(probe: Probe) -> dict[int, int]:
    order: dict[int, int] = {}
    for rank, member in enumerate(probe.chain):
        # a member twice in a chain: its first place wins, as on the plain path
        order.setdefault(id(member), rank)
    return order


def _rank_place(item: tuple[int, int, Probe]) -> tuple[int, int]:
    return item[0], item[1]


def load_matcher(
    probes_file: str | None = None,
    extra_files: Sequence[str | os.PathLike[str]] = (),
    *,
    use_prefilter: bool | None = None,
    cache_dir: Path | None = None,
    notice: Callable[[str], None] | None = None,
    release: str | None = None,
    regex_engine: str = "auto",
) -> Matcher:
    """Load the probe files and, when available, the prefilter (cached on disk).

    ``regex_engine``: ``auto``, ``pcre``, ``pcre2`` or ``nmap-X.Y``
    (:func:`vscand.probes.engine.resolve`); ``auto`` follows the primary file's release.
    ``release``: the Nmap release whose grammar reads the files (default: the engine's
    release, else 7.93).
    """
    started = time.perf_counter()
    path = find_probe_file(probes_file)
    engine = engine_mod.resolve(regex_engine, path, installed_paths=DEFAULT_PROBE_PATHS)
    log.info("probes: regex engine %s (%s; %s)", engine.name, engine.profile.name, engine.reason)
    if release is None and engine.requested != "auto":
        # the grammar follows the file's release even when the regex engine is chosen by hand
        release = engine_mod.resolve("auto", path, installed_paths=DEFAULT_PROBE_PATHS).release
    db = load_probe_files(path, extra_files, release=release, engine=engine)
    parsed = time.perf_counter()
    wanted = prefilter_mod.available() if use_prefilter is None else use_prefilter
    pf: prefilter_mod.Prefilter | None = None
    how = "disabled" if use_prefilter is False else "unavailable"
    if wanted and prefilter_mod.available():
        directory = cache_dir if cache_dir is not None else prefilter_mod.default_cache_dir()
        pf, how = prefilter_mod.load_or_build(
            db.lines, db.digest, directory, engine_tag=engine.cache_tag, notice=notice
        )
    elif wanted:
        how = "unavailable"
    done = time.perf_counter()
    stats = LoadStats(
        files=list(db.files),
        seconds=done - started,
        prefilter=how,
        prefilter_seconds=done - parsed,
    )
    return Matcher(db=db, prefilter=pf, stats=stats)
