"""Match a response against a probe's fallback chain, as Nmap does.

For a probe and the bytes read so far, the chain (the probe itself, its
fallbacks, then the NULL probe for TCP) is walked in order and each member's
lines are tried in file order; the first line that matches wins, soft or hard.

With the Hyperscan prefilter, only the lines the prefilter names are confirmed
with PCRE, in the same order, so both paths give the same answer.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import bisect
import logging
import os
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

from vscand.probes import prefilter as prefilter_mod
from vscand.probes.model import MatchLine, Probe, ProbeDatabase
from vscand.probes.parser import find_probe_file, load_probe_files
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
    _ranges: dict[int, tuple[int, int]] = field(default_factory=dict, repr=False)

    def __post_init__(self) -> None:
        for probe in self.db.all_probes():
            if probe.matches:
                self._ranges[id(probe)] = (probe.matches[0].index, probe.matches[-1].index)

    def match(self, probe: Probe, response: bytes) -> ServiceMatch | None:
        """The first match of ``response`` in ``probe``'s chain, or ``None``."""
        if self.prefilter is None:
            for member in probe.chain:
                for line in member.matches:
                    found = self._try(line, member, response)
                    if found is not None:
                        return found
            return None
        candidates = sorted(self.prefilter.candidates(response))
        lines = self.db.lines
        for member in probe.chain:
            bounds = self._ranges.get(id(member))
            if bounds is None:
                continue
            low, high = bounds
            i = bisect.bisect_left(candidates, low)
            while i < len(candidates) and candidates[i] <= high:
                found = self._try(lines[candidates[i]], member, response)
                if found is not None:
                    return found
                i += 1
        return None

    def _try(self, line: MatchLine, member: Probe, response: bytes) -> ServiceMatch | None:
        pattern = line.compiled
        # the cheap test first: no capture vector for the (usual) miss
        if not pattern.hits(response):
            return None
        hit = pattern.search(response)
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


def load_matcher(
    probes_file: str | None = None,
    extra_files: Sequence[str | os.PathLike[str]] = (),
    *,
    use_prefilter: bool | None = None,
    cache_dir: Path | None = None,
) -> Matcher:
    """Load the probe files and, when available, the prefilter (cached on disk)."""
    started = time.perf_counter()
    path = find_probe_file(probes_file)
    db = load_probe_files(path, extra_files)
    parsed = time.perf_counter()
    wanted = prefilter_mod.available() if use_prefilter is None else use_prefilter
    pf: prefilter_mod.Prefilter | None = None
    how = "disabled" if use_prefilter is False else "unavailable"
    if wanted and prefilter_mod.available():
        directory = cache_dir if cache_dir is not None else prefilter_mod.default_cache_dir()
        pf, how = prefilter_mod.load_or_build(db.lines, db.digest, directory)
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
