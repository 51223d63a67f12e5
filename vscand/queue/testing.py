"""An in-memory :class:`~vscand.queue.worker_queue.WorkerQueue`: the worker's Redis, faked.

Like treq's ``testing`` module this is a real fake, not a mock: :class:`FakeWorkerQueue`
keeps a jobs stream, its group's pending entries list (owner, deliveries, idle time), job
hashes with their fenced attempt, results, dead letters and heartbeats, and implements each
named operation in Python with the semantics of the Lua scripts behind the real one
(fencing by attempt, owner-checked renewal, acknowledgement only of an ended attempt). It
runs on a ``twisted.internet.task.Clock``, so a whole worker can be driven in-process::

    clock = Clock()
    queue = FakeWorkerQueue(clock)
    worker = WorkerService(config, clock, queue=queue, probes=..., engine_factory=...)
    worker.startService()
    entry = queue.submit({"id": "j1", "targets": ["127.0.0.1"], "ports": "80"})
    clock.advance(1)

Test hooks make what another worker or a user does happen: :meth:`~FakeWorkerQueue.submit`,
:meth:`~FakeWorkerQueue.take_over` (another consumer claims an entry and fences the job),
:meth:`~FakeWorkerQueue.request_cancel`, and :attr:`~FakeWorkerQueue.down` (every operation
fails with :class:`~vscand.queue.errors.RedisUnavailable`, as in an outage).
"""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from vscand.jobs.schema import Job
from vscand.queue.consumer import Delivery
from vscand.queue.errors import RedisUnavailable
from vscand.queue.heartbeat import Heartbeat
from vscand.queue.keys import Keys
from vscand.queue.results import FINAL_STATUSES, BeginState, SplitState
from vscand.queue.stale import StaleSelection
from vscand.targets.policy import TargetPolicy


@dataclass
class PendingEntry:
    """One entry of the group's pending entries list."""

    owner: str
    deliveries: int
    delivered_at: float


@dataclass
class DeadLetter:
    entry_id: str
    reason: str
    deliveries: int


@dataclass
class FakeJob:
    """A job hash and its results."""

    fields: dict[str, str] = field(default_factory=dict)
    results: list[Mapping[str, Any]] = field(default_factory=list)


class FakeWorkerQueue:
    """The named operations of one worker on an in-memory queue (see the module)."""

    def __init__(
        self,
        clock: Any,
        *,
        consumer: str = "worker-1",
        stream: str | None = None,
        lease_ms: int = 120_000,
        block_ms: int = 5000,
        max_deliveries: int = 3,
    ) -> None:
        self.clock = clock
        self.keys = Keys()
        self.consumer = consumer
        self.stream = stream or self.keys.jobs
        self.lease_ms = lease_ms
        self.block_ms = block_ms
        self.max_deliveries = max_deliveries
        #: the stream: entry id → fields, in order
        self.entries: dict[str, dict[bytes, bytes]] = {}
        self._delivered = 0  # entries of `entries` handed out by XREADGROUP ">"
        self.pending: dict[str, PendingEntry] = {}
        self.acked: list[str] = []
        self.dead: list[DeadLetter] = []
        self.jobs: dict[str, FakeJob] = {}
        self.released: list[str] = []
        self.heartbeats: dict[str, dict[str, Any]] = {}
        self.signatures: dict[str, str] = {}
        self.schedule_ticks = 0
        self.stale = StaleSelection()
        #: every operation fails with RedisUnavailable while this is true
        self.down = False
        self.connected = False
        self._sequence = 0
        self._in_hand: set[str] = set()
        self._pel_drained = False  # own pending entries read back since connect
        self._last_progress = float(clock.seconds())
        self._readers: list[defer.Deferred[None]] = []

    # -- test hooks -----------------------------------------------------------

    def submit(self, document: Mapping[str, Any] | bytes, entry_id: str | None = None) -> str:
        """``XADD`` a job entry (a document is encoded as JSON); its entry id."""
        if entry_id is None:
            self._sequence += 1
            entry_id = f"{int(self.clock.seconds() * 1000)}-{self._sequence}"
        raw = document if isinstance(document, bytes) else json.dumps(document).encode()
        self.entries[entry_id] = {b"job": raw}
        self._wake_readers()
        return entry_id

    def take_over(self, entry_id: str, by: str = "worker-2") -> None:
        """Another consumer claims *entry_id* and begins a new attempt of its job: this
        worker's renewals and fenced writes fail from now on."""
        self.pending[entry_id] = PendingEntry(by, self.pending[entry_id].deliveries + 1, 0.0)
        for job in self.jobs.values():
            if job.fields.get("entry") == entry_id:
                job.fields["attempt"] = f"taken-over-by-{by}"
                job.fields["worker"] = by

    def request_cancel(self, job_id: str) -> None:
        self.job(job_id).fields["cancel"] = "1"

    def job(self, job_id: str) -> FakeJob:
        return self.jobs.setdefault(job_id, FakeJob())

    def status(self, job_id: str) -> str | None:
        return self.jobs[job_id].fields.get("status") if job_id in self.jobs else None

    # -- helpers --------------------------------------------------------------

    def _check(self) -> None:
        if self.down or not self.connected:
            raise RedisUnavailable("the fake Redis is down" if self.down else "not connected")

    def _now(self) -> float:
        return float(self.clock.seconds())

    def _fenced(self, job_id: str, attempt: str) -> FakeJob | None:
        job = self.jobs.get(job_id)
        if job is None or job.fields.get("attempt") != attempt:
            return None
        return job

    def _wake_readers(self) -> None:
        readers, self._readers = self._readers, []
        for reader in readers:
            reader.callback(None)

    def _deliver(self, entry_id: str, deliveries: int) -> Delivery:
        self.pending[entry_id] = PendingEntry(self.consumer, deliveries, self._now())
        self._in_hand.add(entry_id)
        return Delivery(self.stream, entry_id, dict(self.entries[entry_id]), deliveries)

    # -- WorkerQueue ----------------------------------------------------------

    @property
    def last_progress(self) -> float:
        return self._last_progress

    async def connect(self) -> None:
        if self.down:
            raise RedisUnavailable("the fake Redis is down")
        self.connected = True
        self._pel_drained = False

    async def disconnect(self) -> None:
        self.connected = False
        readers, self._readers = self._readers, []
        for reader in readers:
            reader.errback(RedisUnavailable("connection closed"))

    async def ensure_group(self) -> None:
        self._check()

    async def migrate(self, sleep: Callable[[float], Awaitable[object]]) -> None:
        self._check()

    async def read(self, count: int) -> list[Delivery]:
        """Own pending entries not in hand first (once after connecting), then new ones;
        blocks (on the clock) up to ``block_ms`` for a new entry."""
        self._check()
        own = [
            entry_id
            for entry_id, p in self.pending.items()
            if p.owner == self.consumer and entry_id not in self._in_hand
        ]
        if not own:
            self._pel_drained = True
        if own and not self._pel_drained:
            self._last_progress = self._now()
            return [self._deliver(e, self.pending[e].deliveries + 1) for e in own[:count]]
        if self._delivered >= len(self.entries):
            waiter: defer.Deferred[None] = defer.Deferred()
            self._readers.append(waiter)
            timeout = self.clock.callLater(self.block_ms / 1000.0, self._wake_readers)
            try:
                await waiter
            finally:
                if timeout.active():
                    timeout.cancel()
            self._check()
        new = list(self.entries)[self._delivered : self._delivered + count]
        self._delivered += len(new)
        self._last_progress = self._now()
        return [self._deliver(entry_id, 1) for entry_id in new]

    async def claim_idle(self, count: int) -> list[Delivery]:
        self._check()
        self._last_progress = self._now()
        idle = [
            entry_id
            for entry_id, p in self.pending.items()
            if (self._now() - p.delivered_at) * 1000 >= self.lease_ms
            and entry_id not in self._in_hand
        ]
        return [self._deliver(e, self.pending[e].deliveries + 1) for e in idle[:count]]

    def over_cap(self, delivery: Delivery) -> bool:
        return delivery.deliveries > self.max_deliveries

    def forget(self, entry_id: str) -> None:
        self._in_hand.discard(entry_id)

    async def claim_signature(self, job: Job, entry_id: str) -> bool:
        self._check()
        return self.signatures.setdefault(job.id, entry_id) == entry_id

    async def begin(self, job: Job, entry_id: str, attempt: str) -> BeginState:
        self._check()
        record = self.job(job.id)
        fields = record.fields
        if fields.get("entry", entry_id) != entry_id:
            return "duplicate"
        if fields.get("status") in FINAL_STATUSES or fields.get("sharded") == "1":
            return "done"
        if job.parent is not None and fields.get("parent") != job.parent:
            return "orphan"
        record.results.clear()
        fields.update(entry=entry_id, attempt=attempt, worker=self.consumer, id=job.id)
        fields.update(ports_done="0")
        if fields.get("cancel") == "1":
            return "cancelled"
        fields["status"] = "running"
        return "run"

    async def renew(self, entry_id: str) -> bool:
        self._check()
        self._last_progress = self._now()
        p = self.pending.get(entry_id)
        if p is None or p.owner != self.consumer:
            self._in_hand.discard(entry_id)
            return False
        p.delivered_at = self._now()
        return True

    async def cancel_requested(self, job_id: str) -> bool:
        self._check()
        return self.job(job_id).fields.get("cancel") == "1"

    async def set_total(self, job_id: str, attempt: str, total: int) -> bool:
        self._check()
        job = self._fenced(job_id, attempt)
        if job is None:
            return False
        job.fields["ports_total"] = str(total)
        return True

    async def write_result(self, job_id: str, attempt: str, result: Mapping[str, Any]) -> bool:
        self._check()
        job = self._fenced(job_id, attempt)
        if job is None or job.fields.get("status") != "running":
            return False
        job.results.append(result)
        job.fields["ports_done"] = str(len(job.results))
        return True

    async def finish(
        self, job_id: str, attempt: str, status: str, error: str | None = None
    ) -> bool:
        self._check()
        job = self._fenced(job_id, attempt)
        if job is None:
            return False
        job.fields["status"] = status
        if error:
            job.fields["error"] = error
        return True

    async def split(
        self, job: Job, attempt: str, total: int, documents: Sequence[bytes]
    ) -> SplitState:
        self._check()
        parent = self._fenced(job.id, attempt)
        if parent is None:
            return "lost"
        if parent.fields.get("cancel") == "1":
            return "cancelled"
        parent.fields.update(sharded="1", ports_total=str(total), tasks_total=str(len(documents)))
        for document in documents:
            task = json.loads(document)
            entry_id = self.submit(document)
            self.job(task["id"]).fields.update(
                parent=job.id, status="queued", entry=entry_id, id=task["id"]
            )
        return "split"

    async def stale_endpoints(
        self, *, stale_after: float, targets: Sequence[str], policy: TargetPolicy, limit: int
    ) -> StaleSelection:
        self._check()
        return self.stale

    async def ack(self, entry_id: str) -> None:
        self._check()
        if self.pending.pop(entry_id, None) is not None:
            self.acked.append(entry_id)
        self._in_hand.discard(entry_id)

    async def ack_ended(self, entry_id: str, job_id: str, attempt: str) -> bool:
        self._check()
        job = self._fenced(job_id, attempt)
        if job is None:
            return False
        if job.fields.get("status") not in FINAL_STATUSES and job.fields.get("sharded") != "1":
            return False
        await self.ack(entry_id)
        return True

    async def confirm_replicas(self, wanted: int, timeout_ms: int) -> None:
        self._check()

    async def reject(self, job_id: str, entry_id: str, reason: str) -> bool:
        self._check()
        fields = self.job(job_id).fields
        if fields.get("entry", entry_id) != entry_id or fields.get("status") in (
            "done",
            "cancelled",
        ):
            return False
        fields.update(status="failed", error=reason, entry=entry_id, id=job_id)
        return True

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        self._check()
        if self.pending.pop(delivery.entry_id, None) is not None:
            self.dead.append(DeadLetter(delivery.entry_id, reason, delivery.deliveries))
        self._in_hand.discard(delivery.entry_id)

    async def release(self, entry_id: str, job_id: str) -> None:
        self._check()
        p = self.pending.get(entry_id)
        if p is not None:
            p.owner, p.delivered_at = self.consumer, float("-inf")  # claimable at once
        self.job(job_id).fields.update(status="queued", released_by=self.consumer)
        self.released.append(entry_id)

    async def write_heartbeat(self, beat: Heartbeat) -> None:
        self._check()
        self.heartbeats[beat.consumer] = json.loads(beat.encode())

    async def lengths(self) -> tuple[int, int]:
        self._check()
        return len(self.entries), len(self.pending)

    async def trim(self) -> None:
        self._check()

    async def schedules_tick(self) -> None:
        self._check()
        self.schedule_ticks += 1
