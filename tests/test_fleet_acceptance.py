"""The fleet issue's acceptance, end to end: a real ``redis-server`` and three ``twist
vscand`` daemons started here, loopback targets only.

* a schedule every 2 s for 30 s: one run per tick, none twice, none lost; all daemons
  stopped for 10 s and restarted: no burst of missed runs;
* a job over 64 endpoints split into tasks: all three daemons take some, the results
  equal one ``vscan scan`` of the same endpoints, and ``vscan cancel`` reaches every task;
* stop a service, change another's version, start a new one: the next scheduled run emits
  exactly those three change events and nothing else.
"""

from __future__ import annotations

import json
import signal
import socket
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import (
    FTP_BANNER,
    SMTP_BANNER,
    SSH_BANNER,
    Daemon,
    Daemons,
    Handler,
    Listeners,
    Redis,
    assert_schedule_window,
    delayed_banner,
    gated_banner,
    vscan,
    wait_for,
)
from tests.e2e.servers import ClosedPort, mysql_greeting
from tests.redis_server import RedisServer
from tests.test_daemon_reliability import port_view, xml_ports
from vscand.daemon.duties import SCHEDULE_TICK
from vscand.probes.matcher import Matcher

pytestmark = pytest.mark.daemon


@pytest.fixture
def redis(redis_server: RedisServer) -> Redis:
    return Redis(redis_server)


def pairs(reply: list[Any] | None) -> dict[str, str]:
    items = [v.decode() if isinstance(v, bytes) else str(v) for v in reply or []]
    return dict(zip(items[::2], items[1::2], strict=True))


def stream_job_ids(redis: Redis) -> list[str]:
    entries = redis("XRANGE", "vscand:jobs", "-", "+") or []
    return [json.loads(fields[1])["id"] for _entry, fields in entries]


def three(daemons: Daemons, prefix: str, *options: str) -> list[Daemon]:
    return [daemons.start(f"{prefix}-{n}", *options) for n in ("a", "b", "c")]


def stop_all(running: list[Daemon]) -> None:
    for daemon in running:
        daemon.signal(signal.SIGTERM)
    for daemon in running:
        daemon.wait_exit(30)


# --------------------------------------------------------------------------- schedules


def test_a_schedule_every_2s_for_30s_on_three_daemons_then_an_outage(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners, matcher: Matcher
) -> None:
    server = listen(delayed_banner(SSH_BANNER, 0.0))
    running = three(daemons, "tick")
    every = 2
    scan_bound = matcher.db.find("NULL", "TCP").totalwaitms / 1000  # a banner peer's scan
    before_add = time.time()
    vscan(redis_server, "schedule", "add", "pulse", "--every", str(every), server.endpoint)
    started = time.time()
    time.sleep(30)
    after_sleep = time.time()
    stop_all(running)
    stopped = time.time()
    first_phase = stream_job_ids(redis)
    state = pairs(redis("HGETALL", "vscand:schedule:pulse"))
    ticks = sorted(int(job_id.split(":")[1]) for job_id in first_phase)
    print("first 30 s:", ticks, state, f"{stopped - started:.1f}s")
    assert len(first_phase) == len(set(first_phase)), f"a tick enqueued twice: {first_phase}"
    runs = int(state.get("runs", 0))
    assert runs == len(first_phase)
    # every tick claimed exactly once (run or skipped), which ticks the 30 s hold, and that
    # runs go on, from the 2 s grid, the 1 s schedule tick and the NULL probe's wait (see
    # assert_schedule_window), not this machine's speed
    assert_schedule_window(
        ticks,
        state,
        before_add=before_add,
        after_add=started,
        after_sleep=after_sleep,
        stopped=stopped,
        every=every,
        scan_bound=scan_bound,
    )
    enqueued_by = {
        d.name: sum("schedule pulse: enqueued" in m for m in d.messages()) for d in running
    }
    assert sum(enqueued_by.values()) == runs, enqueued_by
    print("enqueued by:", enqueued_by)

    # 10 s with no daemon at all: 5 ticks pass unclaimed
    time.sleep(10)
    restarted = time.time()
    running = three(daemons, "tick")
    time.sleep(7)
    slept = time.time()
    vscan(redis_server, "schedule", "pause", "pulse")
    paused = time.time()
    after = [j for j in stream_job_ids(redis) if j not in first_phase]
    after_ticks = sorted(int(job_id.split(":")[1]) for job_id in after)
    print("after the outage:", after_ticks, f"restart at {restarted:.1f}, paused {paused:.1f}")
    assert len(after) == len(set(after))
    # the missed ticks are not replayed: at most one catch-up run (named after the oldest
    # missed tick), then the schedule is back on its 2 s grid
    missed = [t for t in after_ticks if t < restarted]
    on_grid = [t for t in after_ticks if t >= restarted]
    assert len(missed) <= 1, f"burst of missed runs after the outage: {after_ticks}"
    # back on the grid, held like the first phase (assert_schedule_window): a tick may be
    # skipped while the catch-up run is still in progress, runs go on within the NULL wait,
    # claims go on until the pause, and no more grid times than the window holds
    state = pairs(redis("HGETALL", "vscand:schedule:pulse"))
    last = max([*on_grid, int(state.get("last_skipped_tick", 0))])
    gaps = [b - a for a, b in zip(on_grid, [*on_grid[1:], last], strict=True)]
    assert on_grid and all(g % every == 0 for g in gaps), after_ticks
    assert max(gaps) <= SCHEDULE_TICK + scan_bound + every, (gaps, after_ticks)
    assert last >= slept - SCHEDULE_TICK - 2 * every, (after_ticks, state, slept)
    assert len(on_grid) <= (paused - restarted) / every + 1, after_ticks
    for job_id in first_phase[-3:] + after:
        wait_for(lambda j=job_id: redis.status(j) == "done", 30, what=f"{job_id} done")
        assert [r["service"]["name"] for r in redis.results(job_id)] == ["ssh"]


# --------------------------------------------------------------------------- sharding


def test_a_64_endpoint_job_is_shared_by_three_daemons_and_equals_vscan_scan(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners, tmp_path: Path
) -> None:
    banners = [SSH_BANNER, FTP_BANNER, SMTP_BANNER, mysql_greeting()]
    # the greetings wait for a gate, opened once each daemon holds a task (--max-jobs 1: a
    # daemon holding one takes no other), so no daemon can take all the tasks before the
    # others have asked, however the three processes' speeds compare (a 0.5 s pause used to
    # stand for that); the gate opens well within the NULL probe's wait, so the scans match
    gate = threading.Event()
    servers = [listen(gated_banner(banners[i % 4], gate)) for i in range(64)]
    endpoints = [s.endpoint for s in servers]
    running = three(daemons, "shard", "--max-jobs", "1")
    job_id = vscan(
        redis_server, "submit", *endpoints, "--task-ports", "8", "--id", "big-64"
    ).stdout.strip()
    assert job_id == "big-64"

    def holding() -> set[str]:
        jobs = [redis.job(f"big-64/t{i}") for i in range(8)]
        return {j["worker"] for j in jobs if j.get("status") == "running"}

    try:
        wait_for(lambda: len(holding()) == 3, 30, 0.05, "each daemon to hold a task")
    finally:
        gate.set()
    scan_json, scan_xml = tmp_path / "scan.jsonl", tmp_path / "scan.xml"
    vscan(None, "scan", *endpoints, "-oJ", str(scan_json), "-oX", str(scan_xml))
    wait = vscan(redis_server, "wait", job_id, "--timeout", "90", check=False)
    parent = redis.job(job_id)
    assert wait.returncode == 0, (wait.stdout, wait.stderr, parent)

    # the job's status aggregates its 8 tasks
    assert parent["status"] == "done" and parent["sharded"] == "1", parent
    assert (parent["tasks_total"], parent["tasks_finished"], parent["tasks:done"]) == ("8",) * 3
    assert (parent["ports_total"], parent["ports_done"], parent["state:open"]) == ("64",) * 3
    tasks = [redis.job(f"big-64/t{i}") for i in range(8)]
    assert {t["status"] for t in tasks} == {"done"}
    assert all(t["parent"] == job_id and t["ports_done"] == "8" for t in tasks)
    workers = {t["worker"] for t in tasks}
    print("tasks per worker:", {w: sum(t["worker"] == w for t in tasks) for w in workers})
    assert workers == {d.name for d in running}, "every daemon took tasks"
    assert redis.pending_count() == 0

    # the results equal one `vscan scan` of the same endpoints
    scanned = [json.loads(line) for line in scan_json.read_text().splitlines() if line]
    fleet_out = vscan(redis_server, "results", job_id, "--json").stdout
    fleet = [json.loads(line) for line in fleet_out.splitlines() if line]
    assert len(fleet) == len(scanned) == 64
    assert port_view(fleet) == port_view(scanned)
    assert {r["job"] for r in fleet} == {job_id}
    assert {r["service"]["name"] for r in fleet} == {"ssh", "ftp", "smtp", "mysql"}
    export_xml = tmp_path / "export.xml"
    vscan(redis_server, "export", job_id, "-oX", str(export_xml))
    assert xml_ports(export_xml) == xml_ports(scan_xml)
    status = json.loads(vscan(redis_server, "status", job_id, "--json").stdout)
    assert status["tasks_finished"] == "8"


def test_cancel_reaches_every_task_of_a_sharded_job(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    gate = threading.Event()
    servers = [listen(gated_banner(SSH_BANNER, gate)) for _ in range(24)]
    try:
        running = three(daemons, "cancel", "--max-jobs", "1")
        job_id = vscan(
            redis_server, "submit", *(s.endpoint for s in servers), "--task-ports", "4"
        ).stdout.strip()

        # three tasks running (one per daemon), three still queued
        def statuses() -> list[str | None]:
            return [redis.status(f"{job_id}/t{i}") for i in range(6)]

        wait_for(
            lambda: statuses().count("running") == 3,
            30,
            what=f"three tasks running ({statuses()}, pending {redis.pending()})",
        )
        cancelled_at = time.monotonic()
        vscan(redis_server, "cancel", job_id)
        wait_for(lambda: redis.status(job_id) == "cancelled", 20, what="job cancelled")
        took = time.monotonic() - cancelled_at
        print(f"cancelled in {took:.2f}s")
        tasks = [redis.job(f"{job_id}/t{i}") for i in range(6)]
        assert [t["status"] for t in tasks] == ["cancelled"] * 6, tasks
        assert redis.job(job_id)["tasks:cancelled"] == "6"
        assert redis.pending_count() == 0
        assert all(d.alive() for d in running)
        wait = vscan(redis_server, "wait", job_id, check=False)
        assert wait.returncode == 1 and "cancelled" in wait.stderr
    finally:
        gate.set()


def test_a_task_without_a_split_is_rejected(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    """A job that claims to be a task of a sharded job nobody split (forged or stale) is
    refused, and the job it names is untouched."""
    server = listen(delayed_banner(SSH_BANNER, 0.0))
    daemons.start("orphan")
    entry = redis.xadd_job({"id": "nobody/t0", "parent": "nobody", "endpoints": [server.endpoint]})
    wait_for(lambda: redis.refused(entry), 20, what="stray task refused")
    assert "no sharded job queued it" in redis.refused(entry)["reason"]
    assert redis.job("nobody/t0") == {}  # no hash under the id a refused entry claims
    assert redis.job("nobody") == {}
    assert server.connections == 0


def test_three_daemons_starting_at_once_migrate_a_layout_1_sharded_job_and_finish_it(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    """An upgrade in the middle of a sharded job: the previous version left the job, its
    ended task ``up:t0`` and the queued entry of task ``up:t1`` under layout-1 keys. Three
    daemons start together: one migrates, the others wait for it, one runs the task, the
    job ends ``done`` with both tasks' results."""
    server = listen(delayed_banner(SSH_BANNER, 0.0))
    old_result = {"job": "up", "host": "127.0.0.1", "port": 1, "protocol": "tcp", "state": "open"}
    redis("HSET", "vscand:job:up", "id", "up", "status", "running", "sharded", "1",
          "task_base", "up", "tasks_total", "2", "tasks_finished", "1", "tasks:done", "1",
          "ports_total", "2", "ports_done", "1", "state:open", "1")  # fmt: skip
    redis("HSET", "vscand:job:up:t0", "id", "up:t0", "parent", "up", "status", "done")
    redis("XADD", "vscand:job:up:t0:results", "*", "result", json.dumps(old_result))
    entry = redis.xadd_job({"id": "up:t1", "parent": "up", "endpoints": [server.endpoint]})
    redis("HSET", "vscand:job:up:t1", "id", "up:t1", "parent", "up", "status", "queued",
          "entry", entry)  # fmt: skip
    redis("SET", "vscand:seen:up", "1-0", "EX", 3600)

    running = [daemons.start(f"upgrade-{n}", wait=False) for n in ("a", "b", "c")]
    for daemon in running:
        daemon.wait_ready()
    wait_for(lambda: redis.status("up") == "done", 30, what="the migrated job done")
    assert redis("GET", "vscand:layout") == b"2"
    assert [d.logged("moving job keys to key layout 2") for d in running].count(True) == 1
    names = sorted(k.decode() for k in redis("KEYS", "vscand:*"))
    assert [n for n in names if n.startswith(("vscand:job:", "vscand:seen:"))] == [
        "vscand:job:{up}",
        "vscand:job:{up}/t0",
        "vscand:job:{up}/t0:results",
        "vscand:job:{up}/t1",
        "vscand:job:{up}/t1:results",
        "vscand:seen:{up}",
    ], names
    assert redis.job("up/t1")["status"] == "done" and redis.job("up/t0")["id"] == "up/t0"
    assert 3500 < redis("TTL", "vscand:seen:{up}") <= 3600
    results = vscan(redis_server, "results", "up", "--json").stdout.splitlines()
    assert [json.loads(line)["port"] for line in results] == [1, server.port]
    # the job ended: it and its tasks expire together after job_retention (7 days)
    week = 7 * 24 * 3600
    for key in ("vscand:job:{up}", "vscand:job:{up}/t0", "vscand:job:{up}/t1:results"):
        assert week - 60 < redis("TTL", key) <= week, key


# --------------------------------------------------------------------------- changes


class Versioned:
    """A greeting the test can change between scans."""

    def __init__(self, greeting: bytes) -> None:
        self.greeting = greeting

    def handler(self) -> Handler:
        return delayed_banner_callable(lambda: self.greeting)


def delayed_banner_callable(greeting: Any) -> Handler:
    def handle(conn: socket.socket) -> None:
        conn.sendall(greeting())
        conn.settimeout(600)
        try:
            while conn.recv(65536):
                pass
        except OSError:
            pass

    return handle


def test_the_next_scheduled_run_reports_exactly_the_three_changes(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    stays = listen(delayed_banner(FTP_BANNER, 0.0))
    goes = listen(delayed_banner(SSH_BANNER, 0.0))
    upgraded = Versioned(b"SSH-2.0-OpenSSH_8.4p1 Debian-5+deb11u1\r\n")
    changes_version = listen(upgraded.handler())
    closed = ClosedPort()
    new_port = closed.port
    endpoints = [stays.endpoint, goes.endpoint, changes_version.endpoint, f"127.0.0.1:{new_port}"]
    three(daemons, "inv")
    vscan(redis_server, "schedule", "add", "inv", "--every", "2", *endpoints)

    def last_run_done() -> str | None:
        state = pairs(redis("HGETALL", "vscand:schedule:inv"))
        job = state.get("last_job")
        return job if job and redis.status(job) == "done" else None

    first = wait_for(last_run_done, 30, what="a first run done")
    assert len(redis.results(first)) == 4
    vscan(redis_server, "schedule", "pause", "inv")
    time.sleep(1.5)  # a tick claimed just before the pause has been enqueued
    wait_for(last_run_done, 30, what="the last run before the changes done")
    before = pairs(redis("HGETALL", "vscand:schedule:inv"))["last_job"]
    mark = redis("XREVRANGE", "vscand:changes", "+", "-", "COUNT", 1)
    assert mark, "the first run's opened events"
    ms, seq = mark[0][0].decode().split("-")
    mark_id = f"{ms}-{int(seq) + 1}"  # --since is inclusive: start just after the mark

    goes.close()  # stop a service
    upgraded.greeting = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"  # new version
    closed.close()
    listen(delayed_banner(SMTP_BANNER, 0.0), port=new_port)  # a new service
    vscan(redis_server, "schedule", "resume", "inv")

    def next_run_done() -> str | None:
        job = last_run_done()
        return job if job and job != before else None

    after = wait_for(next_run_done, 30, what="the next scheduled run done")
    events = vscan(redis_server, "changes", "--since", mark_id, "--json").stdout
    kinds = sorted(
        (int(e["port"]), e["kind"]) for e in (json.loads(line) for line in events.splitlines())
    )
    print("changes:", kinds, "run", after)
    assert kinds == sorted(
        [(goes.port, "closed"), (changes_version.port, "version_changed"), (new_port, "opened")]
    )
    # and a further run, with nothing changed, adds nothing
    wait_for(lambda: (j := last_run_done()) is not None and j != after, 30, what="another run")
    vscan(redis_server, "schedule", "pause", "inv")
    again = vscan(redis_server, "changes", "--since", mark_id, "--json").stdout
    assert len(again.splitlines()) == 3, again
