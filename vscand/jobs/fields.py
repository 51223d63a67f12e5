"""One checker per job field: type, range and syntax, each error naming its field.

Targets and endpoints are parsed with :mod:`vscand.targets.parse` (odd IPv4 spellings
are refused), and every *literal* address or network is checked against the
:class:`~vscand.targets.policy.TargetPolicy` after canonicalisation (IPv4-mapped, 6to4,
Teredo, NAT64 unwrapped). Hostnames are resolved once and checked by the worker, before
dialling. Ports are in Nmap syntax, with a per-target cap.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from vscand.jobs.schema import (
    CONNECT_MS_RANGE,
    CONTROL_CHARS,
    DEFAULT_CONNECT_MS,
    HOST_MS_RANGE,
    MAX_TAG_KEY_CHARS,
    MAX_TAG_VALUE_CHARS,
    MAX_TARGET_CHARS,
    TIMEOUT_FIELDS,
    JobError,
    JobLimits,
    json_type,
    shorten,
)
from vscand.ports import PortSpecError, ServicesTable
from vscand.targets.parse import Target, TargetError, parse_target
from vscand.targets.policy import TargetPolicy
from vscand.targets.tasks import DEFAULT_TOP_PORTS, select_ports


def int_field(obj: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    """Field *name*: an integer in *low*..*high* (a JSON boolean is not one)."""
    value = obj.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobError(name, f"must be an integer, not {json_type(value)} {shorten(value)}")
    if not low <= value <= high:
        raise JobError(name, f"{shorten(value)} is out of range ({low}-{high})")
    return value


def bool_field(obj: Mapping[str, Any], name: str) -> bool:
    """Field *name*: true or false (default false)."""
    value = obj.get(name, False)
    if not isinstance(value, bool):
        raise JobError(name, f"must be true or false, not {json_type(value)} {shorten(value)}")
    return value


def string_list(obj: Mapping[str, Any], name: str, job_id: str | None) -> list[str]:
    """Field *name*: an array of strings, each at most ``MAX_TARGET_CHARS`` long."""
    value = obj.get(name, [])
    if not isinstance(value, list):
        raise JobError(name, f"must be an array of strings, not {json_type(value)}", job_id)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise JobError(
                f"{name}[{index}]",
                f"must be a string, not {json_type(item)} {shorten(item)}",
                job_id,
            )
        if len(item) > MAX_TARGET_CHARS:
            raise JobError(f"{name}[{index}]", f"longer than {MAX_TARGET_CHARS} characters", job_id)
    return value


def parse_job_target(
    text: str, where: str, policy: TargetPolicy, endpoint: bool, job_id: str | None
) -> Target:
    """Parse one target (the right kind for its list, networks within the size cap)."""
    try:
        target = parse_target(text)
        if target.is_endpoint != endpoint:
            if endpoint:
                raise TargetError(
                    f"{text!r} is not HOST:PORT[/udp] (put plain hosts and networks in targets)"
                )
            raise TargetError(f"{text!r} is an endpoint (HOST:PORT): put it in endpoints")
        if target.network is not None and target.network.num_addresses > policy.max_cidr_addresses:
            policy.check_network(target.network, f"target {target.text!r}")  # names the cap
    except TargetError as e:
        raise JobError(where, str(e), job_id) from None
    return target


def check_job_target(target: Target, where: str, policy: TargetPolicy, job_id: str | None) -> None:
    """Check a literal address or network against the policy, after canonicalisation.

    A hostname is resolved and checked by the worker, before dialling.
    """
    try:
        if target.network is not None:
            policy.check_network(target.network, f"target {target.text!r}")
        elif target.address is not None:
            policy.check_address(target.address, f"target {target.text!r}")
        elif target.hostname is not None:
            policy.check_name(target.hostname, f"target {target.text!r}")
    except TargetError as e:
        raise JobError(where, str(e), job_id) from None


def timeouts_field(obj: Mapping[str, Any], job_id: str | None) -> tuple[int, int | None]:
    value = obj.get("timeouts", {})
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise JobError("timeouts", f"must be an object, not {json_type(value)}", job_id)
    unknown = sorted(set(value) - TIMEOUT_FIELDS)
    if unknown:
        raise JobError(
            "timeouts",
            f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(TIMEOUT_FIELDS))})",
            job_id,
        )
    try:
        connect_ms = int_field(value, "connect_ms", DEFAULT_CONNECT_MS, *CONNECT_MS_RANGE)
        host_value = value.get("host_ms")
        host_ms = None if host_value is None else int_field(value, "host_ms", 0, *HOST_MS_RANGE)
    except JobError as e:
        raise JobError(f"timeouts.{e.field}", e.reason, job_id) from None
    return connect_ms, host_ms


def tags_field(obj: Mapping[str, Any], limits: JobLimits, job_id: str | None) -> dict[str, str]:
    value = obj.get("tags", {})
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise JobError("tags", f"must be an object of strings, not {json_type(value)}", job_id)
    if len(value) > limits.max_tags:
        raise JobError(
            "tags", f"{len(value)} tags, more than the limit of {limits.max_tags}", job_id
        )
    for key, item in value.items():
        where = f"tags[{key!r}]"
        if not 1 <= len(key) <= MAX_TAG_KEY_CHARS:
            raise JobError(where, f"a tag name must be 1-{MAX_TAG_KEY_CHARS} characters", job_id)
        if not isinstance(item, str):
            raise JobError(
                where, f"must be a string, not {json_type(item)} {shorten(item)}", job_id
            )
        if len(item) > MAX_TAG_VALUE_CHARS:
            raise JobError(where, f"longer than {MAX_TAG_VALUE_CHARS} characters", job_id)
        if CONTROL_CHARS.search(key) or CONTROL_CHARS.search(item):
            raise JobError(where, "control characters are not allowed in tags", job_id)
    return dict(value)


def optional_text(
    obj: Mapping[str, Any],
    name: str,
    pattern: re.Pattern[str] | None,
    limit: int,
    job_id: str | None,
) -> str | None:
    value = obj.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise JobError(name, f"must be a string, not {json_type(value)} {shorten(value)}", job_id)
    if pattern is not None and not pattern.fullmatch(value):
        raise JobError(
            name, f"{shorten(value)} must be 1-{limit} characters of A-Z a-z 0-9 . _ -", job_id
        )
    if len(value) > limit or CONTROL_CHARS.search(value):
        raise JobError(name, f"must be at most {limit} printable characters", job_id)
    return value


def ports_field(
    obj: Mapping[str, Any],
    limits: JobLimits,
    services: ServicesTable | None,
    needed: bool,
    job_id: str | None,
) -> tuple[str | None, int]:
    """The port spec (None = default) and how many ports it selects per target."""
    value = obj.get("ports")
    if value is None:
        return None, DEFAULT_TOP_PORTS
    if not isinstance(value, str):
        raise JobError(
            "ports",
            f"must be a string in Nmap syntax, not {json_type(value)} {shorten(value)}",
            job_id,
        )
    try:
        selected = select_ports(value, services, protocols=("tcp",))
    except PortSpecError as e:
        raise JobError("ports", f"bad port list {shorten(value)}: {e}", job_id) from None
    except OSError as e:
        raise JobError("ports", f"{shorten(value)} needs nmap-services: {e}", job_id) from None
    count = sum(len(ports) for ports in selected.values())
    if count == 0 and needed:
        raise JobError("ports", f"{shorten(value)} selects no ports", job_id)
    if count > limits.max_ports_per_target:
        raise JobError(
            "ports",
            f"{shorten(value)} selects {count} ports per target, more than the limit of "
            f"{limits.max_ports_per_target}",
            job_id,
        )
    return value, count
