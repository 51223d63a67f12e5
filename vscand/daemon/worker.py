"""The daemon: jobs from a Redis stream, scanned with the engine, results back to Redis.

``WorkerService`` is what ``twistd vscand`` runs: a ``MultiService`` whose children are
the job intake (:mod:`.intake`: read loop, janitor, capacity) and one ``TimerService`` per
periodic duty (:mod:`.duties`); each job taken runs as an attempt (:mod:`.attempt`,
:mod:`.run`). It talks to Redis only through a :class:`~vscand.queue.worker_queue.WorkerQueue`.
Its promises:

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

The children start once the worker is ready (probes loaded, Redis reached, the group
made); on stop the intake and the duties stop first, the renewals last, after the drain.
"""

from __future__ import annotations

import contextlib
from pathlib import Path
from typing import Any

from twisted.application import service
from twisted.internet import defer, task
from twisted.logger import Logger

from vscand.config import DaemonConfig
from vscand.daemon import sdnotify
from vscand.daemon.duties import WorkerDuties
from vscand.daemon.intake import JobIntake
from vscand.daemon.lograte import RateLimitedLog
from vscand.daemon.metrics import listen_metrics
from vscand.daemon.run import AttemptRunner
from vscand.daemon.state import WorkerState
from vscand.ports import ServicesTable, load_services
from vscand.probes.matcher import Matcher, load_matcher
from vscand.queue.consumer import Delivery
from vscand.queue.errors import RedisUnavailable
from vscand.queue.keys import Keys
from vscand.queue.retry import retrying
from vscand.queue.worker_queue import RedisWorkerQueue, WorkerQueue

log = Logger()

#: seconds of the drain deadline kept for releasing what did not finish
RELEASE_MARGIN = 3.0


def redis_queue(config: DaemonConfig, reactor: Any) -> RedisWorkerQueue:
    """The worker's queue on the Redis of *config*."""
    keys = Keys(config.key_prefix)
    return RedisWorkerQueue(
        reactor,
        keys,
        redis_url=config.redis_url,
        stream=keys.jobs_for(config.queue),
        consumer=config.consumer,
        command_timeout=config.command_timeout,
        block_ms=config.block_ms,
        lease_ms=config.job_idle_ms,
        max_deliveries=config.max_deliveries,
        max_job_bytes=config.max_job_bytes,
        dead_maxlen=config.dead_maxlen,
        dead_payload_bytes=config.dead_payload_bytes,
        results_maxlen=config.results_maxlen,
        retention=config.job_retention,
    )


def load_probes(config: DaemonConfig) -> tuple[Matcher, ServicesTable]:
    """The probe database and the services table of its release (blocking: in a thread)."""
    cache = config.cache_dir
    matcher = load_matcher(
        config.probes_file,
        list(config.extra_probes),
        cache_dir=None if cache is None else Path(cache),
        regex_engine=config.regex_engine,
    )
    services = load_services(config.services_file, probes_file=config.probes_file)
    return matcher, services.for_release(matcher.db.grammar)


class WorkerService(service.MultiService):
    """One consumer of the jobs stream (``twistd vscand``): see the module docstring.

    *queue* defaults to the Redis of *config* (:func:`redis_queue`); tests pass
    :class:`vscand.queue.testing.FakeWorkerQueue`. *engine_factory*, when given, makes the
    scan engine from the loaded probes instead of :class:`~vscand.scan.engine.ScanEngine`.
    """

    def __init__(
        self,
        config: DaemonConfig,
        reactor: Any | None = None,
        *,
        queue: WorkerQueue | None = None,
        probes: Any = None,
        engine_factory: Any = None,
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        if reactor is None:
            from twisted.internet import reactor as default_reactor  # noqa: PLC0415

            reactor = default_reactor
        self.name = "vscand-worker"
        self.config = config
        self.reactor = reactor
        self.state = WorkerState(
            config,
            reactor,
            queue if queue is not None else redis_queue(config, reactor),
            RateLimitedLog(log, reactor, config.warn_interval),
        )
        self._probes = probes  # (matcher, services) already loaded, or None: load at start
        self._engine_factory = engine_factory
        self._metrics_listener: Any = None
        self.intake = JobIntake(self.state, self._handle)
        self.runner = AttemptRunner(
            self.state,
            on_planned=self.intake.job_sized,
            on_ended=self.intake.slot_released,
            on_done=self._beat_now,
        )
        self.intake.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.duties = WorkerDuties(self.state, self._observe_local if config.metrics_port else None)
        self.timers = self.duties.services()
        for timer in self.timers:
            timer.setServiceParent(self)  # type: ignore[no-untyped-call]
        self.ready: defer.Deferred[None] = defer.Deferred()

    async def _handle(self, delivery: Delivery) -> None:
        await self.runner.handle(delivery)

    def _beat_now(self) -> None:
        beat = defer.Deferred.fromCoroutine(self.duties.heartbeat())
        beat.addErrback(self.state.loop_error, "heartbeat")

    # -- lifecycle ------------------------------------------------------------

    def startService(self) -> None:
        # the children start once ready (see _start), not now
        service.Service.startService(self)  # type: ignore[no-untyped-call]
        d = defer.Deferred.fromCoroutine(self._start())
        d.addErrback(self._start_failed)

    def _start_failed(self, failure: Any) -> None:
        log.failure("vscand could not start", failure)
        if self.reactor.running:
            self.reactor.stop()

    async def _start(self) -> None:
        config, state = self.config, self.state
        log.info(
            "vscand starting: consumer {consumer} on {stream}",
            consumer=config.consumer,
            stream=state.queue.stream,
        )
        if config.metrics_port:  # metrics: serve (before Redis: an outage stays observable)
            self._metrics_listener = listen_metrics(
                self.reactor, config.metrics_port, state.metrics, self._observe_local
            )
        matcher, services = self._probes or await self._load_probes()
        engine = matcher.db.engine
        log.info(
            "probes: {lines} match lines, regex engine {engine} ({profile}; {reason})",
            lines=len(matcher.db.lines),
            engine=engine.name,
            profile=engine.profile.name,
            reason=engine.reason,
        )
        state.services = services
        state.exclude = matcher.db.exclude
        state.nmap_release = matcher.db.nmap_release
        await self._until_connected()
        await state.retrying("create the consumer group", state.queue.ensure_group)
        await state.retrying(
            "move job keys to the current layout",
            state.queue.migrate,
            lambda seconds: task.deferLater(self.reactor, seconds),
        )
        state.engine = self._make_engine(matcher, services)
        state.engine.start()
        if not self.running or state.stopping:
            return  # stopped while starting
        for child in self:
            child.startService()
        sdnotify.notify("READY=1")
        log.info("vscand ready: consumer {consumer}", consumer=config.consumer)
        self.ready.callback(None)

    def _make_engine(self, matcher: Matcher, services: ServicesTable) -> Any:
        config = self.config
        if self._engine_factory is not None:
            return self._engine_factory(matcher, services)
        from vscand.scan.engine import ScanEngine  # noqa: PLC0415
        from vscand.scan.model import ScanOptions  # noqa: PLC0415

        return ScanEngine(
            self.reactor,
            matcher,
            services,
            ScanOptions(intensity=config.intensity, worker=config.consumer),
            concurrency=config.concurrency,
            per_host_concurrency=config.per_host_concurrency,
            connect_rate=config.connect_rate,
        )

    async def _load_probes(self) -> tuple[Matcher, ServicesTable]:
        from twisted.internet.threads import deferToThread  # noqa: PLC0415

        result: tuple[Matcher, ServicesTable] = await deferToThread(load_probes, self.config)
        return result

    async def _until_connected(self) -> None:
        def warn(error: RedisUnavailable, delay: float) -> None:
            self.state.warnings.warn(
                "connect",
                "Redis not reachable ({error}); retrying in {delay}s",
                error=str(error),
                delay=delay,
            )

        await retrying(self.reactor, self.state.queue.connect, on_retry=warn)

    def _observe_local(self) -> None:
        """Metrics: the gauges known in-process (each heartbeat, and before each scrape)."""
        state = self.state
        slots = state.port_slots
        state.metrics.observe_local(
            jobs_in_flight=len(state.attempts),
            ports_in_flight=state.ports_in_flight(),
            connections_in_flight=slots.limit - slots.tokens,
            progress_age=state.progress_age(),
            lag=None if state.engine is None else state.engine.lag,
        )

    # -- shutdown -------------------------------------------------------------

    def stopService(self) -> defer.Deferred[None]:
        return defer.Deferred.fromCoroutine(self._stop())

    async def _stop(self) -> None:
        state = self.state
        started = self.ready.called
        state.stopping = True
        sdnotify.notify("STOPPING=1")
        deadline = self.reactor.seconds() + self.config.drain_timeout
        log.info(
            "vscand stopping: {n} jobs in flight, drain deadline {t}s",
            n=len(state.attempts),
            t=self.config.drain_timeout,
        )
        renewals = self.timers[0]
        if started:
            # leases are renewed while draining: a drain longer than job_idle_ms must not let
            # another worker claim (and run again) a job this one is finishing
            for child in [self.intake, *self.timers[1:]]:
                self._stop_child(child)
        await self._drain(deadline)
        if started:
            self._stop_child(renewals)
        service.Service.stopService(self)  # type: ignore[no-untyped-call]
        if state.engine is not None:
            state.engine.stop()
        try:
            await state.queue.disconnect()
        except Exception:
            log.failure("closing Redis")
        if self._metrics_listener is not None:  # metrics
            await defer.maybeDeferred(self._metrics_listener.stopListening)
        state.gate.stop()
        state.warnings.flush()  # the counts not reported yet
        log.info("vscand stopped")

    def _stop_child(self, child: service.IService) -> None:
        # not awaited: a duty's call in flight (a heartbeat in an outage) must not hold up
        # the drain; it ends with the connection
        d = defer.maybeDeferred(child.stopService)
        d.addErrback(lambda f: log.failure("stopping {name}", f, name=child.name))

    async def _drain(self, deadline: float) -> None:
        """Let the running attempts end until shortly before *deadline*, then release the
        rest (claimable at once by other workers)."""
        state = self.state
        waiting = [a.done for a in state.attempts.values()]
        if waiting:
            remaining = max(0.0, deadline - self.reactor.seconds() - RELEASE_MARGIN)
            drained = defer.DeferredList(waiting, consumeErrors=True)
            timer = self.reactor.callLater(remaining, drained.cancel)
            with contextlib.suppress(defer.CancelledError):  # the drain deadline passed
                await drained
            if timer.active():
                timer.cancel()
        for attempt in list(state.attempts.values()):
            attempt.release()  # a lost attempt stays lost; its scan stops all the same
            await self.runner.release(attempt)
