"""Moving job keys from the first layout to layout 2 (:mod:`vscand.queue.keys`), in place.

Layout 1 named a job's keys ``job:ID``, ``job:ID:results``, ``job:ID:written`` and
``seen:ID``, and a sharded job's tasks ``<base>:t<N>`` (base: the job id, or
``shard-<sha256[:40]>`` of an id over 112 characters). Ids may contain ``:``, so one job's
id could name another's keys. Layout 2 puts the id in braces (``job:{ID}``…) and names
task N of job P ``P/tN`` (keys ``job:{P}/tN``…).

:func:`migrate` runs at every daemon start, before the daemon consumes, and moves what is
still in layout 1:

* ``SCAN`` over ``PREFIX job:*`` and ``PREFIX seen:*``; a key with ``{`` is in layout 2
  already (layout-1 ids cannot contain a brace);
* by ``TYPE``: a hash is a job's status (its id from its ``id`` field, else from the key):
  one script renames it, its results stream and its written set to their layout-2 names.
  A task's hash (``parent`` set, id ``<base>:t<N>``) moves to ``<parent>/t<N>`` and its
  ``id`` field is rewritten; a sharded job loses its ``task_base`` field (layout 2 derives
  the task ids from the job id). A stream ending ``:results`` or a set ending ``:written``
  whose job has no hash moves on its own. ``seen:ID`` (string) becomes ``seen:{ID}``;
* ``RENAME`` keeps each key's TTL and contents; a key whose new name exists already is left
  where it is and logged, never overwritten.

Then ``PREFIX layout`` is set to ``2``: later starts read it and skip the scan. Several
daemons starting at once: one holds ``PREFIX layout:lock`` (``SET NX PX``, renewed while it
works), the others wait for the marker (or for the lock to lapse, when its holder died, and
take over: every step is idempotent, so an interrupted migration resumes). Old and new
daemons must not run side by side: stop every daemon of the old version before starting one
of this version.

The scripts touch keys of several slots: like the daemon (DESIGN.md, "Redis Cluster"),
migration needs a Redis that is not a cluster; layout 1 never ran on one.

Pure code: nothing here imports ``twisted.internet``; waiting uses the *sleep* given.
"""

from __future__ import annotations

import re
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

from twisted.logger import Logger

from vscand.jobs.ids import legacy_task_index
from vscand.jobs.ids import task_id as make_task_id
from vscand.queue.commands import RedisCommands, integer, text
from vscand.queue.keys import LAYOUT_VERSION, RESULTS_SUFFIX, WRITTEN_SUFFIX, Keys

log = Logger()

#: a layout-1 job id (the id alphabet of jobs.py), and what follows job: in its keys
_LEGACY_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")
_LEGACY_REST = re.compile(r"[A-Za-z0-9._:-]+")
LOCK_MS = 30_000
SCAN_COUNT = 500

# KEYS: 1 old hash, 2 new hash, 3 old results, 4 new results, 5 old written, 6 new written
# ARGV: 1 new id ('' = leave the id field)
# Returns {hash outcome, results outcome, written outcome}: moved, conflict or none.
_MOVE_JOB = """
local function move(old, new, kind)
  if redis.call('TYPE', old).ok ~= kind then return 'none' end
  if redis.call('EXISTS', new) == 1 then return 'conflict' end
  redis.call('RENAME', old, new)
  return 'moved'
end
if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then return {'none', 'none', 'none'} end
local hash = move(KEYS[1], KEYS[2], 'hash')
if hash ~= 'moved' then return {hash, 'none', 'none'} end
if ARGV[1] ~= '' then redis.call('HSET', KEYS[2], 'id', ARGV[1]) end
redis.call('HDEL', KEYS[2], 'task_base')
return {hash, move(KEYS[3], KEYS[4], 'stream'), move(KEYS[5], KEYS[6], 'set')}
"""

# KEYS: 1 old key, 2 new key; ARGV: 1 the type it must have
_MOVE_ONE = """
if redis.call('TYPE', KEYS[1]).ok ~= ARGV[1] then return 'none' end
if redis.call('EXISTS', KEYS[2]) == 1 then return 'conflict' end
redis.call('RENAME', KEYS[1], KEYS[2])
return 'moved'
"""

# KEYS: 1 lock; ARGV: 1 token, 2 ms. Extends the lock if it is still ours.
_RENEW = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1
"""

# KEYS: 1 lock, 2 marker; ARGV: 1 token, 2 layout
_DONE = """
redis.call('SET', KEYS[2], ARGV[2])
if redis.call('GET', KEYS[1]) == ARGV[1] then redis.call('DEL', KEYS[1]) end
return 1
"""


@dataclass
class Migration:
    """What one :func:`migrate` call did."""

    #: ``done`` (marker found: nothing to do), ``migrated`` (this call scanned),
    #: ``waited`` (another daemon migrated while this one waited)
    outcome: str = "done"
    moved: int = 0
    #: layout-1 keys left in place because their layout-2 name was taken
    conflicts: list[str] = field(default_factory=list)
    #: keys examined (matched the scan, not in layout 2 yet)
    examined: int = 0

    def conflict(self, key: str) -> None:
        if key not in self.conflicts:
            self.conflicts.append(key)


Sleep = Callable[[float], Awaitable[object]]


async def migrate(
    client: RedisCommands,
    keys: Keys,
    sleep: Sleep,
    *,
    lock_ms: int = LOCK_MS,
    poll_s: float = 0.5,
) -> Migration:
    """Bring the job keys under *keys* to layout 2 once (see the module docstring)."""
    if text(await client.execute("GET", keys.layout)) == LAYOUT_VERSION:
        return Migration("done")
    token = uuid.uuid4().hex
    waited = False
    while True:
        if await client.execute("SET", keys.layout_lock, token, "NX", "PX", lock_ms) is not None:
            break
        waited = True
        await sleep(poll_s)
        if text(await client.execute("GET", keys.layout)) == LAYOUT_VERSION:
            return Migration("waited")
    # the marker may have been set between our first look and the lock
    if text(await client.execute("GET", keys.layout)) == LAYOUT_VERSION:
        await client.eval(_DONE, [keys.layout_lock, keys.layout], [token, LAYOUT_VERSION])
        return Migration("waited" if waited else "done")
    result = Migration("migrated")
    log.info("moving job keys to key layout {layout}", layout=LAYOUT_VERSION)
    for pattern in (f"{keys.job_prefix}*", f"{keys.prefix}seen:*"):
        cursor = "0"
        while True:
            reply = await client.execute("SCAN", cursor, "MATCH", pattern, "COUNT", SCAN_COUNT)
            cursor = text(reply[0]) or "0"
            for raw in reply[1] or []:
                await _migrate_key(client, keys, text(raw) or "", result)
            if not integer(await client.eval(_RENEW, [keys.layout_lock], [token, lock_ms])):
                log.warn("the key layout lock lapsed; migrating on (every step is idempotent)")
            if cursor == "0":
                break
    await client.eval(_DONE, [keys.layout_lock, keys.layout], [token, LAYOUT_VERSION])
    for key in result.conflicts:
        log.warn("key {key} left in place: its layout-2 name exists already", key=key)
    log.info(
        "key layout {layout}: {moved} keys moved, {conflicts} left in place",
        layout=LAYOUT_VERSION,
        moved=result.moved,
        conflicts=len(result.conflicts),
    )
    return result


async def _migrate_key(client: RedisCommands, keys: Keys, key: str, result: Migration) -> None:
    seen_prefix = f"{keys.prefix}seen:"
    if key.startswith(seen_prefix):
        legacy_id = key[len(seen_prefix) :]
        if "{" in legacy_id or not _LEGACY_ID.fullmatch(legacy_id):
            return
        result.examined += 1
        await _move_one(client, key, keys.seen_signature(legacy_id), "string", result)
        return
    rest = key[len(keys.job_prefix) :]
    if "{" in rest or not _LEGACY_REST.fullmatch(rest):
        return
    result.examined += 1
    kind = text(await client.execute("TYPE", key))
    if kind == "hash":
        await _move_job(client, keys, rest, result)
    elif kind == "stream" and rest.endswith(RESULTS_SUFFIX):
        await _move_part(client, keys, rest[: -len(RESULTS_SUFFIX)], "stream", result)
    elif kind == "set" and rest.endswith(WRITTEN_SUFFIX):
        await _move_part(client, keys, rest[: -len(WRITTEN_SUFFIX)], "set", result)
    else:
        log.warn("key {key} ({kind}) is no job key; left in place", key=key, kind=kind)


async def _move_part(
    client: RedisCommands, keys: Keys, legacy_id: str, kind: str, result: Migration
) -> None:
    """A results stream or written set: moved with its job's hash if that is still in
    layout 1, else on its own (its job's hash is gone, or was in conflict)."""
    if text(await client.execute("TYPE", keys.job_prefix + legacy_id)) == "hash":
        await _move_job(client, keys, legacy_id, result)
        return
    old = keys.job_prefix + legacy_id + (RESULTS_SUFFIX if kind == "stream" else WRITTEN_SUFFIX)
    new = keys.job_results(legacy_id) if kind == "stream" else keys.job_written(legacy_id)
    await _move_one(client, old, new, kind, result)


async def _move_one(
    client: RedisCommands, old: str, new: str, kind: str, result: Migration
) -> None:
    outcome = text(await client.eval(_MOVE_ONE, [old, new], [kind]))
    if outcome == "moved":
        result.moved += 1
    elif outcome == "conflict":
        result.conflict(old)


async def _move_job(client: RedisCommands, keys: Keys, legacy_id: str, result: Migration) -> None:
    """The job hash at ``job:<legacy_id>`` with its results stream and written set."""
    old = keys.job_prefix + legacy_id
    reply = await client.execute("HMGET", old, "id", "parent")
    stored, parent = (text(value) for value in reply)
    job_id = stored if stored and _LEGACY_ID.fullmatch(stored) else legacy_id
    new_id = job_id
    if parent and _LEGACY_ID.fullmatch(parent):
        index = legacy_task_index(job_id, parent)
        if index is not None:
            new_id = make_task_id(parent, index)
    outcome = [
        text(part) or "none"
        for part in await client.eval(
            _MOVE_JOB,
            [
                old,
                keys.job(new_id),
                old + RESULTS_SUFFIX,
                keys.job_results(new_id),
                old + WRITTEN_SUFFIX,
                keys.job_written(new_id),
            ],
            [new_id if stored is not None and new_id != stored else ""],
        )
    ]
    for part, suffix in zip(outcome, ("", RESULTS_SUFFIX, WRITTEN_SUFFIX), strict=True):
        if part == "moved":
            result.moved += 1
        elif part == "conflict":
            result.conflict(old + suffix)
