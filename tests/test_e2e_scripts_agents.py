"""End to end, the agents-and-small-services version scripts: ``vscan scan`` against
``nmap -sV`` (NSE on) in a private network namespace, TCP and UDP.

The scripts' rules want standard ports (vmware-version likely-HTTP ports, ovs-agent-version
8899, mcafee-epo-agent 8081, openlookup-info 5850, rfc868-time 37, cccam-version 12000) and
some of them are privileged; so the module creates a network namespace (loopback only),
starts the lookalikes of ``tests/e2e/script_servers_agents.py`` there and runs four scans at
once inside it::

    nmap -sV --script version -Pn -n -p <tcp ports> 127.0.0.1 -oX nmap.xml
    vscan scan 127.0.0.1 -p <tcp ports> -oX vscan.xml -oJ vscan.jsonl
    nmap -sU -sV --script version -Pn -n -p 37 127.0.0.1 -oX nmap-udp.xml
    vscan scan 127.0.0.1 -p U:37 -oX vscan-udp.xml

(``--script version``: the same scripts as ``-sV`` alone, whose output nmap prints only
when scripts were asked for) and requires agreement on every port (the fields of
``tests/e2e/compare.py``, script output included), ``ndiff`` without a differing line
and vscan's ``-oX`` valid against Nmap's DTD. The time service's output is the peer's
clock: ``rfc868-time`` is masked (``SCRIPT_MASKS``, listed in DESIGN.md); the fixed-time
lookalikes are also compared unmasked. Needs root and ``ip``: skips without them, fails
under CI=true.
"""

from __future__ import annotations

import contextlib
import datetime
import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.compare import SCRIPT_MASKS, differences, ndiff, parse_jsonl, parse_xml
from tests.e2e.oracle_run import keep_outputs, oracle_nmap, run_side_by_side, vscan_command
from tests.test_e2e_scripts import (
    IN_CI,
    SCAN_TIMEOUT,
    Case,
    _namespace,
    _need_root,
    _require,
    _start_target_module,
)

pytestmark = pytest.mark.e2e

DTD = Path("/usr/share/nmap/nmap.dtd")
#: ``nmap -sV`` runs the version scripts but prints their output only when scripts were
#: asked for (output.cc writes a port's script results under ``o.script``, not
#: ``o.scriptversion``); ``--script version`` names the same scripts (the version
#: category) and makes nmap print what they return, for the comparison
SCRIPT_OUTPUT = ("--script", "version")
_TIMESTAMP = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d")


def _mask_time(value: Any) -> Any:
    """rfc868-time prints the peer's clock: its timestamps become a placeholder."""
    if isinstance(value, str):
        return _TIMESTAMP.sub("<time>", value)
    if isinstance(value, list):
        return [_mask_time(v) for v in value]
    if isinstance(value, tuple):
        return tuple(_mask_time(v) for v in value)
    return value


SCRIPT_MASKS["rfc868-time"] = _mask_time

AGENT_GUID = "D2E157F4-B917-4D31-BEF0-32074BADF081"
VMWARE_HTTP_OUTPUT = (
    "\n  Server version: VMware ESXi 6.7.0\n  Build: 8169922\n  Locale version: INTL 000"
    "\n  OS type: vmnix-x86\n  Product Line ID: embeddedEsx"
)
VMWARE_HTTPS_OUTPUT = (
    "\n  Server version: VMware ESX 4.1.0\n  Build: 348481\n  Locale version: INTL nil"
    "\n  OS type: vmnix-x86"
)

CASES = [
    Case(
        "vmware-http",
        "plain HTTP on 80, no product: vmware-version names it from the SOAP API",
        {
            "name": "http",
            "product": "VMware ESXi SOAP API",
            "version": "6.7.0",
            "cpe": ["cpe:/o:vmware:ESXi:6.7.0"],
            "script:vmware-version": VMWARE_HTTP_OUTPUT,
        },
    ),
    Case(
        "vmware-https",
        "TLS on 443, ESX 4.1's welcome page names it: the script keeps the product, adds a CPE",
        {
            "name": "http",
            "tunnel": "ssl",
            "product": "VMware ESX Server httpd",
            "cpe": ["cpe:/o:vmware:esx:4.1.0", "cpe:/o:vmware:ESX:4.1.0"],
            "script:vmware-version": VMWARE_HTTPS_OUTPUT,
        },
    ),
    Case(
        "vmware-lying",
        "8080: /sdk announces more body than it sends: no update, no output",
        {"name": "http-proxy", "product": None, "script:vmware-version": None},
    ),
    Case(
        "ovs",
        "BaseHTTPServer on 8899: 501 to GET, 403 'access attempt' to XML-RPC: 3.0.1",
        {"name": "ovs-agent", "product": "Oracle Virtual Server Agent", "version": "3.0.1"},
    ),
    Case(
        "mcafee",
        "8081 without a product: the MSIE GET gets the agent's XML",
        {
            "name": "http",
            "product": "McAfee ePolicy Orchestrator Agent",
            "version": "4.5.0.1852",
            "hostname": "TESTSERVER",
            "extrainfo": f"ePOServerName: EPOSERVER, AgentGuid: {AGENT_GUID}",
        },
    ),
    Case(
        "mcafee-named",
        "8082, named ePolicy Orchestrator by Nmap's probes: the rule by product",
        {
            "product": "McAfee ePolicy Orchestrator Agent",
            "version": "4.6.0.3122",
            "hostname": "EPOAGENT",
        },
    ),
    Case(
        "netbuster",
        "12345: 'NetBus 1.70' without CR, then closed: NSE's buffer ends nil: NetBuster",
        {"name": "netbus", "product": "NetBuster", "extrainfo": "honeypot", "method": "probed"},
    ),
    Case(
        "netbus",
        "12346: NetBus answers the password: nothing changes",
        {"name": "netbus", "product": "NetBus trojan", "version": "1.70"},
    ),
    Case(
        "netbus-silent",
        "12347: 'NetBus 1.70\\r', then silent to the password: after 5 s, NetBuster",
        {"name": "netbus", "product": "NetBuster", "version": None, "ostype": "Windows"},
    ),
    Case(
        "openlookup",
        "5850: the hello netstring: name openlookup, version the raw NSON value",
        {"name": "openlookup", "product": "OpenLookup", "version": "s2.7", "method": "probed"},
    ),
    Case(
        "time",
        "37: 2000-01-01 (no probe names it; the table does): hard match, 32 bits",
        {
            "name": "time",
            "extrainfo": "32 bits",
            "method": "probed",
            "conf": "10",
            "script:rfc868-time": "2000-01-01T00:00:00",
        },
    ),
    Case(
        "time64",
        "2037: a 64-bit answer Nmap's NULL probe names time",
        {"name": "time", "extrainfo": "64 bits", "script:rfc868-time": "2019-02-02T11:39:44"},
    ),
    Case(
        "cccam",
        "12000: 16 random bytes per connection: cccam",
        {
            "name": "cccam",
            "version": "CCcam DVR card sharing system",
            "method": "probed",
            "servicefp": None,
        },
    ),
    Case(
        "time-udp",
        "37/udp: the current time for an empty datagram",
        {"name": "time", "extrainfo": "32 bits", "method": "probed"},
        "udp",
    ),
]
FIXED_TIME = {"time": "2000-01-01T00:00:00", "time64": "2019-02-02T11:39:44"}


@dataclass
class Run:
    ports: dict[str, int]
    nmap: dict[str, dict[int, dict[str, Any]]]
    vscan: dict[str, dict[int, dict[str, Any]]]
    vscan_json: dict[int, dict[str, Any]]
    files: dict[str, Path]
    seconds: dict[str, float]


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    _need_root()
    nmap = oracle_nmap()
    ip = _require("ip")
    with (
        tempfile.TemporaryDirectory(prefix="vscand-agents-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        ns = stack.enter_context(_namespace(ip))
        inside = [ip, "netns", "exec", ns]
        ports = _start_target_module(stack, inside, "tests.e2e.script_servers_agents", "lookalikes")
        tcp = ",".join(str(p) for c, p in sorted(ports.items()) if not c.endswith("-udp"))
        udp = ",".join(str(p) for c, p in sorted(ports.items()) if c.endswith("-udp"))
        names = ("nmap", "vscan", "nmap-udp", "vscan-udp")
        files = {name: workdir / f"{name}.xml" for name in names}
        commands = {
            "nmap": [*inside, nmap, "-sV", *SCRIPT_OUTPUT, "-Pn", "-n", "-p", tcp, "127.0.0.1",
                     "-oX", str(files["nmap"])],
            "vscan": [*inside, *vscan_command(), "scan", "127.0.0.1", "-p", tcp,
                      "-oX", str(files["vscan"]), "-oJ", str(workdir / "vscan.jsonl"),
                      "--no-progress", "--script-output"],
            "nmap-udp": [*inside, nmap, "-sU", "-sV", *SCRIPT_OUTPUT, "-Pn", "-n", "-p", udp,
                         "127.0.0.1",
                         "-oX", str(files["nmap-udp"])],
            "vscan-udp": [*inside, *vscan_command(), "scan", "127.0.0.1", "-p", f"U:{udp}",
                          "-oX", str(files["vscan-udp"]), "--no-progress", "--script-output"],
        }  # fmt: skip
        seconds, _logs = run_side_by_side(commands, workdir, SCAN_TIMEOUT)
        keep_outputs(workdir, "agents-")
        yield Run(
            ports,
            {"tcp": parse_xml(files["nmap"]), "udp": parse_xml(files["nmap-udp"])},
            {"tcp": parse_xml(files["vscan"]), "udp": parse_xml(files["vscan-udp"])},
            parse_jsonl(workdir / "vscan.jsonl"),
            files,
            seconds,
        )


def _script_output(record: dict[str, Any], script_id: str) -> str | None:
    found = record["scripts"].get(script_id)
    return None if found is None else found["output"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_premise(run: Run, case: Case) -> None:
    """nmap's own answer is what the case was built for (else it tests nothing)."""
    rec = run.nmap[case.protocol].get(run.ports[case.id])
    assert rec is not None
    for key, want in {"state": "open", **case.premise}.items():
        got = _script_output(rec, key[7:]) if key.startswith("script:") else rec.get(key)
        assert got == want, f"{case.id}: nmap {key}={got!r}, expected {want!r}: {rec}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_port_agrees(run: Run, case: Case) -> None:
    port = run.ports[case.id]
    nmap, vscan = run.nmap[case.protocol].get(port), run.vscan[case.protocol].get(port)
    diffs = differences(nmap, vscan)
    scripts = run.vscan_json.get(port, {}).get("service", {}).get("scripts")
    assert not diffs, (
        f"{case.id} ({port}/{case.protocol}) disagrees:\n  " + "\n  ".join(diffs)
        + f"\n  vscan scripts: {scripts}"
    )  # fmt: skip


@pytest.mark.parametrize("case_id", sorted(FIXED_TIME))
def test_fixed_time_unmasked(run: Run, case_id: str) -> None:
    """The lookalikes with a fixed clock: rfc868-time's output compared as printed."""
    port = run.ports[case_id]
    for side in (run.nmap, run.vscan):
        assert _script_output(side["tcp"][port], "rfc868-time") == FIXED_TIME[case_id]


def test_current_time_is_the_peers(run: Run) -> None:
    """37/udp's masked output: both read the peer's clock, within the scans' span."""
    port = run.ports["time-udp"]
    stamps = []
    for side in (run.nmap, run.vscan):
        text = _script_output(side["udp"][port], "rfc868-time")
        assert text is not None and _TIMESTAMP.fullmatch(text), text
        stamps.append(datetime.datetime.fromisoformat(text))
    assert abs((stamps[0] - stamps[1]).total_seconds()) <= SCAN_TIMEOUT


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_ndiff_agrees(run: Run, protocol: str) -> None:
    exe = shutil.which("ndiff")
    if exe is None:
        if IN_CI:
            pytest.fail("ndiff is not installed (required in CI)")
        pytest.skip("ndiff is not installed")
    suffix = "" if protocol == "tcp" else "-udp"
    _code, output, changed = ndiff(exe, run.files[f"nmap{suffix}"], run.files[f"vscan{suffix}"])
    if protocol == "udp":  # the peer's clock, read a moment apart
        changed = [line for line in changed if "rfc868-time" not in line]
    assert not changed, f"ndiff reports differences:\n{output}"


@pytest.mark.parametrize("name", ["vscan", "vscan-udp"])
def test_xml_is_valid(run: Run, name: str) -> None:
    xmllint = shutil.which("xmllint")
    if xmllint is None or not DTD.exists():
        if IN_CI:
            pytest.fail("xmllint (libxml2-utils) and nmap's DTD are required in CI")
        pytest.skip("xmllint or nmap.dtd missing")
    done = subprocess.run(
        [xmllint, "--noout", "--dtdvalid", str(DTD), str(run.files[name])],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
