"""Schedules: the cron parser (against croniter), the fleet-wide tick against a real
``redis-server`` (several "daemons" ticking at the same second), the CLI, and two real
daemons running a schedule.

Everything is on loopback: Redis is the fixture's, the daemon test's target is a loopback
listener.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

import pytest

from tests.daemon_harness import (
    Daemons,
    Listeners,
    Redis,
    assert_schedule_window,
    banner,
    vscan,
    wait_for,
)
from tests.redis_server import RedisServer
from tests.sync_redis import SyncRedis, run
from vscand.probes.matcher import Matcher
from vscand.queue import schedule_tick
from vscand.queue import schedules as sched
from vscand.queue.cron import CronError, CronExpr
from vscand.queue.keys import Keys

KEYS = Keys()
T0 = 1_800_000_000  # a multiple of 2, 4, 5, 10 and 60 (and of 3600: 2027-01-15T08:00:00Z)


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def pairs(reply: list[Any] | None) -> dict[str, str]:
    items = list(reply or [])
    return {_text(items[i]): _text(items[i + 1]) for i in range(0, len(items), 2)}


# --------------------------------------------------------------------------- cron


@pytest.mark.parametrize(
    "expr",
    [
        "* * * * *",
        "*/5 * * * *",
        "0 * * * *",
        "30 2 * * *",
        "0 0 1 * *",
        "15 10 * * mon-fri",
        "0 12 * * 7",
        "0 0 13 * 5",  # Friday the 13th or any Friday or any 13th (day_or)
        "0 0 */2 * *",
        "5-20/5 1,13 * jan,jul *",
        "0 0 29 2 *",
        "59 23 31 12 *",
        "0 6 1-7 * 1",
        "10/15 * * * *",
        "@hourly",
        "@daily",
        "@weekly",
        "@monthly",
        "@yearly",
        "0 0 * * */2",
        "0 0 1 */3 *",
        "1,2,3 4-6 10-20/3 2-11 0-6",
    ],
)
def test_cron_next_matches_croniter(expr: str) -> None:
    croniter = pytest.importorskip("croniter").croniter
    rng = random.Random(expr)
    starts = [T0, T0 - 1, T0 + 59, 1_709_164_800, 0, 2_000_000_000]  # 2024-02-29 among them
    starts += [rng.randrange(0, 2_500_000_000) for _ in range(40)]
    parsed = CronExpr.parse(expr)
    for start in starts:
        expected = croniter(expr, datetime.fromtimestamp(start, UTC)).get_next(float)
        assert parsed.next_after(start) == int(expected), (expr, start)


@pytest.mark.parametrize(
    ("expr", "error"),
    [
        ("* * * *", "5 fields"),
        ("60 * * * *", "minute: 60 is out of range"),
        ("* 24 * * *", "hour: 24"),
        ("* * 0 * *", "day of month: 0"),
        ("* * * 13 *", "month: 13"),
        ("* * * * 8", "day of week: 8"),
        ("*/0 * * * *", "step"),
        ("5-1 * * * *", "backwards"),
        ("a * * * *", "not a number"),
        ("1,,2 * * * *", "empty list item"),
        ("0 0 30 2 *", "never runs"),
    ],
)
def test_cron_errors(expr: str, error: str) -> None:
    with pytest.raises(CronError, match=error):
        CronExpr.parse(expr)


def test_interval_ticks_are_aligned_and_strictly_after_now() -> None:
    every = sched.Schedule("s", {"targets": ["127.0.0.1"]}, every=10)
    assert every.next_after(T0) == T0 + 10
    assert every.next_after(T0 + 9.9) == T0 + 10
    cron = sched.Schedule("c", {"targets": ["127.0.0.1"]}, cron="*/5 * * * *")
    assert cron.next_after(T0) == T0 + 300


def test_schedule_validation() -> None:
    job = {"targets": ["127.0.0.1"]}
    with pytest.raises(sched.ScheduleError, match="exactly one"):
        sched.Schedule("s", job)
    with pytest.raises(sched.ScheduleError, match="exactly one"):
        sched.Schedule("s", job, every=5, cron="* * * * *")
    with pytest.raises(sched.ScheduleError, match="name"):
        sched.Schedule("a:b", job, every=5)
    with pytest.raises(sched.ScheduleError, match="interval"):
        sched.Schedule("s", job, every=0)
    with pytest.raises(sched.ScheduleError, match="cron"):
        sched.Schedule("s", job, cron="61 * * * *")
    with pytest.raises(sched.ScheduleError, match="'id'"):
        sched.Schedule("s", {"id": "x", **job}, every=5)
    record = sched.Schedule("s", job, cron="@daily", queue="dc1", created_at=5.0)
    assert sched.Schedule.from_json(record.to_json()) == record
    assert record.job_for(T0) == {
        "id": f"s:{T0}",
        "targets": ["127.0.0.1"],
        "tags": {"schedule": "s"},
        "queue": "dc1",
    }


# --------------------------------------------------------------------------- the tick


@pytest.fixture
def conns(redis_server: RedisServer) -> Iterator[list[SyncRedis]]:
    """Five connections: five "daemons"."""
    pool = [SyncRedis(redis_server.port) for _ in range(5)]
    try:
        yield pool
    finally:
        for conn in pool:
            conn.close()


def add(
    conn: SyncRedis, name: str = "nightly", now: float = T0 - 1, replace: bool = False, **kw: Any
) -> int | None:
    if "cron" not in kw:
        kw.setdefault("every", 2)
    schedule = sched.Schedule(name, {"endpoints": ["127.0.0.1:9"]}, **kw)
    return run(sched.put(conn, KEYS, schedule, now=now, replace=replace))


def stream_jobs(conn: SyncRedis, queue: str | None = None) -> list[str]:
    entries = conn.call("XRANGE", KEYS.jobs_for(queue), "-", "+") or []
    return [json.loads(fields[1])["id"] for _entry, fields in entries]


def job_status(conn: SyncRedis, job_id: str) -> str | None:
    reply = conn.call("HGET", KEYS.job(job_id), "status")
    return None if reply is None else _text(reply)


def finish(conn: SyncRedis, job_id: str, status: str = "done") -> None:
    conn.call("HSET", KEYS.job(job_id), "status", status)


def test_same_second_from_five_daemons_enqueues_once(conns: list[SyncRedis]) -> None:
    assert add(conns[0]) == T0
    # every daemon reads the due list before any claims: the worst interleaving
    seen = [run(schedule_tick.read_due(conn, KEYS, now=T0)) for conn in conns]
    assert all(now == T0 and [d.name for d in due] == ["nightly"] for now, due in seen)
    outcomes = [
        run(schedule_tick.claim(conn, KEYS, due[0], now))
        for conn, (now, due) in zip(conns, seen, strict=True)
    ]
    assert [o.result for o in outcomes] == ["enqueued", "stale", "stale", "stale", "stale"]
    assert stream_jobs(conns[0]) == [f"nightly:{T0}"]
    job = pairs(conns[0].call("HGETALL", KEYS.job(f"nightly:{T0}")))
    assert job["status"] == "queued" and job["schedule"] == "nightly"
    assert job["entry"] == outcomes[0].entry
    assert float(conns[0].call("ZSCORE", sched.next_key(KEYS), "nightly")) == T0 + 2


def test_threads_ticking_together_claim_each_tick_exactly_once(
    redis_server: RedisServer,
) -> None:
    """Eight threads ("daemons", each its own connection) call tick at every second of a
    minute, released together by a barrier; a "worker" finishes each job at once."""
    daemons, seconds = 8, 60
    setup = SyncRedis(redis_server.port)
    add(setup, every=2)
    add(setup, "cronned", cron="* * * * *")
    barrier = threading.Barrier(daemons)
    outcomes: list[schedule_tick.Outcome] = []
    lock = threading.Lock()
    errors: list[BaseException] = []

    def daemon() -> None:
        conn = SyncRedis(redis_server.port)
        try:
            for second in range(seconds):
                barrier.wait(10)
                got = run(schedule_tick.tick(conn, KEYS, now=T0 + second))
                for outcome in got:
                    if outcome.result == "enqueued":
                        assert outcome.job_id is not None
                        finish(conn, outcome.job_id)
                with lock:
                    outcomes.extend(got)
                barrier.wait(10)  # every daemon is done with this second
        except BaseException as exc:  # reported below
            errors.append(exc)
            barrier.abort()
        finally:
            conn.close()

    threads = [threading.Thread(target=daemon) for _ in range(daemons)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    assert not errors, errors
    enqueued = [o for o in outcomes if o.result == "enqueued"]
    assert {o.result for o in outcomes} <= {"enqueued", "stale"}
    per_tick = Counter((o.name, o.tick) for o in enqueued)
    assert max(per_tick.values()) == 1
    assert sorted(t for n, t in per_tick if n == "nightly") == list(range(T0, T0 + seconds, 2))
    assert sorted(t for n, t in per_tick if n == "cronned") == [T0]
    ids = stream_jobs(setup)
    assert len(ids) == len(set(ids)) == len(enqueued) == seconds // 2 + 1
    setup.close()


def test_outage_runs_once_then_resumes(conns: list[SyncRedis]) -> None:
    add(conns[0], every=2)
    first = run(schedule_tick.tick(conns[0], KEYS, now=T0))
    assert [o.result for o in first] == ["enqueued"]
    finish(conns[0], f"nightly:{T0}")
    # a 10 s outage: nobody ticks from T0+1 to T0+11 (ticks T0+2 .. T0+10 are missed)
    after = [run(schedule_tick.tick(conn, KEYS, now=T0 + 12)) for conn in conns]
    flat = [o for got in after for o in got]
    assert [o.result for o in flat] == ["enqueued"], "one run, not a burst"
    assert flat[0].job_id == f"nightly:{T0 + 2}"  # named after the oldest missed tick
    assert float(conns[0].call("ZSCORE", sched.next_key(KEYS), "nightly")) == T0 + 14
    finish(conns[0], f"nightly:{T0 + 2}")
    assert run(schedule_tick.tick(conns[1], KEYS, now=T0 + 13)) == []
    assert [o.job_id for o in run(schedule_tick.tick(conns[2], KEYS, now=T0 + 14))] == [
        f"nightly:{T0 + 14}"
    ]
    assert stream_jobs(conns[0]) == [f"nightly:{T0}", f"nightly:{T0 + 2}", f"nightly:{T0 + 14}"]


def test_run_in_progress_is_not_started_twice(conns: list[SyncRedis]) -> None:
    add(conns[0], every=2)
    assert [o.result for o in run(schedule_tick.tick(conns[0], KEYS, now=T0))] == ["enqueued"]
    # still queued (no worker took it): the next tick is skipped
    assert [o.result for o in run(schedule_tick.tick(conns[1], KEYS, now=T0 + 2))] == ["skipped"]
    conns[0].call("HSET", KEYS.job(f"nightly:{T0}"), "status", "running")
    assert [o.result for o in run(schedule_tick.tick(conns[2], KEYS, now=T0 + 4))] == ["skipped"]
    finish(conns[0], f"nightly:{T0}", "failed")  # any end, even a failure, frees the schedule
    assert [o.job_id for o in run(schedule_tick.tick(conns[3], KEYS, now=T0 + 6))] == [
        f"nightly:{T0 + 6}"
    ]
    assert stream_jobs(conns[0]) == [f"nightly:{T0}", f"nightly:{T0 + 6}"]
    state = run(sched.describe(conns[0], KEYS))[0]
    assert state["runs"] == 2 and state["skipped"] == 2
    assert state["last_job"] == f"nightly:{T0 + 6}" and state["last_status"] == "queued"


def test_pause_resume_and_rm(conns: list[SyncRedis]) -> None:
    add(conns[0], every=2)
    assert run(sched.set_paused(conns[0], KEYS, "nightly", True, now=T0 - 1)) is None
    for second in range(0, 10):
        assert run(schedule_tick.tick(conns[second % 5], KEYS, now=T0 + second)) == []
    assert stream_jobs(conns[0]) == []
    listed = run(sched.describe(conns[0], KEYS))
    assert listed[0]["paused"] is True and listed[0]["next_run"] is None
    # resuming does not replay what was missed while paused
    assert run(sched.set_paused(conns[0], KEYS, "nightly", False, now=T0 + 10)) == T0 + 12
    assert run(schedule_tick.tick(conns[1], KEYS, now=T0 + 11)) == []
    assert [o.job_id for o in run(schedule_tick.tick(conns[1], KEYS, now=T0 + 12))] == [
        f"nightly:{T0 + 12}"
    ]
    # a daemon that read the due list just before a pause does not enqueue
    finish(conns[0], f"nightly:{T0 + 12}")
    now, due = run(schedule_tick.read_due(conns[2], KEYS, now=T0 + 14))
    run(sched.set_paused(conns[0], KEYS, "nightly", True, now=T0 + 14))
    assert run(schedule_tick.claim(conns[2], KEYS, due[0], now)).result == "stale"
    # rm: gone from every key; a second rm says so
    assert run(sched.remove(conns[0], KEYS, "nightly")) is True
    assert run(sched.remove(conns[0], KEYS, "nightly")) is False
    for key in (KEYS.schedules, sched.next_key(KEYS), sched.last_key(KEYS)):
        assert conns[0].call("EXISTS", key) == 0
    assert stream_jobs(conns[0]) == [f"nightly:{T0 + 12}"]


def test_put_refuses_a_taken_name_unless_replacing(conns: list[SyncRedis]) -> None:
    add(conns[0], every=2)
    with pytest.raises(sched.ScheduleError, match="exists"):
        add(conns[0], every=4)
    add(conns[0], every=4, replace=True)
    assert float(conns[0].call("ZSCORE", sched.next_key(KEYS), "nightly")) == T0


def test_queue_and_cron_runs(conns: list[SyncRedis]) -> None:
    add(conns[0], "edge", cron="*/5 * * * *", queue="dc1", now=T0)
    assert run(schedule_tick.tick(conns[0], KEYS, now=T0 + 299)) == []
    got = run(schedule_tick.tick(conns[1], KEYS, now=T0 + 300))
    assert [o.job_id for o in got] == [f"edge:{T0 + 300}"]
    assert stream_jobs(conns[0], "dc1") == [f"edge:{T0 + 300}"]
    assert stream_jobs(conns[0]) == []
    assert _text(conns[0].call("HGET", KEYS.job(f"edge:{T0 + 300}"), "queue")) == "dc1"
    assert float(conns[0].call("ZSCORE", sched.next_key(KEYS), "edge")) == T0 + 600


def test_tick_uses_redis_clock_and_a_dangling_entry_is_dropped(conns: list[SyncRedis]) -> None:
    conns[0].call("ZADD", sched.next_key(KEYS), 1, "ghost")  # no record: cleaned up
    add(conns[0], every=3600, now=time.time())
    before = time.time()
    now, due = run(schedule_tick.read_due(conns[0], KEYS))
    after = time.time()
    # Redis's TIME (whole seconds), read during the call, on the same host clock
    assert int(before) <= now <= after, (before, now, after)
    assert [d.name for d in due] == ["ghost"]
    assert [o.result for o in run(schedule_tick.tick(conns[0], KEYS))] == ["gone"]
    assert conns[0].call("ZSCORE", sched.next_key(KEYS), "ghost") is None
    # a record that does not parse is taken off the run list, not retried every second
    conns[0].call("HSET", KEYS.schedules, "broken", "{not json")
    conns[0].call("ZADD", sched.next_key(KEYS), 1, "broken")
    assert [o.result for o in run(schedule_tick.tick(conns[0], KEYS))] == ["invalid"]
    assert run(schedule_tick.tick(conns[0], KEYS)) == []
    assert "error" in run(sched.describe(conns[0], KEYS))[0]


# --------------------------------------------------------------------------- CLI


def listed(redis_server: RedisServer) -> list[dict[str, Any]]:
    out = vscan(redis_server, "schedule", "list", "--json").stdout
    return [json.loads(line) for line in out.splitlines()]


def test_cli_schedule_commands(redis_server: RedisServer) -> None:
    out = vscan(
        redis_server, "schedule", "add", "web", "--every", "1h", "127.0.0.1:80", "-p", "80"
    ).stdout
    assert out.startswith("schedule web: every 3600s, next run ")
    vscan(redis_server, "schedule", "add", "db", "--cron", "0 3 * * mon", "127.0.0.1", "-p", "22")
    taken = vscan(redis_server, "schedule", "add", "db", "--every", "5", "127.0.0.1", check=False)
    assert taken.returncode == 2 and "exists" in taken.stderr
    bad = vscan(redis_server, "schedule", "add", "x", "--cron", "0 0 30 2 *", "::1", check=False)
    assert bad.returncode == 2 and "never runs" in bad.stderr
    bad = vscan(redis_server, "schedule", "add", "x", "--every", "5", "127.0.0.1", "-p", "99999",
                check=False)  # fmt: skip
    assert bad.returncode == 2 and "ports" in bad.stderr
    vscan(redis_server, "schedule", "pause", "db")
    rows = listed(redis_server)
    assert [(r["name"], r["paused"], r["cron"], r["every"]) for r in rows] == [
        ("db", True, "0 3 * * mon", None),
        ("web", False, None, 3600),
    ]
    assert rows[1]["next_run"].endswith(":00:00Z")
    table = vscan(redis_server, "schedule", "list").stdout
    assert "paused" in table and "127.0.0.1:80 -p 80" in table
    vscan(redis_server, "schedule", "resume", "db")
    vscan(redis_server, "schedule", "rm", "web")
    missing = vscan(redis_server, "schedule", "rm", "web", check=False)
    assert missing.returncode == 1 and "no schedule" in missing.stderr
    rows = listed(redis_server)
    assert [(r["name"], r["paused"]) for r in rows] == [("db", False)]


# --------------------------------------------------------------------------- daemons


@pytest.mark.daemon
def test_two_daemons_run_a_schedule_once_per_tick(
    redis_server: RedisServer, daemons: Daemons, listen: Listeners, matcher: Matcher
) -> None:
    redis = Redis(redis_server)
    server = listen(banner(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"))
    first, second = daemons.start("sched-a"), daemons.start("sched-b")
    every = 2
    before_add = time.time()
    vscan(redis_server, "schedule", "add", "pulse", "--every", str(every), server.endpoint)
    started = time.time()
    time.sleep(10)
    after_sleep = time.time()
    vscan(redis_server, "schedule", "pause", "pulse")
    stopped = time.time()
    elapsed = stopped - started
    entries = redis("XRANGE", "vscand:jobs", "-", "+") or []
    ids = [json.loads(fields[1])["id"] for _entry, fields in entries]
    assert len(ids) == len(set(ids)), f"a tick was enqueued twice: {ids}"
    ticks = sorted(int(job_id.split(":")[1]) for job_id in ids)
    state = pairs(redis("HGETALL", "vscand:schedule:pulse"))
    runs = int(state.get("runs", 0))
    print("schedule pulse:", ticks, state, elapsed)
    assert runs == len(ids)
    # every tick claimed exactly once (run or skipped), and the window's ticks, from the grid
    # and the tick period, not from this machine's speed
    assert_schedule_window(
        ticks,
        state,
        before_add=before_add,
        after_add=started,
        after_sleep=after_sleep,
        stopped=stopped,
        every=every,
        scan_bound=matcher.db.find("NULL", "TCP").totalwaitms / 1000,
    )
    for job_id in ids:
        wait_for(lambda j=job_id: redis.status(j) == "done", 20, what=f"{job_id} done")
        assert redis.job(job_id)["schedule"] == "pulse"
        assert [r["service"]["name"] for r in redis.results(job_id)] == ["ssh"]
    enqueued_by = Counter(
        d.name for d in (first, second) for m in d.messages() if "schedule pulse: enqueued" in m
    )
    assert sum(enqueued_by.values()) == runs, enqueued_by
