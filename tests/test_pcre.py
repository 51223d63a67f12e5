"""PCRE 8.39 semantics our engine must show (SPEC §1.10).

Each case notes how Python's ``re`` differs: a reimplementation on top of ``re``
would get these wrong, which is why the binding calls libpcre itself.
"""

from __future__ import annotations

import re

import pytest

from tests.pcre8 import needs_pcre8
from vscand.probes import pcre
from vscand.probes.pcre import Pattern, PcreError

pytestmark = needs_pcre8


def matches(
    pattern: bytes, subject: bytes, *, caseless: bool = False, dotall: bool = False
) -> bool:
    compiled = Pattern(pattern, caseless=caseless, dotall=dotall)
    found = compiled.search(subject) is not None
    assert compiled.hits(subject) is found
    return found


def python_refuses(pattern: bytes) -> bool:
    try:
        re.compile(pattern)
    except re.error:
        return True
    return False


def test_library_version() -> None:
    assert pcre.version().startswith("8.39")


def test_upper_z_matches_before_a_final_newline() -> None:
    # PCRE \Z = end or before a final \n; Python's \Z is PCRE's \z (end only)
    assert matches(b"abc\\Z", b"abc\n")
    assert not matches(b"abc\\Z", b"abc\n\n")
    assert re.search(b"abc\\Z", b"abc\n") is None


def test_lower_z_matches_only_at_the_end() -> None:
    # Python (before 3.14) has no \z at all
    assert matches(b"abc\\z", b"abc")
    assert not matches(b"abc\\z", b"abc\n")


def test_brace_without_minimum_is_literal() -> None:
    # PCRE 8: "x{,3}" is the five characters x{,3}; Python reads it as x{0,3}
    assert matches(b"^x{,3}$", b"x{,3}")
    assert not matches(b"^x{,3}$", b"xx")
    assert re.search(b"^x{,3}$", b"xx") is not None


def test_posix_class() -> None:
    # Python has no POSIX classes: [[:alpha:]] is a set of ":alph" followed by "]"
    assert matches(b"^[[:alpha:]]+$", b"abcXYZ")
    assert not matches(b"^[[:alpha:]]+$", b"abc1")
    assert not matches(b"^[[:digit:][:space:]]+$", b"1 2x")
    assert matches(b"^[[:digit:][:space:]]+$", b"1 2\t")


def test_single_hex_digit_escape() -> None:
    # \x5 followed by a non-hex char is byte 0x05; Python refuses "\x5"
    assert matches(b"^\\x5g$", b"\x05g")
    assert python_refuses(b"^\\x5g$")


def test_braced_hex_escape() -> None:
    # \x{41} is "A"; Python refuses it
    assert matches(b"^\\x{41}$", b"A")
    assert python_refuses(b"^\\x{41}$")


def test_inline_caseless_mid_pattern_is_scoped_to_its_group() -> None:
    # Python 3.11+ refuses global flags that are not at the start
    assert matches(b"^a(b(?i)c)d$", b"abCd")
    assert not matches(b"^a(b(?i)c)d$", b"abcD")
    assert not matches(b"^a(b(?i)c)d$", b"aBcd")
    assert python_refuses(b"^a(b(?i)c)d$")


def test_caseless_folding_is_ascii_only() -> None:
    # bytes >= 0x80 never fold (no UTF/locale tables); Python folds them in str
    # patterns (e.g. after a latin-1 decode, "é" matches "É")
    assert matches(b"HELLO", b"hello", caseless=True)
    assert not matches(b"\xe9", b"\xc9", caseless=True)
    assert matches(b"\xe9", b"\xe9", caseless=True)
    assert re.search("\xe9", "\xc9", re.I) is not None


def test_dollar_before_final_newline_only() -> None:
    # without MULTILINE: end of buffer or just before a *final* \n (never before \r\n or
    # an inner \n) — the same as Python without re.M, but not with re.M
    assert matches(b"abc$", b"abc")
    assert matches(b"abc$", b"abc\n")
    assert not matches(b"abc$", b"abc\r\n")
    assert not matches(b"abc$", b"abc\nx")
    assert not matches(b"abc$", b"abc\n\n")
    assert re.search(b"abc$", b"abc\nx", re.M) is not None


def test_caret_is_start_of_buffer_only() -> None:
    assert not matches(b"^b", b"a\nb")
    assert matches(b"^a", b"a\nb")


def test_dot_and_newlines() -> None:
    # "." excludes only \n (not \r) unless DOTALL
    assert matches(b"^a.b$", b"a\rb")
    assert not matches(b"^a.b$", b"a\nb")
    assert matches(b"^a.b$", b"a\nb", dotall=True)
    assert matches(b"^a.b$", b"a\0b")


def test_octal_escape() -> None:
    # in patterns \012 is octal (newline), unlike the probe-string unescaper (NUL, "1", "2")
    assert matches(b"^a\\012b$", b"a\nb")
    assert matches(b"^a\\0b$", b"a\0b")
    assert matches(b"^\\04$", b"\x04")
    assert not matches(b"^a\\012b$", b"a\x0012b")


def test_back_references() -> None:
    assert matches(b"^(a+)-\\1$", b"aa-aa")
    assert not matches(b"^(a+)-\\1$", b"aa-a")
    assert matches(b"^(?i)(ab)\\1$", b"abAB")


def test_lookbehind_alternatives_of_different_lengths() -> None:
    # each top-level alternative of a PCRE lookbehind may have its own fixed length;
    # Python refuses "look-behind requires fixed-width pattern"
    assert matches(b"(?<=ab|c)x", b"abx")
    assert matches(b"(?<=ab|c)x", b"cx")
    assert not matches(b"(?<=ab|c)x", b"bx")
    assert python_refuses(b"(?<=ab|c)x")


def test_quoting() -> None:
    # \Q…\E quotes metacharacters; Python refuses \Q
    assert matches(b"^\\Qa.b*\\E$", b"a.b*")
    assert not matches(b"^\\Qa.b*\\E$", b"aab")
    assert python_refuses(b"^\\Qa.b*\\E$")


def test_escape_e() -> None:
    # \e is ESC (0x1b); Python refuses it
    assert matches(b"^\\e\\[0m$", b"\x1b[0m")
    assert python_refuses(b"^\\e$")


def test_ascii_only_classes() -> None:
    assert not matches(b"^\\w$", b"\xe9")
    assert not matches(b"^\\d$", b"\xb2")
    assert not matches(b"^\\s$", b"\xa0")
    assert matches(b"^\\s{6}$", b" \t\n\v\f\r")


def test_rc_and_unset_groups() -> None:
    p = Pattern(b"(a)?(b)(c)?")
    assert p.capture_count == 3
    m = p.search(b"xb")
    assert m is not None
    # rc counts up to the last participating group: trailing unset group 3 is not counted
    assert m.rc == 3
    assert m.groups[0] == (1, 2)
    assert m.groups[1] == (-1, -1)
    assert m.groups[2] == (1, 2)
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


def test_match_limit_counts_as_no_match() -> None:
    p = Pattern(b"(a+)+$")
    subject = b"a" * 30 + b"!"
    assert p.search_status(subject) == pcre.PCRE_ERROR_MATCHLIMIT == -8
    assert p.search(subject) is None
    assert p.hits(subject) is False
    # the same pattern matches normally when there is something to match
    assert p.hits(b"a" * 30)


def test_nul_bytes_in_the_subject_are_ordinary() -> None:
    assert matches(b"^a\\0b", b"a\0b")
    assert matches(b"c", b"\0\0c")
    assert matches(b"b$", b"a\0b")
    m = Pattern(b"^(.*)!$", dotall=True).search(b"\0x\0!")
    assert m is not None and m.group(b"\0x\0!", 1) == b"\0x\0"
    assert Pattern(b"z").search_status(b"\0" * 10) == pcre.PCRE_ERROR_NOMATCH


def test_search_is_unanchored() -> None:
    m = Pattern(b"b(c)").search(b"aaabc")
    assert m is not None and m.groups[:2] == ((3, 5), (4, 5))


@pytest.mark.parametrize("bad", [b"(", b"a{2,1}", b"[b-a]", b"(?<=a+)x", b"\\", b"a\0b"])
def test_refused_patterns(bad: bytes) -> None:
    with pytest.raises(PcreError):
        Pattern(bad)
