"""Scan jobs from the Redis stream: strict parsing, limits, signatures, replay guard.

A job is the JSON object of ``CONTRACTS.md`` ("Job format"). :func:`parse_job`
checks every field and raises :class:`JobError` with one precise line naming the
field (``ports: bad port list '99999': port 99999 is out of range (0-65535)``), so an
invalid job can be marked failed, dead-lettered and acknowledged, never dropped.

What is checked here, before any socket is opened:

* size (``JobLimits.max_bytes``) before the JSON is even parsed; UTF-8; one JSON
  object, no duplicate fields, no ``NaN``/``Infinity``; unknown fields are refused;
* the signature and expiry when a :class:`JobVerifier` is configured (the key comes
  from a file the daemon reads, never from Redis);
* every target and endpoint with :mod:`vscand.scan.targets` (odd IPv4 spellings are
  refused), and every *literal* address or network against the :class:`TargetPolicy`
  after canonicalisation (IPv4-mapped, 6to4, Teredo, NAT64 unwrapped). Hostnames are
  resolved once and checked by the worker, before dialling;
* ports in Nmap syntax, a per-target port cap, and a cap on addresses × ports.

Replay protection needs Redis: :func:`claim_signature` (``SET seen:{ID} NX``).

Pure code apart from :func:`claim_signature`, which awaits the injected client;
nothing here imports ``twisted.internet``.
"""

from __future__ import annotations

import hmac
import json
import math
import os
import re
import stat
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from hashlib import sha256
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from vscand.ports import PortSpecError, ServicesTable
from vscand.queue.commands import RedisCommands, integer
from vscand.queue.keys import JOB_ID_PATTERN, TASK_SEP, Keys, task_id
from vscand.queue.shards import legacy_task_index, task_index
from vscand.targets.parse import Target, TargetError, parse_target
from vscand.targets.policy import TargetPolicy
from vscand.targets.tasks import DEFAULT_TOP_PORTS, select_ports

log = Logger()

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
#: the replay guard outlives a job's expiry by this much (clock skew between hosts)
REPLAY_MARGIN_S = 300.0
#: replay guard lifetime for a job without not_after (only when called for one)
REPLAY_DEFAULT_TTL_S = 7 * 24 * 3600.0
#: a job's not_after may lie at most this far ahead (the replay guard lives that long)
MAX_NOT_AFTER_AHEAD_S = 366 * 86400.0

_JOB_ID = re.compile(JOB_ID_PATTERN)
_QUEUE = re.compile(r"[A-Za-z0-9._-]{1,64}")
_HEX_SIG = re.compile(r"[0-9a-fA-F]{64}")
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")

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


def _json_type(value: object) -> str:
    return _JSON_TYPE_NAMES.get(type(value), type(value).__name__)


def _short(value: object, limit: int = 60) -> str:
    text = json.dumps(value, ensure_ascii=True) if not isinstance(value, str) else repr(value)
    return text if len(text) <= limit else text[: limit - 3] + "..."


# --------------------------------------------------------------------------- JSON


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JobError(None, f"duplicate field {key!r} in a JSON object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise JobError(None, f"{name} is not valid JSON")


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


#: JSON strings (escapes included), then any bracket: what :func:`json_depth` looks at
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deeply *text*'s arrays and objects nest, counted without parsing: brackets
    outside strings (an unterminated string's brackets count too). Linear time."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def decode_job(raw: bytes, limits: JobLimits = JobLimits()) -> dict[str, Any]:
    """The job's JSON object, or :class:`JobError`. The cheap checks come first: size in
    bytes, UTF-8, nesting depth; only then is the JSON parsed."""
    if len(raw) > limits.max_bytes:
        raise JobError(None, f"job is {len(raw)} bytes, more than the limit of {limits.max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JobError(None, f"job is not UTF-8 (byte {e.start})") from None
    depth = json_depth(text)
    if depth > limits.max_depth:
        raise JobError(
            None, f"bad JSON: nested too deeply ({depth} levels; the limit is {limits.max_depth})"
        )
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except JobError:
        raise
    except json.JSONDecodeError as e:
        raise JobError(None, f"bad JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise JobError(None, "bad JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise JobError(None, f"bad JSON: {e}") from None
    if not isinstance(obj, dict):
        raise JobError(None, f"a job must be a JSON object, not {_json_type(obj)}")
    return obj


# --------------------------------------------------------------------------- signatures


def _signature(key: bytes, obj: Mapping[str, Any]) -> str:
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    return hmac.new(key, canonical_json(unsigned), sha256).hexdigest()


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or not key:
        raise ValueError("the job signing key must be non-empty bytes")
    return key


class JobSigner:
    """Signs jobs for submitters: HMAC-SHA256 over the canonical JSON without ``sig``."""

    def __init__(self, key: bytes) -> None:
        self._key = _check_key(key)

    def sign(
        self, job: Mapping[str, Any], ttl_s: float, *, now: float | None = None
    ) -> dict[str, Any]:
        """A copy of *job* with ``not_after`` (unix seconds) and ``sig`` added.

        An ``id`` (uuid4) is added if the job has none: the replay guard is keyed
        on it, so a signed job must carry one.
        """
        if not ttl_s > 0:
            raise ValueError("ttl_s must be positive")
        signed = {k: v for k, v in job.items() if k != "sig"}
        signed.setdefault("id", str(uuid.uuid4()))
        signed["not_after"] = math.ceil((time.time() if now is None else now) + ttl_s)
        signed["sig"] = _signature(self._key, signed)
        return signed


class JobVerifier:
    """Checks a job's signature and expiry; raises :class:`JobError` (field ``sig``
    or ``not_after``) for unsigned, tampered, expired or undated jobs."""

    def __init__(self, key: bytes) -> None:
        self._key = _check_key(key)

    def verify(self, obj: Mapping[str, Any], now: float) -> None:
        sig = obj.get("sig")
        if sig is None:
            raise JobError("sig", "unsigned job: this daemon requires signed jobs")
        if not isinstance(sig, str) or not _HEX_SIG.fullmatch(sig):
            raise JobError("sig", "must be 64 hex digits (HMAC-SHA256)")
        if not hmac.compare_digest(_signature(self._key, obj), sig.lower()):
            raise JobError(
                "sig", "bad signature: the job was altered after signing or signed with another key"
            )
        # the signature is good, so not_after is what the signer wrote
        if "not_after" not in obj:
            raise JobError("not_after", "a signed job must carry not_after (unix seconds)")
        check_not_after(obj["not_after"], now)


def check_not_after(value: object, now: float) -> float:
    """A job's expiry (unix seconds), or :class:`JobError` if odd or past."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JobError("not_after", f"must be a number (unix seconds), not {_json_type(value)}")
    when = float(value)
    if not math.isfinite(when) or when < 0:
        raise JobError("not_after", f"must be unix seconds, not {value!r}")
    if now > when:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        raise JobError("not_after", f"job expired at {stamp} ({now - when:.0f} s ago)")
    if when - now > MAX_NOT_AFTER_AHEAD_S:
        raise JobError(
            "not_after",
            f"{value!r} is more than {MAX_NOT_AFTER_AHEAD_S / 86400:.0f} days ahead "
            "(a job's lifetime is at most that)",
        )
    return when


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The job signing key: the file's bytes, trailing newline stripped.

    The file must exist and be non-empty; a key readable or writable by other
    users is logged as a warning (the daemon's unit should make it 0400).
    """
    location = Path(path)
    try:
        data = location.read_bytes()
        mode = location.stat().st_mode
    except OSError as e:
        raise ValueError(f"job key file {str(location)!r}: {e.strerror or e}") from None
    key = data.removesuffix(b"\n").removesuffix(b"\r")
    if not key:
        raise ValueError(f"job key file {str(location)!r} is empty")
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warn(
            "job key file {path} is accessible to other users (mode {mode}); chmod 0400 it",
            path=str(location),
            mode=oct(stat.S_IMODE(mode)),
        )
    if len(key) < 16:
        log.warn(
            "job key in {path} is only {n} bytes; use at least 32 random bytes",
            path=str(location),
            n=len(key),
        )
    return key


# --------------------------------------------------------------------------- fields


def _int(obj: Mapping[str, Any], name: str, default: int, low: int, high: int) -> int:
    value = obj.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int):
        raise JobError(name, f"must be an integer, not {_json_type(value)} {_short(value)}")
    if not low <= value <= high:
        raise JobError(name, f"{_short(value)} is out of range ({low}-{high})")
    return value


def _bool(obj: Mapping[str, Any], name: str) -> bool:
    value = obj.get(name, False)
    if not isinstance(value, bool):
        raise JobError(name, f"must be true or false, not {_json_type(value)} {_short(value)}")
    return value


def _job_id(obj: Mapping[str, Any]) -> str | None:
    if "id" not in obj:
        return None
    value = obj["id"]
    if not isinstance(value, str):
        raise JobError("id", f"must be a string, not {_json_type(value)}")
    if not _JOB_ID.fullmatch(value):
        raise JobError("id", f"{_short(value)} must be 1-128 characters of A-Z a-z 0-9 . _ : -")
    return value


def _identity(obj: Mapping[str, Any]) -> tuple[str | None, str | None]:
    """``(id, parent)``. A submitted id is 1-128 characters of ``A-Z a-z 0-9 . _ : -``;
    a task of a sharded job (``parent`` set) has the id ``<parent>/t<N>``, the only ids
    with a ``/`` (:mod:`vscand.queue.keys`). A task queued before the key layout 2 has
    ``<base>:t<N>`` (base: the parent id or its digest): its id becomes ``<parent>/t<N>``."""
    if obj.get("parent") is None or obj.get("stale_after") not in (None, 0):
        return _job_id(obj), None  # a staleness rescan with a parent is refused later
    parent = obj["parent"]
    if not isinstance(parent, str) or not _JOB_ID.fullmatch(parent):
        raise JobError("parent", "must be a job id (1-128 characters of A-Z a-z 0-9 . _ : -)")
    if "id" not in obj:
        raise JobError("id", "a task of a sharded job must carry its own id")
    value = obj["id"]
    if not isinstance(value, str):
        raise JobError("id", f"must be a string, not {_json_type(value)}")
    index = task_index(value, parent)
    if index is None and _JOB_ID.fullmatch(value):
        index = legacy_task_index(value, parent)
    if index is None:
        raise JobError(
            "id", f"{_short(value)}: a task of job {parent!r} has the id {parent}{TASK_SEP}<N>"
        )
    return task_id(parent, index), parent


def object_id_hint(obj: object) -> str | None:
    """The id an invalid job's status is recorded under: its (task) id when well formed."""
    if not isinstance(obj, dict):
        return None
    try:
        return _identity(obj)[0]
    except JobError:
        value = obj.get("id")
        return value if isinstance(value, str) and _JOB_ID.fullmatch(value) else None


def _string_list(obj: Mapping[str, Any], name: str, job_id: str | None) -> list[str]:
    value = obj.get(name, [])
    if not isinstance(value, list):
        raise JobError(name, f"must be an array of strings, not {_json_type(value)}", job_id)
    for index, item in enumerate(value):
        if not isinstance(item, str):
            raise JobError(
                f"{name}[{index}]",
                f"must be a string, not {_json_type(item)} {_short(item)}",
                job_id,
            )
        if len(item) > MAX_TARGET_CHARS:
            raise JobError(f"{name}[{index}]", f"longer than {MAX_TARGET_CHARS} characters", job_id)
    return value


def _parse_target(
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


def _check_target(target: Target, where: str, policy: TargetPolicy, job_id: str | None) -> None:
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


def _timeouts(obj: Mapping[str, Any], job_id: str | None) -> tuple[int, int | None]:
    value = obj.get("timeouts", {})
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise JobError("timeouts", f"must be an object, not {_json_type(value)}", job_id)
    unknown = sorted(set(value) - TIMEOUT_FIELDS)
    if unknown:
        raise JobError(
            "timeouts",
            f"unknown field {unknown[0]!r} (allowed: {', '.join(sorted(TIMEOUT_FIELDS))})",
            job_id,
        )
    try:
        connect_ms = _int(value, "connect_ms", DEFAULT_CONNECT_MS, *CONNECT_MS_RANGE)
        host_value = value.get("host_ms")
        host_ms = None if host_value is None else _int(value, "host_ms", 0, *HOST_MS_RANGE)
    except JobError as e:
        raise JobError(f"timeouts.{e.field}", e.reason, job_id) from None
    return connect_ms, host_ms


def _tags(obj: Mapping[str, Any], limits: JobLimits, job_id: str | None) -> dict[str, str]:
    value = obj.get("tags", {})
    if value is None:
        value = {}
    if not isinstance(value, dict):
        raise JobError("tags", f"must be an object of strings, not {_json_type(value)}", job_id)
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
                where, f"must be a string, not {_json_type(item)} {_short(item)}", job_id
            )
        if len(item) > MAX_TAG_VALUE_CHARS:
            raise JobError(where, f"longer than {MAX_TAG_VALUE_CHARS} characters", job_id)
        if _CONTROL.search(key) or _CONTROL.search(item):
            raise JobError(where, "control characters are not allowed in tags", job_id)
    return dict(value)


def _optional_text(
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
        raise JobError(name, f"must be a string, not {_json_type(value)} {_short(value)}", job_id)
    if pattern is not None and not pattern.fullmatch(value):
        raise JobError(
            name, f"{_short(value)} must be 1-{limit} characters of A-Z a-z 0-9 . _ -", job_id
        )
    if len(value) > limit or _CONTROL.search(value):
        raise JobError(name, f"must be at most {limit} printable characters", job_id)
    return value


def _ports(
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
            f"must be a string in Nmap syntax, not {_json_type(value)} {_short(value)}",
            job_id,
        )
    try:
        selected = select_ports(value, services, protocols=("tcp",))
    except PortSpecError as e:
        raise JobError("ports", f"bad port list {_short(value)}: {e}", job_id) from None
    except OSError as e:
        raise JobError("ports", f"{_short(value)} needs nmap-services: {e}", job_id) from None
    count = sum(len(ports) for ports in selected.values())
    if count == 0 and needed:
        raise JobError("ports", f"{_short(value)} selects no ports", job_id)
    if count > limits.max_ports_per_target:
        raise JobError(
            "ports",
            f"{_short(value)} selects {count} ports per target, more than the limit of "
            f"{limits.max_ports_per_target}",
            job_id,
        )
    return value, count


def parse_job(
    raw: bytes,
    *,
    limits: JobLimits = JobLimits(),
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
    :func:`entry_job_id`: the same id at every delivery of the entry, one its producer
    knows); without one such a job gets a new uuid4.
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
        return job
    except JobError as e:
        if e.job_id is None and hint is not None:
            e.job_id = hint
        e.id_trusted = verified
        raise


def entry_job_id(entry_id: str, queue: str | None = None) -> str:
    """The id of a job submitted without one: named by its stream entry, which its
    producer learns from ``XADD`` — ``entry:<ENTRY>`` on the default queue,
    ``entry:<QUEUE>:<ENTRY>`` on another (entry ids repeat across streams). Every
    delivery of the entry gets the same id, so a redelivered job resumes its own hash."""
    if not queue or queue == "default":
        return f"entry:{entry_id}"
    return f"entry:{queue}:{entry_id}"


def id_hint(raw: bytes, limits: JobLimits = JobLimits()) -> str | None:
    """The id an entry's job claims, if it can be read cheaply and safely (size and depth
    checked before parsing; never raises), else ``None``. Only a hint: see
    :attr:`JobError.id_trusted` before writing anything under it."""
    try:
        return object_id_hint(decode_job(raw, limits))
    except Exception:
        return None


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
    job_id, parent = _identity(obj)
    if signed and job_id is None:
        raise JobError("id", "a signed job must carry an id (the replay guard is keyed on it)")
    not_after = check_not_after(obj["not_after"], now) if obj.get("not_after") is not None else None
    if "sig" in obj and not signed:
        sig = obj["sig"]
        if not isinstance(sig, str) or not _HEX_SIG.fullmatch(sig):
            raise JobError("sig", "must be 64 hex digits (HMAC-SHA256)")

    targets = _string_list(obj, "targets", job_id)
    endpoints = _string_list(obj, "endpoints", job_id)
    stale_after = _int(obj, "stale_after", 0, 0, STALE_AFTER_RANGE[1]) or None
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
    ports, per_target = _ports(obj, limits, services, bool(targets), job_id)
    intensity = _int(obj, "intensity", DEFAULT_INTENSITY, 0, 9)
    version_all = _bool(obj, "version_all")
    connect_ms, host_ms = _timeouts(obj, job_id)
    tags = _tags(obj, limits, job_id)
    priority = _int(obj, "priority", 0, *PRIORITY_RANGE)
    fast = _bool(obj, "fast")
    queue = _optional_text(obj, "queue", _QUEUE, 64, job_id)
    requester = _optional_text(obj, "requester", None, MAX_REQUESTER_CHARS, job_id)
    task_ports = _int(obj, "task_ports", 0, 0, MAX_TASK_PORTS) or None

    # parse everything and bound the work first: a network that is not wholly inside
    # one allowed network is checked address by address
    parsed = [
        (f"targets[{index}]", _parse_target(text, f"targets[{index}]", policy, False, job_id))
        for index, text in enumerate(targets)
    ] + [
        (f"endpoints[{index}]", _parse_target(text, f"endpoints[{index}]", policy, True, job_id))
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
        _check_target(target, where, policy, job_id)
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
    connect_ms, host_ms = _timeouts(obj, job_id)
    return Job(
        id=job_id if job_id is not None else str(uuid.uuid4()),
        targets=tuple(targets),
        endpoints=(),
        ports=None,
        intensity=_int(obj, "intensity", DEFAULT_INTENSITY, 0, 9),
        version_all=_bool(obj, "version_all"),
        connect_ms=connect_ms,
        host_ms=host_ms,
        tags=_tags(obj, limits, job_id),
        priority=_int(obj, "priority", 0, *PRIORITY_RANGE),
        fast=_bool(obj, "fast"),
        queue=_optional_text(obj, "queue", _QUEUE, 64, job_id),
        not_after=not_after,
        raw=raw,
        requester=_optional_text(obj, "requester", None, MAX_REQUESTER_CHARS, job_id),
        task_ports=_int(obj, "task_ports", 0, 0, MAX_TASK_PORTS) or None,
        stale_after=stale_after,
    )


# --------------------------------------------------------------------------- replay guard

_CLAIM_SCRIPT = """
local stored = redis.call('GET', KEYS[1])
if not stored then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
  return 1
end
if stored == ARGV[1] then return 1 end
return 0
"""


async def claim_signature(
    client: RedisCommands,
    keys: Keys,
    job: Job,
    entry_id: str,
    *,
    now: float | None = None,
    margin_s: float = REPLAY_MARGIN_S,
) -> bool:
    """Record that stream entry *entry_id* carries signed job *job*; False on a replay.

    ``seen:{ID}`` (:meth:`Keys.seen_signature`) holds the first entry id seen with this
    job id, until the job's ``not_after`` plus *margin_s* (after which the job is refused
    as expired anyway). A redelivery of the same entry is not a replay: True.
    """
    current = time.time() if now is None else now
    until = job.not_after if job.not_after is not None else current + REPLAY_DEFAULT_TTL_S
    # bounded whatever the job says: PX must stay an integer Redis accepts
    longest = MAX_NOT_AFTER_AHEAD_S + margin_s
    ttl_ms = math.ceil(max(1.0, min(until + margin_s - current, longest)) * 1000)
    reply = await client.eval(_CLAIM_SCRIPT, [keys.seen_signature(job.id)], [entry_id, ttl_ms])
    return integer(reply) == 1
