"""Fast mode: ``vscan scan --fast`` against faithful ``vscan scan`` and ``nmap -sV -T4``.

    .venv/bin/python benchmarks/fast_vs_nmap.py [--silent N] [--runs N] [--copies N]
    make bench-fast

Same loopback services as ``benchmarks/scan_vs_nmap.py`` (its ``Targets``: ~55
ports of banners, HTTP servers, soft matches, one-probe services, unknown
protocols, tcpwrapped, silent and closed ports, the machine's redis-server).
Then, one after the other so they do not share the CPU::

    nmap -sV -T4 -Pn -n -p PORTS 127.0.0.1 -oX nmap.xml --datadir TMP   # empty script.db: NSE off
    vscan scan 127.0.0.1 -p PORTS -oX faithful.xml --no-progress --no-scripts
    vscan scan 127.0.0.1 -p PORTS -oX fast.xml --no-progress --no-scripts --fast

and reports: the ports where fast and faithful agree on every compared field
(state, name, product, version, extrainfo, hostname, ostype, devicetype, CPE,
tunnel, method, conf, and whether a fingerprint is present), each disagreement
with its service label, the same against nmap, and the wall-time ratios fast /
nmap and fast / faithful.  JSON goes to ``benchmarks/results/fast_vs_nmap.json``.

All traffic goes to 127.0.0.1; every child process is bounded in time.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, cache_dir, machine, md_table, write_json
from scan_vs_nmap import LOOPBACK, Targets, compare, parse_xml, timed

TARGET_AGREEMENT = 0.99
TARGET_RATIO = 0.05


def _with_fp(ports: dict[int, dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """Fingerprint presence counts as part of the answer between our two modes."""
    return {p: dict(rec, fp=rec.get("servicefp")) for p, rec in ports.items()}


def _diff_fp(
    ports: list[int], a: dict[int, dict[str, Any]], b: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    diffs = compare(ports, a, b)
    for port in ports:
        fa, fb = a.get(port, {}).get("servicefp"), b.get(port, {}).get("servicefp")
        if fa != fb:
            diffs.append({"port": port, "field": "servicefp", "nmap": fa, "vscan": fb})
    return diffs


def run_once(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    targets = Targets(args.silent, args.closed, not args.no_redis, workdir, args.copies)
    try:
        ports = targets.ports
        portspec = ",".join(str(p) for p in ports)
        datadir = workdir / "datadir"
        (datadir / "scripts").mkdir(parents=True, exist_ok=True)
        (datadir / "scripts" / "script.db").write_text("")
        xml = {name: workdir / f"{name}.xml" for name in ("nmap", "faithful", "fast")}
        vscan = [str(REPO / ".venv" / "bin" / "vscan"), "scan", LOOPBACK, "-p", portspec]
        commands = {
            "nmap": [
                args.nmap, "-sV", "-T4", "-Pn", "-n", "-p", portspec, LOOPBACK,
                "-oX", str(xml["nmap"]), "--datadir", str(datadir),
            ],
            "faithful": [*vscan, "-oX", str(xml["faithful"]), "--no-progress", "--no-scripts"],
            "fast": [
                *vscan, "-oX", str(xml["fast"]), "--no-progress", "--no-scripts", "--fast",
                *(["--fast-wait", str(args.fast_wait)] if args.fast_wait is not None else []),
            ],
        }  # fmt: skip
        env = dict(os.environ, VSCAND_CACHE_DIR=str(cache_dir()))
        runs: dict[str, Any] = {}
        for name in ("fast", "faithful", "nmap"):
            print(f"  running {name} ...", file=sys.stderr, flush=True)
            runs[name] = timed(commands[name], env)
            print(
                f"  {name}: {runs[name]['wall_s']:.2f} s wall, {runs[name]['cpu_s']:.2f} s CPU,"
                f" exit {runs[name]['exit']}",
                file=sys.stderr,
                flush=True,
            )
        answers = {name: parse_xml(path) for name, path in xml.items()}
        fast_vs_faithful = _diff_fp(ports, answers["faithful"], answers["fast"])
        fast_vs_nmap = compare(ports, answers["nmap"], answers["fast"])
        faithful_vs_nmap = compare(ports, answers["nmap"], answers["faithful"])

        def agree(diffs: list[dict[str, Any]]) -> int:
            return len(ports) - len({d["port"] for d in diffs})

        def labelled(diffs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [dict(d, label=targets.labels.get(d["port"])) for d in diffs]

        return {
            "ports": len(ports),
            "runs": runs,
            "fast_over_nmap": runs["fast"]["wall_s"] / runs["nmap"]["wall_s"],
            "fast_over_faithful": runs["fast"]["wall_s"] / runs["faithful"]["wall_s"],
            "agree_fast_faithful": agree(fast_vs_faithful),
            "agree_fast_nmap": agree(fast_vs_nmap),
            "agree_faithful_nmap": agree(faithful_vs_nmap),
            "fast_vs_faithful": labelled(fast_vs_faithful),
            "fast_vs_nmap": labelled(fast_vs_nmap),
            "faithful_vs_nmap": labelled(faithful_vs_nmap),
            "labels": {str(p): targets.labels[p] for p in ports},
        }
    finally:
        targets.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--silent", type=int, default=3, help="silent ports")
    parser.add_argument("--closed", type=int, default=5)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--copies", type=int, default=1, help="repeat the mix N times")
    parser.add_argument("--fast-wait", type=int, default=None, metavar="MS")
    parser.add_argument("--nmap", default=shutil.which("nmap") or "nmap")
    parser.add_argument("--output", default="fast_vs_nmap.json")
    args = parser.parse_args()
    nmap_version = subprocess.run(
        [args.nmap, "--version"], capture_output=True, text=True, check=False
    ).stdout
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="vscand-bench-fast-") as tmp:
            runs.append(run_once(args, Path(tmp)))
    rows = []
    for i, run in enumerate(runs, 1):
        r = run["runs"]
        rows.append(
            [
                i,
                run["ports"],
                f"{r['nmap']['wall_s']:.1f}",
                f"{r['faithful']['wall_s']:.1f}",
                f"{r['fast']['wall_s']:.2f}",
                f"**{run['fast_over_nmap']:.3f}x**",
                f"{run['fast_over_faithful']:.3f}x",
                f"**{run['agree_fast_faithful']}/{run['ports']}**",
                f"{run['agree_fast_nmap']}/{run['ports']}",
                f"{run['agree_faithful_nmap']}/{run['ports']}",
            ]
        )
    print(
        md_table(
            [
                "run",
                "ports",
                "wall nmap -T4 (s)",
                "wall faithful (s)",
                "wall fast (s)",
                "fast/nmap wall",
                "fast/faithful wall",
                "fast = faithful",
                "fast = nmap",
                "faithful = nmap",
            ],
            rows,
        )
    )
    ok = True
    for i, run in enumerate(runs, 1):
        for key in ("fast_vs_faithful", "fast_vs_nmap", "faithful_vs_nmap"):
            for d in run[key]:
                a, b = key.split("_vs_")
                print(
                    f"run {i}: {a} vs {b}: port {d['port']} ({d['label']}): {d['field']}: "
                    f"{b}={d['nmap']!r} {a}={d['vscan']!r}"
                )
        for name, proc in run["runs"].items():
            if proc["exit"] != 0:
                print(f"run {i}: {name} exit {proc['exit']}: {proc['stderr_tail']}")
        ok = ok and run["agree_fast_faithful"] >= TARGET_AGREEMENT * run["ports"]
        ok = ok and run["fast_over_nmap"] <= TARGET_RATIO
    if len(runs) > 1:
        print(
            "median fast/nmap "
            f"{statistics.median(r['fast_over_nmap'] for r in runs):.3f}x, median fast/faithful "
            f"{statistics.median(r['fast_over_faithful'] for r in runs):.3f}x"
        )
    print(
        f"targets: fast = faithful on >= {TARGET_AGREEMENT:.0%} of ports, fast/nmap <= "
        f"{TARGET_RATIO}x: {'met' if ok else 'NOT met'}"
    )
    payload = {
        "machine": machine(),
        "nmap_version": nmap_version.splitlines()[0] if nmap_version else "?",
        "args": vars(args),
        "runs": runs,
    }
    path = write_json(args.output, payload)
    print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
