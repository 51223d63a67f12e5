"""Version-info template expansion (SPEC §1.11-§1.13) over real PCRE matches.

Every case compiles a pattern with the engine Nmap uses, searches a subject and
expands templates against that match, so group numbering, unset groups and
``rc`` come from libpcre itself.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from tests.pcre8 import AVAILABLE as PCRE8_AVAILABLE
from vscand.probes import pcre, pcre2
from vscand.probes.model import Templates
from vscand.probes.pcre import Match
from vscand.probes.templates import (
    CPE_SIZE,
    FIELD_SIZES,
    VersionInfo,
    cpe_escape,
    expand,
    expand_all,
    printable,
)

# the templates work on a match whichever library made it: PCRE 8 where it exists (Nmap
# 7.93's), else PCRE2 (Debian 13 has no libpcre3)
Pattern = pcre.Pattern if PCRE8_AVAILABLE else pcre2.Pattern


def hit(pattern: bytes, subject: bytes, *, dotall: bool = True) -> Match:
    found = Pattern(pattern, dotall=dotall).search(subject)
    assert found is not None, (pattern, subject)
    return found


def fill(
    tmpl: bytes, pattern: bytes, subject: bytes, size: int = 80, *, cpe: bool = False
) -> bytes | None:
    return expand(tmpl, subject, hit(pattern, subject), size, cpe=cpe)


def info(templates: Templates, pattern: bytes, subject: bytes) -> VersionInfo:
    return expand_all(templates, subject, hit(pattern, subject), "test:1")


NINE = b"^(a)(b)(c)(d)(e)(f)(g)(h)(i)"


# --- placeholders ---------------------------------------------------------------------------


def test_single_digit_placeholders() -> None:
    assert fill(b"$9$8$7$6$5$4$3$2$1", NINE, b"abcdefghi") == b"ihgfedcba"
    assert fill(b"<$1>-<$5>", NINE, b"abcdefghi") == b"<a>-<e>"


def test_dollar_twelve_is_group_one_then_literal_two() -> None:
    assert fill(b"$12", NINE, b"abcdefghi") == b"a2"


def test_group_zero_fails() -> None:
    assert fill(b"x$0", NINE, b"abcdefghi") is None


def test_group_above_the_last_participating_fails() -> None:
    # (a)|(b) on "a": PCRE returns rc 2, group 2 is beyond what it reports
    m = hit(b"(a)|(b)", b"a")
    assert m.rc == 2
    assert expand(b"$1", b"a", m, 80) == b"a"
    assert expand(b"$2", b"a", m, 80) is None
    # a group number the pattern does not even have
    assert fill(b"$3", b"(x)(y)", b"xy") is None


def test_unset_group_below_a_set_one_fails_only_its_field() -> None:
    # (a)?(b) on "b": rc 3 with group 1 unset (offsets -1). Nmap 7.93 asserts here;
    # SPEC recommends a field failure, leaving the other fields and the match alone.
    m = hit(b"(a)?(b)", b"b")
    assert m.rc == 3 and m.groups[1] == (-1, -1)
    assert expand(b"$1", b"b", m, 80) is None
    result = info(Templates(product=b"$1", version=b"$2", extrainfo=b"x$P(1)"), b"(a)?(b)", b"b")
    assert result.product is None
    assert result.extrainfo is None
    assert result.version == "b"
    assert len(result.warnings) == 2


# --- NUL bytes and trailing stripping ----------------------------------------------------------


def test_capture_is_cut_at_the_first_nul() -> None:
    # SPEC §1.12: a substitution is a C string. Oracle-verified against nmap 7.93 (see
    # templates.py): the cut happens per substitution, before the length check, and
    # literal text after the substitution is kept.
    assert fill(b"$1", b"^([^!]*)!", b"ab\0cd!") == b"ab"
    assert fill(b"$1 tail", b"^([^!]*)!", b"ab\0cd!") == b"ab tail"
    assert fill(b"[$1][$2]", b"^([^!]*)!(.*)$", b"a\0b!c\0d") == b"[a][c]"
    # a capture far longer than the field fits when its NUL comes early
    assert fill(b"$1", b"^([^!]*)!", b"ab\0" + b"c" * 200 + b"!") == b"ab"
    assert fill(b'$SUBST(1,"b","B")', b"^([^!]*)!", b"abab\0b!") == b"aBaB"


def test_trailing_strip_applies_to_the_cut_value() -> None:
    # The strip runs backwards from the end of what was written into the C buffer; since
    # substitutions are cut at their NUL before being written, a space before the NUL
    # is at the end of the buffer and is stripped like any other.
    assert fill(b"$1", b"^([^!]*)!", b"ab \0cd!") == b"ab"
    assert fill(b"$1,", b"^([^!]*)!", b"ab,\0 !") == b"ab"
    # ... but only from the end: whitespace before later literal text stays
    assert fill(b"$1|", b"^([^!]*)!", b"ab \0cd!") == b"ab |"
    assert fill(b"$1", b"^([^!]*)!", b"ab \t!") == b"ab"


def test_trailing_whitespace_and_commas_stripped_repeatedly() -> None:
    pattern = b"^(a)(\\0*)"
    subject = b"a\0\0"
    assert fill(b"info, $P(2), ", pattern, subject) == b"info"
    assert fill(b"$1,\t, ,\r\n\v\f", pattern, subject) == b"a"
    assert fill(b"x, y", pattern, subject) == b"x, y"
    assert fill(b",, ", pattern, subject) == b""
    result = info(Templates(extrainfo=b"info, $P(2), "), pattern, subject)
    assert result.extrainfo == "info"


def test_empty_result_leaves_the_field_absent() -> None:
    result = info(Templates(product=b"$P(1)", version=b"1"), b"^(\\0+)", b"\0\0")
    assert result.product is None
    assert result.version == "1"
    assert result.warnings == ()


# --- $P, $SUBST, $I ------------------------------------------------------------------------------


def test_p_drops_non_printables() -> None:
    subject = b"W\0O\0R\0K\0G\0R\0O\0U\0P\0\x01\xff~ "
    assert fill(b"$P(1)", b"^(.*)$", subject) == b"WORKGROUP~"
    assert fill(b"[$P(1)]", b"^(.*)$", b"\tA\x7fB\x80") == b"[AB]"


def test_subst() -> None:
    assert fill(b'$SUBST(1,".","_")', b"^([\\d.]+)", b"1.2.3x") == b"1_2_3"
    assert fill(b'v$SUBST(1,"..","+")', b"^(.*)$", b"a...b") == b"va+.b"
    assert fill(b'$SUBST( 1 , "_" , "." )', b"^(.*)$", b"7_0") == b"7.0"
    assert fill(b'$SUBST(0x1,"a","")', b"^(.*)$", b"banana") == b"bnn"


def test_subst_strings_are_unescaped() -> None:
    assert fill(b'$SUBST(1,"\\x2e","\\x41")', b"^(.*)$", b"1.2") == b"1A2"
    assert fill(b'$SUBST(1,"\\"","\'")', b"^(.*)$", b'a"b') == b"a'b"
    assert fill(b'$SUBST(1,"\\t","\\\\")', b"^(.*)$", b"a\tb") == b"a\\b"
    # an escape the probe-string unescaper refuses fails the field
    assert fill(b'$SUBST(1,"\\e","x")', b"^(.*)$", b"a") is None


@pytest.mark.parametrize(
    "tmpl",
    [b'$SUBST(1,".")', b'$SUBST(1,".","_","x")', b'$SUBST(".",1,"_")', b'$SUBST(1,2,"_")'],
)
def test_subst_bad_arguments_fail(tmpl: bytes) -> None:
    assert fill(tmpl, b"^(.*)$", b"1.2") is None


def test_i_big_and_little_endian() -> None:
    subject = b"\x00\x00\x01\x02"
    assert fill(b'$I(1,">")', b"^(.{4})", subject) == b"258"
    assert fill(b'$I(1,"<")', b"^(.{4})", subject) == b"33619968"
    assert fill(b'$I(1,">")', b"^(.{8})", b"\xff" * 8) == b"18446744073709551615"
    assert fill(b'port $I(1,"<")', b"^(..)", b"\x50\x00") == b"port 80"


def test_i_of_an_empty_capture_is_zero() -> None:
    assert fill(b'$I(1,">")', b"^x()y", b"xy") == b"0"


def test_i_of_more_than_eight_bytes_fails() -> None:
    assert fill(b'$I(1,">")', b"^(.{9})", b"\x01" * 9) is None


@pytest.mark.parametrize("tmpl", [b'$I(1,"=")', b"$I(1)", b'$I(1,">","<")', b"$I(1,2)"])
def test_i_bad_arguments_fail(tmpl: bytes) -> None:
    assert fill(tmpl, b"^(.{4})", b"\0\0\1\2") is None


@pytest.mark.parametrize(
    "tmpl",
    [
        b"$Q(1)",
        b"$p(1)",
        b"$x",
        b"abc$",
        b"$P",
        b"$P()",
        b"$P(1",
        b"$P(1,2)",
        b'$P("1")',
        b"$ABCDEFGHIJKLMNOP(1)",
    ],
)
def test_bad_commands_fail(tmpl: bytes) -> None:
    assert fill(tmpl, b"^(a)", b"a") is None


# --- length limits ------------------------------------------------------------------------------
#
# dotmplsubst copies into a `size`-byte buffer. Literal-only text may fill size-1 bytes
# (the check is `dst >= end - 1` before each byte). A substitution fails if its own length
# is >= the room left, and after the loop over '$' items the buffer must hold at most
# size-2 bytes (again `dst >= end - 1`, now tested *after* the bytes were added); literal
# text after the last substitution goes through the literal-only path, so it may reach size-1.


@pytest.mark.parametrize(("field", "size"), sorted(FIELD_SIZES.items()))
def test_literal_only_up_to_size_minus_one(field: str, size: int) -> None:
    m = hit(b"x", b"x")
    assert expand(b"L" * (size - 1), b"x", m, size) == b"L" * (size - 1)
    assert expand(b"L" * size, b"x", m, size) is None
    fields: dict[str, Any] = {field: b"L" * size}
    result = expand_all(Templates(**fields), b"x", m)
    assert getattr(result, field) is None
    fields = {field: b"L" * (size - 1)}
    assert getattr(expand_all(Templates(**fields), b"x", m), field) == "L" * (size - 1)


@pytest.mark.parametrize(("length", "ok"), [(77, True), (78, True), (79, False), (80, False)])
def test_substitution_boundaries_in_product(length: int, ok: bool) -> None:
    subject = b"C" * length
    result = fill(b"$1", b"^(C+)", subject)
    assert result == (subject if ok else None)


@pytest.mark.parametrize(("length", "ok"), [(78, True), (79, False)])
def test_literal_after_the_last_substitution_may_reach_size_minus_one(
    length: int, ok: bool
) -> None:
    subject = b"C" * length
    assert fill(b"$1L", b"^(C+)", subject) == (subject + b"L" if ok else None)


@pytest.mark.parametrize(("length", "ok"), [(77, True), (78, False)])
def test_literal_before_a_substitution_counts(length: int, ok: bool) -> None:
    subject = b"C" * length
    assert fill(b"L$1", b"^(C+)", subject) == (b"L" + subject if ok else None)


def test_ostype_and_extrainfo_boundaries() -> None:
    assert fill(b"$1", b"^(C+)", b"C" * 30, 32) == b"C" * 30
    assert fill(b"$1", b"^(C+)", b"C" * 31, 32) is None
    assert fill(b"$1", b"^(C+)", b"C" * 254, 256) == b"C" * 254
    assert fill(b"$1", b"^(C+)", b"C" * 255, 256) is None


def test_long_capture_fails_only_its_field() -> None:
    subject = b"A" * 100
    result = info(Templates(product=b"$1", version=b"ok", extrainfo=b"$1"), b"^(A+)", subject)
    assert result.product is None
    assert result.version == "ok"
    assert result.extrainfo == "A" * 100


# --- output sanitising ------------------------------------------------------------------------


def test_non_printables_shown_as_dots() -> None:
    result = info(Templates(product=b"$1", hostname=b"h$1"), b"^(.*)!", b"a\tb\xe9\x7fc!")
    assert result.product == "a.b..c"
    assert result.hostname == "ha.b..c"
    assert printable(b"\x00 ~\x7f") == ". ~."


# --- CPE -----------------------------------------------------------------------------------


def test_cpe_escaping_verified_example() -> None:
    subject = b"A:b/C?d#e,f&x v\tW"
    expected = b"cpe:/a:a%3Ab%2Fc%3Fd%23e%2Cf%26x_v_w:Lit_X"
    assert fill(b"cpe:/a:$1:Lit_X", b"^(.*)$", subject, CPE_SIZE, cpe=True) == expected
    result = info(Templates(cpes=(b"cpe:/a:$1:Lit_X",)), b"^(.*)$", subject)
    assert result.cpe_a == expected.decode()
    assert result.cpes == (expected.decode(),)


def test_cpe_escape_table() -> None:
    specials = b":/?#[]@!$&'()*+,;=%<>\""
    assert cpe_escape(specials) == b"".join(b"%%%02X" % c for c in specials)
    assert cpe_escape(b"AbZ 1.\t\n-_~") == b"abz_1.__-_~"


def test_cpe_substitutions_of_commands_are_escaped() -> None:
    m_subject = b"7.4p1 Debian"
    assert (
        fill(b'cpe:/a:openbsd:openssh:$SUBST(1,"p","P")', b"^(\\S+)", m_subject, 80, cpe=True)
        == b"cpe:/a:openbsd:openssh:7.4p1"
    )
    assert fill(b"cpe:/a:x:$P(1)", b"^(.*)$", b"A\0/B", 80, cpe=True) == b"cpe:/a:x:a%2Fb"


def test_one_cpe_per_part_last_wins() -> None:
    templates = Templates(
        cpes=(
            b"cpe:/a:openbsd:openssh:$1",
            b"cpe:/o:canonical:ubuntu_linux",
            b"cpe:/o:linux:linux_kernel",
        )
    )
    result = info(templates, b"^SSH-2.0-OpenSSH_(\\S+)", b"SSH-2.0-OpenSSH_8.9p1")
    assert result.cpe_o == "cpe:/o:linux:linux_kernel"
    assert result.cpes == ("cpe:/a:openbsd:openssh:8.9p1", "cpe:/o:linux:linux_kernel")


def test_cpe_order_is_a_h_o() -> None:
    templates = Templates(cpes=(b"cpe:/o:o:o", b"cpe:/h:h:h", b"cpe:/a:a:a"))
    assert info(templates, b"x", b"x").cpes == ("cpe:/a:a:a", "cpe:/h:h:h", "cpe:/o:o:o")


def test_cpe_unknown_part_is_ignored() -> None:
    templates = Templates(cpes=(b"cpe:/x:foo:bar", b"cpe:/a:ok:ok", b"cpe:/"))
    result = info(templates, b"x", b"x")
    assert result.cpes == ("cpe:/a:ok:ok",)
    assert len(result.warnings) == 2


def test_failed_cpe_empties_its_part() -> None:
    templates = Templates(cpes=(b"cpe:/a:good:good", b"cpe:/a:bad:$5", b"cpe:/h:kept:kept"))
    result = info(templates, b"(x)", b"x")
    assert result.cpe_a is None
    assert result.cpes == ("cpe:/h:kept:kept",)
    assert len(result.warnings) == 1


def test_cpe_length_limit() -> None:
    prefix = b"cpe:/a:"
    ok = b"c" * (CPE_SIZE - 2 - len(prefix))
    assert fill(prefix + b"$1", b"^(c+)", ok, CPE_SIZE, cpe=True) == prefix + ok
    # escaping happens before the length check: one ':' becomes three bytes
    assert fill(prefix + b"$1", b"^(.+)", ok[:-1] + b":", CPE_SIZE, cpe=True) is None


# --- properties -----------------------------------------------------------------------------

PIECES = st.one_of(
    st.sampled_from(
        [b"$1", b"$2", b"$P(1)", b'$SUBST(1,"a","bbb")', b'$I(2,">")', b'$I(2,"<")', b"$3"]
    ),
    st.binary(max_size=40).map(lambda b: b.replace(b"$", b"").replace(b"\0", b"")),
)
TEMPLATE = st.lists(PIECES, max_size=6).map(b"".join)
PROPERTY_PATTERN = Pattern(b"^(.*?)(.{0,5})\\z", dotall=True)


@given(TEMPLATE, st.binary(max_size=300), st.sampled_from([3, 32, 80, 256]), st.booleans())
def test_expanded_values_fit_their_buffer(
    tmpl: bytes, subject: bytes, size: int, cpe: bool
) -> None:
    m = PROPERTY_PATTERN.search(subject)
    assert m is not None
    result = expand(tmpl, subject, m, size, cpe=cpe)
    if result is not None:
        assert len(result) <= size - 1
        assert b"\0" not in result
        if b"\0" not in subject:  # (with a NUL, see test_trailing_strip_runs_from_the_end…)
            assert result[-1:] not in (b" ", b",", b"\t", b"\r", b"\n", b"\v", b"\f")


@given(st.lists(TEMPLATE, min_size=7, max_size=7), st.lists(TEMPLATE, max_size=3), st.binary())
def test_expand_all_values_are_printable_ascii(
    fields: list[bytes], cpes: list[bytes], subject: bytes
) -> None:
    m = PROPERTY_PATTERN.search(subject)
    assert m is not None
    names = list(FIELD_SIZES)
    templates = Templates(
        **{name: (tmpl or None) for name, tmpl in zip(names, fields, strict=False)},
        cpes=tuple(b"cpe:/a:" + c for c in cpes),
    )
    result = expand_all(templates, subject, m)
    values = [getattr(result, name) for name in names] + list(result.cpes)
    for name, value in zip([*names, *["cpe"] * len(result.cpes)], values, strict=True):
        if value is None:
            continue
        assert value, name
        assert all(0x20 <= ord(ch) <= 0x7E for ch in value), (name, value)
        limit = FIELD_SIZES.get(name, CPE_SIZE)
        assert len(value) <= limit - 1
