"""Fast mode: ``vscan scan --fast`` against faithful ``vscan scan`` and ``nmap -sV -T4``.

    .venv/bin/python benchmarks/fast_vs_nmap.py [--silent N] [--runs N] [--copies N]
    .venv/bin/python benchmarks/fast_vs_nmap.py --mix slow [--extra-silent N] [--s-servers N]
    .venv/bin/python benchmarks/fast_vs_nmap.py --quick   # smoke run of the slow mix, ~1 min
    make bench-fast

Same loopback services as ``benchmarks/scan_vs_nmap.py`` (its ``Targets``: ~55
ports of banners, HTTP servers, soft matches, one-probe services, unknown
protocols, tcpwrapped, silent and closed ports, the machine's redis-server).
``--mix slow`` adds the services that a parallel scanner misreads (issue 15):
slow greeters (an SSH, an SMTP and an FTP banner sent 1, 3, 5.9, 6.1, 7 and 12 s
after the connect: ``scan_vs_nmap.slow_mix``), ``--extra-silent`` more silent
ports (default: as many as make the run 100 ports) and ``--s-servers`` (default
2) ``openssl s_server -www``, a real server that serves one connection at a time
(``tests/e2e/tls_servers.start_s_server``). Then, one after the other so they do not share the
CPU::

    nmap -sV -T4 -Pn -n -p PORTS 127.0.0.1 -oX nmap.xml --datadir TMP   # empty script.db: NSE off
    vscan scan 127.0.0.1 -p PORTS -oX faithful.xml -oJ faithful.jsonl --no-progress --no-scripts
    vscan scan 127.0.0.1 -p PORTS -oX fast.xml -oJ fast.jsonl --no-progress --no-scripts --fast

(``vscan`` is this checkout's code run by this Python, not a venv's console script.)

and reports: the ports where fast and faithful agree on every compared field
(state, name, product, version, extrainfo, hostname, ostype, devicetype, CPE,
tunnel, method, conf, and whether a fingerprint is present), each disagreement
with its service label, the same against nmap, and the wall-time ratios fast /
nmap and fast / faithful.  JSON goes to ``benchmarks/results/fast_vs_nmap.json``.

**The exactness floor** of a port: the least time after its first connect at which
Nmap's answer for it is decided, i.e. the least time any scanner needs to *know* that
answer, counting the one connection nothing can run beside (the first, C0, which carries
the NULL probe and the probe Nmap sends next on it when the NULL probe timed out).  With
W0 the NULL probe's ``totalwaitms`` (6 s) and W1 that of the probe ``ProbePlan`` (vscand's
plan, the same probe file) sends after it for the port (GenericLines, 5 s):

* closed port, or a service that closes at connect (tcpwrapped, banner-and-close): 0;
* the answer is a hard match of the NULL probe's response (faithful mode's ``matches``):
  the time that banner arrives (a slow greeter's delay; 0 for an immediate banner);
* otherwise W0 (until then a banner could still come and decide the answer), then C0's
  next probe until it ends: a hard match of its response, when that arrives (max(W0,
  delay)); a service that answers any data at once and closes (http, unknown,
  softbanner, probeonly): W0; else its whole wait: W0 + W1 (silent ports, greeters Nmap
  never hears, redis-server, banners that only soft-match);
* a server that serves one connection at a time (``openssl s_server``): nothing can run
  beside anything, so the floor is faithful mode's own walk of the port (its
  ``duration_ms``).

Probes on other connections run beside C0 and are not counted (in Nmap 7.93's file no
probe waits longer than W0 + W1).  The floors assume what fast mode's guarantee assumes
otherwise (each connection's answer depends on that connection only).  Reported: fast's
wall time minus the largest floor ("fast ended within X s of the floor of its slowest
port"), and per port fast's ``duration_ms`` minus the port's floor; a port fast answered
*before* its floor was answered by assumption, not by observation.

All traffic goes to 127.0.0.1; every child process is bounded in time.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))  # this checkout's vscand
sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, cache_dir, machine, md_table, write_json
from scan_vs_nmap import LOOPBACK, Targets, compare, parse_xml, service_mix, slow_mix, timed

from vscand.probes.model import ProbeDatabase
from vscand.probes.parser import find_probe_file, load_probe_files
from vscand.scan.plan import ProbePlan

#: at least this many ports in a ``--mix slow`` run (services, closed ports, redis-server)
SLOW_MIX_PORTS = 100
#: ``--quick``'s slow greeters' delays (s): one in the NULL probe's wait, one after it
QUICK_DELAYS = (3.0, 7.0)
#: this checkout's vscan, whatever venv runs the script (a venv's ``vscan`` console script
#: runs the checkout the venv was installed from)
VSCAN = [
    sys.executable,
    "-c",
    f"import sys; sys.path.insert(0, {str(REPO)!r}); from vscand.cli import main; "
    "sys.exit(main(sys.argv[1:]))",
]
#: services that answer any data at once and close (C0's second probe ends at once)
ANSWER_AND_CLOSE = frozenset({"http", "unknown", "softbanner", "probeonly"})
#: services that close at connect (every probe ends at once)
CLOSE_AT_CONNECT = frozenset({"tcpwrapped", "unknownbanner"})

#: issue 15's targets: fast = faithful (= nmap) on >= 99.5 % of ports; the wall time within
#: 1.5 s of the floor of the slowest port; fast/nmap no worse than the 0.074x measured before
#: the guarantee (issue 7's 0.05x was met with quiet windows, which are now an opt-in)
TARGET_AGREEMENT = 0.995
TARGET_FLOOR_S = 1.5
TARGET_RATIO = 0.074


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


def build_mix(args: argparse.Namespace) -> tuple[list[dict[str, Any]] | None, int]:
    """``Targets``' ``mix`` and ``s_servers`` for ``--mix`` (None: scan_vs_nmap's mix)."""
    if args.quick:
        # a smoke run of the slow mix: two slow greeters per protocol, one s_server
        return slow_mix(QUICK_DELAYS), 1
    if args.mix == "base":
        return None, 0
    base = service_mix(args.silent)
    slow = slow_mix()
    nonsilent = sum(1 for s in base + slow if s["kind"] != "silent")
    redis = int(not args.no_redis and shutil.which("redis-server") is not None)
    total = len(base) + len(slow) + (args.copies - 1) * nonsilent
    total += args.closed + args.s_servers + redis
    extra = args.extra_silent
    if extra is None:
        extra = max(0, SLOW_MIX_PORTS - total)
    silent = [{"kind": "silent", "label": f"silent-{args.silent + i}"} for i in range(extra)]
    return base + slow + silent, args.s_servers


def exactness_floors(
    db: ProbeDatabase,
    targets: Targets,
    ports: list[int],
    faithful: dict[int, dict[str, Any]],
    intensity: int = 7,
) -> dict[int, dict[str, Any]]:
    """Each port's exactness floor (seconds after its first connect) and why (the
    module's docstring); ``faithful``: faithful mode's ``-oJ`` records."""
    null = db.null_probe
    w0 = null.totalwaitms / 1000 if null is not None else 0.0
    floors: dict[int, dict[str, Any]] = {}
    for port in ports:
        label = targets.labels[port]
        record = faithful.get(port, {})
        spec = targets.spec(port)
        kind = str(spec["kind"]) if spec is not None else label
        delay = float(spec.get("delay", 0.0)) if spec is not None else 0.0
        plan = ProbePlan(db, "TCP", port, intensity)
        plan.next()  # the NULL probe
        second = plan.next()
        w1 = second.totalwaitms / 1000 if second is not None else 0.0
        hard = next((m["probe"] for m in record.get("matches") or [] if not m["soft"]), None)
        if record.get("state") != "open" or kind in CLOSE_AT_CONNECT:
            floor, why = 0.0, "closed, or closes at connect"
        elif port in targets.s_server_ports:
            floor = record.get("duration_ms", 0) / 1000
            why = "one connection at a time: faithful mode's walk"
        elif hard == "NULL":
            floor, why = delay, "NULL probe hard match: when its banner came"
        elif second is not None and hard == second.name:
            floor, why = max(w0, delay), f"NULL wait, then {second.name}'s hard match on C0"
        elif kind in ANSWER_AND_CLOSE:
            floor, why = w0, "NULL wait (the next probe is answered at once)"
        else:
            name = second.name if second is not None else "-"
            floor, why = w0 + w1, f"NULL wait + {name}'s wait on C0"
        floors[port] = {"floor_s": round(floor, 3), "why": why}
    return floors


def run_once(args: argparse.Namespace, workdir: Path, db: ProbeDatabase) -> dict[str, Any]:
    mix, s_servers = build_mix(args)
    targets = Targets(
        args.silent,
        args.closed,
        not args.no_redis,
        workdir,
        args.copies,
        mix=mix,
        s_servers=s_servers,
    )
    try:
        ports = targets.ports
        portspec = ",".join(str(p) for p in ports)
        datadir = workdir / "datadir"
        (datadir / "scripts").mkdir(parents=True, exist_ok=True)
        (datadir / "scripts" / "script.db").write_text("")
        xml = {name: workdir / f"{name}.xml" for name in ("nmap", "faithful", "fast")}
        jsonl = {name: workdir / f"{name}.jsonl" for name in ("faithful", "fast")}
        vscan = [*VSCAN, "scan", LOOPBACK, "-p", portspec]
        commands = {
            "nmap": [
                args.nmap, "-sV", "-T4", "-Pn", "-n", "-p", portspec, LOOPBACK,
                "-oX", str(xml["nmap"]), "--datadir", str(datadir),
            ],
            "faithful": [
                *vscan, "-oX", str(xml["faithful"]), "-oJ", str(jsonl["faithful"]),
                "--no-progress", "--no-scripts",
            ],
            "fast": [
                *vscan, "-oX", str(xml["fast"]), "-oJ", str(jsonl["fast"]), "--no-progress",
                "--no-scripts", "--fast",
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
        records = {name: _jsonl(path) for name, path in jsonl.items()}
        fast_vs_faithful = _diff_fp(ports, answers["faithful"], answers["fast"])
        fast_vs_nmap = compare(ports, answers["nmap"], answers["fast"])
        faithful_vs_nmap = compare(ports, answers["nmap"], answers["faithful"])

        def agree(diffs: list[dict[str, Any]]) -> int:
            return len(ports) - len({d["port"] for d in diffs})

        def labelled(diffs: list[dict[str, Any]]) -> list[dict[str, Any]]:
            return [dict(d, label=targets.labels.get(d["port"])) for d in diffs]

        floors = exactness_floors(db, targets, ports, records["faithful"])
        for port, floor in floors.items():
            fast_ms = records["fast"].get(port, {}).get("duration_ms")
            floor["label"] = targets.labels[port]
            floor["fast_s"] = None if fast_ms is None else fast_ms / 1000
            floor["fast_minus_floor_s"] = (
                None if fast_ms is None else round(fast_ms / 1000 - floor["floor_s"], 3)
            )
        slowest = max(ports, key=lambda p: floors[p]["floor_s"])
        return {
            "ports": len(ports),
            "mix": args.mix,
            "kinds": {
                kind: sum(1 for s in targets.mix if s["kind"] == kind)
                for kind in dict.fromkeys(s["kind"] for s in targets.mix)
            }
            | {
                "closed": len(targets.closed),
                "s_server": len(targets.s_server_ports),
                "redis-server": int(targets.redis_port is not None),
            },
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
            "floors": {str(p): floors[p] for p in ports},
            "slowest_floor": {"port": slowest, **floors[slowest]},
            "fast_over_floor_s": runs["fast"]["wall_s"] - floors[slowest]["floor_s"],
            "before_floor": sorted(
                (p for p in ports if (floors[p]["fast_minus_floor_s"] or 0.0) < -0.05),
                key=lambda p: floors[p]["fast_minus_floor_s"] or 0.0,
            ),
        }
    finally:
        targets.close()


def _jsonl(path: Path) -> dict[int, dict[str, Any]]:
    records: dict[int, dict[str, Any]] = {}
    if path.exists():
        for line in path.read_text().splitlines():
            if line.strip():
                record = json.loads(line)
                records[int(record["port"])] = record
    return records


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--silent", type=int, default=3, help="silent ports")
    parser.add_argument("--closed", type=int, default=5)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument("--copies", type=int, default=1, help="repeat the mix N times")
    parser.add_argument("--fast-wait", type=int, default=None, metavar="MS")
    parser.add_argument(
        "--mix",
        choices=("base", "slow"),
        default="base",
        help="slow: add slow greeters, silent ports and openssl s_servers (>= 100 ports)",
    )
    parser.add_argument(
        "--extra-silent",
        type=int,
        default=None,
        metavar="N",
        help=f"--mix slow: more silent ports (default: up to {SLOW_MIX_PORTS} ports in all)",
    )
    parser.add_argument(
        "--s-servers",
        type=int,
        default=2,
        metavar="N",
        help="--mix slow: openssl s_server -www instances (one connection at a time)",
    )
    parser.add_argument(
        "--quick",
        action="store_true",
        help="smoke run (~1 min): slow greeters at 3 and 7 s, one s_server, one closed port",
    )
    parser.add_argument("--nmap", default=shutil.which("nmap") or "nmap")
    parser.add_argument("--output", default="fast_vs_nmap.json")
    args = parser.parse_args()
    if args.quick:
        args.mix, args.closed, args.no_redis = "slow", 1, True
    nmap_version = subprocess.run(
        [args.nmap, "--version"], capture_output=True, text=True, check=False
    ).stdout
    # vscand's own plan and waits, for the exactness floors (the installed probe file)
    db = load_probe_files(find_probe_file())
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="vscand-bench-fast-") as tmp:
            runs.append(run_once(args, Path(tmp), db))
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
                f"{run['slowest_floor']['floor_s']:.1f}",
                f"{run['fast_over_floor_s']:+.2f}",
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
                "max floor (s)",
                "fast - max floor (s)",
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
        slowest = run["slowest_floor"]
        over = run["fast_over_floor_s"]
        print(
            f"run {i}: fast ended {'within' if over >= 0 else 'BEFORE'} {abs(over):.2f} s "
            f"{'of' if over >= 0 else ''} the floor of its slowest port".replace("  ", " ")
            + f" ({slowest['port']} {slowest['label']}: {slowest['floor_s']:.2f} s, "
            f"{slowest['why']}; fast's wall time counts its start-up too)"
        )
        excess = [
            f["fast_minus_floor_s"]
            for f in run["floors"].values()
            if f["fast_minus_floor_s"] is not None
        ]
        if excess:
            print(
                f"run {i}: per port, fast's duration minus the floor: median "
                f"{statistics.median(excess):+.2f} s, max {max(excess):+.2f} s; "
                f"{len(run['before_floor'])} ports answered before their floor"
            )
        for port in run["before_floor"]:
            f = run["floors"][str(port)]
            print(
                f"run {i}: before its floor: port {port} ({f['label']}): fast {f['fast_s']:.2f} s,"
                f" floor {f['floor_s']:.2f} s ({f['why']})"
            )
        for name, proc in run["runs"].items():
            if proc["exit"] != 0:
                print(f"run {i}: {name} exit {proc['exit']}: {proc['stderr_tail']}")
        ok = ok and run["agree_fast_faithful"] >= TARGET_AGREEMENT * run["ports"]
        ok = ok and run["agree_fast_nmap"] >= TARGET_AGREEMENT * run["ports"]
        ok = ok and run["fast_over_floor_s"] <= TARGET_FLOOR_S
        ok = ok and run["fast_over_nmap"] <= TARGET_RATIO
    if len(runs) > 1:
        print(
            "median fast/nmap "
            f"{statistics.median(r['fast_over_nmap'] for r in runs):.3f}x, median fast/faithful "
            f"{statistics.median(r['fast_over_faithful'] for r in runs):.3f}x"
        )
    print(
        f"targets: fast = faithful = nmap on >= {TARGET_AGREEMENT:.1%} of ports, within "
        f"{TARGET_FLOOR_S} s of the slowest port's floor, fast/nmap <= {TARGET_RATIO}x: "
        f"{'met' if ok else 'NOT met'}"
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
