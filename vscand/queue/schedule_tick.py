"""The fleet's scheduler: each daemon's tick, which enqueues due schedule runs once.

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

Pure code: nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

from twisted.logger import Logger

from vscand.queue.commands import RedisCommands, integer, text
from vscand.queue.keys import Keys
from vscand.queue.schedules import (
    Schedule,
    ScheduleError,
    iso_time,
    last_key,
    next_key,
    state_key,
)

log = Logger()

#: due schedules handled per tick call (the rest are due at the next call)
TICK_LIMIT = 100
IN_PROGRESS = ("queued", "running")

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
            iso_time(now),
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
