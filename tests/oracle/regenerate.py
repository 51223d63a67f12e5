"""Record what ``nmap -sV`` answers for every oracle case (fixtures/nmap-7.93.json).

Run from the repository root::

    .venv/bin/python -m tests.oracle.regenerate        # or: python tests/oracle/regenerate.py

All traffic stays on 127.0.0.1.  Each case gets a replay server (replay.py); nmap
runs once per probe file over the ports of its cases, all runs concurrently::

    nmap -sV --version-all -Pn -n -p <ports> 127.0.0.1 -oX <file> --version-trace
         --datadir <tmp> --min-parallelism <n> --versiondb <probe file>

* ``--version-all`` (intensity 9): every probe is sent whatever its rarity, and
  soft-match pruning is off, so the probe a case answers is always reached.
* ``--version-trace`` gives the "Probe P matched with F line N" lines (it also
  raises the debug level, which only changes fingerprint size limits).
* NSE: ``-sV`` runs the ``version`` script category (http-server-header,
  rpcinfo, ...), which can rewrite the engine's answer.  ``--datadir`` points to a
  temporary directory whose ``scripts/script.db`` is empty (created here, never
  committed): nmap then reports "Loaded 0 scripts" and the result is the pure
  probe engine's.  Every other data file falls back to nmap's installed copy.
* Soft vs hard: a port that finished SOFTMATCHED carries a ``servicefp``
  attribute (it returned data, no hard match, intensity >= 7); a hard match never
  does.  Method "table" means no line matched (NOMATCH).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable
from pathlib import Path
from typing import Any

if __package__ in (None, ""):
    sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from tests.oracle.cases import CASES, Case, probe_file_path
from tests.oracle.replay import LOOPBACK, ReplayServer
from vscand.probes.parser import find_probe_file, load_probe_files

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "nmap-7.93.json"
FIELDS = (
    "name",
    "product",
    "version",
    "extrainfo",
    "hostname",
    "ostype",
    "devicetype",
    "tunnel",
    "method",
    "conf",
)

TRACE_RE = re.compile(
    r"^Service scan (?:(soft|hard) )?match \(Probe (\S+) matched with (\S+) line (\d+)\): "
    r"127\.0\.0\.1:(\d+) is (.*)$"
)


def nmap_binary() -> str | None:
    return shutil.which(os.environ.get("VSCAND_NMAP", "nmap"))


def probe_file_for(probes: str) -> str:
    path = probe_file_path(probes)
    return find_probe_file(None) if path is None else str(path)


def trigger_for(case: Case, dbs: dict[str, Any]) -> bytes | None:
    if case.probe == "NULL":
        return None
    if case.probes not in dbs:
        dbs[case.probes] = load_probe_files(probe_file_for(case.probes), [])
    return bytes(dbs[case.probes].find(case.probe, "TCP").string)


def parse_xml(path: Path) -> tuple[str, dict[int, dict[str, Any]]]:
    root = ET.parse(path).getroot()
    ports: dict[int, dict[str, Any]] = {}
    for port in root.iter("port"):
        num = int(port.get("portid", "0"))
        state = port.find("state")
        svc = port.find("service")
        rec: dict[str, Any] = {"state": state.get("state") if state is not None else None}
        if svc is not None:
            for key in FIELDS:
                value = svc.get(key)
                rec[key] = int(value) if key == "conf" and value is not None else value
            rec["servicefp"] = svc.get("servicefp") is not None
            rec["cpe"] = [c.text or "" for c in svc.findall("cpe")]
        ports[num] = rec
    return root.get("version", "?"), ports


def parse_trace(text: str) -> dict[int, list[dict[str, Any]]]:
    found: dict[int, list[dict[str, Any]]] = {}
    for line in text.splitlines():
        m = TRACE_RE.match(line.strip())
        if m:
            kind, probe, via, lineno, port, rest = m.groups()
            found.setdefault(int(port), []).append(
                {"kind": kind, "probe": probe, "via": via, "line": int(lineno), "text": rest}
            )
    return found


def final_match(rec: dict[str, Any], traces: list[dict[str, Any]]) -> dict[str, Any] | None:
    """The trace line behind the final answer: first soft match, or the last hard one."""
    if rec.get("method") != "probed" or not traces:
        return None
    soft = bool(rec.get("servicefp"))
    picked = traces[0] if soft else traces[-1]
    return {"probe": picked["probe"], "via": picked["via"], "line": picked["line"]}


def run_oracle(
    cases: Iterable[Case], workdir: Path, nmap: str, log: Any = None
) -> tuple[str, dict[str, dict[str, Any]], dict[str, Any]]:
    """Replay every case to nmap; returns (nmap version, records by case id, run info)."""
    cases = list(cases)
    datadir = workdir / "datadir"
    (datadir / "scripts").mkdir(parents=True, exist_ok=True)
    (datadir / "scripts" / "script.db").write_text("")
    dbs: dict[str, Any] = {}
    groups: dict[str, list[Case]] = {}
    for case in cases:
        groups.setdefault(case.probes, []).append(case)
    results: dict[str, dict[str, Any]] = {}
    info: dict[str, Any] = {"runs": {}}
    version = "?"
    started = time.monotonic()
    with ReplayServer() as server, contextlib.ExitStack() as stack:
        ports: dict[str, int] = {}
        for case in cases:
            ports[case.id] = server.add(case.response, trigger_for(case, dbs))
        procs = []
        for probes, members in groups.items():
            stem = Path(probes).stem
            xml_out = workdir / f"{stem}.xml"
            trace_out = workdir / f"{stem}.trace"
            cmd = [
                nmap,
                "-sV",
                "--version-all",
                "-Pn",
                "-n",
                "-p",
                ",".join(str(ports[c.id]) for c in members),
                LOOPBACK,
                "-oX",
                str(xml_out),
                "--version-trace",
                "--datadir",
                str(datadir),
                "--min-parallelism",
                str(max(len(members), 20)),
                "--versiondb",
                probe_file_for(probes),
            ]
            if log:
                log(f"[{probes}] {len(members)} cases: {' '.join(cmd[:6])} ...")
            handle = stack.enter_context(open(trace_out, "w"))
            procs.append(
                (
                    probes,
                    members,
                    xml_out,
                    trace_out,
                    handle,
                    time.monotonic(),
                    subprocess.Popen(cmd, stdout=handle, stderr=subprocess.STDOUT),
                )
            )
        ended: dict[str, float] = {}
        deadline = time.monotonic() + 900
        while len(ended) < len(procs):
            for probes, *_rest, proc in procs:
                if probes not in ended and proc.poll() is not None:
                    ended[probes] = time.monotonic()
            if time.monotonic() > deadline:
                for _p, *_rest, proc in procs:
                    if proc.poll() is None:
                        proc.kill()
                raise RuntimeError("nmap did not finish within 900 s")
            time.sleep(0.05)
        for probes, members, xml_out, trace_out, handle, t0, proc in procs:
            rc = proc.returncode
            handle.flush()
            seconds = round(ended[probes] - t0, 1)
            info["runs"][probes] = {"cases": len(members), "seconds": seconds, "rc": rc}
            if log:
                log(f"[{probes}] nmap exit {rc} after {seconds} s")
            if rc != 0:
                raise RuntimeError(f"nmap failed for {probes}: see {trace_out}")
            version, by_port = parse_xml(xml_out)
            traces = parse_trace(trace_out.read_text(errors="replace"))
            for case in members:
                port = ports[case.id]
                rec = by_port.get(port, {"state": None})
                rec["trace"] = traces.get(port, [])
                rec["match"] = final_match(rec, rec["trace"])
                rec["soft"] = None if rec.get("method") != "probed" else bool(rec.get("servicefp"))
                results[case.id] = rec
    info["seconds"] = round(time.monotonic() - started, 1)
    return version, results, info


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--output", type=Path, default=FIXTURE)
    parser.add_argument("--keep", type=Path, help="keep nmap's XML and trace output here")
    parser.add_argument("--only", action="append", default=[], help="case id (repeatable)")
    args = parser.parse_args(argv)
    nmap = nmap_binary()
    if nmap is None:
        print("nmap not found", file=sys.stderr)
        return 2
    cases = [c for c in CASES if not args.only or c.id in args.only]
    with tempfile.TemporaryDirectory(prefix="vscand-oracle-") as tmp:
        workdir = args.keep or Path(tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        version, results, info = run_oracle(cases, workdir, nmap, log=print)
    files = sorted({c.probes for c in cases})
    doc = {
        "nmap_version": version,
        "generated_by": "tests/oracle/regenerate.py",
        "command": "nmap -sV --version-all -Pn -n -p <ports> 127.0.0.1 -oX - --version-trace "
        "--datadir <tmp with empty scripts/script.db> --min-parallelism <n> --versiondb <file>",
        "probe_files": {
            f: __import__("hashlib").sha256(Path(probe_file_for(f)).read_bytes()).hexdigest()[:16]
            for f in files
        },
        "seconds": info["seconds"],
        "cases": {
            c.id: {
                "probes": c.probes,
                "probe": c.probe,
                "category": c.category,
                "digest": c.digest,
                "desc": c.desc,
                "nmap": results[c.id],
            }
            for c in cases
        },
    }
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(doc, indent=1, sort_keys=False) + "\n")
    print(f"{len(cases)} cases written to {args.output} in {info['seconds']} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
