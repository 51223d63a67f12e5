"""``vscan scan``: one process, no Redis — targets in, Nmap's answers out.

Everything a user can get wrong (targets, ports, probe file, allow-list, output
paths) is checked before the first packet and ends in exit code 2 with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import shlex
import signal
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any, NoReturn

from twisted.internet import defer, task

from vscand.cli.options import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USAGE,
    UsageError,
    write_output,
)
from vscand.cli.probes import load_probes
from vscand.cli.progress import Progress
from vscand.output.hosts import ScanMeta
from vscand.output.jsonl import dumps, write_jsonl
from vscand.output.nmapxml import format_xml
from vscand.output.normal import format_hosts, format_normal
from vscand.ports import PortSpecError, ServicesTable, load_services
from vscand.probes.matcher import Matcher
from vscand.scan.engine import ScanEngine
from vscand.scan.lag import ReactorLagMonitor
from vscand.scan.model import PortTask, Result, ScanOptions
from vscand.scan.plan import plan_wait_seconds
from vscand.scan.udp import CHECK_WAIT
from vscand.scripts.options import script_settings
from vscand.scripts.registry import ScriptSettings, make_phase
from vscand.targets.parse import Target, TargetError, parse_targets, read_target_list
from vscand.targets.policy import TargetPolicy
from vscand.targets.resolve import system_resolver
from vscand.targets.tasks import plan_tasks, select_ports


def _intensity(args: argparse.Namespace) -> int:
    if args.version_all:
        return 9
    if args.version_light:
        return 2
    if args.version_intensity is not None:
        return int(args.version_intensity)
    return 7


def _check_output_path(name: str | None) -> None:
    if not name or name == "-":
        return
    parent = Path(name).resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise UsageError(f"cannot write {name}: {parent} is not a writable directory")


def raise_fd_limit() -> int:
    """Use the hard limit on open files: every port in flight holds a socket."""
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft < hard:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (hard, hard))
            soft = hard
        except (ValueError, OSError):
            pass
    return soft


def run_scan_command(args: argparse.Namespace) -> int:
    """``vscan scan``: check everything, then one ``task.react`` run; the exit code."""
    try:
        prepared = _prepare(args)
    except UsageError as exc:
        print(f"vscan: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    outcome: dict[str, int] = {}

    def main(reactor: Any) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(_scan(reactor, args, prepared, outcome))

    with contextlib.suppress(SystemExit):  # react() always exits; the code is in outcome
        task.react(main)
    return outcome.get("code", EXIT_FAILED)


class _Prepared:
    def __init__(
        self,
        targets: list[Target],
        policy: TargetPolicy,
        ports: dict[str, list[int]],
        services: ServicesTable,
        matcher: Matcher,
        options: ScanOptions,
        scripts: ScriptSettings | None = None,
    ) -> None:
        self.scripts = scripts
        self.targets = targets
        self.policy = policy
        self.ports = ports
        self.services = services
        self.matcher = matcher
        self.options = options


def _prepare(args: argparse.Namespace) -> _Prepared:
    texts = list(args.targets)
    try:
        listed = read_target_list(args.input_list) if args.input_list else []
        targets = parse_targets(texts) + listed
    except (TargetError, OSError) as exc:
        raise UsageError(str(exc)) from None
    if not targets:
        raise UsageError("no targets given (TARGET... or -iL FILE)")
    try:
        policy = TargetPolicy(allow=args.allow or None, deny=args.deny)
    except (TargetError, ValueError) as exc:
        raise UsageError(f"bad --allow/--deny network: {exc}") from None
    try:
        services = load_services(args.services, probes_file=args.probes)
    except FileNotFoundError as exc:
        raise UsageError(str(exc)) from None
    try:
        ports = select_ports(args.ports, services)
    except PortSpecError as exc:
        raise UsageError(f"bad port list {args.ports!r}: {exc}") from None
    for name in (args.xml_out, args.normal_out, args.json_out, args.run_stats):
        _check_output_path(name)
    try:
        matcher = load_probes(args)
    except Exception as exc:  # a UsageError, as every loader mistake
        raise UsageError(str(exc)) from None
    # the table answers (names) as the probe file's Nmap release gives them
    services = services.for_release(matcher.db.grammar)
    protocols = set(ports) | {t.protocol for t in targets if t.is_endpoint}
    if args.fast_wait < 0:
        raise UsageError(f"--fast-wait must be >= 0, not {args.fast_wait}")
    if args.fast_lanes < 0:
        raise UsageError(f"--fast-lanes must be >= 0, not {args.fast_lanes}")
    options = ScanOptions(
        intensity=_intensity(args),
        allports=args.allports,
        scanned_protocols=tuple(sorted(protocols)) or ("tcp",),
        fast=args.fast,
        fast_wait=args.fast_wait / 1000.0,
        fast_lanes=args.fast_lanes,
    )
    try:
        scripts = script_settings(args)
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    return _Prepared(targets, policy, ports, services, matcher, options, scripts)


def run_stats(lag: ReactorLagMonitor, started: float, ended: float) -> dict[str, Any]:
    """``--run-stats``: what the run cost this process (hostile-target checks, benchmarks).

    Lag is how late a 20 ms sampling timer ran (``vscand.scan.lag``) from the first
    port to the last version script; blocked lag is that less the time the reactor
    thread waited for a CPU (``null`` where Linux does not tell the wait); the peak
    resident set is the kernel's (``ru_maxrss``, KiB on Linux).
    """
    return {
        "seconds": round(ended - started, 3),
        "reactor_lag_max_seconds": round(lag.worst, 6),
        "reactor_lag_p99_seconds": round(lag.percentile(99), 6),
        "reactor_lag_ticks": lag.ticks,
        "reactor_blocked_max_seconds": round(lag.worst_blocked, 6) if lag.splits_lag else None,
        "reactor_cpu_wait_seconds": None if lag.cpu_waited is None else round(lag.cpu_waited, 6),
        "max_rss_kib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
    }


def _die(code: int) -> NoReturn:
    raise SystemExit(code)


async def _scan(
    reactor: Any, args: argparse.Namespace, prepared: _Prepared, outcome: dict[str, int]
) -> None:
    started = time.time()
    try:
        tasks: list[PortTask] = await plan_tasks(
            prepared.targets, prepared.policy, system_resolver(reactor), prepared.ports
        )
    except TargetError as exc:
        print(f"vscan: error: {exc}", file=sys.stderr)
        outcome["code"] = EXIT_USAGE
        return
    raise_fd_limit()
    engine = ScanEngine(
        reactor,
        prepared.matcher,
        prepared.services,
        prepared.options,
        concurrency=max(1, args.concurrency),
        per_host_concurrency=max(0, args.per_host),
        connect_rate=max(0.0, args.connect_rate),
    )
    intensity = prepared.options.intensity
    db = prepared.matcher.db

    def bound(port_task: PortTask) -> float:
        seconds = plan_wait_seconds(db, port_task.protocol, port_task.port, intensity)
        return seconds + (CHECK_WAIT if port_task.protocol == "udp" else 0.0)

    slots = max(1, args.concurrency)
    if args.per_host > 0:
        slots = min(slots, args.per_host * len({t.address for t in tasks}))
    progress = Progress(
        tasks,
        enabled=not args.no_progress and not args.json,
        bound=bound,
        concurrency=slots,
    )
    redraw = task.LoopingCall(progress.tick)
    redraw.clock = reactor
    redraw.start(1.0, now=False)

    def on_result(result: Result) -> None:
        progress.update(result)
        if args.json:
            sys.stdout.write(dumps(result) + "\n")
            sys.stdout.flush()

    sink = on_result
    phase = None
    if prepared.scripts is not None:  # version scripts run on each result before it is shown
        phase = make_phase(
            reactor,
            tasks=tasks,
            sink=on_result,
            options=prepared.options,
            excluded=prepared.matcher.db.exclude.excludes,
            table_name=prepared.services.name,
            limiter=engine.limiter,
            settings=prepared.scripts,
            release=prepared.matcher.db.nmap_release,
        )
        sink = phase.on_result
    lag = ReactorLagMonitor(reactor, interval=0.02)
    lag.start()
    interrupted: list[str] = []

    def on_sigint(signum: int, frame: object) -> None:
        # Ctrl-C: start nothing more, end the ports in flight, write what has finished.
        # A second Ctrl-C stops at once (the outputs are not written then).
        if interrupted:
            reactor.callFromThread(reactor.stop)
            return
        interrupted.append("interrupted by the user (SIGINT)")
        if engine.scheduler is not None:
            reactor.callFromThread(engine.scheduler.stop)

    previous = signal.signal(signal.SIGINT, on_sigint)
    try:
        # the display names the slowest ports still running
        results = await engine.run(tasks, sink, on_port_started=progress.started)
        if phase is not None:
            phase.skip_scripts = bool(interrupted)
            await phase.flush()
    finally:
        signal.signal(signal.SIGINT, previous)
        lag.stop()
        if redraw.running:
            redraw.stop()
        progress.close()
    if interrupted:
        # the ports the interruption ended are not findings: only the finished ones go out
        results = [r for r in results if not r.get("interrupted")]
    ended = time.time()
    meta = ScanMeta(
        # the command as typed, re-runnable (vscand.cli.main records it)
        args=" ".join(shlex.quote(a) for a in ["vscan", *getattr(args, "argv", sys.argv[1:])]),
        start=started,
        end=ended,
        ports=prepared.ports,
        script_output=bool(getattr(args, "script_output", False)),
        # the release reproduced, as the fingerprints' V= field says it (7.95's probe file: 7.95)
        nmap_version=prepared.matcher.db.nmap_release,
        interrupted=(
            f"{interrupted[0]}: {len(results)} of {len(tasks)} ports finished"
            if interrupted
            else None
        ),
    )
    # like nmap: an output written to stdout (-oX -, -oN -, -oJ -) is all stdout carries
    to_stdout = "-" in (args.xml_out, args.normal_out, args.json_out)
    if not args.json and not to_stdout:
        sys.stdout.write(format_hosts(results, script_output=meta.script_output))
    _write(args.xml_out, lambda: format_xml(results, meta))
    _write(args.normal_out, lambda: format_normal(results, meta))
    if args.json_out:
        if args.json_out == "-":
            write_jsonl(results, sys.stdout)
        else:
            with open(args.json_out, "w", encoding="ascii") as stream:
                write_jsonl(results, stream)
    if args.run_stats:
        _write(args.run_stats, lambda: json.dumps(run_stats(lag, started, ended)) + "\n")
    failed = [r for r in results if r.get("error")]
    for result in failed:
        print(
            f"vscan: {result['host']}:{result['port']}: {json.dumps(result['error'])}",
            file=sys.stderr,
        )
    outcome["code"] = EXIT_FAILED if failed else EXIT_OK
    if interrupted:
        print(f"vscan: {meta.interrupted}; the outputs hold them", file=sys.stderr)
        outcome["code"] = EXIT_INTERRUPTED


def _write(name: str | None, render: Callable[[], str]) -> None:
    if not name:
        return
    write_output(name, render())
