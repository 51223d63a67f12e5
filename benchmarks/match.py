"""Matcher benchmark: prefiltered vs plain PCRE vs a sequential Python ``re`` pass.

    .venv/bin/python benchmarks/match.py [--quick] [--cold] [--reps N]

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
"""

from __future__ import annotations

import argparse
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

from _common import REPO, cache_dir, fmt, machine, md_table, summary, write_json

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
    args = parser.parse_args()
    reps = args.reps or (3 if args.quick else 15)

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
