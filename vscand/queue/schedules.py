"""Recurring scan jobs: ``vscan schedule add|list|rm|pause|resume`` and the fleet's scheduler.

Storage (prefix ``vscand:``):

* ``vscand:schedules`` — hash ``NAME`` → the schedule's JSON record (:class:`Schedule`);
* ``vscand:schedules:next`` — sorted set ``NAME`` scored by its next run (unix seconds);
  a paused schedule is not in it;
* ``vscand:schedules:last`` — hash ``NAME`` → the id of its last enqueued job;
* ``vscand:schedule:{NAME}`` — hash of counters: ``runs``, ``skipped``, ``last_job``,
  ``last_tick``, ``last_run_at``, ``last_skipped_tick``, ``last_skipped_at``.

Every daemon runs :func:`tick` every second. It costs one EVAL when nothing is due
(:data:`_DUE`: Redis's clock, the due names, their records and last jobs). For each due
schedule one more EVAL (:data:`_CLAIM`) claims the tick: it acts only if the schedule's
score, record and last job are still what this daemon read, and moves the score to the
next run first — so whichever daemon comes first enqueues the run, exactly once, and the
others find the score moved and do nothing. The run is the job ``NAME:<tick>`` (*tick* is
the scheduled time, unix seconds), XADDed to its queue's stream with its status hash set
to ``queued`` and ``schedule=NAME`` in the same script. Then:

* the next run is the first one *strictly after now*: after an outage the missed ticks
  are not replayed, the schedule runs once (tagged with the oldest missed tick) and
  resumes its rhythm;
* if the previous run's job is still ``queued`` or ``running``, the tick is skipped
  (counted in ``skipped``): a run is never started while the last one is in progress,
  and a queue nobody consumes does not pile up runs;
* times come from Redis (``TIME``), so the daemons' clocks need not agree.

Interval schedules run on multiples of their interval since the epoch (``--every 3600``
runs at the top of each hour, UTC); cron schedules use :mod:`vscand.queue.cron` (UTC).

Pure code: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

import json
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.logger import Logger

from vscand.jobs.schema import JOB_FIELDS
from vscand.queue.commands import RedisCommands, integer, text
from vscand.queue.cron import CronError, CronExpr
from vscand.queue.keys import Keys

log = Logger()

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: the job fields a schedule's template may set (the job format less id and signatures)
#: what a schedule's job template may hold: a job's fields but its identity and signature
TEMPLATE_FIELDS = JOB_FIELDS - {"id", "not_after", "sig"}
MIN_EVERY_S = 1
MAX_EVERY_S = 366 * 24 * 3600
#: due schedules handled per tick call (the rest are due at the next call)
TICK_LIMIT = 100
IN_PROGRESS = ("queued", "running")


class ScheduleError(ValueError):
    """A bad schedule definition, or an operation on one that does not exist."""


def next_key(keys: Keys) -> str:
    return f"{keys.schedules}:next"


def last_key(keys: Keys) -> str:
    return f"{keys.schedules}:last"


def state_key(keys: Keys, name: str) -> str:
    return f"{keys.prefix}schedule:{name}"


def check_name(name: str) -> str:
    if not NAME.fullmatch(name):
        raise ScheduleError(
            f"schedule name {name[:80]!r} must be 1-64 characters of A-Z a-z 0-9 . _ -"
        )
    return name


@dataclass(frozen=True)
class Schedule:
    """One recurring job: *every* seconds or a *cron* expression, a job template, a queue."""

    name: str
    job: Mapping[str, Any]
    every: int | None = None
    cron: str | None = None
    queue: str | None = None
    paused: bool = False
    created_at: float = field(default_factory=time.time)

    def __post_init__(self) -> None:
        check_name(self.name)
        if (self.every is None) == (self.cron is None):
            raise ScheduleError("a schedule needs exactly one of an interval or a cron expression")
        if self.every is not None and (
            isinstance(self.every, bool)
            or not isinstance(self.every, int)
            or not MIN_EVERY_S <= self.every <= MAX_EVERY_S
        ):
            raise ScheduleError(
                f"interval {self.every!r} must be whole seconds, {MIN_EVERY_S}-{MAX_EVERY_S}"
            )
        if self.cron is not None:
            try:
                CronExpr.parse(self.cron)
            except CronError as exc:
                raise ScheduleError(f"cron: {exc}") from None
        unknown = sorted(set(self.job) - TEMPLATE_FIELDS)
        if unknown:
            raise ScheduleError(f"job template: field {unknown[0]!r} is not allowed")

    @property
    def rule(self) -> str:
        """``every 60s`` or ``cron */5 * * * *``, for people."""
        return f"every {self.every}s" if self.every is not None else f"cron {self.cron}"

    def next_after(self, now: float) -> int:
        """The first run strictly after unix time *now*."""
        if self.every is not None:
            return (int(now // self.every) + 1) * self.every
        assert self.cron is not None
        return _cron(self.cron).next_after(now)

    def job_for(self, tick: int) -> dict[str, Any]:
        """The job of the run at *tick*: the template, id ``NAME:<tick>``, tag ``schedule``."""
        job: dict[str, Any] = {"id": f"{self.name}:{tick}", **self.job}
        tags = dict(job.get("tags") or {})
        tags.setdefault("schedule", self.name)
        job["tags"] = tags
        if self.queue and "queue" not in job:
            job["queue"] = self.queue
        return job

    def to_json(self) -> str:
        record = {
            "name": self.name,
            "every": self.every,
            "cron": self.cron,
            "job": dict(self.job),
            "queue": self.queue,
            "paused": self.paused,
            "created_at": self.created_at,
        }
        return json.dumps(record, sort_keys=True, separators=(",", ":"))

    @classmethod
    def from_json(cls, raw: str | bytes) -> Schedule:
        try:
            obj = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise ScheduleError(f"schedule record is not JSON: {exc}") from None
        if not isinstance(obj, dict):
            raise ScheduleError("schedule record is not a JSON object")
        try:
            return cls(
                name=str(obj["name"]),
                job=dict(obj.get("job") or {}),
                every=obj.get("every"),
                cron=obj.get("cron"),
                queue=obj.get("queue"),
                paused=bool(obj.get("paused", False)),
                created_at=float(obj.get("created_at") or 0.0),
            )
        except (KeyError, TypeError) as exc:
            raise ScheduleError(f"schedule record: {exc}") from None

    def with_paused(self, paused: bool) -> Schedule:
        return Schedule(
            name=self.name,
            job=self.job,
            every=self.every,
            cron=self.cron,
            queue=self.queue,
            paused=paused,
            created_at=self.created_at,
        )


_CRON_CACHE: dict[str, CronExpr] = {}


def _cron(expr: str) -> CronExpr:
    parsed = _CRON_CACHE.get(expr)
    if parsed is None:
        if len(_CRON_CACHE) > 1024:
            _CRON_CACHE.clear()
        parsed = _CRON_CACHE[expr] = CronExpr.parse(expr)
    return parsed


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


# ------------------------------------------------------------------------------ scripts

# KEYS: 1 next zset, 2 schedules hash, 3 last-job hash
# ARGV: 1 now (unix seconds; '' = Redis's clock), 2 limit
# Returns {now, name1, score1, record1, last1, name2, ...} ('' for a missing record or job).
_DUE = """
local now = tonumber(ARGV[1])
if not now then now = tonumber(redis.call('TIME')[1]) end
local due = redis.call('ZRANGEBYSCORE', KEYS[1], '-inf', now, 'WITHSCORES', 'LIMIT', 0, ARGV[2])
local out = {tostring(now)}
for i = 1, #due, 2 do
  out[#out + 1] = due[i]
  out[#out + 1] = due[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[2], due[i]) or ''
  out[#out + 1] = redis.call('HGET', KEYS[3], due[i]) or ''
end
return out
"""

# KEYS: 1 schedules hash, 2 next zset, 3 last-job hash, 4 schedule state hash,
#       5 previous job hash (any key when there is none), 6 new job hash, 7 jobs stream
# ARGV: 1 name, 2 record as read, 3 tick (the score as read), 4 next run, 5 job JSON,
#       6 job id, 7 now (ISO 8601), 8 queue ('' = default), 9 last job id as read ('' = none)
# The claim: nothing happens unless the score, the record and the last job are still what
# the caller read; the score moves to the next run before anything else, so one caller
# per tick gets past the first check, fleet-wide.
_CLAIM = """
local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
if not score or tonumber(score) ~= tonumber(ARGV[3]) then return {'stale'} end
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then
  redis.call('ZREM', KEYS[2], ARGV[1])
  return {'gone'}
end
if record ~= ARGV[2] then return {'stale'} end
local last = redis.call('HGET', KEYS[3], ARGV[1]) or ''
if last ~= ARGV[9] then return {'stale'} end
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
if last ~= '' then
  local status = redis.call('HGET', KEYS[5], 'status')
  if status == 'queued' or status == 'running' then
    redis.call('HINCRBY', KEYS[4], 'skipped', 1)
    redis.call('HSET', KEYS[4], 'last_skipped_tick', ARGV[3], 'last_skipped_at', ARGV[7])
    return {'skipped', last}
  end
end
if redis.call('EXISTS', KEYS[6]) == 1 then return {'exists', ARGV[6]} end
local entry = redis.call('XADD', KEYS[7], '*', 'job', ARGV[5])
redis.call('HSET', KEYS[6], 'id', ARGV[6], 'status', 'queued', 'entry', entry,
           'queued_at', ARGV[7], 'updated_at', ARGV[7], 'schedule', ARGV[1])
if ARGV[8] ~= '' then redis.call('HSET', KEYS[6], 'queue', ARGV[8]) end
redis.call('HSET', KEYS[3], ARGV[1], ARGV[6])
redis.call('HINCRBY', KEYS[4], 'runs', 1)
redis.call('HSET', KEYS[4], 'last_job', ARGV[6], 'last_tick', ARGV[3], 'last_run_at', ARGV[7])
return {'enqueued', ARGV[6], entry}
"""

# KEYS: 1 schedules hash, 2 next zset; ARGV: 1 name, 2 record as read ('' = none)
# Takes a schedule that cannot run (no record, or one that does not parse) off the due set,
# if the record is still what the caller read: it would be due at every tick otherwise.
_DROP = """
if (redis.call('HGET', KEYS[1], ARGV[1]) or '') ~= ARGV[2] then return 0 end
return redis.call('ZREM', KEYS[2], ARGV[1])
"""

# KEYS: 1 schedules hash, 2 next zset; ARGV: 1 name, 2 record, 3 next run ('' = paused),
# 4 replace ('1' to overwrite). Returns 1, or 0 when the name is taken and not replacing.
_PUT = """
if ARGV[4] ~= '1' and redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
if ARGV[3] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[3], ARGV[1])
end
return 1
"""

# KEYS: 1 schedules hash, 2 next zset; ARGV: 1 name, 2 record as read, 3 new record,
# 4 next run ('' = paused). Returns 1, 0 if the record changed meanwhile, -1 if gone.
_SWAP = """
local record = redis.call('HGET', KEYS[1], ARGV[1])
if not record then return -1 end
if record ~= ARGV[2] then return 0 end
redis.call('HSET', KEYS[1], ARGV[1], ARGV[3])
if ARGV[4] == '' then
  redis.call('ZREM', KEYS[2], ARGV[1])
else
  redis.call('ZADD', KEYS[2], ARGV[4], ARGV[1])
end
return 1
"""

# KEYS: 1 schedules hash, 2 next zset, 3 last-job hash, 4 schedule state hash; ARGV: name
_REMOVE = """
local removed = redis.call('HDEL', KEYS[1], ARGV[1])
redis.call('ZREM', KEYS[2], ARGV[1])
redis.call('HDEL', KEYS[3], ARGV[1])
redis.call('DEL', KEYS[4])
return removed
"""


# ------------------------------------------------------------------------------ the tick


@dataclass(frozen=True)
class Due:
    """A due schedule as :func:`read_due` saw it."""

    name: str
    tick: int
    record: str
    last_job: str


@dataclass(frozen=True)
class Outcome:
    """What one claim did: ``enqueued``, ``skipped`` (last run in progress), ``stale``
    (another daemon got there first), ``gone``, ``exists``, ``paused`` or ``invalid``."""

    name: str
    tick: int
    result: str
    job_id: str | None = None
    entry: str | None = None


async def redis_time(client: RedisCommands) -> float:
    """Redis's clock (``TIME``), unix seconds."""
    reply = await client.execute("TIME")
    return int(reply[0]) + int(reply[1]) / 1e6


async def read_due(
    client: RedisCommands, keys: Keys, *, now: float | None = None, limit: int = TICK_LIMIT
) -> tuple[int, list[Due]]:
    """Redis's time (or *now*) and the schedules due by then (one EVAL)."""
    reply = await client.eval(
        _DUE,
        [next_key(keys), keys.schedules, last_key(keys)],
        ["" if now is None else str(int(now)), limit],
    )
    items = list(reply or [])
    current = int(float(text(items[0]) or 0))
    due = [
        Due(
            name=text(items[i]) or "",
            tick=int(float(text(items[i + 1]) or 0)),
            record=text(items[i + 2]) or "",
            last_job=text(items[i + 3]) or "",
        )
        for i in range(1, len(items) - 3, 4)
    ]
    return current, due


async def claim(client: RedisCommands, keys: Keys, due: Due, now: int) -> Outcome:
    """Enqueue *due*'s run unless another daemon did, or its last run is in progress."""
    try:
        if not due.record:
            raise ScheduleError("no record (removed)")
        schedule = Schedule.from_json(due.record)
    except ScheduleError as exc:
        dropped = await client.eval(_DROP, [keys.schedules, next_key(keys)], [due.name, due.record])
        if due.record and integer(dropped):
            log.error(
                "schedule {name}: {error}; taken off the run list (rm it or add it again)",
                name=due.name,
                error=str(exc),
            )
        return Outcome(due.name, due.tick, "gone" if not due.record else "invalid")
    if schedule.paused:
        return Outcome(due.name, due.tick, "paused")
    job = schedule.job_for(due.tick)
    job_id = str(job["id"])
    queue = job.get("queue") or schedule.queue or ""
    next_run = schedule.next_after(max(now, due.tick))
    reply = await client.eval(
        _CLAIM,
        [
            keys.schedules,
            next_key(keys),
            last_key(keys),
            state_key(keys, due.name),
            keys.job(due.last_job or job_id),
            keys.job(job_id),
            keys.jobs_for(queue or None),
        ],
        [
            due.name,
            due.record,
            due.tick,
            next_run,
            json.dumps(job, separators=(",", ":")),
            job_id,
            _iso(now),
            queue,
            due.last_job,
        ],
    )
    parts = [text(part) or "" for part in reply or []]
    result = parts[0] if parts else "stale"
    if result == "enqueued":
        return Outcome(due.name, due.tick, result, job_id=parts[1], entry=parts[2])
    if result == "skipped":
        return Outcome(due.name, due.tick, result, job_id=parts[1])
    return Outcome(due.name, due.tick, result)


async def tick(
    client: RedisCommands, keys: Keys, *, now: float | None = None, limit: int = TICK_LIMIT
) -> list[Outcome]:
    """Run every due schedule once (what each daemon calls every second)."""
    current, due = await read_due(client, keys, now=now, limit=limit)
    outcomes = []
    for item in due:
        outcome = await claim(client, keys, item, current)
        outcomes.append(outcome)
        if outcome.result == "enqueued":
            log.info("schedule {name}: enqueued job {job}", name=outcome.name, job=outcome.job_id)
        elif outcome.result == "skipped":
            log.info(
                "schedule {name}: tick {tick} skipped, job {job} is still in progress",
                name=outcome.name,
                tick=outcome.tick,
                job=outcome.job_id,
            )
    return outcomes


# ------------------------------------------------------------------------------ management


async def put(
    client: RedisCommands,
    keys: Keys,
    schedule: Schedule,
    *,
    replace: bool = False,
    now: float | None = None,
) -> int | None:
    """Store *schedule*; its first run (None when paused). :class:`ScheduleError` if the
    name is taken and not *replace*."""
    current = await redis_time(client) if now is None else now
    first = None if schedule.paused else schedule.next_after(current)
    stored = await client.eval(
        _PUT,
        [keys.schedules, next_key(keys)],
        [schedule.name, schedule.to_json(), "" if first is None else first, "1" if replace else ""],
    )
    if integer(stored) != 1:
        raise ScheduleError(f"schedule {schedule.name!r} exists (rm it first, or --replace)")
    return first


async def get(client: RedisCommands, keys: Keys, name: str) -> tuple[Schedule, str]:
    """A schedule and its stored record; :class:`ScheduleError` if there is none."""
    raw = text(await client.execute("HGET", keys.schedules, check_name(name)))
    if raw is None:
        raise ScheduleError(f"no schedule {name!r}")
    return Schedule.from_json(raw), raw


async def set_paused(
    client: RedisCommands, keys: Keys, name: str, paused: bool, *, now: float | None = None
) -> int | None:
    """Pause or resume; the next run (None when paused). Resuming does not replay the
    ticks missed while paused: the next run is the first one after now."""
    for _ in range(10):
        schedule, raw = await get(client, keys, name)
        updated = schedule.with_paused(paused)
        current = await redis_time(client) if now is None else now
        next_run = None if paused else updated.next_after(current)
        swapped = integer(
            await client.eval(
                _SWAP,
                [keys.schedules, next_key(keys)],
                [name, raw, updated.to_json(), "" if next_run is None else next_run],
            )
        )
        if swapped == 1:
            return next_run
        if swapped == -1:
            raise ScheduleError(f"no schedule {name!r}")
    raise ScheduleError(f"schedule {name!r} keeps changing; try again")


async def remove(client: RedisCommands, keys: Keys, name: str) -> bool:
    """Delete a schedule and its state (its past jobs stay); whether it existed."""
    removed = await client.eval(
        _REMOVE,
        [keys.schedules, next_key(keys), last_key(keys), state_key(keys, check_name(name))],
        [name],
    )
    return integer(removed) == 1


def _pairs(reply: Sequence[Any] | None) -> dict[str, str]:
    items = list(reply or [])
    return {text(items[i]) or "": text(items[i + 1]) or "" for i in range(0, len(items), 2)}


async def describe(client: RedisCommands, keys: Keys) -> list[dict[str, Any]]:
    """Every schedule with its next run, counters and last job's status (``vscan schedule
    list``), sorted by name."""
    records = _pairs(await client.execute("HGETALL", keys.schedules))
    scores = _pairs(await client.execute("ZRANGE", next_key(keys), 0, -1, "WITHSCORES"))
    out: list[dict[str, Any]] = []
    for name in sorted(records):
        try:
            schedule = Schedule.from_json(records[name])
        except ScheduleError as exc:
            out.append({"name": name, "error": str(exc)})
            continue
        state = _pairs(await client.execute("HGETALL", state_key(keys, name)))
        last_job = state.get("last_job") or None
        last_status = None
        if last_job:
            last_status = text(await client.execute("HGET", keys.job(last_job), "status"))
        score = scores.get(name)
        out.append(
            {
                "name": name,
                "every": schedule.every,
                "cron": schedule.cron,
                "queue": schedule.queue or "default",
                "paused": schedule.paused,
                "next_run": None if score is None else _iso(float(score)),
                "last_job": last_job,
                "last_status": last_status,
                "last_run_at": state.get("last_run_at") or None,
                "runs": int(state.get("runs") or 0),
                "skipped": int(state.get("skipped") or 0),
                "job": dict(schedule.job),
                "created_at": _iso(schedule.created_at),
            }
        )
    return out
