"""Queue visibility for ``vscan``: ``jobs`` and ``queue`` (read-only; ``dead`` is in
``deadletters.py``). Everything read from Redis is untrusted here: binary values are decoded
with ``backslashreplace`` and control characters escaped before they reach a terminal
(``replies.shown``); a hash with missing fields shows ``-``.

Cost of ``vscan jobs``: there is no index of jobs, so it ``SCAN``s the keyspace for
``<prefix>job:{*`` hashes (``COUNT 1000``, ``TYPE hash``) and reads the fields it shows with
one script call per batch: O(keys in the database) server work and about one round trip per
1000 keys, whatever ``--limit``. Follow-up: a sorted set of job ids by queued time, written by
the submit/begin scripts, would make it O(limit).
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from vscand.cli.fleet import FleetError, Handler, keys_for
from vscand.cli.options import EXIT_OK, add_redis_options
from vscand.cli.replies import pairs, print_table, shown, untrusted_text
from vscand.queue import fleet_reads
from vscand.queue.client import RedisClient
from vscand.queue.keys import GROUP, Keys

JOB_FIELDS = (
    "id",
    "status",
    "queue",
    "worker",
    "ports_done",
    "ports_total",
    "queued_at",
    "started_at",
    "finished_at",
    "error",
    "sharded",
    "tasks_total",
    "tasks_finished",
    "parent",
)

# KEYS: job hashes; ARGV: field names. One HMGET per key, in one round trip; nil for a key
# gone since SCAN saw it (expired, deleted), so it is not shown as a damaged job.


def add_queue_commands(sub: Any) -> None:
    """``jobs`` and ``queue``."""
    jobs = sub.add_parser(
        "jobs",
        help="recent jobs: status, progress, worker (SCANs the keyspace: O(keys), see DESIGN)",
        description="Recent jobs, newest queued first. Cost: no job index exists, so this "
        "SCANs the whole keyspace for job hashes (COUNT 1000, one read per batch): O(keys in "
        "the database) whatever --limit.",
    )
    jobs.add_argument("--limit", type=int, default=20, metavar="N", help="at most N [20]")
    jobs.add_argument("--status", metavar="S", help="only jobs in status S (queued, running...)")
    jobs.add_argument("--tasks", action="store_true", help="list the tasks of sharded jobs too")
    jobs.add_argument("--json", action="store_true", help="JSON lines")
    add_redis_options(jobs)

    queue = sub.add_parser("queue", help="a jobs stream: depth, pending, consumers, lag, dead")
    queue.add_argument("--queue", default=None, metavar="Q", help="default: default")
    queue.add_argument("--json", action="store_true")
    add_redis_options(queue)


# -- vscan jobs ---------------------------------------------------------------------------


def _job_row(key: str, prefix: str, values: list[Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        name: (None if value is None else untrusted_text(value))
        for name, value in zip(JOB_FIELDS, values, strict=False)
    }
    inner = key[len(prefix) :]  # {ID} or {P}/tN
    row["key_id"] = inner[1:].replace("}", "", 1)
    if row.get("id") is None:
        row["id"] = row["key_id"]
    for name in ("ports_done", "ports_total", "tasks_total", "tasks_finished"):
        value = row.get(name)
        if value is not None:
            row[name] = int(value) if value.isdigit() else value
    return row


async def _scan_jobs(client: RedisClient, keys: Keys, tasks: bool) -> list[dict[str, Any]]:
    rows: list[dict[str, Any]] = []
    async for batch in fleet_reads.job_hashes(client, keys, JOB_FIELDS, tasks=tasks):
        rows.extend(_job_row(untrusted_text(k), keys.job_prefix, v) for k, v in batch)
    return rows


async def cmd_jobs(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise FleetError("--limit: give a number of jobs, 1 or more")
    rows = await _scan_jobs(client, keys_for(args), args.tasks)
    if args.status:
        rows = [r for r in rows if r.get("status") == args.status]
    # newest queued first; a hash without queued_at (damaged) last, by id
    rows.sort(key=lambda r: (r.get("queued_at") or "", r["id"]), reverse=True)
    rows.sort(key=lambda r: r.get("queued_at") is None)
    rows = rows[: args.limit]
    if args.json:
        for row in rows:
            print(json.dumps({k: v for k, v in row.items() if k != "key_id"}, sort_keys=True))
        return EXIT_OK
    header = (
        *("JOB", "STATUS", "QUEUE", "PORTS", "TASKS"),
        *("QUEUED", "STARTED", "FINISHED", "WORKER"),
    )
    table: list[tuple[str, ...]] = []
    for row in rows:
        done, total = row.get("ports_done"), row.get("ports_total")
        ports = f"{done if done is not None else '-'}/{total if total is not None else '-'}"
        tasks = (
            f"{row.get('tasks_finished') or 0}/{row.get('tasks_total')}"
            if row.get("sharded") == "1"
            else "-"
        )
        table.append(
            tuple(
                shown(cell, 64)
                for cell in (
                    row["id"],
                    row.get("status") or "?",
                    row.get("queue") or "default",
                    ports,
                    tasks,
                    row.get("queued_at") or "-",
                    row.get("started_at") or "-",
                    row.get("finished_at") or "-",
                    row.get("worker") or "-",
                )
            )
        )
    print_table(header, table)
    return EXIT_OK


# -- vscan queue --------------------------------------------------------------------------


async def _xinfo(client: RedisClient, *args: Any) -> list[dict[str, Any]]:
    return [pairs(item) for item in await fleet_reads.stream_info(client, *args)]


def _int(value: Any) -> int | None:
    text = untrusted_text(value)
    return int(text) if text.lstrip("-").isdigit() else None


def _entry_ms(entry_id: str) -> int | None:
    return _int(entry_id.partition("-")[0])


async def _count_after(client: RedisClient, stream: str, last: str, cap: int) -> int:
    """Entries of *stream* after *last* (at most *cap*): the lag where XINFO has none."""
    start, counted = ("(" + last) if last and last != "0-0" else "-", 0
    async for batch in fleet_reads.stream_pages(client, stream, start):
        counted += len(batch)
        if counted >= cap:
            break
    return min(counted, cap)


async def queue_report(client: RedisClient, keys: Keys, queue: str | None) -> dict[str, Any]:
    stream = keys.jobs_for(queue)
    now_ms = int(time.time() * 1000)
    report: dict[str, Any] = {
        "queue": queue or "default",
        "stream": stream,
        "length": await fleet_reads.stream_length(client, stream),
        "group": None,
        "pending": 0,
        "lag": None,
        "lag_source": None,
        "consumers": [],
        "oldest_pending": None,
        "oldest_pending_age_seconds": None,
        "oldest_pending_idle_seconds": None,
        "dead_length": await fleet_reads.stream_length(client, keys.dead),
    }
    groups = [
        g for g in await _xinfo(client, "GROUPS", stream) if untrusted_text(g.get("name")) == GROUP
    ]
    if not groups:
        return report
    group = groups[0]
    report["group"] = GROUP
    report["pending"] = _int(group.get("pending")) or 0
    last = untrusted_text(group.get("last-delivered-id"))
    report["last_delivered"] = last
    lag = _int(group.get("lag"))
    if lag is not None:
        report["lag"], report["lag_source"] = lag, "xinfo"
    else:
        # Redis < 7 has no lag; 7 has none after deletions past the group: count, capped
        report["lag"] = await _count_after(client, stream, last, 100_000)
        report["lag_source"] = "counted" if report["lag"] < 100_000 else "counted (capped)"
    for consumer in await _xinfo(client, "CONSUMERS", stream, GROUP):
        idle = _int(consumer.get("idle"))
        report["consumers"].append(
            {
                "name": untrusted_text(consumer.get("name")),
                "pending": _int(consumer.get("pending")) or 0,
                "idle_seconds": None if idle is None else idle / 1000,
            }
        )
    if report["pending"]:
        oldest = await fleet_reads.oldest_pending(client, stream)
        if oldest:
            entry, _consumer, idle, _count = oldest
            entry_id = untrusted_text(entry)
            added = _entry_ms(entry_id)
            report["oldest_pending"] = entry_id
            if added is not None:
                report["oldest_pending_age_seconds"] = max(0, now_ms - added) / 1000
            report["oldest_pending_idle_seconds"] = int(idle) / 1000
    return report


async def cmd_queue(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    report = await queue_report(client, keys_for(args), args.queue)
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return EXIT_OK

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    print(f"queue: {report['queue']} ({shown(report['stream'])})")
    print(f"length: {report['length']}")
    if report["group"] is None:
        print(f"group: none (no consumer group {GROUP!r}: no daemon has read this queue)")
    else:
        print(f"pending: {report['pending']}")
        print(f"lag: {report['lag']} ({report['lag_source']})")
        oldest = report["oldest_pending"]
        if oldest:
            print(
                f"oldest pending: {oldest}, added {secs(report['oldest_pending_age_seconds'])} "
                f"ago, idle {secs(report['oldest_pending_idle_seconds'])}"
            )
    print(f"dead letters: {report['dead_length']}")
    if report["consumers"]:
        print_table(
            ("CONSUMER", "PENDING", "IDLE"),
            [
                (shown(c["name"], 64), str(c["pending"]), secs(c["idle_seconds"]))
                for c in report["consumers"]
            ],
        )
    return EXIT_OK


HANDLERS: dict[str, Handler] = {"jobs": cmd_jobs, "queue": cmd_queue}
