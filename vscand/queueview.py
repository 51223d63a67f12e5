"""Queue visibility for ``vscan``: ``jobs``, ``queue`` and ``dead list|show|retry|drop``.

Read-only except ``dead retry`` (a new stream entry through the submit script, never under a
taken id) and ``dead drop`` (``XDEL`` on the dead-letter stream). Everything read from Redis
is untrusted here: binary values are decoded with ``backslashreplace`` and control
characters escaped before they reach a terminal; a hash with missing fields shows ``-``.

Cost of ``vscan jobs``: there is no index of jobs, so it ``SCAN``s the keyspace for
``<prefix>job:{*`` hashes (``COUNT 1000``, ``TYPE hash``) and reads the fields it shows with
one script call per batch: O(keys in the database) server work and about one round trip per
1000 keys, whatever ``--limit``. Follow-up: a sorted set of job ids by queued time, written by
the submit/begin scripts, would make it O(limit).
"""

from __future__ import annotations

import argparse
import json
import re
import time
from collections.abc import Callable
from typing import Any

from vscand.queue.client import RedisClient, RedisReplyError
from vscand.queue.keys import GROUP, Keys

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2

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
_HMGET_MANY = """
local out = {}
for i = 1, #KEYS do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    out[i] = redis.call('HMGET', KEYS[i], unpack(ARGV))
  else
    out[i] = false
  end
end
return out
"""

_ENTRY_ID = re.compile(r"^[0-9]{1,20}(-[0-9]{1,20})?$")
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


class QueueViewError(Exception):
    """One line on stderr, exit ``code`` (the fleet commands' ``FleetError`` contract)."""

    def __init__(self, message: str, code: int = EXIT_USAGE) -> None:
        super().__init__(message)
        self.code = code


def _text(value: Any) -> str:
    if isinstance(value, bytes):
        return value.decode("utf-8", "backslashreplace")
    return "" if value is None else str(value)


def _shown(value: Any, width: int = 0) -> str:
    """*value* safe for a terminal: one line, control characters escaped, at most *width*."""
    text = _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", _text(value))
    if width and len(text) > width:
        text = text[: width - 3] + "..."
    return text


def _pairs(reply: Any) -> dict[str, Any]:
    items = list(reply or [])
    return {_text(items[i]): items[i + 1] for i in range(0, len(items) - 1, 2)}


def _table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    table = [header, *rows]
    widths = [max(len(r[i]) for r in table) for i in range(len(header))]
    for row in table:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)).rstrip())


def _keys(args: argparse.Namespace) -> Keys:
    return Keys(args.key_prefix or "vscand:")


def add_queue_commands(sub: Any, common: Callable[[argparse.ArgumentParser], None]) -> None:
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
    common(jobs)

    queue = sub.add_parser("queue", help="a jobs stream: depth, pending, consumers, lag, dead")
    queue.add_argument("--queue", default=None, metavar="Q", help="default: default")
    queue.add_argument("--json", action="store_true")
    common(queue)

    dead = sub.add_parser("dead", help="the dead-letter stream: list, show, retry, drop")
    actions = dead.add_subparsers(dest="dead_command", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="newest dead letters first")
    listing.add_argument("--limit", type=int, default=20, metavar="N", help="at most N [20]")
    listing.add_argument("--json", action="store_true", help="JSON lines")
    common(listing)
    for action, text in (
        ("show", "every field of one dead letter"),
        ("retry", "re-submit its job (whole, valid, under a free id) as a new stream entry"),
        ("drop", "delete one dead letter (XDEL)"),
    ):
        parser = actions.add_parser(action, help=text)
        parser.add_argument("entry", metavar="ENTRY", help="the dead letter's stream entry id")
        if action == "show":
            parser.add_argument("--json", action="store_true")
        common(parser)


# -- vscan jobs ---------------------------------------------------------------------------


def _job_row(key: str, prefix: str, values: list[Any]) -> dict[str, Any]:
    row: dict[str, Any] = {
        name: (None if value is None else _text(value))
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
    prefix = keys.job_prefix
    pattern = prefix.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
    pattern = pattern.replace("[", "\\[") + "{*"
    rows: list[dict[str, Any]] = []
    cursor = "0"
    while True:
        reply = await client.execute(
            "SCAN", cursor, "MATCH", pattern, "COUNT", 1000, "TYPE", "hash"
        )
        cursor = _text(reply[0])
        # a job's hash ends with its tag's '}'; a task's with '}/t<N>'. The names go back to
        # Redis as they came (bytes): a name that is not UTF-8 still names its key
        wanted = [
            k for k in reply[1] or [] if bytes(k).endswith(b"}") or (tasks and b"}/t" in bytes(k))
        ]
        if wanted:
            values = await client.execute("EVAL", _HMGET_MANY, len(wanted), *wanted, *JOB_FIELDS)
            rows.extend(
                _job_row(_text(k), prefix, list(v))
                for k, v in zip(wanted, values, strict=False)
                if v is not None
            )
        if cursor == "0":
            return rows


async def cmd_jobs(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    if args.limit < 1:
        raise QueueViewError("--limit: give a number of jobs, 1 or more")
    rows = await _scan_jobs(client, _keys(args), args.tasks)
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
                _shown(cell, 64)
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
    _table(header, table)
    return EXIT_OK


# -- vscan queue --------------------------------------------------------------------------


async def _xinfo(client: RedisClient, *args: Any) -> list[dict[str, Any]]:
    try:
        reply = await client.execute("XINFO", *args)
    except RedisReplyError as exc:
        if "no such key" in str(exc).lower():
            return []
        raise
    return [_pairs(item) for item in reply or []]


def _int(value: Any) -> int | None:
    text = _text(value)
    return int(text) if text.lstrip("-").isdigit() else None


def _entry_ms(entry_id: str) -> int | None:
    return _int(entry_id.partition("-")[0])


async def _count_after(client: RedisClient, stream: str, last: str, cap: int) -> int:
    """Entries of *stream* after *last* (at most *cap*): the lag where XINFO has none."""
    start, counted = ("(" + last) if last and last != "0-0" else "-", 0
    while counted < cap:
        batch = await client.execute("XRANGE", stream, start, "+", "COUNT", 1000)
        if not batch:
            break
        counted += len(batch)
        start = "(" + _text(batch[-1][0])
        if len(batch) < 1000:
            break
    return min(counted, cap)


async def queue_report(client: RedisClient, keys: Keys, queue: str | None) -> dict[str, Any]:
    stream = keys.jobs_for(queue)
    now_ms = int(time.time() * 1000)
    report: dict[str, Any] = {
        "queue": queue or "default",
        "stream": stream,
        "length": int(await client.execute("XLEN", stream) or 0),
        "group": None,
        "pending": 0,
        "lag": None,
        "lag_source": None,
        "consumers": [],
        "oldest_pending": None,
        "oldest_pending_age_seconds": None,
        "oldest_pending_idle_seconds": None,
        "dead_length": int(await client.execute("XLEN", keys.dead) or 0),
    }
    groups = [g for g in await _xinfo(client, "GROUPS", stream) if _text(g.get("name")) == GROUP]
    if not groups:
        return report
    group = groups[0]
    report["group"] = GROUP
    report["pending"] = _int(group.get("pending")) or 0
    last = _text(group.get("last-delivered-id"))
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
                "name": _text(consumer.get("name")),
                "pending": _int(consumer.get("pending")) or 0,
                "idle_seconds": None if idle is None else idle / 1000,
            }
        )
    if report["pending"]:
        oldest = await client.execute("XPENDING", stream, GROUP, "-", "+", 1)
        if oldest:
            entry, _consumer, idle, _count = oldest[0]
            entry_id = _text(entry)
            added = _entry_ms(entry_id)
            report["oldest_pending"] = entry_id
            if added is not None:
                report["oldest_pending_age_seconds"] = max(0, now_ms - added) / 1000
            report["oldest_pending_idle_seconds"] = int(idle) / 1000
    return report


async def cmd_queue(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    report = await queue_report(client, _keys(args), args.queue)
    if args.json:
        print(json.dumps(report, sort_keys=True))
        return EXIT_OK

    def secs(value: float | None) -> str:
        return "-" if value is None else f"{value:.1f}s"

    print(f"queue: {report['queue']} ({_shown(report['stream'])})")
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
        _table(
            ("CONSUMER", "PENDING", "IDLE"),
            [
                (_shown(c["name"], 64), str(c["pending"]), secs(c["idle_seconds"]))
                for c in report["consumers"]
            ],
        )
    return EXIT_OK


# -- vscan dead list|show|retry|drop ------------------------------------------------------


def _letter(entry_id: Any, fields: Any) -> dict[str, Any]:
    values = {name: _text(value) for name, value in _pairs(fields).items()}
    letter: dict[str, Any] = {"dead_entry": _text(entry_id), **values}
    job_id: str | None = None
    try:
        doc = json.loads(values.get("job", ""))
        if isinstance(doc, dict) and isinstance(doc.get("id"), str):
            job_id = doc["id"]
    except ValueError:
        pass
    letter["job_id"] = job_id
    letter["cut"] = "job_bytes" in values
    return letter


def _entry_arg(entry: str) -> str:
    if not _ENTRY_ID.match(entry):
        raise QueueViewError(f"{entry!r} is not a stream entry id (write 1700000000000-0)")
    return entry


async def _dead_letter(client: RedisClient, keys: Keys, entry: str) -> tuple[dict[str, Any], bytes]:
    """The dead letter *entry*, and its job's stored bytes as they are."""
    reply = await client.execute("XRANGE", keys.dead, _entry_arg(entry), entry)
    if not reply:
        raise QueueViewError(f"no dead letter {entry} in {keys.dead}", EXIT_FAILED)
    entry_id, fields = reply[0]
    raw = _pairs(fields).get("job")
    return _letter(entry_id, fields), raw if isinstance(raw, bytes) else _text(raw).encode()


async def cmd_dead(reactor: Any, client: RedisClient, args: argparse.Namespace) -> int:
    keys = _keys(args)
    action = args.dead_command
    if action == "list":
        if args.limit < 1:
            raise QueueViewError("--limit: give a number of dead letters, 1 or more")
        reply = await client.execute("XREVRANGE", keys.dead, "+", "-", "COUNT", args.limit)
        letters = [_letter(e, f) for e, f in reply or []]
        if args.json:
            for letter in letters:
                print(json.dumps(letter, sort_keys=True))
            return EXIT_OK
        _table(
            ("ENTRY", "AT", "STREAM", "JOB", "DELIVERIES", "REASON"),
            [
                (
                    letter["dead_entry"],
                    _shown(letter.get("at") or "-", 32),
                    _shown(letter.get("stream") or "-", 40),
                    _shown(letter["job_id"] or "-", 40) + (" (cut)" if letter["cut"] else ""),
                    _shown(letter.get("deliveries") or "-", 8),
                    _shown(letter.get("reason") or "-", 100),
                )
                for letter in letters
            ],
        )
        return EXIT_OK
    letter, raw = await _dead_letter(client, keys, args.entry)
    if action == "show":
        if args.json:
            print(json.dumps(letter, sort_keys=True))
        else:
            for name, value in letter.items():
                print(f"{name}: {_shown(value)}")
        return EXIT_OK
    if action == "drop":
        if not int(await client.execute("XDEL", keys.dead, letter["dead_entry"])):
            raise QueueViewError(f"no dead letter {args.entry} in {keys.dead}", EXIT_FAILED)
        print(f"dead letter {letter['dead_entry']} dropped")
        return EXIT_OK
    return await _retry(client, keys, letter, raw)


async def _retry(client: RedisClient, keys: Keys, letter: dict[str, Any], raw: bytes) -> int:
    from vscand.fleet import ANY_ADDRESS  # noqa: PLC0415 (fleet imports this module)
    from vscand.jobs.parse import parse_job  # noqa: PLC0415
    from vscand.jobs.schema import JobError, JobLimits  # noqa: PLC0415
    from vscand.queue.results import ResultWriter  # noqa: PLC0415

    entry = letter["dead_entry"]
    if letter["cut"]:
        raise QueueViewError(
            f"dead letter {entry} holds only the first {len(letter.get('job', ''))} of "
            f"{_shown(letter['job_bytes'])} bytes of its job: not re-submitted",
            EXIT_FAILED,
        )
    try:
        job = parse_job(raw, limits=JobLimits(), policy=ANY_ADDRESS, now=time.time())
    except JobError as exc:
        raise QueueViewError(
            f"dead letter {entry}: its job is not valid ({_shown(exc, 200)}): not re-submitted",
            EXIT_FAILED,
        ) from None
    recorded = letter.get("stream") or ""
    stream = keys.jobs_for(job.queue)
    if recorded == keys.jobs or recorded.startswith(keys.jobs + ":"):
        stream = recorded
    queued, value = await ResultWriter(client, keys, worker="vscan-dead-retry").submit(job, stream)
    if not queued:
        raise QueueViewError(
            f"dead letter {entry}: job id {job.id!r} is taken (status {value or '?'}): "
            "not re-submitted",
            EXIT_FAILED,
        )
    print(f"job {job.id} re-submitted from dead letter {entry} (entry {value} on {stream})")
    return EXIT_OK


HANDLERS = {"jobs": cmd_jobs, "queue": cmd_queue, "dead": cmd_dead}
