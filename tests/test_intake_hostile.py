"""Job intake that no stream entry can break (issue 12), end to end: a real ``twist vscand``
against a real throwaway ``redis-server``, hostile entries XADDed as any producer may.

Every entry ends exactly once: acknowledged with exactly one dead letter (the reason, the
entry id, a bounded prefix of the payload) and a refusal record keyed by the entry, never
left pending (a pending entry pins ``XTRIM MINID``: the jobs stream would never be trimmed
again); a good job submitted after them still runs; nothing is written under an id a
refused entry claims.

Every target here is loopback. Hostile entries only ever name targets the daemon refuses
(outside its allow list, denied, or names it may not resolve), so however a fuzzed entry
turns out, nothing is dialled but the listener the good job names.
"""

from __future__ import annotations

import json
import os
import re
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.daemon_harness import (
    FTP_BANNER,
    SSH_BANNER,
    Daemons,
    Listeners,
    Redis,
    banner,
    vscan,
    wait_for,
)
from tests.loopback import free_port
from tests.redis_server import RedisServer
from vscand.jobs.signing import JobSigner

pytestmark = pytest.mark.daemon

#: the daemon may scan 127.0.0.1 only; hostile entries name these, which it refuses
POLICY = ("--allow", "127.0.0.1/32", "--deny", "127.0.0.2/32")
REFUSED_TARGETS = ["127.0.0.2", "127.0.0.9", "10.0.0.1", "never-resolved.example", "::2"]


@pytest.fixture
def redis(redis_server: RedisServer) -> Redis:
    return Redis(redis_server)


def ended_once(redis: Redis, entries: list[str], timeout: float = 30) -> dict[str, dict[str, str]]:
    """Wait until every entry has its dead letter; each exactly one, with a reason."""
    wanted = set(entries)

    def letters() -> dict[str, list[dict[str, str]]]:
        found: dict[str, list[dict[str, str]]] = {}
        for letter in redis.dead():
            if letter["entry"] in wanted:
                found.setdefault(letter["entry"], []).append(letter)
        return found

    wait_for(lambda: len(letters()) == len(wanted), timeout, 0.1, "every entry dead-lettered")
    time.sleep(0.5)  # a second dead letter for the same entry would show up by now
    found = letters()
    assert {e: len(v) for e, v in found.items() if len(v) != 1} == {}
    for entry, [letter] in found.items():
        assert letter["reason"], letter
        assert redis.refused(entry)["reason"] == letter["reason"]
    assert redis.pending_count() == 0  # nothing left in hand: XTRIM MINID can move on
    return {entry: letter for entry, [letter] in found.items()}


def good_job_runs(redis: Redis, redis_server: RedisServer, endpoint: str, job_id: str) -> None:
    done = vscan(
        redis_server, "submit", endpoint, "--id", job_id, "--wait", "--timeout", "30"
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert redis.status(job_id) == "done"
    assert len(redis.results(job_id)) == 1


# --------------------------------------------------------------------------- the cases


def test_poison_entries_are_dead_lettered_once_and_the_daemon_goes_on(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    target = listen(banner(SSH_BANNER))
    daemons.start("poison", *POLICY)
    ok = {"endpoints": ["127.0.0.2:22"]}
    cases: list[tuple[bytes | list[Any], str]] = [
        # 1. raised in the id hint before validation (RecursionError), and isdigit() digits
        (b'{"id": "deep", "targets": ' + b"[" * 5000 + b"]" * 5000 + b"}",
         "bad JSON: nested too deeply"),
        (json.dumps({"id": "sup", "targets": ["127.0.0.2"], "ports": "\u00b2"}).encode(),
         "ports: bad port list"),
        (json.dumps({"id": "digits", "targets": ["127.0.0.2"], "ports": "9" * 5000}).encode(),
         "is out of range"),
        (json.dumps({"id": "digits2", **ok, "priority": int("9" * 4000)}).encode(),
         "priority:"),
        # 4. a not_after far in the future (overflowed the replay guard's PX)
        (json.dumps({"id": "far", **ok, "not_after": 1e300}).encode(), "days ahead"),
        # names: refused before any lookup
        (json.dumps({"id": "dns", "targets": ["never-resolved.example"]}).encode(),
         "is not allowed (allow_names: localhost)"),
        # ids that would name other jobs' keys
        (json.dumps({"id": "x}:results", **ok}).encode(), "id:"),
        (json.dumps({"id": "a/t0", **ok}).encode(), "id:"),
        (b"\xff\xfe{}", "job is not UTF-8"),
        (b'{"id": "trunc", "targets": ["127.0', "bad JSON"),
        (["job", b"{}", *[f"f{i}".encode() for i in range(40)]], "fields, more than the limit"),
        (["nojob", b"1"], "no 'job' field"),
        (b"x" * 200_000, "more than the limit of 65536 (not read)"),
    ]  # fmt: skip
    entries = [
        redis.xadd_fields(*raw) if isinstance(raw, list) else redis.xadd_job(raw)
        for raw, _ in cases
    ]
    letters = ended_once(redis, entries)
    for (raw, reason), entry in zip(cases, entries, strict=True):
        assert reason in letters[entry]["reason"], (raw[:60], letters[entry]["reason"])
        assert len(letters[entry]["job"]) <= 4096
    # a value over the limit was never read by the daemon; its dead letter (made in Redis)
    # keeps a prefix and the size
    assert letters[entries[-1]]["job"] == "x" * 4096
    assert letters[entries[-1]]["job_bytes"] == "200000"
    for job_id in ("deep", "sup", "digits", "far", "dns", "trunc"):
        assert redis.job(job_id) == {}
    good_job_runs(redis, redis_server, target.endpoint, "after-poison")
    # the trim that used to be pinned: every entry is acknowledged, so MINID passes them all
    floor = redis("XINFO", "GROUPS", redis.stream())[0]
    info = {floor[i].decode(): floor[i + 1] for i in range(0, len(floor), 2)}
    assert int(info["pending"]) == 0

    # the same at the command line: a clear error, no traceback
    cli = vscan(None, "scan", "127.0.0.1", "-p", "\u00b2", check=False)
    assert cli.returncode == 2, cli
    assert "Traceback" not in cli.stderr
    assert "bad port" in cli.stderr


def _vm(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * 1024
    raise AssertionError(field)


def _lag_over(port: int, bound: float) -> int:
    """Blocked reactor-lag samples over *bound* seconds so far (the daemon's own histogram
    of the lag less the reactor thread's waits for a CPU: the part its work caused)."""
    page = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    buckets = {
        float(m.group(1)) if m.group(1) != "+Inf" else float("inf"): float(m.group(2))
        for m in re.finditer(
            r'^vscand_reactor_blocked_samples_seconds_bucket\{le="([^"]+)"\} (\S+)$', page, re.M
        )
    }
    return int(buckets[float("inf")] - buckets[bound])


def test_an_80_mib_entry_costs_little_memory_and_no_stall(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    target = listen(banner(SSH_BANNER))
    metrics = free_port()
    daemon = daemons.start("big", *POLICY, "--metrics-port", str(metrics))
    good_job_runs(redis, redis_server, target.endpoint, "warm-up")  # everything loaded
    time.sleep(1.0)
    lag_before = _lag_over(metrics, 0.1)
    rss_before = _vm(daemon.pid, "VmRSS")
    Path(f"/proc/{daemon.pid}/clear_refs").write_text("5")  # VmHWM := VmRSS
    payload = b"[" + b"{}," * (80 * 1024 * 1024 // 3) + b"{}]"
    entry = redis.xadd_job(payload)
    [letter] = ended_once(redis, [entry], timeout=60).values()
    peak = _vm(daemon.pid, "VmHWM")
    time.sleep(1.0)  # let the lag monitor's samples reach the histogram
    stalls = _lag_over(metrics, 0.1) - lag_before
    print(
        f"80 MiB entry: RSS {rss_before / 2**20:.1f} MiB before, peak "
        f"{peak / 2**20:.1f} MiB (+{(peak - rss_before) / 2**20:.1f}), "
        f"lag samples over 100 ms: {stalls}"
    )
    assert "more than the limit of 65536 (not read)" in letter["reason"]
    assert letter["job"] == payload[:4096].decode()
    assert int(letter["job_bytes"]) == len(payload)
    assert peak - rss_before < 50 * 2**20
    assert stalls == 0
    good_job_runs(redis, redis_server, target.endpoint, "after-big")


def test_signed_mode_an_unsigned_sender_cannot_stop_a_signed_job(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners, tmp_path: Path
) -> None:
    key = tmp_path / "job.key"
    key.write_bytes(os.urandom(32).hex().encode())
    key.chmod(0o600)
    target = listen(banner(SSH_BANNER))
    daemons.start("signed", *POLICY, "--job-key-file", str(key))
    # the schedule's next id is predictable: a sender without the key tries to take it
    forged = redis.xadd_job({"id": "nightly:1700000000", "endpoints": [target.endpoint]})
    far = JobSigner(key.read_bytes()).sign(
        {"id": "far-signed", "endpoints": [target.endpoint]}, 3600 * 24 * 3650
    )
    far_entry = redis.xadd_job(far)
    letters = ended_once(redis, [forged, far_entry])
    assert letters[forged]["reason"].startswith("invalid job: sig: unsigned job")
    assert "days ahead" in letters[far_entry]["reason"]
    assert redis.job("nightly:1700000000") == {}  # nothing under an unverified id
    assert target.connections == 0
    done = vscan(
        redis_server, "submit", target.endpoint, "--id", "nightly:1700000000",
        "--sign-key", str(key), "--wait", "--timeout", "30",
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    assert redis.status("nightly:1700000000") == "done"
    assert len(redis.results("nightly:1700000000")) == 1


def test_a_reused_job_id_is_an_explicit_outcome(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    target = listen(banner(SSH_BANNER))
    daemons.start("dup", *POLICY)
    good_job_runs(redis, redis_server, target.endpoint, "X")
    again = vscan(redis_server, "submit", target.endpoint, "--id", "X", check=False)
    assert again.returncode == 2, again
    assert "job id 'X' is taken" in again.stderr
    # a producer that XADDs directly gets a dead letter, and X is untouched
    entry = redis.xadd_job({"id": "X", "endpoints": [target.endpoint]})
    [letter] = ended_once(redis, [entry]).values()
    assert letter["reason"].startswith("duplicate job id: 'X'")
    assert redis.status("X") == "done"
    assert len(redis.results("X")) == 1
    assert redis.job("X")["entry"] != entry


def test_ids_that_once_named_other_jobs_keys_no_longer_collide(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    """Issue 12 case 3, through a real daemon: ``X:results`` got WRONGTYPE, ``c1`` destroyed
    ``c1:results``'s status, a job ``b1`` split into tasks overwrote ``b1:t0``'s results."""
    ssh = listen(banner(SSH_BANNER))
    ftp = listen(banner(FTP_BANNER))
    daemons.start("ids", *POLICY)
    for job_id in ("c1:results", "b1:t0", "X:results"):
        good_job_runs(redis, redis_server, ssh.endpoint, job_id)
    before = {j: (redis.job(j), redis.results(j)) for j in ("c1:results", "b1:t0", "X:results")}
    for job_id in ("c1", "X"):
        good_job_runs(redis, redis_server, ftp.endpoint, job_id)
    split = vscan(
        redis_server, "submit", ftp.endpoint, f"127.0.0.1:{ssh.port}", "--id", "b1",
        "--task-ports", "1", "--wait", "--timeout", "30",
    )  # fmt: skip
    assert split.returncode == 0, split.stderr
    assert redis.job("b1")["tasks_total"] == "2"
    assert redis.status("b1/t0") == "done" and redis.status("b1/t1") == "done"
    after = {j: (redis.job(j), redis.results(j)) for j in before}
    assert after == before  # no other job's keys changed
    for job_id in ("c1", "X"):
        assert [r["service"]["product"] for r in redis.results(job_id)] == ["vsftpd"]


# --------------------------------------------------------------------------- fuzzed

ID_CHARS = st.characters(
    codec="utf-8", exclude_categories=("Cs",), include_characters=":/{}.-_ \x00\n"
)
ports_text = st.text(alphabet="0123456789\u00b2\u00b3\u0663\uff11-,TUSP:[]*htp ", max_size=24)
huge = st.one_of(
    st.integers(), st.integers(min_value=2**63), st.integers(max_value=-(2**63)),
    st.floats(allow_nan=False), st.just(10**300), st.just(1e308),
)  # fmt: skip
scalars = st.one_of(st.none(), st.booleans(), huge, st.text(ID_CHARS, max_size=12))
anything = st.recursive(
    scalars,
    lambda inner: (
        st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3)
    ),
    max_leaves=8,
)
documents = st.fixed_dictionaries(
    {"targets": st.sampled_from(REFUSED_TARGETS).map(lambda t: [t])},
    optional={
        "id": st.one_of(st.text(ID_CHARS, max_size=140), anything),
        "ports": st.one_of(ports_text, anything),
        "intensity": anything,
        "timeouts": st.one_of(st.fixed_dictionaries({}, optional={"connect_ms": huge,
                                                                    "host_ms": huge}), anything),
        "tags": anything,
        "priority": huge,
        "not_after": huge,
        "parent": st.text(ID_CHARS, max_size=20),
        "task_ports": huge,
        "stale_after": huge,
        "fast": anything,
        "queue": anything,
        "bogus": anything,
    },
)  # fmt: skip


@st.composite
def entries(draw: st.DrawFn) -> list[bytes]:
    """The fields of one hostile stream entry."""
    raw = json.dumps(draw(documents)).encode()
    shape = draw(st.sampled_from(["plain", "deep", "padded", "truncated", "binary"]))
    if shape == "deep":
        depth = draw(st.integers(9, 20_000))
        raw = b'{"id": "d", "tags": ' + b"[" * depth + b"]" * depth + b"}"
    elif shape == "padded":
        raw = raw[:-1] + b', "pad": "' + b"x" * draw(st.integers(60_000, 300_000)) + b'"}'
    elif shape == "truncated":
        raw = raw[: draw(st.integers(0, max(0, len(raw) - 1)))]
    elif shape == "binary":
        raw = draw(st.binary(max_size=64)) + raw
    extra = draw(st.lists(st.binary(min_size=1, max_size=8), max_size=24))
    return [b"job", raw, *[part for value in extra for part in (b"x" + value, value)]]


def test_fuzzed_entries_each_end_once_with_a_reason(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    target = listen(banner(SSH_BANNER))
    daemons.start("fuzz", *POLICY)
    rounds = iter(range(1000))
    good: list[str] = []  # jobs that ran: no hostile entry may change their keys

    @settings(
        max_examples=int(os.environ.get("VSCAND_FUZZ_ROUNDS", "6")),
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(batch=st.lists(entries(), min_size=5, max_size=25))
    def one_round(batch: list[list[bytes]]) -> None:
        earlier = {j: (redis.job(j), redis.results(j)) for j in good}
        ids = [redis.xadd_fields(*fields) for fields in batch]
        ended_once(redis, ids, timeout=60)
        assert {j: (redis.job(j), redis.results(j)) for j in good} == earlier
        good.append(f"good-{next(rounds)}")
        good_job_runs(redis, redis_server, target.endpoint, good[-1])

    one_round()
    assert redis.pending_count() == 0
