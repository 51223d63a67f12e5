"""Parser for the ``nmap-service-probes`` grammar (SPEC §1), as Nmap 7.93 reads it,
and as later releases do where their loaders differ (``release=``; ``grammar.py``).

Every error is a :class:`ProbeFileError` naming the file, the line and the
reason; like Nmap, a bad line fails the whole load.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path

from vscand.ports import parse_port_spec
from vscand.probes.engine import Engine, default_engine
from vscand.probes.engine import resolve as resolve_engine
from vscand.probes.grammar import Grammar, grammar_for
from vscand.probes.lines import parse_match_line, parse_port_list, parse_probe_line, ranged_int
from vscand.probes.model import (
    ExcludeSpec,
    MatchLine,
    PortRanges,
    Probe,
    ProbeDatabase,
)

#: fgets() buffer Nmap 7.93 reads the file with: a longer line is split by Nmap
#: (each release's buffer: ``Grammar.line_buffer``).
LINE_BUFFER = 2048
MAX_FALLBACKS = 17
WAIT_RANGE = (100, 300_000)

DEFAULT_PROBE_PATHS = (
    "/usr/share/nmap/nmap-service-probes",
    "/usr/local/share/nmap/nmap-service-probes",
)

#: Answers whether a match line's compiled pattern can match the empty string
#: (PCRE2_INFO_MATCHEMPTY). Releases whose grammar has ``refuse_empty_match`` fail
#: the load on such a line. Without one given, the parser asks the compiled pattern
#: for a ``matches_empty()`` method (the PCRE2 engine's); PCRE 8 has none, and the
#: lines it could not check are counted in ``ProbeDatabase.empty_match_unchecked``.
EmptyMatchCheck = Callable[[MatchLine], bool]


class ProbeFileError(Exception):
    """A probe file that Nmap would refuse to load."""

    def __init__(self, filename: str, lineno: int, reason: str) -> None:
        super().__init__(f"{filename}:{lineno}: {reason}")
        self.filename = filename
        self.lineno = lineno
        self.reason = reason


class _Loader:
    def __init__(
        self,
        grammar: Grammar,
        matches_empty: EmptyMatchCheck | None = None,
        engine: Engine | None = None,
    ) -> None:
        self.grammar = grammar
        self.matches_empty = matches_empty
        self.empty_match_unchecked = 0
        self.engine = engine if engine is not None else default_engine()
        self.probes: list[Probe] = []
        self.null_probe: Probe | None = None
        self.exclude = ExcludeSpec()
        self.exclude_seen = False
        self.files: list[str] = []
        self._hasher = hashlib.sha256()
        #: where each probe's (last) ``fallback`` directive is: (file, line)
        self._fallback_at: dict[int, tuple[str, int]] = {}

    def load(self, path: str, data: bytes, *, extra: bool) -> None:
        self.files.append(path)
        self._hasher.update(str(len(data)).encode() + b"\0" + data)
        current: Probe | None = None
        existing = False
        lineno = 0
        for raw in _fgets_lines(data, path, self.grammar):
            lineno += 1
            if raw.startswith(b"#") or raw in (b"", b"\n"):
                continue
            line = raw[:-1] if raw.endswith(b"\n") else raw
            terminated = line is not raw
            while line.endswith(b"\r"):
                line = line[:-1]
                terminated = True
            try:
                current, existing = self._directive(
                    line, current, existing, path, lineno, extra, terminated
                )
            except ProbeFileError:
                raise
            except ValueError as exc:
                raise ProbeFileError(path, lineno, str(exc)) from None

    def _directive(
        self,
        line: bytes,
        current: Probe | None,
        existing: bool,
        path: str,
        lineno: int,
        extra: bool,
        terminated: bool = True,
    ) -> tuple[Probe | None, bool]:
        if line.startswith(b"Exclude "):
            if current is not None or self.probes or self.null_probe:
                raise ValueError("Exclude directive must precede all Probes")
            if self.exclude_seen:
                raise ValueError("only one Exclude directive is allowed")
            self.exclude = parse_exclude(line[8:])
            self.exclude_seen = True
            return current, existing
        if line.startswith(b"Probe "):
            protocol, name, string, no_payload, options = parse_probe_line(line[6:], self.grammar)
            found = self._existing(protocol, name, string) if extra else None
            if found is not None:
                return found, True
            probe = Probe(
                protocol=protocol,
                name=name,
                string=string,
                filename=path,
                lineno=lineno,
                no_payload=no_payload,
                options=options,
            )
            if not string:
                if self.null_probe is not None:
                    raise ValueError("more than one NULL probe (zero-length probe string)")
                self.null_probe = probe
            else:
                self.probes.append(probe)
            return probe, False
        if current is None:
            raise ValueError(f"directive before the first Probe: {line[:40]!r}")
        for prefix, soft in ((b"match ", False), (b"softmatch ", True)):
            if line.startswith(prefix):
                match = parse_match_line(
                    line[len(prefix) :],
                    soft,
                    current,
                    path,
                    lineno,
                    self.grammar,
                    terminated,
                    self.engine,
                )
                if self.grammar.refuse_empty_match and self._matches_empty(match):
                    raise ValueError("pattern matches zero-length string")
                current.matches.append(match)
                return current, existing
        if line.startswith(b"ports "):
            current.ports = current.ports.union(PortRanges(parse_port_list(line[6:])))
            return current, existing
        if line.startswith(b"sslports "):
            current.sslports = current.sslports.union(PortRanges(parse_port_list(line[9:])))
            return current, existing
        if existing:
            raise ValueError(
                f"probe {current.name} is already defined; an extra file may only add "
                "match, softmatch, ports and sslports lines to it"
            )
        if line.startswith(b"rarity "):
            current.rarity = ranged_int(line[7:], "rarity", 1, 9)
        elif line.startswith(b"totalwaitms "):
            current.totalwaitms = ranged_int(line[12:], "totalwaitms", *WAIT_RANGE)
        elif line.startswith(b"tcpwrappedms "):
            current.tcpwrappedms = ranged_int(line[13:], "tcpwrappedms", *WAIT_RANGE)
        elif line.startswith(b"fallback "):
            # strtok(…, ",\r\n\t "); a repeated directive replaces the earlier one and
            # the count is checked when the chains are compiled, as in Nmap
            separated = line[9:].replace(b",", b" ").replace(b"\t", b" ")
            names = [n.decode("latin-1") for n in separated.split()]
            current.fallback_names = tuple(names)
            self._fallback_at[id(current)] = (path, lineno)
        else:
            raise ValueError(f"unknown directive: {line[:40]!r}")
        return current, existing

    def _matches_empty(self, match: MatchLine) -> bool:
        if self.matches_empty is not None:
            return self.matches_empty(match)
        method = getattr(match.compiled, "matches_empty", None)
        if callable(method):
            return bool(method())
        known = getattr(match.compiled, "match_empty", None)  # PCRE2: PCRE2_INFO_MATCHEMPTY
        if isinstance(known, bool):
            return known
        self.empty_match_unchecked += 1
        return False

    def _existing(self, protocol: str, name: str, string: bytes) -> Probe | None:
        if not string:
            if self.null_probe is not None:
                return self.null_probe
            return None
        for probe in self.probes:
            if probe.name == name and probe.protocol == protocol:
                if probe.string != string:
                    raise ValueError(
                        f"probe {protocol}/{name} is already defined with a different probe string"
                    )
                return probe
        return None

    def finish(self) -> ProbeDatabase:
        if self.null_probe is None and not self.probes:
            raise ProbeFileError(self.files[-1] if self.files else "?", 0, "no probes defined")
        for probe in self.all_probes():
            probe.chain = self._chain(probe)
        lines: list[MatchLine] = []
        for probe in self.all_probes():
            for match in probe.matches:
                match.index = len(lines)
                lines.append(match)
        return ProbeDatabase(
            probes=self.probes,
            null_probe=self.null_probe,
            exclude=self.exclude,
            files=list(self.files),
            lines=lines,
            digest=self._hasher.hexdigest(),
            grammar=self.grammar,
            empty_match_unchecked=self.empty_match_unchecked,
            engine=self.engine,
        )

    def all_probes(self) -> list[Probe]:
        return ([self.null_probe] if self.null_probe else []) + self.probes

    def _chain(self, probe: Probe) -> list[Probe]:
        if probe is self.null_probe:
            return [probe]
        if len(probe.fallback_names) > MAX_FALLBACKS:
            path, lineno = self._fallback_at.get(id(probe), (probe.filename, probe.lineno))
            raise ProbeFileError(
                path,
                lineno,
                f"probe {probe.name}: too many fallbacks "
                f"({len(probe.fallback_names)}; at most {MAX_FALLBACKS})",
            )
        chain = [probe]
        for name in probe.fallback_names:
            chain.append(self._resolve(name, probe))
        if probe.protocol == "TCP" and self.null_probe is not None:
            chain.append(self.null_probe)
        return chain

    def _resolve(self, name: str, referrer: Probe) -> Probe:
        # Nmap's getProbeByName: the NULL probe (by its name, for TCP referrers
        # only), then the same protocol, then any protocol.
        null = self.null_probe
        if null is not None and referrer.protocol == "TCP" and name == null.name:
            return null
        same = [p for p in self.probes if p.name == name and p.protocol == referrer.protocol]
        if same:
            return same[0]
        other = [p for p in self.probes if p.name == name]
        if other:
            return other[0]
        path, lineno = self._fallback_at.get(id(referrer), (referrer.filename, referrer.lineno))
        raise ProbeFileError(
            path,
            lineno,
            f"probe {referrer.name}: unknown fallback probe {name!r}",
        )


def _fgets_lines(data: bytes, path: str, grammar: Grammar | None = None) -> Iterable[bytes]:
    """Lines as Nmap's ``fgets`` sees them; over-long lines are errors.

    Up to Nmap 7.99 (2048-byte buffer) Nmap splits such a line and misparses its
    tail; we refuse it instead of guessing, naming the line. From 7.991 (8192 bytes)
    Nmap refuses it itself: fgets() filled the buffer without a newline and feof()
    is not yet set, which is also the case for a last line of exactly 8191 bytes
    without a newline.
    """
    grammar = grammar if grammar is not None else grammar_for()
    limit = grammar.line_buffer - 1
    start = 0
    lineno = 0
    n = len(data)
    while start < n:
        lineno += 1
        end = data.find(b"\n", start)
        stop = n if end < 0 else end + 1
        line = data[start:stop]
        content = len(line) - (1 if line.endswith(b"\n") else 0)
        if grammar.long_line_fatal and content >= limit:
            raise ProbeFileError(
                path,
                lineno,
                f"line is too long: {content} bytes before the newline; "
                f"Nmap {grammar.release} and later allow at most {limit - 1}",
            )
        if len(line) > limit:
            raise ProbeFileError(
                path,
                lineno,
                f"line is {len(line)} bytes; Nmap {grammar.release} reads at most {limit} "
                "(a longer line is split and its tail misparsed)",
            )
        yield line
        start = stop


def parse_exclude(text: bytes) -> ExcludeSpec:
    """``Exclude`` port specification (Nmap ``-p`` syntax, numeric forms)."""
    spec = parse_port_spec(text.decode("latin-1").strip())
    return ExcludeSpec(
        tcp=PortRanges((p, p) for p in spec.tcp),
        udp=PortRanges((p, p) for p in spec.udp),
        sctp=PortRanges((p, p) for p in spec.sctp),
        any_proto=PortRanges((p, p) for p in spec.unprefixed),
    )


def load_probe_files(
    primary: str | os.PathLike[str],
    extras: Sequence[str | os.PathLike[str]] = (),
    *,
    release: str | Grammar | None = None,
    matches_empty: EmptyMatchCheck | None = None,
    engine: Engine | None = None,
) -> ProbeDatabase:
    """Load the main probe file and layer extra files on top of it.

    ``release``: the Nmap release whose grammar to read (default: the file's release when
    ``engine`` was chosen by ``auto``, else 7.93, Debian 12's). Every pattern, the extra
    files' included, is compiled with ``engine`` (default: ``regex_engine = auto`` for
    ``primary``, :func:`~vscand.probes.engine.resolve`).
    """
    if engine is None:
        engine = resolve_engine("auto", os.fspath(primary), installed_paths=DEFAULT_PROBE_PATHS)
    loader = _Loader(grammar_for(release or _file_release(engine)), matches_empty, engine)
    for index, path in enumerate([primary, *extras]):
        name = os.fspath(path)
        try:
            data = Path(name).read_bytes()
        except OSError as exc:
            reason = f"cannot read probe file: {exc.strerror or exc}"
            raise ProbeFileError(name, 0, reason) from None
        loader.load(name, data, extra=index > 0)
    return loader.finish()


def _file_release(engine: Engine) -> str | None:
    """The probe file's Nmap release as ``auto`` found it; an engine asked for by name says
    which regex rules to use, not which release wrote the file."""
    return engine.release if engine.requested == "auto" else None


def parse_probe_text(
    text: bytes,
    filename: str = "<probes>",
    *,
    release: str | Grammar | None = None,
    matches_empty: EmptyMatchCheck | None = None,
    engine: Engine | None = None,
) -> ProbeDatabase:
    """Parse probe-file content held in memory (tests, ``vscan match --probes -``)."""
    engine = engine if engine is not None else default_engine()
    loader = _Loader(grammar_for(release or _file_release(engine)), matches_empty, engine)
    loader.load(filename, text, extra=False)
    return loader.finish()


def find_probe_file(configured: str | None = None) -> str:
    """The probe file to use: the configured path, else Nmap's usual locations."""
    if configured:
        return configured
    for candidate in DEFAULT_PROBE_PATHS:
        if os.path.exists(candidate):
            return candidate
    raise ProbeFileError(
        DEFAULT_PROBE_PATHS[0],
        0,
        "nmap-service-probes not found; install Debian's nmap-common package or set probes_file",
    )
