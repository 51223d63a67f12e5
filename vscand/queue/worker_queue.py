"""Every Redis operation a worker makes, by name: the daemon's one door to Redis.

:class:`WorkerQueue` is the interface the daemon's services are written against (so
:mod:`vscand.queue.testing` can stand in for Redis in-process); :class:`RedisWorkerQueue`
is the real one, over one :class:`~vscand.queue.client.RedisClient`, a
:class:`~vscand.queue.consumer.JobConsumer` of the queue's stream and a
:class:`~vscand.queue.results.ResultWriter`. Each method is one named operation (most are
one Lua script or one command); none retries: the caller wraps the ones it must not lose
in :func:`vscand.queue.retry.retrying`.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from typing import Any, Protocol

from vscand.jobs.schema import Job
from vscand.queue import schedule_tick, stale
from vscand.queue.client import RedisClient
from vscand.queue.consumer import Delivery, JobConsumer, reader_limits
from vscand.queue.errors import RedisUnavailable
from vscand.queue.heartbeat import Heartbeat, write_heartbeat
from vscand.queue.keys import Keys
from vscand.queue.migrate import migrate
from vscand.queue.replay import claim_signature
from vscand.queue.results import BeginState, ResultWriter, SplitState
from vscand.targets.policy import TargetPolicy

#: seconds a release (shutdown) may wait for each of its commands
RELEASE_TIMEOUT = 2.0


class ReplicasBehind(RedisUnavailable):
    """``WAIT`` returned before enough replicas had the writes: try again."""


class WorkerQueue(Protocol):
    """The named Redis operations of one worker (one consumer of one jobs stream)."""

    stream: str

    @property
    def last_progress(self) -> float:
        """Clock time of the last read, claim or renewal round trip (health)."""

    async def connect(self) -> None: ...
    async def disconnect(self) -> None: ...
    async def ensure_group(self) -> None: ...
    async def migrate(self, sleep: Callable[[float], Awaitable[object]]) -> None: ...

    # intake
    async def read(self, count: int) -> list[Delivery]: ...
    async def claim_idle(self, count: int) -> list[Delivery]: ...
    def over_cap(self, delivery: Delivery) -> bool: ...
    def forget(self, entry_id: str) -> None: ...
    async def claim_signature(self, job: Job, entry_id: str) -> bool: ...

    # a job attempt
    async def begin(self, job: Job, entry_id: str, attempt: str) -> BeginState: ...
    async def renew(self, entry_id: str) -> bool: ...
    async def cancel_requested(self, job_id: str) -> bool: ...
    async def set_total(self, job_id: str, attempt: str, total: int) -> bool: ...
    async def write_result(self, job_id: str, attempt: str, result: Mapping[str, Any]) -> bool: ...
    async def finish(
        self, job_id: str, attempt: str, status: str, error: str | None = None
    ) -> bool: ...
    async def split(
        self, job: Job, attempt: str, total: int, documents: Sequence[bytes]
    ) -> SplitState: ...
    async def stale_endpoints(
        self, *, stale_after: float, targets: Sequence[str], policy: TargetPolicy, limit: int
    ) -> stale.StaleSelection: ...

    # an entry's end
    async def ack(self, entry_id: str) -> None: ...
    async def ack_ended(self, entry_id: str, job_id: str, attempt: str) -> bool: ...
    async def confirm_replicas(self, wanted: int, timeout_ms: int) -> None: ...
    async def reject(self, job_id: str, entry_id: str, reason: str) -> bool: ...
    async def dead_letter(self, delivery: Delivery, reason: str) -> None: ...
    async def release(self, entry_id: str, job_id: str) -> None: ...

    # fleet duties
    async def write_heartbeat(self, beat: Heartbeat) -> None: ...
    async def lengths(self) -> tuple[int, int]: ...
    async def trim(self) -> None: ...
    async def schedules_tick(self) -> None: ...


class RedisWorkerQueue:
    """:class:`WorkerQueue` on a real Redis (see the module docstring)."""

    def __init__(
        self,
        clock: Any,
        keys: Keys,
        *,
        redis_url: str,
        stream: str,
        consumer: str,
        command_timeout: float,
        block_ms: int,
        lease_ms: int,
        max_deliveries: int,
        max_job_bytes: int,
        dead_maxlen: int,
        dead_payload_bytes: int,
        results_maxlen: int,
        retention: int,
    ) -> None:
        self.clock = clock
        self.keys = keys
        self.stream = stream
        self.command_timeout = command_timeout
        self._client_options: dict[str, Any] = {
            "command_timeout": command_timeout,
            "client_name": f"vscand:{consumer}",
            # entries are untrusted: values over the job limit are never read
            "reader_limits": reader_limits(max_job_bytes),
        }
        self.redis_url = redis_url
        self._consumer_options: dict[str, Any] = {
            "stream": stream,
            "consumer": consumer,
            "clock": clock,
            "block_ms": block_ms,
            "lease_ms": lease_ms,
            "max_deliveries": max_deliveries,
            "dead_stream": keys.dead,
            "max_value_bytes": max_job_bytes,
            "dead_maxlen": dead_maxlen,
            "dead_payload_bytes": dead_payload_bytes,
            "refused_key": keys.refused,
        }
        self._writer_options: dict[str, Any] = {
            "worker": consumer,
            "results_maxlen": results_maxlen,
            "retention": retention,
        }
        # made by the first connect(): nothing touches the network or the reactor before
        self._client: RedisClient | None = None
        self._consumer: JobConsumer | None = None
        self._writer: ResultWriter | None = None

    @property
    def client(self) -> RedisClient:
        assert self._client is not None, "connect() first"
        return self._client

    @property
    def consumer(self) -> JobConsumer:
        assert self._consumer is not None, "connect() first"
        return self._consumer

    @property
    def writer(self) -> ResultWriter:
        assert self._writer is not None, "connect() first"
        return self._writer

    @property
    def last_progress(self) -> float:
        if self._consumer is None:
            return float(self.clock.seconds())
        return self._consumer.last_progress

    async def connect(self) -> None:
        if self._client is None:
            self._client = RedisClient(self.clock, self.redis_url, **self._client_options)
        await self._client.connect()
        if self._consumer is None:
            # its progress clock starts at the first round trip's eve
            self._consumer = JobConsumer(self._client, **self._consumer_options)
            self._writer = ResultWriter(self._client, self.keys, **self._writer_options)

    async def disconnect(self) -> None:
        if self._client is not None:
            await self._client.disconnect()

    async def ensure_group(self) -> None:
        await self.consumer.ensure_group()

    async def migrate(self, sleep: Callable[[float], Awaitable[object]]) -> None:
        await migrate(self.client, self.keys, sleep)

    async def read(self, count: int) -> list[Delivery]:
        return await self.consumer.read(count)

    async def claim_idle(self, count: int) -> list[Delivery]:
        return await self.consumer.claim_idle(count)

    def over_cap(self, delivery: Delivery) -> bool:
        return self.consumer.over_cap(delivery)

    def forget(self, entry_id: str) -> None:
        self.consumer.forget(entry_id)

    async def claim_signature(self, job: Job, entry_id: str) -> bool:
        return await claim_signature(self.client, self.keys, job, entry_id)

    async def begin(self, job: Job, entry_id: str, attempt: str) -> BeginState:
        return await self.writer.begin(job, entry_id, attempt)

    async def renew(self, entry_id: str) -> bool:
        return await self.consumer.renew(entry_id)

    async def cancel_requested(self, job_id: str) -> bool:
        return await self.writer.cancel_requested(job_id)

    async def set_total(self, job_id: str, attempt: str, total: int) -> bool:
        return await self.writer.set_total(job_id, attempt, total)

    async def write_result(self, job_id: str, attempt: str, result: Mapping[str, Any]) -> bool:
        return await self.writer.write(job_id, attempt, result)

    async def finish(
        self, job_id: str, attempt: str, status: str, error: str | None = None
    ) -> bool:
        return await self.writer.finish(job_id, attempt, status, error)

    async def split(
        self, job: Job, attempt: str, total: int, documents: Sequence[bytes]
    ) -> SplitState:
        return await self.writer.split(job, attempt, total, list(documents), self.stream)

    async def stale_endpoints(
        self, *, stale_after: float, targets: Sequence[str], policy: TargetPolicy, limit: int
    ) -> stale.StaleSelection:
        return await stale.stale_endpoints(
            self.client,
            self.keys,
            stale_after=stale_after,
            targets=targets,
            policy=policy,
            limit=limit,
        )

    async def ack(self, entry_id: str) -> None:
        await self.consumer.ack(entry_id)

    async def ack_ended(self, entry_id: str, job_id: str, attempt: str) -> bool:
        return await self.consumer.ack_ended(entry_id, self.keys.job(job_id), attempt)

    async def confirm_replicas(self, wanted: int, timeout_ms: int) -> None:
        """``WAIT`` until *wanted* replicas have every write this connection made;
        :class:`ReplicasBehind` when fewer confirmed within *timeout_ms*."""
        bound = timeout_ms / 1000.0 + self.command_timeout
        reached = int(await self.client.execute("WAIT", wanted, timeout_ms, timeout=bound))
        if reached < wanted:
            raise ReplicasBehind(f"{reached} of {wanted} replicas confirmed within {timeout_ms} ms")

    async def reject(self, job_id: str, entry_id: str, reason: str) -> bool:
        return await self.writer.reject(job_id, entry_id, reason)

    async def dead_letter(self, delivery: Delivery, reason: str) -> None:
        await self.consumer.dead_letter(delivery, reason)

    async def release(self, entry_id: str, job_id: str) -> None:
        """Hand a job this worker cannot finish back: its entry claimable at once, its
        hash ``queued`` again (each command bounded by :data:`RELEASE_TIMEOUT`)."""
        await self.consumer.release(entry_id, timeout=RELEASE_TIMEOUT)
        await self.writer.released(job_id, timeout=RELEASE_TIMEOUT)

    async def write_heartbeat(self, beat: Heartbeat) -> None:
        await write_heartbeat(self.client, self.keys, beat)

    async def lengths(self) -> tuple[int, int]:
        return await self.consumer.lengths()

    async def trim(self) -> None:
        await self.consumer.trim()

    async def schedules_tick(self) -> None:
        await schedule_tick.tick(self.client, self.keys)
