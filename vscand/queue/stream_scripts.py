"""The jobs stream consumer's Lua scripts (``consumer.py`` runs them): renewal by the
owner only, taking back this consumer's own entries, the janitor's claim, acknowledging
an ended attempt, the stream's counts, and dead letters. Pure strings.
"""

from __future__ import annotations

# Lua shared by the scripts that hand out entries: values over ARGV-given limits become
# cut markers (vscand/queue/resp.py) made with the client's token, so an entry of any
# size costs the daemon a few bytes. capped(fields, token, max value bytes, max fields)
CAP_LIB = """
local function capped(fields, token, max_value, max_fields)
  if #fields > 2 * max_fields then return {token .. ':array:' .. #fields} end
  local out = {}
  for i = 1, #fields do
    local v = fields[i]
    if #v > max_value then out[i] = token .. ':bulk:' .. #v else out[i] = v end
  end
  return out
end
"""

# Owner-checked lease renewal: XCLAIM ... JUSTID resets the idle time without counting a
# delivery, and only when the entry is still ours (a janitor elsewhere may have claimed it).
RENEW = """
local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[3], ARGV[3], 1)
if #p == 0 or p[1][2] ~= ARGV[2] then return 0 end
redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, ARGV[3], 'JUSTID')
return 1
"""

# Take entries of the own PEL back, counting one delivery each (XCLAIM without JUSTID adds
# one and resets the idle time). ARGV: group, consumer, token, max value bytes, max fields,
# entry ids. For every id still ours: {id, deliveries, fields (capped)}; fields is empty for
# an entry deleted while pending (left in the PEL for the dead-letter call). Ids another
# consumer claimed meanwhile are left out.
TAKE_OWN = (
    CAP_LIB
    + """
local out = {}
for i = 6, #ARGV do
  local id = ARGV[i]
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
  if #p == 1 and p[1][2] == ARGV[2] then
    local e = redis.call('XRANGE', KEYS[1], id, id)
    if #e == 0 then
      out[#out + 1] = {id, p[1][4], {}}
    else
      local c = redis.call('XCLAIM', KEYS[1], ARGV[1], ARGV[2], 0, id)
      out[#out + 1] = {id, p[1][4] + 1, capped(c[1][2], ARGV[3], tonumber(ARGV[4]),
                                               tonumber(ARGV[5]))}
    end
  end
end
return out
"""
)

# XAUTOCLAIM with the entries' values capped. ARGV: group, consumer, min idle ms, cursor,
# count, token, max value bytes, max fields. Reply as XAUTOCLAIM's (Redis 7: with the ids
# of deleted entries as a third element).
AUTOCLAIM = (
    CAP_LIB
    + """
local r = redis.call('XAUTOCLAIM', KEYS[1], ARGV[1], ARGV[2], ARGV[3], ARGV[4],
                     'COUNT', ARGV[5])
for _, entry in ipairs(r[2]) do
  if type(entry) == 'table' and type(entry[2]) == 'table' then
    entry[2] = capped(entry[2], ARGV[6], tonumber(ARGV[7]), tonumber(ARGV[8]))
  end
end
return r
"""
)

# XACK only once the job's end is on this server. KEYS: stream, job hash; ARGV: group,
# entry, attempt. 1 when the hash names the attempt and its end (a final status, or the
# split into tasks): the entry is acknowledged (again, harmlessly, on a retry). 0 when it
# does not: after a Redis failover the new master may lack writes the old one took, and
# acknowledging there would lose the job; the caller hands it back for another run.
ACK_ENDED = """
if redis.call('HGET', KEYS[2], 'attempt') ~= ARGV[3] then return 0 end
local status = redis.call('HGET', KEYS[2], 'status')
if status ~= 'done' and status ~= 'failed' and status ~= 'cancelled'
   and redis.call('HGET', KEYS[2], 'sharded') ~= '1' then return 0 end
redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
return 1
"""

# Delivery counts of entries of the PEL (0 for an entry no longer pending).
COUNTS = """
local out = {}
for i, id in ipairs(ARGV) do
  if i > 1 then
    local p = redis.call('XPENDING', KEYS[1], ARGV[1], id, id, 1)
    if #p == 0 then out[#out + 1] = 0 else out[#out + 1] = p[1][4] end
  end
end
return out
"""

# XADD to the dead-letter stream and XACK, in one step. ARGV: group, entry, reason,
# deliveries, at, only-if-pending ('1' or '0'), max length of the dead-letter stream
# (MAXLEN ~), bytes of each value kept, seconds the refusal record (KEYS[3], by entry id)
# is kept (0 = for ever). The entry's fields are read from the stream here, in
# Redis (an entry of any size never travels to the daemon): each is kept as its first bytes
# (field 'job' for the job, 'field:<name>' for the others, at most 16) with '<name>_bytes'
# holding its full size when it was cut. With only-if-pending the call is idempotent: an
# entry no longer pending is not dead-lettered again, so a call retried after a timeout or a
# lost connection (the first try may have been applied) adds no second dead letter. Entries
# XAUTOCLAIM reported as deleted are already out of the PEL: those are recorded
# unconditionally.
DEAD_LETTER = """
local acked = redis.call('XACK', KEYS[1], ARGV[1], ARGV[2])
if acked == 0 and ARGV[6] == '1' then return 0 end
local keep = tonumber(ARGV[8])
local fields = {'reason', ARGV[3], 'entry', ARGV[2], 'deliveries', ARGV[4],
                'stream', KEYS[1], 'at', ARGV[5]}
local e = redis.call('XRANGE', KEYS[1], ARGV[2], ARGV[2])
local job = ''
if #e == 1 then
  local raw = e[1][2]
  local others = 0
  for i = 1, #raw - 1, 2 do
    local name, value = raw[i], raw[i + 1]
    local label = nil
    if name == 'job' then
      label = 'job'
    elseif others < 16 then
      others = others + 1
      label = 'field:' .. string.sub(name, 1, 64)
    end
    if label then
      if label == 'job' then job = string.sub(value, 1, keep) else
        fields[#fields + 1] = label
        fields[#fields + 1] = string.sub(value, 1, keep)
      end
      if #value > keep then
        fields[#fields + 1] = label .. '_bytes'
        fields[#fields + 1] = tostring(#value)
      end
    end
  end
end
table.insert(fields, 1, job)
table.insert(fields, 1, 'job')
redis.call('XADD', KEYS[2], 'MAXLEN', '~', ARGV[7], '*', unpack(fields))
redis.call('HSET', KEYS[3], 'reason', ARGV[3], 'at', ARGV[5], 'deliveries', ARGV[4],
           'stream', KEYS[1])
if tonumber(ARGV[9]) > 0 then redis.call('EXPIRE', KEYS[3], ARGV[9]) end
return acked
"""
