"""Key layout 2 (``vscand/queue/keys.py``): no job id names another job's keys, a job's keys
share one Redis Cluster slot, ids that collided in layout 1 now coexist, retention expires
ended jobs, and ``queue/migrate.py`` moves a layout-1 Redis without losing anything.

Everything runs against real throwaway ``redis-server`` processes on loopback.
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet.defer import succeed

from tests.daemon_harness import vscan
from tests.redis_server import REDIS_SERVER, RedisServer
from tests.sync_redis import RedisReplyError, SyncRedis, run
from vscand.jobs.ids import task_id
from vscand.jobs.parse import parse_job
from vscand.jobs.schema import Job, JobError
from vscand.queue import shards
from vscand.queue.keys import Keys
from vscand.queue.migrate import migrate
from vscand.queue.results import ResultWriter
from vscand.targets.policy import TargetPolicy

KEYS = Keys("t:")
NOW = 1_800_000_000.0
ID_ALPHABET = "abcXYZ019._:-"
#: ids like the layout-1 collisions, and the whole id alphabet
ids = st.one_of(
    st.text(alphabet=ID_ALPHABET, min_size=1, max_size=12),
    st.sampled_from(["x:results", "x:written", "c1:t0", "b1:t0", "x:results:results", ":", "-"]),
    st.text(
        alphabet="ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789._:-",
        min_size=1,
        max_size=128,
    ),
)


def job_keys(keys: Keys, job_id: str, tasks: int = 3) -> list[str]:
    """Every key job *job_id* can have: its own, its tasks', their replay guards."""
    out = []
    for one in [job_id, *(task_id(job_id, i) for i in range(tasks))]:
        out += [keys.job(one), keys.job_results(one), keys.job_written(one)]
        out.append(keys.seen_signature(one))
    return out


# --------------------------------------------------------------------------- no collisions


@given(st.sets(ids, min_size=2, max_size=6))
def test_no_two_ids_produce_an_equal_key(job_ids: set[str]) -> None:
    seen: dict[str, str] = {}
    for job_id in job_ids:
        for key in job_keys(KEYS, job_id, tasks=12):
            assert key not in seen, (key, job_id, seen.get(key))
            seen[key] = job_id


def test_the_layout_1_collisions_are_distinct_keys() -> None:
    assert KEYS.job_results("c1") != KEYS.job("c1:results")
    assert KEYS.job_written("x") != KEYS.job("x:written")
    assert KEYS.task("b1", 0) != KEYS.job("b1:t0")
    assert KEYS.job("c1") == "t:job:{c1}"
    assert KEYS.job_results("c1:results") == "t:job:{c1:results}:results"
    assert KEYS.task("b1", 0) == KEYS.job("b1/t0") == "t:job:{b1}/t0"
    assert KEYS.job_written("b1/t0") == "t:job:{b1}/t0:written"
    assert KEYS.seen_signature("s1") == "t:seen:{s1}"


# --------------------------------------------------------------------------- cluster slots


@pytest.fixture(scope="module")
def cluster_node(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SyncRedis]:
    if not os.path.exists(REDIS_SERVER):
        if os.environ.get("CI") == "true":
            pytest.fail("redis-server is not installed (the Makefile installs it)")
        pytest.skip("redis-server is not installed")
    directory = tmp_path_factory.mktemp("cluster")
    server = RedisServer(
        directory,
        "--cluster-enabled",
        "yes",
        "--cluster-config-file",
        str(directory / "nodes.conf"),
    )
    client = SyncRedis(server.port)
    try:
        client.call("CLUSTER", "ADDSLOTSRANGE", "0", "16383")
        deadline = time.monotonic() + 10
        while b"cluster_state:ok" not in client.call("CLUSTER", "INFO"):
            assert time.monotonic() < deadline, "the one-node cluster never came up"
            time.sleep(0.05)
        yield client
    finally:
        client.close()
        server.stop()


@given(ids)
def test_a_job_its_tasks_and_its_replay_guard_share_one_cluster_slot(
    cluster_node: SyncRedis, job_id: str
) -> None:
    slots = {key: cluster_node.call("CLUSTER", "KEYSLOT", key) for key in job_keys(KEYS, job_id)}
    assert len(set(slots.values())) == 1, slots
    # the tag is the id itself: distinct ids spread over the slots like any keys
    assert slots[KEYS.job(job_id)] == cluster_node.call("CLUSTER", "KEYSLOT", job_id)


def test_the_per_job_scripts_run_on_a_cluster_node(cluster_node: SyncRedis) -> None:
    """begin, finish, cancel and reject touch one job's keys only: a cluster node runs them
    (the result write and the split also touch fleet-wide keys: CROSSSLOT there)."""
    writer = ResultWriter(cluster_node, KEYS, worker="w", retention=60)
    job = make_job("cl:1")
    assert run(writer.begin(job, "1-0", "a")) == "run"
    run(writer.request_cancel(job.id))
    assert run(writer.finish(job.id, "a", "cancelled")) is True
    assert run(writer.set_queued(make_job("cl:2"), "2-0")) is True
    assert run(writer.reject("cl:2", "2-0", "invalid job: test")) is True
    assert 0 < cluster_node.call("TTL", KEYS.job("cl:1")) <= 60
    with pytest.raises(RedisReplyError, match="CROSSSLOT"):
        cluster_node.call("MSET", KEYS.job("a"), "1", KEYS.job("b"), "1")


# --------------------------------------------------------------------------- a real Redis


@pytest.fixture
def redis(redis_server: RedisServer) -> Iterator[SyncRedis]:
    client = SyncRedis(redis_server.port)
    yield client
    client.close()


def make_job(job_id: str, **fields: Any) -> Job:
    document = {"id": job_id, "targets": ["127.0.0.1"], "ports": "22,80", **fields}
    return parse_job(json.dumps(document).encode(), policy=TargetPolicy(), now=NOW)


def task_job(document: dict[str, Any]) -> Job:
    return parse_job(json.dumps(document).encode(), policy=TargetPolicy(), now=NOW)


def result(port: int, job: str) -> dict[str, Any]:
    return {
        "job": job,
        "host": "127.0.0.1",
        "hostname": None,
        "port": port,
        "protocol": "tcp",
        "state": "open",
        "reason": "syn-ack",
        "service": {"name": "ssh", "conf": 10, "method": "probed"},
        "tags": {},
        "worker": "w",
        "scanned_at": "2027-01-15T08:00:00Z",
        "duration_ms": 5,
    }


def hash_of(redis: SyncRedis, key: str) -> dict[str, str]:
    flat = redis.call("HGETALL", key)
    return {k.decode(): v.decode() for k, v in zip(flat[::2], flat[1::2], strict=True)}


def ports_of(redis: SyncRedis, key: str) -> list[int]:
    return [json.loads(fields[1])["port"] for _, fields in redis.call("XRANGE", key, "-", "+")]


def run_job(writer: ResultWriter, job: Job, entry: str, ports: list[int]) -> None:
    attempt = f"att-{entry}"
    assert run(writer.begin(job, entry, attempt)) == "run"
    for port in ports:
        assert run(writer.write(job.id, attempt, result(port, job.parent or job.id))) is True
    assert run(writer.finish(job.id, attempt, "done")) is True


def split(writer: ResultWriter, job: Job, entry: str, count: int) -> list[Job]:
    """Begin *job* and split it into *count* one-endpoint tasks; the tasks as parsed jobs."""
    assert run(writer.begin(job, entry, "att-split")) == "run"
    documents = [
        {"id": task_id(job.id, i), "parent": job.id, "endpoints": [f"127.0.0.1:{1000 + i}"]}
        for i in range(count)
    ]
    stream = KEYS.jobs
    state = run(
        writer.split(job, "att-split", count, [shards.encode(d) for d in documents], stream)
    )
    assert state == "split"
    return [task_job(d) for d in documents]


@pytest.fixture
def writer(redis: SyncRedis) -> ResultWriter:
    return ResultWriter(redis, KEYS, worker="w", retention=0)


def test_ids_x_and_x_results_coexist(redis: SyncRedis, writer: ResultWriter) -> None:
    run_job(writer, make_job("X:results"), "1-0", [22])
    run_job(writer, make_job("X"), "2-0", [80, 443])
    run_job(writer, make_job("X:written"), "3-0", [8080])
    assert hash_of(redis, KEYS.job("X:results"))["status"] == "done"
    assert hash_of(redis, KEYS.job("X"))["ports_done"] == "2"
    assert ports_of(redis, KEYS.job_results("X:results")) == [22]
    assert ports_of(redis, KEYS.job_results("X")) == [80, 443]
    assert ports_of(redis, KEYS.job_results("X:written")) == [8080]


def test_job_c1_then_c1_results_both_keep_status_and_results(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    run_job(writer, make_job("c1"), "1-0", [22])
    run_job(writer, make_job("c1:results"), "2-0", [80])
    assert hash_of(redis, KEYS.job("c1"))["status"] == "done"
    assert hash_of(redis, KEYS.job("c1:results"))["status"] == "done"
    assert ports_of(redis, KEYS.job_results("c1")) == [22]
    assert ports_of(redis, KEYS.job_results("c1:results")) == [80]


def test_a_split_job_b1_leaves_a_submitted_job_b1_t0_alone(
    redis: SyncRedis, writer: ResultWriter
) -> None:
    submitted = make_job("b1:t0")  # a valid submitted id, no parent
    assert submitted.parent is None
    run_job(writer, submitted, "1-0", [22])
    before = hash_of(redis, KEYS.job("b1:t0"))
    tasks = split(writer, make_job("b1"), "2-0", 2)
    assert [t.id for t in tasks] == ["b1/t0", "b1/t1"]
    for index, task in enumerate(tasks):
        # each task runs from the stream entry its split queued (its hash's owner)
        run_job(writer, task, hash_of(redis, KEYS.task("b1", index))["entry"], [1000 + index])
    assert hash_of(redis, KEYS.job("b1:t0")) == before
    assert ports_of(redis, KEYS.job_results("b1:t0")) == [22]
    assert hash_of(redis, KEYS.job("b1"))["status"] == "done"
    assert hash_of(redis, KEYS.task("b1", 0))["parent"] == "b1"
    assert ports_of(redis, KEYS.job_results("b1/t0")) == [1000]


@pytest.mark.parametrize(
    ("document", "expected"),
    [
        ({"id": "p/t3", "parent": "p"}, "p/t3"),
        ({"id": "p:t3", "parent": "p"}, "p/t3"),  # a layout-1 task entry
        ({"id": "a:b/t0", "parent": "a:b"}, "a:b/t0"),
        ({"id": "x" * 128 + "/t999999999", "parent": "x" * 128}, "x" * 128 + "/t999999999"),
        (
            {
                "id": "shard-" + hashlib.sha256(b"y" * 120).hexdigest()[:40] + ":t7",
                "parent": "y" * 120,
            },
            "y" * 120 + "/t7",
        ),
    ],
)
def test_task_ids_are_parent_slash_t_n(document: dict[str, Any], expected: str) -> None:
    job = task_job({**document, "endpoints": ["127.0.0.1:22"]})
    assert (job.id, job.parent) == (expected, document["parent"])


@pytest.mark.parametrize(
    ("document", "message"),
    [
        ({"id": "p/t3"}, "id: 'p/t3' must be 1-128 characters"),
        ({"id": "p/t3", "parent": "q"}, "id: 'p/t3': a task of job 'q' has the id q/t<N>"),
        ({"id": "p/t03", "parent": "p"}, "a task of job 'p' has the id p/t<N>"),
        ({"id": "p/t", "parent": "p"}, "a task of job 'p' has the id p/t<N>"),
        ({"id": "p/t1234567890", "parent": "p"}, "a task of job 'p' has the id p/t<N>"),
        ({"id": "p/t1/t2", "parent": "p/t1"}, "parent: must be a job id"),
        ({"id": "stray:t0", "parent": "nobody"}, "a task of job 'nobody' has the id"),
        ({"id": "q{x}", "parent": None}, "id: 'q{x}' must be"),
        ({"parent": "p"}, "id: a task of a sharded job must carry its own id"),
    ],
)
def test_bad_task_ids_are_refused(document: dict[str, Any], message: str) -> None:
    with pytest.raises(JobError) as caught:
        task_job({**document, "endpoints": ["127.0.0.1:22"]})
    assert message in str(caught.value)


# --------------------------------------------------------------------------- retention


def test_retention_expires_an_ended_job_and_a_rejected_one(redis: SyncRedis) -> None:
    writer = ResultWriter(redis, KEYS, worker="w", retention=100)
    job = make_job("r1")
    assert run(writer.begin(job, "1-0", "a")) == "run"
    assert run(writer.write(job.id, "a", result(22, job.id))) is True
    assert redis.call("TTL", KEYS.job("r1")) == -1  # running: kept
    assert run(writer.finish(job.id, "a", "failed", "boom")) is True
    assert 95 <= redis.call("TTL", KEYS.job("r1")) <= 100
    assert 95 <= redis.call("TTL", KEYS.job_results("r1")) <= 100
    assert redis.call("EXISTS", KEYS.job_written("r1")) == 0
    # a refusal is written only into the hash its own entry owns (made by its submitter)
    assert run(writer.set_queued(make_job("r2"), "2-0")) is True
    assert run(writer.reject("r2", "2-0", "invalid job: x")) is True
    assert 95 <= redis.call("TTL", KEYS.job("r2")) <= 100


def test_retention_0_keeps_ended_jobs(redis: SyncRedis, writer: ResultWriter) -> None:
    run_job(writer, make_job("k1"), "1-0", [22])
    assert redis.call("TTL", KEYS.job("k1")) == -1
    assert redis.call("TTL", KEYS.job_results("k1")) == -1


def test_a_sharded_job_and_its_tasks_expire_together_when_it_ends(redis: SyncRedis) -> None:
    writer = ResultWriter(redis, KEYS, worker="w", retention=200)
    tasks = split(writer, make_job("big"), "1-0", 3)
    run_job(writer, tasks[0], hash_of(redis, KEYS.task("big", 0))["entry"], [1000])
    run_job(writer, tasks[1], hash_of(redis, KEYS.task("big", 1))["entry"], [1001])
    # tasks that ended wait for their parent: nothing expires yet
    for key in [KEYS.job("big"), KEYS.task("big", 0), KEYS.job_results("big/t0")]:
        assert redis.call("TTL", key) == -1, key
    entry = hash_of(redis, KEYS.task("big", 2))["entry"]  # the last task is refused
    assert run(writer.reject("big/t2", entry, "invalid job: refused here")) is True
    assert hash_of(redis, KEYS.job("big"))["status"] == "failed"
    ttls = {
        key: redis.call("PTTL", key)
        for key in [KEYS.job("big")]
        + [KEYS.task("big", i) for i in range(3)]
        + [KEYS.job_results(task_id("big", i)) for i in range(2)]
    }
    assert all(195_000 <= ttl <= 200_000 for ttl in ttls.values()), ttls


def test_a_cancelled_split_ends_the_job_with_its_retention(redis: SyncRedis) -> None:
    writer = ResultWriter(redis, KEYS, worker="w", retention=50)
    job = make_job("cx")
    assert run(writer.begin(job, "1-0", "a")) == "run"
    run(writer.request_cancel(job.id))
    state = run(writer.split(job, "a", 2, [b"{}", b"{}"], KEYS.jobs))
    assert state == "cancelled"
    assert run(writer.finish(job.id, "a", "cancelled")) is True
    assert 45 <= redis.call("TTL", KEYS.job("cx")) <= 50
    assert redis.call("XLEN", KEYS.jobs) == 0


# --------------------------------------------------------------------------- migration


def nosleep(seconds: float) -> Any:
    return succeed(None)


def keys_and_ttls(redis: SyncRedis, pattern: str = "t:*") -> dict[str, int]:
    return {key.decode(): redis.call("PTTL", key) for key in redis.call("KEYS", pattern)}


def content(redis: SyncRedis, key: str) -> Any:
    kind = redis.call("TYPE", key).decode()
    if kind == "hash":
        return hash_of(redis, key)
    if kind == "stream":
        return redis.call("XRANGE", key, "-", "+")
    if kind == "set":
        return sorted(redis.call("SMEMBERS", key))
    return redis.call("GET", key)


LONG = "L" * 120
DIGEST = "shard-" + hashlib.sha256(LONG.encode()).hexdigest()[:40]


def layout_1(redis: SyncRedis) -> dict[str, str]:
    """A Redis as the previous version left it: ``{old key: new key}``."""
    moves: dict[str, str] = {}

    def job(
        old_id: str, new_id: str, results: bool = False, written: bool = False, **f: str
    ) -> None:
        redis.call("HSET", f"t:job:{old_id}", "id", old_id, *[x for kv in f.items() for x in kv])
        moves[f"t:job:{old_id}"] = KEYS.job(new_id)
        if results:
            redis.call("XADD", f"t:job:{old_id}:results", "*", "result", f'{{"job":"{old_id}"}}')
            moves[f"t:job:{old_id}:results"] = KEYS.job_results(new_id)
        if written:
            redis.call("SADD", f"t:job:{old_id}:written", "127.0.0.1 22/tcp")
            moves[f"t:job:{old_id}:written"] = KEYS.job_written(new_id)

    job("a1", "a1", results=True, status="done")
    redis.call("PEXPIRE", "t:job:a1", 500_000)
    redis.call("PEXPIRE", "t:job:a1:results", 400_000)
    job("a2", "a2", results=True, written=True, status="running")
    job("x:results", "x:results", status="queued")  # a hash whose key ends in :results
    job("m" * 128, "m" * 128, results=True, written=True, status="running")  # the longest id
    job("b1:t0", "b1:t0", results=True, status="done")  # a submitted job, no parent
    # a sharded job and its tasks
    job("p", "p", status="running", sharded="1", task_base="p", tasks_total="2")
    job("p:t0", "p/t0", results=True, status="done", parent="p")
    job("p:t1", "p/t1", results=True, written=True, status="running", parent="p")
    # a long id's tasks had a digest base
    job(LONG, LONG, status="running", sharded="1", task_base=DIGEST, tasks_total="1")
    job(f"{DIGEST}:t0", f"{LONG}/t0", results=True, status="queued", parent=LONG)
    # results whose job hash is gone
    redis.call("XADD", "t:job:gone:results", "*", "result", "{}")
    moves["t:job:gone:results"] = KEYS.job_results("gone")
    redis.call("SADD", f"t:job:{'g' * 128}:written", "127.0.0.1 22/tcp")
    moves[f"t:job:{'g' * 128}:written"] = KEYS.job_written("g" * 128)
    redis.call("SET", "t:seen:s:1", "5-0", "PX", 300_000)
    moves["t:seen:s:1"] = KEYS.seen_signature("s:1")
    return moves


def test_migration_moves_every_layout_1_key_and_a_second_run_is_a_no_op(
    redis: SyncRedis,
) -> None:
    moves = layout_1(redis)
    # a legacy key whose new name is taken is left alone
    redis.call("HSET", "t:job:k1", "id", "k1", "status", "done")
    redis.call("HSET", KEYS.job("k1"), "id", "k1", "status", "queued")
    unrelated = {"t:jobs": "stream", "t:inventory:127.0.0.1": "hash"}
    redis.call("XADD", "t:jobs", "*", "job", "{}")
    redis.call("HSET", "t:inventory:127.0.0.1", "22/tcp", "{}")
    before = {old: content(redis, old) for old in moves}
    ttl_before = keys_and_ttls(redis)

    report = run(migrate(redis, KEYS, nosleep))
    assert report.outcome == "migrated"
    assert report.conflicts == ["t:job:k1"]
    assert report.moved == len(moves)
    after = keys_and_ttls(redis)
    assert set(after) == {*moves.values(), "t:job:k1", KEYS.job("k1"), *unrelated, "t:layout"}
    assert redis.call("GET", "t:layout") == b"2"
    for old, new in moves.items():
        expected = before[old]
        if isinstance(expected, dict):
            expected = dict(expected)
            expected.pop("task_base", None)
            if expected.get("parent"):
                expected["id"] = new.removeprefix("t:job:").replace("{", "").replace("}", "")
        assert content(redis, new) == expected, (old, new)
        # RENAME kept the TTL (a few ms may have passed)
        if ttl_before[old] > 0:
            assert 0 < ttl_before[old] - after[new] < 5_000, (old, ttl_before[old], after[new])
        else:
            assert after[new] == -1, new
    assert hash_of(redis, KEYS.task(LONG, 0))["id"] == f"{LONG}/t0"
    assert hash_of(redis, KEYS.job("k1"))["status"] == "queued"  # never overwritten

    # a second run finds the marker; a run without it finds nothing to move
    assert run(migrate(redis, KEYS, nosleep)).outcome == "done"
    redis.call("DEL", "t:layout")
    again = run(migrate(redis, KEYS, nosleep))
    assert (again.outcome, again.moved, again.conflicts) == ("migrated", 0, ["t:job:k1"])
    assert keys_and_ttls(redis).keys() == after.keys()


def test_a_layout_1_task_entry_finishes_its_migrated_job(redis: SyncRedis) -> None:
    """Upgrade mid-job: task p:t1 is still in the stream; after migration it runs under its
    new id and its end ends the parent."""
    layout_1(redis)
    run(migrate(redis, KEYS, nosleep))
    writer = ResultWriter(redis, KEYS, worker="w", retention=0)
    redis.call("HSET", KEYS.job("p"), "tasks_finished", "1", "tasks:done", "1")
    legacy = task_job({"id": "p:t1", "parent": "p", "endpoints": ["127.0.0.1:22"]})
    assert legacy.id == "p/t1"
    run_job(writer, legacy, "9-0", [22])
    assert hash_of(redis, KEYS.job("p"))["status"] == "done"
    assert ports_of(redis, KEYS.job_results("p/t1")) == [22]


def test_a_daemon_waits_for_another_ones_migration(redis: SyncRedis) -> None:
    layout_1(redis)
    redis.call("SET", "t:layout:lock", "other-daemon", "PX", 60_000)
    looks: list[float] = []

    def other_finishes(seconds: float) -> Any:
        looks.append(seconds)
        if len(looks) == 2:
            redis.call("SET", "t:layout", "2")  # the other daemon is done
        return succeed(None)

    report = run(migrate(redis, KEYS, other_finishes))
    assert (report.outcome, report.moved, len(looks)) == ("waited", 0, 2)
    assert redis.call("EXISTS", "t:job:a1") == 1  # this one moved nothing


def test_a_lapsed_lock_is_taken_over(redis: SyncRedis) -> None:
    moves = layout_1(redis)
    redis.call("SET", "t:layout:lock", "dead-daemon", "PX", 60_000)

    def lock_lapses(seconds: float) -> Any:
        redis.call("DEL", "t:layout:lock")
        return succeed(None)

    report = run(migrate(redis, KEYS, lock_lapses))
    assert (report.outcome, report.moved) == ("migrated", len(moves))
    assert redis.call("EXISTS", "t:layout:lock") == 0


def test_vscan_migrate_moves_the_keys_once(redis_server: RedisServer, redis: SyncRedis) -> None:
    redis.call("HSET", "vscand:job:m1", "id", "m1", "status", "done")
    redis.call("HSET", "vscand:job:m1:t0", "id", "m1:t0", "parent", "m1", "status", "done")
    first = vscan(redis_server, "migrate").stdout
    assert first == "2 keys moved, 0 left in place\n"
    assert sorted(redis.call("KEYS", "vscand:job:*")) == [b"vscand:job:{m1}", b"vscand:job:{m1}/t0"]
    assert redis.call("HGET", "vscand:job:{m1}/t0", "id") == b"m1/t0"
    assert vscan(redis_server, "migrate").stdout == "the keys are in the current layout already\n"
