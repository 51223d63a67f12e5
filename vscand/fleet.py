"""Fleet commands of ``vscan``: submit jobs to Redis and read what the daemons wrote.

``submit | status | wait | results | export | cancel | workers | inventory`` —
each a short ``task.react`` run over our Redis client (the daemon's own), so the
job format, key names and status rules live in one place.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from vscand.output.jsonl import dumps
from vscand.output.nmapxml import format_xml
from vscand.output.normal import format_hosts
from vscand.output.report import ScanMeta, parse_time
from vscand.queue.client import RedisClient, RedisUnavailable
from vscand.queue.jobs import JobError, JobLimits, JobSigner, load_key, parse_job
from vscand.queue.keys import Keys
from vscand.queue.results import ResultWriter
from vscand.scan.targets import TargetError, TargetPolicy, parse_target

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
FINAL = ("done", "failed", "cancelled")

#: a submitter checks syntax only; the daemon applies its own allow/deny policy
ANY_ADDRESS = TargetPolicy(allow=["0.0.0.0/0", "::/0"], max_cidr_addresses=2**24)


class FleetError(Exception):
    """A user-facing failure: one line on stderr, exit code ``code``."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def add_fleet_commands(sub: Any) -> None:
    def common(parser: argparse.ArgumentParser) -> None:
        parser.add_argument("--redis-url", metavar="URL", help="redis:// or unix:// URL")
        parser.add_argument(
            "--config",
            metavar="FILE",
            help="daemon config to read redis_url from (default /etc/vscand/vscand.conf)",
        )
        parser.add_argument("--key-prefix", default=None, metavar="P", help="default vscand:")

    submit = sub.add_parser("submit", help="enqueue a scan job in Redis, print its id")
    submit.add_argument("targets", metavar="TARGET", nargs="+")
    submit.add_argument("-p", dest="ports", metavar="PORTS")
    submit.add_argument("--queue", default=None, help="vantage-point queue (default: default)")
    submit.add_argument("--id", dest="job_id", help="job id (default: a new uuid4)")
    submit.add_argument("--version-intensity", type=int, choices=range(10), metavar="N")
    submit.add_argument("--version-all", action="store_true")
    submit.add_argument("--tag", action="append", default=[], metavar="K=V")
    submit.add_argument("--sign-key", metavar="FILE", help="HMAC key file: sign the job")
    submit.add_argument("--ttl", type=float, default=3600, help="signed job lifetime (s)")
    submit.add_argument("--wait", action="store_true", help="wait for the job to end")
    submit.add_argument("--timeout", type=float, default=0, help="with --wait: give up after")
    common(submit)

    for name, text in (
        ("status", "a job's status hash"),
        ("wait", "wait until a job ends (exit 0 done, 1 failed/cancelled)"),
        ("cancel", "ask the worker running a job to stop it (partial results are kept)"),
    ):
        parser = sub.add_parser(name, help=text)
        parser.add_argument("job", metavar="JOB")
        if name == "wait":
            parser.add_argument("--timeout", type=float, default=0, help="give up after (s)")
        if name == "status":
            parser.add_argument("--json", action="store_true")
        common(parser)

    results = sub.add_parser("results", help="a job's port results")
    results.add_argument("job", metavar="JOB")
    results.add_argument("--json", action="store_true", help="JSON lines")
    common(results)

    export = sub.add_parser("export", help="a job's results as Nmap XML (same as vscan scan -oX)")
    export.add_argument("job", metavar="JOB")
    export.add_argument("-oX", dest="xml_out", metavar="FILE", required=True, help="- = stdout")
    common(export)

    workers = sub.add_parser("workers", help="the fleet: every daemon's heartbeat")
    workers.add_argument("--json", action="store_true")
    common(workers)

    inventory = sub.add_parser("inventory", help="the current picture of a host (or all hosts)")
    inventory.add_argument("host", metavar="HOST", nargs="?")
    inventory.add_argument("--json", action="store_true")
    common(inventory)


def _redis_url(args: argparse.Namespace) -> str:
    from vscand.config import redis_url_for_cli  # noqa: PLC0415

    try:
        return str(redis_url_for_cli(args.redis_url, args.config))
    except Exception as exc:
        raise FleetError(str(exc)) from None


def _keys(args: argparse.Namespace) -> Keys:
    return Keys(args.key_prefix or "vscand:")


def run_fleet_command(args: argparse.Namespace) -> int:
    handler = HANDLERS[args.command]
    outcome: dict[str, int] = {}

    async def main(reactor: Any) -> None:
        client = RedisClient(reactor, _redis_url(args), command_timeout=5.0)
        try:
            await client.connect()
        except RedisUnavailable as exc:
            raise FleetError(f"cannot reach Redis: {exc}", EXIT_FAILED) from None
        try:
            outcome["code"] = await handler(reactor, client, args)
        finally:
            await client.disconnect()

    def start(reactor: Any) -> defer.Deferred[None]:
        d = defer.Deferred.fromCoroutine(main(reactor))

        def report(failure: Any) -> None:
            if failure.check(FleetError):
                print(f"vscan: error: {failure.value}", file=sys.stderr)
                outcome["code"] = failure.value.code
                return None
            if failure.check(RedisUnavailable):
                print(f"vscan: error: Redis unavailable: {failure.value}", file=sys.stderr)
                outcome["code"] = EXIT_FAILED
                return None
            failure.raiseException()
            return None

        d.addErrback(report)
        return d

    with contextlib.suppress(SystemExit):  # react() always exits; the code is in outcome
        task.react(start)
    return outcome.get("code", EXIT_FAILED)


def _text(value: Any) -> str:
    return value.decode("utf-8", "replace") if isinstance(value, bytes) else str(value)


async def _job_hash(client: RedisClient, keys: Keys, job_id: str) -> dict[str, str]:
    reply = await client.execute("HGETALL", keys.job(job_id))
    pairs = list(reply or [])
    status = {_text(pairs[i]): _text(pairs[i + 1]) for i in range(0, len(pairs), 2)}
    if not status:
        raise FleetError(f"no job {job_id!r} (no {keys.job(job_id)} hash)", EXIT_FAILED)
    return status


async def cmd_submit(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = _keys(args)
    targets: list[str] = []
    endpoints: list[str] = []
    for text in args.targets:
        try:
            (endpoints if parse_target(text).is_endpoint else targets).append(text)
        except TargetError as exc:
            raise FleetError(str(exc)) from None
    job: dict[str, Any] = {"id": args.job_id or str(uuid.uuid4())}
    if targets:
        job["targets"] = targets
    if endpoints:
        job["endpoints"] = endpoints
    if args.ports:
        job["ports"] = args.ports
    if args.version_intensity is not None:
        job["intensity"] = args.version_intensity
    if args.version_all:
        job["version_all"] = True
    if args.queue:
        job["queue"] = args.queue
    if args.tag:
        tags = {}
        for item in args.tag:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise FleetError(f"--tag {item!r}: write KEY=VALUE")
            tags[key] = value
        job["tags"] = tags
    if args.sign_key:
        try:
            job = JobSigner(load_key(args.sign_key)).sign(job, args.ttl)
        except (OSError, ValueError, JobError) as exc:
            raise FleetError(f"--sign-key: {exc}") from None
    raw = json.dumps(job).encode()
    try:
        parsed = parse_job(raw, limits=JobLimits(), policy=ANY_ADDRESS, now=time.time())
    except JobError as exc:
        raise FleetError(f"invalid job: {exc}") from None
    stream = keys.jobs_for(args.queue)
    entry = _text(await client.execute("XADD", stream, "*", "job", raw))
    writer = ResultWriter(client, keys, worker="vscan-submit")
    await writer.set_queued(parsed, entry)
    print(parsed.id)
    sys.stdout.flush()
    if args.wait:
        return await _wait(reactor, client, keys, parsed.id, args.timeout)
    return EXIT_OK


async def _wait(reactor: Any, client: RedisClient, keys: Keys, job_id: str, timeout: float) -> int:
    started = time.monotonic()
    bar: Any = None
    try:
        while True:
            status = await _job_hash(client, keys, job_id)
            state = status.get("status", "?")
            if sys.stderr.isatty():
                if bar is None:
                    from tqdm import tqdm  # noqa: PLC0415

                    bar = tqdm(unit="port", file=sys.stderr, leave=False)
                total = status.get("ports_total")
                if total and total.isdigit():
                    bar.total = int(total)
                bar.n = int(status.get("ports_done", "0") or 0)
                bar.set_postfix_str(state, refresh=True)
            if state in FINAL:
                if state != "done":
                    error = status.get("error")
                    print(
                        f"job {job_id} {state}" + (f": {error}" if error else ""), file=sys.stderr
                    )
                return EXIT_OK if state == "done" else EXIT_FAILED
            if timeout and time.monotonic() - started > timeout:
                raise FleetError(f"job {job_id} still {state} after {timeout:g}s", EXIT_FAILED)
            await task.deferLater(reactor, 0.3)
    finally:
        if bar is not None:
            bar.close()


async def cmd_wait(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    return await _wait(reactor, client, _keys(args), args.job, args.timeout)


async def cmd_status(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    status = await _job_hash(client, _keys(args), args.job)
    if args.json:
        print(json.dumps(status, sort_keys=True))
    else:
        for key in sorted(status):
            print(f"{key}: {status[key]}")
    return EXIT_OK


async def _results(client: RedisClient, keys: Keys, job_id: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    start = "-"
    while True:
        batch = await client.execute("XRANGE", keys.job_results(job_id), start, "+", "COUNT", 1000)
        if not batch:
            return results
        for entry_id, fields in batch:
            values = {_text(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
            if "result" in values:
                results.append(json.loads(values["result"]))
            start = "(" + _text(entry_id)
        if len(batch) < 1000:
            return results


async def cmd_results(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = _keys(args)
    await _job_hash(client, keys, args.job)
    results = await _results(client, keys, args.job)
    if args.json:
        for result in results:
            print(dumps(result))
    else:
        sys.stdout.write(format_hosts(results))
    return EXIT_OK


async def cmd_export(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = _keys(args)
    status = await _job_hash(client, keys, args.job)
    results = await _results(client, keys, args.job)
    start = parse_time(status.get("started_at")) or time.time()
    end = parse_time(status.get("finished_at")) or time.time()
    meta = ScanMeta(args=f"vscan job {args.job}", start=start, end=end)
    text = format_xml(results, meta)
    if args.xml_out == "-":
        sys.stdout.write(text)
    else:
        Path(args.xml_out).write_text(text, encoding="utf-8")
    return EXIT_OK


async def cmd_cancel(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = _keys(args)
    status = await _job_hash(client, keys, args.job)
    if status.get("status") in FINAL:
        print(f"job {args.job} already {status['status']}")
        return EXIT_OK
    await ResultWriter(client, keys, worker="vscan-cancel").request_cancel(args.job)
    print(f"cancel requested for job {args.job}")
    return EXIT_OK


async def cmd_workers(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = _keys(args)
    reply = list(await client.execute("HGETALL", keys.workers) or [])
    beats = [json.loads(reply[i + 1]) for i in range(0, len(reply), 2)]
    beats.sort(key=lambda b: str(b.get("consumer")))
    if args.json:
        for beat in beats:
            print(json.dumps(beat, sort_keys=True))
        return EXIT_OK
    now = time.time()
    header = ("CONSUMER", "HOST", "PID", "QUEUE", "SEEN", "JOBS", "PORTS", "DONE", "RESULTS")
    rows = [header]
    for beat in beats:
        seen = parse_time(beat.get("last_seen"))
        age = f"{now - seen:.0f}s ago" if seen else "?"
        rows.append(
            (
                str(beat.get("consumer")),
                str(beat.get("host")),
                str(beat.get("pid")),
                str(beat.get("queue")),
                age,
                ",".join(beat.get("jobs") or []) or "-",
                str(beat.get("ports_in_flight", 0)),
                str(beat.get("jobs_done", 0)),
                str(beat.get("results_written", 0)),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK


async def cmd_inventory(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = _keys(args)
    if not args.host:
        hosts = sorted(_text(h) for h in await client.execute("SMEMBERS", keys.inventory_hosts))
        for host in hosts:
            count = await client.execute("HLEN", keys.inventory(host))
            print(f"{host}\t{count} ports")
        return EXIT_OK
    reply = list(await client.execute("HGETALL", keys.inventory(args.host)) or [])
    results = [json.loads(reply[i + 1]) for i in range(0, len(reply), 2)]
    if not results:
        raise FleetError(f"no inventory for {args.host}", EXIT_FAILED)
    if args.json:
        for result in results:
            print(dumps(result))
    else:
        sys.stdout.write(format_hosts(results))
    return EXIT_OK


Handler = Callable[[Any, RedisClient, argparse.Namespace], Coroutine[Any, Any, int]]
HANDLERS: dict[str, Handler] = {
    "submit": cmd_submit,
    "status": cmd_status,
    "wait": cmd_wait,
    "results": cmd_results,
    "export": cmd_export,
    "cancel": cmd_cancel,
    "workers": cmd_workers,
    "inventory": cmd_inventory,
}
