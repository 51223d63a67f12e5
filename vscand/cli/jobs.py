"""The job commands of ``vscan``: ``submit``, ``status``, ``wait``, ``results``, ``export``
and ``cancel``; and :func:`job_fields`, a job's fields from the command line (``schedule
add`` takes the same)."""

from __future__ import annotations

import argparse
import json
import sys
import time
import uuid
from typing import Any

from twisted.internet import task

from vscand.cli.fleet import ANY_ADDRESS, FleetError, Handler, keys_for
from vscand.cli.fleetview import cmd_export_inventory
from vscand.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    add_commands_on,
    add_job_options,
    add_job_targets,
    add_redis_options,
    add_script_output_option,
    write_output,
)
from vscand.cli.replies import text
from vscand.jobs.ids import task_id
from vscand.jobs.parse import parse_job
from vscand.jobs.schema import JobError, JobLimits
from vscand.jobs.signing import JobSigner, load_key
from vscand.output.hosts import ScanMeta, parse_time
from vscand.output.jsonl import dumps
from vscand.output.nmapxml import format_xml
from vscand.output.normal import format_hosts
from vscand.queue import fleet_reads
from vscand.queue.client import RedisClient
from vscand.queue.keys import Keys
from vscand.queue.results import ResultWriter
from vscand.targets.parse import TargetError, parse_target

FINAL = ("done", "failed", "cancelled")


def add_job_commands(sub: Any) -> None:
    """``submit``, then the commands that take a JOB."""
    submit = sub.add_parser("submit", help="enqueue a scan job in Redis, print its id")
    add_job_targets(submit)
    submit.add_argument("--id", dest="job_id", help="job id (default: a new uuid4)")
    add_job_options(submit)
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
    add_redis_options(submit)

    def options_of(name: str, parser: argparse.ArgumentParser) -> None:
        if name == "wait":
            parser.add_argument("--timeout", type=float, default=0, help="give up after (s)")
        if name == "status":
            parser.add_argument("--json", action="store_true")

    add_commands_on(
        sub,
        (
            ("status", "a job's status hash"),
            ("wait", "wait until a job ends (exit 0 done, 1 failed/cancelled)"),
            ("cancel", "ask the worker running a job to stop it (partial results are kept)"),
        ),
        "job",
        "JOB",
        extra=options_of,
    )

    results = sub.add_parser("results", help="a job's port results")
    results.add_argument("job", metavar="JOB")
    results.add_argument("--json", action="store_true", help="JSON lines")
    add_script_output_option(results)
    add_redis_options(results)

    export = sub.add_parser("export", help="a job's results as Nmap XML (same as vscan scan -oX)")
    export.add_argument("job", metavar="JOB", nargs="?")
    export.add_argument(
        "--inventory", action="store_true", help="export the whole inventory instead of a job"
    )
    export.add_argument("-oX", dest="xml_out", metavar="FILE", required=True, help="- = stdout")
    add_script_output_option(export)
    add_redis_options(export)


async def _job_hash(client: RedisClient, keys: Keys, job_id: str) -> dict[str, str]:
    pairs = await fleet_reads.job_hash(client, keys, job_id)
    status = {text(pairs[i]): text(pairs[i + 1]) for i in range(0, len(pairs), 2)}
    if not status:
        raise FleetError(f"no job {job_id!r} (no {keys.job(job_id)} hash)", EXIT_FAILED)
    entry = status.get("entry")
    if status.get("status") == "queued" and entry:
        # refused without a word in the job's hash (signed mode: an unverified entry writes
        # nothing under the id it claims): the refusal is recorded by stream entry
        record = [text(part) for part in await fleet_reads.refusal(client, keys, entry)]
        found = dict(zip(record[::2], record[1::2], strict=False))
        if "reason" in found:
            status["refused"] = found["reason"]
            status["refused_at"] = found.get("at", "")
    return status


def job_fields(args: argparse.Namespace) -> dict[str, Any]:
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
        job["stale_after"] = interval(args.stale, "--stale")
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
    keys = keys_for(args)
    if (args.show or args.json or args.no_results) and not args.wait:
        raise FleetError("--show, --json and --no-results need --wait")
    if args.no_results and (args.json or args.show):
        raise FleetError("--no-results prints only the id: not with --show or --json")
    job: dict[str, Any] = {"id": args.job_id or str(uuid.uuid4()), **job_fields(args)}
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
        reached = await fleet_reads.replicas_reached(
            client, keys, parsed.id, status, args.replica_confirm
        )
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
    return await _wait(reactor, client, keys_for(args), args.job, args.timeout)


async def cmd_status(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    status = await _job_hash(client, keys_for(args), args.job)
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
    async for batch in fleet_reads.stream_pages(client, stream):
        for _entry_id, fields in batch:
            values = {text(fields[i]): fields[i + 1] for i in range(0, len(fields), 2)}
            if "result" in values:
                results.append(json.loads(values["result"]))
    return results


async def cmd_results(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = keys_for(args)
    await _job_hash(client, keys, args.job)
    _print_results(await _results(client, keys, args.job), args.json, args.script_output)
    return EXIT_OK


def _print_results(
    results: list[dict[str, Any]], as_json: bool, script_output: bool = False
) -> None:
    if as_json:
        for result in results:
            print(dumps(result))
    else:
        sys.stdout.write(format_hosts(results, script_output=script_output))


async def cmd_export(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    if args.inventory:
        return await cmd_export_inventory(reactor, client, args)
    if not args.job:
        raise FleetError("export: give a JOB, or --inventory for the whole inventory")
    keys = keys_for(args)
    status = await _job_hash(client, keys, args.job)
    results = await _results(client, keys, args.job)
    start = parse_time(status.get("started_at")) or time.time()
    end = parse_time(status.get("finished_at")) or time.time()
    meta = ScanMeta(
        args=f"vscan job {args.job}", start=start, end=end, script_output=args.script_output
    )
    write_output(args.xml_out, format_xml(results, meta))
    return EXIT_OK


async def cmd_cancel(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = keys_for(args)
    status = await _job_hash(client, keys, args.job)
    if status.get("status") in FINAL:
        print(f"job {args.job} already {status['status']}")
        return EXIT_OK
    await ResultWriter(client, keys, worker="vscan-cancel").request_cancel(args.job)
    print(f"cancel requested for job {args.job}")
    return EXIT_OK


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def interval(spec: str, option: str = "--every") -> int:
    """Whole seconds from ``90``, ``30m``, ``6h`` or ``1d``."""
    number, unit = (spec[:-1], spec[-1]) if spec[-1:] in _UNITS else (spec, "s")
    if not number.isdigit() or int(number) == 0:
        raise FleetError(f"{option} {spec!r}: write whole seconds, or 30m, 6h, 1d")
    return int(number) * _UNITS[unit]


HANDLERS: dict[str, Handler] = {
    "submit": cmd_submit,
    "status": cmd_status,
    "wait": cmd_wait,
    "results": cmd_results,
    "export": cmd_export,
    "cancel": cmd_cancel,
}
