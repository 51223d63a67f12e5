"""Prometheus metrics (``metrics_port``): the exposition of :class:`DaemonMetrics`, and a
real ``twist vscand --metrics-port`` scraped over loopback after one job.

``promtool check metrics`` (Debian package ``prometheus``, in the Makefile's
APT_PACKAGES) lints what is served; without promtool those checks skip, except under
``CI=true`` where they fail.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import urllib.request
from typing import Any

import pytest
from prometheus_client.parser import text_string_to_metric_families
from twisted.internet.task import Clock
from twisted.web.test.requesthelper import DummyRequest

from tests.daemon_harness import (
    SSH_BANNER,
    Daemons,
    Listeners,
    Redis,
    assert_loopback_job,
    banner,
    wait_for,
)
from tests.e2e.servers import ClosedPort
from tests.loopback import free_port
from tests.redis_server import RedisServer
from vscand.daemon.metrics import CONTENT_TYPE, DaemonMetrics, MetricsPage
from vscand.scan.lag import ReactorLagMonitor


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of an exposition: (name, sorted labels) -> value."""
    out = {}
    for family in text_string_to_metric_families(text):
        for s in family.samples:
            out[(s.name, tuple(sorted(s.labels.items())))] = s.value
    return out


def promtool() -> str:
    path = shutil.which("promtool")
    if path is None:
        if os.environ.get("CI") == "true":
            pytest.fail("promtool is missing (Debian package prometheus; make system-deps)")
        pytest.skip("promtool not installed (Debian package prometheus)")
    return path


def promtool_check(text: str) -> None:
    proc = subprocess.run(
        [promtool(), "check", "metrics"],
        input=text,
        capture_output=True,
        text=True,
        timeout=30,
        check=False,
    )
    assert proc.returncode == 0, (proc.stdout, proc.stderr, text)


def open_result(probe: str = "NULL") -> dict[str, Any]:
    return {
        "state": "open",
        "reason": "syn-ack",
        "final_state": "hardmatched",
        "matches": [
            {"probe": "NULL", "matched_probe": "NULL", "line": 10, "soft": True},
            {"probe": probe, "matched_probe": probe, "line": 20, "soft": False},
        ],
    }


# --------------------------------------------------------------------------- unit


def test_exposition_counts_jobs_ports_matches_timeouts_and_writes() -> None:
    m = DaemonMetrics()
    m.job_ended("done")
    m.job_ended("done")
    m.job_ended("dead_lettered")
    m.port_result(open_result("GetRequest"))
    m.port_result(open_result("NULL"))
    m.port_result({"state": "closed", "reason": "conn-refused"})
    m.port_result({"state": "filtered", "reason": "no-response"})
    m.port_result({"state": "open", "reason": "syn-ack", "final_state": "incomplete"})
    assert m.result_written(True) is True
    assert m.result_written(False) is False  # fenced off: not stored, not counted
    with pytest.raises(ValueError, match="unknown job outcome"):
        m.job_ended("vanished")

    got = samples(m.exposition().decode())
    assert got[("vscand_jobs_total", (("outcome", "done"),))] == 2
    assert got[("vscand_jobs_total", (("outcome", "dead_lettered"),))] == 1
    for outcome in ("failed", "cancelled", "released"):  # exported at 0 from the start
        assert got[("vscand_jobs_total", (("outcome", outcome),))] == 0
    assert got[("vscand_ports_total", (("state", "open"),))] == 3
    assert got[("vscand_ports_total", (("state", "closed"),))] == 1
    assert got[("vscand_ports_total", (("state", "filtered"),))] == 1
    # the probe whose line matched last, not every probe in the trace
    assert got[("vscand_matches_total", (("probe", "GetRequest"),))] == 1
    assert got[("vscand_matches_total", (("probe", "NULL"),))] == 1
    assert got[("vscand_timeouts_total", ())] == 2
    assert got[("vscand_results_written_total", ())] == 1


def test_gauges_and_lag_histogram_take_only_new_samples() -> None:
    clock = Clock()
    # the reactor thread's CPU wait so far: 20 ms of the second tick's 30 ms lag
    waits = iter([0.5, 0.5, 0.52, 0.52])
    lag = ReactorLagMonitor(clock, interval=0.02, cpu_wait=lambda: next(waits))
    lag.start()
    clock.advance(0.02)  # on time
    clock.advance(0.05)  # 30 ms late
    m = DaemonMetrics()
    m.observe_local(
        jobs_in_flight=2,
        ports_in_flight=30,
        connections_in_flight=25,
        progress_age=1.5,
        lag=lag,
    )
    m.observe_queue(depth=7, pending=3)
    got = samples(m.exposition().decode())
    assert got[("vscand_jobs_in_flight", ())] == 2
    assert got[("vscand_ports_in_flight", ())] == 30
    assert got[("vscand_connections_in_flight", ())] == 25
    assert got[("vscand_last_progress_age_seconds", ())] == 1.5
    assert got[("vscand_queue_depth", ())] == 7
    assert got[("vscand_pending", ())] == 3
    assert got[("vscand_reactor_lag_seconds", ())] == pytest.approx(0.03)
    assert got[("vscand_reactor_lag_samples_seconds_count", ())] == 2
    assert got[("vscand_reactor_lag_samples_seconds_bucket", (("le", "0.001"),))] == 1
    assert got[("vscand_reactor_lag_samples_seconds_bucket", (("le", "0.02"),))] == 1
    # the blocked lag: 30 ms less the 20 ms the thread waited for a CPU
    assert got[("vscand_reactor_blocked_samples_seconds_count", ())] == 2
    assert got[("vscand_reactor_blocked_samples_seconds_bucket", (("le", "0.001"),))] == 1
    assert got[("vscand_reactor_blocked_samples_seconds_bucket", (("le", "0.02"),))] == 2
    assert got[("vscand_reactor_cpu_wait_seconds", ())] == pytest.approx(0.02)

    # a second refresh with no tick in between observes nothing twice
    m.observe_local(
        jobs_in_flight=0, ports_in_flight=0, connections_in_flight=0, progress_age=0, lag=lag
    )
    clock.advance(0.01)
    m.observe_local(
        jobs_in_flight=0, ports_in_flight=0, connections_in_flight=0, progress_age=0, lag=lag
    )
    got = samples(m.exposition().decode())
    assert got[("vscand_reactor_lag_samples_seconds_count", ())] == 3
    lag.stop()
    assert not clock.getDelayedCalls()


def test_registries_are_private() -> None:
    a, b = DaemonMetrics(), DaemonMetrics()
    a.job_ended("done")
    assert samples(b.exposition().decode())[("vscand_jobs_total", (("outcome", "done"),))] == 0


def test_metrics_page_refreshes_then_serves_text_format() -> None:
    m = DaemonMetrics()
    refreshed: list[bool] = []

    def before() -> None:
        refreshed.append(True)
        m.observe_queue(depth=4, pending=1)

    request = DummyRequest([b"metrics"])
    body = MetricsPage(m, before).render_GET(request)  # type: ignore[arg-type]
    assert refreshed == [True]
    assert request.responseHeaders.getRawHeaders(b"content-type") == [CONTENT_TYPE]
    assert samples(body.decode())[("vscand_queue_depth", ())] == 4


def test_exposition_passes_promtool() -> None:
    m = DaemonMetrics()
    m.job_ended("done")
    m.port_result(open_result("GetRequest"))
    m.result_written(True)
    promtool_check(m.exposition().decode())


# --------------------------------------------------------------------------- daemon


def scrape(port: int) -> str:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as response:
        assert response.status == 200
        assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
        text: str = response.read().decode()
        return text


@pytest.mark.daemon
def test_daemon_serves_metrics_that_move_with_a_job(
    redis_server: RedisServer, daemons: Daemons, listen: Listeners
) -> None:
    redis = Redis(redis_server)
    ssh = listen(banner(SSH_BANNER))
    closed = ClosedPort()
    port = free_port()
    try:
        daemon = daemons.start("metrics:1", "--metrics-port", str(port))
        before = samples(scrape(port))
        assert before[("vscand_jobs_total", (("outcome", "done"),))] == 0
        assert before[("vscand_jobs_in_flight", ())] == 0

        job = {"id": "metrics-1", "endpoints": [ssh.endpoint, f"127.0.0.1:{closed.port}"]}
        assert_loopback_job(job)
        redis.xadd_job(job)
        wait_for(lambda: redis.status("metrics-1") == "done", 30, 0.1, "the job to finish")

        def moved() -> dict[tuple[str, tuple[tuple[str, str], ...]], float] | None:
            got = samples(scrape(port))
            # the queue gauges follow the heartbeat sent once the job is acknowledged
            done = got[("vscand_jobs_total", (("outcome", "done"),))] == 1
            return got if done and got.get(("vscand_pending", ())) == 0 else None

        got = wait_for(moved, 15, 0.2, "the metrics to show the job")
        assert got[("vscand_ports_total", (("state", "open"),))] == 1
        assert got[("vscand_ports_total", (("state", "closed"),))] == 1
        assert got[("vscand_matches_total", (("probe", "NULL"),))] == 1  # the SSH banner
        assert got[("vscand_results_written_total", ())] == 2
        assert got[("vscand_jobs_in_flight", ())] == 0
        assert got[("vscand_ports_in_flight", ())] == 0
        assert got[("vscand_connections_in_flight", ())] == 0
        assert got[("vscand_queue_depth", ())] == 1  # acknowledged, kept until trimmed
        assert got[("vscand_reactor_lag_samples_seconds_count", ())] > 0
        assert 0 <= got[("vscand_last_progress_age_seconds", ())] < 30
        promtool_check(scrape(port))

        # SIGTERM: the daemon exits cleanly and the metrics port is closed with it
        daemon.signal(signal.SIGTERM)
        # (twist re-raises the signal once stopped cleanly: -SIGTERM, success for systemd)
        assert daemon.wait_exit(30) in (0, -signal.SIGTERM), daemon.tail()
        assert daemon.logged("vscand stopped")
        with pytest.raises(OSError):
            scrape(port)
    finally:
        closed.close()
