"""``vscan scan``: one process, no Redis — targets in, Nmap's answers out.

Everything a user can get wrong (targets, ports, probe file, allow-list, output
paths) is checked before the first packet and ends in exit code 2 with one line.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import resource
import shlex
import signal
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, NoReturn

from twisted.internet import defer, task

from vscand.output.jsonl import dumps, write_jsonl
from vscand.output.nmapxml import format_xml
from vscand.output.normal import format_hosts, format_normal
from vscand.output.report import ScanMeta
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

EXIT_OK = 0
EXIT_SOME_FAILED = 1
EXIT_USAGE = 2
#: Ctrl-C, as shells report a SIGINT death (128 + 2)
EXIT_INTERRUPTED = 130


class ScanUsageError(Exception):
    pass


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
        raise ScanUsageError(f"cannot write {name}: {parent} is not a writable directory")


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


def _duration(seconds: float) -> str:
    """``45s``, ``2m05s``, ``1h02m``."""
    whole = math.ceil(max(0.0, seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Progress:
    """A live progress display on stderr when it is a terminal (tqdm), else nothing: ports
    done of all, refreshed every second whether or not a port ended (:meth:`tick`), with how
    many are in flight, the slowest ones still running with their elapsed time, and the
    worst case left by the probe plan.

    The worst case: *bound* gives a port's longest scan (:func:`plan_wait_seconds`: every
    probe its plan can send, each waiting its whole ``totalwaitms``, as a silent peer makes
    them); what is left is the ports not started at their bound plus the running ones' bound
    less their elapsed time, spread over *concurrency* slots, and never less than the longest
    single port left. Ports that answer end far sooner: it is the figure that does not lie
    about a scan of silent ports (tqdm's own rate-based estimate sits beside it).
    """

    #: how many of the slowest running ports are named
    SLOWEST = 3

    def __init__(
        self,
        tasks: Sequence[PortTask],
        enabled: bool,
        clock: Callable[[], float] = time.monotonic,
        *,
        bound: Callable[[PortTask], float] | None = None,
        concurrency: int = 1,
    ) -> None:
        self._bar: Any = None
        self._clock = clock
        self._bound = bound
        self._concurrency = max(1, concurrency)
        #: (address, port, protocol) → (when its scan started, its bound)
        self.running: dict[tuple[str, int, str], tuple[float, float]] = {}
        #: the bounds of the ports not started yet
        self._waiting: dict[tuple[str, int, str], float] = {}
        if bound is not None:
            memo: dict[tuple[int, str], float] = {}
            for t in tasks:
                key = (t.port, t.protocol)
                if key not in memo:
                    memo[key] = bound(t)
                self._waiting[(t.address, t.port, t.protocol)] = memo[key]
        if enabled and len(tasks) > 1 and sys.stderr.isatty():
            from tqdm import tqdm  # noqa: PLC0415 - only for a terminal

            self._bar = tqdm(total=len(tasks), unit="port", file=sys.stderr, leave=False)

    def started(self, task: PortTask) -> None:
        key = (task.address, task.port, task.protocol)
        self.running[key] = (self._clock(), self._waiting.pop(key, 0.0))

    def update(self, result: Result) -> None:
        key = (str(result["host"]), int(result["port"]), str(result.get("protocol") or "tcp"))
        self.running.pop(key, None)
        self._waiting.pop(key, None)  # ended without starting (refused, interrupted)
        if self._bar is not None:
            self._bar.set_postfix_str(self.status(), refresh=False)
            self._bar.update(1)

    def worst_case_left(self) -> float | None:
        """Seconds the rest of the scan takes at worst by the probe plan (``None``: no
        bound was given)."""
        if self._bound is None:
            return None
        now = self._clock()
        running = [max(0.0, bound - (now - since)) for since, bound in self.running.values()]
        waiting = self._waiting.values()
        longest = max([*running, *waiting], default=0.0)
        return max(longest, (sum(running) + sum(waiting)) / self._concurrency)

    def status(self) -> str:
        """``N in flight; slowest HOST:PORT Ts, ...; worst case 2m05s left`` (empty when
        nothing runs)."""
        if not self.running:
            return ""
        now = self._clock()
        slowest = sorted(self.running.items(), key=lambda item: item[1][0])[: self.SLOWEST]
        named = ", ".join(
            f"{host}:{port}{'/udp' if proto == 'udp' else ''} {now - since:.0f}s"
            for (host, port, proto), (since, _bound) in slowest
        )
        text = f"{len(self.running)} in flight; slowest {named}"
        left = self.worst_case_left()
        if left is not None:
            text += f"; worst case {_duration(left)} left"
        return text

    def tick(self) -> None:
        """Redraw (elapsed times and tqdm's own clock move on with no port ending)."""
        if self._bar is not None:
            self._bar.set_postfix_str(self.status(), refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()


def run_scan_command(
    args: argparse.Namespace, load: Callable[[argparse.Namespace], Matcher]
) -> int:
    try:
        prepared = _prepare(args, load)
    except ScanUsageError as exc:
        print(f"vscan: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    outcome: dict[str, int] = {}

    def main(reactor: Any) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(_scan(reactor, args, prepared, outcome))

    with contextlib.suppress(SystemExit):  # react() always exits; the code is in outcome
        task.react(main)
    return outcome.get("code", EXIT_SOME_FAILED)


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


def _prepare(args: argparse.Namespace, load: Callable[[argparse.Namespace], Matcher]) -> _Prepared:
    texts = list(args.targets)
    try:
        listed = read_target_list(args.input_list) if args.input_list else []
        targets = parse_targets(texts) + listed
    except (TargetError, OSError) as exc:
        raise ScanUsageError(str(exc)) from None
    if not targets:
        raise ScanUsageError("no targets given (TARGET... or -iL FILE)")
    try:
        policy = TargetPolicy(allow=args.allow or None, deny=args.deny)
    except (TargetError, ValueError) as exc:
        raise ScanUsageError(f"bad --allow/--deny network: {exc}") from None
    try:
        services = load_services(args.services, probes_file=args.probes)
    except FileNotFoundError as exc:
        raise ScanUsageError(str(exc)) from None
    try:
        ports = select_ports(args.ports, services)
    except PortSpecError as exc:
        raise ScanUsageError(f"bad port list {args.ports!r}: {exc}") from None
    for name in (args.xml_out, args.normal_out, args.json_out, args.run_stats):
        _check_output_path(name)
    try:
        matcher = load(args)
    except Exception as exc:  # the CLI's loader raises its own UsageError
        raise ScanUsageError(str(exc)) from None
    # the table answers (names) as the probe file's Nmap release gives them
    services = services.for_release(matcher.db.grammar)
    protocols = set(ports) | {t.protocol for t in targets if t.is_endpoint}
    if args.fast_wait < 0:
        raise ScanUsageError(f"--fast-wait must be >= 0, not {args.fast_wait}")
    if args.fast_lanes < 0:
        raise ScanUsageError(f"--fast-lanes must be >= 0, not {args.fast_lanes}")
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
        raise ScanUsageError(str(exc)) from None
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
    scan_one = engine.scan_port

    def scan_port_watched(port_task: PortTask, options: ScanOptions | None = None) -> Any:
        progress.started(port_task)  # the display names the slowest ports still running
        return scan_one(port_task, options)

    engine.scan_port = scan_port_watched  # type: ignore[method-assign,assignment]
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
        results = await engine.run(tasks, sink)
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
        # the command as typed, re-runnable (cli.main records it)
        args=" ".join(shlex.quote(a) for a in ["vscan", *getattr(args, "argv", sys.argv[1:])]),
        start=started,
        end=ended,
        ports=prepared.ports,
        interrupted=(
            f"{interrupted[0]}: {len(results)} of {len(tasks)} ports finished"
            if interrupted
            else None
        ),
    )
    # like nmap: an output written to stdout (-oX -, -oN -, -oJ -) is all stdout carries
    to_stdout = "-" in (args.xml_out, args.normal_out, args.json_out)
    if not args.json and not to_stdout:
        sys.stdout.write(format_hosts(results))
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
    outcome["code"] = EXIT_SOME_FAILED if failed else EXIT_OK
    if interrupted:
        print(f"vscan: {meta.interrupted}; the outputs hold them", file=sys.stderr)
        outcome["code"] = EXIT_INTERRUPTED


def _write(name: str | None, render: Callable[[], str]) -> None:
    if not name:
        return
    text = render()
    if name == "-":
        sys.stdout.write(text)
        return
    Path(name).write_text(text, encoding="utf-8")
