"""Recurring scan jobs: the schedule record and ``vscan schedule add|list|rm|pause|resume``.

Storage (prefix ``vscand:``):

* ``vscand:schedules`` — hash ``NAME`` → the schedule's JSON record (:class:`Schedule`);
* ``vscand:schedules:next`` — sorted set ``NAME`` scored by its next run (unix seconds);
  a paused schedule is not in it;
* ``vscand:schedules:last`` — hash ``NAME`` → the id of its last enqueued job;
* ``vscand:schedule:{NAME}`` — hash of counters: ``runs``, ``skipped``, ``last_job``,
  ``last_tick``, ``last_run_at``, ``last_skipped_tick``, ``last_skipped_at``.

The fleet's scheduler, which enqueues the runs, is :mod:`vscand.queue.schedule_tick`.

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

from vscand.jobs.schema import JOB_FIELDS
from vscand.queue.commands import RedisCommands, integer, text
from vscand.queue.cron import CronError, CronExpr
from vscand.queue.keys import Keys

NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: the job fields a schedule's template may set (the job format less id and signatures)
#: what a schedule's job template may hold: a job's fields but its identity and signature
TEMPLATE_FIELDS = JOB_FIELDS - {"id", "not_after", "sig"}
MIN_EVERY_S = 1
MAX_EVERY_S = 366 * 24 * 3600


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


def iso_time(when: float) -> str:
    """Unix seconds as ISO 8601 UTC."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


# ------------------------------------------------------------------------------ scripts

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


async def redis_time(client: RedisCommands) -> float:
    """Redis's clock (``TIME``), unix seconds."""
    reply = await client.execute("TIME")
    return int(reply[0]) + int(reply[1]) / 1e6


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
                "next_run": None if score is None else iso_time(float(score)),
                "last_job": last_job,
                "last_status": last_status,
                "last_run_at": state.get("last_run_at") or None,
                "runs": int(state.get("runs") or 0),
                "skipped": int(state.get("skipped") or 0),
                "job": dict(schedule.job),
                "created_at": iso_time(schedule.created_at),
            }
        )
    return out
