"""The shapes of job ids: a submitted id, and task ``N`` of a sharded job ``P``, ``P/tN``
(and the ``<base>:t<N>`` of tasks queued before key layout 2, still read).

Pure code, importing nothing of vscand: the job format, the key names and the producer
client share these.
"""

from __future__ import annotations

import hashlib

#: a submitted job id (and a sharded job's ``parent``): no ``{``, ``}`` nor ``/``
JOB_ID_PATTERN = r"[A-Za-z0-9._:-]{1,128}"
#: between a sharded job's id and its task's index: task ``N`` of job ``P`` is ``P/tN``
TASK_SEP = "/t"


def task_id(parent_id: str, index: int) -> str:
    """The id of task *index* of the sharded job *parent_id*."""
    return f"{parent_id}{TASK_SEP}{index}"


#: before the key layout of ``queue/keys.py`` (layout 2), a parent id longer than this was
#: replaced by a digest in its task ids ``<base>:t<n>``
_LEGACY_MAX_BASE = 112


def legacy_task_base(parent_id: str) -> str:
    """The prefix of a sharded job's task ids before layout 2 (``<base>:t<n>``): the job
    id, or a digest of a long one. Still read: task entries queued before an upgrade
    (:func:`legacy_task_index`)."""
    if len(parent_id) <= _LEGACY_MAX_BASE:
        return parent_id
    return "shard-" + hashlib.sha256(parent_id.encode()).hexdigest()[:40]


def legacy_task_index(task_id: str, parent_id: str) -> int | None:
    """N if *task_id* is ``<base>:t<N>``, the pre-layout-2 id of task N of *parent_id*."""
    base, sep, index = task_id.rpartition(":t")
    if not sep or not index.isascii() or not index.isdigit() or index != str(int(index)):
        return None
    return int(index) if base == legacy_task_base(parent_id) else None


#: a job has at most ``max_job_port_tasks`` tasks (a million by default): N < 10**9
MAX_TASK_INDEX_DIGITS = 9


def task_index(task_id: str, parent_id: str) -> int | None:
    """N if *task_id* is ``<parent_id>/t<N>`` (N without leading zeros, at most
    :data:`MAX_TASK_INDEX_DIGITS` digits), else None."""
    base, sep, index = task_id.rpartition(TASK_SEP)
    if base != parent_id or not sep or not index.isascii() or not index.isdigit():
        return None
    if len(index) > MAX_TASK_INDEX_DIGITS:
        return None
    return int(index) if index == str(int(index)) else None
