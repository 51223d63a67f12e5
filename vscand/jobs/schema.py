"""The job format: its fields, limits and defaults, :class:`Job` and :class:`JobError`.

A job is the JSON object of ``CONTRACTS.md`` ("Job format"); ``schemas/job.schema.json``
says the same as far as JSON Schema can (``tests/test_schemas.py`` holds the two
together). :func:`~vscand.jobs.parse.parse_job` turns one into a :class:`Job`.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from vscand.jobs.ids import JOB_ID_PATTERN

#: every field a job may carry
JOB_FIELDS = frozenset(
    {
        "id",
        "targets",
        "endpoints",
        "ports",
        "intensity",
        "version_all",
        "timeouts",
        "tags",
        "priority",
        "fast",
        "queue",
        "requester",
        "not_after",
        "sig",
        "parent",
        "task_ports",
        "stale_after",
    }
)
TIMEOUT_FIELDS = frozenset({"connect_ms", "host_ms"})

DEFAULT_INTENSITY = 7
DEFAULT_CONNECT_MS = 5000
CONNECT_MS_RANGE = (100, 60_000)
#: host_ms: at least a second, at most a week
HOST_MS_RANGE = (1000, 7 * 24 * 3600 * 1000)
PRIORITY_RANGE = (-(2**31), 2**31 - 1)
MAX_TARGET_CHARS = 300
MAX_TAG_KEY_CHARS = 64
MAX_TAG_VALUE_CHARS = 1024
MAX_REQUESTER_CHARS = 256
#: a shard is an ordinary job of endpoints: at most this many (below max_targets)
MAX_TASK_PORTS = 1024
#: stale_after (seconds): from a minute to a year
STALE_AFTER_RANGE = (60, 366 * 86400)
#: a job's not_after may lie at most this far ahead (the replay guard lives that long)
MAX_NOT_AFTER_AHEAD_S = 366 * 86400.0

#: a submitted job id (a task's ``<parent>/t<N>`` is read by :mod:`vscand.jobs.identity`)
JOB_ID = re.compile(JOB_ID_PATTERN)
#: a queue name (the stream ``vscand:jobs:QUEUE``)
QUEUE_NAME = re.compile(r"[A-Za-z0-9._-]{1,64}")
#: a signature: HMAC-SHA256 in hex
HEX_SIG = re.compile(r"[0-9a-fA-F]{64}")
CONTROL_CHARS = re.compile(r"[\x00-\x1f\x7f]")

_JSON_TYPE_NAMES: dict[type, str] = {
    str: "a string",
    int: "an integer",
    float: "a number",
    bool: "a boolean",
    type(None): "null",
    list: "an array",
    dict: "an object",
}


@dataclass(frozen=True)
class JobLimits:
    """Sanity caps on one job (reliability.md §4.2 item 6)."""

    max_bytes: int = 65536
    max_targets: int = 1024
    max_ports_per_target: int = 65536
    max_port_tasks: int = 1_000_000
    max_tags: int = 32
    #: arrays and objects inside each other (a job needs 2; checked before parsing)
    max_depth: int = 8


#: the limits a job is checked against unless others are given
DEFAULT_LIMITS = JobLimits()


@dataclass(frozen=True)
class Job:
    """A checked job. ``targets`` and ``endpoints`` are the strings as submitted."""

    id: str
    targets: tuple[str, ...]
    endpoints: tuple[str, ...]
    ports: str | None
    intensity: int
    version_all: bool
    connect_ms: int
    host_ms: int | None
    tags: dict[str, str]
    priority: int
    fast: bool
    queue: str | None
    not_after: float | None
    raw: bytes
    #: who asked (from the signed payload when signed): for the audit log
    requester: str | None = None
    #: addresses × ports, an upper bound (hostnames count as one address each)
    estimated_tasks: int = field(default=0, compare=False)
    #: set on a task of a sharded job: the job it belongs to (results carry this id)
    parent: str | None = None
    #: shard size asked for by the submitter (else the worker's ``task_ports``)
    task_ports: int | None = None
    #: a staleness rescan: the job's endpoints are the inventory entries last scanned more
    #: than this many seconds ago (``targets``, if any, only narrow the hosts)
    stale_after: int | None = None
    #: the decoded JSON object the job was parsed from (a sharded job's tasks copy it)
    document: dict[str, Any] = field(default_factory=dict, compare=False, repr=False)


class JobError(ValueError):
    """An invalid job. ``str()`` is one line: ``"<field>: <reason>"`` (or the reason).

    ``job_id`` is the job's id when one could be read, else ``None``. ``id_trusted`` says
    whether that id may be written under: ``False`` when signatures are required and this
    job's was not verified (a sender without the key must not change any job's state).
    """

    def __init__(self, field: str | None, reason: str, job_id: str | None = None) -> None:
        self.field = field
        self.reason = reason
        self.job_id = job_id
        self.id_trusted = True
        super().__init__(f"{field}: {reason}" if field else reason)


def json_type(value: object) -> str:
    """*value*'s JSON type, for messages: ``a string``, ``an array``..."""
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def shorten(value: object, limit: int = 60) -> str:
    """*value* as a message quotes it: its JSON (a string's repr), cut to *limit*."""
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."
