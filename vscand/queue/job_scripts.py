"""The Lua scripts of :class:`~vscand.queue.results.ResultWriter`: every change a worker
makes to a job, one atomic script each (begin, write, total, finish, reject, split, queued).

Each script's KEYS and ARGV are written above it; keys are built by
:data:`vscand.queue.keys.LUA`'s functions only. Every script but :data:`REJECT` and
:data:`QUEUED` is fenced by the job hash's ``attempt``. The submit and cancel scripts,
which the producer client runs too, are in :mod:`vscand.queue.lua`.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from vscand.queue.keys import LUA

# Lua shared by the scripts that can end a job. A task's hash has a ``parent`` field (set
# only by SPLIT); the parent hash aggregates: ports_done and state:<state> follow every
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
BEGIN = """
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
BEGIN = _TASK_LIB + BEGIN

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
WRITE = """
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
WRITE = _TASK_LIB + WRITE

# KEYS: job hash, job written set
# ARGV: attempt, status, error ('' for none), now, prefix, retention
FINISH = """
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
FINISH = _TASK_LIB + FINISH

# KEYS: job hash; ARGV: attempt, total, now
TOTAL = """
if redis.call('HGET', KEYS[1], 'attempt') ~= ARGV[1] then return 0 end
redis.call('HSET', KEYS[1], 'ports_total', ARGV[2], 'updated_at', ARGV[3])
return 1
"""

# KEYS: job hash; ARGV: entry id, error, now, job id, prefix, retention
# Writes only into the hash of this very stream entry (made by its submitter with the
# entry, by a split, or by its own start): a refused entry never creates a job hash under
# the id it claims, nor touches one another entry owns; nor one that already ended well.
REJECT = """
local entry = redis.call('HGET', KEYS[1], 'entry')
if entry ~= ARGV[1] then return 0 end
local status = redis.call('HGET', KEYS[1], 'status')
if status == 'done' or status == 'cancelled' then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[4], 'status', 'failed', 'error', ARGV[2],
           'entry', ARGV[1], 'finished_at', ARGV[3], 'updated_at', ARGV[3])
if status ~= 'failed' then job_ended(KEYS[1], ARGV[5], 'failed', ARGV[2], ARGV[3], ARGV[6]) end
return 1
"""
REJECT = _TASK_LIB + REJECT

# KEYS: parent hash, jobs stream, parent results stream, parent written set
# ARGV: attempt, now, total ports, queue ('' for default), parent id, then the task jobs'
#       JSON, in order (task i's id is jobs.ids.task_id(parent id, i), its hash the parent
#       hash's task_key(i): the parent's hash tag)
# Atomic: either every task is queued and the parent marked sharded, or nothing is.
SPLIT = (
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
QUEUED = """
if redis.call('HEXISTS', KEYS[1], 'status') == 1 then return 0 end
redis.call('HSET', KEYS[1], 'id', ARGV[3], 'status', 'queued', 'entry', ARGV[1],
           'queued_at', ARGV[2], 'updated_at', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'queue', ARGV[4]) end
return 1
"""
