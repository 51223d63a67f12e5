"""What every ``vscan`` command shares: exit codes, the parser class, argparse types and the
option groups more than one command takes (probe files, Redis, a job's fields)."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any, NoReturn

from vscand.probes import engine as engine_mod
from vscand.probes.grammar import DEFAULT_RELEASE

EXIT_OK = 0
#: the answer is a negative one: no match, a port or a job failed, Redis unreachable
EXIT_FAILED = 1
EXIT_USAGE = 2
#: Ctrl-C, as shells report a SIGINT death (128 + 2)
EXIT_INTERRUPTED = 130


class UsageError(Exception):
    """A mistake in what the user asked for: reported in one line, exit 2."""


class Parser(argparse.ArgumentParser):
    """argparse with one-line usage errors (``vscan: error: ...``, exit 2), like every
    other error of the command; ``--help`` still shows the whole usage."""

    def error(self, message: str) -> NoReturn:
        command = self.prog.removeprefix("vscan").strip()
        hint = f"vscan {command} --help" if command else "vscan --help"
        self.exit(EXIT_USAGE, f"vscan: error: {message} (see {hint})\n")


SCRIPT_OUTPUT_HELP = (
    "print the version scripts' output (table and -oN '|' lines, -oX <script>) as "
    "'nmap -sV --script=version' does; 'nmap -sV' alone prints none (JSON always has it)"
)


def add_script_output_option(parser: argparse.ArgumentParser) -> None:
    """``--script-output``: the reports show the version scripts' output (DESIGN.md)."""
    parser.add_argument("--script-output", action="store_true", help=SCRIPT_OUTPUT_HELP)


def count(low: int, what: str) -> Callable[[str], int]:
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


def rate(text: str) -> float:
    """An argparse type: a rate per second, 0 = unlimited."""
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value >= 0 and value != float("inf")):
        raise argparse.ArgumentTypeError(f"{text!r} is not a rate (a number, 0 = unlimited)")
    return value


def regex_engine(value: str) -> str:
    """An argparse type: a ``--regex-engine`` spec."""
    try:
        return engine_mod.check_spec(value)
    except engine_mod.EngineSpecError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from None


def add_probe_options(parser: argparse.ArgumentParser) -> None:
    """The probe database's options (``match``, ``probes``, ``scan``)."""
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
        type=regex_engine,
        default="auto",
        help="regex library and limits: auto (the probe file's Nmap release), pcre "
        "(Nmap 7.93), pcre2 (Nmap 7.95) or nmap-X.Y (default: auto)",
    )


def add_redis_options(parser: argparse.ArgumentParser) -> None:
    """Where a fleet command finds Redis and the daemons' keys."""
    parser.add_argument("--redis-url", metavar="URL", help="redis:// or unix:// URL")
    parser.add_argument(
        "--config",
        metavar="FILE",
        help="daemon config to read redis_url from (default /etc/vscand/vscand.conf)",
    )
    parser.add_argument("--key-prefix", default=None, metavar="P", help="default vscand:")


STALE_HELP = (
    "staleness rescan: scan the inventory entries last scanned more than AGE ago (seconds, "
    "or 30m, 6h, 1d) instead of TARGETs; TARGETs (addresses, networks) then narrow the hosts"
)


def add_job_targets(parser: argparse.ArgumentParser) -> None:
    """Where a job scans (``submit``, ``schedule add``): read back by ``jobs.job_fields``."""
    parser.add_argument("targets", metavar="TARGET", nargs="*")
    parser.add_argument("-p", dest="ports", metavar="PORTS")
    parser.add_argument("--queue", default=None, help="vantage-point queue (default: default)")


def add_job_options(parser: argparse.ArgumentParser) -> None:
    """How a job scans (``submit``, ``schedule add``): read back by ``jobs.job_fields``."""
    parser.add_argument("--version-intensity", type=int, choices=range(10), metavar="N")
    parser.add_argument("--version-all", action="store_true")
    parser.add_argument("--fast", action="store_true", help='job field "fast": true (fast mode)')
    parser.add_argument("--stale", metavar="AGE", help=STALE_HELP)
    parser.add_argument("--tag", action="append", default=[], metavar="K=V")


def add_commands_on(
    sub: Any,
    commands: Iterable[tuple[str, str]],
    dest: str,
    metavar: str,
    *,
    arg_help: str | None = None,
    extra: Callable[[str, argparse.ArgumentParser], None] | None = None,
) -> None:
    """Fleet commands that each take one thing named on the line (a job, a schedule, a
    dead letter), given as (command, help) pairs; *extra* adds a command's own options."""
    for name, text in commands:
        parser = sub.add_parser(name, help=text)
        parser.add_argument(dest, metavar=metavar, help=arg_help)
        if extra is not None:
            extra(name, parser)
        add_redis_options(parser)


def write_output(name: str, text: str) -> None:
    """An output option's FILE (``-oX FILE`` ...): ``-`` is standard output."""
    if name == "-":
        sys.stdout.write(text)
        return
    Path(name).write_text(text, encoding="utf-8")
