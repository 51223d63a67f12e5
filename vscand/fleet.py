"""Fleet commands of ``vscan``: submit jobs to Redis and read what the daemons wrote.

``submit | status | wait | results | export | cancel | migrate | workers | inventory |
changes | schedule``, and from ``queueview.py`` ``jobs | queue | dead`` — each a short
``task.react`` run over our Redis client (the daemon's own), so the job format, key names
and status rules live in one place.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import sys
import time
import uuid
from collections.abc import Callable, Coroutine
from pathlib import Path
from typing import Any

from twisted.internet import defer, task

from vscand import queueview
from vscand.jobs.parse import parse_job
from vscand.jobs.schema import JobError, JobLimits
from vscand.jobs.signing import JobSigner, load_key
from vscand.output.jsonl import dumps
from vscand.output.nmapxml import format_xml
from vscand.output.normal import format_hosts
from vscand.output.report import ScanMeta, parse_time
from vscand.queue import schedules as sched
from vscand.queue.changes import describe, since_entry_id
from vscand.queue.client import RedisClient, RedisUnavailable
from vscand.queue.keys import Keys, task_id
from vscand.queue.migrate import migrate
from vscand.queue.results import ResultWriter
from vscand.targets.parse import TargetError, parse_target
from vscand.targets.policy import TargetPolicy

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
FINAL = ("done", "failed", "cancelled")

#: a submitter checks syntax only; the daemon applies its own allow/deny policy
ANY_ADDRESS = TargetPolicy(allow=["0.0.0.0/0", "::/0"], max_cidr_addresses=2**24)


STALE_HELP = (
    "staleness rescan: scan the inventory entries last scanned more than AGE ago (seconds, "
    "or 30m, 6h, 1d) instead of TARGETs; TARGETs (addresses, networks) then narrow the hosts"
)


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
    submit.add_argument("targets", metavar="TARGET", nargs="*")
    submit.add_argument("-p", dest="ports", metavar="PORTS")
    submit.add_argument("--queue", default=None, help="vantage-point queue (default: default)")
    submit.add_argument("--id", dest="job_id", help="job id (default: a new uuid4)")
    submit.add_argument("--version-intensity", type=int, choices=range(10), metavar="N")
    submit.add_argument("--version-all", action="store_true")
    submit.add_argument("--fast", action="store_true", help='job field "fast": true (fast mode)')
    submit.add_argument("--stale", metavar="AGE", help=STALE_HELP)
    submit.add_argument("--tag", action="append", default=[], metavar="K=V")
    submit.add_argument(
        "--task-ports",
        type=int,
        metavar="N",
        help="shard size: split the job into tasks of at most N ports (1-1024) that every "
        "worker of the queue can take [default: the worker's task_ports]",
    )
    submit.add_argument("--sign-key", metavar="FILE", help="HMAC key file: sign the job")
    submit.add_argument("--ttl", type=float, default=3600, help="signed job lifetime (s)")
    submit.add_argument(
        "--replica-confirm",
        type=int,
        default=0,
        metavar="N",
        help="exit only once N replicas hold the submission (WAIT), so a Redis failover "
        "cannot lose it; exit 1 if they do not within 5 s [default: 0]",
    )
    submit.add_argument(
        "--wait",
        action="store_true",
        help="wait for the job to end, then print its results after the id (as vscan results)",
    )
    submit.add_argument("--timeout", type=float, default=0, help="with --wait: give up after")
    submit.add_argument(
        "--show",
        action="store_true",
        help="with --wait: print the results (the default; accepted for older scripts)",
    )
    submit.add_argument(
        "--no-results",
        action="store_true",
        help="with --wait: print only the id (scripts); the exit code tells the outcome",
    )
    submit.add_argument("--json", action="store_true", help="with --wait: results as JSON lines")
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
    export.add_argument("job", metavar="JOB", nargs="?")
    export.add_argument(
        "--inventory", action="store_true", help="export the whole inventory instead of a job"
    )
    export.add_argument("-oX", dest="xml_out", metavar="FILE", required=True, help="- = stdout")
    common(export)

    workers = sub.add_parser("workers", help="the fleet: every daemon's heartbeat")
    workers.add_argument("--json", action="store_true")
    common(workers)

    inventory = sub.add_parser("inventory", help="the current picture of a host (or all hosts)")
    inventory.add_argument("host", metavar="HOST", nargs="?")
    inventory.add_argument("--json", action="store_true")
    common(inventory)

    migrate_cmd = sub.add_parser(
        "migrate",
        help="move job keys to the current key layout now (every daemon does it at start)",
    )
    common(migrate_cmd)

    add_change_commands(sub, common)
    add_schedule_commands(sub, common)
    queueview.add_queue_commands(sub, common)


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
            if failure.check(FleetError, queueview.QueueViewError):
                print(f"vscan: error: {failure.value}", file=sys.stderr)
                outcome["code"] = failure.value.code
                return None
            if failure.check(RedisUnavailable):
                print(f"vscan: error: Redis unavailable: {failure.value}", file=sys.stderr)
                outcome["code"] = EXIT_FAILED
                return None
            if failure.check(BrokenPipeError):
                # the reader went away (`vscan results JOB | head`): as for the local
                # commands, not an error; stdout is redirected so the exit flush stays quiet
                os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
                outcome["code"] = EXIT_OK
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
    entry = status.get("entry")
    if status.get("status") == "queued" and entry:
        # refused without a word in the job's hash (signed mode: an unverified entry writes
        # nothing under the id it claims): the refusal is recorded by stream entry
        refusal = await client.execute("HGETALL", keys.refused(entry))
        record = [_text(part) for part in refusal or []]
        found = dict(zip(record[::2], record[1::2], strict=False))
        if "reason" in found:
            status["refused"] = found["reason"]
            status["refused_at"] = found.get("at", "")
    return status


def _job_fields(args: argparse.Namespace) -> dict[str, Any]:
    """The job fields that ``submit`` and ``schedule add`` take from the command line."""
    targets: list[str] = []
    endpoints: list[str] = []
    for item in args.targets:
        try:
            (endpoints if parse_target(item).is_endpoint else targets).append(item)
        except TargetError as exc:
            raise FleetError(str(exc)) from None
    job: dict[str, Any] = {}
    if getattr(args, "stale", None):
        if endpoints or args.ports:
            raise FleetError(
                "--stale rescans the inventory's own ports: give addresses or networks to "
                "narrow it, no HOST:PORT and no -p"
            )
        job["stale_after"] = _interval(args.stale, "--stale")
    elif not targets and not endpoints:
        raise FleetError("give at least one TARGET (or --stale AGE for a staleness rescan)")
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
    if getattr(args, "fast", False):
        job["fast"] = True
    if getattr(args, "task_ports", None) is not None:
        job["task_ports"] = args.task_ports
    if args.tag:
        tags = {}
        for item in args.tag:
            key, sep, value = item.partition("=")
            if not sep or not key:
                raise FleetError(f"--tag {item!r}: write KEY=VALUE")
            tags[key] = value
        job["tags"] = tags
    return job


async def cmd_submit(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = _keys(args)
    if (args.show or args.json or args.no_results) and not args.wait:
        raise FleetError("--show, --json and --no-results need --wait")
    if args.no_results and (args.json or args.show):
        raise FleetError("--no-results prints only the id: not with --show or --json")
    job: dict[str, Any] = {"id": args.job_id or str(uuid.uuid4()), **_job_fields(args)}
    if args.queue:
        job["queue"] = args.queue
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
    writer = ResultWriter(client, keys, worker="vscan-submit")
    queued, status = await writer.submit(parsed, stream)
    if not queued:
        raise FleetError(
            f"job id {parsed.id!r} is taken (a job with it exists, status {status or '?'}); "
            "submit under another --id"
        )
    if args.replica_confirm > 0:
        # the same connection made the submission: WAIT covers it
        reached = int(await client.execute("WAIT", args.replica_confirm, 5000, timeout=10))
        # and it is on the server WAIT answered for (a reconnection in between, to a new
        # master, would make WAIT count nothing of ours)
        owner = await client.execute("HGET", keys.job(parsed.id), "entry")
        if _text(owner or b"") != status:
            reached = 0
        if reached < args.replica_confirm:
            raise FleetError(
                f"job {parsed.id} was queued (entry {status}) but only {reached} of "
                f"{args.replica_confirm} replicas confirmed it within 5 s: a failover now "
                "could lose it",
                EXIT_FAILED,
            )
    print(parsed.id)
    sys.stdout.flush()
    if not args.wait:
        return EXIT_OK
    code = await _wait(reactor, client, keys, parsed.id, args.timeout)
    if not args.no_results and (await _job_hash(client, keys, parsed.id)).get("status") in FINAL:
        # a failed or cancelled job's partial results too; the exit code stays the job's
        _print_results(await _results(client, keys, parsed.id), args.json)
    return code


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
            if "refused" in status:
                print(f"job {job_id} refused: {status['refused']}", file=sys.stderr)
                return EXIT_FAILED
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
    """A job's results; a sharded job's are its tasks' results, task by task."""
    status = await _job_hash(client, keys, job_id)
    if status.get("sharded") == "1":
        results: list[dict[str, Any]] = []
        for index in range(int(status.get("tasks_total") or 0)):
            results.extend(await _stream_results(client, keys.job_results(task_id(job_id, index))))
        return results
    return await _stream_results(client, keys.job_results(job_id))


async def _stream_results(client: RedisClient, stream: str) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    start = "-"
    while True:
        batch = await client.execute("XRANGE", stream, start, "+", "COUNT", 1000)
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
    _print_results(await _results(client, keys, args.job), args.json)
    return EXIT_OK


def _print_results(results: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for result in results:
            print(dumps(result))
    else:
        sys.stdout.write(format_hosts(results))


async def cmd_export(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    if args.inventory:
        return await cmd_export_inventory(reactor, client, args)
    if not args.job:
        raise FleetError("export: give a JOB, or --inventory for the whole inventory")
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


async def cmd_migrate(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    report = await migrate(client, _keys(args), lambda seconds: task.deferLater(reactor, seconds))
    if report.outcome == "migrated":
        print(f"{report.moved} keys moved, {len(report.conflicts)} left in place")
        for key in report.conflicts:
            print(f"left in place (its new name exists): {key}")
    else:
        print("the keys are in the current layout already")
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
            if args.json:
                print(json.dumps({"host": host, "ports": int(count)}))
            else:
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


def add_change_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """``vscan changes``: the inventory's change events."""
    changes = sub.add_parser(
        "changes", help="inventory changes: ports opened/closed, service, version or TLS changed"
    )
    changes.add_argument(
        "--since",
        metavar="WHEN",
        help="ISO time (2027-01-15T08:00:00Z), stream entry id, or duration (30m, 1h, 7d)",
    )
    changes.add_argument("--host", metavar="HOST", help="only this host's changes")
    changes.add_argument("--json", action="store_true", help="JSON lines")
    common(changes)


async def _inventory_results(client: RedisClient, keys: Keys, host: str) -> list[dict[str, Any]]:
    reply = list(await client.execute("HGETALL", keys.inventory(host)) or [])
    return [json.loads(reply[i + 1]) for i in range(0, len(reply), 2)]


async def cmd_export_inventory(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    """``vscan export --inventory -oX FILE``: every host's current picture as Nmap XML."""
    if args.job:
        raise FleetError("export: give a JOB or --inventory, not both")
    keys = _keys(args)
    hosts = sorted(_text(h) for h in await client.execute("SMEMBERS", keys.inventory_hosts))
    results: list[dict[str, Any]] = []
    for host in hosts:
        results.extend(await _inventory_results(client, keys, host))
    ends = {id(r): parse_time(r.get("scanned_at")) for r in results}  # when each port ended
    starts = [
        end - (r.get("duration_ms") or 0) / 1000.0
        for r in results
        if (end := ends[id(r)]) is not None
    ]
    now = time.time()
    meta = ScanMeta(
        args="vscan export --inventory",
        start=min(starts, default=now),
        end=max((t for t in ends.values() if t is not None), default=now),
    )
    text = format_xml(results, meta)
    if args.xml_out == "-":
        sys.stdout.write(text)
    else:
        Path(args.xml_out).write_text(text, encoding="utf-8")
    return EXIT_OK


def _change_event(entry_id: Any, fields: list[Any]) -> dict[str, Any]:
    values = {_text(fields[i]): _text(fields[i + 1]) for i in range(0, len(fields), 2)}
    port = values.get("port", "")
    return {
        "id": _text(entry_id),
        "at": values.get("at"),
        "host": values.get("host"),
        "port": int(port) if port.isdigit() else port,
        "protocol": values.get("protocol"),
        "kind": values.get("kind"),
        "before": json.loads(values["before"]) if values.get("before") else None,
        "after": json.loads(values["after"]) if values.get("after") else None,
        "job": values.get("job"),
    }


async def cmd_changes(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    """``vscan changes [--since WHEN] [--host HOST] [--json]``, oldest first."""
    keys = _keys(args)
    start = "-"
    if args.since:
        try:
            start = since_entry_id(args.since, time.time())
        except ValueError as exc:
            raise FleetError(str(exc)) from None
    events: list[dict[str, Any]] = []
    while True:
        batch = await client.execute("XRANGE", keys.changes, start, "+", "COUNT", 1000)
        for entry_id, fields in batch or []:
            event = _change_event(entry_id, fields)
            if not args.host or event["host"] == args.host:
                events.append(event)
            start = "(" + event["id"]
        if not batch or len(batch) < 1000:
            break
    if args.json:
        for event in events:
            print(json.dumps(event, sort_keys=False))
        return EXIT_OK
    header = ("AT", "HOST", "PORT", "CHANGE", "BEFORE", "AFTER")
    rows = [header]
    for event in events:
        rows.append(
            (
                str(event["at"] or "?"),
                str(event["host"]),
                f"{event['port']}/{event['protocol']}",
                str(event["kind"]),
                describe(event["before"]),
                describe(event["after"]),
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]
    for row in rows:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(row, widths, strict=True)).rstrip()
        )
    return EXIT_OK


# -- schedules (vscan schedule add|list|rm|pause|resume) ---------------------------------------


class _IntermixedParser(argparse.ArgumentParser):
    """Options and positionals in any order (``schedule add NAME --every 1h TARGET -p 80``):
    with NAME and a TARGET list that may be empty (``--stale``), plain parsing would give
    the empty list to the first gap and refuse the TARGETs after an option."""

    _inner = False

    def parse_known_args(  # type: ignore[override]
        self, args: Any = None, namespace: Any = None
    ) -> tuple[argparse.Namespace, list[str]]:
        if self._inner:  # parse_known_intermixed_args calls back into this method
            return super().parse_known_args(args, namespace)
        self._inner = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inner = False


def add_schedule_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
    """``vscan schedule add|list|rm|pause|resume``: recurring jobs run by the fleet."""
    schedule = sub.add_parser("schedule", help="recurring jobs: add, list, rm, pause, resume")
    actions = schedule.add_subparsers(
        dest="schedule_command", required=True, metavar="ACTION", parser_class=_IntermixedParser
    )
    add = actions.add_parser(
        "add",
        help="NAME (--every SECONDS | --cron EXPR) (TARGET... [-p PORTS] | --stale AGE "
        "[NETWORK...]) [--queue Q]",
    )
    add.add_argument("name", metavar="NAME", help="1-64 of A-Z a-z 0-9 . _ - (runs: NAME:<tick>)")
    when = add.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--every", metavar="SECONDS", help="interval: seconds, or 30m / 6h / 1d (UTC-aligned)"
    )
    when.add_argument("--cron", metavar="EXPR", help="5-field cron expression, in UTC")
    add.add_argument("targets", metavar="TARGET", nargs="*")
    add.add_argument("-p", dest="ports", metavar="PORTS")
    add.add_argument("--queue", default=None, help="vantage-point queue (default: default)")
    add.add_argument("--version-intensity", type=int, choices=range(10), metavar="N")
    add.add_argument("--version-all", action="store_true")
    add.add_argument("--fast", action="store_true", help='job field "fast": true')
    add.add_argument("--stale", metavar="AGE", help=STALE_HELP)
    add.add_argument("--tag", action="append", default=[], metavar="K=V")
    add.add_argument("--paused", action="store_true", help="create it paused")
    add.add_argument("--replace", action="store_true", help="overwrite a schedule of that name")
    common(add)
    listing = actions.add_parser("list", help="schedules, next runs, last jobs")
    listing.add_argument("--json", action="store_true", help="JSON lines")
    common(listing)
    for action, text in (
        ("rm", "delete a schedule (its past jobs stay)"),
        ("pause", "stop enqueuing runs until resume"),
        ("resume", "resume a paused schedule (missed runs are not replayed)"),
    ):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("name", metavar="NAME")
        common(parser)


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _interval(text: str, option: str = "--every") -> int:
    number, unit = (text[:-1], text[-1]) if text[-1:] in _UNITS else (text, "s")
    if not number.isdigit() or int(number) == 0:
        raise FleetError(f"{option} {text!r}: write whole seconds, or 30m, 6h, 1d")
    return int(number) * _UNITS[unit]


def _schedule_from_args(args: argparse.Namespace) -> sched.Schedule:
    job = _job_fields(args)
    try:
        schedule = sched.Schedule(
            name=args.name,
            job=job,
            every=_interval(args.every) if args.every else None,
            cron=args.cron,
            queue=args.queue or None,
            paused=args.paused,
        )
        # the runs must be valid jobs: check one now, as the daemon will
        parse_job(
            json.dumps(schedule.job_for(0)).encode(),
            limits=JobLimits(),
            policy=ANY_ADDRESS,
            now=time.time(),
        )
    except sched.ScheduleError as exc:
        raise FleetError(str(exc)) from None
    except JobError as exc:
        raise FleetError(f"invalid job: {exc}") from None
    return schedule


def _when(value: int | None) -> str:
    return "paused" if value is None else time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(value))


async def cmd_schedule(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = _keys(args)
    action = args.schedule_command
    try:
        if action == "add":
            schedule = _schedule_from_args(args)
            first = await sched.put(client, keys, schedule, replace=args.replace)
            print(f"schedule {schedule.name}: {schedule.rule}, next run {_when(first)}")
        elif action == "rm":
            if not await sched.remove(client, keys, args.name):
                raise FleetError(f"no schedule {args.name!r}", EXIT_FAILED)
            print(f"schedule {args.name} removed")
        elif action in ("pause", "resume"):
            next_run = await sched.set_paused(client, keys, args.name, action == "pause")
            print(f"schedule {args.name}: next run {_when(next_run)}")
        else:
            _print_schedules(await sched.describe(client, keys), args.json)
    except sched.ScheduleError as exc:
        code = EXIT_FAILED if str(exc).startswith("no schedule") else EXIT_USAGE
        raise FleetError(str(exc), code) from None
    return EXIT_OK


def _print_schedules(rows: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        for row in rows:
            print(json.dumps(row, sort_keys=True))
        return
    header = ("NAME", "RULE", "QUEUE", "NEXT", "LAST JOB", "STATUS", "RUNS", "SKIPPED", "TARGETS")
    table = [header]
    for row in rows:
        if "error" in row:
            table.append((row["name"], "?", "", "", "", row["error"], "", "", ""))
            continue
        job = row["job"]
        rule = f"every {row['every']}s" if row["every"] is not None else f"cron {row['cron']}"
        table.append(
            (
                row["name"],
                rule,
                row["queue"],
                "paused" if row["paused"] else (row["next_run"] or "-"),
                row["last_job"] or "-",
                row["last_status"] or "-",
                str(row["runs"]),
                str(row["skipped"]),
                " ".join(
                    [
                        *([f"stale>{job['stale_after']}s"] if job.get("stale_after") else []),
                        *job.get("targets", []),
                        *job.get("endpoints", []),
                    ]
                )
                + (f" -p {job['ports']}" if job.get("ports") else ""),
            )
        )
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for line in table:
        print(
            "  ".join(cell.ljust(width) for cell, width in zip(line, widths, strict=True)).rstrip()
        )


Handler = Callable[[Any, RedisClient, argparse.Namespace], Coroutine[Any, Any, int]]
HANDLERS: dict[str, Handler] = {
    "submit": cmd_submit,
    "status": cmd_status,
    "wait": cmd_wait,
    "results": cmd_results,
    "export": cmd_export,
    "cancel": cmd_cancel,
    "migrate": cmd_migrate,
    "workers": cmd_workers,
    "inventory": cmd_inventory,
    "changes": cmd_changes,
    "schedule": cmd_schedule,
    **queueview.HANDLERS,
}
