"""Job status and port results in Redis: idempotent, fenced by attempt.

Every change a worker makes to a job is one Lua script, so it is atomic, and
every script but :meth:`ResultWriter.reject` is *fenced*: it runs only if the
job hash's ``attempt`` is still the caller's. :meth:`ResultWriter.begin` takes a
job for a new attempt and, on a redelivery, deletes the previous attempt's
partial ``job:{id}:results`` stream, so a job has exactly one result set even
when a worker died half-way; a worker that lost the job (its entry was claimed
by another) gets ``False`` from :meth:`~ResultWriter.write` and stops.

A redelivery after the results and final status were written but before XACK
finds the status terminal: :meth:`~ResultWriter.begin` answers ``"done"`` and the
caller only acknowledges (reliability.md §1.9, §5 row 5).

A job that ends (:meth:`~ResultWriter.finish`, :meth:`~ResultWriter.reject`) keeps its
hash and results for *retention* seconds (``EXPIRE``; 0 keeps them); a sharded job and all
its tasks expire together when the job's last task ends.

Job hash fields (``vscand:job:{ID}``, literal braces: :mod:`vscand.queue.keys`):
``status`` (queued/running/done/failed/cancelled), ``id``, ``entry`` (stream entry id),
``worker``, ``attempt``, ``queued_at``/``started_at``/``updated_at``/``finished_at``
(ISO 8601 UTC), ``ports_done``, ``ports_total`` (when known), ``state:<state>`` counts,
``error``, ``cancel`` (``1`` when a cancel was requested).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

from vscand.output.jsonl import ordered_result
from vscand.queue.changes import normalised_service, tracks_inventory
from vscand.queue.commands import RedisCommands, integer, text
from vscand.queue.jobs import Job
from vscand.queue.keys import LUA, Keys
from vscand.queue.lua import CANCEL as _CANCEL
from vscand.queue.lua import SUBMIT as _SUBMIT

BeginState = Literal["run", "cancelled", "done", "orphan", "duplicate"]
SplitState = Literal["split", "cancelled", "lost"]
FINAL_STATUSES = ("done", "failed", "cancelled")
#: seconds an ended job's hash and results are kept (daemon key ``job_retention``): 7 days
DEFAULT_RETENTION = 7 * 24 * 3600


# Lua shared by the scripts that can end a job. A task's hash has a ``parent`` field (set
# only by _SPLIT); the parent hash aggregates: ports_done and state:<state> follow every
# write (begin subtracts an abandoned attempt's share), tasks_finished and tasks:<status>
# count ended tasks, and the last task to end sets the parent's final status (failed if any
# task failed, else cancelled if any was cancelled, else done). PREFIX is the key prefix
# (an ARGV of each script); keys are built by keys.LUA's functions only.
# Retention (seconds, 0 = keep forever): a job that ends expires with its results (and any
# written set) after it; a task waits for its parent, and when the parent ends the parent
# and every task expire together, so a parent never outlives its results.
_TASK_LIB = (
    LUA
    + """
local function parent_key(hash, prefix)
  local parent = redis.call('HGET', hash, 'parent')
  if parent then return job_key(prefix, parent) end
  return nil
end
local function expire_job(jk, retention)
  local seconds = tonumber(retention) or 0
  if seconds <= 0 then return end
  redis.call('EXPIRE', jk, seconds)
  redis.call('EXPIRE', results_key(jk), seconds)
  redis.call('EXPIRE', written_key(jk), seconds)
end
local function job_ended(hash, prefix, status, err, now, retention)
  local pk = parent_key(hash, prefix)
  if not pk then
    expire_job(hash, retention)
    return
  end
  local finished = redis.call('HINCRBY', pk, 'tasks_finished', 1)
  redis.call('HINCRBY', pk, 'tasks:' .. status, 1)
  redis.call('HSET', pk, 'updated_at', now)
  if err ~= '' and redis.call('HEXISTS', pk, 'error') == 0 then
    redis.call('HSET', pk, 'error', 'task ' .. redis.call('HGET', hash, 'id') .. ': ' .. err)
  end
  local total = tonumber(redis.call('HGET', pk, 'tasks_total') or '0')
  if finished < total then return end
  local final = 'done'
  if tonumber(redis.call('HGET', pk, 'tasks:failed') or '0') > 0 then final = 'failed'
  elseif tonumber(redis.call('HGET', pk, 'tasks:cancelled') or '0') > 0 then final = 'cancelled'
  end
  if final == 'done' then redis.call('HDEL', pk, 'error') end
  redis.call('HSET', pk, 'status', final, 'finished_at', now)
  expire_job(pk, retention)
  for i = 0, total - 1 do expire_job(task_key(pk, i), retention) end
end
"""
)

# KEYS: job hash, job results stream, job written set
# ARGV: entry id, attempt, worker, now, job id, prefix, claimed parent ('' for none)
_BEGIN = """
-- the hash belongs to the stream entry that made it (its submitter, a split, or its own
-- first start): another entry with the same id is a duplicate and changes nothing
local owner = redis.call('HGET', KEYS[1], 'entry')
if owner and owner ~= ARGV[1] then return 'duplicate' end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'failed' or status == 'cancelled' then return 'done' end
-- a sharded job's tasks were queued: nothing left to do with this entry but XACK
if redis.call('HGET', KEYS[1], 'sharded') == '1' then return 'done' end
if ARGV[7] ~= '' and redis.call('HGET', KEYS[1], 'parent') ~= ARGV[7] then return 'orphan' end
redis.call('DEL', KEYS[2], KEYS[3])
local pk = parent_key(KEYS[1], ARGV[6])
if pk then
  -- an earlier attempt of this task counted into its parent: take its share back
  local old = tonumber(redis.call('HGET', KEYS[1], 'ports_done') or '0')
  if old > 0 then redis.call('HINCRBY', pk, 'ports_done', -old) end
end
local fields = redis.call('HKEYS', KEYS[1])
for _, name in ipairs(fields) do
  if string.sub(name, 1, 6) == 'state:' then
    if pk then
      local n = tonumber(redis.call('HGET', KEYS[1], name) or '0')
      redis.call('HINCRBY', pk, name, -n)
    end
    redis.call('HDEL', KEYS[1], name)
  end
end
redis.call('HDEL', KEYS[1], 'error', 'finished_at', 'ports_total')
redis.call('HSET', KEYS[1], 'id', ARGV[5], 'entry', ARGV[1], 'attempt', ARGV[2],
           'worker', ARGV[3], 'started_at', ARGV[4], 'updated_at', ARGV[4], 'ports_done', '0')
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return 'cancelled' end
redis.call('HSET', KEYS[1], 'status', 'running')
return 'run'
"""
_BEGIN = _TASK_LIB + _BEGIN

# KEYS: job hash, job results stream, results stream, inventory hash, inventory hosts set,
#       job written set, normalised inventory hash, changes stream
# ARGV: attempt, result json, job id, maxlen, host, port/proto, state, now,
#       normalised json ('' when the result must not touch the inventory), port, protocol, at,
#       prefix
# Idempotent: a write retried after a timeout or a lost connection (whether the first try
# was applied is unknown) finds its port in the written set and changes nothing.
# Change detection: the previous normalised entry is read before it is overwritten and an
# event is added to the changes stream only when the normalised value differs and the port
# opened, closed, or (open both times) its service, version or TLS certificate changed.
_WRITE = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 0 end
if redis.call('SADD', KEYS[6], ARGV[5] .. ' ' .. ARGV[6]) == 0 then return 1 end
redis.call('XADD', KEYS[2], '*', 'result', ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[4], '*', 'job', ARGV[3], 'result', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'ports_done', 1)
redis.call('HINCRBY', KEYS[1], 'state:' .. ARGV[7], 1)
redis.call('HSET', KEYS[1], 'updated_at', ARGV[8])
local pk = parent_key(KEYS[1], ARGV[13])
if pk then
  redis.call('HINCRBY', pk, 'ports_done', 1)
  redis.call('HINCRBY', pk, 'state:' .. ARGV[7], 1)
  redis.call('HSET', pk, 'updated_at', ARGV[8])
end
local after = ARGV[9]
if after == '' then return 1 end
local before = redis.call('HGET', KEYS[7], ARGV[6])
local previous = nil
if before then
  local ok, decoded = pcall(cjson.decode, before)
  if ok and type(decoded) == 'table' then previous = decoded end
else
  before = ''
  -- an entry stored before change tracking: only its state can be compared
  local stored = redis.call('HGET', KEYS[4], ARGV[6])
  if stored then
    local ok, old = pcall(cjson.decode, stored)
    if ok and type(old) == 'table' and type(old['state']) == 'string' then
      previous = {state = old['state'], untracked = true}
    end
  end
end
redis.call('HSET', KEYS[4], ARGV[6], ARGV[2])
redis.call('HSET', KEYS[7], ARGV[6], after)
redis.call('SADD', KEYS[5], ARGV[5])
if before == after then return 1 end
local current = cjson.decode(after)
local function field(n, name)
  local v = n[name]
  if v == nil or v == cjson.null then return '' end
  if type(v) == 'table' then return table.concat(v, ' ') end
  return tostring(v)
end
local function differs(names)
  for _, name in ipairs(names) do
    if field(previous, name) ~= field(current, name) then return true end
  end
  return false
end
local was_open = previous ~= nil and previous['state'] == 'open'
local is_open = current['state'] == 'open'
local kind = nil
if is_open and not was_open then kind = 'opened'
elseif was_open and not is_open then kind = 'closed'
elseif is_open and not previous['untracked'] then
  if differs({'name', 'tunnel'}) then kind = 'service_changed'
  elseif differs({'product', 'version', 'extrainfo', 'ostype', 'devicetype', 'hostname', 'cpe'})
    then kind = 'version_changed'
  elseif differs({'tls'}) then kind = 'tls_changed'
  else kind = 'changed' end
end
if kind then
  redis.call('XADD', KEYS[8], 'MAXLEN', '~', ARGV[4], '*', 'host', ARGV[5], 'port', ARGV[10],
             'protocol', ARGV[11], 'kind', kind, 'before', before, 'after', after,
             'job', ARGV[3], 'at', ARGV[12])
end
return 1
"""
_WRITE = _TASK_LIB + _WRITE

# KEYS: job hash, job written set
# ARGV: attempt, status, error ('' for none), now, prefix, retention
_FINISH = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
local before = redis.call('HGET', KEYS[1], 'status')
redis.call('DEL', KEYS[2])
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'finished_at', ARGV[4], 'updated_at', ARGV[4])
if ARGV[3] == '' then
  redis.call('HDEL', KEYS[1], 'error')
else
  redis.call('HSET', KEYS[1], 'error', ARGV[3])
end
if before ~= 'done' and before ~= 'failed' and before ~= 'cancelled' then
  job_ended(KEYS[1], ARGV[5], ARGV[2], ARGV[3], ARGV[4], ARGV[6])
end
return 1
"""
_FINISH = _TASK_LIB + _FINISH

# KEYS: job hash; ARGV: attempt, total, now
_TOTAL = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'ports_total', ARGV[2], 'updated_at', ARGV[3])
return 1
"""

# KEYS: job hash; ARGV: entry id, error, now, job id, prefix, retention
# Writes only into the hash of this very stream entry (made by its submitter with the
# entry, by a split, or by its own start): a refused entry never creates a job hash under
# the id it claims, nor touches one another entry owns; nor one that already ended well.
_REJECT = """
local entry = redis.call('HGET', KEYS[1], 'entry')
if entry ~= ARGV[1] then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[4], 'status', 'failed', 'error', ARGV[2],
           'entry', ARGV[1], 'finished_at', ARGV[3], 'updated_at', ARGV[3])
if status ~= 'failed' then job_ended(KEYS[1], ARGV[5], 'failed', ARGV[2], ARGV[3], ARGV[6]) end
return 1
"""
_REJECT = _TASK_LIB + _REJECT

# KEYS: parent hash, jobs stream, parent results stream, parent written set
# ARGV: attempt, now, total ports, queue ('' for default), parent id, then the task jobs'
#       JSON, in order (task i's id is keys.task_id(parent id, i), its hash the parent
#       hash's task_key(i): the parent's hash tag)
# Atomic: either every task is queued and the parent marked sharded, or nothing is.
_SPLIT = (
    LUA
    + """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 'lost' end
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return 'lost' end
if redis.call('HGET', KEYS[1], 'cancel') == '1' then return 'cancelled' end
local n = #ARGV - 5
for i = 0, n - 1 do
  local id = task_id(ARGV[5], i)
  local key = task_key(KEYS[1], i)
  redis.call('DEL', key, results_key(key), written_key(key))
  local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[6 + i])
  redis.call('HSET', key, 'id', id, 'status', 'queued', 'entry', entry, 'parent', ARGV[5],
             'queued_at', ARGV[2], 'updated_at', ARGV[2])
  if ARGV[4] ~= '' then redis.call('HSET', key, 'queue', ARGV[4]) end
end
redis.call('DEL', KEYS[3], KEYS[4])
redis.call('HSET', KEYS[1], 'sharded', '1', 'tasks_total', n,
           'tasks_finished', '0', 'ports_total', ARGV[3], 'ports_done', '0',
           'updated_at', ARGV[2])
return 'split'
"""
)

# KEYS: job hash; ARGV: entry id, now, job id, queue
_QUEUED = """
if redis.call('HEXISTS', KEYS[1], 'status') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[3], 'status', 'queued', 'entry', ARGV[1],
           'queued_at', ARGV[2], 'updated_at', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'queue', ARGV[4]) end
return 1
"""


def iso_time(when: float) -> str:
    """Unix seconds as ISO 8601 UTC, as in results' ``scanned_at``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def result_json(result: Mapping[str, Any]) -> str:
    """A result as stored in Redis: compact JSON, keys in DESIGN.md's order."""
    return json.dumps(ordered_result(result), sort_keys=False, separators=(",", ":"))


class ResultWriter:
    """Writes one worker's job status and results (see the module docstring).

    *client* is a :class:`~vscand.queue.commands.RedisCommands` (``RedisClient``);
    *clock* returns unix seconds (default :func:`time.time`; a Twisted ``Clock``'s
    ``seconds`` works).
    """

    def __init__(
        self,
        client: RedisCommands,
        keys: Keys,
        *,
        worker: str,
        results_maxlen: int = 100_000,
        retention: int = DEFAULT_RETENTION,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if results_maxlen < 1:
            raise ValueError("results_maxlen must be at least 1")
        if retention < 0:
            raise ValueError("retention must be 0 (keep forever) or a number of seconds")
        self.client = client
        self.keys = keys
        self.worker = worker
        self.results_maxlen = results_maxlen
        #: seconds an ended job's hash and results are kept (0: forever)
        self.retention = retention
        self._clock = clock or time.time

    def _now(self) -> str:
        return iso_time(self._clock())

    async def begin(self, job: Job, entry_id: str, attempt: str) -> BeginState:
        """Take *job* for *attempt*: ``"run"``, ``"cancelled"`` or ``"done"``.

        ``"done"``: nothing to do but XACK (the job already ended, or the same job id
        runs from another stream entry). ``"cancelled"``: a cancel was requested;
        the attempt owns the job, so ``finish(..., "cancelled")`` is accepted.
        ``"run"``: status is running, counts are reset and any partial results of an
        earlier attempt are deleted. ``"orphan"``: the job says it is a task of a sharded
        job, but no split made it (forged or stale): reject it.
        """
        reply = await self.client.eval(
            _BEGIN,
            [self.keys.job(job.id), self.keys.job_results(job.id), self.keys.job_written(job.id)],
            [
                entry_id,
                attempt,
                self.worker,
                self._now(),
                job.id,
                self.keys.prefix,
                job.parent or "",
            ],
        )
        state = text(reply)
        if state == "run":
            return "run"
        if state == "cancelled":
            return "cancelled"
        if state == "done":
            return "done"
        if state == "orphan":
            return "orphan"
        if state == "duplicate":
            return "duplicate"
        raise RuntimeError(f"unexpected reply from the begin script: {reply!r}")

    async def write(self, job_id: str, attempt: str, result: Mapping[str, Any]) -> bool:
        """Record one port result; False (nothing written) if *attempt* lost the job.

        The host's inventory is updated and compared with what it held before
        (:mod:`vscand.queue.changes`): a change adds an event to the changes stream.
        Interrupted and error results go to the job's and the fleet's streams only.
        """
        host = str(result["host"])
        port = int(result["port"])
        protocol = str(result.get("protocol") or "tcp")
        port_key = f"{port}/{protocol}"
        state = str(result.get("state") or "unknown")
        normalised = normalised_service(result) if tracks_inventory(result) else ""
        now = self._now()
        at = str(result.get("scanned_at") or now)
        reply = await self.client.eval(
            _WRITE,
            [
                self.keys.job(job_id),
                self.keys.job_results(job_id),
                self.keys.results,
                self.keys.inventory(host),
                self.keys.inventory_hosts,
                self.keys.job_written(job_id),
                self.keys.inventory_normalised(host),
                self.keys.changes,
            ],
            [
                attempt,
                result_json(result),
                str(result.get("job") or job_id),
                self.results_maxlen,
                host,
                port_key,
                state,
                now,
                normalised,
                port,
                protocol,
                at,
                self.keys.prefix,
            ],
        )
        return integer(reply) == 1

    async def set_total(self, job_id: str, attempt: str, total: int) -> bool:
        """Record how many ports the job will scan (for progress); fenced."""
        reply = await self.client.eval(
            _TOTAL, [self.keys.job(job_id)], [attempt, int(total), self._now()]
        )
        return integer(reply) == 1

    async def finish(
        self, job_id: str, attempt: str, status: str, error: str | None = None
    ) -> bool:
        """End the job as done, failed or cancelled; False if *attempt* lost the job."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"final status must be one of {', '.join(FINAL_STATUSES)}")
        reply = await self.client.eval(
            _FINISH,
            [self.keys.job(job_id), self.keys.job_written(job_id)],
            [attempt, status, error or "", self._now(), self.keys.prefix, self.retention],
        )
        return integer(reply) == 1

    async def reject(self, job_id: str | None, entry_id: str, error: str) -> bool:
        """Mark an invalid job failed with *error* (unfenced: it never ran).

        Nothing is written without an id, nor when the job hash belongs to another
        stream entry (a replayed or forged entry reusing a real job's id) or already
        ended done/cancelled. Returns whether the hash was written. Dead-lettering
        and XACK are the consumer's.
        """
        if job_id is None:
            return False
        reply = await self.client.eval(
            _REJECT,
            [self.keys.job(job_id)],
            [entry_id, error, self._now(), job_id, self.keys.prefix, self.retention],
        )
        return integer(reply) == 1

    async def cancel_requested(self, job_id: str) -> bool:
        reply = await self.client.execute("HGET", self.keys.job(job_id), "cancel")
        return text(reply) == "1"

    async def released(self, job_id: str, *, timeout: float | None = None) -> None:
        """Record that this worker handed *job_id* back unfinished: ``queued`` again,
        ``released_by`` and ``released_at`` (unfenced: the entry is claimable already)."""
        await self.client.execute(
            "HSET", self.keys.job(job_id),
            "status", "queued", "released_by", self.worker, "released_at", self._now(),
            timeout=timeout,
        )  # fmt: skip

    async def request_cancel(self, job_id: str) -> None:
        """Ask the worker running *job_id* to stop; it sets ``cancelled`` when it has.

        For a sharded job the request reaches every task that has not ended (each
        worker running one stops it; a queued one ends ``cancelled`` when taken).
        """
        await self.client.eval(_CANCEL, [self.keys.job(job_id)], [self._now()])

    async def split(
        self,
        job: Job,
        attempt: str,
        total_ports: int,
        tasks: list[bytes],
        stream: str,
    ) -> SplitState:
        """Queue *tasks* (job JSON documents, ids ``<job id>/t<i>``) on *stream* as
        tasks of *job*, atomically, fenced by *attempt*: ``"split"`` (the caller acks
        the job's entry), ``"cancelled"`` (a cancel came first; nothing queued) or
        ``"lost"`` (another attempt owns the job)."""
        reply = await self.client.eval(
            _SPLIT,
            [
                self.keys.job(job.id),
                stream,
                self.keys.job_results(job.id),
                self.keys.job_written(job.id),
            ],
            [
                attempt,
                self._now(),
                total_ports,
                job.queue or "",
                job.id,
                *tasks,
            ],
        )
        state = text(reply)
        if state in ("split", "cancelled", "lost"):
            return cast(SplitState, state)
        raise RuntimeError(f"unexpected reply from the split script: {reply!r}")

    async def submit(self, job: Job, stream: str) -> tuple[bool, str]:
        """Queue *job* (its ``raw`` JSON) on *stream* with its status hash, atomically:
        ``(True, entry id)``, or ``(False, status)`` when a job with that id exists (a
        re-used id is refused here; the daemon refuses one that gets past, too)."""
        reply = await self.client.eval(
            _SUBMIT,
            [self.keys.job(job.id), stream],
            [job.raw, self._now(), job.id, job.queue or ""],
        )
        outcome, value = (text(part) or "" for part in reply)
        return outcome == "queued", value

    async def set_queued(self, job: Job, entry_id: str) -> bool:
        """For submitters, after XADD: status ``queued`` unless a worker already moved it on.

        Returns whether it was written.
        """
        reply = await self.client.eval(
            _QUEUED, [self.keys.job(job.id)], [entry_id, self._now(), job.id, job.queue or ""]
        )
        return integer(reply) == 1
