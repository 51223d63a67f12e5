"""Running a job attempt: plan, shard or scan, write results, end and acknowledge.

:meth:`AttemptRunner.handle` is where every entry handed to the worker ends exactly once:
run and acknowledged, or dead-lettered with a reason (and so acknowledged), whatever goes
wrong on the way. Only Redis being unavailable at shutdown leaves it pending (redelivered
later). The attempt's state (:mod:`vscand.daemon.attempt`) decides what may still be
written: a lost or released attempt writes nothing and never acknowledges.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import cast

from twisted.internet import defer
from twisted.internet.interfaces import IReactorThreads
from twisted.logger import Logger

from vscand.daemon.admission import JobAdmission, internal_error
from vscand.daemon.attempt import AttemptState, JobAttempt
from vscand.daemon.state import WorkerState
from vscand.jobs.schema import Job
from vscand.jobs.signing import JobSigner
from vscand.queue import shards
from vscand.queue.consumer import Delivery
from vscand.queue.errors import RedisUnavailable
from vscand.queue.retry import retrying
from vscand.queue.stale import StaleSelection
from vscand.scan.model import PortTask, Result, ScanOptions
from vscand.scripts.registry import make_phase
from vscand.targets.parse import Target, TargetError
from vscand.targets.resolve import system_resolver
from vscand.targets.tasks import plan_tasks, select_ports

log = Logger()


def shard_size(job: Job, task_ports: int, ports: int) -> int | None:
    """The task size a job of *ports* planned ports is split into, or ``None`` when it
    runs here as one: a job (not a task) of more ports than its ``task_ports`` (else the
    worker's) is split."""
    size = job.task_ports or task_ports
    if job.parent is None and ports > size:
        return size
    return None


class AttemptRunner:
    """Runs the attempts of the entries the intake hands over."""

    def __init__(
        self,
        state: WorkerState,
        *,
        on_planned: Callable[[int], None] = lambda ports: None,
        on_ended: Callable[[], None] = lambda: None,
        on_done: Callable[[], object] = lambda: None,
    ) -> None:
        self.state = state
        self.admission = JobAdmission(state)
        self.on_planned = on_planned  # a job of N ports was planned (capacity average)
        self.on_ended = on_ended  # an attempt ended (a slot may be free)
        self.on_done = on_done  # a job ended and was acknowledged (a heartbeat)

    async def handle(self, delivery: Delivery) -> None:
        """End *delivery* exactly once (see the module docstring)."""
        state = self.state
        try:
            attempt = await self.admission.admit(delivery)
            if attempt is not None:
                await self._attempt(attempt)
        except (RedisUnavailable, defer.CancelledError):
            state.queue.forget(delivery.entry_id)  # pending: our PEL read or a janitor's
            raise
        except Exception as exc:
            log.failure("job entry {entry}: unexpected error", entry=delivery.entry_id)
            await self.admission.reject(delivery, None, internal_error(exc))

    async def _attempt(self, attempt: JobAttempt) -> None:
        state = self.state
        job, delivery = attempt.job, attempt.delivery
        state.attempts[delivery.entry_id] = attempt
        try:
            await self.run(attempt)
        except (RedisUnavailable, defer.CancelledError):
            raise
        except Exception as exc:
            log.failure("job {job}: unexpected error", job=job.id)
            if attempt.scheduler is not None:
                attempt.scheduler.stop()
            if not attempt.stopped:
                # end this attempt failed (fenced: only while it is still ours)
                reason = internal_error(exc)
                await state.retrying(
                    "fail a job", state.queue.finish, job.id, attempt.attempt, "failed", reason
                )
                await state.retrying("dead-letter a job", state.queue.dead_letter, delivery, reason)
                state.metrics.job_ended("dead_lettered")  # metrics
        finally:
            state.attempts.pop(delivery.entry_id, None)
            attempt.done.callback(None)
            self.on_ended()

    async def _fail(self, attempt: JobAttempt, reason: str) -> None:
        state = self.state
        await state.retrying(
            "fail a job", state.queue.finish, attempt.job.id, attempt.attempt, "failed", reason
        )
        await state.retrying("dead-letter a job", state.queue.dead_letter, attempt.delivery, reason)
        state.metrics.job_ended("dead_lettered")  # metrics

    async def run(self, attempt: JobAttempt) -> None:
        state = self.state
        assert state.engine is not None and state.services is not None
        job = attempt.job
        targets: list[str | Target] = [*job.targets, *job.endpoints]
        if job.stale_after is not None:
            targets = await self._stale_targets(job)
        try:
            ports = select_ports(job.ports, state.services)
            tasks = await plan_tasks(
                targets,
                state.policy,
                system_resolver(cast(IReactorThreads, state.reactor)),
                ports,
            )
        except (TargetError, ValueError) as exc:
            await self._fail(attempt, f"invalid job: {exc}")
            return
        size = shard_size(job, state.config.task_ports, len(tasks))
        if size is not None:
            await self._split(attempt, tasks, size)
            return
        attempt.ports_total = len(tasks)
        self.on_planned(len(tasks))
        await state.retrying(
            "record the job's size", state.queue.set_total, job.id, attempt.attempt, len(tasks)
        )
        await self._scan(attempt, tasks, ports)

    async def _scan(
        self, attempt: JobAttempt, tasks: list[PortTask], ports: dict[str, list[int]]
    ) -> None:
        state = self.state
        job = attempt.job
        engine, services, gate = state.engine, state.services, state.gate
        assert engine is not None and services is not None
        options = ScanOptions(
            intensity=9 if job.version_all else job.intensity,
            connect_timeout=job.connect_ms / 1000.0,
            tags=dict(job.tags),
            job=job.parent or job.id,
            worker=state.config.consumer,
            scanned_protocols=(
                tuple(sorted({t.protocol for t in tasks}))
                if job.stale_after is not None
                else tuple(sorted(ports))
            )
            or ("tcp",),
            fast=job.fast,
        )

        def scan_port(port_task: PortTask) -> defer.Deferred[Result]:
            return gate.when_written(
                lambda: state.port_slots.run(lambda: engine.scan_port(port_task, options))
            )

        def on_result(result: Result) -> None:
            attempt.ports_done += 1
            if attempt.stopped:
                # lost: another worker owns the job. released: shutdown stopped the scan and
                # hands the job back; the ports it interrupted end "incomplete" (tcpwrapped
                # when nothing was read yet), which is not a finding: never store those
                return
            state.metrics.port_result(result)  # metrics
            gate.write_started()
            d = defer.Deferred.fromCoroutine(
                state.retrying(
                    "write a result", state.queue.write_result, job.id, attempt.attempt, result
                )
            )
            d.addBoth(gate.write_ended)
            d.addCallback(state.metrics.result_written)  # metrics
            attempt.writes.append(d)

        # version scripts run on each result before on_result writes it
        phase = make_phase(
            state.reactor,
            tasks=tasks,
            sink=on_result,
            options=options,
            excluded=state.exclude.excludes,
            table_name=services.name,
            limiter=engine.limiter,
            release=state.nmap_release,
        )
        scheduler = engine.make_scheduler(scan_port, phase.on_result, options)
        attempt.scheduler = scheduler
        timeout_call = None
        if job.host_ms:
            timeout_call = state.reactor.callLater(job.host_ms / 1000.0, scheduler.stop)
        await scheduler.run(tasks)
        if timeout_call is not None and timeout_call.active():
            timeout_call.cancel()
            timed_out = False
        else:
            timed_out = timeout_call is not None
        phase.skip_scripts = attempt.state is not AttemptState.RUNNING
        await phase.flush()
        writes = await defer.DeferredList(attempt.writes, consumeErrors=True)
        if attempt.stopped:
            return  # another worker owns it now, or shutdown released it: never ack here
        if not all(ok for ok, _ in writes):
            log.error(
                "job {job}: some results could not be written; left for redelivery", job=job.id
            )
            return
        if not all(written for _, written in writes):
            # a fenced write: another worker took the job over (before our next renewal
            # noticed). It owns the entry now; acking it here could lose the job.
            self._lost(attempt, "a result write was fenced off")
            return
        if attempt.was_cancelled:
            status, error = "cancelled", None
        elif timed_out:
            status, error = "failed", f"timed out after {job.host_ms} ms (partial results kept)"
        else:
            status, error = "done", None
        attempt.finish()
        await self._end(attempt, status, error)

    async def _end(self, attempt: JobAttempt, status: str, error: str | None) -> None:
        state = self.state
        job = attempt.job
        finished = await state.retrying(
            "finish a job", state.queue.finish, job.id, attempt.attempt, status, error
        )
        if not finished:
            self._lost(attempt, "the final status write was fenced off")
            return
        if not await self._acknowledge(attempt):
            return
        state.metrics.job_ended(status)  # metrics
        if job.parent is not None:
            state.metrics.task_event(status)  # metrics
        state.jobs_done += 1
        state.results_written += attempt.ports_done
        self.on_done()
        log.info(
            "job {job} {status}: {ports} ports", job=job.id, status=status, ports=attempt.ports_done
        )

    async def _stale_targets(self, job: Job) -> list[str | Target]:
        """A staleness rescan's endpoints, from the inventory (:mod:`vscand.queue.stale`)."""
        state = self.state
        assert job.stale_after is not None
        age = job.stale_after

        async def select() -> StaleSelection:
            return await state.queue.stale_endpoints(
                stale_after=age,
                targets=job.targets,
                policy=state.policy,
                limit=state.limits.max_port_tasks,
            )

        selection = await state.retrying("read the inventory for a staleness rescan", select)
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

    async def _split(self, attempt: JobAttempt, tasks: list[PortTask], size: int) -> None:
        """Queue *attempt*'s ports as tasks of at most *size* ports (see :mod:`.shards`)."""
        state = self.state
        job = attempt.job
        documents = shards.task_documents(job.document, job.id, tasks, size)
        if state.job_key is not None:
            # tasks are jobs like any other: where jobs must be signed, so are they, with
            # the parent's expiry (a day when it has none)
            remaining = (job.not_after - time.time()) if job.not_after else 24 * 3600.0
            signer = JobSigner(state.job_key)
            documents = [signer.sign(d, max(60.0, remaining)) for d in documents]
        split = await state.retrying(
            "queue a job's tasks",
            state.queue.split,
            job,
            attempt.attempt,
            len(tasks),
            [shards.encode(d) for d in documents],
        )
        if split == "lost":
            self._lost(attempt, "the split was fenced off")
            return
        if split == "cancelled":
            await state.retrying(
                "finish a cancelled job", state.queue.finish, job.id, attempt.attempt, "cancelled"
            )
            state.metrics.job_ended("cancelled")  # metrics
        else:
            state.metrics.job_ended("sharded")  # metrics
            state.metrics.task_event("queued", len(documents))  # metrics
            log.info(
                "job {job}: {ports} ports split into {n} tasks of at most {size}",
                job=job.id,
                ports=len(tasks),
                n=len(documents),
                size=size,
            )
        await self._acknowledge(attempt)

    async def _acknowledge(self, attempt: JobAttempt) -> bool:
        """XACK *attempt*'s entry once its end is safe: on ``replica_confirm`` replicas
        (``WAIT``; one per job: replication is ordered, so it covers every result and the
        status written before it) and present, with this attempt, on the server that takes
        the XACK. Where a failover lost the end, the job is handed back for another run
        instead (``False``): acknowledging it would lose it."""
        state = self.state
        job = attempt.job
        if state.config.replica_confirm:
            await self._confirm_replicas(job.id)
        acked = await state.retrying(
            "ack a job", state.queue.ack_ended, attempt.delivery.entry_id, job.id, attempt.attempt
        )
        if acked:
            return True
        log.warn(
            "job {job}: its end is not on the Redis master (lost in a failover?); "
            "handing it back for another run",
            job=job.id,
        )
        self._lost(attempt, "its end was not on the master")
        await self.release(attempt)
        return False

    async def _confirm_replicas(self, job_id: str) -> None:
        """``WAIT`` until ``replica_confirm`` replicas have every write this connection made
        (the job's results and final status among them); retried while they lag or are
        away: a job is not acknowledged before its end would survive a failover."""
        state = self.state

        def warn(error: RedisUnavailable, delay: float) -> None:
            state.warnings.warn(
                "replica_confirm",
                "job {job}: not acknowledged yet: {why}",
                job=job_id,
                why=str(error),
            )

        await retrying(
            state.reactor,
            state.queue.confirm_replicas,
            state.config.replica_confirm,
            state.config.replica_confirm_timeout_ms,
            on_retry=warn,
            give_up=state.give_up,
        )

    def _lost(self, attempt: JobAttempt, why: str) -> None:
        """*attempt* was superseded by another worker's: never ack it here."""
        log.warn(
            "job {job}: taken over by another worker ({why}); not acknowledging it",
            job=attempt.job.id,
            why=why,
        )
        attempt.fenced()
        self.state.queue.forget(attempt.delivery.entry_id)

    async def release(self, attempt: JobAttempt) -> None:
        """Make a job we cannot finish claimable at once by other workers."""
        state = self.state
        try:
            await state.queue.release(attempt.delivery.entry_id, attempt.job.id)
            state.metrics.job_ended("released")  # metrics
            log.info("job {job} released for another worker", job=attempt.job.id)
        except Exception:
            log.failure("releasing job {job}", job=attempt.job.id)
