"""The Hyperscan-prefiltered matcher answers exactly as the plain PCRE walk.

Responses come from the shipped probe file itself: for a spread of match lines,
a subject is assembled from the literal fragments of the line's pattern (it
need not match: both paths must simply agree), plus random bytes.
"""

from __future__ import annotations

import os
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vscand.probes.matcher import Matcher
from vscand.probes.model import MatchLine, Probe

CHAINS = [("NULL", "TCP"), ("GetRequest", "TCP"), ("GenericLines", "TCP"), ("HTTPOptions", "TCP")]
UDP_CHAIN = ("DNSVersionBindReq", "UDP")
SIMPLE_ESCAPES = {ord("r"): b"\r", ord("n"): b"\n", ord("t"): b"\t", ord("0"): b"\0"}


@pytest.fixture(scope="module")
def both(
    matcher: Matcher, plain_matcher: Matcher, prefilter_available: bool
) -> tuple[Matcher, Matcher]:
    if not prefilter_available or matcher.prefilter is None:
        message = "hyperscan is not importable: the prefilter path cannot be compared"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    assert plain_matcher.prefilter is None
    return matcher, plain_matcher


def answer(m: Matcher, probe: Probe, response: bytes) -> tuple[Any, ...] | None:
    found = m.match(probe, response)
    if found is None:
        return None
    return (found.service, found.soft, found.line.index, found.matched_probe, found.info)


def literal_fragments(pattern: bytes) -> bytes:
    """Literal bytes of a pattern, roughly: escapes resolved, metacharacters dropped."""
    out = bytearray()
    i = 0
    depth = 0
    while i < len(pattern):
        c = pattern[i]
        if c == ord("\\") and i + 1 < len(pattern):
            e = pattern[i + 1]
            if e in SIMPLE_ESCAPES:
                out += SIMPLE_ESCAPES[e]
                i += 2
            elif e == ord("x") and i + 3 < len(pattern):
                digits = pattern[i + 2 : i + 4]
                if all(d in b"0123456789abcdefABCDEF" for d in digits):
                    out.append(int(digits, 16))
                i += 4
            elif e == ord("d"):
                out += b"1"
                i += 2
            elif e == ord("s"):
                out += b" "
                i += 2
            elif e == ord("w"):
                out += b"w"
                i += 2
            elif not bytes([e]).isalnum():
                out.append(e)
                i += 2
            else:
                i += 2
        elif c == ord("["):
            # a class: take its first plain member
            j = pattern.find(b"]", i + 2)
            member = pattern[i + 1 : i + 2]
            if member not in (b"^", b"\\") and member:
                out += member
            i = j + 1 if j > 0 else len(pattern)
        elif c in b"()":
            depth += 1 if c == ord("(") else -1
            if c == ord("(") and pattern[i + 1 : i + 2] == b"?":
                i += 2
                while i < len(pattern) and pattern[i] in b":=!<>i-sx":
                    i += 1
                continue
            i += 1
        elif c in b"^$|*+?{}.":
            if c == ord("."):
                out += b"x"
            i += 1
        else:
            out.append(c)
            i += 1
    return bytes(out)


def sample_lines(lines: list[MatchLine], count: int) -> list[MatchLine]:
    step = max(1, len(lines) // count)
    return lines[::step][:count]


def corpus(lines: list[MatchLine]) -> list[bytes]:
    subjects = []
    for n, line in enumerate(sample_lines(lines, 300)):
        text = literal_fragments(line.pattern)
        subjects.append(text)
        if n % 3 == 0:
            subjects.append(text + b"\r\n")
        if n % 5 == 0:
            subjects.append(b"HTTP/1.0 200 OK\r\nServer: " + text + b"\r\n\r\n")
    return subjects


def test_corpus_agrees(both: tuple[Matcher, Matcher]) -> None:
    fast, plain = both
    subjects = corpus(plain.db.lines)
    assert len(subjects) > 400
    chains = [(fast.db.find(n, p), plain.db.find(n, p)) for n, p in [*CHAINS, UDP_CHAIN]]
    matched = 0
    for k, subject in enumerate(subjects):
        # every subject against NULL (the biggest chain) and one of the others in turn
        picks = [chains[0], chains[1 + k % (len(chains) - 1)]]
        for fast_probe, plain_probe in picks:
            expected = answer(plain, plain_probe, subject)
            assert answer(fast, fast_probe, subject) == expected, (fast_probe.name, subject)
            matched += expected is not None
    # the corpus is not vacuous: many subjects are recognised by some line
    assert matched > len(subjects) // 4


def test_corpus_reaches_fallbacks_and_soft_matches(both: tuple[Matcher, Matcher]) -> None:
    fast, plain = both
    probe_fast = fast.db.find("HTTPOptions", "TCP")
    probe_plain = plain.db.find("HTTPOptions", "TCP")
    seen_members = set()
    seen_soft = False
    for subject in corpus(plain.db.lines):
        expected = plain.match(probe_plain, subject)
        got = fast.match(probe_fast, subject)
        assert (got is None) == (expected is None)
        if expected is not None and got is not None:
            assert got.line is fast.db.lines[expected.line.index]
            assert got.info == expected.info
            seen_members.add(expected.matched_probe)
            seen_soft |= expected.soft
    assert {"GetRequest", "NULL"} <= seen_members
    assert seen_soft


PREFIXES = st.sampled_from(
    [b"", b"220 ", b"SSH-2.0-", b"HTTP/1.1 200 OK\r\nServer: ", b"+OK ", b"\x16\x03\x01", b"\0\0"]
)


@settings(max_examples=60)
@given(PREFIXES, st.binary(max_size=200), st.sampled_from([*CHAINS, UDP_CHAIN]))
def test_random_bytes_agree(
    both: tuple[Matcher, Matcher], prefix: bytes, tail: bytes, chain: tuple[str, str]
) -> None:
    fast, plain = both
    name, protocol = chain
    subject = prefix + tail
    assert answer(fast, fast.db.find(name, protocol), subject) == answer(
        plain, plain.db.find(name, protocol), subject
    )


@pytest.mark.parametrize("subject", [b"", b"\n", b"\r\n\r\n", b"\0"])
def test_degenerate_responses_agree(both: tuple[Matcher, Matcher], subject: bytes) -> None:
    fast, plain = both
    for name, protocol in [*CHAINS, UDP_CHAIN]:
        assert answer(fast, fast.db.find(name, protocol), subject) == answer(
            plain, plain.db.find(name, protocol), subject
        )


def test_a_known_banner_on_both_paths(both: tuple[Matcher, Matcher]) -> None:
    fast, plain = both
    banner = b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.1\r\n"
    for m in (fast, plain):
        found = m.match(m.db.find("NULL"), banner)
        assert found is not None
        assert (found.service, found.soft) == ("ssh", False)
        assert found.info.product == "OpenSSH"
        assert found.info.version == "8.9p1 Ubuntu 3ubuntu0.1"
