"""End to end, the industrial-protocol scripts: ``vscan scan`` against
``nmap -sV --script version`` (TCP) and ``nmap -sU -sV --script version`` (UDP).

The scripts' rules want their standard ports (102, 1911, 9600, 44818, 47808),
so the module creates a network namespace (loopback only) and starts there the
lookalike devices of ``tests/e2e/script_servers_industrial.py``: an S7 PLC on
102/tcp (s7-info), a Niagara station on 1911/tcp (fox-info: Nmap's own Fox
probe names it first), and EtherNet/IP (enip-info), BACnet (bacnet-info) and
Omron FINS (omron-info) devices on both TCP and UDP. Then, all at once::

    nmap -sV --script version -Pn -n -p 102,1911,9600,44818,47808 127.0.0.1 -oX nmap-tcp.xml
    vscan scan 127.0.0.1 -p 102,1911,9600,44818,47808 --script-output -oX vscan-tcp.xml
    nmap -sU -sV --script version -Pn -n -p 9600,44818,47808 127.0.0.1 -oX nmap-udp.xml
    vscan scan 127.0.0.1 -p U:9600,44818,47808 --script-output -oX vscan-udp.xml

(``--script version`` runs the scripts ``-sV`` runs and makes Nmap print them.)
Every port must agree (service fields and every ``<script>``, ``tests/e2e/compare.py``),
``ndiff`` must see no difference, and vscan's ``-oX`` must be valid against
Nmap's DTD. iec61850-mms (7.95 on) is checked where the oracle is 7.95: its rule
never holds, so neither prints it on the S7 port. Needs root and ``ip``:
skips without them, fails under CI=true.
"""

from __future__ import annotations

import contextlib
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import releases
from tests.e2e.compare import differences, ndiff, parse_xml
from tests.e2e.oracle_run import keep_outputs, oracle_nmap, run_side_by_side, vscan_command
from tests.test_e2e_scripts import IN_CI, _namespace, _need_root, _require, _start_target_module
from vscand.probes.grammar import release_key
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.registry import builtin_scripts

pytestmark = pytest.mark.e2e

SCAN_TIMEOUT = 120.0
DTD = Path("/usr/share/nmap/nmap.dtd")


@dataclass(frozen=True)
class Case:
    id: str
    protocol: str
    port: int
    #: what nmap must say: service fields, and "scripts": the script ids it prints
    premise: dict[str, Any]


CASES = [
    Case("s7-tcp", "tcp", 102,
         {"name": "iso-tsap", "product": "Siemens S7 PLC", "devicetype": "specialized",
          "method": "probed", "scripts": {"s7-info"}}),
    Case("fox-tcp", "tcp", 1911,
         {"name": "niagara-fox", "product": "Tridium Niagara", "version": "3.8.311",
          "hostname": "bas-jace-01", "scripts": {"fox-info"}}),
    Case("enip-tcp", "tcp", 44818, {"name": "EtherNet-IP-2", "scripts": {"enip-info"}}),
    Case("bacnet-tcp", "tcp", 47808, {"name": "bacnet", "scripts": {"bacnet-info"}}),
    Case("omron-tcp", "tcp", 9600, {"name": "fins", "scripts": {"omron-info"}}),
    Case("enip-udp", "udp", 44818,
         {"state": "open", "name": "EtherNet-IP-2", "scripts": {"enip-info"}}),
    Case("bacnet-udp", "udp", 47808,
         {"state": "open", "name": "bacnet", "scripts": {"bacnet-info"}}),
    Case("omron-udp", "udp", 9600, {"state": "open", "name": "fins", "scripts": {"omron-info"}}),
]  # fmt: skip


@dataclass
class Run:
    #: protocol -> port -> record
    nmap: dict[str, dict[int, dict[str, Any]]]
    vscan: dict[str, dict[int, dict[str, Any]]]
    files: dict[str, Path]
    seconds: dict[str, float]


def _ports(protocol: str) -> str:
    return ",".join(
        str(c.port) for c in sorted(CASES, key=lambda c: c.port) if c.protocol == protocol
    )


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    _need_root()
    nmap = oracle_nmap()
    ip = _require("ip")
    with (
        tempfile.TemporaryDirectory(prefix="vscand-scripts-industrial-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        ns = stack.enter_context(_namespace(ip))
        inside = [ip, "netns", "exec", ns]
        started = _start_target_module(
            stack, inside, "tests.e2e.script_servers_industrial", "industrial lookalikes"
        )
        assert {c.id: c.port for c in CASES} == started
        files = {name: workdir / f"{name}.xml" for name in
                 ("nmap-tcp", "vscan-tcp", "nmap-udp", "vscan-udp")}  # fmt: skip
        tcp, udp = _ports("tcp"), _ports("udp")
        commands = {
            "nmap-tcp": [*inside, nmap, "-sV", "--script", "version", "-Pn", "-n", "-p", tcp,
                         "127.0.0.1", "-oX", str(files["nmap-tcp"])],
            "vscan-tcp": [*inside, *vscan_command(), "scan", "127.0.0.1", "-p", tcp,
                          "--script-output", "-oX", str(files["vscan-tcp"]), "--no-progress"],
            "nmap-udp": [*inside, nmap, "-sU", "-sV", "--script", "version", "-Pn", "-n",
                         "-p", udp, "127.0.0.1", "-oX", str(files["nmap-udp"])],
            "vscan-udp": [*inside, *vscan_command(), "scan", "127.0.0.1", "-p", f"U:{udp}",
                          "--script-output", "-oX", str(files["vscan-udp"]), "--no-progress"],
        }  # fmt: skip
        seconds, _logs = run_side_by_side(commands, workdir, SCAN_TIMEOUT)
        keep_outputs(workdir, "scripts-industrial-")
        yield Run(
            {p: parse_xml(files[f"nmap-{p}"]) for p in ("tcp", "udp")},
            {p: parse_xml(files[f"vscan-{p}"]) for p in ("tcp", "udp")},
            files,
            seconds,
        )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_premise(run: Run, case: Case) -> None:
    """nmap's own answer is what the case was built to provoke (its script printed)."""
    rec = run.nmap[case.protocol].get(case.port)
    assert rec is not None, f"{case.id}: nmap reports no {case.port}/{case.protocol}"
    assert rec["protocol"] == case.protocol
    for key, want in case.premise.items():
        got = set(rec["scripts"]) if key == "scripts" else rec.get(key)
        assert got == want, f"{case.id}: nmap {key}={got!r}, expected {want!r}: {rec}"
    for script_id in case.premise["scripts"]:
        assert not rec["scripts"][script_id]["output"].startswith("ERROR"), rec["scripts"]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_port_agrees(run: Run, case: Case) -> None:
    diffs = differences(
        run.nmap[case.protocol].get(case.port), run.vscan[case.protocol].get(case.port)
    )
    assert not diffs, f"{case.id} ({case.port}/{case.protocol}):\n  " + "\n  ".join(diffs)


def test_iec61850_mms_never_runs(run: Run) -> None:
    """Nmap 7.95's iec61850-mms asks for protocol ``iso-tsap``: neither scanner runs it."""
    oracle = releases.oracle()
    if isinstance(oracle, releases.Unavailable) or release_key(oracle.version) < (7, 95):
        pytest.skip("iec61850-mms exists from Nmap 7.95 on; the oracle here is older")
    ours = {s.name: s for s in builtin_scripts(release=oracle.version)}
    assert "iec61850-mms" in ours
    port = PortView("127.0.0.1", 102, "tcp", "open", name="iso-tsap")
    assert not ours["iec61850-mms"].portrule(port, RuleContext(release=oracle.version))
    for scanner in (run.nmap, run.vscan):
        assert set(scanner["tcp"][102]["scripts"]) == {"s7-info"}


def _without_scripts(path: Path) -> Path:
    """A copy without ``<script>`` elements (Debian's ndiff cannot order two results of
    one port; the scripts are compared by ``differences``)."""
    tree = ET.parse(path)
    for port in tree.getroot().iter("port"):
        for script in port.findall("script"):
            port.remove(script)
    copy = path.with_name(f"{path.stem}-noscripts.xml")
    tree.write(copy)
    return copy


def _tool(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        if IN_CI:
            pytest.fail(f"{name} is not installed")
        pytest.skip(f"{name} is not installed")
    return found


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_ndiff_and_dtd(run: Run, protocol: str) -> None:
    code, output, changed = ndiff(
        _tool("ndiff"),
        _without_scripts(run.files[f"nmap-{protocol}"]),
        _without_scripts(run.files[f"vscan-{protocol}"]),
    )
    assert code in (0, 1), output
    assert not changed, output
    done = subprocess.run(
        [_tool("xmllint"), "--noout", "--dtdvalid", str(DTD), str(run.files[f"vscan-{protocol}"])],
        check=False,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
