"""The producer client (``vscand/producer.py``) against a real redis-server and real
``twist vscand`` daemons scanning loopback banner listeners; the README's examples
("Producing jobs") run as written, extracted from README.md."""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import sys
import threading
import uuid
from pathlib import Path
from typing import Any

import jsonschema
import pytest
import redis

from tests.daemon_harness import (
    CACHE_DIR,
    SSH_BANNER,
    Daemons,
    Listeners,
    Redis,
    banner,
    gated_banner,
    vscan,
    wait_for,
)
from tests.redis_server import RedisServer
from tests.sentinel_cluster import SentinelCluster
from vscand.producer import Client, JobIdTaken, NoSuchJob, ReplicaConfirmError, WaitTimeout

pytestmark = pytest.mark.daemon

REPO = Path(__file__).resolve().parent.parent
POLICY = ("--allow", "127.0.0.1/32", "--deny", "127.0.0.2/32")
RESULT_SCHEMA = jsonschema.Draft202012Validator(
    json.loads((REPO / "schemas" / "result.schema.json").read_text())
)


def readme_example(language: str, readme: Path = REPO / "README.md") -> str:
    """The code block after ``<!-- example: LANGUAGE ...-->`` in *readme* (this checkout's
    README.md; tests/test_new_user_walk.py reads a fresh clone's)."""
    text = readme.read_text()
    found = re.search(
        rf"<!-- example: {language}\b[^>]*-->\n```\w+\n(.*?)\n```", text, flags=re.DOTALL
    )
    assert found, f"README.md has no {language} example"
    return found.group(1) + "\n"


@pytest.fixture
def client(redis_server: RedisServer) -> Any:
    with Client(redis_server.url) as c:
        yield c


def test_the_client_stays_light() -> None:
    code = (
        "import sys\n"
        "import vscand.producer\n"
        "print(sorted(m for m in sys.modules if m.startswith(('twisted', 'txredisapi',"
        " 'vscand.scan', 'vscand.probes'))))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_submit_wait_results_equal_the_daemons_stream(
    redis_server: RedisServer, client: Client, daemons: Daemons, listen: Listeners
) -> None:
    target = listen(banner(SSH_BANNER))
    daemons.start("producer", *POLICY)
    job_id = client.submit({"endpoints": [target.endpoint], "tags": {"by": "producer"}})
    assert uuid.UUID(job_id).version == 4
    queued = Redis(redis_server).job(job_id)
    assert queued["status"] in ("queued", "running", "done") and queued["entry"]
    status = client.wait(job_id, timeout=60)
    assert status["status"] == "done", status
    results = client.results(job_id)
    assert results == Redis(redis_server).results(job_id)
    assert len(results) == 1 and results[0]["job"] == job_id
    assert results[0]["service"]["product"] == "OpenSSH"
    assert results[0]["tags"] == {"by": "producer"}
    for result in results:
        RESULT_SCHEMA.validate(result)
    printed = vscan(redis_server, "results", job_id, "--json").stdout.splitlines()
    assert [json.loads(line) for line in printed] == results
    assert client.status(job_id)["ports_done"] == "1"
    assert client.cancel(job_id) is False  # ended already


def test_a_reused_id_is_refused_and_nothing_is_queued(
    redis_server: RedisServer, client: Client
) -> None:
    redis = Redis(redis_server)
    assert client.submit({"endpoints": ["127.0.0.1:1"]}, id="mine-1") == "mine-1"
    assert client.submit({"id": "mine-2", "endpoints": ["127.0.0.1:1"]}) == "mine-2"
    assert int(redis("XLEN", "vscand:jobs")) == 2
    with pytest.raises(JobIdTaken, match=r"job id 'mine-1' is taken .*status queued"):
        client.submit({"endpoints": ["127.0.0.1:2"]}, id="mine-1")
    assert int(redis("XLEN", "vscand:jobs")) == 2
    # vscan submit and the client share the script: the same refusal either way
    taken = vscan(redis_server, "submit", "127.0.0.1:1", "--id", "mine-2", check=False)
    assert taken.returncode == 2 and "job id 'mine-2' is taken" in taken.stderr
    with pytest.raises(ValueError, match="must be 1-128 characters"):
        client.submit({"endpoints": ["127.0.0.1:1"]}, id="a/t0")
    with pytest.raises(ValueError, match="but the job says id"):
        client.submit({"id": "x", "endpoints": ["127.0.0.1:1"]}, id="y")
    with pytest.raises(NoSuchJob):
        client.status("never-submitted")
    with pytest.raises(WaitTimeout):
        client.wait("mine-1", timeout=0.2, poll=0.05)


def test_a_queue_and_a_replica_confirmation_without_replicas(
    redis_server: RedisServer, client: Client
) -> None:
    redis = Redis(redis_server)
    with pytest.raises(ReplicaConfirmError, match="only 0 of 1 replicas"):
        client.submit(
            {"endpoints": ["127.0.0.1:1"]}, id="c1", queue="dc2", replica_confirm=1,
            replica_timeout_ms=100,
        )  # fmt: skip
    assert int(redis("XLEN", "vscand:jobs:dc2")) == 1  # queued all the same
    assert redis.job("c1")["queue"] == "dc2"


def test_an_invalid_job_ends_failed_with_the_reason(client: Client, daemons: Daemons) -> None:
    daemons.start("producer", *POLICY)
    job_id = client.submit({"endpoints": ["127.0.0.1:22"], "ports": 22})
    status = client.wait(job_id, timeout=30)
    assert status["status"] == "failed"
    assert "ports: must be a string in Nmap syntax" in status["error"]


def test_a_bare_xadd_refusal_shows_in_status_of_a_submitted_job(
    redis_server: RedisServer, client: Client, daemons: Daemons
) -> None:
    # a job submitted while another entry already holds its id: that entry (the second
    # with the id) is refused and recorded by its stream entry; the client's job is intact
    redis = Redis(redis_server)
    job_id = client.submit({"endpoints": ["127.0.0.2:22"]}, id="denied")  # denied target
    daemons.start("producer", *POLICY)
    status = client.wait(job_id, timeout=30)
    assert status["status"] == "failed" and "denied" in status["error"]
    entry = redis.xadd_job({"id": "bare", "endpoints": ["127.0.0.1:22"], "intensity": 10})
    wait_for(lambda: redis.refused(entry), 30, what="the bare entry's refusal")
    assert "intensity: 10 is out of range" in redis.refused(entry)["reason"]
    with pytest.raises(NoSuchJob):
        client.status("bare")  # no hash under the id it claimed


def _type_name(reply: object) -> str:
    """``TYPE``'s status reply as text (the harness gives bytes or str)."""
    return reply.decode() if isinstance(reply, bytes) else str(reply)


def test_a_bare_xadd_without_id_is_named_by_its_entry_at_every_delivery(
    redis_server: RedisServer, daemons: Daemons, listen: Listeners
) -> None:
    # the producer knows the entry (XADD's reply); the job is entry:<ENTRY>, and a worker
    # killed mid-job leaves the same id to the one that takes the entry over
    gate = threading.Event()
    held = listen(gated_banner(SSH_BANNER, gate))
    redis = Redis(redis_server)
    entry = redis.xadd_job({"endpoints": [held.endpoint]})
    job_id = f"entry:{entry}"
    a = daemons.start("bare:a", *POLICY, job_idle_ms=3000)
    wait_for(lambda: redis.status(job_id) == "running", 30, what="A to start the entry's job")
    a.kill()
    daemons.start("bare:b", *POLICY, job_idle_ms=3000)
    wait_for(
        lambda: redis.job(job_id).get("worker") == "bare:b", 30, what="B to take the entry over"
    )
    gate.set()
    with Client(redis_server.url) as client:
        status = client.wait(job_id, timeout=60)
        results = client.results(job_id)
    assert status["status"] == "done" and status["entry"] == entry, status
    assert [(r["port"], r["service"]["name"]) for r in results] == [(held.port, "ssh")]
    # one job for the entry: no second hash under another id
    hashes = [
        key
        for key in (k.decode() for k in redis("KEYS", "vscand:job:*"))
        if _type_name(redis("TYPE", key)) == "hash"
    ]
    assert [k for k in hashes if redis.job(k[len("vscand:job:{") : -1]).get("entry") == entry] == [
        f"vscand:job:{{{job_id}}}"
    ]
    # off the default queue, the queue's name is in the id (entry ids repeat across streams)
    other = listen(banner(SSH_BANNER))
    edge_entry = redis.xadd_job({"endpoints": [other.endpoint]}, queue="edge")
    daemons.start("bare:edge", *POLICY, "--queue", "edge")
    edge_job = f"entry:edge:{edge_entry}"
    # a bare XADD has no job hash until a worker reads the entry (the producer wrote none):
    # until then the client rightly answers "no such job"; wait for the worker to begin it
    wait_for(lambda: redis.status(edge_job) is not None, 30, what="the edge worker to begin it")
    with Client(redis_server.url) as client:
        assert client.wait(edge_job, timeout=60)["status"] == "done"


def test_cancel_and_a_sharded_jobs_results(
    redis_server: RedisServer, client: Client, daemons: Daemons, listen: Listeners
) -> None:
    gate = threading.Event()
    try:
        held = listen(gated_banner(SSH_BANNER, gate))
        daemons.start("producer", *POLICY)
        running = client.submit({"endpoints": [held.endpoint]}, id="held")
        wait_for(lambda: client.status(running)["status"] == "running", 30, what="running")
        assert client.cancel(running) is True
        assert client.wait(running, timeout=30)["status"] == "cancelled"
        assert client.cancel(running) is False
    finally:
        gate.set()
    targets = [listen(banner(SSH_BANNER)) for _ in range(5)]
    sharded = client.submit(
        {"endpoints": [t.endpoint for t in targets], "task_ports": 2}, id="sharded"
    )
    assert client.wait(sharded, timeout=60)["status"] == "done"
    status = client.status(sharded)
    assert status["sharded"] == "1" and status["tasks_total"] == "3"
    results = client.results(sharded)
    redis = Redis(redis_server)
    assert results == [r for i in range(3) for r in redis.results(f"{sharded}/t{i}")]
    assert sorted(r["port"] for r in results) == sorted(t.port for t in targets)
    assert {r["job"] for r in results} == {sharded}
    printed = vscan(redis_server, "results", sharded, "--json").stdout.splitlines()
    assert [json.loads(line) for line in printed] == results


def _example_env(redis_server: RedisServer, target: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k != "VSCAND_REDIS_URL"}
    env.update(VSCAND_REDIS_URL=redis_server.url, TARGET=target, VSCAND_CACHE_DIR=CACHE_DIR)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    return env


def test_the_readme_python_example_runs_as_written(
    redis_server: RedisServer, daemons: Daemons, listen: Listeners
) -> None:
    target = listen(banner(SSH_BANNER))
    daemons.start("producer", *POLICY)
    run = subprocess.run(
        [sys.executable, "-c", readme_example("python")],
        capture_output=True,
        text=True,
        timeout=90,
        env=_example_env(redis_server, target.endpoint),
        check=False,
    )
    assert run.returncode == 0, run.stderr
    first, second = run.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f-]{36} done ", first)
    assert second == f"127.0.0.1 {target.port} open ssh"


@pytest.mark.skipif(shutil.which("redis-cli") is None, reason="no redis-cli")
def test_the_readme_redis_cli_example_runs_as_written(
    redis_server: RedisServer, daemons: Daemons, listen: Listeners
) -> None:
    target = listen(banner(SSH_BANNER))
    daemons.start("producer", *POLICY)
    env = _example_env(redis_server, target.endpoint)
    run = subprocess.run(
        ["sh", "-c", readme_example("sh")],
        capture_output=True, text=True, timeout=90, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout + run.stderr
    status, result = run.stdout.splitlines()
    assert re.fullmatch(r"job-\d+-\d+ done ", status)
    RESULT_SCHEMA.validate(json.loads(result))
    assert json.loads(result)["service"]["product"] == "OpenSSH"
    # a refused entry: the loop reads the reason from vscand:refused:{ENTRY} and exits 1
    env["TARGET"] = "127.0.0.2:22"
    refused = subprocess.run(
        ["sh", "-c", readme_example("sh")],
        capture_output=True, text=True, timeout=90, env=env, check=False,
    )  # fmt: skip
    assert refused.returncode == 1
    assert re.fullmatch(r"job-\d+-\d+ refused: .*denied.*\n", refused.stdout)


@pytest.mark.skipif(
    not os.environ.get("VSCAND_NODE_MODULES") or shutil.which("node") is None,
    reason="set VSCAND_NODE_MODULES to a node_modules with redis (npm install redis@4)",
)
def test_the_readme_node_example_runs_as_written(
    redis_server: RedisServer, daemons: Daemons, listen: Listeners
) -> None:
    target = listen(banner(SSH_BANNER))
    daemons.start("producer", *POLICY)
    env = _example_env(redis_server, target.endpoint)
    env["NODE_PATH"] = os.environ["VSCAND_NODE_MODULES"]
    run = subprocess.run(
        ["node", "-e", readme_example("node")],
        capture_output=True, text=True, timeout=90, env=env, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    first, second = run.stdout.splitlines()
    assert re.fullmatch(r"[0-9a-f-]{36} done ", first)
    assert second == f"127.0.0.1 {target.port} open ssh"


def test_through_sentinel_a_confirmed_submission_survives_a_failover(
    sentinel_cluster: SentinelCluster,
) -> None:
    cluster = sentinel_cluster
    with Client(cluster.url) as sentinel_client:
        job_id = sentinel_client.submit({"endpoints": ["127.0.0.1:1"]}, replica_confirm=1)
        assert sentinel_client.status(job_id)["status"] == "queued"
        old = cluster.kill_master()
        new = cluster.wait_failover(old)
        assert new != old
        # the client asks the sentinels again: the new master holds the confirmed job
        status = wait_for(lambda: _status_or_none(sentinel_client, job_id), 30, what="status")
        assert status["status"] == "queued"
        with pytest.raises(JobIdTaken):
            sentinel_client.submit({"endpoints": ["127.0.0.1:1"]}, id=job_id)


def _status_or_none(client: Client, job_id: str) -> dict[str, str] | None:
    try:
        return client.status(job_id)
    except (redis.ConnectionError, redis.TimeoutError, redis.ReadOnlyError):
        return None
