"""The Lua scripts a producer runs: a submission (:data:`SUBMIT`) and a cancel
(:data:`CANCEL`). ``queue/results.py`` (the daemon and ``vscan``) and ``vscand/producer.py``
(the synchronous client) run these very strings.

Pure code: nothing here imports Twisted (the producer client must stay light).
"""

from __future__ import annotations

from vscand.queue.keys import LUA

# KEYS: job hash; ARGV: now
# A sharded job's cancel reaches every task that has not ended.
CANCEL = (
    LUA
    + """
redis.call('HSET', KEYS[1], 'cancel', '1', 'cancel_requested_at', ARGV[1])
if redis.call('HGET', KEYS[1], 'sharded') ~= '1' then return 1 end
local total = tonumber(redis.call('HGET', KEYS[1], 'tasks_total') or '0')
for i = 0, total - 1 do
  local key = task_key(KEYS[1], i)
  local status = redis.call('HGET', key, 'status')
  if status and status ~= 'done' and status ~= 'failed' and status ~= 'cancelled' then
    redis.call('HSET', key, 'cancel', '1', 'cancel_requested_at', ARGV[1])
  end
end
return total + 1
"""
)

# KEYS: job hash, jobs stream; ARGV: job JSON, now, job id, queue
# A submission: the entry and the job's hash (status queued, owned by that entry) in one
# step, or nothing when the id is taken. Returns {'queued', entry} or {'exists', status}.
SUBMIT = """
if redis.call('EXISTS', KEYS[1]) == 1 then
  return {'exists', redis.call('HGET', KEYS[1], 'status') or ''}
end
local entry = redis.call('XADD', KEYS[2], '*', 'job', ARGV[1])
redis.call('HSET', KEYS[1], 'id', ARGV[3], 'status', 'queued', 'entry', entry,
           'queued_at', ARGV[2], 'updated_at', ARGV[2])
if ARGV[4] ~= '' then redis.call('HSET', KEYS[1], 'queue', ARGV[4]) end
return {'queued', entry}
"""
