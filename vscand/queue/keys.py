"""Redis key names (``CONTRACTS.md``), all under a configurable prefix.

Every key of one job carries the job's id in a Redis Cluster *hash tag* (literal braces):
``vscand:job:{ID}`` (status hash), ``vscand:job:{ID}:results``, ``vscand:job:{ID}:written``,
``vscand:seen:{ID}``. A task of a sharded job has the id ``<PARENT>/t<N>`` and keys
``vscand:job:{PARENT}/t<N>`` (…``:results``, …``:written``): the parent's tag, so a job and
all its tasks share one cluster slot. Submitted ids cannot contain ``{``, ``}`` or ``/``,
so what follows the closing brace (nothing, ``:results``, ``:written``, ``/t<N>``…) is
never part of an id: no job id can name another job's keys.

:data:`LUA` is the same construction for the scripts (``queue/results.py``): the format is
written here only.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass

from vscand.jobs.ids import TASK_SEP, task_id

GROUP = "vscand"

RESULTS_SUFFIX = ":results"
WRITTEN_SUFFIX = ":written"
#: the value of :attr:`Keys.layout` once the keys are in this layout (``queue/migrate.py``)
LAYOUT_VERSION = "2"


def _tagged(job_id: str) -> str:
    """``{ID}``, or ``{PARENT}/tN`` for a task id: the part a job's keys are named by."""
    parent, sep, rest = job_id.partition("/")
    return f"{{{parent}}}{sep}{rest}"


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

    @property
    def job_prefix(self) -> str:
        """What every job key starts with (before the ``{``)."""
        return f"{self.prefix}job:"

    def job(self, job_id: str) -> str:
        """Hash: status queued/running/done/failed/cancelled, timestamps, counts, error."""
        return f"{self.job_prefix}{_tagged(job_id)}"

    def job_results(self, job_id: str) -> str:
        """Stream: that job's port results."""
        return self.job(job_id) + RESULTS_SUFFIX

    def job_written(self, job_id: str) -> str:
        """Set: the ports the job's current attempt has written (``host port/proto``), so a
        write retried after an ambiguous failure (timeout, lost connection) is not stored
        twice. Reset with each attempt, deleted when the job ends."""
        return self.job(job_id) + WRITTEN_SUFFIX

    def task(self, parent_id: str, index: int) -> str:
        """The hash of task *index* of the sharded job *parent_id*."""
        return self.job(task_id(parent_id, index))

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
        return f"{self.prefix}seen:{_tagged(job_id)}"

    @property
    def schedules(self) -> str:
        return f"{self.prefix}schedules"

    def refused(self, entry_id: str) -> str:
        """Hash: why a stream entry was refused (``reason``, ``at``, ``deliveries``,
        ``stream``), kept ``job_retention``. Keyed by the entry, never by the job id the
        entry claims, so a refused entry cannot shadow a real job's id."""
        return f"{self.prefix}refused:{{{entry_id}}}"

    @property
    def layout(self) -> str:
        """String: :data:`LAYOUT_VERSION` once the job keys are in this layout."""
        return f"{self.prefix}layout"

    @property
    def layout_lock(self) -> str:
        """String (``SET NX PX``): held by the daemon migrating the keys."""
        return f"{self.prefix}layout:lock"


#: The key construction of :class:`Keys` for Lua scripts: ``job_key(prefix, id)``,
#: ``task_key(job_key, index)`` (the hash of a task from its parent's hash key),
#: ``task_id(parent_id, index)``, ``results_key(job_key)``, ``written_key(job_key)``.
LUA = f"""
local function job_key(prefix, id)
  local slash = string.find(id, '/', 1, true)
  if slash then
    return prefix .. 'job:{{' .. string.sub(id, 1, slash - 1) .. '}}' .. string.sub(id, slash)
  end
  return prefix .. 'job:{{' .. id .. '}}'
end
local function task_key(jk, index) return jk .. '{TASK_SEP}' .. index end
local function task_id(parent, index) return parent .. '{TASK_SEP}' .. index end
local function results_key(jk) return jk .. '{RESULTS_SUFFIX}' end
local function written_key(jk) return jk .. '{WRITTEN_SUFFIX}' end
"""
