"""The fleet's Redis reads (and the few writes of ``vscan dead``), by name: what the
``vscan`` fleet commands ask of Redis. The daemon's operations are
:class:`~vscand.queue.worker_queue.WorkerQueue`'s; these are the command line's. Replies
come back raw (bytes, lists): the caller decides how to show untrusted values.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
from typing import Any

from vscand.queue.commands import RedisCommands, text
from vscand.queue.errors import RedisReplyError
from vscand.queue.keys import GROUP, Keys

#: entries read per ``XRANGE`` page
PAGE = 1000

#: the named fields of many hashes in one round trip; a missing hash is ``false`` (nil)
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


async def stream_pages(
    client: RedisCommands, stream: str, start: str = "-", *, page: int = PAGE
) -> AsyncIterator[list[Any]]:
    """*stream*'s entries after *start* (``-``: from the first; ``(ID``: after ID), oldest
    first, a page of ``[entry id, fields]`` at a time."""
    while True:
        batch = await client.execute("XRANGE", stream, start, "+", "COUNT", page)
        if not batch:
            return
        yield list(batch)
        if len(batch) < page:
            return
        start = "(" + (text(batch[-1][0]) or "")


async def job_hash(client: RedisCommands, keys: Keys, job_id: str) -> list[Any]:
    """A job's status hash (``HGETALL``: a flat name, value list; empty when none)."""
    return list(await client.execute("HGETALL", keys.job(job_id)) or [])


async def refusal(client: RedisCommands, keys: Keys, entry: str) -> list[Any]:
    """The refusal recorded by stream entry for a job that wrote nothing under its id."""
    return list(await client.execute("HGETALL", keys.refused(entry)) or [])


async def replicas_reached(
    client: RedisCommands, keys: Keys, job_id: str, entry: str, replicas: int
) -> int:
    """How many replicas hold the submission just made on this connection (``WAIT``, 5 s),
    0 when the job's entry is not *entry* on the server that answered (a reconnection to a
    new master in between would make ``WAIT`` count nothing of ours)."""
    reached = int(await client.execute("WAIT", replicas, 5000, timeout=10))
    owner = text(await client.execute("HGET", keys.job(job_id), "entry"))
    return reached if owner == entry else 0


async def inventory_hosts(client: RedisCommands, keys: Keys) -> list[Any]:
    """Every host with an inventory (``SMEMBERS``, unordered)."""
    return list(await client.execute("SMEMBERS", keys.inventory_hosts) or [])


async def inventory_size(client: RedisCommands, keys: Keys, host: str) -> int:
    """The ports in *host*'s inventory."""
    return int(await client.execute("HLEN", keys.inventory(host)) or 0)


async def inventory(client: RedisCommands, keys: Keys, host: str) -> list[Any]:
    """*host*'s inventory hash (``HGETALL``: port key, result JSON, ...)."""
    return list(await client.execute("HGETALL", keys.inventory(host)) or [])


async def dead_letter(client: RedisCommands, keys: Keys, entry: str) -> list[Any]:
    """The dead letter *entry* (``[[id, fields]]``, or empty)."""
    return list(await client.execute("XRANGE", keys.dead, entry, entry) or [])


async def dead_letters(client: RedisCommands, keys: Keys, limit: int) -> list[Any]:
    """The newest *limit* dead letters, newest first."""
    return list(await client.execute("XREVRANGE", keys.dead, "+", "-", "COUNT", limit) or [])


async def drop_dead_letter(client: RedisCommands, keys: Keys, entry: str) -> bool:
    """Delete the dead letter *entry*; whether it was there."""
    return bool(int(await client.execute("XDEL", keys.dead, entry)))


async def job_hashes(
    client: RedisCommands, keys: Keys, fields: Sequence[str], *, tasks: bool
) -> AsyncIterator[list[tuple[Any, list[Any]]]]:
    """Every job's hash (and with *tasks* every task's), a ``SCAN`` batch at a time: the
    key and its *fields* (``HMGET``; one script call per batch). O(keys in the database)."""
    prefix = keys.job_prefix
    pattern = prefix.replace("\\", "\\\\").replace("*", "\\*").replace("?", "\\?")
    pattern = pattern.replace("[", "\\[") + "{*"
    cursor: Any = "0"
    while True:
        reply = await client.execute(
            "SCAN", cursor, "MATCH", pattern, "COUNT", 1000, "TYPE", "hash"
        )
        cursor = reply[0]
        # a job's hash ends with its tag's '}'; a task's with '}/t<N>'. The names go back to
        # Redis as they came (bytes): a name that is not UTF-8 still names its key
        wanted = [
            k for k in reply[1] or [] if bytes(k).endswith(b"}") or (tasks and b"}/t" in bytes(k))
        ]
        if wanted:
            values = await client.execute("EVAL", _HMGET_MANY, len(wanted), *wanted, *fields)
            yield [(k, list(v)) for k, v in zip(wanted, values, strict=False) if v is not None]
        if cursor in ("0", b"0"):
            return


async def stream_length(client: RedisCommands, stream: str) -> int:
    return int(await client.execute("XLEN", stream) or 0)


async def stream_info(client: RedisCommands, *args: Any) -> list[Any]:
    """``XINFO args...`` (``GROUPS stream``, ``CONSUMERS stream group``); empty when the
    stream does not exist."""
    try:
        reply = await client.execute("XINFO", *args)
    except RedisReplyError as exc:
        if "no such key" in str(exc).lower():
            return []
        raise
    return list(reply or [])


async def oldest_pending(client: RedisCommands, stream: str) -> list[Any] | None:
    """The group's oldest pending entry: ``[entry id, consumer, idle ms, deliveries]``."""
    reply = await client.execute("XPENDING", stream, GROUP, "-", "+", 1)
    return list(reply[0]) if reply else None
