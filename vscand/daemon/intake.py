"""Job intake: the read loop, the janitor and the worker's capacity.

Entries are taken while fewer than ``max_jobs`` are in hand and the ports already taken
on leave room (:meth:`JobIntake.room_for_jobs`): a worker whose ports are full leaves the
queue's next entries to workers with room, so one big job's tasks spread over the fleet.
The janitor (a child ``TimerService``) takes over entries idle past the lease, from any
consumer of the group. Every entry taken is handed to ``handle`` and counted in hand
until that ends.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from vscand.daemon.duty import duty_service
from vscand.daemon.state import WorkerState
from vscand.queue.consumer import Delivery
from vscand.queue.errors import RedisUnavailable
from vscand.queue.retry import retry_delay

log = Logger()

#: seconds between looks at the worker's free capacity when its ports fill it
CAPACITY_POLL = 0.2
#: the janitor looks for claimable jobs at least this often (and once at start): jobs
#: released by a stopping worker are claimable at once, whatever the lease
JANITOR_MAX_INTERVAL = 5.0


class JobIntake(service.MultiService):
    """Reads entries while there is room and hands each to *handle* (see the module)."""

    def __init__(
        self, state: WorkerState, handle: Callable[[Delivery], Coroutine[Any, Any, None]]
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self.setName("intake")  # type: ignore[no-untyped-call]
        self.state = state
        self.handle = handle
        #: recent jobs' size in ports (moving average): how many entries fit the free
        #: capacity; starts at the shard size, the size of the largest entries there are
        self.job_size = float(state.config.task_ports)
        self._slot_free: defer.Deferred[None] | None = None
        self._read_loop: defer.Deferred[None] | None = None
        lease_s = state.config.job_idle_ms / 1000.0
        duty_service(
            "janitor",
            min(JANITOR_MAX_INTERVAL, max(1.0, lease_s / 2)),
            self.janitor,
            state.reactor,
            state.loop_error,
            now=True,
        ).setServiceParent(self)  # type: ignore[no-untyped-call]

    def startService(self) -> None:
        super().startService()  # type: ignore[no-untyped-call]
        self._read_loop = defer.Deferred.fromCoroutine(self._read_forever())
        self._read_loop.addErrback(lambda f: log.failure("read loop died", f))

    def stopService(self) -> defer.Deferred[None]:
        # the read loop ends at its next turn (a blocked read ends with the connection)
        self.slot_released()
        d: defer.Deferred[None] = super().stopService()  # type: ignore[no-untyped-call]
        return d

    async def _read_forever(self) -> None:
        state = self.state
        failures = 0
        while not state.stopping:
            free = state.max_jobs - len(state.handling)
            if free <= 0:
                self._slot_free = defer.Deferred()
                await self._slot_free
                continue
            room = self.room_for_jobs()
            if room <= 0:
                # the ports already taken on fill the worker: leave the queue's next entries
                # to workers with room, look again as ports end
                await task.deferLater(state.reactor, CAPACITY_POLL)
                continue
            try:
                deliveries = await state.queue.read(min(free, room))
                failures = 0
            except RedisUnavailable as exc:
                if state.stopping:
                    break  # a clean stop closed the reader: no outage to report
                delay = retry_delay(failures)
                failures += 1
                state.warnings.warn(
                    "read",
                    "reading jobs: Redis unavailable ({error}); retry in {delay}s",
                    error=str(exc),
                    delay=delay,
                )
                await task.deferLater(state.reactor, delay)
                continue
            except Exception:
                log.failure("reading jobs failed")
                await task.deferLater(state.reactor, 1.0)
                continue
            for delivery in deliveries:
                if state.stopping:
                    break  # left pending: reclaimed after the lease, or by our own PEL read
                self.start_job(delivery)

    async def janitor(self) -> None:
        state = self.state
        if state.stopping:
            return
        free = state.max_jobs - len(state.handling)
        if free <= 0:
            return
        for delivery in await state.queue.claim_idle(free):
            if delivery.entry_id in state.handling:
                continue
            log.info(
                "claimed job entry {entry} idle past the lease (delivery {n})",
                entry=delivery.entry_id,
                n=delivery.deliveries,
            )
            self.start_job(delivery)

    def committed_ports(self) -> int:
        """Ports of the jobs in hand not yet ended (a job still being planned counts as one
        of the recent average size)."""
        state = self.state
        planned = [a for a in state.attempts.values() if a.ports_total]
        unplanned = len(state.handling) - len(planned)
        return sum(max(0, a.ports_total - a.ports_done) for a in planned) + round(
            unplanned * self.job_size
        )

    def room_for_jobs(self) -> int:
        """How many more entries to take: the free port capacity over the recent average
        job size (at least one when nothing is in hand, so a job bigger than the worker
        still runs)."""
        free_ports = self.state.config.concurrency - self.committed_ports()
        if free_ports <= 0:
            return 0 if self.state.handling else 1
        return max(1, int(free_ports // max(1.0, self.job_size)))

    def job_sized(self, ports: int) -> None:
        """A job of *ports* ports was planned: update the recent average."""
        self.job_size = 0.8 * self.job_size + 0.2 * ports

    def start_job(self, delivery: Delivery) -> None:
        # counted from delivery, not from the start of the scan: the checks and the begin
        # script come first, and a read loop counting only running jobs would take more
        # entries meanwhile than max_jobs allows
        state = self.state
        state.handling.add(delivery.entry_id)
        d = defer.Deferred.fromCoroutine(self.handle(delivery))

        def unhandled(failure: Any) -> None:
            # handle ends every entry itself; only a failure to dead-letter comes here. The
            # entry must not stay "in hand": the janitor claims it after the lease (counting
            # a delivery), and past max_deliveries it is dead-lettered
            log.failure("job entry {entry} could not be ended", failure, entry=delivery.entry_id)
            state.queue.forget(delivery.entry_id)

        d.addErrback(unhandled)

        def handled(_: object) -> None:
            state.handling.discard(delivery.entry_id)
            self.slot_released()

        d.addBoth(handled)

    def slot_released(self) -> None:
        waiter, self._slot_free = self._slot_free, None
        if waiter is not None:
            waiter.callback(None)
