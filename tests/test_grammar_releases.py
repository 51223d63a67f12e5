"""Where Nmap releases read nmap-service-probes differently (vscand/probes/grammar.py).

Small probe files written here, one per grammar element, read with each release's
grammar; DESIGN.md ("Nmap releases and their probe grammar") names the Nmap source
of each difference. The real files of the releases on this machine: test_releases.py.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.pcre8 import needs_pcre8
from vscand.probes.engine import resolve
from vscand.probes.grammar import GRAMMARS, Grammar, grammar_for, release_key
from vscand.probes.model import MatchLine, ProbeDatabase
from vscand.probes.parser import ProbeFileError, parse_probe_text
from vscand.probes.pcre import Pattern
from vscand.scan.udp_payloads import port_scan_payloads

NAME = "t.probes"
NULL = b"Probe TCP NULL q||\n"
ALL = ("7.93", "7.94", "7.95", "7.991")
FROM_794 = ("7.94", "7.95", "7.99", "7.991")


def parse(text: bytes, release: str, **kwargs: object) -> ProbeDatabase:
    return parse_probe_text(text, NAME, release=release, **kwargs)  # type: ignore[arg-type]


def refused(text: bytes, release: str, lineno: int, *words: str) -> ProbeFileError:
    with pytest.raises(ProbeFileError) as info:
        parse(text, release)
    err = info.value
    assert (err.filename, err.lineno) == (NAME, lineno), err
    for word in words:
        assert word.lower() in err.reason.lower(), err.reason
    return err


def only_match(db: ProbeDatabase) -> MatchLine:
    assert len(db.lines) == 1
    return db.lines[0]


# --- profiles -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("asked", "profile"),
    [
        ("7.93", "7.93"),
        ("7.93+dfsg1-1", "7.93"),
        ("Nmap version 7.94", "7.94"),
        ("7.95+dfsg-3", "7.95"),
        ("7.96", "7.95"),
        ("7.99", "7.95"),
        ("7.991", "7.991"),
        ("8.0", "7.991"),
    ],
)
def test_grammar_for_a_release(asked: str, profile: str) -> None:
    assert grammar_for(asked).release == profile


def test_default_grammar_is_7_93_and_older_releases_are_refused() -> None:
    assert grammar_for().release == grammar_for(None).release == "7.93"
    assert parse_probe_text(NULL).grammar.release == "7.93"
    with pytest.raises(ValueError, match="older"):
        grammar_for("7.92")
    with pytest.raises(ValueError):
        release_key("trixie")


def test_release_order_is_nmap_s() -> None:
    assert release_key("7.99") < release_key("7.991") < release_key("8.0")
    assert [release_key(g.release) for g in GRAMMARS] == sorted(
        release_key(g.release) for g in GRAMMARS
    )


def test_profiles_carry_each_release_s_regex_settings() -> None:
    assert [(g.release, g.regex_library) for g in GRAMMARS] == [
        ("7.93", "pcre"),
        ("7.94", "pcre"),
        ("7.95", "pcre2"),
        ("7.991", "pcre2"),
    ]
    old, new = grammar_for("7.95"), grammar_for("7.991")
    assert (old.match_limit, old.depth_limit, old.heap_limit_kib) == (100_000, 10_000, None)
    assert (new.match_limit, new.depth_limit, new.heap_limit_kib) == (50_000, 1_000, 10_240)
    assert not grammar_for("7.93").udp_payloads_from_probes
    assert grammar_for("7.94").udp_payloads_from_probes and grammar_for("7.94").dtls_tunnel


def test_udp_sockets_and_unknown_service_names_change_in_7_94() -> None:
    """84e2e9be5 (a new nsock iod for every UDP probe) and b7c76ea08 (``unknown`` in
    nmap-services stored as no name) are both first in 7.94."""
    assert [(g.release, g.udp_socket_per_probe, g.unknown_service_unnamed) for g in GRAMMARS] == [
        ("7.93", False, False),
        ("7.94", True, True),
        ("7.95", True, True),
        ("7.991", True, True),
    ]


def test_a_grammar_object_is_accepted_as_the_release() -> None:
    custom = Grammar(**{**grammar_for("7.95").__dict__, "line_buffer": 64})
    refused(NULL + b"match a m|" + b"a" * 70 + b"|\n", custom, 2)  # type: ignore[arg-type]


# --- words after the probe string: no-payload, source= --------------------------------------


def test_no_payload_is_ignored_by_7_93() -> None:
    db = parse(b"Probe UDP A q|a| no-payload\n", "7.93")
    probe = db.find("A", "UDP")
    assert probe.no_payload is False
    assert probe.options == ("no-payload",)


@pytest.mark.parametrize("release", FROM_794)
@pytest.mark.parametrize(
    ("words", "no_payload"),
    [
        (b" no-payload", True),
        (b"\tno-payload\r", True),
        (b" source=500 no-payload", True),
        (b" no-payload source=500", True),
        (b" no-payloads", True),  # strncmp(pd, "no-payload", 10): a prefix is enough
        (b" xno-payload", False),
        (b" no-pay", False),
        (b" source=500", False),
        (b"", False),
        (b" anything else", False),
    ],
)
def test_no_payload_from_7_94(release: str, words: bytes, no_payload: bool) -> None:
    db = parse(b"Probe UDP A q|a|" + words + b"\nProbe UDP B q|b|\n", release)
    assert db.find("A", "UDP").no_payload is no_payload
    assert db.find("A", "UDP").options == tuple(words.decode().split())
    assert db.find("B", "UDP").no_payload is False


PAYLOAD_PROBES = (
    b"Probe UDP A q|aa| no-payload\nports 7,9\n"
    b"Probe UDP B q|bb|\nports 9-11\n"
    b"Probe TCP C q|cc|\nports 9\n"
    b"Probe UDP D q|dd|\nsslports 9\n"
    b"Probe UDP E q|ee|\nports 9,500\n"
)


@pytest.mark.parametrize("release", FROM_794)
def test_port_scan_payloads_are_the_udp_probes_from_7_94(release: str) -> None:
    """init_payloads(): each UDP probe without no-payload, for each port of its ports line (not
    sslports), in file order; every one of a port is sent."""
    payloads = port_scan_payloads(parse(PAYLOAD_PROBES, release))
    assert len(payloads) == 2
    assert payloads.for_port(9) == (b"bb", b"ee")
    assert payloads.for_port(10) == (b"bb",)
    assert payloads.for_port(7) == () and payloads.for_port(500) == (b"ee",)


def test_port_scan_payloads_of_7_93_are_nmap_payloads(tmp_path: Path) -> None:
    payloads_file = tmp_path / "nmap-payloads"
    payloads_file.write_text('udp 9 "zz"\n')
    payloads = port_scan_payloads(parse(PAYLOAD_PROBES, "7.93"), str(payloads_file))
    assert payloads.for_port(9) == (b"zz",) and payloads.for_port(10) == ()


@pytest.mark.parametrize("release", ALL)
def test_source_option_is_recorded_never_enforced(release: str) -> None:
    db = parse(
        b"Probe UDP IKE q|\\0\\x11| source=500\nports 500\n"
        b"Probe UDP Odd q|x| source=port\nProbe UDP Big q|y| source=70000\n",
        release,
    )
    assert db.find("IKE", "UDP").source_port == 500
    assert db.find("IKE", "UDP").no_payload is False
    assert db.find("Odd", "UDP").source_port is None
    assert db.find("Big", "UDP").source_port is None


@pytest.mark.parametrize("release", FROM_794)
def test_no_payload_on_a_tcp_probe_is_recorded(release: str) -> None:
    # Nmap sets the flag on any probe; only UDP probes are port-scan payloads
    db = parse(NULL + b"Probe TCP T q|t| no-payload\n", release)
    assert db.find("T", "TCP").no_payload is True


# --- templates: Nmap 7.94's char[4] reader ----------------------------------------------------


def test_cpe_with_another_delimiter_only_before_7_94() -> None:
    line = NULL + b"match x m|^x| cpe:|a:x:y|\n"
    assert only_match(parse(line, "7.93")).templates.cpes == (b"cpe:/a:x:y",)
    for release in FROM_794:
        refused(line, release, 2, "cpe delimiter")


@pytest.mark.parametrize("release", ALL)
def test_cpe_templates_read_the_same(release: str) -> None:
    db = parse(NULL + b"match x m|^x| p/P/ cpe:/a:x:y:$1/a cpe:/o:linux:linux_kernel/\n", release)
    assert only_match(db).templates.cpes == (b"cpe:/a:x:y:$1", b"cpe:/o:linux:linux_kernel")


def test_cpe_without_colon_is_a_cpe_template_from_7_94() -> None:
    # modestr "cpe", delimiter '|': InitMatch's switch takes it as a CPE, text as written
    line = NULL + b"match x m|^x| cpe|a:x:y|\n"
    refused(line, "7.93", 2, "unknown template")
    for release in FROM_794:
        assert only_match(parse(line, release)).templates.cpes == (b"a:x:y",)


@pytest.mark.parametrize(
    ("rest", "caseless", "dotall"),
    [(b"m|^a.b|iiss", True, True), (b"m|^a.b|sisi p/x/", True, True)],
)
def test_four_flag_letters_only_before_7_94(rest: bytes, caseless: bool, dotall: bool) -> None:
    line = NULL + b"match a " + rest + b"\n"
    m = only_match(parse(line, "7.93"))
    assert (m.caseless, m.dotall) == (caseless, dotall)
    for release in FROM_794:
        refused(line, release, 2, "flags too long")


@pytest.mark.parametrize("release", ALL)
def test_three_flag_letters_everywhere(release: str) -> None:
    m = only_match(parse(NULL + b"match a m|^a.b|isi p/x/abc v/1/\n", release))
    assert (m.caseless, m.dotall) == (True, True)
    assert m.templates.product == b"x" and m.templates.version == b"1"


def test_field_template_flags_over_three_letters() -> None:
    line = NULL + b"match a m|^a| p/x/abcd\n"
    assert only_match(parse(line, "7.93")).templates.product == b"x"
    refused(line, "7.95", 2, "flags too long")


@pytest.mark.parametrize("release", ALL)
@pytest.mark.parametrize("rest", [b"m|x| prod/a/", b"m|x| pv/a/", b"m|x| cp/a/", b"m|x| x/a/"])
def test_unknown_template_modes(release: str, rest: bytes) -> None:
    refused(NULL + b"match ok m|a|\nmatch svc " + rest + b"\n", release, 3)


@pytest.mark.parametrize("release", ALL)
def test_bare_word_after_the_pattern(release: str) -> None:
    refused(NULL + b"match svc m|x| word\n", release, 2)


def test_last_line_without_newline() -> None:
    # 7.94+: after the flags next_template() needs whitespace; fgets() kept the
    # newline, except on a last line without one, where the NUL fails the check
    text = NULL + b"match a m|^a| p/x/"
    assert only_match(parse(text, "7.93")).templates.product == b"x"
    for release in FROM_794:
        refused(text, release, 2, "flags too long")
        # a CR before the end is whitespace to Nmap
        assert only_match(parse(text + b"\r", release)).templates.product == b"x"
        assert only_match(parse(text + b"\n", release)).templates.product == b"x"
        assert only_match(parse(text + b"\r\n", release)).templates.product == b"x"


# --- line length --------------------------------------------------------------------------------


def match_line_of(size: int, end: bytes = b"\n") -> bytes:
    """A match line of ``size`` bytes including its ending (newline, CR, or none)."""
    head = b"match x m|"
    return head + b"a" * (size - len(head) - 1 - len(end)) + b"|" + end


@pytest.mark.parametrize("release", ("7.93", "7.94", "7.95", "7.99"))
def test_2048_byte_buffer_up_to_7_99(release: str) -> None:
    assert len(match_line_of(2047)) == 2047
    assert len(parse(NULL + match_line_of(2047), release).lines) == 1
    refused(NULL + match_line_of(2048), release, 2, "2047")
    refused(NULL + match_line_of(5000), release, 2)
    # a last line without a newline: 2047 bytes fit the buffer (a CR ends it for 7.94+)
    assert len(parse(NULL + match_line_of(2047, b"\r"), release).lines) == 1
    refused(NULL + match_line_of(2048, b"\r"), release, 2)


def test_8192_byte_buffer_from_7_991() -> None:
    assert len(parse(NULL + match_line_of(5000), "7.991").lines) == 1
    assert len(parse(NULL + match_line_of(8191), "7.991").lines) == 1
    refused(NULL + match_line_of(8192), "7.991", 2, "too long", "8190")
    # without a newline, 8190 bytes are read whole; 8191 fill the buffer and feof()
    # is not yet set: Nmap calls that too long
    m = only_match(parse(NULL + b"# c\n" + match_line_of(8190, b"\r"), "7.991"))
    assert m.lineno == 3
    refused(NULL + match_line_of(8191, b"\r"), "7.991", 2, "too long")


@pytest.mark.parametrize("release", ("7.93", "7.991"))
def test_a_long_comment_is_refused_too(release: str) -> None:
    # the length is checked before a line is known to be a comment
    comment = b"#" + b"c" * 9000 + b"\n"
    refused(NULL + comment, release, 2)


# --- the empty-match refusal (7.991) --------------------------------------------------------------


def empty_by_trying(line: MatchLine) -> bool:
    """A stand-in for PCRE2_INFO_MATCHEMPTY on these snippets: try the empty subject."""
    return line.compiled.hits(b"")


EMPTY = NULL + b"match ok m|^a|\nmatch bad m|^a*|\nmatch ok2 m|b?c|\n"


def test_empty_match_refused_from_7_991() -> None:
    with pytest.raises(ProbeFileError) as info:
        parse(EMPTY, "7.991", matches_empty=empty_by_trying)
    assert (info.value.lineno, info.value.reason) == (3, "pattern matches zero-length string")


@pytest.mark.parametrize("release", ("7.93", "7.95", "7.99"))
def test_empty_match_allowed_before_7_991(release: str) -> None:
    asked: list[int] = []

    def check(line: MatchLine) -> bool:
        asked.append(line.lineno)
        return True

    db = parse(EMPTY, release, matches_empty=check)
    assert len(db.lines) == 3 and asked == []
    assert db.empty_match_unchecked == 0


@needs_pcre8
def test_empty_match_unchecked_without_an_engine_that_knows() -> None:
    # PCRE 8's Pattern has no matches_empty(): the lines are loaded and counted
    assert not hasattr(Pattern(b"a"), "matches_empty")
    db = parse(EMPTY, "7.991", engine=resolve("pcre", "-"))
    assert len(db.lines) == 3
    assert db.empty_match_unchecked == 3


def test_empty_match_asks_the_engine_s_pattern() -> None:
    """Under PCRE2 the pattern itself knows (PCRE2_INFO_MATCHEMPTY): nothing is unchecked."""
    engine = resolve("pcre2", "-")  # 7.95's limits, which refuse nothing themselves
    with pytest.raises(ProbeFileError) as info:
        parse(EMPTY, "7.991", engine=engine)
    assert info.value.lineno == 3
    db = parse(NULL + b"match ok m|^a|\n", "7.991", engine=engine)
    assert db.empty_match_unchecked == 0


# --- the same file, every release ----------------------------------------------------------------


COMMON = (
    b"# a file every release reads alike\n"
    b"Exclude T:9100-9107\n"
    b"Probe TCP NULL q||\n"
    b"totalwaitms 6000\n"
    b"tcpwrappedms 3000\n"
    b"match ftp m|^220 ([\\w.]+) FTP|i p/$1/ cpe:/a:x:$1/\n"
    b"softmatch ftp m|^220|\n"
    b"Probe TCP GetRequest q|GET / HTTP/1.0\\r\\n\\r\\n|\n"
    b"rarity 1\n"
    b"ports 80,8080-8081\n"
    b"sslports 443\n"
    b"match http m=^HTTP/1\\.[01] \\d+= p/web/ i|x y| d/router/ o/Linux/ h/h/\n"
    b"Probe TCP Help q|HELP\\r\\n|\n"
    b"rarity 3\n"
    b"fallback GetRequest\n"
    b"Probe UDP DNS q|\\0\\x06\\x01\\0|\n"
    b"rarity 1\n"
    b"ports 53\n"
    b"sslports 853\n"
    b"match domain m|^\\0\\x06\\x81|s\n"
)


@pytest.mark.parametrize("release", ALL)
def test_a_plain_file_reads_alike_in_every_release(release: str) -> None:
    db = parse(COMMON, release)
    assert db.grammar is grammar_for(release)
    assert [(p.protocol, p.name) for p in db.all_probes()] == [
        ("TCP", "NULL"),
        ("TCP", "GetRequest"),
        ("TCP", "Help"),
        ("UDP", "DNS"),
    ]
    assert [(m.service, m.soft) for m in db.lines] == [
        ("ftp", False),
        ("ftp", True),
        ("http", False),
        ("domain", False),
    ]
    assert db.lines[0].templates.cpes == (b"cpe:/a:x:$1",)
    assert db.lines[2].templates.extrainfo == b"x y"
    assert [p.name for p in db.find("Help").chain] == ["Help", "GetRequest", "NULL"]
    assert db.find("DNS", "UDP").sslports.ranges() == [(853, 853)]
    assert db.exclude.tcp.ranges() == [(9100, 9107)]
