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
from dataclasses import dataclass
from pathlib import Path

from vscand.ports import parse_port_spec
from vscand.probes.engine import Engine, default_engine
from vscand.probes.engine import resolve as resolve_engine
from vscand.probes.grammar import Grammar, grammar_for
from vscand.probes.model import (
    ExcludeSpec,
    MatchLine,
    PortRanges,
    Probe,
    ProbeDatabase,
    Protocol,
    Templates,
)
from vscand.probes.pcre import PcreError

#: fgets() buffer Nmap 7.93 reads the file with: a longer line is split by Nmap
#: (each release's buffer: ``Grammar.line_buffer``).
LINE_BUFFER = 2048
MAX_FALLBACKS = 17
WAIT_RANGE = (100, 300_000)

DEFAULT_PROBE_PATHS = (
    "/usr/share/nmap/nmap-service-probes",
    "/usr/local/share/nmap/nmap-service-probes",
)

_C_SPACE = b" \t\n\v\f\r"
_SIMPLE_ESCAPES = {
    ord("0"): 0,
    ord("a"): 7,
    ord("b"): 8,
    ord("f"): 12,
    ord("n"): 10,
    ord("r"): 13,
    ord("t"): 9,
    ord("v"): 11,
}
_HEX = b"0123456789abcdefABCDEF"

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


class EscapeError(ValueError):
    pass


def cstring_unescape(data: bytes) -> bytes:
    """Nmap's probe-string unescaping (SPEC §1.4): C-like, not full C."""
    out = bytearray()
    i = 0
    n = len(data)
    while i < n:
        c = data[i]
        if c != 0x5C:  # backslash
            out.append(c)
            i += 1
            continue
        if i + 1 >= n:
            raise EscapeError("backslash at end of string")
        e = data[i + 1]
        if e in _SIMPLE_ESCAPES:
            out.append(_SIMPLE_ESCAPES[e])
            i += 2
        elif e == ord("x"):
            digits = data[i + 2 : i + 4]
            if len(digits) < 2 or any(d not in _HEX for d in digits):
                raise EscapeError("\\x needs exactly two hex digits")
            out.append(int(digits, 16))
            i += 4
        elif chr(e).isalnum() and e < 0x80:
            raise EscapeError(f"unknown escape \\{chr(e)}")
        else:
            out.append(e)
            i += 2
    return bytes(out)


def _isspace(c: int) -> bool:
    return c in _C_SPACE


def _strtol(text: bytes, pos: int) -> tuple[int | None, int]:
    """Base-10 strtol: returns (value, end) or (None, pos) when no digits."""
    j = pos
    while j < len(text) and _isspace(text[j]):
        j += 1
    start = j
    if j < len(text) and text[j] in b"+-":
        j += 1
    k = j
    while k < len(text) and 0x30 <= text[k] <= 0x39:
        k += 1
    if k == j:
        return None, pos
    return int(text[start:k]), k


def parse_port_list(text: bytes) -> list[tuple[int, int]]:
    """``ports``/``sslports`` lists: ``N`` or ``N-M`` items separated by commas."""
    ranges: list[tuple[int, int]] = []
    i = 0
    n = len(text)
    example = 'an example of proper portlist form is "21-25,53,80"'
    while True:
        while i < n and _isspace(text[i]):
            i += 1
        if i >= n or not (0x30 <= text[i] <= 0x39):
            raise ValueError(example)
        start, i = _strtol(text, i)
        assert start is not None
        if start > 65535:
            raise ValueError("ports must be between 0 and 65535 inclusive")
        while i < n and _isspace(text[i]):
            i += 1
        if i >= n or text[i] == ord(","):
            end = start
        elif text[i] == ord("-"):
            i += 1
            if i >= n or not (0x30 <= text[i] <= 0x39):
                raise ValueError(example)
            end_value, i = _strtol(text, i)
            assert end_value is not None
            end = end_value
            if end > 65535 or end < start:
                raise ValueError("ports must be between 0 and 65535 inclusive, low before high")
            while i < n and _isspace(text[i]):
                i += 1
        else:
            raise ValueError(example)
        ranges.append((start, end))
        if i >= n:
            return ranges
        if text[i] != ord(","):
            raise ValueError(example)
        i += 1


@dataclass
class _Template:
    mode: bytes
    text: bytes
    flags: bytes


def next_template(line: bytes, pos: int) -> tuple[_Template | None, int]:
    """Read one ``<mode><d><text><d>[flags]`` item starting at ``pos`` (Nmap 7.93).

    The mode is every letter or ':' before the delimiter, the flags every letter
    after it; a non-space after the flags is refused here (in Nmap it starts a
    template whose mode is empty or begins with ':', which fails as unknown).
    """
    n = len(line)
    while pos < n and _isspace(line[pos]):
        pos += 1
    if pos >= n:
        return None, pos
    q = pos
    while q < n and ((chr(line[q]).isalpha() and line[q] < 0x80) or line[q] == ord(":")):
        q += 1
    if q >= n or _isspace(line[q]):
        raise ValueError(f"template {line[pos:q]!r} has no delimiter")
    mode = line[pos:q]
    delim = line[q]
    end = line.find(bytes([delim]), q + 1)
    if end < 0:
        raise ValueError(f"no closing delimiter {chr(delim)!r} for {mode.decode('latin-1')!r}")
    text = line[q + 1 : end]
    f = end + 1
    while f < n and chr(line[f]).isalpha() and line[f] < 0x80:
        f += 1
    flags = line[end + 1 : f]
    if f < n and not _isspace(line[f]):
        raise ValueError(f"unexpected {chr(line[f])!r} after {mode.decode('latin-1')!r} template")
    return _Template(mode, text, flags), f


def _isalpha(c: int) -> bool:
    return 0x41 <= c <= 0x5A or 0x61 <= c <= 0x7A


def next_template_compact(line: bytes, pos: int, terminated: bool) -> tuple[_Template | None, int]:
    """Nmap 7.94 and later: next_template() writing into ``char modestr[4], flags[4]``.

    The mode is at most 3 letters and the next byte, whatever it is, the delimiter;
    ``cpe:`` must be followed by '/' and its text keeps the ``cpe:/`` prefix (mode
    ``cpe``); the flags are at most 3 letters and must be followed by whitespace.
    Past the end of ``line`` Nmap sees the newline fgets() kept (``terminated``),
    else the string's NUL.
    """
    n = len(line)

    def at(i: int) -> int:
        if i < n:
            return line[i]
        return 0x0A if terminated and i == n else 0

    while _isspace(at(pos)) and at(pos) != 0:
        pos += 1
    if at(pos) == 0:
        return None, pos
    i = 0
    while i < 3 and _isalpha(at(pos + i)):
        i += 1
    mode = line[pos : pos + i]
    q = pos + i
    if at(q) == ord(":") and mode == b"cpe":
        q += 1
        if at(q) != ord("/"):
            raise ValueError("parse error (cpe delimiter not '/')")
        start = pos
    else:
        if at(q) == 0 or _isspace(at(q)):
            raise ValueError(f"parse error (bare word {line[pos:q].decode('latin-1')!r})")
        start = q + 1
    delim = at(q)
    end = line.find(bytes([delim]), q + 1)
    if end < 0:
        raise ValueError(f"parse error (missing end delimiter {chr(delim)!r})")
    text = line[start:end]
    f = end + 1
    i = 0
    while i < 3 and _isalpha(at(f + i)):
        i += 1
    flags = line[f : f + i]
    if not _isspace(at(f + i)):
        raise ValueError("parse error (flags too long)")
    return _Template(mode, text, flags), f + i


_FIELD_MODES = {
    b"p": "product",
    b"v": "version",
    b"i": "extrainfo",
    b"h": "hostname",
    b"o": "ostype",
    b"d": "devicetype",
}


def parse_match_line(
    line: bytes,
    soft: bool,
    probe: Probe,
    filename: str,
    lineno: int,
    grammar: Grammar | None = None,
    terminated: bool = True,
    engine: Engine | None = None,
) -> MatchLine:
    """The text after ``match ``/``softmatch ``: service, regex, templates.

    ``terminated``: the file line ended with a newline (or CR), as Nmap 7.94+'s
    template reader needs to know. The regex is compiled with ``engine`` (the library
    and limits of the Nmap release reproduced; by default the installed Nmap's,
    :func:`~vscand.probes.engine.default_engine`).
    """
    engine = engine if engine is not None else default_engine()
    grammar = grammar if grammar is not None else grammar_for()
    compact = grammar.compact_templates

    def template(pos: int) -> tuple[_Template | None, int]:
        if compact:
            return next_template_compact(line, pos, terminated)
        return next_template(line, pos)

    space = line.find(b" ")
    if space < 0:
        raise ValueError("no regular expression after the service name")
    service = line[:space]
    if not service:
        raise ValueError("empty service name")
    tmpl, pos = template(space)
    if tmpl is None:
        raise ValueError("no regular expression")
    if tmpl.mode != b"m":
        raise ValueError("the regular expression must be written m<d>…<d>")
    caseless = dotall = False
    for flag in tmpl.flags:
        if flag == ord("i"):
            caseless = True
        elif flag == ord("s"):
            dotall = True
        else:
            raise ValueError(f"illegal regexp option {chr(flag)!r}")
    fields: dict[str, bytes] = {}
    cpes: list[bytes] = []
    while True:
        item, pos = template(pos)
        if item is None:
            break
        if item.mode in _FIELD_MODES:
            # a repeated field template replaces the earlier one; empty = absent
            fields[_FIELD_MODES[item.mode]] = item.text
        elif item.mode == b"cpe:" and not compact:
            cpes.append(b"cpe:/" + item.text)
        elif item.mode == b"cpe" and compact:
            # "cpe:/…/" keeps its prefix in the text; 7.94+ also takes "cpe<d>…<d>"
            # (any delimiter, no colon) as a CPE template, its text as written
            cpes.append(item.text)
        else:
            raise ValueError(f"unknown template specifier {item.mode.decode('latin-1')!r}")
    templates = Templates(
        **{name: (value if value else None) for name, value in fields.items()},
        cpes=tuple(cpes),
    )
    match = MatchLine(
        service=service.decode("latin-1"),
        pattern=tmpl.text,
        caseless=caseless,
        dotall=dotall,
        soft=soft,
        templates=templates,
        probe_name=probe.name,
        probe_protocol=probe.protocol,
        filename=filename,
        lineno=lineno,
        engine=engine,
    )
    try:
        match.compiled  # noqa: B018 - compile now: a bad pattern fails the load, as in Nmap
    except PcreError as exc:
        raise ValueError(f"illegal regexp: {exc}") from None
    return match


def parse_probe_line(
    rest: bytes, grammar: Grammar | None = None
) -> tuple[Protocol, str, bytes, bool, tuple[str, ...]]:
    """``Probe`` arguments: protocol, name, string, no-payload, the words after the string.

    The words after the probe string: Nmap 7.93 ignores them; 7.94 and later set
    no-payload when one *begins* with ``no-payload`` (strncmp) and ignore the rest,
    such as ``source=500`` (no release reads it).
    """
    grammar = grammar if grammar is not None else grammar_for()
    if rest.startswith(b"TCP "):
        protocol: Protocol = "TCP"
    elif rest.startswith(b"UDP "):
        protocol = "UDP"
    else:
        raise ValueError("invalid protocol: must be 'TCP' or 'UDP'")
    rest = rest[4:]
    if not rest or not (chr(rest[0]).isalnum() and rest[0] < 0x80):
        raise ValueError("bad probe name")
    space = rest.find(b" ")
    if space < 0:
        raise ValueError("nothing after probe name")
    name = rest[:space].decode("latin-1")
    rest = rest[space + 1 :]
    if not rest.startswith(b"q") or len(rest) < 2:
        raise ValueError("probe string must begin with 'q'")
    delim = rest[1]
    end = rest.find(bytes([delim]), 2)
    if end < 0:
        raise ValueError("no ending delimiter for probe string")
    try:
        string = cstring_unescape(rest[2:end])
    except EscapeError as exc:
        raise ValueError(f"bad probe string escaping: {exc}") from None
    words = rest[end + 1 :].split()
    no_payload = grammar.probe_flags and any(w.startswith(b"no-payload") for w in words)
    return protocol, name, string, no_payload, tuple(w.decode("latin-1") for w in words)


def _ranged_int(value: bytes, what: str, low: int, high: int) -> int:
    # atoi() and strtol(…, NULL, 10) alike: text after the digits is ignored and
    # no digits at all read as 0 (which is then out of range).
    number, _end = _strtol(value, 0)
    if number is None:
        number = 0
    if not low <= number <= high:
        raise ValueError(f"{what} must be between {low} and {high}")
    return number


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
            current.rarity = _ranged_int(line[7:], "rarity", 1, 9)
        elif line.startswith(b"totalwaitms "):
            current.totalwaitms = _ranged_int(line[12:], "totalwaitms", *WAIT_RANGE)
        elif line.startswith(b"tcpwrappedms "):
            current.tcpwrappedms = _ranged_int(line[13:], "tcpwrappedms", *WAIT_RANGE)
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
