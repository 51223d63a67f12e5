"""A job's id: as submitted, as a task of a sharded job, or named by its stream entry.

A submitted id is 1-128 characters of ``A-Z a-z 0-9 . _ : -``; a task of a sharded job
(``parent`` set) has the id ``<parent>/t<N>`` (:mod:`vscand.jobs.ids`); a job sent
without an id is named by its stream entry (:func:`entry_job_id`). :func:`id_hint` and
:func:`object_id_hint` read the id an invalid job's status is recorded under.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from vscand.jobs.decode import decode_job
from vscand.jobs.ids import TASK_SEP, legacy_task_index, task_id, task_index
from vscand.jobs.schema import DEFAULT_LIMITS, JOB_ID, JobError, JobLimits, json_type, shorten


def _job_id(obj: Mapping[str, Any]) -> str | None:
    if "id" not in obj:
        return None
    value = obj["id"]
    if not isinstance(value, str):
        raise JobError("id", f"must be a string, not {json_type(value)}")
    if not JOB_ID.fullmatch(value):
        raise JobError("id", f"{shorten(value)} must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    return value


def job_identity(obj: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(id, parent)``. A submitted id is 1-128 characters of ``A-Z a-z 0-9 . _ : -``;
    a task of a sharded job (``parent`` set) has the id ``<parent>/t<N>``, the only ids
    with a ``/`` (:mod:`vscand.jobs.ids`). A task queued before the key layout 2 has
    ``<base>:t<N>`` (base: the parent id or its digest): its id becomes ``<parent>/t<N>``."""
    if obj.get("parent") is None or obj.get("stale_after") not in (None, 0):
        return _job_id(obj), None  # a staleness rescan with a parent is refused later
    parent = obj["parent"]
    if not isinstance(parent, str) or not JOB_ID.fullmatch(parent):
        raise JobError("parent", "must be a job id (1-128 characters of A-Z a-z 0-9 . _ : -)")
    if "id" not in obj:
        raise JobError("id", "a task of a sharded job must carry its own id")
    value = obj["id"]
    if not isinstance(value, str):
        raise JobError("id", f"must be a string, not {json_type(value)}")
    index = task_index(value, parent)
    if index is None and JOB_ID.fullmatch(value):
        index = legacy_task_index(value, parent)
    if index is None:
        raise JobError(
            "id", f"{shorten(value)}: a task of job {parent!r} has the id {parent}{TASK_SEP}<N>"
        )
    return task_id(parent, index), parent


def object_id_hint(obj: object) -> str | None:
    """The id an invalid job's status is recorded under: its (task) id when well formed."""
    if not isinstance(obj, dict):
        return None
    try:
        return job_identity(obj)[0]
    except JobError:
        value = obj.get("id")
        return value if isinstance(value, str) and JOB_ID.fullmatch(value) else None


def entry_job_id(entry_id: str, queue: str | None = None) -> str:
    """The id of a job submitted without one: named by its stream entry, which its
    producer learns from ``XADD`` — ``entry:<ENTRY>`` on the default queue,
    ``entry:<QUEUE>:<ENTRY>`` on another (entry ids repeat across streams). Every
    delivery of the entry gets the same id, so a redelivered job resumes its own hash."""
    if not queue or queue == "default":
        return f"entry:{entry_id}"
    return f"entry:{queue}:{entry_id}"


def id_hint(raw: bytes, limits: JobLimits = DEFAULT_LIMITS) -> str | None:
    """The id an entry's job claims, if it can be read cheaply and safely (size and depth
    checked before parsing; never raises), else ``None``. Only a hint: see
    :attr:`JobError.id_trusted` before writing anything under it."""
    try:
        return object_id_hint(decode_job(raw, limits))
    except Exception:
        return None
