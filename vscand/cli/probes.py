"""``vscan match`` and ``vscan probes``: the probe database, offline.

:func:`load_probes` is how every command that matches (``scan`` too) loads the database
the options name; its mistakes are :class:`UsageError`s.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path
from typing import Any

from vscand.cli.options import EXIT_FAILED, EXIT_OK, UsageError, add_probe_options
from vscand.output.table import service_column, service_info_line, version_column
from vscand.probes import pcre
from vscand.probes.grammar import grammar_for
from vscand.probes.matcher import Matcher, load_matcher
from vscand.probes.parser import ProbeFileError
from vscand.service import service_from_match


def add_match_command(sub: Any) -> None:
    """``vscan match PROBE FILE``: one saved response."""
    match = sub.add_parser(
        "match",
        help="identify one saved response offline",
        description="Match a saved response against PROBE's fallback chain, as Nmap would "
        "after sending PROBE (NULL: a banner sent on connect).",
    )
    match.add_argument("probe", metavar="PROBE", help="probe name, e.g. NULL, GetRequest, UDP/Help")
    match.add_argument("file", metavar="FILE", help="response bytes; - reads standard input")
    match.add_argument("--json", action="store_true", help="print the result's service object")
    match.add_argument(
        "--trace",
        action="store_true",
        help="also print Nmap's --version-trace style match line on stderr",
    )
    add_probe_options(match)


def add_probes_command(sub: Any) -> None:
    """``vscan probes``: describe the database."""
    probes = sub.add_parser("probes", help="describe the probe database")
    probes.add_argument("--stats", action="store_true", help="counts and load time")
    probes.add_argument("--json", action="store_true", help="machine-readable output")
    add_probe_options(probes)


def load_probes(args: argparse.Namespace) -> Matcher:
    """The probe database the options name (``--probes``, ``--nmap-release`` ...)."""
    if args.nmap_release is not None:
        try:
            grammar_for(args.nmap_release)
        except ValueError as exc:
            raise UsageError(f"--nmap-release: {exc}") from None
    try:
        return load_matcher(
            args.probes,
            args.extra_probes,
            use_prefilter=False if args.no_prefilter else None,
            cache_dir=args.cache_dir,
            release=args.nmap_release,
            regex_engine=args.regex_engine,
            # a person at a terminal is told why the first run waits; pipes stay quiet
            notice=(lambda text: print(f"vscan: {text}", file=sys.stderr, flush=True))
            if sys.stderr.isatty()
            else None,
        )
    except ProbeFileError as exc:
        raise UsageError(f"probe file error: {exc}") from None
    except pcre.PcreError as exc:
        raise UsageError(str(exc)) from None


def _read_input(name: str) -> bytes:
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(name).read_bytes()
    except OSError as exc:
        raise UsageError(f"cannot read {name}: {exc.strerror or exc}") from None


def _find_probe(matcher: Matcher, spec: str) -> Any:
    protocol = None
    name = spec
    if "/" in spec:
        head, _, tail = spec.partition("/")
        if head.upper() in ("TCP", "UDP"):
            protocol, name = head.upper(), tail
    try:
        return matcher.db.find(name, protocol)
    except KeyError:
        raise UsageError(f"no probe named {spec!r} in the probe database") from None


def cmd_match(args: argparse.Namespace) -> int:
    matcher = load_probes(args)
    probe = _find_probe(matcher, args.probe)
    response = _read_input(args.file)
    found = matcher.match(probe, response)
    if args.trace and found is not None:
        kind = "soft" if found.soft else "hard"
        sys.stderr.write(
            f"Service scan {kind} match (Probe {probe.name} matched with "
            f"{found.matched_probe} line {found.line.lineno}): {found.service}\n"
        )
    for warning in found.warnings if found else ():
        sys.stderr.write(f"Warning: Servicescan {warning}\n")
    if args.json:
        if found is None:
            print("null")
        else:
            print(json.dumps(service_from_match(found), sort_keys=False))
        return EXIT_OK if found else EXIT_FAILED
    if found is None:
        print(f"No match for {len(response)} bytes in the {probe.protocol} {probe.name} chain.")
        return EXIT_FAILED
    service = service_from_match(found)
    svc_text = service_column(service["name"], service["tunnel"], service["conf"])
    version_text = version_column(service["product"], service["version"], service["extrainfo"])
    width = max(len("SERVICE"), len(svc_text)) + 1
    print(f"{'SERVICE'.ljust(width)}VERSION")
    print(f"{svc_text.ljust(width)}{version_text}".rstrip())
    info = service_info_line([service])
    if info:
        print(info)
    print(
        f"({'soft' if found.soft else 'hard'} match: {probe.name} matched with "
        f"{found.matched_probe} line {found.line.lineno} of {found.line.filename})"
    )
    return EXIT_OK


def probe_stats(matcher: Matcher) -> dict[str, Any]:
    db = matcher.db
    probes = db.all_probes()
    stats = matcher.stats
    engine = db.engine.describe()
    return {
        "files": db.files,
        "probes": len(probes),
        "tcp_probes": sum(1 for p in probes if p.protocol == "TCP"),
        "udp_probes": sum(1 for p in probes if p.protocol == "UDP"),
        "match": sum(1 for line in db.lines if not line.soft),
        "softmatch": sum(1 for line in db.lines if line.soft),
        "null_probe_lines": len(db.null_probe.matches) if db.null_probe else 0,
        "no_payload_probes": sum(1 for p in probes if p.no_payload),
        "fallbacks": sum(1 for p in probes if p.fallback_names),
        "exclude": {
            "tcp": [list(r) for r in db.exclude.tcp.ranges()],
            "udp": [list(r) for r in db.exclude.udp.ranges()],
            "any": [list(r) for r in db.exclude.any_proto.ranges()],
        },
        "load_seconds": round(stats.seconds, 4) if stats else None,
        "prefilter": stats.prefilter if stats else None,
        "prefilter_always_candidates": len(matcher.prefilter.always) if matcher.prefilter else None,
        # the version of the regex library in use (PCRE 8 or PCRE2): see regex_engine
        "pcre": engine["library"],
        "regex_engine": engine,
        "digest": db.digest,
        "grammar": db.grammar.release,
        "empty_match_unchecked": db.empty_match_unchecked,
    }


def cmd_probes(args: argparse.Namespace) -> int:
    started = time.perf_counter()
    matcher = load_probes(args)
    if args.stats:
        stats = probe_stats(matcher)
        if args.json:
            print(json.dumps(stats))
        else:
            for key, value in stats.items():
                print(f"{key}: {value}")
        return EXIT_OK
    rows = [
        {
            "protocol": p.protocol,
            "name": p.name,
            "rarity": p.rarity,
            "totalwaitms": p.totalwaitms,
            "ports": str(p.ports).removeprefix("PortRanges(").removesuffix(")"),
            "sslports": str(p.sslports).removeprefix("PortRanges(").removesuffix(")"),
            "lines": len(p.matches),
            "fallback": [c.name for c in p.chain[1:]],
            "no_payload": p.no_payload,
        }
        for p in matcher.db.all_probes()
    ]
    if args.json:
        print(json.dumps(rows))
    else:
        for row in rows:
            print(
                f"{row['protocol']} {row['name']:<24} rarity {row['rarity']} "
                f"wait {row['totalwaitms']:>6}ms lines {row['lines']:>5} "
                f"ports {row['ports'] or '-'}"
            )
        print(f"({len(rows)} probes, loaded in {time.perf_counter() - started:.2f}s)")
    return EXIT_OK
