"""The nmap-service-probes grammar (SPEC §0, §1), one directive at a time.

Small probe files are written in memory; every refused file must name the
file, the offending line and a reason, as Nmap's fatal() messages do.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.releases import probe_file_facts
from vscand.probes.lines import EscapeError, cstring_unescape, parse_port_list
from vscand.probes.model import ProbeDatabase
from vscand.probes.parser import ProbeFileError, load_probe_files, parse_probe_text

NAME = "t.probes"
NULL = b"Probe TCP NULL q||\n"


def parse(text: bytes) -> ProbeDatabase:
    return parse_probe_text(text, NAME)


def refused(text: bytes, lineno: int, *words: str) -> ProbeFileError:
    """The file is refused at ``lineno``; the reason mentions every word given."""
    with pytest.raises(ProbeFileError) as info:
        parse(text)
    err = info.value
    assert err.filename == NAME
    assert err.lineno == lineno, err
    assert err.reason.strip()
    for word in words:
        assert word.lower() in err.reason.lower(), err.reason
    assert str(err).startswith(f"{NAME}:{lineno}: ")
    return err


def chain(db: ProbeDatabase, name: str, protocol: str) -> list[str]:
    return [f"{p.protocol}/{p.name}" for p in db.find(name, protocol).chain]


# --- §0 defaults ------------------------------------------------------------------------------


def test_defaults_of_a_probe_without_directives() -> None:
    db = parse(NULL + b"Probe TCP A q|a|\n")
    probe = db.find("A", "TCP")
    assert probe.rarity == 5
    assert probe.totalwaitms == 5000
    assert probe.tcpwrappedms == 2000
    assert not probe.ports and not probe.sslports
    assert probe.fallback_names == ()
    assert probe.matches == []
    assert probe.no_payload is False
    assert db.null_probe is not None and db.null_probe.totalwaitms == 5000


# --- §1.1 line handling -------------------------------------------------------------------------


def test_comments_and_empty_lines_are_skipped() -> None:
    db = parse(b"# header\n\n" + NULL + b"# inside\n\nmatch ftp m|^220|\n#match x m|(|\n\n")
    assert db.null_probe is not None
    assert [m.service for m in db.null_probe.matches] == ["ftp"]
    assert db.null_probe.matches[0].lineno == 6


def test_a_spaces_only_line_is_fatal() -> None:
    refused(NULL + b"   \n", 2, "unknown directive")


def test_a_crlf_blank_line_is_fatal() -> None:
    refused(NULL + b"match ftp m|^220|\n\r\n", 3, "unknown directive")


def test_trailing_cr_on_a_directive_is_harmless() -> None:
    db = parse(
        b"Probe TCP NULL q||\r\ntotalwaitms 6000\r\nrarity 2\r\n"
        b"ports 21\r\nmatch ftp m|^220 (\\w+)$| p/$1/\r\n"
    )
    null = db.null_probe
    assert null is not None
    assert null.totalwaitms == 6000 and null.rarity == 2 and 21 in null.ports
    assert null.matches[0].templates.product == b"$1"
    assert null.matches[0].pattern == b"^220 (\\w+)$"


@pytest.mark.parametrize(
    "line",
    [b"match ftp m|^220|", b"ports 21", b"rarity 3", b"fallback NULL", b"totalwaitms 500"],
)
def test_a_directive_before_the_first_probe_is_fatal(line: bytes) -> None:
    refused(b"# c\n" + line + b"\n" + NULL, 2)


@pytest.mark.parametrize(
    "line",
    [
        b"foo bar",
        b"Match ftp m|x|",
        b" match ftp m|x|",
        b"\tports 21",
        b"ports",
        b"probe TCP X q|a|",
    ],
)
def test_unknown_directive_is_fatal(line: bytes) -> None:
    refused(NULL + b"match ftp m|^220|\n" + line + b"\n", 3)


def test_a_second_null_probe_is_fatal() -> None:
    refused(NULL + b"match a m|a|\nProbe TCP Empty q||\n", 3, "NULL")


def test_line_longer_than_the_fgets_buffer_is_refused() -> None:
    head = b"match x m|"
    # 2046 bytes + "\n" = 2047: exactly what a 2048-byte fgets buffer holds
    fits = head + b"a" * (2046 - len(head) - 1) + b"|\n"
    assert len(fits) == 2047
    db = parse(NULL + fits)
    assert db.null_probe is not None and len(db.null_probe.matches) == 1
    too_long = head + b"a" * (2047 - len(head) - 1) + b"|\n"
    assert len(too_long) == 2048
    refused(NULL + b"# c\n" + too_long, 3)


def test_an_empty_file_has_no_probes() -> None:
    with pytest.raises(ProbeFileError):
        parse(b"# nothing\n")


# --- §1.2 Exclude ----------------------------------------------------------------------------


def test_exclude_before_probes() -> None:
    db = parse(b"# c\nExclude 80,T:9100-9107,U:53,54\n" + NULL)
    ex = db.exclude
    assert ex.tcp.ranges() == [(9100, 9107)]
    assert ex.udp.ranges() == [(53, 54)]  # a prefix holds until the next one
    assert ex.any_proto.ranges() == [(80, 80)]
    assert ex.excludes("TCP", 9105, ["UDP"])
    assert not ex.excludes("TCP", 9108, ["TCP"])
    assert ex.excludes("UDP", 53, [])
    # unprefixed ports only for the protocols being scanned (getpts quirk)
    assert ex.excludes("TCP", 80, ["TCP"])
    assert not ex.excludes("UDP", 80, ["TCP"])


def test_no_exclude_excludes_nothing() -> None:
    db = parse(NULL)
    assert not db.exclude.excludes("TCP", 9100, ["TCP"])


def test_exclude_after_a_probe_is_fatal() -> None:
    refused(NULL + b"Exclude T:9100\n", 2, "precede")


def test_exclude_after_the_first_probe_section_is_fatal() -> None:
    refused(b"Probe TCP A q|a|\nrarity 1\n" + NULL + b"Exclude T:1\n", 4, "precede")


def test_exclude_twice_is_fatal() -> None:
    refused(b"Exclude T:1\nExclude T:2\n" + NULL, 2, "Exclude")


def test_bad_exclude_spec_is_fatal() -> None:
    refused(b"Exclude T:9-1\n" + NULL, 1)


# --- §1.3 Probe ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("line", "protocol", "name", "string"),
    [
        (
            b"Probe TCP GetRequest q|GET / HTTP/1.0\\r\\n\\r\\n|",
            "TCP",
            "GetRequest",
            b"GET / HTTP/1.0\r\n\r\n",
        ),
        (b"Probe UDP DNS q%\\0\\x06\\x01%", "UDP", "DNS", b"\x00\x06\x01"),
        (b"Probe TCP Pipe q=a|b=", "TCP", "Pipe", b"a|b"),
        (b"Probe TCP Slash q/x|y/ trailing junk", "TCP", "Slash", b"x|y"),
        (b"Probe UDP 1st q@x@", "UDP", "1st", b"x"),
    ],
)
def test_probe_line(line: bytes, protocol: str, name: str, string: bytes) -> None:
    db = parse(NULL + line + b"\n")
    probe = db.find(name, protocol)
    assert (probe.protocol, probe.name, probe.string) == (protocol, name, string)
    assert probe.lineno == 2 and probe.filename == NAME
    assert db.probes == [probe]


def test_words_after_the_probe_string_are_ignored_by_7_93() -> None:
    # Nmap 7.93 ends the probe string with a NUL and reads no further; the words are
    # kept as written, but no-payload means nothing yet (tests/test_grammar_releases.py)
    db = parse(b"Probe UDP A q|a| no-payload source=500\nProbe UDP B q|b|\n")
    assert db.find("A", "UDP").no_payload is False
    assert db.find("A", "UDP").options == ("no-payload", "source=500")
    assert db.find("B", "UDP").options == ()


def test_names_may_repeat_across_protocols() -> None:
    db = parse(NULL + b"Probe TCP Help q|HELP\\r\\n|\nProbe UDP Help q|help|\n")
    assert db.find("Help", "TCP").string == b"HELP\r\n"
    assert db.find("Help", "UDP").string == b"help"
    assert db.find("Help").protocol == "TCP"


def test_null_probe_is_separate_and_tcp_only_in_find() -> None:
    db = parse(NULL + b"Probe TCP A q|a|\n")
    assert db.null_probe is not None and db.null_probe.is_null
    assert db.null_probe not in db.probes
    assert db.all_probes()[0] is db.null_probe
    assert db.find("NULL") is db.null_probe
    with pytest.raises(KeyError):
        db.find("NULL", "UDP")


@pytest.mark.parametrize(
    "line",
    [
        b"Probe tcp A q|a|",
        b"Probe SCTP A q|a|",
        b"Probe TCP  A q|a|",
        b"Probe TCP _A q|a|",
        b"Probe TCP A",
        b"Probe TCP A x|a|",
        b"Probe TCP A q|abc",
        b"Probe TCP A q",
    ],
)
def test_bad_probe_lines_are_fatal(line: bytes) -> None:
    refused(NULL + b"match a m|a|\n" + line + b"\n", 3)


# --- §1.4 escapes ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("escape", "byte"),
    [
        (b"\\0", 0x00),
        (b"\\a", 0x07),
        (b"\\b", 0x08),
        (b"\\f", 0x0C),
        (b"\\n", 0x0A),
        (b"\\r", 0x0D),
        (b"\\t", 0x09),
        (b"\\v", 0x0B),
        (b"\\x41", 0x41),
        (b"\\xff", 0xFF),
        (b"\\xAb", 0xAB),
        (b"\\\\", 0x5C),
        (b'\\"', 0x22),
        (b"\\.", 0x2E),
        (b"\\ ", 0x20),
        (b"\\\xe9", 0xE9),
    ],
)
def test_escape_table(escape: bytes, byte: int) -> None:
    assert cstring_unescape(b"<" + escape + b">") == b"<" + bytes([byte]) + b">"
    db = parse(b"Probe TCP A q|" + escape + b"|\n")
    assert db.find("A").string == bytes([byte])


def test_backslash_zero_is_not_octal() -> None:
    assert cstring_unescape(b"\\012") == b"\x0012"
    assert cstring_unescape(b"\\00") == b"\x000"


@pytest.mark.parametrize("bad", [b"\\x", b"\\x4", b"\\x4g", b"\\xg4", b"\\x 4"])
def test_hex_escape_needs_two_hex_digits(bad: bytes) -> None:
    with pytest.raises(EscapeError):
        cstring_unescape(bad)
    refused(NULL + b"Probe TCP A q|" + bad + b"|\n", 2, "escap")


@pytest.mark.parametrize("bad", [b"\\e", b"\\1", b"\\d", b"\\Z", b"\\9", b"\\q"])
def test_backslash_alphanumeric_is_fatal(bad: bytes) -> None:
    with pytest.raises(EscapeError):
        cstring_unescape(b"ab" + bad + b"cd")
    refused(NULL + b"Probe TCP A q|" + bad + b"|\n", 2, "escap")


def test_backslash_cannot_protect_the_delimiter() -> None:
    # the delimiter is found before unescaping: "q|a\|b|" is the string "a\" (a dangling
    # backslash, which Nmap reads past the end of; we refuse it)
    refused(NULL + b"Probe TCP A q|a\\|b|\n", 2)
    # choose another delimiter instead
    assert parse(b"Probe TCP A q=a\\|b=\n").find("A").string == b"a|b"


@given(st.binary().filter(lambda b: b"\\" not in b))
def test_unescape_leaves_bytes_without_backslash_alone(data: bytes) -> None:
    assert cstring_unescape(data) == data


@given(st.binary())
def test_unescape_of_hex_escapes_round_trips(data: bytes) -> None:
    escaped = b"".join(b"\\x%02x" % b for b in data)
    assert cstring_unescape(escaped) == data
    assert cstring_unescape(escaped.upper().replace(b"\\X", b"\\x")) == data


@given(st.binary())
def test_unescape_of_backslashed_non_alphanumerics_round_trips(data: bytes) -> None:
    escaped = b"".join(
        (b"\\" + bytes([b])) if not (bytes([b]).isalnum()) else (b"\\x%02X" % b) for b in data
    )
    assert cstring_unescape(escaped) == data


# --- §1.5 ports / sslports -------------------------------------------------------------------


def test_port_lists_with_spaces_ranges_and_repeats() -> None:
    db = parse(
        NULL
        + b"Probe TCP A q|a|\nports 21-25, 53 ,80\nsslports 443\nports  8080 -8081\n"
        + b"sslports 993,995\n"
    )
    probe = db.find("A")
    assert probe.ports.ranges() == [(21, 25), (53, 53), (80, 80), (8080, 8081)]
    assert probe.sslports.ranges() == [(443, 443), (993, 993), (995, 995)]
    assert probe.port_list(tunnel_ssl=False) is probe.ports
    assert probe.port_list(tunnel_ssl=True) is probe.sslports
    assert 22 in probe.ports and 26 not in probe.ports and 443 not in probe.ports


def test_port_list_parser() -> None:
    assert parse_port_list(b"0") == [(0, 0)]
    assert parse_port_list(b"65535") == [(65535, 65535)]
    assert parse_port_list(b"7-7,1-2") == [(7, 7), (1, 2)]
    assert parse_port_list(b" 1 , 2 -3 ") == [(1, 1), (2, 3)]  # no space after "-"


@pytest.mark.parametrize(
    "spec",
    [
        b"5-1",
        b"1,",
        b"1, ",
        b"1,,2",
        b",1",
        b"65536",
        b"1-65536",
        b"T:80",
        b"http",
        b"1-",
        b"1- 2",
        b"",
        b"1 2",
    ],
)
def test_bad_port_lists_are_fatal(spec: bytes) -> None:
    with pytest.raises(ValueError):
        parse_port_list(spec)
    refused(NULL + b"Probe TCP A q|a|\nports " + spec + b"\n", 3)
    refused(NULL + b"Probe TCP A q|a|\nports 1\nsslports " + spec + b"\n", 4)


# --- §1.6 rarity, §1.7 waits -----------------------------------------------------------------


@pytest.mark.parametrize(("value", "rarity"), [(b"1", 1), (b"9", 9), (b" 3", 3), (b"4abc", 4)])
def test_rarity_is_atoi(value: bytes, rarity: int) -> None:
    db = parse(NULL + b"Probe TCP A q|a|\nrarity " + value + b"\n")
    assert db.find("A").rarity == rarity


@pytest.mark.parametrize("value", [b"0", b"10", b"-1", b"x", b"", b"  "])
def test_rarity_out_of_range_is_fatal(value: bytes) -> None:
    refused(NULL + b"Probe TCP A q|a|\nrarity " + value + b"\n", 3, "rarity")


@pytest.mark.parametrize("directive", [b"totalwaitms", b"tcpwrappedms"])
@pytest.mark.parametrize(("value", "ms"), [(b"100", 100), (b"300000", 300000), (b"7500", 7500)])
def test_waits_in_range(directive: bytes, value: bytes, ms: int) -> None:
    db = parse(NULL + b"Probe TCP A q|a|\n" + directive + b" " + value + b"\n")
    assert getattr(db.find("A"), directive.decode()) == ms


@pytest.mark.parametrize("directive", [b"totalwaitms", b"tcpwrappedms"])
def test_waits_read_with_strtol(directive: bytes) -> None:
    # strtol(…, NULL, 10): whatever follows the digits is ignored
    db = parse(NULL + b"Probe TCP A q|a|\n" + directive + b" 1500ms\n")
    assert getattr(db.find("A"), directive.decode()) == 1500


@pytest.mark.parametrize("directive", [b"totalwaitms", b"tcpwrappedms"])
@pytest.mark.parametrize("value", [b"99", b"300001", b"0", b"-500", b"soon"])
def test_waits_out_of_range_are_fatal(directive: bytes, value: bytes) -> None:
    refused(NULL + b"Probe TCP A q|a|\n" + directive + b" " + value + b"\n", 3, directive.decode())


# --- §1.8 fallback -----------------------------------------------------------------------------


FALLBACK_FILE = (
    NULL
    + b"Probe TCP Plain q|p|\n"
    + b"Probe TCP Two q|t|\nfallback A,B\n"
    + b"Probe TCP A q|a|\n"
    + b"Probe TCP B q|b|\n"
    + b"Probe UDP U q|u|\n"
    + b"Probe UDP UF q|uf|\nfallback U2\n"
    + b"Probe UDP U2 q|u2|\n"
    + b"Probe TCP Cross q|c|\nfallback U2\n"
    + b"Probe TCP Both q|x|\nProbe UDP Both q|y|\n"
    + b"Probe UDP PickUdp q|pu|\nfallback Both\n"
    + b"Probe TCP PickTcp q|pt|\nfallback Both\n"
    + b"Probe TCP Spaced q|s|\nfallback A B\tPlain , NULL\n"
    + b"Probe TCP Forward q|f|\nfallback Later\n"
    + b"Probe TCP Later q|l|\n"
)


@pytest.mark.parametrize(
    ("name", "protocol", "expected"),
    [
        ("NULL", "TCP", ["TCP/NULL"]),
        ("Plain", "TCP", ["TCP/Plain", "TCP/NULL"]),
        ("Two", "TCP", ["TCP/Two", "TCP/A", "TCP/B", "TCP/NULL"]),
        ("U", "UDP", ["UDP/U"]),
        ("UF", "UDP", ["UDP/UF", "UDP/U2"]),
        ("Cross", "TCP", ["TCP/Cross", "UDP/U2", "TCP/NULL"]),
        ("PickUdp", "UDP", ["UDP/PickUdp", "UDP/Both"]),
        ("PickTcp", "TCP", ["TCP/PickTcp", "TCP/Both", "TCP/NULL"]),
        ("Spaced", "TCP", ["TCP/Spaced", "TCP/A", "TCP/B", "TCP/Plain", "TCP/NULL", "TCP/NULL"]),
        ("Forward", "TCP", ["TCP/Forward", "TCP/Later", "TCP/NULL"]),
    ],
)
def test_fallback_chains(name: str, protocol: str, expected: list[str]) -> None:
    assert chain(parse(FALLBACK_FILE), name, protocol) == expected


def test_tcp_chain_without_a_null_probe() -> None:
    db = parse(b"Probe TCP A q|a|\nProbe TCP B q|b|\nfallback A\n")
    assert chain(db, "B", "TCP") == ["TCP/B", "TCP/A"]


def test_null_probe_is_found_by_its_own_name() -> None:
    # getProbeByName compares the NULL probe's name, whatever it is called
    db = parse(b"Probe TCP Banner q||\nProbe TCP A q|a|\nfallback Banner\n")
    assert chain(db, "A", "TCP") == ["TCP/A", "TCP/Banner", "TCP/Banner"]


def test_udp_cannot_fall_back_to_null() -> None:
    refused(NULL + b"Probe UDP U q|u|\nfallback NULL\n", 3, "NULL")


def test_unknown_fallback_is_fatal() -> None:
    refused(
        NULL + b"Probe TCP A q|a|\nrarity 3\nfallback B,Nowhere\nProbe TCP B q|b|\n", 4, "Nowhere"
    )


def test_seventeen_fallbacks_allowed_eighteen_fatal() -> None:
    targets = b"".join(b"Probe TCP F%d q|%d|\n" % (i, i) for i in range(18))
    names17 = b",".join(b"F%d" % i for i in range(17))
    db = parse(NULL + b"Probe TCP A q|a|\nfallback " + names17 + b"\n" + targets)
    assert len(db.find("A").chain) == 1 + 17 + 1
    names18 = names17 + b",F17"
    refused(NULL + b"Probe TCP A q|a|\nfallback " + names18 + b"\n" + targets, 3, "fallback")


# --- §1.9 match / softmatch ------------------------------------------------------------------


@pytest.mark.parametrize("delim", [b"|", b"=", b"%", b"@"])
def test_match_delimiters(delim: bytes) -> None:
    line = b"match ftp m" + delim + b"^220 (\\S+)" + delim + b" p/$1/\n"
    db = parse(NULL + line)
    assert db.null_probe is not None
    m = db.null_probe.matches[0]
    assert m.pattern == b"^220 (\\S+)"
    assert m.service == "ftp" and m.soft is False
    assert m.templates.product == b"$1"
    hit = m.compiled.search(b"220 vsftpd\r\n")
    assert hit is not None and hit.group(b"220 vsftpd\r\n", 1) == b"vsftpd"


def test_regex_ends_at_next_delimiter() -> None:
    db = parse(NULL + b"match http m=^HTTP/1\\.[01] \\d+ (a|b)= p/x/\n")
    assert db.null_probe is not None
    assert db.null_probe.matches[0].pattern == b"^HTTP/1\\.[01] \\d+ (a|b)"


@pytest.mark.parametrize(
    ("flags", "caseless", "dotall"),
    [
        (b"", False, False),
        (b"i", True, False),
        (b"s", False, True),
        (b"si", True, True),
        (b"iis", True, True),
    ],
)
def test_match_flags(flags: bytes, caseless: bool, dotall: bool) -> None:
    db = parse(NULL + b"match a m|^a.b|" + flags + b" p/x/\n")
    assert db.null_probe is not None
    m = db.null_probe.matches[0]
    assert (m.caseless, m.dotall) == (caseless, dotall)
    assert m.compiled.hits(b"A\nb") is (caseless and dotall)
    assert m.compiled.hits(b"a-b") is True


@pytest.mark.parametrize("flags", [b"x", b"im", b"I"])
def test_illegal_match_flag_is_fatal(flags: bytes) -> None:
    refused(NULL + b"match a m|a|" + flags + b"\n", 2)


def test_softmatch_and_services() -> None:
    db = parse(
        NULL
        + b"match ftp m|^220 FTP|\nsoftmatch ftp m|^220| h/$1/\nmatch ssl/http m|^\\x16\\x03|\n"
        + b"softmatch ssh m|^SSH-([\\d.]+)-| i/protocol $1/\n"
    )
    null = db.null_probe
    assert null is not None
    assert [(m.service, m.soft, m.lineno) for m in null.matches] == [
        ("ftp", False, 2),
        ("ftp", True, 3),
        ("ssl/http", False, 4),
        ("ssh", True, 5),
    ]
    assert null.matches[3].templates.extrainfo == b"protocol $1"
    assert null.services == frozenset({"ftp", "ssl/http", "ssh"})
    assert [m.index for m in db.lines] == [0, 1, 2, 3]


def test_services_count_only_own_lines() -> None:
    db = parse(NULL + b"match ftp m|^220|\nProbe TCP A q|a|\nmatch http m|^HTTP|\n")
    assert db.find("A").services == frozenset({"http"})


def test_templates_any_delimiter_and_flag_letters() -> None:
    db = parse(
        NULL + b"match x m|^x| p|a/b| v=1.0= i%x y% h@h@ o|z/OS| d/router/ "
        b"cpe:/a:x:y/a cpe:|o:ibm:z%2fos| cpe:/h:cisco:x/\n"
    )
    assert db.null_probe is not None
    t = db.null_probe.matches[0].templates
    assert (t.product, t.version, t.extrainfo, t.hostname, t.ostype, t.devicetype) == (
        b"a/b",
        b"1.0",
        b"x y",
        b"h",
        b"z/OS",
        b"router",
    )
    assert t.cpes == (b"cpe:/a:x:y", b"cpe:/o:ibm:z%2fos", b"cpe:/h:cisco:x")


def test_repeated_field_template_keeps_the_last() -> None:
    db = parse(NULL + b"match x m|^x| p/first/ v/1/ p/second/ cpe:/a:a:a/ cpe:/a:b:b/\n")
    assert db.null_probe is not None
    t = db.null_probe.matches[0].templates
    assert t.product == b"second" and t.version == b"1"
    assert t.cpes == (b"cpe:/a:a:a", b"cpe:/a:b:b")


def test_empty_template_is_absent() -> None:
    db = parse(NULL + b"match x m|^x| p// v/1/\n")
    assert db.null_probe is not None
    assert db.null_probe.matches[0].templates.product is None


@pytest.mark.parametrize(
    "rest",
    [
        b"m|x| z/a/",
        b"m|x| P/a/",
        b"m|x| p/a",
        b"m|x| p",
        b"m|x|i p/a/ q/b/",
        b"m|x",
        b"x|a|",
        b"",
        b"m|(x|",
        b"m=x{2,1}=",
        b"m|[z-a]|",
        b"m|x(?<n|",
    ],
)
def test_bad_match_lines_are_fatal(rest: bytes) -> None:
    refused(NULL + b"match ok m|a|\nmatch svc " + rest + b"\n", 3)


def test_pcre_compile_error_reason() -> None:
    refused(NULL + b"match svc m|(x|\n", 2, "regexp")


# --- extra files ---------------------------------------------------------------------------


PRIMARY = (
    b"Exclude T:9100\n"
    + NULL
    + b"totalwaitms 6000\nmatch ftp m|^220 FTP|\n"
    + b"Probe TCP GetRequest q|GET / HTTP/1.0\\r\\n\\r\\n|\nports 80\nmatch http m|^HTTP/1|\n"
    + b"Probe TCP Next q|n|\nmatch n m|^n|\n"
)


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def test_extra_file_appends_to_null_and_named_probes(tmp_path: Path) -> None:
    primary = write(tmp_path, "main", PRIMARY)
    extra = write(
        tmp_path,
        "extra",
        b"# local\nProbe TCP NULL q||\nmatch foo m|^FOO|\n"
        b"Probe TCP GetRequest q|GET / HTTP/1.0\\r\\n\\r\\n|\nports 8080\nmatch bar m|^BAR|\n",
    )
    db = load_probe_files(primary, [extra])
    assert db.files == [primary, extra]
    null = db.null_probe
    assert null is not None
    assert [(m.service, m.filename, m.lineno) for m in null.matches] == [
        ("ftp", primary, 4),
        ("foo", extra, 3),
    ]
    assert null.totalwaitms == 6000
    get = db.find("GetRequest")
    assert [m.service for m in get.matches] == ["http", "bar"]
    assert 80 in get.ports and 8080 in get.ports
    assert len(db.probes) == 2
    assert [m.index for m in db.lines] == list(range(len(db.lines)))
    assert [m.service for m in db.lines] == ["ftp", "foo", "http", "bar", "n"]


def test_extra_file_adds_a_new_probe(tmp_path: Path) -> None:
    primary = write(tmp_path, "main", PRIMARY)
    extra = write(
        tmp_path,
        "extra",
        b"Probe TCP Mine q|hello\\n|\nrarity 2\nfallback GetRequest\nmatch mine m|^MINE|\n",
    )
    db = load_probe_files(primary, [extra])
    mine = db.find("Mine")
    assert mine.string == b"hello\n" and mine.rarity == 2 and mine.filename == extra
    assert [p.name for p in mine.chain] == ["Mine", "GetRequest", "NULL"]
    assert db.probes[-1] is mine


def test_extra_file_conflicting_probe_string_is_rejected(tmp_path: Path) -> None:
    primary = write(tmp_path, "main", PRIMARY)
    extra = write(tmp_path, "extra", b"# c\nProbe TCP GetRequest q|GET /x HTTP/1.0\\r\\n\\r\\n|\n")
    with pytest.raises(ProbeFileError) as info:
        load_probe_files(primary, [extra])
    assert info.value.filename == extra
    assert info.value.lineno == 2
    assert "GetRequest" in info.value.reason


def test_extra_file_cannot_redefine_settings_of_an_existing_probe(tmp_path: Path) -> None:
    primary = write(tmp_path, "main", PRIMARY)
    extra = write(tmp_path, "extra", b"Probe TCP NULL q||\nmatch foo m|^FOO|\ntotalwaitms 100\n")
    with pytest.raises(ProbeFileError) as info:
        load_probe_files(primary, [extra])
    assert (info.value.filename, info.value.lineno) == (extra, 3)


def test_extra_file_errors_name_the_extra_file(tmp_path: Path) -> None:
    primary = write(tmp_path, "main", PRIMARY)
    extra = write(tmp_path, "extra", b"Probe TCP NULL q||\nmatch foo m|(|\n")
    with pytest.raises(ProbeFileError) as info:
        load_probe_files(primary, [extra])
    assert (info.value.filename, info.value.lineno) == (extra, 2)


def test_unreadable_file(tmp_path: Path) -> None:
    missing = str(tmp_path / "missing")
    with pytest.raises(ProbeFileError) as info:
        load_probe_files(missing)
    assert info.value.filename == missing and "read" in info.value.reason


def expected(db: ProbeDatabase) -> dict[str, Any]:
    return probe_file_facts(db.nmap_release)


def test_extra_on_the_shipped_file(shipped_probes_file: str, tmp_path: Path) -> None:
    extra = write(tmp_path, "extra", b"Probe TCP NULL q||\nmatch vscand-test m|^VSCAND-TEST|\n")
    db = load_probe_files(shipped_probes_file, [extra])
    want = expected(db)
    assert db.null_probe is not None
    assert len(db.null_probe.matches) == want["null"] + 1
    assert db.null_probe.matches[-1].service == "vscand-test"
    assert len(db.lines) == want["match"] + want["softmatch"] + 1


# --- the shipped file -----------------------------------------------------------------------


@pytest.fixture(scope="module")
def shipped(shipped_probes_file: str) -> ProbeDatabase:
    return load_probe_files(shipped_probes_file)


def test_shipped_counts(shipped: ProbeDatabase) -> None:
    want = expected(shipped)
    probes = shipped.all_probes()
    assert len(probes) == want["probes"]
    assert sum(p.protocol == "TCP" for p in probes) == want["tcp"]
    assert sum(p.protocol == "UDP" for p in probes) == want["udp"]
    assert sum(not m.soft for m in shipped.lines) == want["match"]
    assert sum(m.soft for m in shipped.lines) == want["softmatch"]
    assert shipped.null_probe is not None and len(shipped.null_probe.matches) == want["null"]
    assert sum(bool(p.fallback_names) for p in probes) == want["with_fallback"]


def test_shipped_exclude_and_null_waits(shipped: ProbeDatabase) -> None:
    ex = shipped.exclude
    assert ex.tcp.ranges() == [(9100, 9107)]
    assert not ex.udp and not ex.any_proto and not ex.sctp
    null = shipped.null_probe
    assert null is not None
    assert (null.totalwaitms, null.tcpwrappedms) == (6000, 3000)
    waits = {(p.protocol, p.name): p.totalwaitms for p in shipped.probes if p.totalwaitms != 5000}
    assert waits == {
        ("TCP", "Hello"): 7500,
        ("TCP", "Help"): 7500,
        ("TCP", "SIPOptions"): 7500,
        ("UDP", "SIPOptions"): 7500,
        ("TCP", "Verifier"): 11000,
    }


@pytest.mark.parametrize(
    ("name", "fallback"),
    [
        ("HTTPOptions", "TCP/GetRequest"),
        ("RTSPRequest", "TCP/GetRequest"),
        ("SSLSessionReq", "TCP/GetRequest"),
        ("TLSSessionReq", "TCP/GetRequest"),
        ("SSLv23SessionReq", "TCP/GetRequest"),
        ("FourOhFourRequest", "TCP/GetRequest"),
        ("SIPOptions", "TCP/GetRequest"),
        ("OfficeScan", "TCP/GetRequest"),
        ("TerminalServerCookie", "TCP/TerminalServer"),
        ("DNSVersionBindReqTCP", "UDP/DNSVersionBindReq"),
        ("DNSStatusRequestTCP", "UDP/DNSStatusRequest"),
    ],
)
def test_shipped_fallback_chains(shipped: ProbeDatabase, name: str, fallback: str) -> None:
    head = expected(shipped)["chains"].get(name, [f"TCP/{name}", fallback])
    assert chain(shipped, name, "TCP") == [*head, "TCP/NULL"]


def test_shipped_default_chains(shipped: ProbeDatabase) -> None:
    assert chain(shipped, "NULL", "TCP") == ["TCP/NULL"]
    assert chain(shipped, "GetRequest", "TCP") == ["TCP/GetRequest", "TCP/NULL"]
    assert chain(shipped, "SIPOptions", "UDP") == ["UDP/SIPOptions"]
    udp_with_fallback = [p.name for p in shipped.probes if p.protocol == "UDP" and p.fallback_names]
    assert udp_with_fallback == []
    for probe in shipped.probes:
        if not probe.fallback_names:
            tail = ["TCP/NULL"] if probe.protocol == "TCP" else []
            assert chain(shipped, probe.name, probe.protocol) == [
                f"{probe.protocol}/{probe.name}",
                *tail,
            ]


def test_shipped_delimiters(shipped: ProbeDatabase, shipped_probes_file: str) -> None:
    # every line's pattern is reproduced exactly from the file text
    text = Path(shipped_probes_file).read_bytes().split(b"\n")
    by_delim: dict[int, int] = {}
    for m in shipped.lines:
        raw = text[m.lineno - 1]
        start = raw.index(b" ", raw.index(b" ") + 1) + 2
        delim = raw[start]
        by_delim[delim] = by_delim.get(delim, 0) + 1
        assert raw[start + 1 : start + 1 + len(m.pattern)] == m.pattern
    assert by_delim == expected(shipped)["delimiters"]
