"""Hostile targets: vscan scan and nmap -sV side by side on the same loopback servers.

    .venv/bin/python benchmarks/hostile_targets.py [--intensity N] [--cases a,b]

The servers are those of ``tests/hostile/servers.py`` (a 64 MiB banner, one byte
every 5 s, random binary, regex baits, a peer that never reads, TLS handshakes that
never finish or carry a 1 MiB chain, lying RPC record marks and UDP replies, a UDP
flood). For each case, one ``vscan scan --run-stats`` and one ``nmap -sV`` (``-sU`` for
UDP; as root) are started at the same moment against the same server, each in its
own process: wall time, peak RSS (``VmHWM`` from /proc, sampled), vscan's worst reactor
lag, and each scanner's answer (state, service, tunnel). Cases run one after the other.

Prints a markdown table; JSON goes to ``benchmarks/results/hostile_targets.json``.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from _common import REPO, cache_dir, machine, md_table, write_json

from tests.hostile.measure import PeakRSS, faithful_bound
from tests.hostile.servers import CASES, HostilePool
from vscand.probes.matcher import load_matcher

VSCAN = str(Path(sys.executable).parent / "vscan")


def port_of(endpoint: str) -> int:
    return int(endpoint.split("/", maxsplit=1)[0].rsplit(":", 1)[1])


def run_vscan(endpoint: str, intensity: int, workdir: Path, out: dict[str, Any]) -> None:
    stats = workdir / f"stats-{port_of(endpoint)}.json"
    env = dict(os.environ, VSCAND_CACHE_DIR=str(cache_dir()))
    started = time.monotonic()
    proc = subprocess.Popen(
        [VSCAN, "scan", "--json", "--no-progress", "--version-intensity", str(intensity),
         "--run-stats", str(stats), endpoint],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    rss = PeakRSS(proc.pid)
    stdout, stderr = proc.communicate()
    out["seconds"] = time.monotonic() - started
    rss.stop()
    figures = json.loads(stats.read_text()) if stats.exists() else {}
    out["rss_mib"] = max(rss.kib, int(figures.get("max_rss_kib", 0))) / 1024
    out["lag_max_ms"] = float(figures.get("reactor_lag_max_seconds", -1)) * 1000
    out["rc"] = proc.returncode
    lines = [json.loads(line) for line in stdout.splitlines() if line.strip()]
    if lines:
        r = lines[0]
        service = r["service"]
        out["state"] = r["state"]
        out["service"] = service.get("name")
        out["tunnel"] = service.get("tunnel")
        out["port_seconds"] = r["duration_ms"] / 1000
    if proc.returncode:
        out["stderr"] = stderr[-1000:]


def run_nmap(endpoint: str, intensity: int, workdir: Path, out: dict[str, Any]) -> None:
    port = port_of(endpoint)
    udp = endpoint.endswith("/udp")
    xml = workdir / f"nmap-{port}.xml"
    cmd = ["nmap", "-n", "-Pn", "-sV", "--version-intensity", str(intensity), "-p", str(port)]
    cmd += ["-sU" if udp else "-sT", "-oX", str(xml), "127.0.0.1"]
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    rss = PeakRSS(proc.pid)
    _, stderr = proc.communicate()
    out["seconds"] = time.monotonic() - started
    out["rss_mib"] = rss.stop() / 1024
    out["rc"] = proc.returncode
    try:
        root = ET.parse(xml).getroot()
        port_el = root.find(".//port")
        assert port_el is not None
        state = port_el.find("state")
        service = port_el.find("service")
        out["state"] = state.get("state") if state is not None else None
        out["service"] = service.get("name") if service is not None else None
        out["tunnel"] = service.get("tunnel") if service is not None else None
    except (ET.ParseError, AssertionError, OSError):
        out["stderr"] = stderr[-1000:]


def answer(side: dict[str, Any]) -> str:
    if "state" not in side:
        return "?"
    name = side.get("service") or "-"
    if side.get("tunnel"):
        name = f"{side['tunnel']}/{name}"
    return f"{side['state']} {name}"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--intensity", type=int, default=7, help="both scanners (default 7)")
    parser.add_argument("--cases", help="comma-separated case names (default: all)")
    args = parser.parse_args()
    if shutil.which("nmap") is None:
        print("nmap is not installed", file=sys.stderr)
        return 2
    chosen = [c for c in CASES if not args.cases or c.name in args.cases.split(",")]
    info = machine()
    matcher = load_matcher(cache_dir=cache_dir())
    workdir = Path(tempfile.mkdtemp(prefix="vscand-hostile-"))
    pool = HostilePool(workdir)
    rows: list[dict[str, Any]] = []
    try:
        for case in chosen:
            endpoint = case.start(pool)
            vscan: dict[str, Any] = {}
            nmap: dict[str, Any] = {}
            threads = [
                threading.Thread(target=run_vscan, args=(endpoint, args.intensity, workdir, vscan)),
                threading.Thread(target=run_nmap, args=(endpoint, args.intensity, workdir, nmap)),
            ]
            for thread in threads:
                thread.start()
            for thread in threads:
                thread.join()
            bound = faithful_bound(
                matcher.db, case.protocol, port_of(endpoint), args.intensity,
                tls_restart=case.tls_restart,
            )  # fmt: skip
            rows.append({"case": case.name, "what": case.what, "bound_s": bound,
                         "vscan": vscan, "nmap": nmap})  # fmt: skip
            print(
                f"  {case.name}: vscan {vscan['seconds']:.1f} s ({answer(vscan)}), "
                f"nmap {nmap['seconds']:.1f} s ({answer(nmap)})",
                flush=True,
            )
    finally:
        pool.close()

    print()
    print(
        f"Machine: {info['nproc']} CPU(s) (shared), {info['cpu']}; {info['date']}; "
        f"intensity {args.intensity}"
    )
    print()
    table = []
    for row in rows:
        v, n = row["vscan"], row["nmap"]
        table.append(
            [
                row["case"],
                f"{row['bound_s']:.0f}",
                f"{v['seconds']:.1f}",
                f"{n['seconds']:.1f}",
                f"{v['seconds'] / n['seconds']:.2f}" if n.get("seconds") else "-",
                f"{v.get('rss_mib', 0):.0f} / {n.get('rss_mib', 0):.0f}",
                f"{v.get('lag_max_ms', -1):.1f}",
                answer(v),
                answer(n),
            ]
        )
    print(
        md_table(
            [
                "case",
                "faithful max s",
                "vscan s",
                "nmap s",
                "vscan/nmap",
                "peak RSS MiB vscan / nmap",
                "vscan max lag ms",
                "vscan answer",
                "nmap answer",
            ],
            table,
        )
    )
    path = write_json(
        "hostile_targets.json", {"machine": info, "intensity": args.intensity, "cases": rows}
    )
    print(f"JSON: {path.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
