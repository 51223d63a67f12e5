"""The ``vscan`` command line: the parser and the dispatch to each command's module.

This package is the edge: it parses arguments, loads the probe database and prints.
Errors a user can cause end in exit code 2 with a one-line message. ``scan`` (Twisted's
reactor, the scan engine) is imported only when it runs; the fleet commands are each a
short ``task.react`` over our Redis client (``fleet.py``).
"""

from __future__ import annotations

import argparse
import logging
import os
import sys
from collections.abc import Callable, Sequence

from vscand.cli import changes, deadletters, fleetview, jobs, queueview, schedules
from vscand.cli.fleet import Handler, run_fleet_command
from vscand.cli.options import EXIT_OK, EXIT_USAGE, Parser, UsageError
from vscand.cli.probes import add_match_command, add_probes_command, cmd_match, cmd_probes
from vscand.cli.scan_options import add_scan_command, apply_timing


def _version() -> str:
    import platform  # noqa: PLC0415
    from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

    try:
        ours = version("vscand")
    except PackageNotFoundError:
        ours = "(not installed)"
    import twisted  # noqa: PLC0415

    return f"vscan {ours} (Python {platform.python_version()}, Twisted {twisted.__version__})"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="vscan", description="Service and version detection, answer for answer as nmap -sV."
    )
    parser.add_argument("--version", action="version", version=_version())
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    add_match_command(sub)
    add_scan_command(sub)
    jobs.add_job_commands(sub)
    fleetview.add_fleet_view_commands(sub)
    changes.add_change_commands(sub)
    schedules.add_schedule_commands(sub)
    queueview.add_queue_commands(sub)
    deadletters.add_dead_letter_commands(sub)
    add_probes_command(sub)
    return parser


def cmd_scan(args: argparse.Namespace) -> int:
    from vscand.cli.scan import run_scan_command  # noqa: PLC0415 - keeps `vscan match` light

    return run_scan_command(args)


#: the commands that run in this process
LOCAL_COMMANDS: dict[str, Callable[[argparse.Namespace], int]] = {
    "match": cmd_match,
    "probes": cmd_probes,
    "scan": cmd_scan,
}
#: the commands that read and write the fleet's Redis
FLEET_COMMANDS: dict[str, Handler] = {
    **jobs.HANDLERS,
    **fleetview.HANDLERS,
    **changes.HANDLERS,
    **schedules.HANDLERS,
    **queueview.HANDLERS,
    **deadletters.HANDLERS,
}


def _run(args: argparse.Namespace) -> int:
    if args.command in FLEET_COMMANDS:
        return run_fleet_command(args, FLEET_COMMANDS[args.command])
    return LOCAL_COMMANDS[args.command](args)


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)  # the command line, as typed
    if args.command == "scan":
        apply_timing(args)
    logging.basicConfig(level=logging.WARNING, format="vscan: %(message)s")
    try:
        code = _run(args)
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
