"""The worker's periodic duties, each run by its own ``TimerService``.

* ``renewals``: renew the lease of each running attempt (a lease taken over: the attempt
  is lost); kept running while the worker drains.
* ``cancels``: stop the attempts whose job a user cancelled.
* ``heartbeat``: the worker's heartbeat in the fleet's workers hash (and the queue gauges
  when metrics are served).
* ``trim``: drop acknowledged entries of the jobs stream.
* ``schedules``: enqueue the schedules' due runs (claimed once across the fleet).
* ``gc``: a full garbage collection when idle.
* ``watchdog``: ``WATCHDOG=1`` to systemd while the consumer makes progress.
"""

from __future__ import annotations

import gc
import os
import socket
import time
from collections.abc import Callable

from twisted.application.internet import TimerService
from twisted.logger import Logger

from vscand.daemon import sdnotify
from vscand.daemon.attempt import AttemptState
from vscand.daemon.duty import duty_service
from vscand.daemon.state import WorkerState
from vscand.queue.heartbeat import Heartbeat

log = Logger()

#: how often running jobs are checked for a cancel request
CANCEL_POLL = 1.0
HEARTBEAT_INTERVAL = 5.0
#: seconds between two looks at the schedules (schedules.tick)
SCHEDULE_TICK = 1.0
TRIM_INTERVAL = 60.0
GC_INTERVAL = 30.0


class WorkerDuties:
    """The duties' bodies (see the module docstring), over the worker's shared state."""

    def __init__(self, state: WorkerState, observe_local: Callable[[], None] | None) -> None:
        self.state = state
        #: set when metrics are served: refresh the in-process gauges with each heartbeat
        self.observe_local = observe_local

    async def renew_leases(self) -> None:
        state = self.state
        for attempt in list(state.attempts.values()):
            # the job may have ended while an earlier renewal was awaited: its entry is
            # acknowledged, which is not a lost lease
            if attempt.state not in (AttemptState.RUNNING, AttemptState.CANCELLED):
                continue
            still_ours = await state.queue.renew(attempt.delivery.entry_id)
            if not still_ours and not attempt.finishing:
                log.warn("job {job}: lease lost to another worker; stopping it", job=attempt.job.id)
                attempt.lease_lost()

    async def check_cancels(self) -> None:
        state = self.state
        for attempt in list(state.attempts.values()):
            if attempt.state is not AttemptState.RUNNING or attempt.scheduler is None:
                continue
            if await state.queue.cancel_requested(attempt.job.id):
                if attempt.state is not AttemptState.RUNNING:
                    continue  # it ended meanwhile
                log.info("job {job}: cancel requested", job=attempt.job.id)
                attempt.cancel()

    def heartbeat_now(self) -> Heartbeat:
        state = self.state
        return Heartbeat(
            consumer=state.config.consumer,
            host=socket.gethostname(),
            pid=os.getpid(),
            queue=state.config.queue,
            started_at=state.started_at,
            last_seen=time.time(),
            jobs=tuple(a.job.id for a in state.attempts.values()),
            ports_in_flight=state.ports_in_flight(),
            jobs_done=state.jobs_done,
            results_written=state.results_written,
            last_progress_age_s=state.progress_age(),
            pending_writes=state.gate.pending_writes,
            pending_writes_peak=state.gate.pending_writes_peak,
            max_pending_writes=state.gate.max_pending_writes,
        )

    async def heartbeat(self) -> None:
        state = self.state
        await state.queue.write_heartbeat(self.heartbeat_now())
        if self.observe_local is not None:  # metrics: the gauges Redis knows
            self.observe_local()
            depth, pending = await state.queue.lengths()
            state.metrics.observe_queue(depth, pending)

    async def trim(self) -> None:
        await self.state.queue.trim()

    async def schedules_tick(self) -> None:
        """Enqueue the schedules' due runs (claimed atomically: once across the fleet)."""
        if not self.state.stopping:
            await self.state.queue.schedules_tick()

    async def collect_when_idle(self) -> None:
        """Full garbage collections are rare under load (``tune_gc``): run one when idle."""
        if not self.state.attempts:
            gc.collect()

    async def watchdog(self) -> None:
        # health = consumption progress: a read round-trip completes every block_ms
        config = self.state.config
        limit = 2 * config.block_ms / 1000.0 + 2 * config.command_timeout + 5
        age = self.state.progress_age()
        if age <= limit:
            sdnotify.notify("WATCHDOG=1")
        else:
            log.warn("no consumption progress for {age:.1f}s: not petting the watchdog", age=age)

    def services(self) -> list[TimerService]:
        """One ``TimerService`` per duty; the first is the renewals'."""
        state = self.state
        lease_s = state.config.job_idle_ms / 1000.0
        duties = [
            ("renewals", max(0.5, lease_s / 3), self.renew_leases),
            ("cancels", CANCEL_POLL, self.check_cancels),
            ("heartbeat", HEARTBEAT_INTERVAL, self.heartbeat),
            ("trim", TRIM_INTERVAL, self.trim),
            ("schedules", SCHEDULE_TICK, self.schedules_tick),
            ("gc", GC_INTERVAL, self.collect_when_idle),
        ]
        interval = sdnotify.watchdog_interval()
        if interval and state.config.watchdog:
            duties.append(("watchdog", interval, self.watchdog))
        return [
            duty_service(name, every, duty, state.reactor, state.loop_error)
            for name, every, duty in duties
        ]
