#!/usr/bin/env python3
"""Run the whole suite N times, each from a clean clone, as CI runs it; report every test
that failed at least once.

    python3 tools/test_repeat.py [-n N] [--load] [--rev REV] [--keep DIR]

Each round clones REV (default HEAD) of this repository into a fresh directory and runs
``CI=true bash .ci/run`` there, exactly as CI does (``make test``: the same pytest-xdist
parallelism; then ``make test-debian13``), with ``--junitxml`` added through ``PYTEST_ARGS``
(the Debian 13 step writes its report inside its root: its failures count in the round's exit
status, and its log is ``.cache/debian13/test-logs/test.log`` of the clone; ``--keep DIR``
keeps it). ``--load`` runs a CPU-bound process beside the suite for the whole time (a
``sha256sum`` loop over a 256 MiB file, nice 0), the busy machine that CI may be. The report
lists, per test, the rounds it failed in; exit 0 only when every round was green. Standard
library only: it needs no venv.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections import defaultdict
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent


def failed_tests(junit: Path) -> list[str]:
    """The ids (``file::name``) of the tests that failed or errored in a junit XML report."""
    if not junit.exists():
        return []
    failed = []
    for case in ET.parse(junit).getroot().iter("testcase"):
        if case.find("failure") is not None or case.find("error") is not None:
            path = case.get("classname", "").replace(".", "/")
            failed.append(f"{path}.py::{case.get('name')}")
    return failed


def summary_line(log: str) -> str:
    """pytest's closing line (``N passed, … in S s``), or the last line of the log."""
    lines = [line for line in log.splitlines() if line.strip()]
    for line in reversed(lines):
        if " passed" in line or " failed" in line or " error" in line:
            return line.strip("= ")
    return lines[-1] if lines else "(no output)"


class CpuLoad:
    """A ``sha256sum`` loop over a 256 MiB file in the background (one core kept busy)."""

    def __init__(self, workdir: Path) -> None:
        blob = workdir / "load.bin"
        with open(blob, "wb") as handle:
            handle.truncate(256 << 20)
        self.proc = subprocess.Popen(
            ["bash", "-c", f"while :; do sha256sum {blob} >/dev/null; done"],
            start_new_session=True,
        )

    def stop(self) -> None:
        os.killpg(self.proc.pid, 15)
        self.proc.wait()


def run_round(number: int, rev: str, workdir: Path) -> tuple[int, float, str, list[str]]:
    clone = workdir / f"round-{number}"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
    junit = workdir / f"round-{number}.xml"
    env = dict(os.environ, CI="true", PYTEST_ARGS=f"--junitxml={junit}")
    log_path = workdir / f"round-{number}.log"
    started = time.monotonic()
    with open(log_path, "wb") as log:
        code = subprocess.run(
            ["bash", ".ci/run"],
            check=False,
            cwd=clone,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
        ).returncode
    took = time.monotonic() - started
    text = log_path.read_text(errors="replace")
    failed = failed_tests(junit)
    shutil.rmtree(clone, ignore_errors=True)
    return code, took, summary_line(text), failed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-n", "--rounds", type=int, default=3, help="how many runs (3)")
    parser.add_argument("--load", action="store_true", help="a CPU-bound process beside")
    parser.add_argument("--rev", default="HEAD", help="the commit to clone (HEAD)")
    parser.add_argument("--keep", type=Path, help="keep logs and junit files in DIR")
    args = parser.parse_args()
    if args.rounds < 1:
        parser.error("--rounds must be at least 1")
    rev = subprocess.run(
        ["git", "-C", str(REPO), "rev-parse", args.rev], check=True, capture_output=True, text=True
    ).stdout.strip()
    workdir = Path(tempfile.mkdtemp(prefix="vscand-repeat-"))
    if args.keep:
        args.keep.mkdir(parents=True, exist_ok=True)
    load = CpuLoad(workdir) if args.load else None
    failures: dict[str, list[int]] = defaultdict(list)
    codes = []
    try:
        for number in range(1, args.rounds + 1):
            code, took, line, failed = run_round(number, rev, workdir)
            codes.append(code)
            print(f"round {number}/{args.rounds}: exit {code}, {took:.0f} s: {line}", flush=True)
            for test in failed:
                failures[test].append(number)
            if args.keep:
                for name in (f"round-{number}.log", f"round-{number}.xml"):
                    if (workdir / name).exists():
                        shutil.copy(workdir / name, args.keep / name)
    finally:
        if load is not None:
            load.stop()
        shutil.rmtree(workdir, ignore_errors=True)
    print(
        f"\n{rev[:12]}: {codes.count(0)} of {args.rounds} rounds green"
        + (" (with a CPU-bound process beside)" if args.load else "")
    )
    if failures:
        print("tests that failed at least once (rounds):")
        for test, rounds in sorted(failures.items()):
            print(f"  {test}: {', '.join(map(str, rounds))}")
    elif any(codes):
        print("no test failed, but a round exited non-zero: read its log (--keep DIR)")
    return 0 if not any(codes) else 1


if __name__ == "__main__":
    sys.exit(main())
