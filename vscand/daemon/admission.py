"""Admission: the checks an entry passes before a job attempt starts, and refusals.

The cheap checks come first (deliveries, size, fields), then the job document
(:func:`vscand.jobs.parse.parse_job`), the signature's freshness in signed mode, and the
attempt's begin script. An entry that fails any of them is dead-lettered with a precise
reason (which acknowledges it): an invalid job is never dropped silently.
"""

from __future__ import annotations

import time
import uuid

from twisted.logger import Logger

from vscand.daemon.attempt import JobAttempt
from vscand.daemon.state import WorkerState
from vscand.jobs.identity import entry_job_id, id_hint
from vscand.jobs.parse import parse_job
from vscand.jobs.schema import JobError
from vscand.queue.consumer import Delivery

log = Logger()

#: longest reason a dead letter or a job hash gets
MAX_REASON_CHARS = 1000


def internal_error(exc: BaseException) -> str:
    """A dead letter's reason for an error nobody expected (bounded, one line)."""
    text = " ".join(str(exc).split())
    return f"internal error: {type(exc).__name__}: {text[:300]}"


class JobAdmission:
    """Turns a delivery into a running :class:`JobAttempt`, or ends the entry here."""

    def __init__(self, state: WorkerState) -> None:
        self.state = state

    async def reject(
        self, delivery: Delivery, job_id: str | None, reason: str, *, trusted: bool = True
    ) -> None:
        """Dead-letter *delivery* with *reason* (which acknowledges it). The status hash of
        *job_id* is marked failed only when *trusted* (in signed mode: the signature was
        verified) and only when that hash belongs to this very entry (made by its submitter,
        or by its own earlier start): a refused entry never changes another job."""
        state = self.state
        if len(reason) > MAX_REASON_CHARS:  # every part is bounded; this bounds the whole
            reason = reason[: MAX_REASON_CHARS - 3] + "..."
        log.warn("job entry {entry} rejected: {reason}", entry=delivery.entry_id, reason=reason)
        if job_id is not None and trusted:
            await state.retrying(
                "record a rejected job", state.queue.reject, job_id, delivery.entry_id, reason
            )
        await state.retrying("dead-letter a job", state.queue.dead_letter, delivery, reason)
        state.metrics.job_ended("dead_lettered")  # metrics

    async def admit(self, delivery: Delivery) -> JobAttempt | None:
        """The attempt to run for *delivery*, or ``None`` when the entry was ended here
        (refused, already done, cancelled before it started)."""
        state = self.state
        config = state.config
        queue = state.queue
        # the cheap checks first: size (values over the limit were never read), fields
        if queue.over_cap(delivery):
            await self.reject(
                delivery,
                id_hint(delivery.fields.get(b"job", b""), state.limits),
                f"delivered {delivery.deliveries} times (max_deliveries "
                f"{config.max_deliveries}): the job crashed or wedged its worker each time",
                trusted=state.verifier is None,
            )
            return None
        if delivery.refusal is not None:
            await self.reject(delivery, None, f"invalid job: {delivery.refusal}")
            return None
        raw = delivery.fields.get(b"job")
        if raw is None:
            names = sorted(name.decode("utf-8", "replace")[:40] for name in delivery.fields)
            await self.reject(
                delivery,
                None,
                "invalid job: the stream entry has no 'job' field"
                + (f" (its fields: {', '.join(repr(n) for n in names[:8])})" if names else ""),
            )
            return None
        try:
            job = parse_job(
                raw,
                limits=state.limits,
                policy=state.policy,
                verifier=state.verifier,
                now=time.time(),
                services=state.services,
                default_id=entry_job_id(delivery.entry_id, config.queue),
            )
        except JobError as exc:
            await self.reject(delivery, exc.job_id, f"invalid job: {exc}", trusted=exc.id_trusted)
            return None
        if state.verifier is not None:
            fresh = await state.retrying(
                "check replay", queue.claim_signature, job, delivery.entry_id
            )
            if not fresh:
                await self.reject(
                    delivery,
                    None,
                    "replayed job: this signed job id was "
                    "already submitted in another stream entry",
                )
                return None
        attempt = uuid.uuid4().hex
        begun = await state.retrying("start a job", queue.begin, job, delivery.entry_id, attempt)
        if begun == "done":
            await state.retrying("ack a finished job", queue.ack, delivery.entry_id)
            return None
        if begun == "duplicate":
            await self.reject(
                delivery,
                None,
                f"duplicate job id: {job.id!r} belongs to another stream entry "
                f"({state.keys.job(job.id)} names it); submit the job under a new id",
            )
            return None
        if begun == "orphan":
            await self.reject(
                delivery,
                None,
                f"invalid job: {job.id} names parent {job.parent!r}, "
                "but no sharded job queued it as a task",
            )
            return None
        if begun == "cancelled":
            await state.retrying(
                "finish a cancelled job", queue.finish, job.id, attempt, "cancelled", None
            )
            await state.retrying("ack a cancelled job", queue.ack, delivery.entry_id)
            state.metrics.job_ended("cancelled")  # metrics
            return None
        return JobAttempt(delivery, job, attempt, started=state.reactor.seconds())
