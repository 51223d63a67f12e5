"""The daemon: jobs from a Redis stream, scanned with the engine, results back to Redis.

``WorkerService`` is what ``twistd vscand`` runs.  Its promises:

* a job is acknowledged only after its results and final status are written
  (results are fenced by attempt, so a job taken over by another worker cannot
  be written twice);
* an invalid job is never dropped silently: it is marked ``failed`` with a
  precise error, copied to the dead-letter stream, and acknowledged;
* a job that keeps killing or wedging its workers is dead-lettered once its
  delivery count passes ``max_deliveries``;
* leases of running jobs are renewed; jobs of dead consumers are claimed after
  ``job_idle_ms``;
* SIGTERM stops intake, lets jobs finish until ``drain_timeout``, releases the
  rest (immediately claimable by other workers) and exits before the deadline;
* Redis outages are survived: every command is bounded, the read loop backs off
  and resumes, and health (the systemd watchdog) follows consumption progress.
"""

from __future__ import annotations

import contextlib
import gc
import json
import os
import socket
import time
import uuid
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.application import service
from twisted.internet import defer, task
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from vscand.config import DaemonConfig
from vscand.daemon import sdnotify
from vscand.daemon.lograte import RateLimitedLog
from vscand.daemon.metrics import DaemonMetrics, listen_metrics
from vscand.ports import ServicesTable, load_services
from vscand.probes.matcher import Matcher, load_matcher
from vscand.queue import shards, stale
from vscand.queue.client import RedisClient, RedisUnavailable
from vscand.queue.consumer import Delivery, JobConsumer, reader_limits
from vscand.queue.jobs import (
    Job,
    JobError,
    JobLimits,
    JobSigner,
    JobVerifier,
    claim_signature,
    decode_job,
    entry_job_id,
    id_hint,
    load_key,
    parse_job,
)
from vscand.queue.keys import Keys
from vscand.queue.migrate import migrate
from vscand.queue.results import ResultWriter
from vscand.scan.engine import ScanEngine
from vscand.scan.model import PortTask, Result, ScanOptions
from vscand.scan.scheduler import Scheduler
from vscand.scan.targets import (
    Target,
    TargetError,
    TargetPolicy,
    plan_tasks,
    select_ports,
    system_resolver,
)
from vscand.scripts.registry import make_phase

log = Logger()

#: how often running jobs are checked for a cancel request
CANCEL_POLL = 1.0
HEARTBEAT_INTERVAL = 5.0
#: seconds between two looks at the schedules (schedules.tick)
SCHEDULE_TICK = 1.0
#: the janitor looks for claimable jobs at least this often (and once at start): jobs
#: released by a stopping worker are claimable at once, whatever the lease
JANITOR_MAX_INTERVAL = 5.0


@dataclass
class RunningJob:
    delivery: Delivery
    job: Job
    attempt: str
    started: float
    scheduler: Scheduler | None = None
    done: defer.Deferred[None] = field(default_factory=defer.Deferred)
    ports_done: int = 0
    ports_total: int = 0  # known once the targets are planned
    lost: bool = False  # the lease was taken over: stop, never ack
    releasing: bool = False  # shutdown: stop, release, never ack
    cancelled: bool = False
    finishing: bool = False  # results written, final status and XACK under way: no renewals
    writes: list[defer.Deferred[Any]] = field(default_factory=list)


#: longest reason a dead letter or a job hash gets
MAX_REASON_CHARS = 1000
#: seconds between looks at the worker's free capacity when its ports fill it
CAPACITY_POLL = 0.2


def _retry_delays() -> list[float]:
    return [0.2, 0.5, 1.0, 2.0, 5.0]


class WorkerService(service.Service):
    """One consumer of the jobs stream (``twistd vscand``)."""

    def __init__(self, config: DaemonConfig, reactor: Any | None = None) -> None:
        if reactor is None:
            from twisted.internet import reactor as default_reactor  # noqa: PLC0415

            reactor = default_reactor
        self.config = config
        self.reactor = reactor
        self.keys = Keys(config.key_prefix)
        self.name = "vscand-worker"
        self.stream = self.keys.jobs_for(config.queue)
        self.policy = TargetPolicy(
            allow=list(config.allow), deny=list(config.deny), allow_names=config.allow_names
        )
        self.limits = JobLimits(
            max_bytes=config.max_job_bytes, max_port_tasks=config.max_job_port_tasks
        )
        self.job_key = load_key(config.job_key_file) if config.job_key_file else None
        self.verifier = JobVerifier(self.job_key) if self.job_key is not None else None
        self.jobs: dict[str, RunningJob] = {}
        #: entries delivered to this worker and not yet handled to the end (max_jobs)
        self._handling: set[str] = set()
        #: recent jobs' size in ports (moving average): how many entries fit the free
        #: capacity; starts at the shard size, the size of the largest entries there are
        self._job_size = float(config.task_ports)
        self._stopping = False
        self._loops: list[task.LoopingCall] = []
        self._renew_loop: task.LoopingCall | None = None
        self._read_loop: defer.Deferred[None] | None = None
        self._slot_free: defer.Deferred[None] | None = None
        self.started_at = time.time()
        self.jobs_done = 0
        self.results_written = 0
        self.client: RedisClient | None = None
        self.consumer: JobConsumer | None = None
        self.writer: ResultWriter | None = None
        self.engine: ScanEngine | None = None
        #: nmap-services, loaded once at start: port specs (and the default top ports) are
        #: resolved against it; reloading it per job took ~80 ms of reactor time each
        self.services: ServicesTable | None = None
        self._port_slots = defer.DeferredSemaphore(max(1, config.concurrency))
        self.max_jobs = config.max_jobs or max(1, min(64, config.concurrency))
        # metrics: counted always (cheap), served on 127.0.0.1:metrics_port when > 0
        self.metrics = DaemonMetrics()
        self._metrics_listener: Any = None
        # Redis outages: warnings of one kind logged once then counted (warn_interval), and
        # results waiting for Redis bounded (max_pending_writes): ports wait, not results
        self.warnings = RateLimitedLog(log, reactor, config.warn_interval)
        self.max_pending_writes = max(1, config.max_pending_writes or 2 * config.concurrency)
        self._pending_writes = 0  # result writes started and not ended (retrying included)
        self._pending_writes_peak = 0
        self._scanning = 0  # ports started through the write gate and not ended
        self._room_waiters: deque[defer.Deferred[None]] = deque()
        self._room_wake: Any = None
        self._holding = False  # ports are waiting for writes: logged once per episode

    # -- lifecycle ------------------------------------------------------------

    def startService(self) -> None:
        service.Service.startService(self)  # type: ignore[no-untyped-call]
        d = defer.Deferred.fromCoroutine(self._start())
        d.addErrback(self._start_failed)

    def _start_failed(self, failure: Any) -> None:
        log.failure("vscand could not start", failure)
        if self.reactor.running:
            self.reactor.stop()

    async def _start(self) -> None:
        config = self.config
        log.info(
            "vscand starting: consumer {consumer} on {stream}",
            consumer=config.consumer,
            stream=self.stream,
        )
        if config.metrics_port:  # metrics: serve (before Redis: an outage stays observable)
            self._metrics_listener = listen_metrics(
                self.reactor, config.metrics_port, self.metrics, self._observe_local
            )
        matcher, services = await self._load_probes()
        engine = matcher.db.engine
        log.info(
            "probes: {lines} match lines, regex engine {engine} ({profile}; {reason})",
            lines=len(matcher.db.lines),
            engine=engine.name,
            profile=engine.profile.name,
            reason=engine.reason,
        )
        self.services = services
        self.exclude = matcher.db.exclude
        self.client = RedisClient(
            self.reactor,
            config.redis_url,
            command_timeout=config.command_timeout,
            client_name=f"vscand:{config.consumer}",
            # entries are untrusted: values over the job limit are never read
            reader_limits=reader_limits(config.max_job_bytes),
        )
        await self._until_connected()
        self.consumer = JobConsumer(
            self.client,
            stream=self.stream,
            consumer=config.consumer,
            clock=self.reactor,
            block_ms=config.block_ms,
            lease_ms=config.job_idle_ms,
            max_deliveries=config.max_deliveries,
            dead_stream=self.keys.dead,
            max_value_bytes=config.max_job_bytes,
            dead_maxlen=config.dead_maxlen,
            dead_payload_bytes=config.dead_payload_bytes,
            refused_key=self.keys.refused,
        )
        await self._retrying("create the consumer group", self.consumer.ensure_group)
        await self._retrying(
            "move job keys to the current layout",
            migrate,
            self.client,
            self.keys,
            lambda seconds: task.deferLater(self.reactor, seconds),
        )
        self.writer = ResultWriter(
            self.client,
            self.keys,
            worker=config.consumer,
            results_maxlen=config.results_maxlen,
            retention=config.job_retention,
        )
        self.engine = ScanEngine(
            self.reactor,
            matcher,
            services,
            ScanOptions(intensity=config.intensity, worker=config.consumer),
            concurrency=config.concurrency,
            per_host_concurrency=config.per_host_concurrency,
            connect_rate=config.connect_rate,
        )
        self.engine.start()
        lease_s = config.job_idle_ms / 1000.0
        self._renew_loop = self._every(max(0.5, lease_s / 3), self._renew_leases)
        self._every(min(JANITOR_MAX_INTERVAL, max(1.0, lease_s / 2)), self._janitor, now=True)
        self._every(CANCEL_POLL, self._check_cancels)
        self._every(HEARTBEAT_INTERVAL, self._heartbeat)
        self._every(60.0, self._trim)
        self._every(SCHEDULE_TICK, self._schedules_tick)
        self._every(30.0, self._collect_when_idle)
        interval = sdnotify.watchdog_interval()
        if interval and config.watchdog:
            self._every(interval, self._watchdog)
        self._read_loop = defer.Deferred.fromCoroutine(self._read_forever())
        self._read_loop.addErrback(lambda f: log.failure("read loop died", f))
        sdnotify.notify("READY=1")
        log.info("vscand ready: consumer {consumer}", consumer=config.consumer)

    async def _load_probes(self) -> tuple[Matcher, ServicesTable]:
        from twisted.internet.threads import deferToThread  # noqa: PLC0415

        config = self.config

        def load() -> tuple[Matcher, ServicesTable]:
            cache = config.cache_dir
            matcher = load_matcher(
                config.probes_file,
                list(config.extra_probes),
                cache_dir=None if cache is None else __import__("pathlib").Path(cache),
                regex_engine=config.regex_engine,
            )
            services = load_services(config.services_file, probes_file=config.probes_file)
            return matcher, services.for_release(matcher.db.grammar)

        result: tuple[Matcher, ServicesTable] = await deferToThread(load)
        return result

    def _every(self, interval: float, function: Any, now: bool = False) -> task.LoopingCall:
        def guarded() -> defer.Deferred[None]:
            d = defer.Deferred.fromCoroutine(function())
            d.addErrback(self._loop_error, function.__name__)
            return d

        loop = task.LoopingCall(guarded)
        loop.clock = self.reactor
        loop.start(interval, now=now).addErrback(self._loop_error, function.__name__)
        self._loops.append(loop)
        return loop

    def _loop_error(self, failure: Any, name: str) -> None:
        if failure.check(RedisUnavailable):
            if self._stopping:
                return None  # a clean stop closed the connection under it: no outage
            self.warnings.warn(
                f"loop:{name}",
                "{loop}: Redis unavailable: {error}",
                loop=name,
                error=failure.getErrorMessage(),
            )
            return None
        log.failure("{loop} failed", failure, loop=name)
        return None

    async def _until_connected(self) -> None:
        assert self.client is not None
        delays = _retry_delays()
        attempt = 0
        while True:
            try:
                await self.client.connect()
                return
            except RedisUnavailable as exc:
                delay = delays[min(attempt, len(delays) - 1)]
                attempt += 1
                self.warnings.warn(
                    "connect",
                    "Redis not reachable ({error}); retrying in {delay}s",
                    error=str(exc),
                    delay=delay,
                )
                await task.deferLater(self.reactor, delay)

    async def _retrying(self, what: str, function: Any, *args: Any) -> Any:
        """Run a Redis operation until it succeeds (or shutdown gives up on it)."""
        delays = _retry_delays()
        attempt = 0
        while True:
            try:
                return await function(*args)
            except RedisUnavailable as exc:
                if self._stopping and attempt > 3:
                    raise
                delay = delays[min(attempt, len(delays) - 1)]
                attempt += 1
                self.warnings.warn(
                    f"retry:{what}",
                    "{what}: Redis unavailable ({error}); retry in {delay}s",
                    what=what,
                    error=str(exc),
                    delay=delay,
                )
                await task.deferLater(self.reactor, delay)

    # -- intake ---------------------------------------------------------------

    async def _read_forever(self) -> None:
        assert self.consumer is not None
        delays = _retry_delays()
        failures = 0
        while not self._stopping:
            free = self.max_jobs - len(self._handling)
            if free <= 0:
                self._slot_free = defer.Deferred()
                await self._slot_free
                continue
            room = self._room_for_jobs()
            if room <= 0:
                # the ports already taken on fill the worker: leave the queue's next entries
                # to workers with room (one big job's tasks spread over the fleet), look again
                # as ports end
                await task.deferLater(self.reactor, CAPACITY_POLL)
                continue
            free = min(free, room)
            try:
                deliveries = await self.consumer.read(free)
                failures = 0
            except RedisUnavailable as exc:
                if self._stopping:
                    break  # a clean stop closed the reader: no outage to report
                delay = delays[min(failures, len(delays) - 1)]
                failures += 1
                self.warnings.warn(
                    "read",
                    "reading jobs: Redis unavailable ({error}); retry in {delay}s",
                    error=str(exc),
                    delay=delay,
                )
                await task.deferLater(self.reactor, delay)
                continue
            except Exception:
                log.failure("reading jobs failed")
                await task.deferLater(self.reactor, 1.0)
                continue
            for delivery in deliveries:
                if self._stopping:
                    break  # left pending: reclaimed after the lease, or by our own PEL read
                self._start_job(delivery)

    async def _janitor(self) -> None:
        if self._stopping or self.consumer is None:
            return
        free = self.max_jobs - len(self._handling)
        if free <= 0:
            return
        for delivery in await self.consumer.claim_idle(free):
            if delivery.entry_id in self._handling:
                continue
            log.info(
                "claimed job entry {entry} idle past the lease (delivery {n})",
                entry=delivery.entry_id,
                n=delivery.deliveries,
            )
            self._start_job(delivery)

    def _committed_ports(self) -> int:
        """Ports of the jobs in hand not yet ended (a job still being planned counts as one
        of the recent average size)."""
        planned = [r for r in self.jobs.values() if r.ports_total]
        unplanned = len(self._handling) - len(planned)
        return sum(max(0, r.ports_total - r.ports_done) for r in planned) + round(
            unplanned * self._job_size
        )

    def _room_for_jobs(self) -> int:
        """How many more entries to take: the free port capacity over the recent average
        job size (at least one when nothing is in hand, so a job bigger than the worker
        still runs)."""
        free_ports = self.config.concurrency - self._committed_ports()
        if free_ports <= 0:
            return 0 if self._handling else 1
        return max(1, int(free_ports // max(1.0, self._job_size)))

    def _start_job(self, delivery: Delivery) -> None:
        # counted from delivery, not from the start of the scan: the checks and the begin
        # script come first, and a read loop counting only running jobs would take more
        # entries meanwhile than max_jobs allows
        self._handling.add(delivery.entry_id)
        d = defer.Deferred.fromCoroutine(self._handle(delivery))

        def unhandled(failure: Any) -> None:
            # _handle ends every entry itself; only a failure to dead-letter comes here. The
            # entry must not stay "in hand": the janitor claims it after the lease (counting
            # a delivery), and past max_deliveries it is dead-lettered
            log.failure("job entry {entry} could not be ended", failure, entry=delivery.entry_id)
            if self.consumer is not None:
                self.consumer.forget(delivery.entry_id)

        d.addErrback(unhandled)

        def handled(_: object) -> None:
            self._handling.discard(delivery.entry_id)
            self._slot_released()

        d.addBoth(handled)

    def _slot_released(self) -> None:
        waiter, self._slot_free = self._slot_free, None
        if waiter is not None:
            waiter.callback(None)

    async def _reject(
        self, delivery: Delivery, job_id: str | None, reason: str, *, trusted: bool = True
    ) -> None:
        """Dead-letter *delivery* with *reason* (which acknowledges it). The status hash of
        *job_id* is marked failed only when *trusted* (in signed mode: the signature was
        verified) and only when that hash belongs to this very entry (made by its submitter,
        or by its own earlier start): a refused entry never changes another job."""
        assert self.writer is not None and self.consumer is not None
        if len(reason) > MAX_REASON_CHARS:  # every part is bounded; this bounds the whole
            reason = reason[: MAX_REASON_CHARS - 3] + "..."
        log.warn("job entry {entry} rejected: {reason}", entry=delivery.entry_id, reason=reason)
        if job_id is not None and trusted:
            await self._retrying(
                "record a rejected job", self.writer.reject, job_id, delivery.entry_id, reason
            )
        await self._retrying("dead-letter a job", self.consumer.dead_letter, delivery, reason)
        self.metrics.job_ended("dead_lettered")  # metrics

    async def _handle(self, delivery: Delivery) -> None:
        """Every entry handed to this worker ends here exactly once: run and acknowledged,
        or dead-lettered with a reason (and so acknowledged), whatever goes wrong on the way.
        Only Redis being unavailable at shutdown leaves it pending (redelivered later)."""
        assert self.consumer is not None and self.writer is not None
        try:
            await self._intake(delivery)
        except (RedisUnavailable, defer.CancelledError):
            self.consumer.forget(delivery.entry_id)  # pending: our PEL read or a janitor's
            raise
        except Exception as exc:
            log.failure("job entry {entry}: unexpected error", entry=delivery.entry_id)
            await self._reject(delivery, None, _internal_error(exc))

    async def _intake(self, delivery: Delivery) -> None:
        assert self.consumer is not None and self.writer is not None
        # the cheap checks first: size (values over the limit were never read), fields
        if self.consumer.over_cap(delivery):
            await self._reject(
                delivery,
                id_hint(delivery.fields.get(b"job", b""), self.limits),
                f"delivered {delivery.deliveries} times (max_deliveries "
                f"{self.config.max_deliveries}): the job crashed or wedged its worker each time",
                trusted=self.verifier is None,
            )
            return
        if delivery.refusal is not None:
            await self._reject(delivery, None, f"invalid job: {delivery.refusal}")
            return
        raw = delivery.fields.get(b"job")
        if raw is None:
            names = sorted(name.decode("utf-8", "replace")[:40] for name in delivery.fields)
            await self._reject(
                delivery,
                None,
                "invalid job: the stream entry has no 'job' field"
                + (f" (its fields: {', '.join(repr(n) for n in names[:8])})" if names else ""),
            )
            return
        try:
            job = parse_job(
                raw,
                limits=self.limits,
                policy=self.policy,
                verifier=self.verifier,
                now=time.time(),
                services=self.services,
                default_id=entry_job_id(delivery.entry_id, self.config.queue),
            )
        except JobError as exc:
            await self._reject(delivery, exc.job_id, f"invalid job: {exc}", trusted=exc.id_trusted)
            return
        if self.verifier is not None:
            fresh = await self._retrying(
                "check replay", claim_signature, self.client, self.keys, job, delivery.entry_id
            )
            if not fresh:
                await self._reject(
                    delivery,
                    None,
                    "replayed job: this signed job id was "
                    "already submitted in another stream entry",
                )
                return
        attempt = uuid.uuid4().hex
        state = await self._retrying(
            "start a job", self.writer.begin, job, delivery.entry_id, attempt
        )
        if state == "done":
            await self._retrying("ack a finished job", self.consumer.ack, delivery.entry_id)
            return
        if state == "duplicate":
            await self._reject(
                delivery,
                None,
                f"duplicate job id: {job.id!r} belongs to another stream entry "
                f"({self.keys.job(job.id)} names it); submit the job under a new id",
            )
            return
        if state == "orphan":
            await self._reject(
                delivery,
                None,
                f"invalid job: {job.id} names parent {job.parent!r}, "
                "but no sharded job queued it as a task",
            )
            return
        if state == "cancelled":
            await self._retrying(
                "finish a cancelled job", self.writer.finish, job.id, attempt, "cancelled", None
            )
            await self._retrying("ack a cancelled job", self.consumer.ack, delivery.entry_id)
            self.metrics.job_ended("cancelled")  # metrics
            return
        running = RunningJob(delivery, job, attempt, started=self.reactor.seconds())
        self.jobs[delivery.entry_id] = running
        try:
            await self._run(running)
        except (RedisUnavailable, defer.CancelledError):
            raise
        except Exception as exc:
            log.failure("job {job}: unexpected error", job=job.id)
            if running.scheduler is not None:
                running.scheduler.stop()
            if not (running.lost or running.releasing):
                # end this attempt failed (fenced: only while it is still ours)
                reason = _internal_error(exc)
                await self._retrying(
                    "fail a job", self.writer.finish, job.id, attempt, "failed", reason
                )
                await self._retrying(
                    "dead-letter a job", self.consumer.dead_letter, delivery, reason
                )
                self.metrics.job_ended("dead_lettered")  # metrics
        finally:
            self.jobs.pop(delivery.entry_id, None)
            running.done.callback(None)
            self._slot_released()

    async def _run(self, running: RunningJob) -> None:
        assert self.engine is not None and self.writer is not None
        assert self.consumer is not None
        job = running.job
        targets: list[str | Target] = [*job.targets, *job.endpoints]
        if job.stale_after is not None:
            targets = await self._stale_targets(job)
        try:
            ports = select_ports(job.ports, self.services)
            tasks = await plan_tasks(
                targets,
                self.policy,
                system_resolver(cast(IReactorThreads, self.reactor)),
                ports,
            )
        except (TargetError, ValueError) as exc:
            await self._retrying(
                "fail a job",
                self.writer.finish,
                job.id,
                running.attempt,
                "failed",
                f"invalid job: {exc}",
            )
            await self._retrying(
                "dead-letter a job",
                self.consumer.dead_letter,
                running.delivery,
                f"invalid job: {exc}",
            )
            self.metrics.job_ended("dead_lettered")  # metrics
            return
        size = job.task_ports or self.config.task_ports
        if job.parent is None and len(tasks) > size:
            await self._split(running, tasks, size)
            return
        running.ports_total = len(tasks)
        self._job_size = 0.8 * self._job_size + 0.2 * len(tasks)
        await self._retrying(
            "record the job's size", self.writer.set_total, job.id, running.attempt, len(tasks)
        )
        options = ScanOptions(
            intensity=9 if job.version_all else job.intensity,
            connect_timeout=job.connect_ms / 1000.0,
            tags=dict(job.tags),
            job=job.parent or job.id,
            worker=self.config.consumer,
            scanned_protocols=(
                tuple(sorted({t.protocol for t in tasks}))
                if job.stale_after is not None
                else tuple(sorted(ports))
            )
            or ("tcp",),
            fast=job.fast,
        )
        engine = self.engine
        writer = self.writer
        services = self.services
        assert services is not None

        def scan_port(port_task: PortTask) -> defer.Deferred[Result]:
            return self._when_written(
                lambda: self._port_slots.run(lambda: engine.scan_port(port_task, options))
            )

        def on_result(result: Result) -> None:
            running.ports_done += 1
            if running.lost or running.releasing:
                # lost: another worker owns the job. releasing: shutdown stopped the scan and
                # hands the job back; the ports it interrupted end "incomplete" (tcpwrapped
                # when nothing was read yet), which is not a finding: never store those
                return
            self.metrics.port_result(result)  # metrics
            self._write_started()
            d = defer.Deferred.fromCoroutine(
                self._retrying("write a result", writer.write, job.id, running.attempt, result)
            )
            d.addBoth(self._write_ended)
            d.addCallback(self.metrics.result_written)  # metrics
            running.writes.append(d)

        # version scripts run on each result before on_result writes it
        phase = make_phase(
            self.reactor,
            tasks=tasks,
            sink=on_result,
            options=options,
            excluded=self.exclude.excludes,
            table_name=services.name,
            limiter=engine.limiter,
        )
        scheduler = engine.make_scheduler(scan_port, phase.on_result, options)
        running.scheduler = scheduler
        timeout_call = None
        if job.host_ms:
            timeout_call = self.reactor.callLater(job.host_ms / 1000.0, scheduler.stop)
        await scheduler.run(tasks)
        if timeout_call is not None and timeout_call.active():
            timeout_call.cancel()
            timed_out = False
        else:
            timed_out = timeout_call is not None
        phase.skip_scripts = running.cancelled or running.lost or running.releasing
        await phase.flush()
        writes = await defer.DeferredList(running.writes, consumeErrors=True)
        if running.lost or running.releasing:
            return  # another worker owns it now, or shutdown released it: never ack here
        if not all(ok for ok, _ in writes):
            log.error(
                "job {job}: some results could not be written; left for redelivery", job=job.id
            )
            return
        if not all(written for _, written in writes):
            # a fenced write: another worker took the job over (before our next renewal
            # noticed). It owns the entry now; acking it here could lose the job.
            self._lost(running, "a result write was fenced off")
            return
        running.finishing = True
        if running.cancelled:
            status, error = "cancelled", None
        elif timed_out:
            status, error = "failed", f"timed out after {job.host_ms} ms (partial results kept)"
        else:
            status, error = "done", None
        finished = await self._retrying(
            "finish a job", self.writer.finish, job.id, running.attempt, status, error
        )
        if not finished:
            self._lost(running, "the final status write was fenced off")
            return
        if not await self._acknowledge(running):
            return
        self.metrics.job_ended(status)  # metrics
        if job.parent is not None:
            self.metrics.task_event(status)  # metrics
        self.jobs_done += 1
        self.results_written += running.ports_done
        beat = defer.Deferred.fromCoroutine(self._heartbeat())
        beat.addErrback(self._loop_error, "_heartbeat")
        log.info(
            "job {job} {status}: {ports} ports", job=job.id, status=status, ports=running.ports_done
        )

    async def _stale_targets(self, job: Job) -> list[str | Target]:
        """A staleness rescan's endpoints, from the inventory (:mod:`vscand.queue.stale`)."""
        assert job.stale_after is not None and self.client is not None
        client, age = self.client, job.stale_after
        selection: stale.StaleSelection = await self._retrying(
            "read the inventory for a staleness rescan",
            lambda: stale.stale_endpoints(
                client,
                self.keys,
                stale_after=age,
                targets=job.targets,
                policy=self.policy,
                limit=self.limits.max_port_tasks,
            ),
        )
        log.info(
            "job {job}: staleness rescan of {n} inventory entries older than {age}s "
            "({examined} examined, {denied} refused by the target policy, {deferred} left "
            "for a later run)",
            job=job.id,
            n=len(selection.endpoints),
            age=job.stale_after,
            examined=selection.examined,
            denied=selection.denied,
            deferred=selection.deferred,
        )
        return list(selection.endpoints)

    async def _split(self, running: RunningJob, tasks: list[PortTask], size: int) -> None:
        """Queue *running*'s ports as tasks of at most *size* ports (see :mod:`.shards`)."""
        assert self.writer is not None and self.consumer is not None
        job = running.job
        documents = shards.task_documents(decode_job(job.raw, self.limits), job.id, tasks, size)
        if self.job_key is not None:
            # tasks are jobs like any other: where jobs must be signed, so are they, with
            # the parent's expiry (a day when it has none)
            remaining = (job.not_after - time.time()) if job.not_after else 24 * 3600.0
            signer = JobSigner(self.job_key)
            documents = [signer.sign(d, max(60.0, remaining)) for d in documents]
        state = await self._retrying(
            "queue a job's tasks",
            self.writer.split,
            job,
            running.attempt,
            len(tasks),
            [shards.encode(d) for d in documents],
            self.stream,
        )
        if state == "lost":
            self._lost(running, "the split was fenced off")
            return
        if state == "cancelled":
            await self._retrying(
                "finish a cancelled job", self.writer.finish, job.id, running.attempt, "cancelled"
            )
            self.metrics.job_ended("cancelled")  # metrics
        else:
            self.metrics.job_ended("sharded")  # metrics
            self.metrics.task_event("queued", len(documents))  # metrics
            log.info(
                "job {job}: {ports} ports split into {n} tasks of at most {size}",
                job=job.id,
                ports=len(tasks),
                n=len(documents),
                size=size,
            )
        await self._acknowledge(running)

    async def _acknowledge(self, running: RunningJob) -> bool:
        """XACK *running*'s entry once its end is safe: on ``replica_confirm`` replicas
        (``WAIT``; one per job: replication is ordered, so it covers every result and the
        status written before it) and present, with this attempt, on the server that takes
        the XACK. Where a failover lost the end, the job is handed back for another run
        instead (``False``): acknowledging it would lose it."""
        assert self.consumer is not None
        job = running.job
        if self.config.replica_confirm:
            await self._confirm_replicas(job.id)
        acked = await self._retrying(
            "ack a job",
            self.consumer.ack_ended,
            running.delivery.entry_id,
            self.keys.job(job.id),
            running.attempt,
        )
        if acked:
            return True
        log.warn(
            "job {job}: its end is not on the Redis master (lost in a failover?); "
            "handing it back for another run",
            job=job.id,
        )
        self._lost(running, "its end was not on the master")
        await self._release(running)
        return False

    async def _confirm_replicas(self, job_id: str) -> None:
        """``WAIT`` until ``replica_confirm`` replicas have every write this connection made
        (the job's results and final status among them); retried while they lag or are
        away: a job is not acknowledged before its end would survive a failover."""
        assert self.client is not None
        wanted = self.config.replica_confirm
        timeout_ms = self.config.replica_confirm_timeout_ms
        delays = _retry_delays()
        attempt = 0
        while True:
            try:
                bound = timeout_ms / 1000.0 + self.config.command_timeout
                reached = int(await self.client.execute("WAIT", wanted, timeout_ms, timeout=bound))
            except RedisUnavailable as exc:
                if self._stopping and attempt > 3:
                    raise
                reached, why = -1, str(exc)
            else:
                if reached >= wanted:
                    return
                why = f"{reached} of {wanted} replicas confirmed within {timeout_ms} ms"
            self.warnings.warn(
                "replica_confirm",
                "job {job}: not acknowledged yet: {why}",
                job=job_id,
                why=why,
            )
            if self._stopping and attempt > 3:
                raise RedisUnavailable(f"replicas did not confirm job {job_id}: {why}")
            await task.deferLater(self.reactor, delays[min(attempt, len(delays) - 1)])
            attempt += 1

    def _lost(self, running: RunningJob, why: str) -> None:
        """*running*'s attempt was superseded by another worker's: never ack it here."""
        log.warn(
            "job {job}: taken over by another worker ({why}); not acknowledging it",
            job=running.job.id,
            why=why,
        )
        running.lost = True
        assert self.consumer is not None
        self.consumer.forget(running.delivery.entry_id)

    # -- backpressure: results waiting for Redis --------------------------------

    def _room(self) -> bool:
        return self._pending_writes + self._scanning < self.max_pending_writes

    def _when_written(self, start: Callable[[], defer.Deferred[Result]]) -> defer.Deferred[Result]:
        """Start a port (*start*) now, or once fewer than ``max_pending_writes`` result
        writes and ports started through here are pending: a port that starts may end in a
        result to write, so both count, and the writes waiting for Redis stay within the
        bound. Cancelling a waiting port (a stopped scan) forgets it."""
        if not self._room_waiters and self._room():
            return self._scan(start)
        if not self._holding:
            self._holding = True
            self.warnings.warn(
                "backpressure",
                "{pending} result writes wait for Redis (max_pending_writes {limit}): "
                "new ports wait until they are written",
                pending=self._pending_writes,
                limit=self.max_pending_writes,
            )
        waiter: defer.Deferred[None] = defer.Deferred(self._room_waiters.remove)
        self._room_waiters.append(waiter)
        return waiter.addCallback(lambda _: self._scan(start))

    def _scan(self, start: Callable[[], defer.Deferred[Result]]) -> defer.Deferred[Result]:
        self._scanning += 1

        def ended(outcome: Any) -> Any:
            self._scanning -= 1
            self._wake_soon()
            return outcome

        return start().addBoth(ended)

    def _write_started(self) -> None:
        self._pending_writes += 1
        self._pending_writes_peak = max(self._pending_writes_peak, self._pending_writes)

    def _write_ended(self, outcome: Any) -> Any:
        self._pending_writes -= 1
        self._wake_soon()
        return outcome

    def _wake_soon(self) -> None:
        # next turn: the result of a port that just ended reaches on_result (and counts as a
        # pending write) in this one
        if self._room_waiters and self._room_wake is None:
            self._room_wake = self.reactor.callLater(0, self._wake)

    def _wake(self) -> None:
        self._room_wake = None
        while self._room_waiters and self._room():
            self._room_waiters.popleft().callback(None)
        if self._holding and not self._room_waiters:
            self._holding = False
            self.warnings.info(
                "backpressure-end",
                "result writes go through again ({pending} pending): ports start again",
                pending=self._pending_writes,
            )

    # -- periodic -------------------------------------------------------------

    async def _renew_leases(self) -> None:
        assert self.consumer is not None
        for running in list(self.jobs.values()):
            # the job may have ended while an earlier renewal was awaited: its entry is
            # acknowledged, which is not a lost lease
            if running.lost or running.releasing or running.finishing:
                continue
            still_ours = await self.consumer.renew(running.delivery.entry_id)
            if not still_ours and not running.finishing:
                log.warn("job {job}: lease lost to another worker; stopping it", job=running.job.id)
                running.lost = True
                if running.scheduler is not None:
                    running.scheduler.stop()

    async def _check_cancels(self) -> None:
        assert self.writer is not None
        for running in list(self.jobs.values()):
            if running.cancelled or running.scheduler is None:
                continue
            if await self.writer.cancel_requested(running.job.id):
                log.info("job {job}: cancel requested", job=running.job.id)
                running.cancelled = True
                running.scheduler.stop()

    async def _heartbeat(self) -> None:
        if self.client is None:
            return
        in_flight = sum(
            r.scheduler.in_flight for r in self.jobs.values() if r.scheduler is not None
        )
        beat = {
            "consumer": self.config.consumer,
            "host": socket.gethostname(),
            "pid": os.getpid(),
            "queue": self.config.queue,
            "started_at": _iso(self.started_at),
            "last_seen": _iso(time.time()),
            "jobs": sorted(r.job.id for r in self.jobs.values()),
            "ports_in_flight": in_flight,
            "jobs_done": self.jobs_done,
            "results_written": self.results_written,
            "last_progress_age_s": round(self._progress_age(), 3),
            "pending_writes": self._pending_writes,
            "pending_writes_peak": self._pending_writes_peak,
            "max_pending_writes": self.max_pending_writes,
        }
        await self.client.execute("HSET", self.keys.workers, self.config.consumer, json.dumps(beat))
        if self._metrics_listener is not None:  # metrics: the gauges Redis knows
            self._observe_local()
            depth = await self.client.execute("XLEN", self.stream)
            pending = await self.client.execute("XPENDING", self.stream, "vscand")
            self.metrics.observe_queue(int(depth or 0), int(pending[0]) if pending else 0)

    def _observe_local(self) -> None:
        """Metrics: the gauges known in-process (each heartbeat, and before each scrape)."""
        slots = self._port_slots
        self.metrics.observe_local(
            jobs_in_flight=len(self.jobs),
            ports_in_flight=sum(
                r.scheduler.in_flight for r in self.jobs.values() if r.scheduler is not None
            ),
            connections_in_flight=slots.limit - slots.tokens,
            progress_age=self._progress_age(),
            lag=None if self.engine is None else self.engine.lag,
        )

    async def _schedules_tick(self) -> None:
        """Enqueue the schedules' due runs (claimed atomically: once across the fleet)."""
        if self._stopping or self.client is None:
            return
        from vscand.queue import schedules  # noqa: PLC0415

        await schedules.tick(self.client, self.keys)

    async def _collect_when_idle(self) -> None:
        """Full garbage collections are rare under load (``tune_gc``): run one when idle."""
        if not self.jobs:
            gc.collect()

    async def _trim(self) -> None:
        if self.consumer is not None:
            await self.consumer.trim()

    def _progress_age(self) -> float:
        if self.consumer is None:
            return 0.0
        return float(self.reactor.seconds() - self.consumer.last_progress)

    async def _watchdog(self) -> None:
        # health = consumption progress: a read round-trip completes every block_ms
        limit = 2 * self.config.block_ms / 1000.0 + 2 * self.config.command_timeout + 5
        if self._progress_age() <= limit:
            sdnotify.notify("WATCHDOG=1")
        else:
            log.warn(
                "no consumption progress for {age:.1f}s: not petting the watchdog",
                age=self._progress_age(),
            )

    # -- shutdown -------------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:
        service.Service.stopService(self)  # type: ignore[no-untyped-call]
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        self._stopping = True
        sdnotify.notify("STOPPING=1")
        deadline = self.reactor.seconds() + self.config.drain_timeout
        log.info(
            "vscand stopping: {n} jobs in flight, drain deadline {t}s",
            n=len(self.jobs),
            t=self.config.drain_timeout,
        )
        self._slot_released()
        for loop in self._loops:
            # leases are renewed while draining: a drain longer than job_idle_ms must not let
            # another worker claim (and run again) a job this one is finishing
            if loop.running and loop is not self._renew_loop:
                loop.stop()
        waiting = [r.done for r in self.jobs.values()]
        if waiting:
            remaining = max(0.0, deadline - self.reactor.seconds() - 3.0)
            drained = defer.DeferredList(waiting)
            timer = self.reactor.callLater(remaining, drained.cancel)
            with contextlib.suppress(defer.CancelledError):  # the drain deadline passed
                await drained
            if timer.active():
                timer.cancel()
        for running in list(self.jobs.values()):
            running.releasing = True
            if running.scheduler is not None:
                running.scheduler.stop()
            await self._release(running)
        if self._renew_loop is not None and self._renew_loop.running:
            self._renew_loop.stop()
        if self.engine is not None:
            self.engine.stop()
        if self.client is not None:
            try:
                await self.client.disconnect()
            except Exception:
                log.failure("closing Redis")
        if self._metrics_listener is not None:  # metrics
            await defer.maybeDeferred(self._metrics_listener.stopListening)
        if self._room_wake is not None and self._room_wake.active():
            self._room_wake.cancel()
        self.warnings.flush()  # the counts not reported yet
        log.info("vscand stopped")

    async def _release(self, running: RunningJob) -> None:
        """Make a job we cannot finish claimable at once by other workers."""
        assert self.client is not None
        try:
            await self.client.execute(
                "XCLAIM",
                self.stream,
                "vscand",
                self.config.consumer,
                0,
                running.delivery.entry_id,
                "IDLE",
                self.config.job_idle_ms + 1000,
                "JUSTID",
                timeout=2.0,
            )
            await self.client.execute(
                "HSET",
                self.keys.job(running.job.id),
                "status",
                "queued",
                "released_by",
                self.config.consumer,
                "released_at",
                _iso(time.time()),
                timeout=2.0,
            )
            self.metrics.job_ended("released")  # metrics
            log.info("job {job} released for another worker", job=running.job.id)
        except Exception:
            log.failure("releasing job {job}", job=running.job.id)


def _iso(when: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def _internal_error(exc: BaseException) -> str:
    """A dead letter's reason for an error nobody expected (bounded, one line)."""
    text = " ".join(str(exc).split())
    return f"internal error: {type(exc).__name__}: {text[:300]}"
