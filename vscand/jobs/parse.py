"""Submitted job bytes → a checked :class:`~vscand.jobs.schema.Job`: :func:`parse_job`.

:func:`parse_job` checks every field and raises :class:`~vscand.jobs.schema.JobError`
with one precise line naming the field (``ports: bad port list '99999': port 99999 is
out of range (0-65535)``), so an invalid job can be marked failed, dead-lettered and
acknowledged, never dropped. What is checked, before any socket is opened:

* size, UTF-8, nesting depth and strict JSON (:mod:`vscand.jobs.decode`); unknown
  fields are refused;
* the signature and expiry when a :class:`~vscand.jobs.signing.JobVerifier` is
  configured (:mod:`vscand.jobs.signing`);
* every field (:mod:`vscand.jobs.fields`): targets and endpoints against the policy,
  ports in Nmap syntax, and a cap on addresses × ports.

Nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import replace
from typing import Any

from vscand.jobs.decode import decode_job
from vscand.jobs.fields import (
    bool_field,
    check_job_target,
    int_field,
    optional_text,
    parse_job_target,
    ports_field,
    string_list,
    tags_field,
    timeouts_field,
)
from vscand.jobs.identity import job_identity, object_id_hint
from vscand.jobs.schema import (
    DEFAULT_INTENSITY,
    DEFAULT_LIMITS,
    HEX_SIG,
    JOB_FIELDS,
    MAX_REQUESTER_CHARS,
    MAX_TASK_PORTS,
    PRIORITY_RANGE,
    QUEUE_NAME,
    STALE_AFTER_RANGE,
    Job,
    JobError,
    JobLimits,
)
from vscand.jobs.signing import JobVerifier, check_not_after
from vscand.ports import ServicesTable
from vscand.targets.parse import TargetError, parse_target
from vscand.targets.policy import TargetPolicy


def parse_job(
    raw: bytes,
    *,
    limits: JobLimits = DEFAULT_LIMITS,
    policy: TargetPolicy,
    verifier: JobVerifier | None = None,
    now: float,
    services: ServicesTable | None = None,
    default_id: str | None = None,
) -> Job:
    """Check every field of a submitted job; :class:`JobError` names the first bad one.

    *services* is the ``nmap-services`` table for port specs with service names or
    ``[...]`` (loaded on demand if not given); *now* is unix time (expiry).
    *default_id* names a valid job that carries no ``id`` (the daemon passes
    :func:`~vscand.jobs.identity.entry_job_id`: the same id at every delivery of the
    entry, one its producer knows); without one such a job gets a new uuid4.
    """
    obj = decode_job(raw, limits)
    hint = object_id_hint(obj)
    verified = verifier is None
    try:
        if verifier is not None:
            _check_fields(obj)
            verifier.verify(obj, now)
            verified = True
        job = _parse_object(obj, raw, limits, policy, verifier is not None, now, services)
        if default_id is not None and isinstance(obj, dict) and obj.get("id") is None:
            job = replace(job, id=default_id)
        return replace(job, document=obj)
    except JobError as e:
        if e.job_id is None and hint is not None:
            e.job_id = hint
        e.id_trusted = verified
        raise


def _check_fields(obj: Mapping[str, Any]) -> None:
    unknown = sorted(set(obj) - JOB_FIELDS)
    if unknown:
        more = f" (and {len(unknown) - 1} more)" if len(unknown) > 1 else ""
        raise JobError(
            None, f"unknown field {unknown[0]!r}{more}; allowed: {', '.join(sorted(JOB_FIELDS))}"
        )


def _parse_object(
    obj: dict[str, Any],
    raw: bytes,
    limits: JobLimits,
    policy: TargetPolicy,
    signed: bool,
    now: float,
    services: ServicesTable | None,
) -> Job:
    """The fields of a decoded job; *signed*: its signature was verified already."""
    _check_fields(obj)
    job_id, parent = job_identity(obj)
    if signed and job_id is None:
        raise JobError("id", "a signed job must carry an id (the replay guard is keyed on it)")
    not_after = check_not_after(obj["not_after"], now) if obj.get("not_after") is not None else None
    if "sig" in obj and not signed:
        sig = obj["sig"]
        if not isinstance(sig, str) or not HEX_SIG.fullmatch(sig):
            raise JobError("sig", "must be 64 hex digits (HMAC-SHA256)")

    targets = string_list(obj, "targets", job_id)
    endpoints = string_list(obj, "endpoints", job_id)
    stale_after = int_field(obj, "stale_after", 0, 0, STALE_AFTER_RANGE[1]) or None
    if stale_after is not None:
        return _stale_job(obj, job_id, stale_after, targets, endpoints, limits, not_after, raw)
    if not targets and not endpoints:
        raise JobError("targets", "a job needs at least one target or endpoint", job_id)
    if len(targets) + len(endpoints) > limits.max_targets:
        raise JobError(
            "targets",
            f"{len(targets) + len(endpoints)} targets and endpoints, more than the limit of "
            f"{limits.max_targets}",
            job_id,
        )
    ports, per_target = ports_field(obj, limits, services, bool(targets), job_id)
    intensity = int_field(obj, "intensity", DEFAULT_INTENSITY, 0, 9)
    version_all = bool_field(obj, "version_all")
    connect_ms, host_ms = timeouts_field(obj, job_id)
    tags = tags_field(obj, limits, job_id)
    priority = int_field(obj, "priority", 0, *PRIORITY_RANGE)
    fast = bool_field(obj, "fast")
    queue = optional_text(obj, "queue", QUEUE_NAME, 64, job_id)
    requester = optional_text(obj, "requester", None, MAX_REQUESTER_CHARS, job_id)
    task_ports = int_field(obj, "task_ports", 0, 0, MAX_TASK_PORTS) or None

    # parse everything and bound the work first: a network that is not wholly inside
    # one allowed network is checked address by address
    parsed = [
        (f"targets[{index}]", parse_job_target(text, f"targets[{index}]", policy, False, job_id))
        for index, text in enumerate(targets)
    ] + [
        (f"endpoints[{index}]", parse_job_target(text, f"endpoints[{index}]", policy, True, job_id))
        for index, text in enumerate(endpoints)
    ]
    addresses = sum(
        target.network.num_addresses if target.network is not None else 1
        for _, target in parsed
        if not target.is_endpoint
    )
    tasks = addresses * per_target + len(endpoints)
    if tasks > limits.max_port_tasks:
        raise JobError(
            None,
            f"job would scan about {tasks} ports ({addresses} addresses x {per_target} ports"
            f"{f' + {len(endpoints)} endpoints' if endpoints else ''}), more than the limit of "
            f"{limits.max_port_tasks}",
            job_id,
        )
    for where, target in parsed:
        check_job_target(target, where, policy, job_id)
    return Job(
        id=job_id if job_id is not None else str(uuid.uuid4()),
        targets=tuple(targets),
        endpoints=tuple(endpoints),
        ports=ports,
        intensity=intensity,
        version_all=version_all,
        connect_ms=connect_ms,
        host_ms=host_ms,
        tags=tags,
        priority=priority,
        fast=fast,
        queue=queue,
        not_after=not_after,
        raw=raw,
        requester=requester,
        estimated_tasks=tasks,
        parent=parent,
        task_ports=task_ports,
    )


def _stale_job(
    obj: Mapping[str, Any],
    job_id: str | None,
    stale_after: int,
    targets: list[str],
    endpoints: list[str],
    limits: JobLimits,
    not_after: float | None,
    raw: bytes,
) -> Job:
    """A staleness rescan: its endpoints come from the inventory when a worker runs it.
    ``targets`` (addresses and networks) narrow the inventory hosts; no endpoints, no ports."""
    if stale_after < STALE_AFTER_RANGE[0]:
        raise JobError(
            "stale_after", f"{stale_after} is out of range ({STALE_AFTER_RANGE[0]}-"
            f"{STALE_AFTER_RANGE[1]} seconds)", job_id,
        )  # fmt: skip
    if endpoints:
        raise JobError(
            "endpoints", "a staleness rescan takes its endpoints from the inventory", job_id
        )
    if obj.get("ports") is not None:
        raise JobError(
            "ports", "a staleness rescan rescans the inventory's own ports: no ports", job_id
        )
    if obj.get("parent") is not None:
        raise JobError("parent", "a staleness rescan is never a task of another job", job_id)
    if len(targets) > limits.max_targets:
        raise JobError(
            "targets", f"{len(targets)} targets, more than the limit of {limits.max_targets}",
            job_id,
        )  # fmt: skip
    for index, text in enumerate(targets):
        try:
            target = parse_target(text)
        except TargetError as e:
            raise JobError(f"targets[{index}]", str(e), job_id) from None
        if target.is_endpoint or target.hostname is not None:
            raise JobError(
                f"targets[{index}]",
                f"{text!r}: a staleness rescan is narrowed by addresses and networks only "
                "(the inventory is keyed by address)",
                job_id,
            )
    connect_ms, host_ms = timeouts_field(obj, job_id)
    return Job(
        id=job_id if job_id is not None else str(uuid.uuid4()),
        targets=tuple(targets),
        endpoints=(),
        ports=None,
        intensity=int_field(obj, "intensity", DEFAULT_INTENSITY, 0, 9),
        version_all=bool_field(obj, "version_all"),
        connect_ms=connect_ms,
        host_ms=host_ms,
        tags=tags_field(obj, limits, job_id),
        priority=int_field(obj, "priority", 0, *PRIORITY_RANGE),
        fast=bool_field(obj, "fast"),
        queue=optional_text(obj, "queue", QUEUE_NAME, 64, job_id),
        not_after=not_after,
        raw=raw,
        requester=optional_text(obj, "requester", None, MAX_REQUESTER_CHARS, job_id),
        task_ports=int_field(obj, "task_ports", 0, 0, MAX_TASK_PORTS) or None,
        stale_after=stale_after,
    )
