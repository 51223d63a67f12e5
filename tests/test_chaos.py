"""Chaos for the daemon: real ``redis-server`` (append-only, fsync always, so a killed
Redis keeps what it acknowledged), daemons as ``twist vscand`` subprocesses, loopback
banner servers as targets.

Each scenario submits many one-port jobs, breaks something while they run, and then
counts: submitted, completed (``done`` with exactly one result), dead-lettered (with a
reason), duplicated (a job with more than one result, or a port result written twice).
Nothing may be lost and nothing acknowledged without its results; while the chaos runs,
entries the group has acknowledged are sampled and must belong to finished jobs.

The short variants run in ``make test``; ``make soak`` runs the long ones (marker
``soak``) and BENCHMARKS.md records them.
"""

from __future__ import annotations

import os
import random
import signal
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from tests.daemon_harness import (
    FTP_BANNER,
    SMTP_BANNER,
    SSH_BANNER,
    Daemon,
    Daemons,
    Listeners,
    Redis,
    banner,
    daemons_fixture,
    wait_for,
)
from tests.redis_server import REDIS_SERVER, RedisServer
from tests.sync_redis import RedisReplyError, SyncRedis
from vscand.queue.keys import Keys

pytestmark = pytest.mark.daemon
KEYS = Keys()

SOAK = os.environ.get("VSCAND_SOAK") == "1"


@pytest.fixture
def durable_redis(tmp_path: Path) -> Iterator[RedisServer]:
    if not os.path.exists(REDIS_SERVER):
        pytest.fail("redis-server is not installed (the Makefile installs it)")
    server = RedisServer(
        tmp_path,
        "--appendonly", "yes", "--appendfsync", "always",
        "--enable-debug-command", "yes",
    )  # fmt: skip
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def redis(durable_redis: RedisServer) -> Redis:
    return Redis(durable_redis)


@pytest.fixture
def daemons(durable_redis: RedisServer, tmp_path: Path) -> Iterator[Daemons]:
    pool_iter = daemons_fixture(durable_redis, tmp_path)
    pool = next(pool_iter)
    try:
        yield pool
    finally:
        print(pool.logs())
        next(pool_iter, None)


@pytest.fixture
def targets() -> Iterator[list[str]]:
    listeners = Listeners()
    try:
        servers = [listeners(banner(b)) for b in (SSH_BANNER, FTP_BANNER, SMTP_BANNER) * 4]
        yield [s.endpoint for s in servers]
    finally:
        listeners.close()


# --------------------------------------------------------------------------- accounting


@dataclass
class Ledger:
    redis: Redis
    endpoints: list[str]
    prefix: str
    submitted: list[str] = field(default_factory=list)
    entries: dict[str, str] = field(default_factory=dict)  # entry id -> job id
    acked_checked: int = 0
    violations: list[str] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def submit(self, count: int) -> None:
        """XADD *count* one-port jobs (retrying while Redis is down: a producer would)."""
        for _ in range(count):
            with self.lock:
                n = len(self.submitted)
            job_id = f"{self.prefix}-{n}"
            endpoint = self.endpoints[n % len(self.endpoints)]
            raw = f'{{"id": "{job_id}", "endpoints": ["{endpoint}"]}}'.encode()
            deadline = time.monotonic() + 30
            while True:
                try:
                    entry = self.redis("XADD", "vscand:jobs", "*", "job", raw)
                    break
                except Exception:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.2)
            with self.lock:
                self.entries[entry.decode()] = job_id
                self.submitted.append(job_id)


def submit_jobs(redis: Redis, endpoints: list[str], count: int, prefix: str) -> Ledger:
    ledger = Ledger(redis, endpoints, prefix)
    ledger.submit(count)
    return ledger


def check_acknowledged(redis: Redis, ledger: Ledger, sample: int = 40) -> None:
    """Entries the group delivered and no longer holds were acknowledged: their jobs must
    have ended, a ``done`` one with its result."""
    try:
        conn = SyncRedis(redis.server.port)
    except OSError:
        return  # Redis is down right now: nothing to sample
    try:
        groups = conn.call("XINFO", "GROUPS", "vscand:jobs") or []
        info = {}
        for raw in groups:
            fields = {raw[i].decode(): raw[i + 1] for i in range(0, len(raw) - 1, 2)}
            if fields.get("name") == b"vscand":
                info = fields
        last = info.get("last-delivered-id")
        if not last:
            return
        last_ms, last_seq = (int(x) for x in last.decode().split("-"))
        pending = {
            e.decode() for e, *_ in conn.call("XPENDING", "vscand:jobs", "vscand", "-", "+", 100000)
        }
        with ledger.lock:  # the chaos thread submits more jobs meanwhile
            entries = dict(ledger.entries)
        delivered = [
            e
            for e in entries
            if tuple(int(x) for x in e.split("-")) <= (last_ms, last_seq) and e not in pending
        ]
        for entry in random.sample(delivered, min(sample, len(delivered))):
            job_id = entries[entry]
            status = conn.call("HGET", KEYS.job(job_id), "status")
            results = int(conn.call("XLEN", KEYS.job_results(job_id)))
            ledger.acked_checked += 1
            if status == b"done" and results != 1:
                ledger.violations.append(f"{job_id} acknowledged done with {results} results")
            elif status not in (b"done", b"failed"):
                ledger.violations.append(f"{job_id} acknowledged while {status!r}")
    except (OSError, RedisReplyError):
        pass  # Redis is down or still loading right now: nothing to sample
    finally:
        conn.close()


@dataclass
class Count:
    submitted: int
    completed: int
    dead_lettered: int
    duplicated: int
    unfinished: list[str]


def account(redis: Redis, ledger: Ledger) -> Count:
    conn = SyncRedis(redis.server.port)
    try:
        completed = duplicated = 0
        unfinished = []
        failed = set()
        for job_id in ledger.submitted:
            status = conn.call("HGET", KEYS.job(job_id), "status")
            results = int(conn.call("XLEN", KEYS.job_results(job_id)))
            if results > 1:
                duplicated += 1
            if status == b"done" and results == 1:
                completed += 1
            elif status == b"failed":
                failed.add(job_id)
            else:
                unfinished.append(f"{job_id}:{status!r}:{results}")
        dead = conn.call("XRANGE", "vscand:dead", "-", "+") or []
        dead_jobs = set()
        for _entry, fields in dead:
            values = {fields[i].decode(): fields[i + 1] for i in range(0, len(fields), 2)}
            dead_jobs.add(ledger.entries.get((values.get("entry") or b"").decode(), "?"))
        assert failed <= dead_jobs, f"failed without a dead letter: {failed - dead_jobs}"
        return Count(len(ledger.submitted), completed, len(failed), duplicated, unfinished)
    finally:
        conn.close()


def run_until_done(
    redis: Redis,
    ledger: Ledger,
    chaos: Callable[[threading.Event], None],
    timeout: float,
) -> Count:
    """Run *chaos* in a thread to its end, then until every job has ended (or *timeout*),
    sampling acknowledged entries meanwhile; the final count. *chaos* may submit more jobs
    (``ledger.submit``) so that work keeps arriving while it breaks things."""
    stop = threading.Event()
    worker = threading.Thread(target=chaos, args=(stop,), daemon=True)
    worker.start()
    deadline = time.monotonic() + timeout
    try:
        while time.monotonic() < deadline:
            check_acknowledged(redis, ledger)
            if not worker.is_alive() and _all_ended(redis, ledger):
                break
            time.sleep(0.5)
    finally:
        stop.set()
        worker.join(60)
    deadline = time.monotonic() + 60
    while not _all_ended(redis, ledger) and time.monotonic() < deadline:
        time.sleep(0.5)
    count = account(redis, ledger)
    if count.unfinished:
        first = count.unfinished[0].split(":")[0]
        print("unfinished:", count.unfinished[:10], redis.job(first), redis.pending()[:10])
    print(
        f"submitted {count.submitted}, completed {count.completed}, dead-lettered "
        f"{count.dead_lettered}, duplicated {count.duplicated}, acknowledged entries checked "
        f"{ledger.acked_checked}"
    )
    assert not ledger.violations, ledger.violations[:10]
    assert not count.unfinished, count.unfinished[:10]
    wait_for(lambda: redis.pending_count() == 0, 30, 0.2, "nothing pending")
    assert count.duplicated == 0
    assert count.completed + count.dead_lettered == count.submitted
    return count


def _all_ended(redis: Redis, ledger: Ledger) -> bool:
    try:
        conn = SyncRedis(redis.server.port)
    except OSError:
        return False
    try:
        for job_id in ledger.submitted:
            if conn.call("HGET", KEYS.job(job_id), "status") not in (b"done", b"failed"):
                return False
        return True
    except (OSError, RedisReplyError):
        return False
    finally:
        conn.close()


def chaos_daemons(daemons: Daemons, count: int, *options: str) -> list[Daemon]:
    return [
        daemons.start(f"chaos-{i}", "--max-deliveries", "20", *options, job_idle_ms=2000)
        for i in range(count)
    ]


# --------------------------------------------------------------------------- scenarios


def test_kill9_workers_in_a_loop_while_1000_jobs_run(
    redis: Redis, daemons: Daemons, targets: list[str]
) -> None:
    jobs = 5000 if SOAK else 1000
    running = chaos_daemons(daemons, 3)
    ledger = submit_jobs(redis, targets, jobs * 4 // 10, "kill")  # + 6 x 10% during the kills
    kills = []

    def killer(stop: threading.Event) -> None:
        rng = random.Random(7)
        for _ in range(12 if SOAK else 6):
            if stop.wait(rng.uniform(0.5, 1.5)):
                return
            ledger.submit(jobs // 10)
            index = rng.randrange(len(running))
            victim = running[index]
            victim.signal(signal.SIGKILL)
            victim.wait_exit(10)
            kills.append(victim.name)
            # the same consumer name: it resumes its own pending entries first
            running[index] = daemons.start(victim.name, "--max-deliveries", "20", job_idle_ms=2000)

    count = run_until_done(redis, ledger, killer, timeout=600 if SOAK else 240)
    print(f"{len(kills)} kill -9s")
    assert len(kills) == (12 if SOAK else 6)
    assert count.dead_lettered == 0


def test_redis_killed_and_restarted_twice(
    durable_redis: RedisServer, redis: Redis, daemons: Daemons, targets: list[str]
) -> None:
    jobs = 2000 if SOAK else 400
    chaos_daemons(daemons, 2)
    ledger = submit_jobs(redis, targets, jobs, "rk")

    def redis_killer(stop: threading.Event) -> None:
        for _ in range(2):
            if stop.wait(1.5):
                return
            durable_redis.kill()
            time.sleep(2.0)
            durable_redis.start()
            ledger.submit(jobs // 4)

    count = run_until_done(redis, ledger, redis_killer, timeout=300)
    assert count.dead_lettered == 0


def test_debug_sleep_client_kill_mid_read_and_refused_writes(
    durable_redis: RedisServer, redis: Redis, daemons: Daemons, targets: list[str]
) -> None:
    """Redis stalls (``DEBUG SLEEP`` past the daemons' 2 s command timeout), drops every
    client connection (the reader blocked in ``XREADGROUP`` included), and refuses writes
    (``maxmemory`` at what it uses, ``noeviction``) while jobs run."""
    jobs = 2000 if SOAK else 400
    chaos_daemons(daemons, 2)
    ledger = submit_jobs(redis, targets, jobs, "mix")
    refused = []

    def troubles(stop: threading.Event) -> None:
        if stop.wait(1.0):
            return
        redis.try_call("DEBUG", "SLEEP", "3")
        ledger.submit(jobs // 4)
        for _ in range(5):
            if stop.wait(0.5):
                return
            redis.try_call("CLIENT", "KILL", "TYPE", "normal", "SKIPME", "yes")
            ledger.submit(jobs // 20)
        used = int(
            dict(
                line.split(":", 1)
                for line in redis("INFO", "memory").decode().splitlines()
                if ":" in line
            )["used_memory"]
        )
        redis("CONFIG", "SET", "maxmemory-policy", "noeviction")
        redis("CONFIG", "SET", "maxmemory", str(used))
        try:
            redis("XADD", "vscand:probe-oom", "*", "x", "y" * 4096)
        except Exception as exc:  # the refusal the daemons see too
            refused.append(str(exc))
        stop.wait(3.0)
        redis("CONFIG", "SET", "maxmemory", "0")
        ledger.submit(jobs // 4)
        if stop.wait(0.5):
            return
        redis.try_call("DEBUG", "SLEEP", "3")

    count = run_until_done(redis, ledger, troubles, timeout=120)
    print("write refused with:", refused)
    assert refused and "OOM" in refused[0]
    assert count.dead_lettered == 0
