"""Run ``nmap -sV`` (NSE off) and ``vscan scan`` side by side on the same loopback ports."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.e2e.compare import parse_jsonl, parse_xml

REPO = Path(__file__).resolve().parent.parent.parent


def vscan_command() -> list[str]:
    script = Path(sys.executable).parent / "vscan"
    if script.exists():
        return [str(script)]
    return [sys.executable, "-c", "import sys; from vscand.cli import main; sys.exit(main())"]


@dataclass
class BothScans:
    nmap: dict[int, dict[str, Any]]
    vscan: dict[int, dict[str, Any]]
    vscan_json: dict[int, dict[str, Any]]
    nmap_xml: Path
    vscan_xml: Path
    seconds: dict[str, float]
    logs: dict[str, str]


def scan_both(nmap: str, ports: list[int], workdir: Path, timeout: float) -> BothScans:
    """Both scanners at once on 127.0.0.1 ``ports``; NSE off (an empty ``script.db``)."""
    datadir = workdir / "datadir"
    (datadir / "scripts").mkdir(parents=True, exist_ok=True)
    (datadir / "scripts" / "script.db").write_text("")
    portlist = ",".join(str(p) for p in sorted(ports))
    nmap_xml, vscan_xml, vscan_json = (
        workdir / "nmap.xml",
        workdir / "vscan.xml",
        workdir / "vscan.jsonl",
    )
    nmap_cmd = [nmap, "-sV", "-Pn", "-n", "-p", portlist, "127.0.0.1", "-oX", str(nmap_xml)]
    vscan_cmd = [*vscan_command(), "scan", "127.0.0.1", "-p", portlist, "-oX", str(vscan_xml)]
    commands = {
        "nmap": [*nmap_cmd, "--datadir", str(datadir)],
        # both without version scripts: nmap's script.db is empty
        "vscan": [*vscan_cmd, "-oJ", str(vscan_json), "--no-progress", "--no-scripts"],
    }
    env = dict(os.environ)
    env.setdefault("VSCAND_CACHE_DIR", str(REPO / ".cache" / "vscand"))
    seconds: dict[str, float] = {}
    with contextlib.ExitStack() as stack:
        procs = {}
        started = time.monotonic()
        for name, cmd in commands.items():
            out = stack.enter_context(open(workdir / f"{name}.log", "wb"))
            procs[name] = subprocess.Popen(
                cmd, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, env=env
            )
        deadline = started + timeout
        while len(seconds) < len(procs):
            for name, proc in procs.items():
                if name not in seconds and proc.poll() is not None:
                    seconds[name] = round(time.monotonic() - started, 1)
            if time.monotonic() > deadline:
                for proc in procs.values():
                    if proc.poll() is None:
                        proc.kill()
                        proc.wait()
                raise AssertionError(f"scans did not finish within {timeout} s (done: {seconds})")
            time.sleep(0.1)
    logs = {name: (workdir / f"{name}.log").read_text(errors="replace") for name in commands}
    if procs["nmap"].returncode != 0:
        raise AssertionError(f"nmap failed:\n{logs['nmap']}")
    if procs["vscan"].returncode != 0:
        raise AssertionError(f"vscan failed:\n{logs['vscan']}")
    if "<script " in nmap_xml.read_text():
        raise AssertionError("NSE ran: the empty script.db was ignored")
    keep = os.environ.get("VSCAND_E2E_KEEP")
    if keep:  # keep both outputs and logs for a look after the run
        dest = Path(keep) / f"both-{workdir.parent.name}-{workdir.name}"  # one per run
        dest.mkdir(parents=True, exist_ok=True)
        for name in ("nmap.xml", "vscan.xml", "vscan.jsonl", "nmap.log", "vscan.log"):
            shutil.copy(workdir / name, dest / name)
    return BothScans(
        nmap=parse_xml(nmap_xml),
        vscan=parse_xml(vscan_xml),
        vscan_json=parse_jsonl(vscan_json),
        nmap_xml=nmap_xml,
        vscan_xml=vscan_xml,
        seconds=seconds,
        logs=logs,
    )
