"""ResultWriter against a real throwaway redis-server: fenced, idempotent result writes.

The promises (reliability.md §1.9, §5 row 5): a worker that lost its job cannot
write; a redelivery leaves exactly one result set; a redelivery after the job
ended only acknowledges; invalid jobs are marked failed without clobbering a job
another stream entry owns. No target is dialled: results are made up.
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import pytest

from tests.redis_server import RedisServer
from tests.sync_redis import SyncRedis, run
from vscand.jobs.parse import parse_job
from vscand.jobs.schema import Job
from vscand.queue.keys import Keys
from vscand.queue.results import ResultWriter, result_json
from vscand.targets.policy import TargetPolicy

KEYS = Keys("t:")
NOW = 1_800_000_000.0  # 2027-01-15T08:00:00Z


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[SyncRedis]:
    client = SyncRedis(redis_server.port)
    yield client
    client.close()


class FakeClock:
    def __init__(self) -> None:
        self.now = NOW

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def writer(redis: SyncRedis, clock: FakeClock) -> ResultWriter:
    return ResultWriter(redis, KEYS, worker="host-a", results_maxlen=1000, clock=clock)


def make_job(job_id: str = "j1", **fields: Any) -> Job:
    raw = json.dumps({"id": job_id, "targets": ["127.0.0.1"], "ports": "22,80", **fields})
    return parse_job(raw.encode(), policy=TargetPolicy(), now=NOW)


def result(port: int, state: str = "open", host: str = "127.0.0.1", **extra: Any) -> dict[str, Any]:
    return {
        "job": "j1",
        "host": host,
        "hostname": None,
        "port": port,
        "protocol": "tcp",
        "state": state,
        "reason": "syn-ack" if state == "open" else "conn-refused",
        "service": {"name": "ssh", "product": "OpenSSH", "conf": 10, "method": "probed"},
        "tags": {},
        "worker": "host-a",
        "scanned_at": "2027-01-15T08:00:00Z",
        "duration_ms": 5,
        **extra,
    }


def job_hash(redis: SyncRedis, job_id: str = "j1") -> dict[str, str]:
    flat = redis.call("HGETALL", KEYS.job(job_id))
    return {k.decode(): v.decode() for k, v in zip(flat[::2], flat[1::2], strict=True)}


def job_results(redis: SyncRedis, job_id: str = "j1") -> list[dict[str, Any]]:
    entries = redis.call("XRANGE", KEYS.job_results(job_id), "-", "+")
    out = []
    for _entry_id, fields in entries:
        assert fields[0] == b"result"
        out.append(json.loads(fields[1]))
    return out


def test_a_job_runs_writes_results_inventory_and_counts(
    redis: SyncRedis, writer: ResultWriter, clock: FakeClock
) -> None:
    job = make_job()
    assert run(writer.set_queued(job, "5-0")) is True
    assert job_hash(redis)["status"] == "queued"
    assert run(writer.begin(job, "5-0", "att-1")) == "run"
    started = job_hash(redis)
    assert {k: started[k] for k in ("status", "worker", "attempt", "entry", "ports_done")} == {
        "status": "running",
        "worker": "host-a",
        "attempt": "att-1",
        "entry": "5-0",
        "ports_done": "0",
    }
    assert started["started_at"] == "2027-01-15T08:00:00Z"
    assert started["queued_at"] == "2027-01-15T08:00:00Z"
    assert run(writer.set_total(job.id, "att-1", 2)) is True

    clock.now += 3
    assert run(writer.write(job.id, "att-1", result(22))) is True
    assert run(writer.write(job.id, "att-1", result(80, "closed"))) is True
    assert run(writer.finish(job.id, "att-1", "done")) is True

    final = job_hash(redis)
    assert final["status"] == "done"
    assert final["ports_done"] == "2"
    assert final["ports_total"] == "2"
    assert final["state:open"] == "1"
    assert final["state:closed"] == "1"
    assert final["finished_at"] == final["updated_at"] == "2027-01-15T08:00:03Z"
    assert "error" not in final

    assert [r["port"] for r in job_results(redis)] == [22, 80]
    stored = redis.call("XRANGE", KEYS.job_results(job.id), "-", "+")[0][1][1]
    # compact JSON with DESIGN.md's key order
    assert stored == result_json(result(22)).encode()
    assert stored.startswith(b'{"job":"j1","host":"127.0.0.1","hostname":null,"port":22,')

    fleet = redis.call("XRANGE", KEYS.results, "-", "+")
    assert [f[:3] for _, f in fleet] == [[b"job", b"j1", b"result"]] * 2
    inventory = redis.call("HGETALL", KEYS.inventory("127.0.0.1"))
    assert dict(zip(inventory[::2], inventory[1::2], strict=True)).keys() == {b"22/tcp", b"80/tcp"}
    assert redis.call("SMEMBERS", KEYS.inventory_hosts) == [b"127.0.0.1"]


def test_inventory_keeps_the_latest_result_per_port(redis: SyncRedis, writer: ResultWriter) -> None:
    for attempt, (job_id, state) in enumerate([("j1", "open"), ("j2", "closed")]):
        job = make_job(job_id)
        assert run(writer.begin(job, f"{attempt}-0", f"a{attempt}")) == "run"
        assert run(writer.write(job_id, f"a{attempt}", result(22, state, job=job_id))) is True
    latest = json.loads(redis.call("HGET", KEYS.inventory("127.0.0.1"), "22/tcp"))
    assert (latest["job"], latest["state"]) == ("j2", "closed")
    udp = result(53, protocol="udp", host="::1")
    assert run(writer.write("j2", "a1", udp)) is True
    assert redis.call("HKEYS", KEYS.inventory("::1")) == [b"53/udp"]
    assert sorted(redis.call("SMEMBERS", KEYS.inventory_hosts)) == [b"127.0.0.1", b"::1"]


def test_a_stale_attempt_cannot_write_or_finish(redis: SyncRedis, writer: ResultWriter) -> None:
    job = make_job()
    assert run(writer.begin(job, "5-0", "old")) == "run"
    assert run(writer.write(job.id, "old", result(22))) is True
    # the entry is claimed by another worker (XAUTOCLAIM after the lease): a new attempt
    other = ResultWriter(redis, KEYS, worker="host-b", results_maxlen=1000)
    assert run(other.begin(job, "5-0", "new")) == "run"
    assert run(writer.write(job.id, "old", result(80))) is False
    assert run(writer.finish(job.id, "old", "done")) is False
    assert run(writer.set_total(job.id, "old", 5)) is False
    state = job_hash(redis)
    assert (state["status"], state["worker"], state["attempt"], state["ports_done"]) == (
        "running",
        "host-b",
        "new",
        "0",
    )
    assert job_results(redis) == []
    assert redis.call("HLEN", KEYS.inventory("127.0.0.1")) == 1  # only the write before takeover


def test_a_retried_write_is_stored_once(redis: SyncRedis, writer: ResultWriter) -> None:
    """A write retried after a timeout or a lost connection, when the first try was in
    fact applied, adds nothing (found by the daemon reliability tests: duplicate results)."""
    job = make_job()
    assert run(writer.begin(job, "5-0", "a1")) == "run"
    for _ in range(3):
        assert run(writer.write(job.id, "a1", result(22))) is True
    assert run(writer.write(job.id, "a1", result(80, "closed"))) is True
    assert [r["port"] for r in job_results(redis)] == [22, 80]
    assert redis.call("XLEN", KEYS.results) == 2
    state = job_hash(redis)
    assert (state["ports_done"], state["state:open"], state["state:closed"]) == ("2", "1", "1")
    # a new attempt starts from scratch, and the job's end drops the bookkeeping
    assert run(writer.begin(job, "5-0", "a2")) == "run"
    assert run(writer.write(job.id, "a2", result(22))) is True
    assert [r["port"] for r in job_results(redis)] == [22]
    assert run(writer.finish(job.id, "a2", "done")) is True
    assert redis.call("EXISTS", KEYS.job_written(job.id)) == 0


def test_a_write_for_an_unknown_job_is_refused(redis: SyncRedis, writer: ResultWriter) -> None:
    assert run(writer.write("nope", "a", result(22))) is False
    assert redis.call("EXISTS", KEYS.job("nope"), KEYS.results) == 0


def test_a_redelivery_replaces_partial_results_so_there_is_one_set(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    job = make_job()
    assert run(writer.begin(job, "5-0", "a1")) == "run"
    assert run(writer.write(job.id, "a1", result(22))) is True
    assert run(writer.write(job.id, "a1", result(80, "closed"))) is True
    # the worker dies here; the entry is redelivered (to this or another worker)
    assert run(writer.begin(job, "5-0", "a2")) == "run"
    fresh = job_hash(redis)
    assert fresh["ports_done"] == "0"
    assert "state:open" not in fresh and "state:closed" not in fresh
    assert job_results(redis) == []
    for port in (22, 80):
        assert run(writer.write(job.id, "a2", result(port))) is True
    assert run(writer.finish(job.id, "a2", "done")) is True
    assert [r["port"] for r in job_results(redis)] == [22, 80]
    assert job_hash(redis)["state:open"] == "2"


def test_a_redelivery_after_the_job_ended_only_acknowledges(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    job = make_job()
    assert run(writer.begin(job, "5-0", "a1")) == "run"
    assert run(writer.write(job.id, "a1", result(22))) is True
    assert run(writer.finish(job.id, "a1", "done")) is True
    # crash between the status write and XACK: the entry comes back
    assert run(writer.begin(job, "5-0", "a2")) == "done"
    state = job_hash(redis)
    assert (state["status"], state["attempt"]) == ("done", "a1")
    assert len(job_results(redis)) == 1
    # a producer retrying its XADD with the same job id gets no second scan either: that
    # entry is a duplicate (the caller dead-letters it), and the job is untouched
    assert run(writer.begin(job, "9-0", "a3")) == "duplicate"
    assert len(job_results(redis)) == 1
    assert job_hash(redis)["entry"] == "5-0"


def test_the_same_job_id_running_from_another_entry_is_not_run_twice(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    job = make_job()
    assert run(writer.begin(job, "5-0", "a1")) == "run"
    assert run(writer.begin(job, "6-0", "a2")) == "duplicate"
    assert job_hash(redis)["attempt"] == "a1"
    assert run(writer.write(job.id, "a1", result(22))) is True


def test_finish_failed_and_cancelled(redis: SyncRedis, writer: ResultWriter) -> None:
    job = make_job()
    assert run(writer.begin(job, "5-0", "a1")) == "run"
    assert run(writer.finish(job.id, "a1", "failed", "timed out after 1000 ms")) is True
    state = job_hash(redis)
    assert (state["status"], state["error"]) == ("failed", "timed out after 1000 ms")
    with pytest.raises(ValueError, match="final status must be one of done, failed, cancelled"):
        run(writer.finish(job.id, "a1", "running"))


def test_results_after_finish_are_refused(redis: SyncRedis, writer: ResultWriter) -> None:
    job = make_job()
    assert run(writer.begin(job, "5-0", "a1")) == "run"
    assert run(writer.finish(job.id, "a1", "cancelled")) is True
    assert run(writer.write(job.id, "a1", result(22))) is False
    assert job_hash(redis)["ports_done"] == "0"


def test_cancel_before_start_and_while_running(redis: SyncRedis, writer: ResultWriter) -> None:
    queued = make_job("j1")
    run(writer.set_queued(queued, "5-0"))
    assert run(writer.cancel_requested("j1")) is False
    run(writer.request_cancel("j1"))
    assert run(writer.cancel_requested("j1")) is True
    assert job_hash(redis, "j1")["status"] == "queued"  # the worker ends it
    assert run(writer.begin(queued, "5-0", "a1")) == "cancelled"
    assert run(writer.finish("j1", "a1", "cancelled")) is True
    assert job_hash(redis, "j1")["status"] == "cancelled"

    running = make_job("j2")
    assert run(writer.begin(running, "6-0", "b1")) == "run"
    assert run(writer.write("j2", "b1", result(22, job="j2"))) is True
    run(writer.request_cancel("j2"))
    assert run(writer.cancel_requested("j2")) is True
    assert job_hash(redis, "j2")["status"] == "running"
    assert run(writer.finish("j2", "b1", "cancelled")) is True
    state = job_hash(redis, "j2")
    assert (state["status"], state["ports_done"]) == ("cancelled", "1")
    assert len(job_results(redis, "j2")) == 1  # partial results are kept


def test_reject_marks_an_invalid_job_failed(redis: SyncRedis, writer: ResultWriter) -> None:
    # an entry nobody recorded (a bare XADD) gets no hash under the id it claims: it would
    # shadow the real job of that id submitted later
    reason = "invalid job: intensity: 10 is out of range (0-9)"
    assert run(writer.reject("bad-1", "7-0", reason)) is False
    assert job_hash(redis, "bad-1") == {}
    # its submitter recorded it (hash owned by that entry): the hash says failed
    assert run(writer.set_queued(make_job("bad-1"), "7-0")) is True
    assert run(writer.reject("bad-1", "7-0", reason))
    state = job_hash(redis, "bad-1")
    assert (state["status"], state["error"], state["entry"]) == (
        "failed",
        "invalid job: intensity: 10 is out of range (0-9)",
        "7-0",
    )
    assert "finished_at" in state
    assert run(writer.reject(None, "8-0", "bad JSON")) is False


def test_reject_never_clobbers_a_job_another_entry_owns(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    job = make_job()
    assert run(writer.begin(job, "5-0", "a1")) == "run"
    # a forged or replayed entry reusing the running job's id
    assert run(writer.reject("j1", "6-0", "sig: bad signature")) is False
    assert job_hash(redis)["status"] == "running"
    assert run(writer.write(job.id, "a1", result(22))) is True
    # the job's own entry, over max_deliveries: failed
    assert run(writer.reject("j1", "5-0", "delivered 4 times")) is True
    assert job_hash(redis)["status"] == "failed"


def test_reject_keeps_a_finished_job_done(redis: SyncRedis, writer: ResultWriter) -> None:
    job = make_job()
    run(writer.begin(job, "5-0", "a1"))
    run(writer.finish(job.id, "a1", "done"))
    # e.g. a signed job redelivered after its not_after passed
    assert run(writer.reject("j1", "5-0", "not_after: job expired")) is False
    assert job_hash(redis)["status"] == "done"


def test_set_queued_never_overwrites_a_later_status(redis: SyncRedis, writer: ResultWriter) -> None:
    job = make_job(queue="edge-1")
    # a fast worker started the job before the submitter recorded it as queued
    assert run(writer.begin(job, "5-0", "a1")) == "run"
    assert run(writer.set_queued(job, "5-0")) is False
    assert job_hash(redis)["status"] == "running"
    other = make_job("j2", queue="edge-1")
    assert run(writer.set_queued(other, "6-0")) is True
    assert job_hash(redis, "j2")["queue"] == "edge-1"


def test_the_fleet_results_stream_is_trimmed_to_about_maxlen(redis: SyncRedis) -> None:
    writer = ResultWriter(redis, KEYS, worker="host-a", results_maxlen=100)
    job = make_job()
    run(writer.begin(job, "5-0", "a1"))
    for port in range(1, 1001):
        assert run(writer.write(job.id, "a1", result(port))) is True
    length = redis.call("XLEN", KEYS.results)
    # MAXLEN ~ trims whole macro nodes (100 entries each by default)
    assert 100 <= length < 300
    # the job's own stream is never trimmed
    assert redis.call("XLEN", KEYS.job_results(job.id)) == 1000
    assert job_hash(redis)["ports_done"] == "1000"


def test_each_write_is_one_script_call(redis: SyncRedis, writer: ResultWriter) -> None:
    job = make_job()
    run(writer.begin(job, "5-0", "a1"))
    run(writer.write(job.id, "a1", result(22)))  # loads the script
    before = len(redis.commands)
    run(writer.write(job.id, "a1", result(80)))
    assert [c[0] for c in redis.commands[before:]] == ["EVALSHA"]


REAL_CLIENT_SCRIPT = """
import json, sys
from twisted.internet import task
from vscand.queue.client import RedisClient
from vscand.jobs.parse import parse_job
from vscand.jobs.signing import JobSigner, JobVerifier
from vscand.queue.replay import claim_signature
from vscand.queue.keys import Keys
from vscand.queue.results import ResultWriter
from vscand.targets.policy import TargetPolicy

async def main(reactor):
    client = RedisClient(reactor, sys.argv[1])
    await client.connect()
    keys = Keys("t:")
    raw = json.dumps(JobSigner(b"k" * 32).sign({"id": "real", "targets": ["127.0.0.1"],
                                                "ports": "22"}, 60)).encode()
    job = parse_job(raw, policy=TargetPolicy(), verifier=JobVerifier(b"k" * 32),
                    now=reactor.seconds())
    writer = ResultWriter(client, keys, worker="real-worker", results_maxlen=10)
    out = [
        await claim_signature(client, keys, job, "1-0"),
        await claim_signature(client, keys, job, "2-0"),
        await writer.begin(job, "1-0", "a1"),
        await writer.write(job.id, "a1", {"job": job.id, "host": "127.0.0.1", "port": 22,
                                          "protocol": "tcp", "state": "open"}),
        await writer.write(job.id, "stale", {"host": "127.0.0.1", "port": 23,
                                             "protocol": "tcp", "state": "open"}),
        await writer.finish(job.id, "a1", "done"),
        await writer.begin(job, "1-0", "a2"),
        await writer.cancel_requested(job.id),
    ]
    print(json.dumps(out))
    await client.disconnect()

task.react(lambda reactor: task.Deferred.fromCoroutine(main(reactor)))
"""


def test_the_real_client_drives_the_writer_and_the_replay_guard(
    redis_server: RedisServer, redis: SyncRedis
) -> None:
    if importlib.util.find_spec("vscand.queue.client") is None:
        pytest.skip("vscand.queue.client is not there yet")
    # its own process: the real reactor runs there, never in this test process
    done = subprocess.run(
        [sys.executable, "-b", "-c", REAL_CLIENT_SCRIPT, redis_server.url],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout.splitlines()[-1]) == [
        True,
        False,
        "run",
        True,
        False,
        True,
        "done",
        False,
    ]
    assert job_hash(redis, "real")["status"] == "done"
    assert [r["port"] for r in job_results(redis, "real")] == [22]
