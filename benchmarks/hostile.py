"""Hostile inputs: how long one response can hold the matcher, on both paths.

    .venv/bin/python benchmarks/hostile.py [--quick]

1. The Payara bait (``Server: Payara Server`` followed by 32 KiB of spaces)
   against the GetRequest chain.
2. Floods: 4 KiB / 32 KiB / 590 KiB of one repeated character (or ``a`` then a
   mismatching ``!``) against the NULL and GetRequest chains.
3. A survey of the shipped database: every line is run on its own against
   "prefix baits" (the line's literal prefix, then a flood, then a mismatching
   tail) to find the lines where PCRE's limits are hit, statically flagged
   nested quantifiers included; the worst of them are then fed to their
   probe's chain on both paths.
4. Classic catastrophic patterns on their own via ``Pattern``, showing that
   PCRE gives up (rc -8 match limit / -21 recursion limit) instead of running
   unbounded.

Prints markdown tables; JSON goes to ``benchmarks/results/hostile.json``.
"""

from __future__ import annotations

import argparse
import re
import statistics
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, cache_dir, machine, md_table, write_json

from vscand.probes import pcre
from vscand.probes.matcher import Matcher, load_matcher
from vscand.probes.model import MatchLine

TARGET_MS = 50.0
PAYARA_BAIT = b"HTTP/1.1 200 OK\r\nServer: Payara Server" + b" " * 32768
FLOOD_SIZES = (4 * 1024, 32 * 1024, 590 * 1024)
STATUS = {
    pcre.PCRE_ERROR_NOMATCH: "no match",
    pcre.PCRE_ERROR_MATCHLIMIT: "match limit (-8)",
    pcre.PCRE_ERROR_RECURSIONLIMIT: "recursion limit (-21)",
}

#: a group whose body holds an unbounded quantifier, itself quantified
NESTED = re.compile(
    rb"\((?:\?:)?(?:[^()\\]|\\.)*?(?:[+*]|\{\d*,\})(?:[^()\\]|\\.)*?\)(?:[+*]|\{\d*,\d*\})"
)


def status_name(rc: int) -> str:
    return STATUS.get(rc, "match" if rc >= 0 else f"rc {rc}")


def flood(fill: bytes, size: int, tail: bytes = b"") -> bytes:
    body = (fill * (size // len(fill) + 1))[: size - len(tail)]
    return body + tail


def literal_prefix(pattern: bytes) -> bytes:
    """The literal bytes an anchored pattern starts with (maybe empty)."""
    if not pattern.startswith(b"^"):
        return b""
    out = bytearray()
    i = 1
    simple = {b"r": b"\r", b"n": b"\n", b"t": b"\t", b"0": b"\0"}
    while i < len(pattern):
        char = pattern[i : i + 1]
        if char == b"\\" and i + 1 < len(pattern):
            nxt = pattern[i + 1 : i + 2]
            if nxt in simple and not pattern[i + 2 : i + 3].isdigit():
                out += simple[nxt]
                i += 2
            elif nxt == b"x" and re.fullmatch(rb"[0-9a-fA-F]{2}", pattern[i + 2 : i + 4]):
                out.append(int(pattern[i + 2 : i + 4], 16))
                i += 4
            elif not nxt.isalnum():
                out += nxt
                i += 2
            else:
                break
        elif char in b".[]()*+?{}|^$":
            break
        else:
            out += char
            i += 1
        # a quantifier after the last literal makes it optional: drop it
        if pattern[i : i + 1] in (b"*", b"?", b"{"):
            del out[-1:]
            break
    return bytes(out)


def time_ms(function: Any, reps: int) -> tuple[float, float, Any]:
    times = []
    result = None
    for _ in range(reps):
        started = time.perf_counter()
        result = function()
        times.append((time.perf_counter() - started) * 1000)
    return statistics.median(times), max(times), result


def describe(found: Any) -> str:
    if found is None:
        return "no match"
    return f"{found.service} (line {found.line.lineno})"


def chain_case(
    pf: Matcher, plain: Matcher, name: str, chain: str, bait: bytes, reps_pf: int, reps_plain: int
) -> dict[str, Any]:
    probe_pf = pf.db.find(chain)
    probe_plain = plain.db.find(chain)
    plain.match(probe_plain, bait[:64])  # compile the chain's patterns outside the timing
    pf_median, pf_max, pf_found = time_ms(lambda: pf.match(probe_pf, bait), reps_pf)
    pl_median, pl_max, pl_found = time_ms(lambda: plain.match(probe_plain, bait), reps_plain)
    pf_answer, pl_answer = describe(pf_found), describe(pl_found)
    return {
        "name": name,
        "chain": chain,
        "bytes": len(bait),
        "prefiltered_ms": {"median": pf_median, "max": pf_max, "reps": reps_pf},
        "plain_ms": {"median": pl_median, "max": pl_max, "reps": reps_plain},
        "answer_prefiltered": pf_answer,
        "answer_plain": pl_answer,
        "same_answer": pf_answer == pl_answer,
    }


def survey(lines: list[MatchLine], size: int) -> tuple[list[dict[str, Any]], float]:
    """Every line against its prefix baits; the lines that hit a limit or are slow."""
    fills = (b"a", b" ", b"a ", b"0", b"\r\n", b"\0", b"A.")
    found: list[dict[str, Any]] = []
    started = time.perf_counter()
    for line in lines:
        pattern = line.compiled
        prefix = literal_prefix(line.pattern)
        for fill in fills:
            bait = prefix + flood(fill, size, b"!\x01")
            t0 = time.perf_counter()
            rc = pattern.search_status(bait)
            elapsed = (time.perf_counter() - t0) * 1000
            if rc in (pcre.PCRE_ERROR_MATCHLIMIT, pcre.PCRE_ERROR_RECURSIONLIMIT) or elapsed > 1.0:
                found.append(
                    {
                        "lineno": line.lineno,
                        "probe": line.probe_name,
                        "protocol": line.probe_protocol,
                        "service": line.service,
                        "fill": fill.decode("latin-1"),
                        "prefix": prefix.decode("latin-1"),
                        "rc": rc,
                        "ms": elapsed,
                        "nested": bool(NESTED.search(line.pattern)),
                        "pattern": line.pattern[:120].decode("latin-1"),
                    }
                )
    return found, time.perf_counter() - started


def _fritz(size: int) -> bytes:
    return b"220 FRITZ!Box" + b"0" * size + b"! FTP server ready.\r\n"


def _mailenable(size: int) -> bytes:
    return b"220 " + b"A" * size + b"\r\n250-x [y], this server offers 9 extensions\r\nX"


#: baits carrying every literal of a line, so the prefilter passes them to PCRE
CRAFTED = (
    ("crafted line 1250 (FRITZ!Box ftp) x 32 KiB", "NULL", _fritz),
    ("crafted line 13021 (MailEnable smtp) x 32 KiB", "Hello", _mailenable),
)
SCALING = ((1250, _fritz), (13021, _mailenable))

CLASSIC = (
    (rb"(a+)+$", b"a" * 30 + b"!"),
    (rb"(a+)+$", b"a" * 4096 + b"!"),
    (rb"(a|aa)+$", b"a" * 40 + b"!"),
    (rb"(a|aa)+$", b"a" * 32768 + b"!"),
    (rb"(.*a){20}", b"a" * 50),
    (rb"(.*a){20}", b"a" * 4096),
    (rb"^(\w+\s?)*$", b"word " * 10 + b"!"),
    (rb"^(\w+\s?)*$", b"abcde " * 5000 + b"!"),
    (rb"^(\w+\s?)*$", b"a" * 32768 + b"!"),
    (rb"(x+x+)+y", b"x" * 40),
)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer repetitions, no 590 KiB floods")
    args = parser.parse_args()
    reps_pf, reps_plain = (5, 2) if args.quick else (15, 5)
    sizes = FLOOD_SIZES[:2] if args.quick else FLOOD_SIZES

    info = machine()
    pf = load_matcher(cache_dir=cache_dir())
    plain = load_matcher(use_prefilter=False)
    if pf.prefilter is None:
        print("Hyperscan is not available: only the plain path is measured meaningfully.")
    print(f"# Hostile inputs ({info['date']})", flush=True)

    # ---- 1 + 2: baits through the chains
    cases: list[dict[str, Any]] = []
    cases.append(chain_case(pf, plain, "payara", "GetRequest", PAYARA_BAIT, reps_pf, reps_plain))
    fills = (("A", b"A", b""), ("spaces", b" ", b""), ("a+!", b"a", b"!"), ("CRLF", b"\r\n", b""))
    for label, fill, tail in fills:
        for size in sizes:
            bait = flood(fill, size, tail)
            for chain in ("NULL", "GetRequest"):
                many = size <= 32 * 1024
                cases.append(
                    chain_case(
                        pf,
                        plain,
                        f"{label} x {size // 1024} KiB",
                        chain,
                        bait,
                        reps_pf if many else 3,
                        reps_plain if many else 1,
                    )
                )
                print(f"  {cases[-1]['name']} / {chain}: done", flush=True)

    # ---- 3: which lines do hostile inputs hurt?
    lines = plain.db.lines
    nested = [line for line in lines if NESTED.search(line.pattern)]
    survey_size = 4096
    slow, survey_s = survey(lines, survey_size)
    limited = [s for s in slow if s["rc"] in (-8, -21)]
    slow.sort(key=lambda s: -s["ms"])
    print(
        f"  survey: {len(lines)} lines x 7 baits of {survey_size} B in {survey_s:.1f} s", flush=True
    )
    # the worst (line, bait) pairs, fed to their probe's whole chain at 32 KiB and 590 KiB
    worst: list[dict[str, Any]] = []
    seen: set[int] = set()
    for item in slow:
        if item["lineno"] in seen or len(worst) >= 6:
            continue
        seen.add(item["lineno"])
        worst.append(item)
    for item in worst:
        probe = plain.db.find(item["probe"], item["protocol"])
        fill = item["fill"].encode("latin-1")
        prefix = item["prefix"].encode("latin-1")
        # 32 KiB only: these grow quadratically on the plain path (see "scaling")
        size = 32 * 1024
        bait = prefix + flood(fill, size, b"!\x01")
        case = chain_case(
            pf,
            plain,
            f"line {item['lineno']} bait ({item['fill']!r} x {size // 1024} KiB)",
            probe.name,
            bait,
            reps_pf,
            reps_plain,
        )
        cases.append(case)
        print(f"  {case['name']} / {case['chain']}: done", flush=True)
    # crafted: the literals the prefilter wants are present, the quadratic part still fails
    for name, chain, make in CRAFTED:
        case = chain_case(pf, plain, name, chain, make(32 * 1024), reps_pf, reps_plain)
        cases.append(case)
        print(f"  {case['name']} / {case['chain']}: done", flush=True)
    # scaling of the worst lines alone: the limits count backtracking steps, not the
    # bytes a single step scans, so a quadratic scan is not cut short
    scaling: list[dict[str, Any]] = []
    for lineno, make_line_bait in SCALING:
        line = next(x for x in lines if x.lineno == lineno)
        for size in (4 * 1024, 16 * 1024, 64 * 1024):
            bait = make_line_bait(size)
            median, _, rc = time_ms(lambda p=line.compiled, b=bait: p.search_status(b), 1)
            scaling.append({"lineno": lineno, "bytes": len(bait), "rc": rc, "ms": median})

    # ---- 4: classic catastrophic patterns, standalone
    classic: list[dict[str, Any]] = []
    for source, subject in CLASSIC:
        pattern = pcre.Pattern(source)
        median, worst_ms, rc = time_ms(lambda p=pattern, s=subject: p.search_status(s), 5)
        classic.append(
            {
                "pattern": source.decode(),
                "subject_bytes": len(subject),
                "rc": rc,
                "status": status_name(rc),
                "ms_median": median,
                "ms_max": worst_ms,
            }
        )

    # ---- report
    print()
    print(
        f"Machine: {info['nproc']} CPU(s), {info['cpu']}; Python {info['python']}; "
        f"PCRE {info['pcre']}; hyperscan {info['hyperscan']}"
    )
    print()
    rows = []
    for case in cases:
        over = []
        if case["prefiltered_ms"]["max"] > TARGET_MS:
            over.append("prefiltered")
        if case["plain_ms"]["max"] > TARGET_MS:
            over.append("plain")
        rows.append(
            [
                case["name"],
                case["chain"],
                f"{case['prefiltered_ms']['median']:.2f} / {case['prefiltered_ms']['max']:.2f}",
                f"{case['plain_ms']['median']:.1f} / {case['plain_ms']['max']:.1f}",
                case["answer_plain"]
                if case["same_answer"]
                else f"DIFFER: {case['answer_prefiltered']} vs {case['answer_plain']}",
                ", ".join(over) if over else "-",
            ]
        )
    print(
        md_table(
            [
                "bait",
                "chain",
                "prefiltered ms (median / max)",
                "plain ms (median / max)",
                "answer (both paths)",
                f"> {TARGET_MS:.0f} ms",
            ],
            rows,
        )
    )
    print()
    print(f"Static scan: {len(nested)} of {len(lines)} lines have a nested unbounded quantifier.")
    print(
        f"Survey ({survey_size} B prefix baits x 7 fills, each line alone): {len(limited)} "
        f"(line, bait) pairs hit a PCRE limit, on {len({s['lineno'] for s in limited})} lines; "
        f"{len(slow)} pairs hit a limit or took > 1 ms. Slowest:"
    )
    print()
    print(
        md_table(
            ["line", "probe", "service", "fill", "rc", "ms", "nested", "pattern (start)"],
            [
                [
                    s["lineno"],
                    s["probe"],
                    s["service"],
                    repr(s["fill"]),
                    s["rc"],
                    f"{s['ms']:.2f}",
                    "yes" if s["nested"] else "no",
                    "`" + s["pattern"][:60].replace("|", "\\|") + "`",
                ]
                for s in slow[:12]
            ],
        )
    )
    print()
    print(
        md_table(
            ["pattern", "subject bytes", "pcre_exec", "ms (median / max)"],
            [
                [
                    f"`{c['pattern']}`",
                    c["subject_bytes"],
                    c["status"],
                    f"{c['ms_median']:.2f} / {c['ms_max']:.2f}",
                ]
                for c in classic
            ],
        )
    )
    print()
    print("Scaling of single lines on crafted baits (pcre_exec alone, 1 run):")
    print()
    print(
        md_table(
            ["line", "bytes", "rc", "ms"],
            [[x["lineno"], x["bytes"], x["rc"], f"{x['ms']:.1f}"] for x in scaling],
        )
    )
    differ = [c for c in cases if not c["same_answer"]]
    worst_pf = max(c["prefiltered_ms"]["max"] for c in cases)
    worst_plain = max(c["plain_ms"]["max"] for c in cases)
    print()
    print(
        f"Worst response: prefiltered {worst_pf:.1f} ms, plain {worst_plain:.1f} ms "
        f"(target <= {TARGET_MS:.0f} ms per response). Answers differ on {len(differ)} baits."
    )

    payload = {
        "machine": info,
        "quick": args.quick,
        "target_ms": TARGET_MS,
        "chains": cases,
        "static_nested_lines": len(nested),
        "survey": {
            "bait_bytes": survey_size,
            "seconds": survey_s,
            "limit_pairs": len(limited),
            "limit_lines": sorted({s["lineno"] for s in limited}),
            "slow_or_limited": slow[:100],
        },
        "classic": classic,
        "scaling": scaling,
        "worst_ms": {"prefiltered": worst_pf, "plain": worst_plain},
    }
    path = write_json("hostile.json", payload)
    print(f"JSON: {path.relative_to(REPO)}")
    return 1 if differ else 0


if __name__ == "__main__":
    raise SystemExit(main())
