"""The replay guard of signed jobs: ``SET seen:{ID} NX`` in one script.

A signed job can be sent again by anyone who saw it: :func:`claim_signature` records
the first stream entry that carried each signed job id, until the job expires (plus a
margin for clock skew), so a second entry with the same id is refused as a replay.
"""

from __future__ import annotations

import math
import time

from vscand.jobs.schema import MAX_NOT_AFTER_AHEAD_S, Job
from vscand.queue.commands import RedisCommands, integer
from vscand.queue.keys import Keys

#: the replay guard outlives a job's expiry by this much (clock skew between hosts)
REPLAY_MARGIN_S = 300.0
#: replay guard lifetime for a job without not_after (only when called for one)
REPLAY_DEFAULT_TTL_S = 7 * 24 * 3600.0

_CLAIM_SCRIPT = """
local stored = redis.call('GET', KEYS[1])
if not stored then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if stored == ARGV[1] then return 1 end
return 0
"""


async def claim_signature(
    client: RedisCommands,
    keys: Keys,
    job: Job,
    entry_id: str,
    *,
    now: float | None = None,
    margin_s: float = REPLAY_MARGIN_S,
) -> bool:
    """Record that stream entry *entry_id* carries signed job *job*; False on a replay.

    ``seen:{ID}`` (:meth:`Keys.seen_signature`) holds the first entry id seen with this
    job id, until the job's ``not_after`` plus *margin_s* (after which the job is refused
    as expired anyway). A redelivery of the same entry is not a replay: True.
    """
    current = time.time() if now is None else now
    until = job.not_after if job.not_after is not None else current + REPLAY_DEFAULT_TTL_S
    # bounded whatever the job says: PX must stay an integer Redis accepts
    longest = MAX_NOT_AFTER_AHEAD_S + margin_s
    ttl_ms = math.ceil(max(1.0, min(until + margin_s - current, longest)) * 1000)
    reply = await client.eval(_CLAIM_SCRIPT, [keys.seen_signature(job.id)], [entry_id, ttl_ms])
    return integer(reply) == 1
