"""The jobs stream consumer: a Redis Streams consumer group, leases, dead letters.

See reliability.md §1.9.

At-least-once delivery: an entry stays in the group's pending entries list (PEL) from the
moment Redis hands it to this consumer until :meth:`JobConsumer.ack` (after the results
are written) or :meth:`JobConsumer.dead_letter`. Whatever this consumer held when it died
is found again by its own PEL read at the next start (same consumer name), or by another
consumer's :meth:`JobConsumer.claim_idle` once the lease has run out.

Redis counts deliveries in the PEL (taking an entry back from the own PEL and
``XAUTOCLAIM`` both add one), so the count survives crashes and restarts;
:meth:`JobConsumer.over_cap` tells the caller when to give a poison job up.

Entries the caller is working on are "in hand": a later own-PEL read (after a failed or
cancelled read, entries may sit in the PEL unseen) skips them, so nothing is run twice by
the same consumer. The own PEL is listed with ``XPENDING`` (which counts nothing) and only
the entries not in hand are taken back, so an entry is counted once per real delivery: an
``XREADGROUP`` of the PEL would count one for every entry it returns, in hand or not. Own-PEL
reads and janitor claims never overlap (one lock): at a restart, the first PEL read and the
janitor's first ``XAUTOCLAIM`` of the same idle entry would otherwise each count a delivery
for one run, and a poison job would reach the dead-letter stream one delivery early.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from twisted.internet.defer import CancelledError, DeferredLock
from twisted.logger import Logger

from vscand.queue.client import RedisClient
from vscand.queue.errors import RedisReplyError, RedisUnavailable
from vscand.queue.resp import ReplyLimits
from vscand.queue.stream_scripts import (
    ACK_ENDED,
    AUTOCLAIM,
    COUNTS,
    DEAD_LETTER,
    RENEW,
    TAKE_OWN,
)

log = Logger(namespace="vscand.consumer")

DELETED_REASON = "deleted before processing"

#: entries read at once (also the reader's array limit: see :func:`reader_limits`)
MAX_READ = 16
#: fields an entry may have (a job entry has one, ``job``)
MAX_FIELDS = 8


def reader_limits(max_value_bytes: int) -> ReplyLimits:
    """What the blocking reader's replies (``XREADGROUP`` of untrusted entries) may hold: at
    most :data:`MAX_READ` entries of :data:`MAX_FIELDS` fields, each value at most
    *max_value_bytes* (the job limit); bigger values and arrays arrive as cut markers."""
    bulk = max(4096, max_value_bytes)
    items = max(MAX_READ, 2 * MAX_FIELDS)
    return ReplyLimits(max_bulk=bulk, max_items=items, max_reply=(2 + items * items) * bulk)


@dataclass(frozen=True)
class Delivery:
    """One stream entry handed to this consumer."""

    stream: str
    entry_id: str
    fields: dict[bytes, bytes]
    deliveries: int  # 1 for a first delivery; Redis's PEL count for re-read or claimed ones
    #: why the entry cannot be a job before even looking at it (a value over the size
    #: limit or too many fields: those were never read), else ``None``
    refusal: str | None = None


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _stream_id(value: str) -> tuple[int, int]:
    ms, _, seq = value.partition("-")
    return int(ms), int(seq or 0)


def _fields(raw: Sequence[Any]) -> dict[bytes, bytes]:
    return {bytes(raw[i]): bytes(raw[i + 1]) for i in range(0, len(raw) - 1, 2)}


class JobConsumer:
    """One named consumer of a stream's consumer group."""

    def __init__(
        self,
        client: RedisClient,
        *,
        stream: str,
        group: str = "vscand",
        consumer: str,
        clock: Any,
        block_ms: int = 5000,
        lease_ms: int = 120_000,
        max_deliveries: int = 3,
        dead_stream: str,
        group_start: str = "0",
        max_value_bytes: int = 65536,
        dead_maxlen: int = 10_000,
        dead_payload_bytes: int = 4096,
        refused_key: Callable[[str], str] | None = None,
        refused_ttl: int = 7 * 86400,
    ) -> None:
        """*group_start* is where a group created by :meth:`ensure_group` starts: ``"0"``
        (default) takes the entries already in the stream, e.g. jobs submitted before the
        first worker started or after Redis lost the group; ``"$"`` only later ones."""
        self.client = client
        self.stream = stream
        self.group = group
        self.consumer = consumer
        self.clock = clock
        self.block_ms = block_ms
        self.lease_ms = lease_ms
        self.max_deliveries = max_deliveries
        self.dead_stream = dead_stream
        self.group_start = group_start
        #: a value longer than this is not read (the job limit: such a job is refused)
        self.max_value_bytes = max(4096, max_value_bytes)
        self.dead_maxlen = dead_maxlen
        self.dead_payload_bytes = dead_payload_bytes
        #: the refusal record of an entry (``Keys.refused``), kept refused_ttl seconds
        self.refused_key = refused_key or (lambda entry_id: f"{dead_stream}:{{{entry_id}}}")
        self.refused_ttl = refused_ttl
        self._last_progress: float = clock.seconds()
        self._pel_drained = False  # own PEL read through since start (or since a failed read)
        self._pel_cursor = "-"  # XPENDING start of the next own-PEL page
        self._taking = DeferredLock()  # own-PEL reads and janitor claims, one at a time
        self._claim_cursor = "0-0"
        self._in_hand: set[str] = set()
        self._trim_supported = True

    @property
    def last_progress(self) -> float:
        """Clock time of the last successful read or claim round-trip (health = progress)."""
        return self._last_progress

    @property
    def in_hand(self) -> frozenset[str]:
        """Entry ids handed out and not yet acked, dead-lettered, lost or forgotten."""
        return frozenset(self._in_hand)

    def over_cap(self, d: Delivery) -> bool:
        """Whether *d* has been delivered more often than ``max_deliveries``: dead-letter it."""
        return d.deliveries > self.max_deliveries

    def forget(self, entry_id: str) -> None:
        """Stop holding *entry_id* without acking it (left pending: our own PEL read at the
        next start, or another consumer's claim after the lease, picks it up)."""
        self._in_hand.discard(entry_id)

    async def ensure_group(self) -> None:
        """Create the consumer group (and the stream) unless it exists."""
        try:
            await self.client.execute(
                "XGROUP", "CREATE", self.stream, self.group, self.group_start, "MKSTREAM"
            )
        except RedisReplyError as exc:
            if exc.code != "BUSYGROUP":
                raise
            return
        log.info(
            "Created consumer group {group} on {stream} from {start}",
            group=self.group,
            stream=self.stream,
            start=self.group_start,
        )

    async def _recover_group(self, exc: RedisReplyError) -> bool:
        if exc.code != "NOGROUP":
            return False
        log.warn(
            "Consumer group {group} on {stream} is gone ({error}); creating it again",
            group=self.group,
            stream=self.stream,
            error=exc.message,
        )
        await self.ensure_group()
        self._pel_drained = False
        self._pel_cursor = "-"
        self._claim_cursor = "0-0"
        return True

    async def read(self, count: int) -> list[Delivery]:
        """Up to *count* entries: first this consumer's own PEL, then new ones (``>``, BLOCK
        ``block_ms`` on the dedicated connection). ``[]`` when the block times out."""
        count = max(1, min(count, MAX_READ))
        try:
            if not self._pel_drained:
                async with self._taking:
                    own = await self._read_own_pel(count)
                if own:
                    return own
            return await self._read_new(count)
        except RedisReplyError as exc:
            if await self._recover_group(exc):
                return []
            raise

    async def _read_own_pel(self, count: int) -> list[Delivery]:
        while True:
            page = await self.client.execute(
                "XPENDING", self.stream, self.group, self._pel_cursor, "+", count, self.consumer
            )
            self._last_progress = self.clock.seconds()
            if not page:
                self._pel_drained = True
                self._pel_cursor = "-"
                return []
            self._pel_cursor = "(" + _text(page[-1][0])
            ids = [_text(row[0]) for row in page if _text(row[0]) not in self._in_hand]
            if not ids:
                continue
            taken = await self.client.eval(
                TAKE_OWN, [self.stream], [self.group, self.consumer, *self._cap_args(), *ids]
            )
            deliveries: list[Delivery] = []
            for raw_id, n, raw_fields in taken:
                entry_id = _text(raw_id)
                if not raw_fields:  # trimmed or XDEL'd while pending
                    await self._dead_letter_deleted(entry_id)
                    continue
                deliveries.append(self._delivery(entry_id, raw_fields, max(1, int(n))))
            if deliveries:
                self._in_hand.update(d.entry_id for d in deliveries)
                log.info(
                    "Resuming {n} job entries from our own pending list",
                    n=len(deliveries),
                )
                return deliveries

    async def _read_new(self, count: int) -> list[Delivery]:
        try:
            reply = await self.client.blocking(
                "XREADGROUP", "GROUP", self.group, self.consumer, "COUNT", count,
                "BLOCK", self.block_ms, "STREAMS", self.stream, ">",
                block_ms=self.block_ms,
            )  # fmt: skip
        except (RedisUnavailable, CancelledError):
            # entries may have been delivered into our PEL without reaching us: read the PEL
            # again (the ones in hand are skipped without counting a delivery)
            self._pel_drained = False
            self._pel_cursor = "-"
            raise
        self._last_progress = self.clock.seconds()
        if not reply:
            return []
        deliveries: list[Delivery] = []
        for raw_id, raw_fields in reply[0][1]:
            entry_id = _text(raw_id)
            if raw_fields is None:
                await self._dead_letter_deleted(entry_id)
                continue
            deliveries.append(self._delivery(entry_id, raw_fields, 1))
        self._in_hand.update(d.entry_id for d in deliveries)
        return deliveries

    async def claim_idle(self, count: int) -> list[Delivery]:
        """Janitor: take over up to *count* entries idle past the lease (``XAUTOCLAIM``), from
        any consumer of the group. Entries deleted meanwhile go to the dead-letter stream."""
        async with self._taking:
            return await self._claim_idle(count)

    async def _claim_idle(self, count: int) -> list[Delivery]:
        try:
            reply = await self.client.eval(
                AUTOCLAIM, [self.stream],
                [self.group, self.consumer, self.lease_ms, self._claim_cursor, count,
                 *self._cap_args()],
            )  # fmt: skip
        except RedisReplyError as exc:
            if await self._recover_group(exc):
                return []
            raise
        self._last_progress = self.clock.seconds()
        self._claim_cursor = _text(reply[0])
        found: list[tuple[str, Any]] = []
        deleted: list[str] = [_text(i) for i in reply[2]] if len(reply) > 2 else []
        for entry in reply[1]:
            if entry is None:  # Redis 6.2: a deleted entry without its id
                continue
            entry_id = _text(entry[0])
            if entry[1] is None:
                deleted.append(entry_id)
            elif entry_id not in self._in_hand:  # our own, idle because renewal was late
                found.append((entry_id, entry[1]))
        for entry_id in deleted:
            await self._dead_letter_deleted(entry_id)
        if not found:
            return []
        counts = await self._delivery_counts([entry_id for entry_id, _ in found])
        deliveries = [
            self._delivery(entry_id, raw, max(1, counts.get(entry_id, 1)))
            for entry_id, raw in found
        ]
        self._in_hand.update(d.entry_id for d in deliveries)
        return deliveries

    async def renew(self, entry_id: str) -> bool:
        """Renew the lease of *entry_id* if it is still ours; ``False`` when another consumer
        took it over (or it is gone): stop working on it, its new owner redoes it."""
        try:
            owned = await self.client.eval(
                RENEW, [self.stream], [self.group, self.consumer, entry_id]
            )
        except RedisReplyError as exc:
            if exc.code != "NOGROUP":
                raise
            owned = 0
        # a worker whose capacity is full reads nothing new for as long as its jobs run;
        # its lease renewals are its round trips with Redis then (watchdog health)
        self._last_progress = self.clock.seconds()
        if owned:
            return True
        log.warn(
            "Job entry {entry} is no longer ours (claimed by another consumer, or deleted)",
            entry=entry_id,
        )
        self._in_hand.discard(entry_id)
        return False

    async def ack(self, entry_id: str) -> None:
        """Done with *entry_id*: acknowledge it (after its results are written)."""
        await self.client.execute("XACK", self.stream, self.group, entry_id)
        self._in_hand.discard(entry_id)

    async def ack_ended(self, entry_id: str, job_key: str, attempt: str) -> bool:
        """Acknowledge *entry_id* only if the job hash *job_key* records *attempt*'s end
        (see ``ACK_ENDED``); ``False`` (nothing acknowledged) when it does not."""
        done = await self.client.eval(
            ACK_ENDED, [self.stream, job_key], [self.group, entry_id, attempt]
        )
        if int(done) == 1:
            self._in_hand.discard(entry_id)
            return True
        return False

    async def release(self, entry_id: str, *, timeout: float | None = None) -> None:
        """Hand *entry_id* back: make it claimable at once by any consumer (``XCLAIM`` to
        ourselves with an idle time past the lease, ``JUSTID``: no delivery counted)."""
        await self.client.execute(
            "XCLAIM", self.stream, self.group, self.consumer, 0, entry_id,
            "IDLE", self.lease_ms + 1000, "JUSTID",
            timeout=timeout,
        )  # fmt: skip

    async def lengths(self) -> tuple[int, int]:
        """The stream's length (``XLEN``) and the group's pending entries (``XPENDING``)."""
        depth = await self.client.execute("XLEN", self.stream)
        pending = await self.client.execute("XPENDING", self.stream, self.group)
        return int(depth or 0), int(pending[0]) if pending else 0

    async def dead_letter(
        self, delivery: Delivery, reason: str, *, only_if_pending: bool = True
    ) -> None:
        """Copy the entry to the dead-letter stream with *reason* and acknowledge it,
        atomically. The copy is made in Redis from the stream (first ``dead_payload_bytes``
        of each value, with its size when cut), and the dead-letter stream is trimmed to
        about ``dead_maxlen``. With *only_if_pending* (the default) an entry that is no
        longer pending (acknowledged meanwhile, or dead-lettered by an earlier try of this
        call) is left alone, so retrying is safe."""
        await self.client.eval(
            DEAD_LETTER,
            [delivery.stream, self.dead_stream, self.refused_key(delivery.entry_id)],
            [
                self.group,
                delivery.entry_id,
                reason,
                delivery.deliveries,
                self._now_iso(),
                "1" if only_if_pending else "0",
                self.dead_maxlen,
                self.dead_payload_bytes,
                self.refused_ttl,
            ],
        )
        self._in_hand.discard(delivery.entry_id)
        log.warn(
            "Job entry {entry} dead-lettered to {dead} after {deliveries} deliveries: {reason}",
            entry=delivery.entry_id,
            dead=self.dead_stream,
            deliveries=delivery.deliveries,
            reason=reason,
        )

    async def trim(self) -> int:
        """Drop acknowledged entries older than anything a group still needs (``XTRIM MINID``
        to the oldest pending or not yet delivered entry of every group). Never drops an
        unacknowledged entry. Does nothing on Redis < 6.2. The number of entries removed."""
        if not self._trim_supported:
            return 0
        try:
            groups = await self.client.execute("XINFO", "GROUPS", self.stream)
        except RedisReplyError as exc:
            if "no such key" in exc.message:
                return 0
            raise
        floor: tuple[int, int] | None = None
        for raw in groups:
            info = {_text(raw[i]): raw[i + 1] for i in range(0, len(raw) - 1, 2)}
            name = info["name"]
            ms, seq = _stream_id(_text(info["last-delivered-id"]))
            group_floor = (ms, seq + 1)  # the first entry this group has not been given
            summary = await self.client.execute("XPENDING", self.stream, name)
            if summary and int(summary[0]) > 0 and summary[1] is not None:
                group_floor = min(group_floor, _stream_id(_text(summary[1])))
            floor = group_floor if floor is None else min(floor, group_floor)
        if floor is None:
            return 0  # no group: nobody to say what was processed
        try:
            removed = await self.client.execute(
                "XTRIM", self.stream, "MINID", f"{floor[0]}-{floor[1]}"
            )
        except RedisReplyError as exc:
            if exc.message.lower().startswith("syntax"):
                self._trim_supported = False
                log.warn("Redis has no XTRIM MINID (< 6.2): {stream} is not trimmed",
                         stream=self.stream)  # fmt: skip
                return 0
            raise
        return int(removed)

    # helpers

    def _cap_args(self) -> list[Any]:
        return [self.client.cut_token, self.max_value_bytes, MAX_FIELDS]

    def _delivery(self, entry_id: str, raw: Any, deliveries: int) -> Delivery:
        """A delivery from an entry's raw field list, with what the caps cut as a refusal."""
        refusal = None
        whole = self.client.cut(raw)
        if whole is not None or not isinstance(raw, list):
            size = whole[1] if whole is not None else 0
            refusal = (
                f"the stream entry has {size // 2} fields, more than the limit of {MAX_FIELDS} "
                "(not read)"
            )
            return Delivery(self.stream, entry_id, {}, deliveries, refusal)
        for value in raw:
            cut = self.client.cut(value)
            if cut is not None:
                refusal = (
                    f"the stream entry holds a value of {cut[1]} bytes, more than the limit of "
                    f"{self.max_value_bytes} (not read)"
                )
                break
        fields = {} if refusal is not None else _fields(raw)
        return Delivery(self.stream, entry_id, fields, deliveries, refusal)

    async def _delivery_counts(self, entry_ids: Sequence[str]) -> dict[str, int]:
        reply = await self.client.eval(COUNTS, [self.stream], [self.group, *entry_ids])
        return {entry_id: int(n) for entry_id, n in zip(entry_ids, reply, strict=False)}

    async def _dead_letter_deleted(self, entry_id: str) -> None:
        log.warn(
            "Job entry {entry} of {stream} was deleted before it was processed",
            entry=entry_id,
            stream=self.stream,
        )
        await self.dead_letter(
            Delivery(self.stream, entry_id, {}, 0), DELETED_REASON, only_if_pending=False
        )

    def _now_iso(self) -> str:
        when = datetime.fromtimestamp(self.clock.seconds(), UTC)
        return when.isoformat(timespec="milliseconds").replace("+00:00", "Z")
