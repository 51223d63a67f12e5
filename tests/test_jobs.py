"""Job parsing: every malformed job is refused with one precise line naming the field.

Also signing (round trip, unsigned, tampered, expired), the key file, and the
replay guard against a real throwaway redis-server. Nothing here dials a target.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from pathlib import Path
from typing import Any

import pytest
from twisted.logger import capturedLogs

from tests.redis_server import RedisServer
from tests.sync_redis import SyncRedis, run
from vscand.jobs.decode import canonical_json
from vscand.jobs.identity import entry_job_id
from vscand.jobs.parse import parse_job
from vscand.jobs.schema import Job, JobError, JobLimits
from vscand.jobs.signing import JobSigner, JobVerifier, load_key
from vscand.ports import parse_services
from vscand.queue.keys import Keys
from vscand.queue.replay import claim_signature
from vscand.targets.policy import TargetPolicy

NOW = 1_800_000_000.0
KEY = b"k" * 32
POLICY = TargetPolicy(allow=["127.0.0.0/8", "::1/128"], deny=["127.0.0.2/32"])
SERVICES = parse_services("ssh\t22/tcp\t0.18\nhttp\t80/tcp\t0.48\ndomain\t53/udp\t0.2\n")
ODD = (
    "write four decimal octets without leading zeros, e.g. 127.0.0.1; octal, hex and short "
    "forms are refused"
)


def encode(obj: Any) -> bytes:
    return json.dumps(obj).encode()


def job(**fields: Any) -> bytes:
    return encode({"targets": ["127.0.0.1"], **fields})


def parse(raw: bytes, **kwargs: Any) -> Job:
    kwargs.setdefault("policy", POLICY)
    kwargs.setdefault("now", NOW)
    kwargs.setdefault("services", SERVICES)
    return parse_job(raw, **kwargs)


# (case id, raw job, expected str(JobError))
MALFORMED: list[tuple[str, bytes, str]] = [
    ("bad-json", b'{"targets": [', "bad JSON: Expecting value at line 1 column 14"),
    ("not-utf8", b'{"targets": ["\xff"]}', "job is not UTF-8 (byte 14)"),
    ("array", b'["127.0.0.1"]', "a job must be a JSON object, not an array"),
    ("string", b'"127.0.0.1"', "a job must be a JSON object, not a string"),
    ("null", b"null", "a job must be a JSON object, not null"),
    ("nan", b'{"targets": ["127.0.0.1"], "priority": NaN}', "NaN is not valid JSON"),
    (
        "duplicate-field",
        b'{"targets": ["127.0.0.1"], "targets": ["10.0.0.1"]}',
        "duplicate field 'targets' in a JSON object",
    ),
    (
        "unknown-field",
        job(target="127.0.0.1"),
        "unknown field 'target'; allowed: endpoints, fast, id, intensity, not_after, parent, "
        "ports, priority, queue, requester, sig, stale_after, tags, targets, task_ports, timeouts, "
        "version_all",
    ),
    ("id-int", job(id=7), "id: must be a string, not an integer"),
    ("id-empty", job(id=""), "id: '' must be 1-128 characters of A-Z a-z 0-9 . _ : -"),
    (
        "id-slash",
        job(id="a/b"),
        "id: 'a/b' must be 1-128 characters of A-Z a-z 0-9 . _ : -",
    ),
    (
        "id-long",
        job(id="x" * 129),
        "id: '" + "x" * 56 + "... must be 1-128 characters of A-Z a-z 0-9 . _ : -",
    ),
    (
        "targets-string",
        encode({"targets": "127.0.0.1"}),
        "targets: must be an array of strings, not a string",
    ),
    (
        "targets-item-int",
        encode({"targets": [2130706433]}),
        "targets[0]: must be a string, not an integer 2130706433",
    ),
    (
        "endpoints-object",
        encode({"endpoints": {"a": 1}}),
        "endpoints: must be an array of strings, not an object",
    ),
    (
        "no-targets",
        encode({"targets": [], "endpoints": []}),
        "targets: a job needs at least one target or endpoint",
    ),
    ("no-fields", b"{}", "targets: a job needs at least one target or endpoint"),
    (
        "forbidden-target",
        encode({"targets": ["10.0.0.1"]}),
        "targets[0]: target '10.0.0.1': 10.0.0.1 is outside the allowed networks "
        "(127.0.0.0/8, ::1/128)",
    ),
    (
        "metadata-target",
        encode({"targets": ["127.0.0.1", "169.254.169.254"]}),
        "targets[1]: target '169.254.169.254': 169.254.169.254 is outside the allowed "
        "networks (127.0.0.0/8, ::1/128)",
    ),
    (
        "denied-target",
        encode({"targets": ["127.0.0.2"]}),
        "targets[0]: target '127.0.0.2': 127.0.0.2 is denied by deny 127.0.0.2/32",
    ),
    (
        "hex-spelling",
        encode({"targets": ["0x7f.0.0.2"]}),
        f"targets[0]: target '0x7f.0.0.2': '0x7f.0.0.2' is not a valid IPv4 address ({ODD})",
    ),
    (
        "decimal-spelling",
        encode({"targets": ["2130706434"]}),
        f"targets[0]: target '2130706434': '2130706434' is not a valid IPv4 address ({ODD})",
    ),
    (
        "octal-spelling",
        encode({"targets": ["0177.0.0.2"]}),
        f"targets[0]: target '0177.0.0.2': '0177.0.0.2' is not a valid IPv4 address ({ODD})",
    ),
    (
        "short-spelling-endpoint",
        encode({"endpoints": ["127.2:22"]}),
        f"endpoints[0]: target '127.2:22': '127.2' is not a valid IPv4 address ({ODD})",
    ),
    (
        "mapped-denied",
        encode({"targets": ["::ffff:127.0.0.2"]}),
        "targets[0]: target '::ffff:127.0.0.2': ::ffff:127.0.0.2 (IPv4 127.0.0.2) is denied by "
        "deny 127.0.0.2/32",
    ),
    (
        "nat64-forbidden",
        encode({"targets": ["64:ff9b::a9fe:a9fe"]}),
        "targets[0]: target '64:ff9b::a9fe:a9fe': 64:ff9b::a9fe:a9fe (IPv4 169.254.169.254) "
        "is outside the allowed networks (127.0.0.0/8, ::1/128)",
    ),
    (
        "network-with-denied-address",
        encode({"targets": ["127.0.0.0/30"]}),
        "targets[0]: target '127.0.0.0/30': 127.0.0.2 is denied by deny 127.0.0.2/32",
    ),
    (
        "huge-cidr",
        encode({"targets": ["127.0.0.0/8"]}),
        "targets[0]: target '127.0.0.0/8': 127.0.0.0/8 has 16777216 addresses, more than the "
        "limit of 65536",
    ),
    (
        "endpoint-in-targets",
        encode({"targets": ["127.0.0.1:22"]}),
        "targets[0]: '127.0.0.1:22' is an endpoint (HOST:PORT): put it in endpoints",
    ),
    (
        "host-in-endpoints",
        encode({"endpoints": ["127.0.0.1"]}),
        "endpoints[0]: '127.0.0.1' is not HOST:PORT[/udp] (put plain hosts and networks in "
        "targets)",
    ),
    (
        "endpoint-forbidden",
        encode({"endpoints": ["[::ffff:10.0.0.1]:22"]}),
        "endpoints[0]: target '[::ffff:10.0.0.1]:22': ::ffff:10.0.0.1 (IPv4 10.0.0.1) is outside "
        "the allowed networks (127.0.0.0/8, ::1/128)",
    ),
    (
        "endpoint-bad-port",
        encode({"endpoints": ["127.0.0.1:0"]}),
        "endpoints[0]: target '127.0.0.1:0': port 0 is out of range (1-65535)",
    ),
    ("target-too-long", encode({"targets": ["a" * 301]}), "targets[0]: longer than 300 characters"),
    (
        "ports-out-of-range",
        job(ports="99999"),
        "ports: bad port list '99999': port 99999 is out of range (0-65535)",
    ),
    (
        "ports-reversed",
        job(ports="80-22"),
        "ports: bad port list '80-22': bad range '80-22': 80 > 22",
    ),
    ("ports-empty", job(ports=""), "ports: bad port list '': empty port specification"),
    (
        "ports-list",
        job(ports=[22, 80]),
        "ports: must be a string in Nmap syntax, not an array [22, 80]",
    ),
    (
        "ports-sctp",
        job(ports="S:80"),
        "ports: bad port list 'S:80': SCTP ports are not supported "
        "(version detection is TCP and UDP)",
    ),
    (
        "ports-unknown-service",
        job(ports="nosuchsvc"),
        "ports: bad port list 'nosuchsvc': no service named 'nosuchsvc' in nmap-services",
    ),
    ("ports-none-known", job(ports="[1000-1010]"), "ports: '[1000-1010]' selects no ports"),
    ("intensity-bool", job(intensity=True), "intensity: must be an integer, not a boolean true"),
    ("intensity-float", job(intensity=7.0), "intensity: must be an integer, not a number 7.0"),
    ("intensity-string", job(intensity="7"), "intensity: must be an integer, not a string '7'"),
    ("intensity-high", job(intensity=10), "intensity: 10 is out of range (0-9)"),
    ("intensity-negative", job(intensity=-1), "intensity: -1 is out of range (0-9)"),
    ("version-all-int", job(version_all=1), "version_all: must be true or false, not an integer 1"),
    ("fast-string", job(fast="yes"), "fast: must be true or false, not a string 'yes'"),
    ("timeouts-list", job(timeouts=[5000]), "timeouts: must be an object, not an array"),
    (
        "timeouts-unknown",
        job(timeouts={"read_ms": 5}),
        "timeouts: unknown field 'read_ms' (allowed: connect_ms, host_ms)",
    ),
    (
        "connect-ms-low",
        job(timeouts={"connect_ms": 99}),
        "timeouts.connect_ms: 99 is out of range (100-60000)",
    ),
    (
        "connect-ms-high",
        job(timeouts={"connect_ms": 60001}),
        "timeouts.connect_ms: 60001 is out of range (100-60000)",
    ),
    (
        "connect-ms-bool",
        job(timeouts={"connect_ms": False}),
        "timeouts.connect_ms: must be an integer, not a boolean false",
    ),
    (
        "host-ms-low",
        job(timeouts={"host_ms": 999}),
        "timeouts.host_ms: 999 is out of range (1000-604800000)",
    ),
    (
        "host-ms-string",
        job(timeouts={"host_ms": "1h"}),
        "timeouts.host_ms: must be an integer, not a string '1h'",
    ),
    ("tags-list", job(tags=["a"]), "tags: must be an object of strings, not an array"),
    ("tag-value-int", job(tags={"site": 1}), "tags['site']: must be a string, not an integer 1"),
    ("tag-name-empty", job(tags={"": "x"}), "tags['']: a tag name must be 1-64 characters"),
    (
        "tag-control",
        job(tags={"site": "a\nb"}),
        "tags['site']: control characters are not allowed in tags",
    ),
    ("tag-value-long", job(tags={"site": "x" * 1025}), "tags['site']: longer than 1024 characters"),
    (
        "too-many-tags",
        job(tags={f"t{i}": "x" for i in range(33)}),
        "tags: 33 tags, more than the limit of 32",
    ),
    ("priority-bool", job(priority=False), "priority: must be an integer, not a boolean false"),
    (
        "priority-huge",
        job(priority=2**40),
        f"priority: {2**40} is out of range ({-(2**31)}-{2**31 - 1})",
    ),
    ("queue-int", job(queue=1), "queue: must be a string, not an integer 1"),
    (
        "queue-bad-name",
        job(queue="a b"),
        "queue: 'a b' must be 1-64 characters of A-Z a-z 0-9 . _ -",
    ),
    (
        "not-after-string",
        job(not_after="tomorrow"),
        "not_after: must be a number (unix seconds), not a string",
    ),
    (
        "not-after-past",
        job(not_after=NOW - 60),
        "not_after: job expired at 2027-01-15T07:59:00Z (60 s ago)",
    ),
    ("sig-not-hex", job(sig="zz"), "sig: must be 64 hex digits (HMAC-SHA256)"),
    (
        "too-many-tasks",
        encode({"targets": ["127.0.1.0/24", "::1"], "ports": "1-10000"}),
        "job would scan about 2570000 ports (257 addresses x 10000 ports), more than the limit "
        "of 1000000",
    ),
    (
        "ports-per-target",
        encode({"targets": ["127.0.0.1"], "ports": "T:-,U:-"}),
        "ports: 'T:-,U:-' selects 131070 ports per target, more than the limit of 65536",
    ),
]


@pytest.mark.parametrize(
    ("raw", "message"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED]
)
def test_a_malformed_job_is_refused_with_a_precise_reason(raw: bytes, message: str) -> None:
    with pytest.raises(JobError) as caught:
        parse(raw)
    assert str(caught.value) == message
    assert "\n" not in str(caught.value)


def test_the_error_names_its_field_and_reason_separately() -> None:
    with pytest.raises(JobError) as caught:
        parse(job(intensity=True))
    assert (caught.value.field, caught.value.reason) == (
        "intensity",
        "must be an integer, not a boolean true",
    )


def test_an_oversized_job_is_refused_before_its_json_is_parsed() -> None:
    raw = b"[" * 70_000  # would be a RecursionError if it reached the parser
    with pytest.raises(JobError) as caught:
        parse(raw)
    assert str(caught.value) == "job is 70000 bytes, more than the limit of 65536"
    raw = job(tags={"x": "y" * 100})
    with pytest.raises(JobError) as caught:
        parse(raw, limits=JobLimits(max_bytes=len(raw) - 1))
    assert str(caught.value) == f"job is {len(raw)} bytes, more than the limit of {len(raw) - 1}"
    assert parse(raw, limits=JobLimits(max_bytes=len(raw))).tags == {"x": "y" * 100}


def test_deeply_nested_json_within_the_size_cap_is_a_job_error() -> None:
    raw = b'{"tags": ' + b"[" * 60_000 + b"]" * 60_000 + b"}"
    with pytest.raises(JobError) as caught:
        parse(raw, limits=JobLimits(max_bytes=200_000))
    assert str(caught.value) == "bad JSON: nested too deeply (60001 levels; the limit is 8)"
    with pytest.raises(JobError, match=r"^bad JSON: Exceeds the limit"):
        parse(b'{"priority": ' + b"9" * 5000 + b"}")


def test_too_many_targets() -> None:
    raw = encode({"targets": ["127.0.0.1"] * 3, "endpoints": ["127.0.0.1:22"] * 2})
    with pytest.raises(JobError) as caught:
        parse(raw, limits=JobLimits(max_targets=4))
    assert str(caught.value) == "targets: 5 targets and endpoints, more than the limit of 4"


def test_the_id_of_an_invalid_job_is_kept_for_its_status_hash() -> None:
    with pytest.raises(JobError) as caught:
        parse(encode({"id": "job-1", "targets": ["10.0.0.1"]}))
    assert caught.value.job_id == "job-1"
    with pytest.raises(JobError) as caught:
        parse(encode({"id": "job 1", "targets": ["10.0.0.1"]}))
    assert caught.value.job_id is None  # an id that is itself invalid names no hash


def test_a_full_valid_job_round_trips() -> None:
    raw = encode(
        {
            "id": "inv-2026:dc1_a.1",
            "targets": ["127.0.0.1", "127.0.1.0/28", "::1", "db1.example.com"],
            "endpoints": ["127.0.0.1:22", "[::1]:443", "127.0.0.1:53/udp", "db1.example.com:8080"],
            "ports": "22,80,443,U:53",
            "intensity": 9,
            "version_all": True,
            "timeouts": {"connect_ms": 100, "host_ms": 900000},
            "tags": {"site": "dc1", "owner": ""},
            "priority": -5,
            "fast": True,
            "queue": "edge-1",
            "requester": "cmdb@example.com",
        }
    )
    parsed = parse(raw)
    assert parsed == Job(
        id="inv-2026:dc1_a.1",
        targets=("127.0.0.1", "127.0.1.0/28", "::1", "db1.example.com"),
        endpoints=("127.0.0.1:22", "[::1]:443", "127.0.0.1:53/udp", "db1.example.com:8080"),
        ports="22,80,443,U:53",
        intensity=9,
        version_all=True,
        connect_ms=100,
        host_ms=900000,
        tags={"site": "dc1", "owner": ""},
        priority=-5,
        fast=True,
        queue="edge-1",
        not_after=None,
        raw=raw,
        requester="cmdb@example.com",
    )
    # 1 + 16 + 1 + 1 addresses x 4 ports, plus 4 endpoints
    assert parsed.estimated_tasks == 19 * 4 + 4


def test_defaults_and_a_fresh_id() -> None:
    first = parse(job())
    second = parse(job())
    assert uuid.UUID(first.id).version == 4
    assert first.id != second.id
    assert (first.ports, first.intensity, first.version_all) == (None, 7, False)
    assert (first.connect_ms, first.host_ms, first.tags, first.priority) == (5000, None, {}, 0)
    assert (first.fast, first.queue, first.not_after, first.requester) == (False, None, None, None)
    assert first.estimated_tasks == 1000  # the top 1000 TCP ports, counted without the table


def test_a_job_without_id_is_named_by_its_stream_entry() -> None:
    # the daemon's default: the entry, the same at every delivery, known to the producer
    assert entry_job_id("1733370000000-0") == "entry:1733370000000-0"
    assert entry_job_id("1733370000000-0", "default") == "entry:1733370000000-0"
    assert entry_job_id("1733370000000-0", "dc1") == "entry:dc1:1733370000000-0"
    named = entry_job_id("1733370000000-7", "edge-2")
    first = parse(job(), default_id=named)
    again = parse(job(), default_id=named)  # a redelivery of the same entry
    assert first.id == again.id == "entry:edge-2:1733370000000-7"
    assert parse(encode({"id": "mine", "targets": ["127.0.0.1"]}), default_id=named).id == "mine"
    for bad in (job(intensity=10), job(ports=22)):
        with pytest.raises(JobError) as caught:
            parse(bad, default_id=named)
        assert caught.value.job_id is None  # an invalid job is recorded by its entry, not here
    # the id passes the job's own id rules (a task of it is <id>/t<N>)
    assert parse(encode({"id": named, "targets": ["127.0.0.1"]})).id == named


def test_explicit_nulls_mean_defaults() -> None:
    parsed = parse(job(ports=None, timeouts={"host_ms": None}, tags=None, queue=None))
    assert (parsed.ports, parsed.host_ms, parsed.tags, parsed.queue) == (None, None, {}, None)


def test_hostnames_are_left_for_the_worker_to_resolve_and_check() -> None:
    # checked after resolution, before dialling; a literal is checked right here
    assert parse(encode({"targets": ["scanme.internal"]})).targets == ("scanme.internal",)


def test_service_names_in_ports_use_the_services_table() -> None:
    assert parse(job(ports="ssh,http,U:domain")).ports == "ssh,http,U:domain"


def test_a_future_not_after_is_kept_on_an_unsigned_job() -> None:
    assert parse(job(not_after=NOW + 60)).not_after == NOW + 60


def test_a_staleness_rescan_needs_no_targets_and_takes_only_narrowing_ones() -> None:
    rescan = parse(encode({"stale_after": 86400, "fast": True, "tags": {"k": "v"}}))
    assert (rescan.stale_after, rescan.targets, rescan.endpoints) == (86400, (), ())
    assert rescan.fast and rescan.tags == {"k": "v"}
    # narrowing networks are filters, not scan targets: no policy or size check on them
    wide = parse(encode({"stale_after": 3600, "targets": ["10.0.0.0/8", "::1"]}))
    assert wide.targets == ("10.0.0.0/8", "::1")
    assert parse(job()).stale_after is None


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"stale_after": 59}, "stale_after: 59 is out of range (60-31622400 seconds)"),
        ({"stale_after": 10**9}, "stale_after: 1000000000 is out of range (0-31622400)"),
        ({"stale_after": "1h"}, "stale_after: must be an integer"),
        ({"stale_after": 3600, "endpoints": ["127.0.0.1:22"]}, "endpoints: a staleness rescan"),
        ({"stale_after": 3600, "ports": "22"}, "ports: a staleness rescan rescans"),
        ({"stale_after": 3600, "id": "t", "parent": "p"}, "parent: a staleness rescan is never"),
        ({"stale_after": 3600, "targets": ["db.internal"]}, "addresses and networks only"),
        ({"stale_after": 3600, "targets": ["300.1.1.1/8"]}, "targets[0]: "),
    ],
)
def test_a_bad_staleness_rescan_is_refused(fields: dict[str, Any], message: str) -> None:
    with pytest.raises(JobError) as caught:
        parse(encode(fields))
    assert message in str(caught.value)


# --------------------------------------------------------------------------- signing


def signed(fields: dict[str, Any], ttl: float = 60.0, key: bytes = KEY) -> dict[str, Any]:
    return JobSigner(key).sign(fields, ttl, now=NOW)


def test_signing_round_trip() -> None:
    obj = signed({"id": "s1", "targets": ["127.0.0.1"], "ports": "22", "tags": {"z": "é"}})
    assert obj["not_after"] == NOW + 60
    assert len(obj["sig"]) == 64
    parsed = parse(encode(obj), verifier=JobVerifier(KEY))
    assert (parsed.id, parsed.not_after, parsed.tags) == ("s1", NOW + 60, {"z": "é"})
    # the field order of the submitted JSON does not matter: the canonical form is signed
    reordered = json.dumps(dict(reversed(list(obj.items())))).encode()
    assert parse(reordered, verifier=JobVerifier(KEY)).id == "s1"


def test_the_signature_covers_the_canonical_json_without_sig() -> None:
    obj = signed({"id": "s1", "targets": ["127.0.0.1"]})
    body = {k: v for k, v in obj.items() if k != "sig"}
    assert canonical_json(body) == (
        b'{"id":"s1","not_after":' + str(int(NOW + 60)).encode() + b',"targets":["127.0.0.1"]}'
    )
    assert obj["sig"] == hmac.new(KEY, canonical_json(body), hashlib.sha256).hexdigest()


def test_the_signer_gives_an_unnamed_job_an_id() -> None:
    obj = signed({"targets": ["127.0.0.1"]})
    assert uuid.UUID(obj["id"]).version == 4
    assert parse(encode(obj), verifier=JobVerifier(KEY)).id == obj["id"]


def _tampered() -> dict[str, Any]:
    obj = signed({"id": "s1", "targets": ["127.0.0.1"]})
    obj["targets"] = ["127.0.0.3"]
    return obj


def _extended() -> dict[str, Any]:
    obj = signed({"id": "s1", "targets": ["127.0.0.1"]})
    obj["not_after"] += 3600
    return obj


def _undated() -> dict[str, Any]:
    obj = {"id": "s1", "targets": ["127.0.0.1"]}
    return {**obj, "sig": JobSigner(KEY).sign(obj, 60, now=NOW)["sig"]}


SIGNATURE_FAILURES: list[tuple[str, dict[str, Any], str]] = [
    (
        "unsigned",
        {"id": "s1", "targets": ["127.0.0.1"]},
        "sig: unsigned job: this daemon requires signed jobs",
    ),
    (
        "tampered",
        _tampered(),
        "sig: bad signature: the job was altered after signing or signed with another key",
    ),
    (
        "expiry-extended",
        _extended(),
        "sig: bad signature: the job was altered after signing or signed with another key",
    ),
    (
        "other-key",
        signed({"id": "s1", "targets": ["127.0.0.1"]}, key=b"x" * 32),
        "sig: bad signature: the job was altered after signing or signed with another key",
    ),
    (
        "sig-int",
        {"id": "s1", "targets": ["127.0.0.1"], "sig": 5},
        "sig: must be 64 hex digits (HMAC-SHA256)",
    ),
    (
        "expired",
        signed({"id": "s1", "targets": ["127.0.0.1"]}, ttl=1) | {"_now": NOW + 2},
        "not_after: job expired at 2027-01-15T08:00:01Z (1 s ago)",
    ),
    (
        "undated",
        _undated(),
        "sig: bad signature: the job was altered after signing or signed with another key",
    ),
]


@pytest.mark.parametrize(
    ("obj", "message"), [c[1:] for c in SIGNATURE_FAILURES], ids=[c[0] for c in SIGNATURE_FAILURES]
)
def test_a_verifier_refuses_unsigned_tampered_and_expired_jobs(
    obj: dict[str, Any], message: str
) -> None:
    obj = dict(obj)
    now = obj.pop("_now", NOW)
    with pytest.raises(JobError) as caught:
        parse(encode(obj), verifier=JobVerifier(KEY), now=now)
    assert str(caught.value) == message


def test_a_signed_job_must_carry_not_after_and_an_id() -> None:
    def sign_raw(obj: dict[str, Any]) -> bytes:
        sig = hmac.new(KEY, canonical_json(obj), hashlib.sha256).hexdigest()
        return encode({**obj, "sig": sig})

    verifier = JobVerifier(KEY)
    with pytest.raises(JobError) as caught:
        parse(sign_raw({"id": "s1", "targets": ["127.0.0.1"]}), verifier=verifier)
    assert str(caught.value) == "not_after: a signed job must carry not_after (unix seconds)"
    with pytest.raises(JobError) as caught:
        parse(sign_raw({"targets": ["127.0.0.1"], "not_after": NOW + 5}), verifier=verifier)
    assert (
        str(caught.value) == "id: a signed job must carry an id (the replay guard is keyed on it)"
    )
    with pytest.raises(JobError) as caught:
        parse(
            sign_raw({"id": "s1", "targets": ["127.0.0.1"], "not_after": True}), verifier=verifier
        )
    assert str(caught.value) == "not_after: must be a number (unix seconds), not a boolean"


def test_a_signed_job_is_still_checked_against_the_local_policy() -> None:
    obj = signed({"id": "s1", "targets": ["10.0.0.1"]})
    with pytest.raises(JobError, match=r"^targets\[0\]: .* outside the allowed networks"):
        parse(encode(obj), verifier=JobVerifier(KEY))


def test_load_key(tmp_path: Path) -> None:
    path = tmp_path / "job.key"
    path.write_bytes(b"0123456789abcdef0123456789abcdef\n")
    path.chmod(0o400)
    assert load_key(path) == b"0123456789abcdef0123456789abcdef"
    path.chmod(0o600)
    path.write_bytes(b"secret-with-no-newline-32-bytes!")
    assert load_key(str(path)) == b"secret-with-no-newline-32-bytes!"
    path.write_bytes(b"\n")
    with pytest.raises(ValueError, match="is empty"):
        load_key(path)
    with pytest.raises(ValueError, match="No such file or directory"):
        load_key(tmp_path / "missing.key")


def test_a_world_readable_key_is_loaded_with_a_warning(tmp_path: Path) -> None:
    path = tmp_path / "job.key"
    path.write_bytes(KEY)
    os.chmod(path, 0o644)
    with capturedLogs() as events:
        assert load_key(path) == KEY
    assert [e["log_format"] for e in events] == [
        "job key file {path} is accessible to other users (mode {mode}); chmod 0400 it"
    ]
    assert events[0]["mode"] == "0o644"


# --------------------------------------------------------------------------- replay guard


@pytest.fixture
def redis(redis_server: RedisServer) -> Any:
    client = SyncRedis(redis_server.port)
    yield client
    client.close()


def test_replay_guard_against_real_redis(redis: SyncRedis) -> None:
    keys = Keys("t:")
    obj = signed({"id": "s1", "targets": ["127.0.0.1"]}, ttl=600)
    parsed = parse(encode(obj), verifier=JobVerifier(KEY))
    assert run(claim_signature(redis, keys, parsed, "1-0", now=NOW)) is True
    # the same stream entry delivered again (a reclaim after a crash) is not a replay
    assert run(claim_signature(redis, keys, parsed, "1-0", now=NOW)) is True
    # the same signed job XADDed again as another entry is
    assert run(claim_signature(redis, keys, parsed, "2-0", now=NOW)) is False
    assert redis.call("GET", "t:seen:{s1}") == b"1-0"
    # kept until not_after plus a margin for clock skew
    ttl = redis.call("PTTL", "t:seen:{s1}")
    assert (600 + 300 - 1) * 1000 < ttl <= (600 + 300) * 1000
    # another job id is independent
    other = parse(encode(signed({"id": "s2", "targets": ["127.0.0.1"]})), verifier=JobVerifier(KEY))
    assert run(claim_signature(redis, keys, other, "2-0", now=NOW)) is True


def test_the_task_cap_is_checked_before_networks_are_walked_address_by_address() -> None:
    # a /16 spanning two allowed /17s is checked address by address (~0.3 s each): the
    # cap on addresses x ports must refuse 1000 of them before that walk starts
    policy = TargetPolicy(allow=["127.0.0.0/17", "127.0.128.0/17"])
    raw = encode({"targets": ["127.0.0.0/16"] * 1000, "ports": "22"})
    with pytest.raises(JobError) as caught:
        parse(raw, policy=policy)
    assert str(caught.value) == (
        "job would scan about 65536000 ports (65536000 addresses x 1 ports), more than the "
        "limit of 1000000"
    )
