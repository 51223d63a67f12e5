"""``schemas/job.schema.json`` and ``schemas/result.schema.json`` against the code.

Every valid job below is accepted by both the schema and ``parse_job``; every malformed job
of ``tests/test_jobs.py`` (its ``MALFORMED`` table) is refused by ``parse_job`` and, unless it
is listed in :data:`PARSE_JOB_ONLY` (with the reason the schema cannot say it), by the
schema too. Results of a real ``vscan scan -oJ`` of loopback listeners validate against the
result schema (the daemon's results: ``tests/test_producer.py``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.daemon_harness import CACHE_DIR, SSH_BANNER, Listeners, banner
from tests.test_jobs import MALFORMED, NOW, encode, parse
from vscand.jobs.ids import JOB_ID_PATTERN
from vscand.jobs.schema import JOB_FIELDS, TIMEOUT_FIELDS, JobError
from vscand.output.jsonl import RESULT_KEYS
from vscand.output.script_output import (
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_OUTPUT_CHARS,
    ScriptOutput,
    Table,
    script_result,
)
from vscand.service import SERVICE_KEYS, empty_service

REPO = Path(__file__).resolve().parent.parent
JOB_SCHEMA = json.loads((REPO / "schemas" / "job.schema.json").read_text())
RESULT_SCHEMA = json.loads((REPO / "schemas" / "result.schema.json").read_text())
JOBS = jsonschema.Draft202012Validator(JOB_SCHEMA)
RESULTS = jsonschema.Draft202012Validator(RESULT_SCHEMA)

# jobs accepted by parse_job in the suites (tests/test_jobs.py, the fleet, the daemon tests),
# and the contract's example (CONTRACTS.md "Job format"), targets kept on loopback
VALID: list[dict[str, Any]] = [
    {"targets": ["127.0.0.1"]},
    {"endpoints": ["127.0.0.1:22"]},
    {"endpoints": ["127.0.0.1:22", "[::1]:443", "127.0.0.1:53/udp"]},
    {
        "id": "job-1",
        "targets": ["127.0.0.1", "localhost", "127.0.0.16/28", "::1"],
        "endpoints": ["127.0.0.1:22", "[::1]:443", "127.0.0.1:53/udp"],
        "ports": "22,80,443,U:53",
        "intensity": 7,
        "version_all": False,
        "timeouts": {"connect_ms": 5000, "host_ms": 900000},
        "tags": {"site": "dc1"},
        "priority": 0,
    },
    {
        "id": "a.b_c:d-e" + "x" * 119,
        "targets": ["127.0.0.1"],
        "ports": "ssh,http,U:domain",
        "intensity": 0,
        "version_all": True,
        "fast": True,
        "timeouts": {"connect_ms": 100, "host_ms": None},
        "tags": {"k" * 64: "v" * 1024},
        "priority": -(2**31),
        "queue": "dc1.vantage_2",
        "requester": "inventory-service",
        "not_after": NOW + 60,
        "task_ports": 1024,
    },
    {"targets": ["127.0.0.1"], "ports": None, "timeouts": None, "tags": None, "queue": None},
    {"targets": ["127.0.0.1"], "priority": 2**31 - 1, "task_ports": 0, "stale_after": 0},
    {"targets": ["scanme.internal"]},
    {"stale_after": 86400, "fast": True, "tags": {"k": "v"}},
    {"stale_after": 3600, "targets": ["10.0.0.0/8", "::1"], "endpoints": []},
    {"id": "b1/t0", "parent": "b1", "endpoints": ["127.0.0.1:22"], "ports": "22"},
    {"id": "nightly:1700000000/t12", "parent": "nightly:1700000000", "endpoints": ["[::1]:22"]},
    {"id": "b1:t3", "parent": "b1", "endpoints": ["127.0.0.1:22"]},  # queued before layout 2
    {"targets": ["127.0.0.1"], "sig": "0" * 64},  # unsigned mode checks the format only
]

#: the MALFORMED cases the schema accepts: what only parse_job checks, by kind
PARSE_JOB_ONLY: dict[str, tuple[str, ...]] = {
    "the daemon's allow/deny policy (after canonicalising mapped, NAT64... addresses)": (
        "forbidden-target",
        "metadata-target",
        "denied-target",
        "mapped-denied",
        "nat64-forbidden",
        "network-with-denied-address",
        "endpoint-forbidden",
    ),
    "target syntax (IPv4 in four decimal octets; host vs HOST:PORT list; endpoint port)": (
        "hex-spelling",
        "decimal-spelling",
        "octal-spelling",
        "short-spelling-endpoint",
        "endpoint-in-targets",
        "host-in-endpoints",
        "endpoint-bad-port",
    ),
    "the network size cap (policy max_cidr_addresses)": ("huge-cidr",),
    "Nmap port syntax, names from nmap-services, ports selected per target": (
        "ports-out-of-range",
        "ports-reversed",
        "ports-empty",
        "ports-sctp",
        "ports-unknown-service",
        "ports-none-known",
        "ports-per-target",
    ),
    "addresses x ports at most 1,000,000": ("too-many-tasks",),
    "7.0 is an integer to JSON Schema (a number with no fraction)": ("intensity-float",),
    "not_after is compared with the time of parsing": ("not-after-past",),
}
#: MALFORMED cases a schema never sees: not JSON, or not the same JSON once decoded
NOT_JSON = ("bad-json", "not-utf8", "nan", "duplicate-field")
_NOT_DECODED = object()


def _decoded(raw: bytes) -> Any:
    try:
        return json.loads(raw)
    except ValueError:
        return _NOT_DECODED


def test_the_schemas_are_valid_2020_12_schemas() -> None:
    jsonschema.Draft202012Validator.check_schema(JOB_SCHEMA)
    jsonschema.Draft202012Validator.check_schema(RESULT_SCHEMA)


def test_the_job_schema_names_every_field_and_the_id_alphabet_of_the_code() -> None:
    assert set(JOB_SCHEMA["properties"]) == JOB_FIELDS
    assert set(JOB_SCHEMA["properties"]["timeouts"]["properties"]) == TIMEOUT_FIELDS
    assert JOB_SCHEMA["$defs"]["jobId"]["pattern"] == f"^{JOB_ID_PATTERN}$"
    assert JOB_SCHEMA["$defs"]["taskId"]["pattern"].startswith(f"^{JOB_ID_PATTERN}/t")


def test_the_result_schema_names_the_result_and_service_keys_of_the_code() -> None:
    assert set(RESULT_KEYS) <= set(RESULT_SCHEMA["properties"])
    assert set(RESULT_SCHEMA["required"]) == set(RESULT_KEYS) - {"other_addresses"}
    assert tuple(RESULT_SCHEMA["$defs"]["service"]["required"]) == SERVICE_KEYS


@pytest.mark.parametrize("job", VALID, ids=range(len(VALID)))
def test_a_valid_job_is_accepted_by_the_schema_and_parse_job(job: dict[str, Any]) -> None:
    JOBS.validate(job)
    parse(encode(job))


@pytest.mark.parametrize(("case", "raw", "message"), MALFORMED, ids=[c[0] for c in MALFORMED])
def test_a_malformed_job_is_refused_by_parse_job(case: str, raw: bytes, message: str) -> None:
    with pytest.raises(JobError):
        parse(raw)


def test_the_schema_refuses_every_malformed_job_but_the_checks_only_parse_job_makes() -> None:
    accepted = {
        case
        for case, raw, _ in MALFORMED
        if case not in NOT_JSON and not list(JOBS.iter_errors(_decoded(raw)))
    }
    listed = {case for cases in PARSE_JOB_ONLY.values() for case in cases}
    assert accepted == listed
    assert {c for c, raw, _ in MALFORMED if _decoded(raw) is _NOT_DECODED} <= set(NOT_JSON)


@pytest.mark.parametrize(
    "job",
    [
        {"targets": []},
        {"id": "b1/t0", "endpoints": ["127.0.0.1:22"]},  # a task id without parent
        {"id": "b1/t01", "parent": "b1", "endpoints": ["127.0.0.1:22"]},
        {"parent": "b1", "endpoints": ["127.0.0.1:22"]},  # a task without its id
        {"stale_after": 59},
        {"stale_after": 3600, "ports": "22"},
        {"stale_after": 3600, "endpoints": ["127.0.0.1:22"]},
        {"stale_after": 3600, "parent": "b1", "id": "b1/t0"},
        {"targets": ["127.0.0.1"], "tags": {"a\nb": "x"}},
        {"targets": ["127.0.0.1"], "tags": {str(i): "x" for i in range(33)}},
        {"targets": ["127.0.0.1"], "requester": "x" * 257},
        {"targets": ["127.0.0.1"], "timeouts": {"connect_ms": None}},
        {"targets": ["127.0.0.1"], "task_ports": 1025},
        {"targets": ["127.0.0.1"], "sig": None},
    ],
)
def test_more_invalid_jobs_are_refused_by_both(job: dict[str, Any]) -> None:
    with pytest.raises(JobError):
        parse(encode(job))
    assert list(JOBS.iter_errors(job))


def test_vscan_scan_results_validate_against_the_result_schema(tmp_path: Path) -> None:
    listeners = Listeners()
    try:
        target = listeners(banner(SSH_BANNER))
        out = tmp_path / "scan.jsonl"
        subprocess.run(
            [
                str(Path(sys.executable).parent / "vscan"),
                "scan",
                target.endpoint,
                "127.0.0.1",
                "-p",
                "1",
                "-oJ",
                str(out),
                "--cache-dir",
                CACHE_DIR,
            ],
            check=True,
            capture_output=True,
            timeout=120,
        )
    finally:
        listeners.close()
    results = [json.loads(line) for line in out.read_text().splitlines()]
    assert {r["state"] for r in results} == {"open", "closed"}
    for result in results:
        RESULTS.validate(result)
        assert list(result)[: len(RESULT_KEYS) - 1] == [k for k in RESULT_KEYS if k in result]
    bad = dict(results[0], state="up")
    assert list(RESULTS.iter_errors(bad))


# --- service.script_results (DESIGN.md "### Script output") -------------------------

SCRIPT_RESULT = jsonschema.Draft202012Validator(
    {"$ref": "#/$defs/script_result", "$defs": RESULT_SCHEMA["$defs"]}
)
_script_keys = st.text(min_size=1, max_size=5)
_script_values = st.recursive(
    st.text(max_size=6),
    lambda children: st.builds(
        Table,
        st.lists(children, max_size=3),
        st.lists(st.tuples(_script_keys, children), max_size=3),
    ),
    max_leaves=10,
)


def test_the_schema_states_the_codes_script_output_bounds() -> None:
    item = RESULT_SCHEMA["$defs"]["script_result"]["properties"]
    assert item["output"]["maxLength"] == MAX_OUTPUT_CHARS
    scripts = RESULT_SCHEMA["$defs"]["service"]["properties"]["scripts"]
    assert scripts["additionalProperties"]["maxLength"] == MAX_OUTPUT_CHARS
    described = RESULT_SCHEMA["$defs"]["script_elements"]["description"]
    assert f"{MAX_ELEMENTS} entries" in described and f"{MAX_DEPTH} levels" in described


@settings(max_examples=60, deadline=None)
@given(
    st.builds(
        Table,
        st.lists(_script_values, max_size=3),
        st.lists(st.tuples(_script_keys, _script_values), max_size=3),
    ),
    st.one_of(st.none(), st.text(max_size=8)),
)
def test_what_the_runner_records_validates(table: Table, text: str | None) -> None:
    for out in (ScriptOutput(table=table, text=text), ScriptOutput(text=text or "x")):
        SCRIPT_RESULT.validate(script_result(out.to_json("some-script")))


def test_bounded_hostile_results_validate_and_malformed_ones_do_not() -> None:
    deep: list[dict[str, Any]] = [{"key": None, "value": "v"}]
    for _ in range(100):
        deep = [{"key": "t", "table": deep}]
    hostile = {
        "id": "h",
        "output": "x" * (2 * MAX_OUTPUT_CHARS),
        "elements": deep + [{"key": "k", "value": "y"}] * (2 * MAX_ELEMENTS),
    }
    bounded = script_result(hostile)
    SCRIPT_RESULT.validate(bounded)
    assert list(SCRIPT_RESULT.iter_errors(hostile))  # the schema states the bounds
    for bad in (
        {"id": "", "output": "", "elements": None},
        {"id": "x", "output": "", "elements": [{"key": None}]},
        {"id": "x", "output": "", "elements": [{"key": None, "value": "v", "table": []}]},
        {"id": "x", "output": "", "elements": None, "truncated": False},
        {"id": "x", "elements": None},
    ):
        assert list(SCRIPT_RESULT.iter_errors(bad)), bad
    result = {"job": None, "host": "127.0.0.1", "hostname": None, "port": 80, "protocol": "tcp",
              "state": "open", "reason": "syn-ack", "service": dict(empty_service("http"),
              script_results=[bounded]), "tags": {}, "worker": None,
              "scanned_at": "2027-01-15T08:00:00Z", "duration_ms": 1}  # fmt: skip
    RESULTS.validate(result)
