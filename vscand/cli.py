"""The ``vscan`` command line.

This module is the edge: it parses arguments, loads the probe database and
prints.  Errors a user can cause end in exit code 2 with a one-line message.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from vscand.output.table import service_column, service_info_line, version_column
from vscand.probes import engine as engine_mod
from vscand.probes import pcre
from vscand.probes.grammar import DEFAULT_RELEASE, grammar_for
from vscand.probes.matcher import Matcher, load_matcher
from vscand.probes.parser import ProbeFileError
from vscand.result import service_from_match
from vscand.scripts.options import add_script_options

EXIT_OK = 0
EXIT_NO_MATCH = 1
EXIT_USAGE = 2


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit 2."""


def _add_probe_options(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--probes",
        metavar="FILE",
        help="nmap-service-probes file (default: Nmap's installed file)",
    )
    parser.add_argument(
        "--extra-probes",
        metavar="FILE",
        action="append",
        default=[],
        help="extra probe file layered on top (repeatable)",
    )
    parser.add_argument(
        "--nmap-release",
        metavar="VERSION",
        default=None,
        help="read the probe files as Nmap VERSION's loader does (default: the probe file's "
        f"release, as --regex-engine auto finds it, else {DEFAULT_RELEASE}; DESIGN.md, "
        "Nmap releases)",
    )
    parser.add_argument(
        "--no-prefilter",
        action="store_true",
        help="match every line with PCRE in turn (the plain path)",
    )
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        type=Path,
        help="where the compiled prefilter is cached (default: $VSCAND_CACHE_DIR, else "
        "$XDG_CACHE_HOME/vscand or ~/.cache/vscand)",
    )
    parser.add_argument(
        "--regex-engine",
        metavar="ENGINE",
        type=_regex_engine,
        default="auto",
        help="regex library and limits: auto (the probe file's Nmap release), pcre "
        "(Nmap 7.93), pcre2 (Nmap 7.95) or nmap-X.Y (default: auto)",
    )


def _regex_engine(value: str) -> str:
    try:
        return engine_mod.check_spec(value)
    except engine_mod.EngineSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


class _Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``vscan: error: ...``, exit 2), like every
    other error of the command; ``--help`` still shows the whole usage."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("vscan").strip()
        hint = f"vscan {command} --help" if command else "vscan --help"
        self.exit(EXIT_USAGE, f"vscan: error: {message} (see {hint})\n")


def _count(low: int, what: str) -> Callable[[str], int]:
    """An argparse type: an integer of at least *low*."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"{text!r} is not {what}")
        return value

    return parse


def _rate(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate (a number, 0 = unlimited)")
    return value


def _version() -> str:
    import platform  # noqa: PLC0415
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        ours = version("vscand")
    except PackageNotFoundError:
        ours = "(not installed)"
    import twisted  # noqa: PLC0415

    return f"vscan {ours} (Python {platform.python_version()}, Twisted {twisted.__version__})"


#: nmap options vscan does not take, with the reason (one line, exit 2)
REFUSED_NMAP_OPTIONS: dict[str, tuple[int, str]] = {
    "-sS": (0, "SYN scans need raw sockets; vscan connects (-sT), as nmap -sV does unprivileged"),
    "-sU": (0, "UDP ports are given in -p: -p U:53,161 (or T:22,U:53)"),
    "-sN": (0, "only connect scans (-sT) with version detection (-sV)"),
    "-sF": (0, "only connect scans (-sT) with version detection (-sV)"),
    "-sX": (0, "only connect scans (-sT) with version detection (-sV)"),
    "-sA": (0, "only connect scans (-sT) with version detection (-sV)"),
    "-sW": (0, "only connect scans (-sT) with version detection (-sV)"),
    "-sM": (0, "only connect scans (-sT) with version detection (-sV)"),
    "-sO": (0, "IP protocol scans are not supported"),
    "-sn": (0, "vscan does no host discovery: every target is scanned (as with -Pn)"),
    "-sL": (0, "vscan does no list scan"),
    "-sC": (0, "vscan runs the version scripts -sV runs, no others"),
    "-O": (0, "no OS detection beyond what -sV's matches say (the OS column and CPEs)"),
    "-A": (0, "-A means -O -sC --traceroute too; vscan does -sV only"),
    "-6": (0, "IPv6 targets are given as addresses (::1) or bracketed endpoints"),
    "-oG": (1, "no grepable output: -oN, -oX or -oJ"),
    "-oA": (1, "no grepable output to go with it: give -oN BASE.nmap -oX BASE.xml"),
    "-oS": (1, "no script kiddie output"),
}

#: nmap's timing templates, as vscan's limits: (ports in flight, new connections per second;
#: 0 = unlimited). -T0..-T2 pace the scan as nmap's scan delays do (5 min, 15 s, 0.4 s);
#: -T3..-T5 change no limit (version probes wait what the probe file says in every template).
TIMING_TEMPLATES: dict[str, tuple[int | None, float]] = {
    "0": (1, 1 / 300), "1": (1, 1 / 15), "2": (1, 2.5), "3": (None, 0.0), "4": (None, 0.0),
    "5": (None, 0.0), "paranoid": (1, 1 / 300), "sneaky": (1, 1 / 15), "polite": (1, 2.5),
    "normal": (None, 0.0), "aggressive": (None, 0.0), "insane": (None, 0.0),
}  # fmt: skip


class _Refused(argparse.Action):
    """An nmap option vscan does not take: a one-line usage error with the reason."""

    def __call__(self, parser: argparse.ArgumentParser, *args: Any, **kwargs: Any) -> None:
        option = kwargs.get("option_string") or (args[2] if len(args) > 2 else self.dest)
        parser.error(f"{option}: {(self.help or '').removeprefix('refused: ')}")


def apply_timing(args: argparse.Namespace) -> None:
    """-T: the template's limits, where they are stricter than those given."""
    template = getattr(args, "timing", None)
    if template is None:
        return
    ports, rate = TIMING_TEMPLATES[template]
    if ports is not None:
        args.concurrency = min(args.concurrency, ports)
    if rate:
        args.connect_rate = rate if not args.connect_rate else min(args.connect_rate, rate)


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="vscan", description="Service and version detection, answer for answer as nmap -sV."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

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
    _add_probe_options(match)

    scan = sub.add_parser(
        "scan",
        help="scan targets in this process (no Redis); Nmap-like table on stdout",
        description="Version detection of TARGETs, answer for answer as nmap -sV.",
    )
    scan.add_argument("targets", metavar="TARGET", nargs="*", help="IP, hostname, CIDR, HOST:PORT")
    habits = scan.add_argument_group(
        "nmap's options", "taken where they mean what vscan does; others refused with the reason"
    )
    habits.add_argument("-sV", action="store_true", help="version detection: what vscan does")
    habits.add_argument("-sT", action="store_true", help="connect scan: how vscan scans")
    habits.add_argument("-Pn", action="store_true", help="no ping: vscan never pings")
    habits.add_argument("-n", action="store_true", help="no DNS: vscan never resolves addresses")
    habits.add_argument(
        "-T",
        dest="timing",
        choices=list(TIMING_TEMPLATES),
        metavar="0-5",
        help="timing template: -T0..-T2 pace the scan (one port at a time; a connection per "
        "300 s, 15 s, 0.4 s); -T3..-T5 change nothing",
    )
    habits.add_argument("-v", action="count", default=0, help="accepted (vscan prints the same)")
    habits.add_argument("-d", action="count", default=0, help="accepted (vscan prints the same)")
    for option, (nargs, reason) in REFUSED_NMAP_OPTIONS.items():
        habits.add_argument(option, nargs=nargs, action=_Refused, help=f"refused: {reason}")
    scan.add_argument("-iL", dest="input_list", metavar="FILE", help="read targets (- = stdin)")
    scan.add_argument(
        "-p", dest="ports", metavar="PORTS", help="Nmap port syntax (default: top 1000 TCP)"
    )
    level = scan.add_mutually_exclusive_group()
    level.add_argument("--version-intensity", type=int, choices=range(10), metavar="N")
    level.add_argument("--version-light", action="store_true", help="intensity 2")
    level.add_argument("--version-all", action="store_true", help="intensity 9")
    scan.add_argument("--allports", action="store_true", help="do not honour Exclude")
    scan.add_argument(
        "--fast",
        action="store_true",
        help="fast mode: the same answers sooner, probes in parallel (DESIGN.md, Fast mode)",
    )
    scan.add_argument(
        "--fast-wait",
        type=_count(0, "a number of milliseconds"),
        default=0,
        metavar="MS",
        help="fast mode: also end a probe after MS of silence (default 0: never; above 0 "
        "answers may differ from nmap's: DESIGN.md, Fast mode exceptions)",
    )
    scan.add_argument(
        "--fast-lanes",
        type=_count(1, "a positive number of lanes"),
        default=32,
        metavar="N",
        help="fast mode: parallel probe connections per port (default 32)",
    )
    scan.add_argument("-oX", dest="xml_out", metavar="FILE", help="Nmap XML output (- = stdout)")
    scan.add_argument("-oN", dest="normal_out", metavar="FILE", help="Nmap normal output")
    scan.add_argument(
        "-oJ", dest="json_out", metavar="FILE", help="JSON lines, one result per port"
    )
    scan.add_argument(
        "--json", action="store_true", help="JSON lines on stdout instead of the table"
    )
    scan.add_argument(
        "--concurrency",
        type=_count(1, "a positive number of ports"),
        default=1000,
        metavar="N",
        help="ports in flight",
    )
    scan.add_argument(
        "--per-host",
        type=_count(0, "a number of ports (0 = unlimited)"),
        default=0,
        metavar="N",
        help="ports in flight per host (0 = unlimited)",
    )
    scan.add_argument(
        "--connect-rate", type=_rate, default=0, metavar="R", help="new connections per second"
    )
    scan.add_argument(
        "--allow",
        action="append",
        default=[],
        metavar="CIDR",
        help="allowed target network (repeatable; default: loopback only)",
    )
    scan.add_argument("--deny", action="append", default=[], metavar="CIDR", help="denied network")
    scan.add_argument("--no-progress", action="store_true", help="no progress bar on stderr")
    scan.add_argument(
        "--run-stats",
        metavar="FILE",
        help="write the run's own figures as JSON: duration, reactor lag, peak RSS",
    )
    _add_probe_options(scan)
    scan.add_argument(
        "--services",
        metavar="FILE",
        help="nmap-services file: table names and named port lists (default: the one beside "
        "--probes FILE, else Nmap's installed file)",
    )
    add_script_options(scan)

    add_fleet_parsers(sub)

    probes = sub.add_parser("probes", help="describe the probe database")
    probes.add_argument("--stats", action="store_true", help="counts and load time")
    probes.add_argument("--json", action="store_true", help="machine-readable output")
    _add_probe_options(probes)
    return parser


def _load(args: argparse.Namespace) -> Matcher:
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
    matcher = _load(args)
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
        return EXIT_OK if found else EXIT_NO_MATCH
    if found is None:
        print(f"No match for {len(response)} bytes in the {probe.protocol} {probe.name} chain.")
        return EXIT_NO_MATCH
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
    matcher = _load(args)
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


def cmd_scan(args: argparse.Namespace) -> int:
    from vscand.scanrun import run_scan_command  # noqa: PLC0415 - keeps `vscan match` light

    return run_scan_command(args, _load)


def cmd_fleet(args: argparse.Namespace) -> int:
    from vscand.fleet import run_fleet_command  # noqa: PLC0415 - Twisted only when needed

    return run_fleet_command(args)


def add_fleet_parsers(sub: Any) -> None:
    from vscand.fleet import add_fleet_commands  # noqa: PLC0415

    add_fleet_commands(sub)


FLEET_COMMANDS = (
    "submit",
    "status",
    "wait",
    "results",
    "export",
    "cancel",
    "migrate",
    "workers",
    "inventory",
    "changes",
    "schedule",
    "jobs",
    "queue",
    "dead",
)
COMMANDS = {"match": cmd_match, "probes": cmd_probes, "scan": cmd_scan}
COMMANDS.update(dict.fromkeys(FLEET_COMMANDS, cmd_fleet))


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, as typed
    if args.command == "scan":
        apply_timing(args)
    logging.basicConfig(level=logging.WARNING, format="vscan: %(message)s")
    try:
        code = COMMANDS[args.command](args)
        # what is still buffered goes now, while a closed reader is still caught below
        sys.stdout.flush()
        return code
    except UsageError as exc:
        print(f"vscan: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except BrokenPipeError:
        # the reader went away (`vscan ... | head`): not an error. Point stdout at
        # /dev/null so that the interpreter's own flush at exit does not fail again
        # (Python 3.13 reports that as "Exception ignored" and exits 120)
        _stdout_to_devnull()
        return EXIT_OK


def _stdout_to_devnull() -> None:
    try:
        fd = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a real file (tests capture it): nothing is flushed at exit
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, fd)
    os.close(devnull)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
