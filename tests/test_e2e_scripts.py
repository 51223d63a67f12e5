"""End to end, version scripts on: ``vscan scan`` against ``nmap -sV`` (NSE on) in a
private network namespace, over TCP and over UDP.

rpcinfo needs a portmapper on port 111, which the machine's own namespace may
not give us; so the module creates a namespace (``ip netns add``, loopback up),
runs a real ``rpcbind`` there (with a private ``/run``: ``unshare --mount``),
starts the targets of ``tests/e2e/script_servers_rpc_http.py`` inside it (ONC RPC
programs over TCP and over UDP, one of each registered with rpcbind, one of
each not; an HTTP server with an unknown Server header; a Docker API
lookalike; a Skype v2 lookalike), then runs four scans inside it at the same
time::

    nmap -sV -Pn -n -p 111,<tcp ports> 127.0.0.1 -oX nmap.xml      # its 44 version scripts
    vscan scan 127.0.0.1 -p 111,<tcp ports> -oX vscan.xml -oJ vscan.jsonl
    nmap -sU -sV -Pn -n -p U:111,<udp ports> 127.0.0.1 -oX nmap-udp.xml
    vscan scan 127.0.0.1 -p U:111,<udp ports> -oX vscan-udp.xml -oJ vscan-udp.jsonl

and requires agreement on every port (state and its reason, service name, product, version,
extra info, hostname, ostype, devicetype, tunnel, method, conf, CPEs,
fingerprint presence); vscan's ``rpc`` object must say what nmap's name,
version and ``RPC #n`` say. The namespace and everything in it are removed
afterwards. Needs root, ``ip``, ``unshare`` and ``rpcbind``: skips without
them, fails under CI=true.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

import tests.e2e.masks_existing  # noqa: F401  (registers the script masks)
from tests.e2e.compare import (
    NMAP_SCRIPT_OUTPUT,
    differences,
    parse_jsonl,
    parse_xml,
)
from tests.e2e.oracle_run import keep_outputs, oracle_nmap, run_side_by_side, vscan_command

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
IN_CI = os.environ.get("CI") == "true"
SCAN_TIMEOUT = 300.0


@dataclass(frozen=True)
class Case:
    id: str
    what: str
    premise: dict[str, Any]
    protocol: str = "tcp"


CASES = [
    Case(
        "rpcbind",
        "rpcbind on 111/tcp: rpcinfo then rpc-grind",
        {"name": "rpcbind", "version": "2-4", "extrainfo": "RPC #100000", "method": "probed"},
    ),
    Case(
        "rpc-registered",
        "mountd v1-3 registered with rpcbind: rpcinfo rewrites it (soft match)",
        {"name": "mountd", "version": "1-3", "extrainfo": "RPC #100005", "conf": "10"},
    ),
    Case(
        "rpc-unregistered",
        "status v1 not registered: rpc-grind finds it (hard match)",
        {"name": "status", "version": "1", "extrainfo": "RPC #100024", "servicefp": False},
    ),
    Case(
        "rpcbind-udp",
        "rpcbind on 111/udp: RPCCheck hard match, then rpcinfo over UDP",
        {"name": "rpcbind", "version": "2-4", "extrainfo": "RPC #100000", "method": "probed"},
        "udp",
    ),
    Case(
        "rpc-registered-udp",
        "nlockmgr v1, 3, 4 over UDP, registered: rpcinfo (over UDP) rewrites it",
        {"name": "nlockmgr", "version": "1-4", "extrainfo": "RPC #100021", "conf": "10"},
        "udp",
    ),
    Case(
        "rpc-unregistered-udp",
        "walld v1 over UDP, not registered: rpc-grind over UDP finds it (hard match)",
        {"name": "walld", "version": "1", "extrainfo": "RPC #100008", "servicefp": False},
        "udp",
    ),
    Case(
        "rpc-registered-silent-udp",
        "rquotad v1-2 registered over UDP on a port that never answers (open|filtered, no"
        " table name): only rpcinfo names it",
        {"state": "open|filtered", "name": "rquotad", "version": "1-2", "servicefp": False},
        "udp",
    ),
    Case(
        "rpc-pmap2-only-udp",
        "answers only NULL calls to 100000 v2 over UDP (silent to every probe): rpc-grind's"
        " confirmation call makes it open, nothing found",
        {"state": "open", "service": False},
        "udp",
    ),
    Case(
        "http-server-header",
        "HTTP with an unknown Server header on 8080: http-server-header sets the product",
        {"product": "ZzzServer/1.2", "method": "probed", "conf": "10"},
    ),
    Case(
        "docker",
        "Docker API lookalike on 2375: docker-version",
        {"name": "docker", "product": "Docker", "version": "20.10.24"},
    ),
    Case(
        "skype",
        "Skype v2 lookalike on 80: skypev2-version",
        {"name": "skype2", "product": "Skype"},
    ),
]


def _require(program: str) -> str:
    found = shutil.which(program) or next(
        (p for p in (f"/usr/sbin/{program}", f"/sbin/{program}") if Path(p).exists()), None
    )
    if found is None:
        message = f"{program} is not installed"
        if IN_CI:
            pytest.fail(message)
        pytest.skip(message)
    return found


@dataclass
class Run:
    ports: dict[str, int]
    #: protocol -> port -> record
    nmap: dict[str, dict[int, dict[str, Any]]]
    vscan: dict[str, dict[int, dict[str, Any]]]
    vscan_json: dict[str, dict[int, dict[str, Any]]]
    logs: dict[str, str]


@contextlib.contextmanager
def _namespace(ip: str) -> Iterator[str]:
    name = f"vscand-scripts-{os.getpid()}"
    subprocess.run([ip, "netns", "add", name], check=True, capture_output=True)
    try:
        subprocess.run(
            [ip, "netns", "exec", name, ip, "link", "set", "lo", "up"],
            check=True,
            capture_output=True,
        )
        yield name
    finally:
        pids = subprocess.run(
            [ip, "netns", "pids", name], capture_output=True, text=True, check=False
        ).stdout.split()
        for pid in pids:  # only processes of our own namespace
            with contextlib.suppress(ProcessLookupError, ValueError):
                os.kill(int(pid), signal.SIGKILL)
        subprocess.run([ip, "netns", "del", name], check=False, capture_output=True)


def _need_root() -> None:
    """The script e2e files run their targets in a network namespace of their own."""
    if os.geteuid() != 0:
        if IN_CI:
            pytest.fail("the script e2e test needs root (network namespaces)")
        pytest.skip("needs root for a network namespace")


def _start_target_module(
    stack: contextlib.ExitStack[Any], inside: list[str], module: str, what: str
) -> dict[str, int]:
    """Run ``python -m module`` inside the namespace (killed by *stack*); its first line of
    output is the JSON map of case id to port."""
    targets = subprocess.Popen(
        [*inside, sys.executable, "-m", module],
        cwd=REPO,
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    stack.callback(targets.kill)
    assert targets.stdout is not None
    line = targets.stdout.readline()
    assert line, f"the {what} did not start"
    ports: dict[str, int] = json.loads(line)
    return ports


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    _need_root()
    nmap = oracle_nmap()
    ip, rpcbind, unshare = _require("ip"), _require("rpcbind"), _require("unshare")
    with (
        tempfile.TemporaryDirectory(prefix="vscand-scripts-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        ns = stack.enter_context(_namespace(ip))
        inside = [ip, "netns", "exec", ns]
        portmapper = subprocess.Popen(
            [*inside, unshare, "--mount", "sh", "-c",
             f"mount -t tmpfs tmpfs /run && exec {rpcbind} -f -i"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )  # fmt: skip
        stack.callback(portmapper.kill)
        deadline = time.monotonic() + 20
        while True:
            probe = subprocess.run(
                [*inside, "rpcinfo", "-p", "127.0.0.1"], capture_output=True, check=False
            )
            if probe.returncode == 0:
                break
            if time.monotonic() > deadline or portmapper.poll() is not None:
                pytest.fail(f"rpcbind did not start: {probe.stderr!r}")
            time.sleep(0.2)
        ports = _start_target_module(
            stack, inside, "tests.e2e.script_servers_rpc_http", "target servers"
        )
        ports["rpcbind"] = ports["rpcbind-udp"] = 111
        portlists = {
            proto: ",".join(
                str(p) for p in sorted({ports[c.id] for c in CASES if c.protocol == proto})
            )
            for proto in ("tcp", "udp")
        }
        commands: dict[str, list[str]] = {}
        for proto, suffix in (("tcp", ""), ("udp", "-udp")):
            portspec = portlists[proto] if proto == "tcp" else "U:" + portlists[proto]
            scan_type = [] if proto == "tcp" else ["-sU"]
            commands[f"nmap{suffix}"] = [
                *inside,
                nmap,
                *scan_type,
                "-sV",
                *NMAP_SCRIPT_OUTPUT,
                "-Pn",
                "-n",
                "-p",
                portspec,
                "127.0.0.1",
                "-oX",
                str(workdir / f"nmap{suffix}.xml"),
            ]
            commands[f"vscan{suffix}"] = [
                *inside, *vscan_command(), "scan", "127.0.0.1", "-p", portspec,
                "-oX", str(workdir / f"vscan{suffix}.xml"),
                "-oJ", str(workdir / f"vscan{suffix}.jsonl"), "--no-progress",
                "--script-output",
            ]  # fmt: skip
        _seconds, logs = run_side_by_side(commands, workdir, SCAN_TIMEOUT)
        keep_outputs(workdir, "scripts-")
        yield Run(
            ports,
            nmap={
                "tcp": parse_xml(workdir / "nmap.xml"),
                "udp": parse_xml(workdir / "nmap-udp.xml"),
            },
            vscan={
                "tcp": parse_xml(workdir / "vscan.xml"),
                "udp": parse_xml(workdir / "vscan-udp.xml"),
            },
            vscan_json={
                "tcp": parse_jsonl(workdir / "vscan.jsonl"),
                "udp": parse_jsonl(workdir / "vscan-udp.jsonl"),
            },
            logs=logs,
        )


def _rpc_from_nmap(rec: dict[str, Any]) -> dict[str, Any] | None:
    """The ``rpc`` object nmap's answer implies: ``name low-high (RPC #n)``."""
    extrainfo = rec.get("extrainfo") or ""
    if not extrainfo.startswith("RPC #"):
        return None
    low, _, high = (rec.get("version") or "").partition("-")
    return {
        "program": int(extrainfo[len("RPC #") :]),
        "name": rec.get("name"),
        "low": int(low),
        "high": int(high or low),
    }


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_premise(run: Run, case: Case) -> None:
    """nmap's own answer is what the case was built for (else it tests nothing)."""
    rec = run.nmap[case.protocol].get(run.ports[case.id])
    assert rec is not None
    assert rec["protocol"] == case.protocol
    for key, want in {"state": "open", **case.premise}.items():
        got = rec["servicefp"] is not None if key == "servicefp" else rec.get(key)
        assert got == want, f"{case.id}: nmap {key}={got!r}, expected {want!r}: {rec}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_port_agrees(run: Run, case: Case) -> None:
    port = run.ports[case.id]
    nmap_rec, vscan_rec = run.nmap[case.protocol].get(port), run.vscan[case.protocol].get(port)
    diffs = differences(nmap_rec, vscan_rec)
    if nmap_rec and vscan_rec and nmap_rec["reason"] != vscan_rec["reason"]:
        # the state's reason too: a script may set the state (reason script-set)
        diffs.append(f"reason: nmap={nmap_rec['reason']!r} vscan={vscan_rec['reason']!r}")
    record = run.vscan_json[case.protocol].get(port, {})
    scripts = record.get("service", {}).get("scripts")
    assert not diffs, (
        f"{case.id} (port {port}/{case.protocol}) disagrees:\n  "
        + "\n  ".join(diffs)
        + f"\n  vscan scripts: {scripts}"
        + f"\n  vscan final_state={record.get('final_state')} matches={record.get('matches')}"
    )


RPC_CASES = [c for c in CASES if c.id.startswith("rpc") and "service" not in c.premise]


@pytest.mark.parametrize("case", RPC_CASES, ids=[c.id for c in RPC_CASES])
def test_rpc_object_agrees(run: Run, case: Case) -> None:
    """vscan's ``rpc`` object says what nmap's name, version and ``RPC #n`` say."""
    port = run.ports[case.id]
    nmap_rec = run.nmap[case.protocol].get(port)
    assert nmap_rec is not None
    want = _rpc_from_nmap(nmap_rec)
    assert want is not None, f"{case.id}: nmap names no RPC program: {nmap_rec}"
    got = run.vscan_json[case.protocol].get(port, {}).get("service", {}).get("rpc")
    assert got == want, f"{case.id} ({port}/{case.protocol}): vscan rpc={got!r}, nmap says {want!r}"


def test_every_port_reported(run: Run) -> None:
    for proto in ("tcp", "udp"):
        wanted = {run.ports[c.id] for c in CASES if c.protocol == proto}
        assert set(run.nmap[proto]) == wanted, f"nmap ({proto}) did not report every port"
        assert set(run.vscan[proto]) == wanted, f"vscan ({proto}) did not report every port"
        assert set(run.vscan_json[proto]) == wanted, f"vscan -oJ ({proto})"


def test_script_output_premise(run: Run) -> None:
    """nmap printed these scripts' results (so comparing them is not vacuous)."""
    shown = {sid for recs in run.nmap.values() for rec in recs.values() for sid in rec["scripts"]}
    assert {"rpcinfo", "docker-version", "http-server-header"} <= shown, shown
