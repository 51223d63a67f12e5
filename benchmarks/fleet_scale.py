"""Scale of the daemon: one daemon with 10,000 ports in flight; three sharing 100,000.

    .venv/bin/python benchmarks/fleet_scale.py [--part one|three|both]

Everything is real: a private ``redis-server`` (no persistence) on a free port,
``twist vscand`` daemons as subprocesses, the target servers of ``scale.py``
(selectors/epoll subprocesses on 127.77.0.0/16 and 127.78.0.0/16), one job per
part submitted as any producer would (``XADD`` of the job JSON), sharded by the
daemons into tasks of ``task_ports`` ports.

* ``one``: one daemon (``concurrency`` 10,000), 40 addresses × 400 ports =
  16,000 ports, 13/20 silent (accept, never speak), 5/20 banners, 2/20 closed —
  the ``scale.py`` mix, now through Redis: intake, sharding, fenced result
  writes, inventory and change detection. At intensity 2 (``--intensity-one``) a
  silent port gets the NULL wait and three probes (~21 s), so the daemon holds
  its 10,000 connection slots full.
* ``three``: three daemons (``concurrency`` 4,000 each), 50 addresses × 2,000
  ports = 100,000 endpoints, 1/10 banners, 9/10 closed (an inventory sweep:
  most ports answer with a reset).

Reported per part: wall time from submit to the job's final status, results per
second, peak ports in flight (the daemons' ``vscand_ports_in_flight`` gauge,
scraped every 0.5 s), peak RSS per daemon (``VmHWM``), reactor lag (the daemons'
lag histogram: share of 20 ms samples over 50/100 ms, and the largest bucket
reached), Redis commands per result (``INFO commandstats`` calls, every client,
before and after), tasks per daemon, and whether the state counts are what the
servers imply. JSON goes to ``benchmarks/results/fleet_scale.json``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

import scale
from _common import REPO, cache_dir, machine, md_table, write_json

from vscand.queue.keys import Keys

TWIST = str(Path(sys.executable).parent / "twist")
REDIS_SERVER = shutil.which("redis-server") or "/usr/bin/redis-server"
KEYS = Keys()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Redis:
    """A private redis-server and a tiny RESP client (one connection per call)."""

    def __init__(self, directory: Path) -> None:
        self.port = free_port()
        self.proc = subprocess.Popen(
            [REDIS_SERVER, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--dir", str(directory), "--logfile",
             str(directory / "redis.log")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )  # fmt: skip
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            try:
                if self.call("PING") == "PONG":
                    return
            except OSError:
                time.sleep(0.05)
        raise SystemExit("redis-server did not start")

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def call(self, *args: Any) -> Any:
        with socket.create_connection(("127.0.0.1", self.port), timeout=30) as sock:
            parts = [a if isinstance(a, bytes) else str(a).encode() for a in args]
            payload = b"*%d\r\n" % len(parts) + b"".join(
                b"$%d\r\n%s\r\n" % (len(p), p) for p in parts
            )
            sock.sendall(payload)
            reader = sock.makefile("rb")
            return _read(reader)

    def hash(self, key: str) -> dict[str, str]:
        reply = self.call("HGETALL", key) or []
        return {reply[i]: reply[i + 1] for i in range(0, len(reply), 2)}

    def command_calls(self) -> tuple[int, int]:
        """(every command executed, commands inside scripts included; EVAL/EVALSHA calls)."""
        info = self.call("INFO", "commandstats")
        total = scripts = 0
        for line in info.splitlines():
            if line.startswith("cmdstat_"):
                name = line[8:].split(":", 1)[0]
                fields = dict(kv.split("=") for kv in line.split(":", 1)[1].split(","))
                total += int(fields["calls"])
                if name in ("eval", "evalsha"):
                    scripts += int(fields["calls"])
        return total, scripts

    def stop(self) -> None:
        self.proc.terminate()
        self.proc.wait(10)


def _read(reader: Any) -> Any:
    line = reader.readline()
    kind, body = line[:1], line[1:-2]
    if kind == b"+":
        return body.decode()
    if kind == b"-":
        raise RuntimeError(body.decode())
    if kind == b":":
        return int(body)
    if kind == b"$":
        n = int(body)
        if n < 0:
            return None
        data = reader.read(n + 2)[:-2]
        return data.decode("utf-8", "replace")
    if kind == b"*":
        n = int(body)
        return None if n < 0 else [_read(reader) for _ in range(n)]
    raise RuntimeError(f"bad reply {line!r}")


def start_daemon(
    redis: Redis, name: str, directory: Path, concurrency: int, metrics_port: int
) -> subprocess.Popen[bytes]:
    config = directory / "empty.conf"
    config.write_text("[vscand]\n")
    env = {k: v for k, v in os.environ.items() if not k.startswith(("NOTIFY_", "WATCHDOG_"))}
    env["VSCAND_CACHE_DIR"] = str(cache_dir())
    log = (directory / f"{name}.log").open("ab")
    proc = subprocess.Popen(
        [TWIST, "vscand", "--log-format", "json", "--config", str(config),
         "--redis-url", redis.url, "--consumer", name, "--concurrency", str(concurrency),
         "--metrics-port", str(metrics_port), "--task-ports", "1024",
         "--allow", "127.0.0.0/8"],
        stdout=log, stderr=subprocess.STDOUT, env=env, cwd=str(REPO),
    )  # fmt: skip
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        try:
            metrics(metrics_port)
            return proc
        except OSError:
            if proc.poll() is not None:
                raise SystemExit(f"daemon {name} exited; see {directory / name}.log") from None
            time.sleep(0.2)
    raise SystemExit(f"daemon {name} did not start")


def metrics(port: int) -> dict[str, float]:
    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=5) as reply:
        text = reply.read().decode()
    out: dict[str, float] = {}
    for line in text.splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            out[name] = float(value)
    return out


def vm_hwm_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def lag_summary(samples: dict[str, float]) -> dict[str, Any]:
    buckets = sorted(
        (float(name.split('le="')[1].split('"')[0]), count)
        for name, count in samples.items()
        if name.startswith("vscand_reactor_lag_samples_seconds_bucket") and 'le="+Inf"' not in name
    )
    total = samples.get("vscand_reactor_lag_samples_seconds_count", 0.0)

    def over(limit: float) -> float:
        at = max((count for le, count in buckets if le <= limit), default=0.0)
        return (total - at) / total if total else 0.0

    largest = max((le for le, count in buckets if count < total), default=0.0)
    return {
        "samples": int(total),
        "share_over_50ms": over(0.05),
        "share_over_100ms": over(0.1),
        "max_bucket_s": largest if total else None,
    }


def run_part(
    name: str,
    redis: Redis,
    directory: Path,
    daemons: int,
    concurrency: int,
    addrs: list[str],
    port_specs: list[list[Any]],
    servers: int,
    intensity: int = 0,
) -> dict[str, Any]:
    procs = scale.start_servers(addrs, port_specs, servers, 900)
    ports = [p for p, _kind, _b in port_specs]
    expected_open = sum(kind != "closed" for _p, kind, _b in port_specs) * len(addrs)
    metric_ports = [free_port() for _ in range(daemons)]
    running = [
        start_daemon(redis, f"{name}-{i}", directory, concurrency, metric_ports[i])
        for i in range(daemons)
    ]
    try:
        calls_before = redis.command_calls()
        job_id = f"scale-{name}"
        job = {
            "id": job_id,
            "targets": addrs,
            "ports": ",".join(str(p) for p in ports),
            "intensity": intensity,
            "task_ports": 1024,
        }
        started = time.monotonic()
        redis.call("XADD", "vscand:jobs", "*", "job", json.dumps(job))
        peak_in_flight = peak_connections = 0
        while True:
            status = redis.hash(KEYS.job(job_id))
            in_flight = connections = 0
            for port in metric_ports:
                with contextlib.suppress(OSError):
                    sample = metrics(port)
                    in_flight += int(sample.get("vscand_ports_in_flight", 0))
                    connections += int(sample.get("vscand_connections_in_flight", 0))
            peak_in_flight = max(peak_in_flight, in_flight)
            peak_connections = max(peak_connections, connections)
            if status.get("status") in ("done", "failed", "cancelled"):
                break
            if time.monotonic() - started > 1800:
                raise SystemExit(f"{name}: job not done after 30 min: {status}")
            time.sleep(0.5)
        elapsed = time.monotonic() - started
        calls_after = redis.command_calls()
        calls = calls_after[0] - calls_before[0]
        scripts = calls_after[1] - calls_before[1]
        total = len(addrs) * len(ports)
        tasks = int(status.get("tasks_total", 0))
        per_daemon: dict[str, int] = {}
        for i in range(tasks):
            worker = redis.hash(KEYS.task(job_id, i)).get("worker")
            per_daemon[str(worker)] = per_daemon.get(str(worker), 0) + 1
        lags = [lag_summary(metrics(port)) for port in metric_ports]
        rss = [round(vm_hwm_mib(p.pid), 1) for p in running]
    finally:
        for proc in running:
            proc.terminate()
        for proc in running:
            try:
                proc.wait(30)
            except subprocess.TimeoutExpired:
                proc.kill()
        scale.stop_servers(procs)
    states = {k[6:]: int(v) for k, v in status.items() if k.startswith("state:")}
    return {
        "part": name,
        "daemons": daemons,
        "concurrency_per_daemon": concurrency,
        "ports": total,
        "intensity": intensity,
        "status": status.get("status"),
        "ports_done": int(status.get("ports_done", 0)),
        "states": states,
        "expected_open": expected_open,
        "correct_counts": states.get("open", 0) == expected_open
        and states.get("closed", 0) == total - expected_open,
        "seconds": round(elapsed, 1),
        "results_per_s": round(total / elapsed, 1),
        "peak_ports_in_flight": peak_in_flight,
        "peak_connection_slots": peak_connections,
        "peak_rss_mib": rss,
        "reactor_lag": lags,
        "redis_calls": calls,
        "redis_calls_per_result": round(calls / total, 2),
        "redis_scripts_per_result": round(scripts / total, 2),
        "tasks": tasks,
        "tasks_per_daemon": per_daemon,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--part", choices=("one", "three", "both"), default="both")
    parser.add_argument(
        "--intensity-one",
        type=int,
        default=2,
        help="part one's version intensity: 2 gives a silent port the NULL wait and three "
        "5 s probes (~21 s), long enough to hold 10,000 ports in flight [default: 2]",
    )
    args = parser.parse_args()
    scale.raise_nofile(30000)
    from vscand.probes.matcher import load_matcher

    db = load_matcher(None, cache_dir=cache_dir()).db  # also warms the daemons' cache
    results = []
    with tempfile.TemporaryDirectory(prefix="vscand-fleet-scale-") as tmp:
        directory = Path(tmp)
        redis = Redis(directory)
        try:
            if args.part in ("one", "both"):
                ports = scale.pick_ports(db, 400)
                specs = [[p, scale.kind_of(i), i % len(scale.BANNERS)] for i, p in enumerate(ports)]
                results.append(
                    run_part(
                        "one",
                        redis,
                        directory,
                        1,
                        10_000,
                        scale.addresses(40),
                        specs,
                        4,
                        intensity=args.intensity_one,
                    )
                )
                print(json.dumps(results[-1]), flush=True)
            if args.part in ("three", "both"):
                ports = scale.pick_ports(db, 2000)
                specs = [
                    [p, "banner" if i % 10 == 0 else "closed", i % len(scale.BANNERS)]
                    for i, p in enumerate(ports)
                ]
                addrs = [f"127.78.0.{i + 1}" for i in range(50)]
                results.append(run_part("three", redis, directory, 3, 4_000, addrs, specs, 4))
                print(json.dumps(results[-1]), flush=True)
        finally:
            redis.stop()
    rows = [
        [
            r["part"], r["daemons"], f"{r['ports']:,}", r["seconds"], f"{r['results_per_s']:,}",
            f"{r['peak_connection_slots']:,} / {r['peak_ports_in_flight']:,}",
            " / ".join(str(x) for x in r["peak_rss_mib"]),
            " / ".join(
                f"{lag['share_over_100ms']:.2%} (max ≤{lag['max_bucket_s']}s)"
                for lag in r["reactor_lag"]
            ),
            f"{r['redis_scripts_per_result']} / {r['redis_calls_per_result']}", r["tasks"],
            " ".join(f"{k}:{v}" for k, v in sorted(r["tasks_per_daemon"].items())),
            "yes" if r["correct_counts"] else f"NO {r['states']}",
        ]
        for r in results
    ]  # fmt: skip
    headers = [
        "part", "daemons", "ports", "s", "results/s", "peak connection slots / ports started",
        "peak RSS MiB per daemon", "lag samples > 100 ms (largest bucket)",
        "Redis scripts / commands per result", "tasks", "tasks per daemon", "counts right",
    ]  # fmt: skip
    print(md_table(headers, rows))
    path = write_json("fleet_scale.json", {"machine": machine(), "results": results})
    print(f"JSON: {path}")


if __name__ == "__main__":
    main()
