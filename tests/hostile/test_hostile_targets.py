"""Hostile targets scanned by a real daemon (``twist vscand``, real ``redis-server``) and
by ``vscan scan`` (after the daemons' jobs, so neither starves the other of CPU), on loopback.

One run serves every assertion: the servers of ``servers.CASES`` start, two daemons
(each with its metrics page) share a Redis, two jobs are queued (the RPC liars at
intensity 7, where the grinder runs; the rest at ``--version-light``, intensity 2),
then ``vscan scan`` scans the same endpoints with ``--run-stats``. Then, per case and
for both scanners: the port ends within its faithful bound (``measure.faithful_bound``,
allowed x1.5 + 30 s). For every scanning process: peak RSS below 600 MiB (from
``/proc``), no reactor-lag sample over 100 ms that the process's own work caused
(the blocked lag: the lag less the thread's wait for a CPU; the daemon's histogram, the
CLI's ``--run-stats``), nothing logged as a failure. For the jobs: never delivered twice nor
held by another consumer (XPENDING sampled throughout), no "lease lost".

``make soak`` (``VSCAND_SOAK=1``) runs the ``soak`` variant: every case at intensity
7 (nmap -sV's default: the drip and silent ports cost ~156 s each), a second run.
"""

from __future__ import annotations

import json
import os
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.daemon_harness import (
    CACHE_DIR,
    VSCAN,
    Daemon,
    Daemons,
    Redis,
    assert_loopback_job,
    warm_prefilter_cache,
)
from tests.hostile.measure import (
    LAG_HISTOGRAM,
    LAG_LIMIT_S,
    RSS_CEILING_MIB,
    PeakRSS,
    allowed,
    error_events,
    faithful_bound,
    lag_buckets,
    lag_samples_over,
    scrape,
)
from tests.hostile.servers import CASES, Case, HostilePool
from tests.loopback import free_port
from tests.redis_server import REDIS_SERVER, RedisServer
from vscand.probes.matcher import Matcher
from vscand.scripts.registry import ScriptSettings

pytestmark = pytest.mark.daemon

SOAK = os.environ.get("VSCAND_SOAK") == "1"
LIGHT = 2  # --version-light
GRIND = 7  # the RPC grinder needs intensity >= 7
#: the version scripts' time per port (the script phase runs after the probes)
SCRIPT_BUDGET_S = ScriptSettings().port_budget


def intensity_of(case: Case, soak: bool) -> int:
    return GRIND if case.scripts or soak else LIGHT


def port_of(endpoint: str) -> int:
    return int(endpoint.split("/", maxsplit=1)[0].rsplit(":", 1)[1])


@dataclass
class Scan:
    """One scanner's view of the run: results per case, costs of its process."""

    results: dict[str, list[dict[str, Any]]] = field(default_factory=dict)
    rss_kib: int = 0
    lag_over: int = 0  # blocked-lag samples over LAG_LIMIT_S
    lag_max_s: float | None = None  # the CLI's largest blocked-lag sample
    raw_lag_over: int = 0  # lag samples over LAG_LIMIT_S, the machine's waits included
    raw_lag_max_s: float | None = None
    wall_s: dict[int, float] = field(default_factory=dict)  # by intensity group
    errors: list[Any] = field(default_factory=list)
    #: the daemons whose lag histogram gained samples over the limit, with its buckets
    errors_lag: list[Any] = field(default_factory=list)


@dataclass
class HostileRun:
    endpoints: dict[str, str]
    daemon: Scan
    cli: Scan
    daemons: list[Daemon]
    deliveries: dict[str, tuple[int, set[str]]]  # entry -> (max delivery count, consumers)
    job_ids: dict[int, str]
    soak: bool


def _pending_watch(
    redis: Redis, stop: threading.Event, seen: dict[str, tuple[int, set[str]]]
) -> None:
    while not stop.is_set():
        for entry, consumer, _idle, count in redis.try_call_pending():
            old_count, consumers = seen.get(entry, (0, set()))
            seen[entry] = (max(old_count, count), consumers | {consumer})
        stop.wait(0.5)


class _Redis(Redis):
    def try_call_pending(self) -> list[tuple[str, str, int, int]]:
        try:
            return self.pending()
        except OSError:
            return []


def _run_cli(
    endpoints: list[str], intensity: int, workdir: Path, scan: Scan, names: dict[int, str]
) -> None:
    stats_path = workdir / f"run-stats-{intensity}.json"
    env = {k: v for k, v in os.environ.items() if k != "VSCAND_REDIS_URL"}
    env["VSCAND_CACHE_DIR"] = CACHE_DIR
    started = time.monotonic()
    proc = subprocess.Popen(
        [VSCAN, "scan", "--json", "--no-progress", "--version-intensity", str(intensity),
         "--run-stats", str(stats_path), *endpoints],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    rss = PeakRSS(proc.pid)
    out, err = proc.communicate(timeout=900)
    scan.wall_s[intensity] = time.monotonic() - started
    rss.stop()
    stats = json.loads(stats_path.read_text())
    scan.rss_kib = max(scan.rss_kib, rss.kib, int(stats["max_rss_kib"]))
    raw = float(stats["reactor_lag_max_seconds"])
    scan.raw_lag_max_s = max(scan.raw_lag_max_s or 0.0, raw)
    scan.raw_lag_over += int(raw > LAG_LIMIT_S)
    blocked = stats["reactor_blocked_max_seconds"]
    lag = raw if blocked is None else float(blocked)
    scan.lag_max_s = max(scan.lag_max_s or 0.0, lag)
    scan.lag_over += int(lag > LAG_LIMIT_S)
    if proc.returncode != 0 or "Traceback" in err:
        scan.errors.append((proc.returncode, err[-2000:]))
    for line in out.splitlines():
        result = json.loads(line)
        scan.results.setdefault(names[int(result["port"])], []).append(result)


@pytest.fixture(scope="module", params=["short", pytest.param("soak", marks=pytest.mark.soak)])
def hostile_run(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[HostileRun]:
    soak = request.param == "soak"
    if soak and not SOAK:
        pytest.skip("soak variant: make soak (VSCAND_SOAK=1)")
    if not os.path.exists(REDIS_SERVER):
        pytest.skip("redis-server is not installed")
    workdir = tmp_path_factory.mktemp("hostile")
    warm_prefilter_cache()
    # and through the CLI's own loader: a `vscan scan` that finds no cache builds the
    # prefilter in-process (~300 MiB at peak, measured), which is start-up, not the
    # hostile server's cost; seen once in a clean clone's first run (478 MiB)
    env = {k: v for k, v in os.environ.items() if k != "VSCAND_REDIS_URL"}
    env["VSCAND_CACHE_DIR"] = CACHE_DIR
    subprocess.run([VSCAN, "probes", "--stats"], env=env, capture_output=True, check=True)
    pool = HostilePool(workdir)
    (workdir / "redis").mkdir()
    server = RedisServer(workdir / "redis")
    fleet = Daemons(server, workdir)
    stop = threading.Event()
    try:
        endpoints = {case.name: case.start(pool) for case in CASES}
        names = {port_of(ep): name for name, ep in endpoints.items()}
        redis = _Redis(server)
        metrics = [free_port(), free_port()]
        daemons = [
            fleet.start(f"hostile:{i}", "--metrics-port", str(port), job_idle_ms=3000)
            for i, port in enumerate(metrics)
        ]
        rss = [PeakRSS(d.pid) for d in daemons]
        lag_before = [lag_samples_over(scrape(port))[0] for port in metrics]
        raw_before = [
            lag_samples_over(scrape(port), histogram=LAG_HISTOGRAM)[0] for port in metrics
        ]

        groups: dict[int, list[str]] = {}
        for case in CASES:
            groups.setdefault(intensity_of(case, soak), []).append(endpoints[case.name])
        deliveries: dict[str, tuple[int, set[str]]] = {}
        watch = threading.Thread(target=_pending_watch, args=(redis, stop, deliveries), daemon=True)
        watch.start()
        job_ids = {}
        for intensity, group in groups.items():
            job = {
                "id": f"hostile-{request.param}-{intensity}",
                "endpoints": group,
                "intensity": intensity,
            }
            assert_loopback_job(job)
            redis.xadd_job(job)
            job_ids[intensity] = job["id"]
        daemon_started = time.monotonic()

        daemon = Scan()
        deadline = time.monotonic() + (1200 if soak else 600)
        pending = dict(job_ids)
        while pending and time.monotonic() < deadline:
            for intensity, job_id in list(pending.items()):
                if redis.status(job_id) in ("done", "failed", "cancelled"):
                    daemon.wall_s[intensity] = time.monotonic() - daemon_started
                    del pending[intensity]
            time.sleep(0.2)
        assert not pending, f"jobs did not end: {pending}\n{fleet.logs()}"
        # vscan scan afterwards, not alongside: on 2 shared cores, two daemons, two CLIs,
        # the flood thread and the 64 MiB senders at once starved the daemons' reactor of
        # CPU (one 100 ms sample in a full make test); the lag bound is about our code
        cli = Scan()
        threads = [
            threading.Thread(target=_run_cli, args=(group, intensity, workdir, cli, names))
            for intensity, group in groups.items()
        ]
        for thread in threads:
            thread.start()

        for thread in threads:
            thread.join(900)
        for job_id in job_ids.values():
            for result in redis.results(job_id):
                daemon.results.setdefault(names[int(result["port"])], []).append(result)
        time.sleep(6)  # one heartbeat: the histogram takes the last samples
        for port, before, raw_at_start, sampler, d in zip(
            metrics, lag_before, raw_before, rss, daemons, strict=True
        ):
            text = scrape(port)
            over = lag_samples_over(text)[0] - before
            daemon.lag_over += over
            daemon.raw_lag_over += lag_samples_over(text, histogram=LAG_HISTOGRAM)[0] - raw_at_start
            if over:
                daemon.errors_lag.append(
                    (d.name, lag_buckets(text), lag_buckets(text, histogram=LAG_HISTOGRAM))
                )
            daemon.rss_kib = max(daemon.rss_kib, sampler.stop())
            daemon.errors += error_events(d.events())
        for label, scan in (("daemon", daemon), ("vscan scan", cli)):  # shown with -s
            print(
                f"hostile {request.param} {label}: peak RSS {scan.rss_kib / 1024:.0f} MiB, "
                f"blocked-lag samples > {LAG_LIMIT_S} s: {scan.lag_over} (CLI max "
                f"{scan.lag_max_s}), lag samples (CPU waits included) > {LAG_LIMIT_S} s: "
                f"{scan.raw_lag_over} (CLI max {scan.raw_lag_max_s}), "
                f"wall {', '.join(f'i{i} {w:.1f} s' for i, w in sorted(scan.wall_s.items()))}"
            )
            for name, results in sorted(scan.results.items()):
                for r in results:
                    service = r["service"]
                    print(
                        f"  {name:20s} {r['duration_ms'] / 1000:7.1f} s  {r['state']:13s} "
                        f"{service.get('tunnel') or '-'} {service.get('name')}"
                    )
        yield HostileRun(endpoints, daemon, cli, daemons, deliveries, job_ids, soak)
    finally:
        stop.set()
        print(fleet.logs())
        fleet.kill_all()
        server.stop()
        pool.close()


SCANNERS = ("daemon", "cli")


def _scan(run: HostileRun, scanner: str) -> Scan:
    return run.daemon if scanner == "daemon" else run.cli


@pytest.mark.parametrize("scanner", SCANNERS)
@pytest.mark.parametrize("case", CASES, ids=[c.name for c in CASES])
def test_each_port_ends_within_its_faithful_bound(
    hostile_run: HostileRun, matcher: Matcher, case: Case, scanner: str
) -> None:
    scan = _scan(hostile_run, scanner)
    results = scan.results.get(case.name, [])
    assert len(results) == 1, f"{case.name}: {len(results)} results"
    result = results[0]
    assert result["state"] in ("open", "open|filtered"), result
    assert not result.get("error"), result
    port = port_of(hostile_run.endpoints[case.name])
    intensity = intensity_of(case, hostile_run.soak)
    bound = faithful_bound(matcher.db, case.protocol, port, intensity, tls_restart=case.tls_restart)
    took = result["duration_ms"] / 1000
    assert took <= allowed(bound), f"{case.name}: {took:.1f} s, faithful maximum {bound:.1f} s"


@pytest.mark.parametrize("scanner", SCANNERS)
def test_whole_runs_end_within_the_probes_and_script_bounds(
    hostile_run: HostileRun, matcher: Matcher, scanner: str
) -> None:
    scan = _scan(hostile_run, scanner)
    for intensity, wall in scan.wall_s.items():
        cases = [c for c in CASES if intensity_of(c, hostile_run.soak) == intensity]
        bound = max(
            faithful_bound(
                matcher.db, c.protocol, port_of(hostile_run.endpoints[c.name]), intensity,
                tls_restart=c.tls_restart,
            )
            for c in cases
        )  # fmt: skip
        # the ports run in parallel; the version scripts follow a port's probes
        limit = allowed(bound + SCRIPT_BUDGET_S)
        assert wall <= limit, f"intensity {intensity}: {wall:.0f} s > {limit:.0f} s"


@pytest.mark.parametrize("scanner", SCANNERS)
def test_memory_stays_under_the_ceiling(hostile_run: HostileRun, scanner: str) -> None:
    scan = _scan(hostile_run, scanner)
    assert 0 < scan.rss_kib / 1024 < RSS_CEILING_MIB, f"peak RSS {scan.rss_kib / 1024:.0f} MiB"


@pytest.mark.parametrize("scanner", SCANNERS)
def test_reactor_lag_stays_under_100_ms(hostile_run: HostileRun, scanner: str) -> None:
    scan = _scan(hostile_run, scanner)
    # the blocked lag (the thread's waits for a CPU taken out): the part our code caused
    assert scan.lag_over == 0, (
        f"{scan.lag_over} blocked-lag samples over {LAG_LIMIT_S} s ({scan.lag_max_s}; "
        f"{scan.raw_lag_over} with the CPU waits; {scan.errors_lag})"
    )


@pytest.mark.parametrize("scanner", SCANNERS)
def test_nothing_is_logged_as_a_crash(hostile_run: HostileRun, scanner: str) -> None:
    assert _scan(hostile_run, scanner).errors == []


def test_the_daemons_keep_their_leases(hostile_run: HostileRun) -> None:
    assert hostile_run.deliveries, "the jobs were never seen pending"
    for entry, (count, consumers) in hostile_run.deliveries.items():
        assert count == 1, f"entry {entry} delivered {count} times"
        assert len(consumers) == 1, f"entry {entry} held by {consumers}"
    for daemon in hostile_run.daemons:
        assert not daemon.logged("lease lost"), daemon.tail()
    redis_jobs = {
        r["job"] for scan in [hostile_run.daemon] for rs in scan.results.values() for r in rs
    }
    assert redis_jobs == set(hostile_run.job_ids.values())
