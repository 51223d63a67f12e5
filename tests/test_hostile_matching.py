"""Hostile responses: PCRE's limits turn runaway matches into "no match", as in Nmap.

No timing thresholds here (the machine is shared and noisy): a generous hang
guard only detects a stall, it does not measure performance.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import TypeVar

import pytest

from tests.pcre8 import needs_pcre8
from vscand.probes import pcre, pcre2
from vscand.probes.matcher import Matcher, ServiceMatch
from vscand.probes.model import MatchLine

T = TypeVar("T")

HANG_GUARD_S = 60.0
PAYARA_BAIT = b"HTTP/1.1 200 OK\r\nServer: Payara Server" + b" " * 32768
PAYARA_REAL = (
    b"HTTP/1.1 200 OK\r\nServer: Payara Server  5.2022.3 #badassfish\r\n"
    b"X-Powered-By: Servlet/4.0 JSP/2.3 (Payara Server  5.2022.3 #badassfish "
    b"Java/Oracle Corporation/1.8)\r\n\r\n"
)
FLOOD_590K = 590 * 1024


def guarded(function: Callable[[], T]) -> T:
    """Run ``function`` in a thread; fail (not hang) if it has not returned in 60 s."""
    box: dict[str, object] = {}

    def run() -> None:
        try:
            box["value"] = function()
        except BaseException as exc:  # re-raised in the test's thread
            box["error"] = exc

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG_GUARD_S)
    if worker.is_alive():
        pytest.fail(f"no answer within {HANG_GUARD_S:.0f} s: the matcher stalls")
    if "error" in box:
        raise box["error"]  # type: ignore[misc]
    return box["value"]  # type: ignore[return-value]


def payara_line(matcher: Matcher) -> MatchLine:
    found = [
        line
        for line in matcher.db.lines
        if line.service == "http"
        and line.pattern.startswith(rb"^HTTP/1\.1 200 OK\r\nServer: Payara Server +([\d. ]+)")
        and b"Java/Oracle Corporation/" in line.pattern
    ]
    assert found, "the Payara line of nmap-service-probes is not in the loaded database"
    return found[0]


def key(found: ServiceMatch | None) -> tuple[str, int, str] | None:
    return None if found is None else (found.service, found.line.lineno, found.matched_probe)


def both(matcher: Matcher, plain_matcher: Matcher) -> list[Matcher]:
    return [matcher, plain_matcher]


# ---------------------------------------------------------------- the Payara line


def test_payara_line_hits_the_match_limit_on_the_bait(matcher: Matcher) -> None:
    line = payara_line(matcher)
    # the match limit's code of the engine the installed file selects: PCRE 8's for Nmap
    # 7.93 (Debian 12), PCRE2's for 7.95 (Debian 13)
    limit = (
        pcre2.PCRE2_ERROR_MATCHLIMIT
        if isinstance(line.compiled, pcre2.Pattern)
        else pcre.PCRE_ERROR_MATCHLIMIT
    )
    assert guarded(lambda: line.compiled.search_status(PAYARA_BAIT)) == limit
    # a limit hit is "no match", as in Nmap
    assert line.compiled.search(PAYARA_BAIT) is None
    assert not line.compiled.hits(PAYARA_BAIT)


@pytest.mark.parametrize("path", ["prefiltered", "plain"])
def test_payara_bait_is_no_match_on_both_paths(
    matcher: Matcher, plain_matcher: Matcher, path: str
) -> None:
    chosen = matcher if path == "prefiltered" else plain_matcher
    probe = chosen.db.find("GetRequest")
    assert guarded(lambda: chosen.match(probe, PAYARA_BAIT)) is None


@pytest.mark.parametrize("path", ["prefiltered", "plain"])
def test_real_payara_response_still_matches(
    matcher: Matcher, plain_matcher: Matcher, path: str
) -> None:
    chosen = matcher if path == "prefiltered" else plain_matcher
    line = payara_line(chosen)
    assert line.compiled.search_status(PAYARA_REAL) >= 0
    found = guarded(lambda: chosen.match(chosen.db.find("GetRequest"), PAYARA_REAL))
    assert found is not None
    assert found.service == "http"
    assert found.line.lineno == line.lineno
    assert found.info.product == "Payara Server httpd"
    assert found.info.version == "5.2022.3"


# ---------------------------------------------------------------- classic patterns


@needs_pcre8
@pytest.mark.parametrize(
    ("source", "subject"),
    [
        (rb"(a+)+$", b"a" * 30 + b"!"),
        (rb"(a+)+$", b"a" * 4096 + b"!"),
        (rb"(a|aa)+$", b"a" * 40 + b"!"),
        (rb"(a|aa)+$", b"a" * 32768 + b"!"),
        (rb"(.*a){20}", b"a" * 50),
        (rb"(.*a){20}", b"a" * 4096),
        (rb"^(\w+\s?)*$", b"word " * 10 + b"!"),
        (rb"^(\w+\s?)*$", b"abcde " * 5000 + b"!"),
        (rb"^(\w+\s?)*$", b"a" * 32768 + b"!"),
    ],
)
def test_catastrophic_patterns_stop_at_a_limit(source: bytes, subject: bytes) -> None:
    pattern = pcre.Pattern(source)
    rc = guarded(lambda: pattern.search_status(subject))
    assert rc in (pcre.PCRE_ERROR_MATCHLIMIT, pcre.PCRE_ERROR_RECURSIONLIMIT)
    assert pattern.search(subject) is None
    assert not pattern.hits(subject)


@needs_pcre8
def test_catastrophic_pattern_still_matches_a_friendly_subject() -> None:
    pattern = pcre.Pattern(rb"^(\w+\s?)*$")
    assert pattern.search_status(b"just a few words") >= 0


@needs_pcre8
def test_match_limit_hit_is_not_an_error_in_search() -> None:
    # 8 and 21 are "no match" for Nmap; anything else negative would raise
    pattern = pcre.Pattern(rb"(a|aa)+$")
    assert pattern.search(b"a" * 40 + b"!") is None


# ---------------------------------------------------------------- floods, both paths


FLOODS = {
    "A": b"A" * FLOOD_590K,
    "spaces": b" " * FLOOD_590K,
    "a+!": b"a" * (FLOOD_590K - 1) + b"!",
}


@pytest.mark.parametrize("fill", sorted(FLOODS))
def test_590k_flood_same_answer_on_both_paths(
    matcher: Matcher, plain_matcher: Matcher, fill: str
) -> None:
    bait = FLOODS[fill]
    answers = [
        guarded(lambda m=chosen: key(m.match(m.db.find("NULL"), bait)))
        for chosen in both(matcher, plain_matcher)
    ]
    assert answers[0] == answers[1]


def test_payara_bait_on_http_options_chain_same_answer(
    matcher: Matcher, plain_matcher: Matcher
) -> None:
    answers = [
        guarded(lambda m=chosen: key(m.match(m.db.find("HTTPOptions"), PAYARA_BAIT)))
        for chosen in both(matcher, plain_matcher)
    ]
    assert answers == [None, None]


@pytest.mark.parametrize(
    "bait",
    [
        b"HTTP/1.0 200 OK\r\n" + b"X-Pad: " + b"a" * 4000 + b"\r\n" * 2,
        b"HTTP/1.1 200 OK\r\n" + b"X: y\r\n" * 2000,
        b"220 " + b"a " * 2048 + b"!",
        b"SSH-2.0-" + b"A" * 4096,
        b"\r\n" * 4096,
    ],
    ids=["long-header", "many-headers", "smtp-words", "ssh-long", "crlf"],
)
def test_protocol_shaped_floods_same_answer(
    matcher: Matcher, plain_matcher: Matcher, bait: bytes
) -> None:
    for chain in ("NULL", "GetRequest"):
        answers = [
            guarded(lambda m=chosen, c=chain: key(m.match(m.db.find(c), bait)))
            for chosen in both(matcher, plain_matcher)
        ]
        assert answers[0] == answers[1], chain
