"""The service fingerprint builder (SPEC §8.4), by hand and against nmap 7.93."""

from __future__ import annotations

import re
import subprocess
import time
from pathlib import Path

import pytest

from tests.loopback import BannerServer, nmap_or_skip
from vscand.probes import engine as engine_mod
from vscand.probes.grammar import grammar_for
from vscand.probes.model import ExcludeSpec, ProbeDatabase
from vscand.scan.fingerprint import ServiceFingerprint, escape_response, servicefp, wrap

# 2026-11-22 (local time) — the §8.4 example header's date
WHEN = float(0x6B02BE85)
HEADER = "SF-Port7001-TCP:V=7.93%I=7%D=11/22%Time=6B02BE85%P=x86_64-pc-linux-gnu"


@pytest.fixture(autouse=True)
def _utc(monkeypatch: pytest.MonkeyPatch) -> None:
    """%D is local time: pin the zone so the example date holds everywhere."""
    monkeypatch.setenv("TZ", "UTC")
    time.tzset()
    yield
    monkeypatch.undo()
    time.tzset()


def fp(**kw: object) -> ServiceFingerprint:
    args: dict[str, object] = {
        "port": 7001,
        "protocol": "TCP",
        "intensity": 7,
        "ssl": False,
        "when": WHEN,
    }
    args.update(kw)
    return ServiceFingerprint(**args)  # type: ignore[arg-type]


def lines(text: str) -> list[str]:
    return text.split("\n")


# -- escaping -------------------------------------------------------------------------------


def test_escape_letters_digits_and_punctuation() -> None:
    assert escape_response(b"Az09") == "Az09"
    assert escape_response(b"&;,/:-_'<>=@#%!{}~`") == "&;,/:-_'<>=@#%!{}~`"


def test_escape_backslashed_specials() -> None:
    assert escape_response(b'\\?"[]().*+$^|') == r"\\\?\"\[\]\(\)\.\*\+\$\^\|"


def test_escape_controls_space_and_high_bytes() -> None:
    assert escape_response(b"\r\n\t") == r"\r\n\t"
    assert escape_response(b" ") == r"\x20"
    assert escape_response(b"\x01\x1f\x7f\x80\xff\x0b") == r"\x01\x1f\x7f\x80\xff\x0b"


def test_escape_nul_before_digit() -> None:
    assert escape_response(b"\x00A") == r"\0A"
    assert escape_response(b"\x001") == r"\x001"
    assert escape_response(b"\x00\x009") == r"\0\x009"
    assert escape_response(b"A\x00") == r"A\0"


def test_nul_before_digit_only_counts_kept_bytes() -> None:
    # byte 900 is NUL, byte 901 (cut off) a digit: the kept NUL stays \0
    f = fp()
    f.add("NULL", b"A" * 899 + b"\x001")
    flat = servicefp(f.text() or "")
    assert flat.endswith('A\\0");')
    f = fp()
    f.add("NULL", b"A" * 898 + b"\x001")
    assert servicefp(f.text() or "").endswith('A\\x001");')


# -- header and entries -------------------------------------------------------------------


def test_header_example_of_the_spec() -> None:
    f = fp()
    f.add("NULL", b"hi")
    assert f.text() == HEADER + '%r(N\nSF:ULL,2,"hi");'
    assert len(HEADER) == 70


def test_header_ssl_and_fields() -> None:
    f = fp(port=443, protocol="UDP", intensity=9, ssl=True, platform="p", nmap_version="7.94")
    f.add("X", b"")
    assert f.text() == 'SF-Port443-UDP:V=7.94%T=SSL%I=9%D=11/22%Time=6B02BE85%P=p%r(X,0,"");'


def test_date_is_not_zero_padded() -> None:
    when = time.mktime((2026, 3, 5, 12, 0, 0, 0, 0, -1))
    f = fp(when=when)
    f.add("NULL", b"x")
    assert f"%D=3/5%Time={int(when):X}%" in (f.text() or "")


def test_nothing_added_means_no_fingerprint() -> None:
    f = fp()
    assert f.text() is None
    assert not f


def test_length_is_full_length_in_uppercase_hex_but_900_bytes_kept() -> None:
    f = fp()
    f.add("NULL", b"A" * 10000)
    flat = servicefp(f.text() or "")
    assert flat == HEADER + '%r(NULL,2710,"' + "A" * 900 + '");'


def test_debugging_keeps_1300_bytes() -> None:
    f = fp(debugging=1)
    f.add("NULL", b"A" * 10000)
    assert servicefp(f.text() or "").count("A") == 1300


def test_entries_in_order() -> None:
    f = fp()
    f.add("NULL", b"WELCOME\r\n")
    f.add("GenericLines", b"REPLY to 4 bytes\r\n")
    assert servicefp(f.text() or "") == (
        HEADER
        + '%r(NULL,9,"WELCOME\\r\\n")%r(GenericLines,12,"REPLY\\x20to\\x204\\x20bytes\\r\\n");'
    )


# -- wrapping -----------------------------------------------------------------------------


def test_wrap_lines_are_74_characters_except_the_last() -> None:
    f = fp()
    f.add("NULL", bytes(range(256)) * 3)
    text = f.text() or ""
    rows = lines(text)
    assert len(rows) > 5
    assert all(len(r) == 74 for r in rows[:-1])
    assert 0 < len(rows[-1]) <= 75
    assert rows[0].startswith("SF-Port7001-TCP:")
    assert all(r.startswith("SF:") for r in rows[1:])
    assert servicefp(text) == text.replace("\nSF:", "")


def test_wrap_splits_escape_sequences() -> None:
    # header 70 chars + '%r(NULL,1,"' would be 81: the wrap falls inside the entry
    f = fp()
    f.add("NULL", b" ")
    assert f.text() == HEADER + '%r(N\nSF:ULL,1,"\\x20");'
    # platform "p": header of 52 chars; a 13-letter probe name puts the escape at 72
    f = fp(platform="p")
    f.add("ABCDEFGHIJKLM", b" ")
    short = "SF-Port7001-TCP:V=7.93%I=7%D=11/22%Time=6B02BE85%P=p"
    assert len(short) == 52
    assert f.text() == short + '%r(ABCDEFGHIJKLM,1,"\\x\nSF:20");'
    f = fp(platform="p")
    f.add("ABCDEFGHIJKLMN", b"\x00")
    assert f.text() == short + '%r(ABCDEFGHIJKLMN,1,"\\\nSF:0");'


def test_final_semicolon_may_make_a_75_character_line() -> None:
    # choose a response so that the text before ';' ends exactly at a full line
    for n in range(1, 200):
        f = fp()
        f.add("NULL", b"a" * n)
        text = f.text() or ""
        if len(lines(text)[-1]) == 75:
            assert lines(text)[-1].endswith('");')
            break
    else:  # pragma: no cover
        pytest.fail("no response length produced a full last line")


def test_wrap_when_header_is_longer_than_a_line() -> None:
    f = fp(platform="x" * 100)
    f.add("N", b"z")
    rows = lines(f.text() or "")
    assert all(len(r) == 74 for r in rows[:-1])
    assert servicefp(f.text() or "") == (
        "SF-Port7001-TCP:V=7.93%I=7%D=11/22%Time=6B02BE85%P=" + "x" * 100 + '%r(N,1,"z");'
    )


# -- limits and reset ---------------------------------------------------------------------


def test_2200_stop_keeps_the_crossing_entry_whole() -> None:
    f = fp()
    names = []
    for i in range(10):
        before = len(f)
        f.add(f"P{i}", b"B" * 400)
        if len(f) == before:
            break
        names.append(f"P{i}")
    text = f.text() or ""
    flat = servicefp(text)
    # every kept entry is whole
    assert re.findall(r"%r\((P\d),190,\"B{400}\"\)", flat) == names
    # the last kept entry took the text past 2200, the one before did not
    prefix = fp()
    for name in names[:-1]:
        prefix.add(name, b"B" * 400)
    assert len(prefix) <= 2200 < len(text) - 1
    f.add("Later", b"x")
    assert f.text() == text


def test_stop_rule_counts_wrapped_text() -> None:
    # with line breaks counted, 2200 is reached earlier than the flat length suggests
    f = fp()
    while len(f) <= 2200:
        f.add("NULL", b"q" * 100)
    size = len(f)
    flat_len = len(servicefp(f.text() or "")) - 1
    assert flat_len < size
    f.add("NULL", b"q")
    assert len(f) == size


def test_debugging_raises_the_stop_to_10000() -> None:
    f = fp(debugging=1)
    while len(f) <= 10000:
        f.add("NULL", b"q" * 100)
    assert 10000 < len(f) < 10000 + 200
    f2 = fp(debugging=0)
    for _ in range(100):
        f2.add("NULL", b"q" * 100)
    assert 2200 < len(f2) < 2200 + 200


def test_reset_discards_and_switches_to_ssl() -> None:
    f = fp()
    f.add("NULL", b"plain")
    f.reset(ssl=True)
    assert f.text() is None
    f.add("GetRequest", b"tls")
    assert f.text() == (
        # 76-character header: the wrap falls inside it (as in real SSL fingerprints)
        "SF-Port7001-TCP:V=7.93%T=SSL%I=7%D=11/22%Time=6B02BE85%P=x86_64-pc-linux-g"
        '\nSF:nu%r(GetRequest,3,"tls");'
    )


# -- live: nmap 7.93 against a banner server on 127.0.0.1 -----------------------------------


def unescape(text: str) -> bytes:
    """Inverse of the entry escaping (test helper)."""
    simple = {"0": 0, "r": 13, "n": 10, "t": 9}
    out = bytearray()
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\":
            out.append(ord(char))
            i += 1
        elif text[i + 1] == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            nxt = text[i + 1]
            out.append(simple.get(nxt, ord(nxt)))
            i += 2
    return bytes(out)


def rebuild(nmap_fp: str) -> str | None:
    """Feed our builder the (probe, response) sequence of an nmap fingerprint."""
    flat = servicefp(nmap_fp)
    head = re.match(
        r"SF-Port(\d+)-(TCP|UDP):V=([^%]+)(%T=SSL)?%I=(\d)%D=[^%]+%Time=([0-9A-F]+)%P=([^%]+)",
        flat,
    )
    assert head is not None
    builder = ServiceFingerprint(
        int(head[1]),
        "TCP" if head[2] == "TCP" else "UDP",
        int(head[5]),
        bool(head[4]),
        float(int(head[6], 16)),
        platform=head[7],
        nmap_version=head[3],
    )
    for name, size, body in re.findall(r'%r\(([^,]+),([0-9A-F]+),"((?:[^"\\]|\\.)*)"\)', flat):
        data = unescape(body)
        full = int(size, 16)
        assert len(data) == min(full, 900)
        builder.add(name, data + b"\xee" * (full - len(data)))
    return builder.text()


@pytest.mark.oracle_live
def test_live_nmap_fingerprint_is_rebuilt_byte_for_byte(tmp_path: Path) -> None:
    nmap = nmap_or_skip()
    # odd bytes on purpose: NUL before a digit and before a letter, specials, space, high bytes
    banner = b"ZZQQ\x00123\x00x ?[]().*+$^|\\\"'<>&;\t\x01\x7f\x80\xff WELCOME\r\n"
    server = BannerServer(banner)
    try:
        out = tmp_path / "n.txt"
        xml = tmp_path / "n.xml"
        subprocess.run(
            [
                nmap,
                "-sV",
                "-Pn",
                "-sT",
                "-n",
                "-p",
                str(server.port),
                "127.0.0.1",
                "-oN",
                str(out),
                "-oX",
                str(xml),
            ],
            check=True,
            capture_output=True,
            timeout=300,
        )
    finally:
        server.close()
    text = out.read_text()
    found = re.search(r"^SF-Port.*\n(?:SF:.*\n)*", text, re.M)
    assert found is not None, text
    nmap_fp = found.group(0).rstrip("\n")
    rows = lines(nmap_fp)
    assert len(rows) > 20  # several probes' worth: the 2200 stop was reached
    assert len(nmap_fp) > 2200
    assert rebuild(nmap_fp) == nmap_fp
    # XML: the same text with the wraps removed (attribute-escaped)
    attr = re.search(r'servicefp="([^"]*)"', xml.read_text())
    assert attr is not None
    unescaped = (
        attr.group(1)
        .replace("&quot;", '"')
        .replace("&apos;", "'")
        .replace("&lt;", "<")
        .replace("&gt;", ">")
        .replace("&amp;", "&")
    )
    assert unescaped == servicefp(nmap_fp)


def test_wrap_is_the_inverse_of_servicefp() -> None:
    f = fp()
    f.add("NULL", bytes(range(256)) * 2)
    f.add("GetRequest", b"x" * 77)
    text = f.text() or ""
    assert wrap(servicefp(text)) == text


def test_database_release_is_the_engine_release_under_its_grammar() -> None:
    """``ProbeDatabase.nmap_release`` (the ``V=`` of its fingerprints): 7.93 by default; the
    grammar's release; the exact release ``auto`` found when the grammar is that release's
    (7.96 reads with 7.95's grammar); the grammar's when the engine's release disagrees."""

    def db(grammar: str | None, engine_release: str | None) -> ProbeDatabase:
        engine = engine_mod.Engine(engine_mod.NMAP_7_93, "auto", engine_release)
        return ProbeDatabase(
            probes=[],
            null_probe=None,
            exclude=ExcludeSpec(),
            files=[],
            lines=[],
            grammar=grammar_for(grammar),
            engine=engine,
        )

    assert ProbeDatabase([], None, ExcludeSpec(), [], []).nmap_release == "7.93"
    assert db(None, None).nmap_release == "7.93"
    assert db("7.95", None).nmap_release == "7.95"
    assert db("7.95", "7.95").nmap_release == "7.95"
    assert db("7.95", "7.96").nmap_release == "7.96"
    assert db("7.94", "7.95").nmap_release == "7.94"
