"""Staleness rescans (``stale_after``, ``vscan submit --stale``, ``vscan schedule add
--stale``) end to end: a real redis-server, a real ``twist vscand``, loopback services.

An inventory entry is made old by rewriting its ``scanned_at`` in Redis (as if that scan
had run two hours ago); everything else is what the daemon itself wrote."""

from __future__ import annotations

import json
import time
from typing import Any

import pytest

from tests.daemon_harness import (
    FTP_BANNER,
    SSH_BANNER,
    Daemons,
    Listeners,
    Redis,
    delayed_banner,
    vscan,
    wait_for,
)
from tests.e2e.servers import ClosedPort
from tests.redis_server import RedisServer

pytestmark = pytest.mark.daemon

INVENTORY = "vscand:inventory:127.0.0.1"
POLICY = ("--allow", "127.0.0.0/8", "--deny", "127.0.0.2/32")


@pytest.fixture
def redis(redis_server: RedisServer) -> Redis:
    return Redis(redis_server)


def _iso(unix: float) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(unix))


def age(redis: Redis, key: str, field: str, seconds: float) -> None:
    """Make one inventory entry look *seconds* old."""
    entry = json.loads(redis("HGET", key, field))
    entry["scanned_at"] = _iso(time.time() - seconds)
    redis("HSET", key, field, json.dumps(entry))


def scanned_at(redis: Redis, field: str) -> str:
    value: str = json.loads(redis("HGET", INVENTORY, field))["scanned_at"]
    return value


def submit_and_wait(redis_server: RedisServer, *args: str) -> None:
    vscan(redis_server, "submit", *args, "--wait", "--timeout", "60")


def ports_of(redis: Redis, job_id: str) -> list[tuple[int, str]]:
    return sorted((int(r["port"]), r["state"]) for r in redis.results(job_id))


def change_kinds(redis: Redis) -> list[tuple[int, str]]:
    entries: list[Any] = redis("XRANGE", "vscand:changes", "-", "+") or []
    kinds = []
    for _id, raw in entries:
        fields = {raw[i].decode(): raw[i + 1].decode() for i in range(0, len(raw), 2)}
        kinds.append((int(fields["port"]), fields["kind"]))
    return kinds


def test_a_staleness_rescan_scans_exactly_the_old_entries(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    old = listen(delayed_banner(SSH_BANNER, 0.0))
    fresh = listen(delayed_banner(FTP_BANNER, 0.0))
    stopped = listen(delayed_banner(SSH_BANNER, 0.0))
    daemons.start("stale:1", *POLICY)
    submit_and_wait(redis_server, old.endpoint, fresh.endpoint, stopped.endpoint, "--id", "first")
    assert ports_of(redis, "first") == sorted((s.port, "open") for s in (old, fresh, stopped))
    assert sorted(change_kinds(redis)) == sorted((s.port, "opened") for s in (old, fresh, stopped))
    # two hours pass for two of them; one stops meanwhile
    age(redis, INVENTORY, f"{old.port}/tcp", 7200)
    age(redis, INVENTORY, f"{stopped.port}/tcp", 7200)
    stopped.close()
    # an old entry of an address this daemon's policy refuses: left out, job not failed
    denied = {**json.loads(redis("HGET", INVENTORY, f"{old.port}/tcp")), "host": "127.0.0.2"}
    redis("HSET", "vscand:inventory:127.0.0.2", "22/tcp", json.dumps(denied))
    redis("SADD", "vscand:inventory-hosts", "127.0.0.2")
    fresh_at = scanned_at(redis, f"{fresh.port}/tcp")

    submit_and_wait(redis_server, "--stale", "1h", "--id", "rescan")
    job = redis.job("rescan")
    assert job["status"] == "done", job
    assert job["ports_total"] == "2", job
    assert ports_of(redis, "rescan") == sorted([(old.port, "open"), (stopped.port, "closed")])
    # the rescan refreshed what it scanned, left the fresh entry alone, and reported the one
    # change (the stopped service) and nothing for the unchanged one
    assert time.time() - 600 < _parse(scanned_at(redis, f"{old.port}/tcp"))
    assert scanned_at(redis, f"{fresh.port}/tcp") == fresh_at
    assert change_kinds(redis)[3:] == [(stopped.port, "closed")]
    assert (
        json.loads(redis("HGET", "vscand:inventory:127.0.0.2", "22/tcp"))["scanned_at"]
        == (denied["scanned_at"])
    )
    logs = daemons.logs()
    assert "staleness rescan of 2 inventory entries" in logs
    assert "1 refused by the target policy" in logs

    # narrowed by address: only 127.0.0.1's old entries, here none
    age(redis, INVENTORY, f"{fresh.port}/tcp", 7200)
    submit_and_wait(redis_server, "--stale", "1h", "127.0.0.3/32", "--id", "narrow-none")
    assert redis.job("narrow-none")["status"] == "done"
    assert redis.job("narrow-none").get("ports_total", "0") == "0"
    submit_and_wait(redis_server, "--stale", "90m", "127.0.0.0/24", "--id", "narrow")
    assert ports_of(redis, "narrow") == [(fresh.port, "open")]


def test_a_scheduled_staleness_rescan(
    redis_server: RedisServer, redis: Redis, daemons: Daemons, listen: Listeners
) -> None:
    server = listen(delayed_banner(SSH_BANNER, 0.0))
    closed = ClosedPort()
    daemons.start("stale:2", *POLICY)
    submit_and_wait(redis_server, server.endpoint, f"127.0.0.1:{closed.port}", "--id", "seed")
    age(redis, INVENTORY, f"{closed.port}/tcp", 3 * 86400)
    vscan(redis_server, "schedule", "add", "stale", "--every", "2", "--stale", "1d")
    listing = vscan(redis_server, "schedule", "list").stdout
    assert "stale>86400s" in listing, listing

    def a_run_done() -> str | None:
        raw = redis("HGET", "vscand:schedule:stale", "last_job")
        job = raw.decode() if raw else None
        return job if job and redis.status(job) == "done" else None

    first = wait_for(a_run_done, 30, what="a scheduled staleness run")
    assert ports_of(redis, first) == [(closed.port, "closed")]
    second = wait_for(
        lambda: (j := a_run_done()) is not None and j != first and j, 30, what="a second run"
    )
    vscan(redis_server, "schedule", "pause", "stale")
    assert isinstance(second, str)
    assert ports_of(redis, second) == []  # everything is fresh now
    closed.close()


def test_staleness_rescan_command_line_errors(redis_server: RedisServer) -> None:
    for args, message in (
        ((), "give at least one TARGET (or --stale AGE"),
        (("--stale", "1h", "127.0.0.1:22"), "no HOST:PORT and no -p"),
        (("--stale", "1h", "-p", "22"), "no HOST:PORT and no -p"),
        (("--stale", "soon"), "--stale 'soon': write whole seconds"),
        (("--stale", "30"), "stale_after: 30 is out of range (60-"),
        (("--stale", "1h", "localhost"), "narrowed by addresses and networks only"),
    ):
        proc = vscan(redis_server, "submit", *args, check=False)
        assert proc.returncode == 2, (args, proc.stdout, proc.stderr)
        assert message in proc.stderr, (args, proc.stderr)


def _parse(value: str) -> float:
    return time.mktime(time.strptime(value, "%Y-%m-%dT%H:%M:%SZ")) - time.timezone
