"""One line of the ``nmap-service-probes`` grammar (SPEC §1): C escapes, port
lists, version templates, ``match``/``softmatch`` and ``Probe`` lines.

``parser.py`` reads whole files with these and names the file and line in its
errors; here a bad line is a ``ValueError`` with the reason alone.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass

from vscand.probes.engine import Engine, default_engine
from vscand.probes.grammar import Grammar, grammar_for
from vscand.probes.model import MatchLine, Probe, Protocol, Templates
from vscand.probes.pcre import PcreError

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


def ranged_int(value: bytes, what: str, low: int, high: int) -> int:
    # atoi() and strtol(…, NULL, 10) alike: text after the digits is ignored and
    # no digits at all read as 0 (which is then out of range).
    number, _end = _strtol(value, 0)
    if number is None:
        number = 0
    if not low <= number <= high:
        raise ValueError(f"{what} must be between {low} and {high}")
    return number
