"""Matcher benchmark: prefiltered vs plain PCRE vs a sequential Python ``re`` pass.

    .venv/bin/python benchmarks/match.py [--quick] [--cold] [--reps N]
    .venv/bin/python benchmarks/match.py --engines [--probes-795 PATH] [--quick] [--reps N]

Three paths answer the same question (the first line of a probe's fallback
chain that matches a response, in chain order) over the same responses:

* ``prefiltered``: ``load_matcher()`` with the Hyperscan prefilter;
* ``plain``: ``load_matcher(use_prefilter=False)``, every line confirmed with
  PCRE in turn (what Nmap does);
* ``re``: the chain's patterns compiled with Python's ``re`` (``re.S``/``re.I``
  per the line's flags) and tried in turn with ``.search``, first hit wins;
  lines ``re`` cannot compile are skipped and counted.

Two response sets, both written here: UNMATCHED (random bytes, garbage text,
truncated or malformed protocol-looking replies, 16 B .. 4 KiB) against the
NULL, GenericLines, GetRequest and HTTPOptions chains, and MATCHED (banners and
replies of common services) against the chain each one answers.  The script
checks that the three paths agree and prints a markdown table; JSON goes to
``benchmarks/results/match.json``.

``--engines [--probes-795 PATH]`` measures something else, in one run over the same
response sets: the prefiltered and plain paths with the installed probe file under
PCRE 8.39 (Nmap 7.93's engine) and under PCRE2 (Nmap 7.95's), and, given Nmap 7.95's
``nmap-service-probes`` (``make bench-engines`` passes Debian 13's when it is there),
that file under PCRE2 too. It prints per-response mean / median / p99 µs and the
PCRE2 / PCRE 8.39 ratios, checks that both engines give the same full answer
(service, line, chain member, soft, version fields) on every response, and writes
``benchmarks/results/match_engines.json``.
"""

from __future__ import annotations

import argparse
import functools
import gc
import json
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import (
    REPO,
    cache_dir,
    fmt,
    machine,
    md_table,
    percentile,
    summary,
    write_json,
)

from vscand.probes.matcher import Matcher, ServiceMatch, load_matcher
from vscand.probes.model import MatchLine, Probe

UNMATCHED_CHAINS = ("NULL", "GenericLines", "GetRequest", "HTTPOptions")
TARGET_RATIO = 100.0


# --------------------------------------------------------------------------
# response sets


def _words(rng: random.Random, size: int) -> bytes:
    vocabulary = [
        "lorem", "ipsum", "dolor", "sit", "amet", "quux", "frobnicate", "widget",
        "tangerine", "seventeen", "gamma", "delta", "orbit", "lattice", "pebble",
        "marmalade", "velvet", "cobalt", "ripple",
    ]  # fmt: skip
    out: list[str] = []
    length = 0
    while length < size:
        word = rng.choice(vocabulary)
        if rng.random() < 0.1:
            word = word.capitalize() + rng.choice([".", ",", ";", "!", "?"])
        out.append(word)
        length += len(word) + 1
        if rng.random() < 0.08:
            out.append("\n")
    return " ".join(out).encode()[:size]


def unmatched_responses() -> list[tuple[str, bytes]]:
    """Replies that no line of the shipped database should name."""
    rng = random.Random(20240601)
    out: list[tuple[str, bytes]] = []
    for size in (16, 64, 256, 1024, 4096):
        for seed in range(3):
            out.append((f"random-{size}-{seed}", rng.randbytes(size)))
    for size in (32, 200, 1000, 4000):
        out.append((f"words-{size}", _words(rng, size)))
    out.append(("printable-noise-512", bytes(rng.randrange(0x21, 0x7F) for _ in range(512))))
    out.append(("zeros-64", b"\0" * 64))
    out.append(("ff-128", b"\xff" * 128))
    out.append(("crlf-only", b"\r\n" * 8))
    out.append(("json-fragment", b'{"status": "unavailable", "retry_after": 17, "node": "zq-'))
    out.append(("xml-truncated", b'<?xml version="1.0" encoding="UTF-8"?>\n<envelope><hdr x="1'))
    out.append(("http-truncated-status", b"HTTP/1.1 2"))
    out.append(("http-bad-version", b"HTTQ/1.1 200 OK\r\nServre: nothing\r\n\r\n"))
    out.append(("ssh-truncated", b"SSH-2"))
    out.append(("ftp-ish-garbled", b"22O Welcome t0 the sever\r\n"))
    out.append(("smtp-ish-garbled", b"2x0 hello.invalid greetings, stranger\n"))
    out.append(("tls-record-truncated", b"\x16\x03\x01\x00"))
    out.append(("length-prefixed-junk", b"\x00\x00\x00\x2a\x7f\x13" + rng.randbytes(42)))
    out.append(("csv-lines", b"".join(b"%d,%d,%d\n" % (i, i * i, i * 7) for i in range(60))))
    out.append(("base64ish-2048", rng.choice([b"QUJD", b"ZGVm", b"eHl6"]) * 512))
    return out


def _mysql_handshake(version: bytes, thread: int) -> bytes:
    salt = b"\x21\x3a\x5c\x6b\x1f\x7e\x40\x33"
    payload = (
        b"\x0a"
        + version
        + b"\0"
        + thread.to_bytes(4, "little")
        + salt
        + b"\0"
        + b"\xff\xf7"  # capabilities (low)
        + b"\xff"  # charset
        + b"\x02\x00"  # status
        + b"\xff\xdf"  # capabilities (high)
        + b"\x15"  # auth data length
        + b"\0" * 10
        + b"\x5d\x2e\x11\x6c\x48\x0a\x3f\x57\x64\x29\x3b\x71\0"
        + b"caching_sha2_password\0"
    )
    return len(payload).to_bytes(3, "little") + b"\0" + payload


DATE = b"Date: Tue, 02 Jan 2024 10:00:00 GMT\r\n"


def matched_responses() -> list[tuple[str, str, bytes, str]]:
    """(name, chain, response, expected service): replies that do match."""
    html = b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body>ok</body></html>\n"
    return [
        ("ssh-openssh-ubuntu", "NULL", b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6\r\n", "ssh"),
        ("ssh-dropbear", "NULL", b"SSH-2.0-dropbear_2022.83\r\n", "ssh"),
        ("ftp-vsftpd", "NULL", b"220 (vsFTPd 3.0.5)\r\n", "ftp"),
        (
            "ftp-proftpd",
            "NULL",
            b"220 ProFTPD 1.3.8 Server (Debian) [::ffff:192.0.2.10]\r\n",
            "ftp",
        ),
        ("smtp-postfix", "NULL", b"220 mail.example.org ESMTP Postfix (Ubuntu)\r\n", "smtp"),
        (
            "smtp-exim",
            "NULL",
            b"220 mx.example.net ESMTP Exim 4.96 Tue, 02 Jan 2024 10:00:00 +0000\r\n",
            "smtp",
        ),
        ("pop3-dovecot", "NULL", b"+OK Dovecot (Ubuntu) ready.\r\n", "pop3"),
        (
            "imap-dovecot",
            "NULL",
            b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
            b"STARTTLS AUTH=PLAIN] Dovecot (Ubuntu) ready.\r\n",
            "imap",
        ),
        ("mysql-8", "NULL", _mysql_handshake(b"8.0.36-0ubuntu0.22.04.1", 11), "mysql"),
        (
            "mariadb-10",
            "NULL",
            _mysql_handshake(b"5.5.5-10.11.6-MariaDB-0+deb12u1", 42),
            "mysql",
        ),
        ("vnc-rfb", "NULL", b"RFB 003.008\n", "vnc"),
        (
            "ftp-proftpd-genericlines",
            "GenericLines",
            b"220 ProFTPD 1.3.8 Server (Debian) [::ffff:192.0.2.10]\r\n"
            b"500 Invalid command: try being more creative\r\n"
            b"500 Invalid command: try being more creative\r\n",
            "ftp",
        ),
        (
            "smtp-postfix-genericlines",
            "GenericLines",
            b"220 mail.example.org ESMTP Postfix (Ubuntu)\r\n500 5.5.2 Error: bad syntax\r\n",
            "smtp",
        ),
        (
            "http-nginx",
            "GetRequest",
            b"HTTP/1.1 200 OK\r\nServer: nginx/1.24.0\r\n"
            + DATE
            + b"Content-Type: text/html\r\nContent-Length: 79\r\nConnection: close\r\n\r\n"
            + html,
            "http",
        ),
        (
            "http-apache",
            "GetRequest",
            b"HTTP/1.1 200 OK\r\n" + DATE + b"Server: Apache/2.4.57 (Debian)\r\n"
            b'Last-Modified: Mon, 01 Jan 2024 00:00:00 GMT\r\nETag: "4f-60d"\r\n'
            b"Accept-Ranges: bytes\r\nContent-Length: 79\r\nConnection: close\r\n"
            b"Content-Type: text/html\r\n\r\n" + html,
            "http",
        ),
        (
            "http-iis",
            "GetRequest",
            b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nServer: Microsoft-IIS/10.0\r\n"
            b"X-Powered-By: ASP.NET\r\n"
            + DATE
            + b"Connection: close\r\nContent-Length: 79\r\n\r\n"
            + html,
            "http",
        ),
        (
            "http-lighttpd",
            "GetRequest",
            b"HTTP/1.0 404 Not Found\r\nContent-Type: text/html\r\nContent-Length: 345\r\n"
            + DATE
            + b"Server: lighttpd/1.4.69\r\n\r\n",
            "http",
        ),
        (
            "http-payara",
            "GetRequest",
            b"HTTP/1.1 200 OK\r\nServer: Payara Server  5.2022.3 #badassfish\r\n"
            b"X-Powered-By: Servlet/4.0 JSP/2.3 (Payara Server  5.2022.3 #badassfish "
            b"Java/Oracle Corporation/1.8)\r\n\r\n",
            "http",
        ),
        (
            "redis-get",
            "GetRequest",
            b"-ERR wrong number of arguments for 'get' command\r\n",
            "redis",
        ),
        (
            "ssh-on-get",
            "GetRequest",
            b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u2\r\nInvalid SSH identification string.\r\n",
            "ssh",
        ),
        (
            "http-apache-options",
            "HTTPOptions",
            b"HTTP/1.1 200 OK\r\n" + DATE + b"Server: Apache/2.4.57 (Debian)\r\n"
            b"Allow: GET,POST,OPTIONS,HEAD\r\nContent-Length: 0\r\nConnection: close\r\n"
            b"Content-Type: text/html\r\n\r\n",
            "http",
        ),
        (
            "rtsp-gstreamer",
            "RTSPRequest",
            b"RTSP/1.0 200 OK\r\nCSeq: 0\r\nServer: GStreamer RTSP server\r\n"
            b"Public: OPTIONS, DESCRIBE, ANNOUNCE, GET_PARAMETER, PAUSE, PLAY, RECORD, "
            b"SETUP, SET_PARAMETER, TEARDOWN\r\n\r\n",
            "rtsp",
        ),
    ]


# --------------------------------------------------------------------------
# the sequential ``re`` pass


@dataclass
class ReChain:
    steps: list[tuple[MatchLine, str, re.Pattern[bytes]]]
    #: chain position (0-based) of every line ``re`` could not compile
    failed_positions: list[int]
    total: int


_RE_CACHE: dict[int, re.Pattern[bytes] | None] = {}
RE_FAILURES: dict[int, str] = {}


def _re_compile(line: MatchLine) -> re.Pattern[bytes] | None:
    if line.index in _RE_CACHE:
        return _RE_CACHE[line.index]
    flags = (re.S if line.dotall else 0) | (re.I if line.caseless else 0)
    compiled: re.Pattern[bytes] | None
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            compiled = re.compile(line.pattern, flags)
    except Exception as exc:
        RE_FAILURES[line.index] = f"{type(exc).__name__}: {exc}"
        compiled = None
    _RE_CACHE[line.index] = compiled
    return compiled


def re_chain(probe: Probe) -> ReChain:
    steps: list[tuple[MatchLine, str, re.Pattern[bytes]]] = []
    failed: list[int] = []
    position = 0
    for member in probe.chain:
        for line in member.matches:
            compiled = _re_compile(line)
            if compiled is None:
                failed.append(position)
            else:
                steps.append((line, member.name, compiled))
            position += 1
    return ReChain(steps=steps, failed_positions=failed, total=position)


def re_match(chain: ReChain, response: bytes) -> tuple[MatchLine, str] | None:
    for line, member, compiled in chain.steps:
        if compiled.search(response) is not None:
            return line, member
    return None


# --------------------------------------------------------------------------
# measuring


Key = tuple[str, int, str] | None


def key_of(found: ServiceMatch | None) -> Key:
    if found is None:
        return None
    return (found.service, found.line.lineno, found.matched_probe)


def chain_position(probe: Probe, lineno: int, member: str) -> int:
    position = 0
    for chain_member in probe.chain:
        for line in chain_member.matches:
            if line.lineno == lineno and chain_member.name == member:
                return position
            position += 1
    raise LookupError(lineno)


def time_call(function: Callable[[], object]) -> float:
    started = time.perf_counter_ns()
    function()
    return (time.perf_counter_ns() - started) / 1000.0  # µs


@dataclass
class Sample:
    name: str
    chain: str
    size: int
    times: dict[str, list[float]]
    answers: dict[str, Key]
    re_comparable: bool
    expected: str | None = None


PATHS = ("prefiltered", "plain", "re")


def measure(
    pf: Matcher,
    plain: Matcher,
    cases: list[tuple[str, str, bytes, str | None]],
    reps: int,
) -> list[Sample]:
    """Answers, then timings: each path runs over every case in turn, in its own block.

    A path is timed in a block of its own (all cases, then the next path) so
    that each measures its steady state, as in a daemon that uses only that
    path; interleaving them call by call would time the prefilter with a
    cache just flushed by the plain path's 10 ms of scanning.
    """
    samples: list[Sample] = []
    calls: list[dict[str, Callable[[], Any]]] = []
    re_chains: dict[str, ReChain] = {}
    for name, chain_name, response, expected in cases:
        probe_pf = pf.db.find(chain_name)
        probe_plain = plain.db.find(chain_name)
        if chain_name not in re_chains:
            re_chains[chain_name] = re_chain(probe_plain)
        rec = re_chains[chain_name]
        calls.append(
            {
                "prefiltered": lambda p=probe_pf, r=response: pf.match(p, r),
                "plain": lambda p=probe_plain, r=response: plain.match(p, r),
                "re": lambda c=rec, r=response: re_match(c, r),
            }
        )
        # the answers (and the warm-up: PCRE patterns are compiled lazily)
        answers: dict[str, Key] = {
            "prefiltered": key_of(pf.match(probe_pf, response)),
            "plain": key_of(plain.match(probe_plain, response)),
        }
        re_found = re_match(rec, response)
        answers["re"] = (
            None if re_found is None else (re_found[0].service, re_found[0].lineno, re_found[1])
        )
        # ``re`` is comparable when it compiled every line up to PCRE's answer
        plain_answer = answers["plain"]
        upto = (
            rec.total - 1
            if plain_answer is None
            else chain_position(probe_plain, plain_answer[1], plain_answer[2])
        )
        comparable = not any(pos <= upto for pos in rec.failed_positions)
        samples.append(
            Sample(
                name=name,
                chain=chain_name,
                size=len(response),
                times={path: [] for path in PATHS},
                answers=answers,
                re_comparable=comparable,
                expected=expected,
            )
        )
    gc.collect()
    gc.disable()
    try:
        for _ in range(reps):
            for path in PATHS:
                for sample, call in zip(samples, calls, strict=True):
                    sample.times[path].append(time_call(call[path]))
    finally:
        gc.enable()
    return samples


def set_report(label: str, samples: list[Sample]) -> dict[str, Any]:
    per_path: dict[str, dict[str, float]] = {}
    for path in PATHS:
        # every timed call is one observation of "one full chain check"
        everything = [t for s in samples for t in s.times[path]]
        per_path[path] = summary(everything)
    # per-sample ratios, from each sample's median
    ratios_re = [
        statistics.median(s.times["re"]) / statistics.median(s.times["prefiltered"])
        for s in samples
    ]
    ratios_plain = [
        statistics.median(s.times["plain"]) / statistics.median(s.times["prefiltered"])
        for s in samples
    ]
    mismatches = [
        {"name": s.name, "chain": s.chain, **{p: s.answers[p] for p in PATHS}}
        for s in samples
        if s.answers["prefiltered"] != s.answers["plain"]
    ]
    re_differences = [
        {"name": s.name, "chain": s.chain, **{p: s.answers[p] for p in PATHS}}
        for s in samples
        if s.re_comparable and s.answers["re"] != s.answers["plain"]
    ]
    unexpected = [
        {"name": s.name, "chain": s.chain, "expected": s.expected, "got": s.answers["plain"]}
        for s in samples
        if (s.answers["plain"][0] if s.answers["plain"] else None) != s.expected
    ]
    return {
        "set": label,
        "samples": len(samples),
        "calls_per_path": per_path["prefiltered"]["n"],
        "us": per_path,
        "ratio_re_over_prefiltered": {
            "of_medians": per_path["re"]["median"] / per_path["prefiltered"]["median"],
            "of_p95": per_path["re"]["p95"] / per_path["prefiltered"]["p95"],
            "per_sample_median": statistics.median(ratios_re),
            "per_sample_min": min(ratios_re),
        },
        "ratio_plain_over_prefiltered": {
            "of_medians": per_path["plain"]["median"] / per_path["prefiltered"]["median"],
            "of_p95": per_path["plain"]["p95"] / per_path["prefiltered"]["p95"],
            "per_sample_median": statistics.median(ratios_plain),
            "per_sample_min": min(ratios_plain),
        },
        "re_comparable_samples": sum(1 for s in samples if s.re_comparable),
        "prefiltered_vs_plain_mismatches": mismatches,
        "re_differences": re_differences,
        "unexpected_answers": unexpected,
        "per_sample": [
            {
                "name": s.name,
                "chain": s.chain,
                "bytes": s.size,
                "answer": s.answers["plain"],
                "re_comparable": s.re_comparable,
                **{f"{p}_median_us": statistics.median(s.times[p]) for p in PATHS},
            }
            for s in samples
        ],
    }


# --------------------------------------------------------------------------
# --engines: the same responses under PCRE 8.39 and PCRE2, in one run

ENGINE_PATHS = ("prefiltered", "plain")


@dataclass
class EngineConfig:
    """One probe file under one regex engine: its prefiltered and plain matchers."""

    key: str  # e.g. "7.93/pcre"
    label: str  # for the table
    pf: Matcher
    plain: Matcher


#: everything the scan reports from a match: service, line, chain member, soft, fields
FullAnswer = tuple[Any, ...] | None


def full_answer(found: ServiceMatch | None) -> FullAnswer:
    if found is None:
        return None
    info = found.info
    return (
        found.service,
        found.line.lineno,
        found.matched_probe,
        found.soft,
        info.product,
        info.version,
        info.extrainfo,
        info.hostname,
        info.ostype,
        info.devicetype,
        info.cpe_a,
        info.cpe_h,
        info.cpe_o,
        info.warnings,
    )


@dataclass
class EngineSample:
    name: str
    chain: str
    size: int
    expected: str | None
    #: per column ("7.93/pcre/plain", ...): the timed calls (µs)
    times: dict[str, list[float]]
    answers: dict[str, FullAnswer]


def engine_columns(configs: list[EngineConfig]) -> list[str]:
    return [f"{c.key}/{path}" for c in configs for path in ENGINE_PATHS]


def measure_engines(
    configs: list[EngineConfig],
    cases: list[tuple[str, str, bytes, str | None]],
    reps: int,
) -> list[EngineSample]:
    """Answers, then timings: each column (file, engine, path) runs over every case in a block.

    As in :func:`measure`, a column is timed in a block of its own (every case in turn),
    so that the plain path's scanning does not flush the prefilter's caches between
    calls. The blocks are interleaved: each round runs every column once, and the order
    of the columns is reversed every other round, so slow drift in the machine's load
    falls on both engines alike. Each block starts with an untimed warm-up, so that no
    column pays more often than another for the caches the block before it flushed
    (without it, the first prefiltered call after a plain block costs milliseconds,
    which on the 22 matched samples is the p99).
    """
    columns = engine_columns(configs)
    samples: list[EngineSample] = []
    calls: list[dict[str, Callable[[], Any]]] = []
    for name, chain_name, response, expected in cases:
        row: dict[str, Callable[[], Any]] = {}
        answers: dict[str, FullAnswer] = {}
        for config in configs:
            for path, matcher in (("prefiltered", config.pf), ("plain", config.plain)):
                probe = matcher.db.find(chain_name)
                column = f"{config.key}/{path}"
                row[column] = functools.partial(matcher.match, probe, response)
                # the answer (and the warm-up: patterns are compiled lazily)
                answers[column] = full_answer(matcher.match(probe, response))
        calls.append(row)
        samples.append(
            EngineSample(
                name=name,
                chain=chain_name,
                size=len(response),
                expected=expected,
                times={column: [] for column in columns},
                answers=answers,
            )
        )
    gc.collect()
    gc.disable()
    try:
        for rep in range(reps):
            order = columns if rep % 2 == 0 else columns[::-1]
            for column in order:
                # untimed warm-up after the previous column's block: the whole block for a
                # prefiltered column (~1 ms), the first call for a plain one
                warm = calls if column.endswith("/prefiltered") else calls[:1]
                for call in warm:
                    call[column]()
                for sample, call in zip(samples, calls, strict=True):
                    sample.times[column].append(time_call(call[column]))
    finally:
        gc.enable()
    return samples


def stats_us(values: list[float]) -> dict[str, float]:
    return {
        "n": len(values),
        "mean": statistics.fmean(values),
        "median": statistics.median(values),
        "p99": percentile(values, 0.99),
        "max": max(values),
        "calls_over_1ms": sum(1 for value in values if value > 1000.0),
    }


def engine_ratio(samples: list[EngineSample], over: str, under: str) -> dict[str, Any]:
    """Cost of column ``over`` relative to column ``under`` (same samples, same run)."""
    a = stats_us([t for s in samples for t in s.times[over]])
    b = stats_us([t for s in samples for t in s.times[under]])
    per_sample = [
        statistics.median(s.times[over]) / statistics.median(s.times[under]) for s in samples
    ]
    lowest = min(range(len(samples)), key=per_sample.__getitem__)
    highest = max(range(len(samples)), key=per_sample.__getitem__)
    return {
        "of_means": a["mean"] / b["mean"],
        "of_medians": a["median"] / b["median"],
        "of_p99": a["p99"] / b["p99"],
        "per_sample_median": statistics.median(per_sample),
        "per_sample_min": per_sample[lowest],
        "per_sample_min_at": f"{samples[lowest].name} on {samples[lowest].chain}",
        "per_sample_max": per_sample[highest],
        "per_sample_max_at": f"{samples[highest].name} on {samples[highest].chain}",
    }


def _differences(samples: list[EngineSample], a: str, b: str) -> list[dict[str, Any]]:
    return [
        {"name": s.name, "chain": s.chain, a: s.answers[a], b: s.answers[b]}
        for s in samples
        if s.answers[a] != s.answers[b]
    ]


def engines_report(label: str, configs: list[EngineConfig], samples: list[EngineSample]) -> Any:
    columns = engine_columns(configs)
    report: dict[str, Any] = {
        "set": label,
        "samples": len(samples),
        "us": {c: stats_us([t for s in samples for t in s.times[c]]) for c in columns},
        "ratios": {},
        "differences": {},
    }
    keys = [c.key for c in configs]
    # prefiltered vs plain, per file and engine
    for key in keys:
        report["differences"][f"{key}: prefiltered vs plain"] = _differences(
            samples, f"{key}/prefiltered", f"{key}/plain"
        )
    base = "7.93/pcre"
    for other in keys[1:]:
        for path in ENGINE_PATHS:
            report["ratios"][f"{other} / {base} ({path})"] = engine_ratio(
                samples, f"{other}/{path}", f"{base}/{path}"
            )
    if "7.93/pcre2" in keys:
        # the check: the engines agree on every response (same file, both paths)
        for path in ENGINE_PATHS:
            report["differences"][f"7.93 file: pcre2 vs pcre ({path})"] = _differences(
                samples, f"7.93/pcre2/{path}", f"{base}/{path}"
            )
    if "7.95/pcre2" in keys:
        # another file: its lines and fields differ; only the service named is compared
        report["services_795_vs_793"] = [
            {
                "name": s.name,
                "chain": s.chain,
                "7.93": (s.answers[f"{base}/plain"] or ("-",))[0],
                "7.95": (s.answers["7.95/pcre2/plain"] or ("-",))[0],
            }
            for s in samples
            if (s.answers[f"{base}/plain"] or ("-",))[0]
            != (s.answers["7.95/pcre2/plain"] or ("-",))[0]
        ]
    report["unexpected_answers"] = [
        {"name": s.name, "chain": s.chain, "expected": s.expected, key: s.answers[f"{key}/plain"]}
        for key in keys
        for s in samples
        if (s.answers[f"{key}/plain"] or (None,))[0] != s.expected
    ]
    report["per_sample"] = [
        {
            "name": s.name,
            "chain": s.chain,
            "bytes": s.size,
            **{f"{c}_median_us": statistics.median(s.times[c]) for c in columns},
        }
        for s in samples
    ]
    return report


def _mmp(values: dict[str, float]) -> str:
    return f"{fmt(values['mean'])} / {fmt(values['median'])} / {fmt(values['p99'])}"


def _ratio_text(ratio: dict[str, Any]) -> str:
    return (
        f"{ratio['of_means']:.2f}x / {ratio['of_medians']:.2f}x / {ratio['of_p99']:.2f}x "
        f"(per sample: median {ratio['per_sample_median']:.2f}x, "
        f"{ratio['per_sample_min']:.2f}x .. {ratio['per_sample_max']:.2f}x)"
    )


def run_engines(args: argparse.Namespace, reps: int) -> int:
    """``--engines``: matcher cost per response under PCRE2 vs PCRE 8.39, in one run."""
    from vscand.probes import pcre2

    directory = cache_dir()
    info = machine()
    info["pcre2"] = pcre2.version()
    print(f"# Matcher benchmark: regex engines ({info['date']})", flush=True)
    wanted: list[tuple[str, str, str | None, str]] = [
        ("7.93/pcre", "installed file, PCRE 8.39", None, "pcre"),
        ("7.93/pcre2", "installed file, PCRE2", None, "pcre2"),
    ]
    if args.probes_795:
        if Path(args.probes_795).is_file():
            wanted.append(("7.95/pcre2", "7.95 file, PCRE2", args.probes_795, "pcre2"))
        else:
            print(f"--probes-795 {args.probes_795}: no such file; the 7.95 rows are left out")
    configs: list[EngineConfig] = []
    loads: list[dict[str, Any]] = []
    for key, label, probes_file, engine in wanted:
        pf = load_matcher(probes_file, cache_dir=directory, regex_engine=engine)
        plain = load_matcher(probes_file, use_prefilter=False, regex_engine=engine)
        assert pf.stats is not None
        if pf.prefilter is None:
            print("Hyperscan is not available: the prefiltered path cannot be measured.")
            return 2
        db = pf.db
        load: dict[str, Any] = {
            "key": key,
            "files": pf.stats.files,
            "grammar": db.grammar.release,
            "profile": db.engine.profile.name,
            "engine": db.engine.name,
            "library": db.engine.library_version(),
            "lines": len(db.lines),
            "always_candidates": len(pf.prefilter.always),
            "prefilter": pf.stats.prefilter,
            "prefilter_s": pf.stats.prefilter_seconds,
        }
        loads.append(load)
        print(
            f"{key}: {load['files'][0]} (grammar {load['grammar']}), {load['profile']} "
            f"({load['engine']} {load['library']}); {load['lines']} lines; prefilter "
            f"{load['prefilter']} ({load['prefilter_s']:.1f} s), "
            f"{load['always_candidates']} lines always confirmed",
            flush=True,
        )
        configs.append(EngineConfig(key=key, label=label, pf=pf, plain=plain))
    print(f"reps={reps}", flush=True)

    unmatched_cases: list[tuple[str, str, bytes, str | None]] = [
        (name, chain, response, None)
        for name, response in unmatched_responses()
        for chain in UNMATCHED_CHAINS
    ]
    matched_cases: list[tuple[str, str, bytes, str | None]] = list(matched_responses())
    reports = []
    for label, cases in (("unmatched", unmatched_cases), ("matched", matched_cases)):
        started = time.perf_counter()
        samples = measure_engines(configs, cases, reps)
        report = engines_report(label, configs, samples)
        report["wall_s"] = time.perf_counter() - started
        reports.append(report)
        print(f"  {label}: {len(samples)} samples in {report['wall_s']:.1f} s", flush=True)

    print()
    print(
        f"Machine: {info['nproc']} CPU(s), {info['cpu']}; Python {info['python']}; "
        f"PCRE {info['pcre']}; PCRE2 {info['pcre2']}; hyperscan {info['hyperscan']} "
        f"({info['hyperscan_library']})"
    )
    print()
    rows = []
    for report in reports:
        for config in configs:
            us = report["us"]
            rows.append(
                [
                    report["set"],
                    report["samples"],
                    config.label,
                    _mmp(us[f"{config.key}/prefiltered"]),
                    _mmp(us[f"{config.key}/plain"]),
                ]
            )
    print(
        md_table(
            [
                "set",
                "samples",
                "probe file, engine",
                "prefiltered µs (mean / median / p99)",
                "plain µs (mean / median / p99)",
            ],
            rows,
        )
    )
    print()
    for report in reports:
        for config in configs:
            us = report["us"][f"{config.key}/prefiltered"]
            print(
                f"{report['set']}, {config.label}, prefiltered: {us['calls_over_1ms']} of "
                f"{us['n']} calls over 1 ms (max {fmt(us['max'])} µs)"
            )
    print()
    ratio_rows = [
        [report["set"], name, _ratio_text(ratio)]
        for report in reports
        for name, ratio in report["ratios"].items()
    ]
    print(
        md_table(
            ["set", "ratio (same run)", "of means / medians / p99 (per-sample ratio of medians)"],
            ratio_rows,
        )
    )

    failed = False
    print()
    for report in reports:
        for check, items in report["differences"].items():
            print(f"{report['set']}: {check}: {len(items)} difference(s)")
            for item in items:
                failed = True
                print(f"  DIFFERS: {item}")
        for item in report.get("services_795_vs_793", []):
            print(f"  note: the 7.95 file names another service: {item}")
        for item in report["unexpected_answers"]:
            print(f"  note: unexpected answer: {item}")
    print("\nEngines agree on every response" if not failed else "\nDIFFERENCES FOUND")

    payload = {
        "machine": info,
        "reps": reps,
        "quick": args.quick,
        "configs": loads,
        "sets": reports,
        "agreement_ok": not failed,
    }
    path = write_json("match_engines.json", payload)
    print(f"JSON: {path.relative_to(REPO)}")
    return 1 if failed else 0


# --------------------------------------------------------------------------
# start-up


_LOAD_SNIPPET = """
import json, sys, time
from pathlib import Path
t0 = time.perf_counter()
from vscand.probes.matcher import load_matcher
t1 = time.perf_counter()
m = load_matcher(cache_dir=Path(sys.argv[1]))
t2 = time.perf_counter()
print(json.dumps({"import_s": t1 - t0, "load_s": t2 - t1, "how": m.stats.prefilter,
                  "prefilter_s": m.stats.prefilter_seconds}))
"""


def load_in_subprocess(directory: Path) -> dict[str, Any]:
    started = time.perf_counter()
    done = subprocess.run(
        [sys.executable, "-c", _LOAD_SNIPPET, str(directory)],
        check=True,
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    result["process_s"] = time.perf_counter() - started
    return result


def ratio_cell(ratio: dict[str, float]) -> str:
    return (
        f"{ratio['of_medians']:.0f}x / {ratio['of_p95']:.0f}x (min {ratio['per_sample_min']:.0f}x)"
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("--cold", action="store_true", help="also time a cold prefilter build")
    parser.add_argument("--reps", type=int, default=None, help="timed calls per sample and path")
    parser.add_argument(
        "--engines",
        action="store_true",
        help="instead: prefiltered and plain paths under PCRE 8.39 and PCRE2, one run",
    )
    parser.add_argument(
        "--probes-795",
        metavar="PATH",
        default=None,
        help="with --engines: Nmap 7.95's nmap-service-probes, also measured under PCRE2",
    )
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 15)
    if args.engines:
        return run_engines(args, reps)

    directory = cache_dir()
    info = machine()
    print(f"# Matcher benchmark ({info['date']})", flush=True)
    pf = load_matcher(cache_dir=directory)
    plain = load_matcher(use_prefilter=False)
    assert pf.stats is not None
    if pf.prefilter is None:
        print("Hyperscan is not available: the prefiltered path cannot be measured.")
        return 2
    print(
        f"prefilter: {pf.stats.prefilter} ({pf.stats.prefilter_seconds:.2f} s); "
        f"{len(pf.db.lines)} lines; reps={reps}",
        flush=True,
    )

    unmatched_cases: list[tuple[str, str, bytes, str | None]] = [
        (name, chain, response, None)
        for name, response in unmatched_responses()
        for chain in UNMATCHED_CHAINS
    ]
    matched_cases: list[tuple[str, str, bytes, str | None]] = [
        (name, chain, response, expected) for name, chain, response, expected in matched_responses()
    ]
    reports = []
    for label, cases in (("unmatched", unmatched_cases), ("matched", matched_cases)):
        started = time.perf_counter()
        samples = measure(pf, plain, cases, reps)
        report = set_report(label, samples)
        report["wall_s"] = time.perf_counter() - started
        reports.append(report)
        print(f"  {label}: {len(samples)} samples in {report['wall_s']:.1f} s", flush=True)

    warm = [load_in_subprocess(directory) for _ in range(3)]
    startup: dict[str, Any] = {
        "warm_load_s_median": statistics.median(w["load_s"] for w in warm),
        "warm_prefilter_s_median": statistics.median(w["prefilter_s"] for w in warm),
        "warm_process_s_median": statistics.median(w["process_s"] for w in warm),
        "warm_runs": warm,
    }
    if any(w["how"] != "cache" for w in warm):
        startup["warning"] = "a warm run did not load from the cache"
    if args.cold:
        with tempfile.TemporaryDirectory(prefix="vscand-cold-") as cold_dir:
            cold = load_in_subprocess(Path(cold_dir))
        startup["cold_load_s"] = cold["load_s"]
        startup["cold_prefilter_s"] = cold["prefilter_s"]
        startup["cold_how"] = cold["how"]

    # ---- report
    rows = []
    for report in reports:
        us = report["us"]
        rre = report["ratio_re_over_prefiltered"]
        rpl = report["ratio_plain_over_prefiltered"]
        rows.append(
            [
                report["set"],
                report["samples"],
                f"{fmt(us['prefiltered']['median'])} / {fmt(us['prefiltered']['p95'])}",
                f"{fmt(us['plain']['median'])} / {fmt(us['plain']['p95'])}",
                f"{fmt(us['re']['median'])} / {fmt(us['re']['p95'])}",
                ratio_cell(rre),
                ratio_cell(rpl),
            ]
        )
    print()
    print(
        f"Machine: {info['nproc']} CPU(s), {info['cpu']}; Python {info['python']}; "
        f"PCRE {info['pcre']}; hyperscan {info['hyperscan']} ({info['hyperscan_library']})"
    )
    print()
    print(
        md_table(
            [
                "set",
                "samples",
                "prefiltered µs (median / p95)",
                "plain PCRE µs",
                "sequential re µs",
                "re / prefiltered",
                "plain / prefiltered",
            ],
            rows,
        )
    )
    print()
    print(
        f"Warm start (fresh process, cache populated, median of 3): load_matcher "
        f"{startup['warm_load_s_median'] * 1000:.0f} ms (prefilter load "
        f"{startup['warm_prefilter_s_median'] * 1000:.0f} ms), whole process "
        f"{startup['warm_process_s_median'] * 1000:.0f} ms"
    )
    if args.cold:
        print(
            f"Cold build: load_matcher {startup['cold_load_s']:.1f} s "
            f"(prefilter {startup['cold_prefilter_s']:.1f} s, {startup['cold_how']})"
        )
    print(f"Lines Python re cannot compile: {len(RE_FAILURES)} of the chains' lines")

    failed = False
    for report in reports:
        if report["prefiltered_vs_plain_mismatches"]:
            failed = True
            print(f"\nMISMATCH prefiltered vs plain ({report['set']}):")
            for item in report["prefiltered_vs_plain_mismatches"]:
                print(f"  {item}")
        print(
            f"\n{report['set']}: re comparable on {report['re_comparable_samples']} of "
            f"{report['samples']} samples; differences: {len(report['re_differences'])}"
        )
        for item in report["re_differences"]:
            failed = True
            print(f"  re differs: {item}")
        for item in report["unexpected_answers"]:
            print(f"  note: unexpected answer (response set needs a look): {item}")
    unmatched = reports[0]["ratio_re_over_prefiltered"]["of_medians"]
    verdict = "meets" if unmatched >= TARGET_RATIO else "MISSES"
    print(
        f"\nTarget: prefiltered >= {TARGET_RATIO:.0f}x faster than sequential re on unmatched "
        f"responses: {unmatched:.0f}x (ratio of medians) -> {verdict}"
    )

    payload = {
        "machine": info,
        "reps": reps,
        "quick": args.quick,
        "re_uncompilable_lines": len(RE_FAILURES),
        "re_uncompilable_examples": dict(list(RE_FAILURES.items())[:20]),
        "sets": reports,
        "startup": startup,
        "target_ratio": TARGET_RATIO,
        "target_met": unmatched >= TARGET_RATIO,
        "agreement_ok": not failed,
    }
    path = write_json("match.json", payload)
    print(f"JSON: {path.relative_to(REPO)}")
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
