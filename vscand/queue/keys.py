"""Redis key names (``../shared/DESIGN.md``), all under a configurable prefix.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass

GROUP = "vscand"


@dataclass(frozen=True)
class Keys:
    prefix: str = "vscand:"

    @property
    def jobs(self) -> str:
        """Stream of job submissions (field ``job``), consumer group ``vscand``."""
        return f"{self.prefix}jobs"

    def jobs_for(self, queue: str | None) -> str:
        """The jobs stream of a queue (vantage point); the default queue is ``jobs``."""
        return self.jobs if not queue or queue == "default" else f"{self.prefix}jobs:{queue}"

    def job(self, job_id: str) -> str:
        """Hash: status queued/running/done/failed/cancelled, timestamps, counts, error."""
        return f"{self.prefix}job:{job_id}"

    def job_results(self, job_id: str) -> str:
        """Stream: that job's port results."""
        return f"{self.prefix}job:{job_id}:results"

    def job_written(self, job_id: str) -> str:
        """Set: the ports the job's current attempt has written (``host port/proto``), so a
        write retried after an ambiguous failure (timeout, lost connection) is not stored
        twice. Reset with each attempt, deleted when the job ends."""
        return f"{self.prefix}job:{job_id}:written"

    @property
    def results(self) -> str:
        """Stream (trimmed): every result, for consumers that follow the fleet."""
        return f"{self.prefix}results"

    def inventory(self, host: str) -> str:
        """Hash ``{port}/{proto}`` → latest result: the current picture of a host."""
        return f"{self.prefix}inventory:{host}"

    @property
    def inventory_hosts(self) -> str:
        """Set of hosts that have an inventory hash."""
        return f"{self.prefix}inventory-hosts"

    def inventory_normalised(self, host: str) -> str:
        """Hash ``{port}/{proto}`` → the normalised form of the inventory entry
        (:func:`vscand.queue.changes.normalised_service`), what changes are measured on."""
        return f"{self.prefix}inventory-norm:{host}"

    @property
    def changes(self) -> str:
        """Stream (trimmed like the results stream): inventory change events."""
        return f"{self.prefix}changes"

    @property
    def dead(self) -> str:
        """Stream: rejected or poison jobs with the reason."""
        return f"{self.prefix}dead"

    @property
    def workers(self) -> str:
        """Hash of heartbeats: the fleet, who runs what since when."""
        return f"{self.prefix}workers"

    def seen_signature(self, job_id: str) -> str:
        """Replay guard for signed jobs (SET NX with the job's expiry as TTL)."""
        return f"{self.prefix}seen:{job_id}"

    @property
    def schedules(self) -> str:
        return f"{self.prefix}schedules"

    def refused(self, entry_id: str) -> str:
        """Hash: why a stream entry was refused (``reason``, ``at``, ``deliveries``,
        ``stream``), kept ``job_retention``. Keyed by the entry, never by the job id the
        entry claims, so a refused entry cannot shadow a real job's id."""
        return f"{self.prefix}refused:{{{entry_id}}}"
