"""What the worker's services share: configuration, clock, the queue, the attempts in hand.

:class:`WorkerState` is plain data and the few helpers every service needs (the retry of
an operation that must not be lost, the loop error handler). It is made once by
:class:`vscand.daemon.worker.WorkerService` and handed to each child service; the scan
engine, the probe database and the services table are set once the worker has started.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from twisted.internet import defer
from twisted.logger import Logger

from vscand.config import DaemonConfig
from vscand.daemon.attempt import JobAttempt
from vscand.daemon.backpressure import WriteGate
from vscand.daemon.lograte import RateLimitedLog
from vscand.daemon.metrics import DaemonMetrics
from vscand.jobs.schema import JobLimits
from vscand.jobs.signing import JobVerifier, load_key
from vscand.ports import ServicesTable
from vscand.queue.errors import RedisUnavailable
from vscand.queue.keys import Keys
from vscand.queue.retry import retrying
from vscand.queue.worker_queue import WorkerQueue
from vscand.scan.engine import ScanEngine
from vscand.targets.policy import TargetPolicy

log = Logger()

T = TypeVar("T")

#: tries a stopping worker still makes of an operation before it gives up on Redis
TRIES_WHILE_STOPPING = 4


@dataclass(eq=False)
class WorkerState:
    config: DaemonConfig
    reactor: Any
    queue: WorkerQueue
    warnings: RateLimitedLog
    metrics: DaemonMetrics = field(default_factory=DaemonMetrics)
    #: attempts running, by entry id
    attempts: dict[str, JobAttempt] = field(default_factory=dict)
    #: entries delivered to this worker and not yet handled to the end (max_jobs)
    handling: set[str] = field(default_factory=set)
    stopping: bool = False
    started_at: float = field(default_factory=time.time)
    jobs_done: int = 0
    results_written: int = 0
    # set by the worker's start
    engine: ScanEngine | None = None
    services: ServicesTable | None = None
    exclude: Any = None
    #: the Nmap release the probe database reproduces (decides the version-script set)
    nmap_release: str | None = None

    def __post_init__(self) -> None:
        config = self.config
        self.keys = Keys(config.key_prefix)
        self.policy = TargetPolicy(
            allow=list(config.allow), deny=list(config.deny), allow_names=config.allow_names
        )
        self.limits = JobLimits(
            max_bytes=config.max_job_bytes, max_port_tasks=config.max_job_port_tasks
        )
        self.job_key = load_key(config.job_key_file) if config.job_key_file else None
        self.verifier = JobVerifier(self.job_key) if self.job_key is not None else None
        self.max_jobs = config.max_jobs or max(1, min(64, config.concurrency))
        self.port_slots = defer.DeferredSemaphore(max(1, config.concurrency))
        self.gate = WriteGate(
            self.reactor,
            self.warnings,
            max(1, config.max_pending_writes or 2 * config.concurrency),
        )

    async def retrying(self, what: str, function: Callable[..., Awaitable[T]], *args: Any) -> T:
        """Run a Redis operation until it succeeds (or a stopping worker gives up on it)."""

        def warn(error: RedisUnavailable, delay: float) -> None:
            self.warnings.warn(
                f"retry:{what}",
                "{what}: Redis unavailable ({error}); retry in {delay}s",
                what=what,
                error=str(error),
                delay=delay,
            )

        return await retrying(
            self.reactor,
            function,
            *args,
            on_retry=warn,
            give_up=self.give_up,
        )

    def give_up(self, failures: int) -> bool:
        """Whether to stop retrying an operation that failed *failures* times: only a
        stopping worker gives up (after a few tries), a running one never does."""
        return self.stopping and failures >= TRIES_WHILE_STOPPING

    def progress_age(self) -> float:
        return float(self.reactor.seconds() - self.queue.last_progress)

    def ports_in_flight(self) -> int:
        return sum(a.scheduler.in_flight for a in self.attempts.values() if a.scheduler)

    def loop_error(self, failure: Any, name: str) -> None:
        """The errback of a periodic duty: a Redis outage is a rate-limited warning."""
        if failure.check(RedisUnavailable):
            if self.stopping:
                return  # a clean stop closed the connection under it: no outage
            self.warnings.warn(
                f"loop:{name}",
                "{loop}: Redis unavailable: {error}",
                loop=name,
                error=failure.getErrorMessage(),
            )
            return
        log.failure("{loop} failed", failure, loop=name)
