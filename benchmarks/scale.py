"""Scale: 10,000 ports in flight at once on loopback, in one process.

    .venv/bin/python benchmarks/scale.py [--addresses 40] [--ports-per-address 400]
                                         [--concurrency 10000] [--intensity 0]

A target server (this script with ``--serve``, in ``--servers`` subprocesses so
each stays under its open-file limit) listens on ``--addresses`` loopback
addresses (127.77.0.1, 127.77.0.2, ...; all inside 127.0.0.0/8) and, on each,
``--ports-per-address`` ports. By port: 65 % silent (accept, never speak),
25 % banners that hard-match on the NULL probe (OpenSSH, Dropbear, vsftpd,
Postfix, Exim),
10 % closed (nothing listens). The ports are chosen from 20000-32000 so that no
probe of the database lists them: at intensity 0 a port then gets the NULL
probe only, and a silent port costs the NULL probe's 6 s wait (the real
``nmap-service-probes``, the real matcher with its prefilter; no custom
timeouts).

The scan runs in this process with :class:`vscand.scan.engine.ScanEngine`
(``concurrency`` ports in flight, no per-host limit, no connection-rate limit)
on the epoll reactor, while a :class:`vscand.scan.lag.ReactorLagMonitor`
(50 ms ticks) measures how late timers fire and a 100 ms loop samples
``scheduler.in_flight``. Reported: ports per second, peak RSS
(``ru_maxrss``; and the RSS before the scan, once the matcher is loaded),
reactor lag p50/p99/max, peak ports in flight, and whether every port got the
answer its server implies. JSON goes to ``benchmarks/results/scale.json``.

All traffic goes to 127.77.0.0/16 on this machine; the scan and the servers
stop by themselves (``--max-seconds``).
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import selectors
import socket
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, cache_dir, machine, md_table, write_json

ADDRESS_PREFIX = "127.77"
PORT_RANGE = (20000, 32000)
BANNERS = [
    (b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6\r\n", "ssh"),
    (b"220 (vsFTPd 3.0.5)\r\n", "ftp"),
    (b"220 mail.example.org ESMTP Postfix (Ubuntu)\r\n", "smtp"),
    (b"220 mx.example.net ESMTP Exim 4.96 Tue, 02 Jan 2024 10:00:00 +0000\r\n", "smtp"),
    (b"SSH-2.0-dropbear_2022.83\r\n", "ssh"),
]


def addresses(count: int) -> list[str]:
    if not 1 <= count <= 250 * 250:
        raise SystemExit("--addresses must be within 1..62500")
    return [f"{ADDRESS_PREFIX}.{i // 250}.{i % 250 + 1}" for i in range(count)]


def kind_of(index: int) -> str:
    """Port kind by the port's index: 13/20 silent, 5/20 banner, 2/20 closed."""
    slot = index % 20
    if slot < 13:
        return "silent"
    if slot < 18:
        return "banner"
    return "closed"


def raise_nofile(wanted: int) -> tuple[int, int]:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    for target in (max(wanted, soft), hard):
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (target, max(target, hard)))
            break
        except (ValueError, OSError):
            continue
    return resource.getrlimit(resource.RLIMIT_NOFILE)


# --------------------------------------------------------------------------
# the target server (one subprocess per slice of the addresses)


def serve(spec: dict[str, Any]) -> None:
    addrs: list[str] = spec["addresses"]
    ports: list[list[Any]] = spec["ports"]  # [port, kind, banner index]
    listening = [p for p in ports if p[1] != "closed"]
    raise_nofile(len(addrs) * len(listening) * 2 + 1024)
    sel = selectors.DefaultSelector()
    for addr in addrs:
        for port, kind, banner in listening:
            sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind((addr, port))
            sock.listen(64)
            sock.setblocking(False)
            sel.register(sock, selectors.EVENT_READ, ("listen", kind, banner))
    sel.register(sys.stdin, selectors.EVENT_READ, ("stdin", None, None))
    sys.stdout.write("READY\n")
    sys.stdout.flush()
    deadline = time.monotonic() + float(spec["max_seconds"])
    accepted = errors = 0
    while time.monotonic() < deadline:
        for key, _ in sel.select(timeout=0.5):
            tag, kind, banner = key.data
            sock = key.fileobj
            if tag == "listen":
                for _ in range(64):
                    try:
                        conn, _ = sock.accept()  # type: ignore[union-attr]
                    except BlockingIOError:
                        break
                    except OSError:
                        errors += 1
                        break
                    accepted += 1
                    conn.setblocking(False)
                    if kind == "banner":
                        try:
                            conn.send(BANNERS[banner][0])
                        except OSError:
                            conn.close()
                            continue
                    sel.register(conn, selectors.EVENT_READ, ("conn", kind, banner))
            elif tag == "conn":
                try:
                    data = sock.recv(4096)  # type: ignore[union-attr]
                except BlockingIOError:
                    continue
                except OSError:
                    data = b""
                if not data:
                    sel.unregister(sock)
                    sock.close()  # type: ignore[union-attr]
            elif not sys.stdin.buffer.read1(4096):  # type: ignore[attr-defined]
                deadline = 0.0
    sys.stderr.write(f"server: accepted {accepted}, accept errors {errors}\n")


def start_servers(
    addrs: list[str], ports: list[list[Any]], count: int, max_seconds: float
) -> list[subprocess.Popen[bytes]]:
    procs = []
    for n in range(count):
        part = addrs[n::count]
        if not part:
            continue
        spec = {"addresses": part, "ports": ports, "max_seconds": max_seconds}
        proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", json.dumps(spec)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        procs.append(proc)
    for proc in procs:
        assert proc.stdout is not None
        if proc.stdout.readline().strip() != b"READY":
            stop_servers(procs)
            raise SystemExit("a target server did not start (see its error above)")
    return procs


def stop_servers(procs: list[subprocess.Popen[bytes]]) -> None:
    for proc in procs:
        if proc.poll() is None and proc.stdin is not None:
            proc.stdin.close()
    for proc in procs:
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# --------------------------------------------------------------------------
# the scan


def rss_kib() -> tuple[int, int]:
    """(VmRSS, VmHWM) of this process in KiB."""
    values = {}
    with open("/proc/self/status", encoding="ascii") as status:
        for line in status:
            if line.startswith(("VmRSS:", "VmHWM:")):
                key, value = line.split(":", 1)
                values[key] = int(value.split()[0])
    return values.get("VmRSS", 0), values.get("VmHWM", 0)


def pick_ports(db: Any, count: int) -> list[int]:
    listed: set[int] = set()
    for probe in db.probes:
        if probe.protocol == "TCP":
            listed |= set(probe.port_list(False)) | set(probe.port_list(True))
    ports = [p for p in range(*PORT_RANGE) if p not in listed]
    if len(ports) < count:
        raise SystemExit(f"only {len(ports)} unlisted ports in {PORT_RANGE}")
    return ports[:count]


def run_scan(args: argparse.Namespace) -> dict[str, Any]:
    from twisted.internet import epollreactor

    epollreactor.install()
    from twisted.internet import defer, reactor, task

    from vscand.ports import load_services
    from vscand.probes.matcher import load_matcher
    from vscand.scan.engine import ScanEngine
    from vscand.scan.lag import ReactorLagMonitor
    from vscand.scan.model import PortTask, Result, ScanOptions

    nofile = raise_nofile(args.concurrency + 4096)
    matcher = load_matcher(args.probes, cache_dir=cache_dir())
    services = load_services()
    ports = pick_ports(matcher.db, args.ports_per_address)
    addrs = addresses(args.addresses)
    port_specs = [[p, kind_of(i), i % len(BANNERS)] for i, p in enumerate(ports)]
    expected = {p: (kind, b) for p, kind, b in port_specs}
    tasks = [PortTask(addr, port) for port in ports for addr in addrs]
    servers = start_servers(addrs, port_specs, args.servers, args.max_seconds + 60)
    rss_before, _ = rss_kib()
    out: dict[str, Any] = {}
    try:

        async def main(_: Any) -> None:
            options = ScanOptions(intensity=args.intensity)
            engine = ScanEngine(
                reactor,
                matcher,
                services,
                options,
                concurrency=args.concurrency,
                connect_rate=args.connect_rate,
            )
            lag = ReactorLagMonitor(reactor, interval=0.05, max_samples=1_000_000)
            in_flight: list[tuple[float, int]] = []
            outcome: Counter[str] = Counter()
            wrong: list[str] = []
            started = time.monotonic()
            first_done: list[float] = []

            seen = [0]
            lag_timeline: list[tuple[float, int, float]] = []

            def sample() -> None:
                if engine.scheduler is not None:
                    now = time.monotonic() - started
                    in_flight.append((now, engine.scheduler.in_flight))
                    fresh = lag.samples[seen[0] :]
                    seen[0] += len(fresh)
                    lag_timeline.append(
                        (
                            round(now, 2),
                            engine.scheduler.in_flight,
                            round(max(fresh, default=0) * 1000),
                        )
                    )

            def on_result(result: Result) -> None:
                if not first_done:
                    first_done.append(time.monotonic() - started)
                kind, banner = expected[result["port"]]
                service = result.get("service") or {}
                if result.get("error"):
                    got = f"error:{result['error'][:60]}"
                elif result["state"] != "open":
                    got = result["state"]
                elif service.get("method") == "probed":
                    got = f"probed:{service.get('name')}"
                else:
                    got = f"open:{result.get('final_state')}"
                outcome[f"{kind}->{got}"] += 1
                want = {
                    "closed": "closed",
                    "silent": "open:nomatch",
                    "banner": f"probed:{BANNERS[banner][1]}",
                }[kind]
                if got != want and len(wrong) < 20:
                    wrong.append(f"{result['host']}:{result['port']} {kind}: {got}")

            sampler = task.LoopingCall(sample)
            sampler.start(0.1, now=True)
            lag.start()
            guard = reactor.callLater(
                args.max_seconds,
                lambda: engine.scheduler.stop() if engine.scheduler is not None else None,
            )
            cpu0 = resource.getrusage(resource.RUSAGE_SELF)
            results = await engine.run(tasks, on_result)
            elapsed = time.monotonic() - started
            cpu1 = resource.getrusage(resource.RUSAGE_SELF)
            if guard.active():
                guard.cancel()
            lag.stop()
            sampler.stop()
            sample()
            peak_t, peak = max(in_flight, key=lambda s: s[1]) if in_flight else (0.0, 0)
            out.update(
                {
                    "tasks": len(tasks),
                    "results": len(results),
                    "elapsed_s": elapsed,
                    "ports_per_s": len(results) / elapsed,
                    "cpu_s": (cpu1.ru_utime - cpu0.ru_utime) + (cpu1.ru_stime - cpu0.ru_stime),
                    "peak_in_flight": peak,
                    "peak_in_flight_at_s": peak_t,
                    "seconds_at_10000_in_flight": 0.1
                    * sum(1 for _, n in in_flight if n >= min(10_000, args.concurrency)),
                    "first_result_s": first_done[0] if first_done else None,
                    "lag_p50_ms": lag.percentile(50) * 1000,
                    "lag_p99_ms": lag.percentile(99) * 1000,
                    "lag_max_ms": lag.max() * 1000,
                    "lag_ticks": lag.ticks,
                    "lag_over_100ms": sum(1 for s in lag.samples if s > 0.1),
                    "outcomes": dict(outcome),
                    "wrong": wrong,
                    "scheduler": vars(engine.scheduler.stats) if engine.scheduler else None,
                    "connections": engine.limiter.granted,
                    "in_flight_timeline": [(round(t, 1), n) for t, n in in_flight[::5]],
                    # (seconds, ports in flight, worst lag in ms since the previous sample)
                    "lag_timeline": lag_timeline,
                }
            )

        task.react(lambda r: defer.Deferred.fromCoroutine(main(r)))
    except SystemExit:
        pass
    finally:
        stop_servers(servers)
    rss_now, hwm = rss_kib()
    out.update(
        {
            "addresses": len(addrs),
            "ports_per_address": len(ports),
            "port_range": [ports[0], ports[-1]],
            "kinds": dict(Counter(kind for _, kind, _ in port_specs)),
            "concurrency": args.concurrency,
            "connect_rate": args.connect_rate,
            "intensity": args.intensity,
            "servers": args.servers,
            "nofile": list(nofile),
            "rss_before_scan_mib": rss_before / 1024,
            "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            "vm_hwm_mib": hwm / 1024,
            "rss_after_mib": rss_now / 1024,
        }
    )
    return out


def main() -> int:
    if len(sys.argv) == 3 and sys.argv[1] == "--serve":
        serve(json.loads(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--addresses", type=int, default=40)
    parser.add_argument("--ports-per-address", type=int, default=400)
    parser.add_argument("--concurrency", type=int, default=10_000)
    parser.add_argument("--intensity", type=int, default=0)
    parser.add_argument(
        "--connect-rate", type=float, default=0, help="new connections/s (0: unlimited)"
    )
    parser.add_argument("--probes", default=None, help="probe file (default: Nmap's)")
    parser.add_argument("--servers", type=int, default=4, help="target server processes")
    parser.add_argument("--max-seconds", type=float, default=300.0)
    parser.add_argument("--output", default="scale.json")
    args = parser.parse_args()
    os.environ.setdefault("VSCAND_CACHE_DIR", str(cache_dir()))
    result = run_scan(args)
    rows = [
        [
            f"{result['tasks']:,}",
            f"{result['elapsed_s']:.1f}",
            f"{result['ports_per_s']:,.0f}",
            f"{result['peak_in_flight']:,}",
            f"{result['rss_before_scan_mib']:.0f} / {result['peak_rss_mib']:.0f}",
            f"{result['lag_p50_ms']:.1f} / {result['lag_p99_ms']:.1f} / {result['lag_max_ms']:.0f}",
            f"{result['cpu_s']:.1f}",
            f"{result['results']:,}",
        ]
    ]
    print(
        md_table(
            [
                "ports",
                "scan s",
                "ports/s",
                "peak in flight",
                "RSS MiB before / peak",
                "lag ms p50 / p99 / max",
                "CPU s",
                "results",
            ],
            rows,
        )
    )
    print("outcomes:", json.dumps(result["outcomes"], sort_keys=True))
    for line in result["wrong"]:
        print("unexpected:", line)
    payload = {"machine": machine(), "args": vars(args), **result}
    path = write_json(args.output, payload)
    print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
