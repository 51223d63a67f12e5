"""``vscan schedule add|list|rm|pause|resume``: recurring jobs, enqueued by the fleet's
scheduler (``vscand.queue.schedules``)."""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from vscand.cli.fleet import ANY_ADDRESS, FleetError, Handler, keys_for
from vscand.cli.jobs import interval, job_fields
from vscand.cli.options import (
    EXIT_FAILED,
    EXIT_OK,
    EXIT_USAGE,
    add_commands_on,
    add_job_options,
    add_job_targets,
    add_redis_options,
)
from vscand.cli.replies import print_table
from vscand.jobs.parse import parse_job
from vscand.jobs.schema import JobError, JobLimits
from vscand.queue import schedules as sched
from vscand.queue.client import RedisClient


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


def add_schedule_commands(sub: Any) -> None:
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
    add_job_targets(add)
    add_job_options(add)
    add.add_argument("--paused", action="store_true", help="create it paused")
    add.add_argument("--replace", action="store_true", help="overwrite a schedule of that name")
    add_redis_options(add)
    listing = actions.add_parser("list", help="schedules, next runs, last jobs")
    listing.add_argument("--json", action="store_true", help="JSON lines")
    add_redis_options(listing)
    add_commands_on(
        actions,
        (
            ("rm", "delete a schedule (its past jobs stay)"),
            ("pause", "stop enqueuing runs until resume"),
            ("resume", "resume a paused schedule (missed runs are not replayed)"),
        ),
        "name",
        "NAME",
    )


def _schedule_from_args(args: argparse.Namespace) -> sched.Schedule:
    job = job_fields(args)
    try:
        schedule = sched.Schedule(
            name=args.name,
            job=job,
            every=interval(args.every) if args.every else None,
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
    keys = keys_for(args)
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
    table: list[tuple[str, ...]] = []
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
    print_table(header, table)


HANDLERS: dict[str, Handler] = {"schedule": cmd_schedule}
