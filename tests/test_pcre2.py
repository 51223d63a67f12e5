"""The PCRE2 binding (Nmap 7.95 and later): the semantics of tests/test_pcre.py, again.

Nmap 7.95 compiles with only ``PCRE2_CASELESS``/``PCRE2_DOTALL`` and matches the whole
buffer with the interpreter (no JIT) under a match and a depth limit; 7.991 lowers them,
adds a heap limit and refuses patterns that can match the empty string.  Where PCRE2
differs from PCRE 8.39 on purpose (raw return codes, ``{,n}`` from 10.43), the test says so.
"""

from __future__ import annotations

import subprocess
import sys
import threading
from pathlib import Path

import pytest

from tests.pcre8 import AVAILABLE as PCRE8_AVAILABLE
from vscand.probes import pcre, pcre2
from vscand.probes.pcre2 import NMAP_7_95, NMAP_7_991, Limits, Pattern, Pcre2Error


def matches(
    pattern: bytes, subject: bytes, *, caseless: bool = False, dotall: bool = False
) -> bool:
    compiled = Pattern(pattern, caseless=caseless, dotall=dotall)
    found = compiled.search(subject) is not None
    assert compiled.hits(subject) is found
    # the same answer as Nmap 7.93's PCRE 8.39, where it exists (not on Debian 13)
    if PCRE8_AVAILABLE:
        assert (
            pcre.Pattern(pattern, caseless=caseless, dotall=dotall).search(subject) is not None
        ) is (found)
    return found


def library_minor() -> int:
    return int(pcre2.version().split()[0].split(".")[1])


def test_library_version() -> None:
    major, _, rest = pcre2.version().partition(".")
    assert major == "10"
    assert int(rest.split()[0]) >= 30  # pcre2_set_depth_limit exists from 10.30


def test_nmap_limits() -> None:
    # service_scan.cc at 95b974b10 (7.95) and at db4aefddf (HEAD, 7.991)
    assert (NMAP_7_95.match_limit, NMAP_7_95.depth_limit, NMAP_7_95.heap_limit_kib) == (
        100_000,
        10_000,
        None,
    )
    assert not NMAP_7_95.refuse_empty
    assert (NMAP_7_991.match_limit, NMAP_7_991.depth_limit, NMAP_7_991.heap_limit_kib) == (
        50_000,
        1_000,
        10_240,
    )
    assert NMAP_7_991.refuse_empty


def test_compile_options_are_only_caseless_and_dotall() -> None:
    assert Pattern(b"a").flags == 0
    assert Pattern(b"a", caseless=True).flags == pcre2.PCRE2_CASELESS == 0x8
    assert Pattern(b"a", dotall=True).flags == pcre2.PCRE2_DOTALL == 0x20


def test_upper_z_matches_before_a_final_newline() -> None:
    assert matches(b"abc\\Z", b"abc\n")
    assert not matches(b"abc\\Z", b"abc\n\n")


def test_lower_z_matches_only_at_the_end() -> None:
    assert matches(b"abc\\z", b"abc")
    assert not matches(b"abc\\z", b"abc\n")


def test_brace_without_minimum_follows_the_library() -> None:
    # PCRE2 10.43 made "{,3}" a quantifier ({0,3}), as Perl 5.34 did; 10.42 (Debian 12)
    # still reads it as the five characters, like PCRE 8.39
    compiled = Pattern(b"^x{,3}$")
    if library_minor() >= 43:
        assert compiled.hits(b"xx") and not compiled.hits(b"x{,3}")
    else:
        assert compiled.hits(b"x{,3}") and not compiled.hits(b"xx")


def test_posix_class() -> None:
    assert matches(b"^[[:alpha:]]+$", b"abcXYZ")
    assert not matches(b"^[[:alpha:]]+$", b"abc1")
    assert not matches(b"^[[:digit:][:space:]]+$", b"1 2x")
    assert matches(b"^[[:digit:][:space:]]+$", b"1 2\t")


def test_hex_escapes() -> None:
    assert matches(b"^\\x5g$", b"\x05g")
    assert matches(b"^\\x{41}$", b"A")


def test_inline_caseless_mid_pattern_is_scoped_to_its_group() -> None:
    assert matches(b"^a(b(?i)c)d$", b"abCd")
    assert not matches(b"^a(b(?i)c)d$", b"abcD")
    assert not matches(b"^a(b(?i)c)d$", b"aBcd")


def test_caseless_folding_is_ascii_only() -> None:
    assert matches(b"HELLO", b"hello", caseless=True)
    assert not matches(b"\xe9", b"\xc9", caseless=True)
    assert matches(b"\xe9", b"\xe9", caseless=True)


def test_dollar_before_final_newline_only() -> None:
    assert matches(b"abc$", b"abc")
    assert matches(b"abc$", b"abc\n")
    assert not matches(b"abc$", b"abc\r\n")
    assert not matches(b"abc$", b"abc\nx")
    assert not matches(b"abc$", b"abc\n\n")


def test_caret_is_start_of_buffer_only() -> None:
    assert not matches(b"^b", b"a\nb")
    assert matches(b"^a", b"a\nb")


def test_dot_and_newlines() -> None:
    assert matches(b"^a.b$", b"a\rb")
    assert not matches(b"^a.b$", b"a\nb")
    assert matches(b"^a.b$", b"a\nb", dotall=True)
    assert matches(b"^a.b$", b"a\0b")


def test_octal_escape() -> None:
    assert matches(b"^a\\012b$", b"a\nb")
    assert matches(b"^a\\0b$", b"a\0b")
    assert matches(b"^\\04$", b"\x04")
    assert not matches(b"^a\\012b$", b"a\x0012b")


def test_back_references() -> None:
    assert matches(b"^(a+)-\\1$", b"aa-aa")
    assert not matches(b"^(a+)-\\1$", b"aa-a")
    assert matches(b"^(?i)(ab)\\1$", b"abAB")


def test_lookbehind_alternatives_of_different_lengths() -> None:
    assert matches(b"(?<=ab|c)x", b"abx")
    assert matches(b"(?<=ab|c)x", b"cx")
    assert not matches(b"(?<=ab|c)x", b"bx")


def test_quoting_and_escape_e() -> None:
    assert matches(b"^\\Qa.b*\\E$", b"a.b*")
    assert not matches(b"^\\Qa.b*\\E$", b"aab")
    assert matches(b"^\\e\\[0m$", b"\x1b[0m")


def test_ascii_only_classes() -> None:
    assert not matches(b"^\\w$", b"\xe9")
    assert not matches(b"^\\d$", b"\xb2")
    assert not matches(b"^\\s$", b"\xa0")
    assert matches(b"^\\s{6}$", b" \t\n\v\f\r")


def test_rc_and_unset_groups() -> None:
    # the same Match as PCRE 8 gives: rc counts up to the last set group, an unset one
    # below it is (-1, -1) (PCRE2_UNSET in Nmap 7.95's ovector)
    p = Pattern(b"(a)?(b)(c)?")
    assert p.capture_count == 3
    m = p.search(b"xb")
    assert m is not None
    if PCRE8_AVAILABLE:
        assert m == pcre.Pattern(b"(a)?(b)(c)?").search(b"xb")
    assert m.rc == 3
    assert m.groups == ((1, 2), (-1, -1), (1, 2))
    assert m.group(b"xb", 1) is None
    assert m.group(b"xb", 2) == b"b"
    assert m.group(b"xb", 3) is None
    full = p.search(b"abc")
    assert full is not None and full.rc == 4
    assert full.group(b"abc", 3) == b"c"


def test_rc_without_groups() -> None:
    m = Pattern(b"b+").search(b"abbbc")
    assert m is not None
    assert m.rc == 1 and m.groups == ((1, 4),)


def test_many_groups_get_an_ovector_big_enough() -> None:
    # more groups than a thread's first match data holds: it grows, every group is reported
    source = b"(a)" * 100 + b"(b)"
    subject = b"a" * 100 + b"b"
    m = Pattern(source).search(subject)
    assert m is not None and m.rc == 102
    assert m.groups[101] == (100, 101)


def test_match_limit_counts_as_no_match() -> None:
    subject = b"a" * 30 + b"!"
    for limits in (NMAP_7_95, Limits(50_000, 1_000, 10_240, refuse_empty=False)):
        p = Pattern(b"(a+)+$", limits=limits)
        assert p.search_status(subject) == pcre2.PCRE2_ERROR_MATCHLIMIT == -47
        assert p.search(subject) is None
        assert p.hits(subject) is False
        assert p.hits(b"a" * 30)


def test_depth_limit_differs_between_75_and_7991() -> None:
    # 1200 iterations of a group: within 7.95's depth limit (10 000), beyond 7.991's (1 000)
    subject = b"ab" * 600 + b"c"
    wide = Pattern(b"^(a|b)*c", limits=NMAP_7_95)
    narrow = Pattern(b"^(a|b)*c", limits=Limits(50_000, 1_000, 10_240, refuse_empty=False))
    assert wide.search(subject) is not None
    assert narrow.search_status(subject) == pcre2.PCRE2_ERROR_DEPTHLIMIT == -53
    assert narrow.search(subject) is None and not narrow.hits(subject)
    # PCRE 8.39 with Nmap 7.93's limits matches it too
    if PCRE8_AVAILABLE:
        assert pcre.Pattern(b"^(a|b)*c").hits(subject)


def test_heap_limit_counts_as_no_match() -> None:
    p = Pattern(b"^(a|b)*c", limits=Limits(10**7, 10**7, 100, refuse_empty=False))
    assert p.hits(b"ab" * 100 + b"c")
    subject = b"ab" * 1000 + b"c"
    assert p.search_status(subject) == pcre2.PCRE2_ERROR_HEAPLIMIT == -63
    assert p.search(subject) is None and not p.hits(subject)


def test_same_limits_do_not_count_the_same_steps() -> None:
    # Found comparing the engines: PCRE2's depth counts backtracking frames, PCRE 8's
    # recursion limit counted C recursion; the same 10 000 gives different answers here.
    subject = b"ab" * 3000
    if PCRE8_AVAILABLE:
        assert pcre.Pattern(b"^(?:(a)|b)*$").hits(subject)
    assert Pattern(b"^(?:(a)|b)*$").search_status(subject) == pcre2.PCRE2_ERROR_DEPTHLIMIT


def test_raw_status_reports_captures_room() -> None:
    # PCRE 8's status call passes no ovector (rc 0 on a match); ours has room: rc = pairs
    if PCRE8_AVAILABLE:
        assert pcre.Pattern(b"(a)(b)").search_status(b"ab") == 0
    assert Pattern(b"(a)(b)").search_status(b"ab") == 3


def test_nul_bytes_in_the_subject_are_ordinary() -> None:
    assert matches(b"^a\\0b", b"a\0b")
    assert matches(b"c", b"\0\0c")
    assert matches(b"b$", b"a\0b")
    m = Pattern(b"^(.*)!$", dotall=True).search(b"\0x\0!")
    assert m is not None and m.group(b"\0x\0!", 1) == b"\0x\0"
    assert Pattern(b"z").search_status(b"\0" * 10) == pcre2.PCRE2_ERROR_NOMATCH


def test_search_is_unanchored() -> None:
    m = Pattern(b"b(c)").search(b"aaabc")
    assert m is not None and m.groups[:2] == ((3, 5), (4, 5))


@pytest.mark.parametrize("bad", [b"(", b"a{2,1}", b"[b-a]", b"(?<=a+)x", b"\\", b"a\0b"])
def test_refused_patterns(bad: bytes) -> None:
    with pytest.raises(Pcre2Error) as exc:
        Pattern(bad)
    # a subclass: the parser's "except PcreError" turns it into a probe-file error
    assert isinstance(exc.value, pcre.PcreError)


def test_compile_error_names_the_offset() -> None:
    with pytest.raises(Pcre2Error, match=r"at offset 5$"):
        Pattern(b"a{2,1}")


def test_empty_matching_patterns_refused_by_7991_only() -> None:
    for source in (b"x*", b"^", b"(a|)", b"a?b?"):
        assert Pattern(source).match_empty
        with pytest.raises(Pcre2Error, match="zero-length"):
            Pattern(source, limits=NMAP_7_991)
    assert not Pattern(b"x+", limits=NMAP_7_991).match_empty


def test_threads_share_patterns_not_match_data() -> None:
    patterns = [Pattern(b"^(\\d+)-(\\w+)$"), Pattern(b"(x)(y)?(z)"), Pattern(b"(a)" * 80)]
    subjects = [b"123-abc", b"..xz..", b"a" * 80, b"nothing"]
    expected = [[p.search(s) for s in subjects] for p in patterns]
    failures: list[str] = []

    def work() -> None:
        for _ in range(300):
            for p, row in zip(patterns, expected, strict=True):
                for s, want in zip(subjects, row, strict=True):
                    if p.search(s) != want or p.hits(s) is not (want is not None):
                        failures.append(f"{p.source!r} on {s!r}")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert failures == []


REPO = Path(__file__).resolve().parent.parent
# a fresh interpreter (the library is loaded once per process) that finds no PCRE2 by itself
NO_DEFAULT_NAMES = (
    "import ctypes.util\n"
    "from vscand.probes import pcre2\n"
    "pcre2._CANDIDATE_NAMES = ()\n"
    "ctypes.util.find_library = lambda name: None\n"
)


def fresh_python(code: str, override: str) -> str:
    return subprocess.run(
        [sys.executable, "-c", NO_DEFAULT_NAMES + code],
        capture_output=True,
        text=True,
        check=True,
        cwd=REPO,
        env={"VSCAND_LIBPCRE2": override, "PATH": "/usr/bin:/bin"},
    ).stdout


def test_missing_library_is_a_clear_error() -> None:
    code = "try:\n    pcre2.Pattern(b'a')\nexcept pcre2.Pcre2Error as exc:\n    print(exc)\n"
    out = fresh_python(code, "/nonexistent/libpcre2-8.so.0")
    assert "libpcre2-8-0" in out and "/nonexistent/libpcre2-8.so.0" in out
    # a library that is not PCRE2 is passed over, not used
    assert "libc.so.6" in fresh_python(code, "libc.so.6")


def test_library_override_is_used() -> None:
    out = fresh_python("print(pcre2.version())\n", "libpcre2-8.so.0")
    assert out.strip() == pcre2.version()
