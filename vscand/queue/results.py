"""Job status and port results in Redis: idempotent, fenced by attempt.

Every change a worker makes to a job is one Lua script (:mod:`vscand.queue.job_scripts`),
so it is atomic, and every script but :meth:`ResultWriter.reject` is *fenced*: it runs
only if the job hash's ``attempt`` is still the caller's. :meth:`ResultWriter.begin`
takes a job for a new attempt and, on a redelivery, deletes the previous attempt's
partial ``job:{id}:results`` stream, so a job has exactly one result set even when a
worker died half-way; a worker that lost the job (its entry was claimed by another)
gets ``False`` from :meth:`~ResultWriter.write` and stops.

A redelivery after the results and final status were written but before XACK
finds the status terminal: :meth:`~ResultWriter.begin` answers ``"done"`` and the
caller only acknowledges (reliability.md §1.9, §5 row 5).

A job that ends (:meth:`~ResultWriter.finish`, :meth:`~ResultWriter.reject`) keeps its
hash and results for *retention* seconds (``EXPIRE``; 0 keeps them); a sharded job and all
its tasks expire together when the job's last task ends.

Job hash fields (``vscand:job:{ID}``, literal braces: :mod:`vscand.queue.keys`):
``status`` (queued/running/done/failed/cancelled), ``id``, ``entry`` (stream entry id),
``worker``, ``attempt``, ``queued_at``/``started_at``/``updated_at``/``finished_at``
(ISO 8601 UTC), ``ports_done``, ``ports_total`` (when known), ``state:<state>`` counts,
``error``, ``cancel`` (``1`` when a cancel was requested).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from typing import Any, Literal, cast

from vscand.jobs.schema import Job
from vscand.output.jsonl import ordered_result
from vscand.queue.changes import normalised_service, tracks_inventory
from vscand.queue.commands import RedisCommands, integer, text
from vscand.queue.job_scripts import BEGIN, FINISH, QUEUED, REJECT, SPLIT, TOTAL, WRITE
from vscand.queue.keys import Keys
from vscand.queue.lua import CANCEL, SUBMIT

BeginState = Literal["run", "cancelled", "done", "orphan", "duplicate"]
SplitState = Literal["split", "cancelled", "lost"]
FINAL_STATUSES = ("done", "failed", "cancelled")
#: seconds an ended job's hash and results are kept (daemon key ``job_retention``): 7 days
DEFAULT_RETENTION = 7 * 24 * 3600


def iso_time(when: float) -> str:
    """Unix seconds as ISO 8601 UTC, as in results' ``scanned_at``."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


def result_json(result: Mapping[str, Any]) -> str:
    """A result as stored in Redis: compact JSON, keys in DESIGN.md's order."""
    return json.dumps(ordered_result(result), sort_keys=False, separators=(",", ":"))


class ResultWriter:
    """Writes one worker's job status and results (see the module docstring).

    *client* is a :class:`~vscand.queue.commands.RedisCommands` (``RedisClient``);
    *clock* returns unix seconds (default :func:`time.time`; a Twisted ``Clock``'s
    ``seconds`` works).
    """

    def __init__(
        self,
        client: RedisCommands,
        keys: Keys,
        *,
        worker: str,
        results_maxlen: int = 100_000,
        retention: int = DEFAULT_RETENTION,
        clock: Callable[[], float] | None = None,
    ) -> None:
        if results_maxlen < 1:
            raise ValueError("results_maxlen must be at least 1")
        if retention < 0:
            raise ValueError("retention must be 0 (keep forever) or a number of seconds")
        self.client = client
        self.keys = keys
        self.worker = worker
        self.results_maxlen = results_maxlen
        #: seconds an ended job's hash and results are kept (0: forever)
        self.retention = retention
        self._clock = clock or time.time

    def _now(self) -> str:
        return iso_time(self._clock())

    async def begin(self, job: Job, entry_id: str, attempt: str) -> BeginState:
        """Take *job* for *attempt*: ``"run"``, ``"cancelled"`` or ``"done"``.

        ``"done"``: nothing to do but XACK (the job already ended, or the same job id
        runs from another stream entry). ``"cancelled"``: a cancel was requested;
        the attempt owns the job, so ``finish(..., "cancelled")`` is accepted.
        ``"run"``: status is running, counts are reset and any partial results of an
        earlier attempt are deleted. ``"orphan"``: the job says it is a task of a sharded
        job, but no split made it (forged or stale): reject it.
        """
        reply = await self.client.eval(
            BEGIN,
            [self.keys.job(job.id), self.keys.job_results(job.id), self.keys.job_written(job.id)],
            [
                entry_id,
                attempt,
                self.worker,
                self._now(),
                job.id,
                self.keys.prefix,
                job.parent or "",
            ],
        )
        state = text(reply)
        if state == "run":
            return "run"
        if state == "cancelled":
            return "cancelled"
        if state == "done":
            return "done"
        if state == "orphan":
            return "orphan"
        if state == "duplicate":
            return "duplicate"
        raise RuntimeError(f"unexpected reply from the begin script: {reply!r}")

    async def write(self, job_id: str, attempt: str, result: Mapping[str, Any]) -> bool:
        """Record one port result; False (nothing written) if *attempt* lost the job.

        The host's inventory is updated and compared with what it held before
        (:mod:`vscand.queue.changes`): a change adds an event to the changes stream.
        Interrupted and error results go to the job's and the fleet's streams only.
        """
        host = str(result["host"])
        port = int(result["port"])
        protocol = str(result.get("protocol") or "tcp")
        port_key = f"{port}/{protocol}"
        state = str(result.get("state") or "unknown")
        normalised = normalised_service(result) if tracks_inventory(result) else ""
        now = self._now()
        at = str(result.get("scanned_at") or now)
        reply = await self.client.eval(
            WRITE,
            [
                self.keys.job(job_id),
                self.keys.job_results(job_id),
                self.keys.results,
                self.keys.inventory(host),
                self.keys.inventory_hosts,
                self.keys.job_written(job_id),
                self.keys.inventory_normalised(host),
                self.keys.changes,
            ],
            [
                attempt,
                result_json(result),
                str(result.get("job") or job_id),
                self.results_maxlen,
                host,
                port_key,
                state,
                now,
                normalised,
                port,
                protocol,
                at,
                self.keys.prefix,
            ],
        )
        return integer(reply) == 1

    async def set_total(self, job_id: str, attempt: str, total: int) -> bool:
        """Record how many ports the job will scan (for progress); fenced."""
        reply = await self.client.eval(
            TOTAL, [self.keys.job(job_id)], [attempt, int(total), self._now()]
        )
        return integer(reply) == 1

    async def finish(
        self, job_id: str, attempt: str, status: str, error: str | None = None
    ) -> bool:
        """End the job as done, failed or cancelled; False if *attempt* lost the job."""
        if status not in FINAL_STATUSES:
            raise ValueError(f"final status must be one of {', '.join(FINAL_STATUSES)}")
        reply = await self.client.eval(
            FINISH,
            [self.keys.job(job_id), self.keys.job_written(job_id)],
            [attempt, status, error or "", self._now(), self.keys.prefix, self.retention],
        )
        return integer(reply) == 1

    async def reject(self, job_id: str | None, entry_id: str, error: str) -> bool:
        """Mark an invalid job failed with *error* (unfenced: it never ran).

        Nothing is written without an id, nor when the job hash belongs to another
        stream entry (a replayed or forged entry reusing a real job's id) or already
        ended done/cancelled. Returns whether the hash was written. Dead-lettering
        and XACK are the consumer's.
        """
        if job_id is None:
            return False
        reply = await self.client.eval(
            REJECT,
            [self.keys.job(job_id)],
            [entry_id, error, self._now(), job_id, self.keys.prefix, self.retention],
        )
        return integer(reply) == 1

    async def cancel_requested(self, job_id: str) -> bool:
        reply = await self.client.execute("HGET", self.keys.job(job_id), "cancel")
        return text(reply) == "1"

    async def released(self, job_id: str, *, timeout: float | None = None) -> None:
        """Record that this worker handed *job_id* back unfinished: ``queued`` again,
        ``released_by`` and ``released_at`` (unfenced: the entry is claimable already)."""
        await self.client.execute(
            "HSET", self.keys.job(job_id),
            "status", "queued", "released_by", self.worker, "released_at", self._now(),
            timeout=timeout,
        )  # fmt: skip

    async def request_cancel(self, job_id: str) -> None:
        """Ask the worker running *job_id* to stop; it sets ``cancelled`` when it has.

        For a sharded job the request reaches every task that has not ended (each
        worker running one stops it; a queued one ends ``cancelled`` when taken).
        """
        await self.client.eval(CANCEL, [self.keys.job(job_id)], [self._now()])

    async def split(
        self,
        job: Job,
        attempt: str,
        total_ports: int,
        tasks: list[bytes],
        stream: str,
    ) -> SplitState:
        """Queue *tasks* (job JSON documents, ids ``<job id>/t<i>``) on *stream* as
        tasks of *job*, atomically, fenced by *attempt*: ``"split"`` (the caller acks
        the job's entry), ``"cancelled"`` (a cancel came first; nothing queued) or
        ``"lost"`` (another attempt owns the job)."""
        reply = await self.client.eval(
            SPLIT,
            [
                self.keys.job(job.id),
                stream,
                self.keys.job_results(job.id),
                self.keys.job_written(job.id),
            ],
            [
                attempt,
                self._now(),
                total_ports,
                job.queue or "",
                job.id,
                *tasks,
            ],
        )
        state = text(reply)
        if state in ("split", "cancelled", "lost"):
            return cast(SplitState, state)
        raise RuntimeError(f"unexpected reply from the split script: {reply!r}")

    async def submit(self, job: Job, stream: str) -> tuple[bool, str]:
        """Queue *job* (its ``raw`` JSON) on *stream* with its status hash, atomically:
        ``(True, entry id)``, or ``(False, status)`` when a job with that id exists (a
        re-used id is refused here; the daemon refuses one that gets past, too)."""
        reply = await self.client.eval(
            SUBMIT,
            [self.keys.job(job.id), stream],
            [job.raw, self._now(), job.id, job.queue or ""],
        )
        outcome, value = (text(part) or "" for part in reply)
        return outcome == "queued", value

    async def set_queued(self, job: Job, entry_id: str) -> bool:
        """For submitters, after XADD: status ``queued`` unless a worker already moved it on.

        Returns whether it was written.
        """
        reply = await self.client.eval(
            QUEUED, [self.keys.job(job.id)], [entry_id, self._now(), job.id, job.queue or ""]
        )
        return integer(reply) == 1
