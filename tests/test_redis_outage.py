"""A Redis outage in the middle of a job, end to end: a real ``redis-server`` that refuses
writes (``maxmemory`` at what it uses, ``noeviction``: every result write fails with
``OOM``, a ``RedisRefused``), a real daemon (``twist vscand``) scanning a thousand
loopback ports that are closed (bound, never listening: this test holds them).

While the outage lasts the daemon must not flood its log (its warnings are rate-limited:
one line at once per kind, then a count per ``warn_interval``), must stop starting ports
once ``max_pending_writes`` results wait for Redis (backpressure: memory stays bounded),
and when Redis takes writes again the job ends ``done`` with every port's result exactly
once.
"""

from __future__ import annotations

import json
import math
import socket
import time
from collections import Counter
from collections.abc import Iterator
from typing import Any

import pytest

from tests.daemon_harness import Daemon, Daemons, Redis, assert_loopback_job, wait_for
from tests.redis_server import RedisServer
from vscand.queue.keys import Keys

pytestmark = pytest.mark.daemon

PORTS = 1000
CONCURRENCY = 20
MAX_PENDING = 60
WARN_INTERVAL = 2.0
OUTAGE = 6.0
#: RSS may grow this much while the outage lasts: bounded, the daemon holds MAX_PENDING
#: results (~3 MiB of growth measured); unbounded, the same outage grew it by ~58 MiB (one
#: warning per retried write, ~900 results held)
RSS_GROWTH_LIMIT = 25 * 1024 * 1024


@pytest.fixture
def closed_ports() -> Iterator[list[int]]:
    """PORTS ports of 127.0.0.1 that refuse connections: bound (so no other program takes
    them meanwhile), never listening."""
    socks = []
    try:
        for _ in range(PORTS):
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.bind(("127.0.0.1", 0))
            socks.append(sock)
        yield sorted(s.getsockname()[1] for s in socks)
    finally:
        for sock in socks:
            sock.close()


def rss(pid: int) -> int:
    """The process's resident set size in bytes (/proc/PID/status VmRSS)."""
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) * 1024
    raise AssertionError(f"no VmRSS for {pid}")


def warnings(daemon: Daemon) -> list[dict[str, Any]]:
    return [
        e
        for e in daemon.events()
        if isinstance(e.get("log_level"), dict) and e["log_level"].get("name") == "warn"
    ]


def used_memory(redis: Redis) -> int:
    info = redis("INFO", "memory").decode()
    fields = dict(line.split(":", 1) for line in info.splitlines() if ":" in line)
    return int(fields["used_memory"])


def test_outage_warnings_are_rate_limited_and_pending_writes_bounded(
    redis_server: RedisServer, daemons: Daemons, closed_ports: list[int]
) -> None:
    redis = Redis(redis_server)
    daemon = daemons.start(
        "outage:1",
        "--concurrency", str(CONCURRENCY),
        "--connect-rate", "150",
        "--max-pending-writes", str(MAX_PENDING),
        "--warn-interval", str(WARN_INTERVAL),
        job_idle_ms=60_000,
    )  # fmt: skip
    job = {
        "id": "outage",
        "targets": ["127.0.0.1"],
        "ports": ",".join(map(str, closed_ports)),
        "task_ports": PORTS,  # one job, not split into tasks
    }
    assert_loopback_job(job)
    redis.xadd_job(job)
    results_key = Keys().job_results("outage")
    wait_for(lambda: int(redis("XLEN", results_key)) >= 100, 60, 0.05, "the first results")

    before = rss(daemon.pid)
    warned_before = len(warnings(daemon))
    redis("CONFIG", "SET", "maxmemory-policy", "noeviction")
    redis("CONFIG", "SET", "maxmemory", str(used_memory(redis)))
    began = time.monotonic()
    with pytest.raises(Exception, match="OOM"):  # what the daemon's writes get too
        redis("XADD", "vscand:probe-oom", "*", "x", "y" * 4096)
    written_at_start = int(redis("XLEN", results_key))
    peak = before
    while time.monotonic() - began < OUTAGE:
        peak = max(peak, rss(daemon.pid))
        time.sleep(0.1)
    written_during = int(redis("XLEN", results_key)) - written_at_start
    redis("CONFIG", "SET", "maxmemory", "0")
    lasted = time.monotonic() - began

    wait_for(lambda: redis.status("outage") == "done", 120, 0.2, "the job to end done")
    results = redis.results("outage")
    ports = Counter((r["host"], int(r["port"])) for r in results)
    assert set(ports) == {("127.0.0.1", p) for p in closed_ports}
    assert max(ports.values()) == 1, [k for k, n in ports.items() if n > 1][:10]
    assert {r["state"] for r in results} == {"closed"}
    wait_for(lambda: redis.pending_count() == 0, 30, 0.2, "the job's entry acknowledged")

    # the outage really held results back: writes were refused and ports were held
    assert written_during < PORTS - 100, written_during
    assert daemon.logged("new ports wait"), daemon.tail()

    # pending writes stayed at most max_pending_writes (the heartbeat's high-water mark)
    def beat() -> dict[str, Any] | None:
        raw = redis("HGET", "vscand:workers", "outage:1")
        value = json.loads(raw) if raw else None
        return value if value and value.get("jobs_done") else None

    heartbeat = wait_for(beat, 30, 0.2, "a heartbeat after the job")
    assert 0 < heartbeat["pending_writes_peak"] <= MAX_PENDING, heartbeat
    assert heartbeat["max_pending_writes"] == MAX_PENDING, heartbeat

    # rate-limited warnings: per kind, the first at once, then at most one count line per
    # interval (+1 for the interval under way when the outage began, +1 for the one after)
    during = warnings(daemon)[warned_before:]
    kinds = Counter(e.get("warn_kind", "?") for e in during)
    print(f"warnings during the outage ({lasted:.1f}s): {len(during)}, by kind {dict(kinds)}")
    print(f"RSS {before / 2**20:.1f} MiB before, peak {peak / 2**20:.1f} MiB during")
    assert "?" not in kinds, [e for e in during if "warn_kind" not in e][:3]
    per_kind = 1 + math.ceil(lasted / WARN_INTERVAL) + 2
    assert all(n <= per_kind for n in kinds.values()), (kinds, per_kind)
    assert any("more like this" in m for m in daemon.messages()), daemon.tail()
    assert peak - before < RSS_GROWTH_LIMIT, (before, peak)
