"""End to end: ``vscan scan --fast`` gives faithful ``vscan scan``'s answers (127.0.0.1 only).

The services are the scan benchmark's (``benchmarks/scan_vs_nmap.py``'s
``Targets``: ``benchmarks/_targets.py`` in a subprocess plus the machine's
``redis-server`` when installed): banners that hard-match, HTTP servers silent
until a request, banners that only soft-match, services that answer one probe,
unknown protocols, tcpwrapped, silent and closed ports.  Both scans run at the
same time against the same servers::

    vscan scan 127.0.0.1 -p PORTS -oJ faithful.jsonl --no-scripts --no-progress
    vscan scan 127.0.0.1 -p PORTS -oJ fast.jsonl --no-scripts --no-progress --fast

and every port must agree: state, reason, the service object (name, product,
version, extrainfo, hostname, ostype, devicetype, CPE, tunnel, method, conf),
whether a fingerprint is present and the final state.  The match lines are shown
but not compared: how a peer's bytes are split into reads decides which of two
lines of a probe hits first (banner alone, or banner and reply in one read), in
either mode, as between faithful mode and Nmap (DESIGN.md).  No timing is
asserted.  The faithful scan bounds the module's time (~160 s: the silent port
waits out every probe).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from scan_vs_nmap import Targets  # noqa: E402

from tests.e2e.oracle_run import vscan_command  # noqa: E402
from vscand.cachedir import user_cache_dir  # noqa: E402

SCAN_TIMEOUT = 330.0


def _vscan() -> list[str]:
    """This checkout's vscan, on the oracle's probe file (``VSCAND_ORACLE``; oracle_run)."""
    return vscan_command()


def _answers(path: Path) -> dict[int, dict[str, Any]]:
    answers = {}
    for line in path.read_text().splitlines():
        result = json.loads(line)
        service = dict(result["service"] or {})
        fingerprint = service.pop("fingerprint", None)
        answers[result["port"]] = {
            "state": result["state"],
            "reason": result["reason"],
            "service": service,
            "fingerprint": fingerprint is not None,
            "final_state": result.get("final_state"),
            "matches": result.get("matches"),
        }
    return answers


@pytest.fixture(scope="module")
def scans() -> Any:
    with tempfile.TemporaryDirectory(prefix="vscand-e2e-fast-") as tmp:
        workdir = Path(tmp)
        # ports from 23000: the benchmarks take theirs from 21000 (a "closed" port of a
        # benchmark running meanwhile must not be one of these services)
        targets = Targets(silent=1, closed=2, redis=True, workdir=workdir, port_start=23000)
        try:
            portlist = ",".join(str(p) for p in targets.ports)
            env = dict(os.environ)
            env.setdefault("VSCAND_CACHE_DIR", str(user_cache_dir()))
            outputs = {"faithful": workdir / "faithful.jsonl", "fast": workdir / "fast.jsonl"}
            procs = {}
            for name, out in outputs.items():
                cmd = [
                    *_vscan(), "scan", "127.0.0.1", "-p", portlist, "-oJ", str(out),
                    "--no-scripts", "--no-progress", *(["--fast"] if name == "fast" else []),
                ]  # fmt: skip
                log = open(workdir / f"{name}.log", "wb")  # noqa: SIM115 - closed below
                procs[name] = (
                    subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env),
                    log,
                )
            deadline = time.monotonic() + SCAN_TIMEOUT
            for name, (proc, log) in procs.items():
                try:
                    proc.wait(timeout=max(1.0, deadline - time.monotonic()))
                except subprocess.TimeoutExpired:
                    for other, _ in procs.values():
                        other.kill()
                        other.wait()
                    pytest.fail(f"{name} scan did not finish within {SCAN_TIMEOUT} s")
                finally:
                    log.close()
                text = (workdir / f"{name}.log").read_text(errors="replace")
                assert proc.returncode == 0, f"{name} scan failed:\n{text}"
            yield (
                targets.labels,
                _answers(outputs["faithful"]),
                _answers(outputs["fast"]),
            )
        finally:
            targets.close()


def test_fast_equals_faithful_on_every_port(scans: Any) -> None:
    labels, faithful, fast = scans
    assert set(faithful) == set(labels), "faithful did not report every port"
    assert set(fast) == set(labels), "fast did not report every port"

    def answer(rec: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in rec.items() if k != "matches"}

    differ = [
        f"{port} ({labels[port]}):\n  faithful {faithful[port]}\n  fast     {fast[port]}"
        for port in sorted(labels)
        if answer(faithful[port]) != answer(fast[port])
    ]
    assert not differ, "fast mode disagrees with faithful mode:\n" + "\n".join(differ)


def test_the_set_covers_the_answers_that_matter(scans: Any) -> None:
    """The comparison covers hard and soft matches, no-match, tcpwrapped and closed ports."""
    _, faithful, _ = scans
    finals = {a["final_state"] for a in faithful.values()}
    assert {"hardmatched", "softmatched", "nomatch", "tcpwrapped"} <= finals
    assert any(a["state"] == "closed" for a in faithful.values())
    assert any(a["fingerprint"] for a in faithful.values())
