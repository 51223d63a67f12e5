"""``vscan scan``'s options: its own, and nmap's where they mean what vscan does (the
others are refused with the reason, and the timing templates map onto vscan's limits)."""

from __future__ import annotations

import argparse
from typing import Any

from vscand.cli.options import add_probe_options, add_script_output_option, count, rate
from vscand.scripts.options import add_script_options

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
    ports, per_second = TIMING_TEMPLATES[template]
    if ports is not None:
        args.concurrency = min(args.concurrency, ports)
    if per_second:
        args.connect_rate = (
            per_second if not args.connect_rate else min(args.connect_rate, per_second)
        )


def add_scan_command(sub: Any) -> None:
    """``vscan scan TARGET...``: a scan in this process."""
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
        type=count(0, "a number of milliseconds"),
        default=0,
        metavar="MS",
        help="fast mode: also end a probe after MS of silence (default 0: never; above 0 "
        "answers may differ from nmap's: DESIGN.md, Fast mode exceptions)",
    )
    scan.add_argument(
        "--fast-lanes",
        type=count(1, "a positive number of lanes"),
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
        type=count(1, "a positive number of ports"),
        default=1000,
        metavar="N",
        help="ports in flight",
    )
    scan.add_argument(
        "--per-host",
        type=count(0, "a number of ports (0 = unlimited)"),
        default=0,
        metavar="N",
        help="ports in flight per host (0 = unlimited)",
    )
    scan.add_argument(
        "--connect-rate", type=rate, default=0, metavar="R", help="new connections per second"
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
    add_probe_options(scan)
    scan.add_argument(
        "--services",
        metavar="FILE",
        help="nmap-services file: table names and named port lists (default: the one beside "
        "--probes FILE, else Nmap's installed file)",
    )
    add_script_options(scan)
    add_script_output_option(scan)
