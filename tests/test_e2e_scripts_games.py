"""End to end, the game-server version scripts: ``vscan scan`` against ``nmap -sU -sV``
(NSE on) in a private network namespace.

quake1-info, quake3-info, allseeingeye-info, freelancer-info, teamspeak2-version and
ventrilo-info run on their standard ports (the rules name them), so the module creates
a network namespace (loopback only) and starts the lookalikes of
``tests/e2e/script_servers_games.py`` there, then runs both scanners side by side once::

    nmap -sU -sT -sV --script version -Pn -n -p T:3784,U:PORTS 127.0.0.1 -oX nmap.xml
    vscan scan 127.0.0.1 -p T:3784,U:PORTS -oX vscan.xml -oJ vscan.jsonl

``--script version`` runs the very scripts ``-sV`` runs and makes nmap print their
output (with ``-sV`` alone nmap runs them but prints none of it: ``o.script`` is
off). Agreement is required on every port (the fields of ``tests/e2e/compare.py``
and the script outputs), with no differing line in ``ndiff`` and a DTD-valid
``-oX``. The lookalikes answer only their protocol's requests, with fixed values:
nothing is masked. Needs root and ``ip``: skips without them, fails under CI=true.
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

from tests.e2e.compare import differences, ndiff, parse_xml
from tests.e2e.oracle_run import keep_outputs, oracle_nmap, run_side_by_side, vscan_command
from tests.test_e2e_scripts import (
    IN_CI,
    SCAN_TIMEOUT,
    _namespace,
    _need_root,
    _require,
    _start_target_module,
)
from tests.test_output import DTD, xmllint_or_skip
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT

pytestmark = pytest.mark.e2e

Key = tuple[str, int]


@dataclass(frozen=True)
class Case:
    id: str
    protocol: str
    what: str
    #: what nmap's own answer must hold (service fields, and the script outputs present)
    premise: dict[str, Any]
    scripts: tuple[str, ...] = ()


CASES = [
    Case("quake1", "udp", "Quake 1 lookalike: server info and four players (two broken)",
         {"name": "quake", "product": "Quake 1 server", "version": "released"},
         ("quake1-info",)),
    Case("quake3", "udp", "Quake 3 lookalike: statusResponse (OpenArena probe match, then the "
         "script)", {"name": "quake3", "product": "ioq3", "ostype": "Linux"}, ("quake3-info",)),
    Case("quake3-short", "udp", "Quake 3 with a two-word version: the script dies after the "
         "probe's match", {"name": "quake3", "product": "OpenArena game server",
                           "version": "ioq3 linux-x86_64"}, ("quake3-info",)),
    Case("ase", "udp", "All-Seeing Eye lookalike",
         {"name": "ase", "product": "All-Seeing Eye"}, ("allseeingeye-info",)),
    Case("ase-counted", "udp", "All-Seeing Eye as servers send it: the script dies",
         {"name": "allseeingeye", "extrainfo": "game: chrome; port: 27015"},
         ("allseeingeye-info",)),
    Case("freelancer", "udp", "Freelancer lookalike",
         {"name": "freelancer", "product": "Freelancer"}, ("freelancer-info",)),
    Case("teamspeak2", "udp", "TeamSpeak 2 lookalike (no output, version fields only)",
         {"name": "teamspeak2", "product": "TeamSpeak", "version": "2.0.23.19",
          "ostype": "Windows"}),
    Case("ventrilo", "udp", "Ventrilo lookalike: encrypted status in two packets",
         {"name": "ventrilo", "product": "Ventrilo", "version": "3.0.3.C"}, ("ventrilo-info",)),
    Case("ventrilo-tcp", "tcp", "Ventrilo voice port (tcpwrapped): the script queries the "
         "UDP port", {"name": "ventrilo", "extrainfo": "voice port; name: Lookalike Vent; "
                      "uptime: 153h:12m; auth: pw"}, ("ventrilo-info",)),
]  # fmt: skip


@dataclass
class Run:
    ports: dict[str, int]
    nmap: dict[Key, dict[str, Any]]
    vscan: dict[Key, dict[str, Any]]
    nmap_xml: Path
    vscan_xml: Path
    seconds: dict[str, float]


def _by_protocol(path: Path, workdir: Path) -> dict[Key, dict[str, Any]]:
    """``parse_xml`` per protocol (it keys ports by number only: 3784 is both)."""
    out: dict[Key, dict[str, Any]] = {}
    for protocol in ("tcp", "udp"):
        tree = ET.parse(path)
        for ports in tree.getroot().iter("ports"):
            for port in list(ports.findall("port")):
                if port.get("protocol") != protocol:
                    ports.remove(port)
        one = workdir / f"{path.stem}-{protocol}.xml"
        tree.write(one)
        out.update({(protocol, n): rec for n, rec in parse_xml(one).items()})
    return out


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    _need_root()
    nmap = oracle_nmap()
    ip = _require("ip")
    with (
        tempfile.TemporaryDirectory(prefix="vscand-scripts-games-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        ns = stack.enter_context(_namespace(ip))
        inside = [ip, "netns", "exec", ns]
        ports = _start_target_module(
            stack, inside, "tests.e2e.script_servers_games", "game lookalikes"
        )
        udp = ",".join(str(p) for k, p in sorted(ports.items(), key=lambda i: i[1])
                       if k != "ventrilo-tcp")  # fmt: skip
        portlist = f"T:{ports['ventrilo-tcp']},U:{udp}"
        nmap_xml, vscan_xml = workdir / "nmap.xml", workdir / "vscan.xml"
        commands = {
            "nmap": [*inside, nmap, "-sU", "-sT", "-sV", "--script", "version", "-Pn", "-n",
                     "-p", portlist,
                     "127.0.0.1", "-oX", str(nmap_xml)],
            "vscan": [*inside, *vscan_command(), "scan", "127.0.0.1", "-p", portlist,
                      "--script-output", "-oX", str(vscan_xml), "-oJ", str(workdir / "vscan.jsonl"),
                      "--no-progress"],
        }  # fmt: skip
        seconds, _logs = run_side_by_side(commands, workdir, SCAN_TIMEOUT)
        keep_outputs(workdir, "scripts-games-")
        yield Run(
            ports,
            _by_protocol(nmap_xml, workdir),
            _by_protocol(vscan_xml, workdir),
            nmap_xml,
            vscan_xml,
            seconds,
        )


def _key(run: Run, case: Case) -> Key:
    return case.protocol, run.ports[case.id]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_premise(run: Run, case: Case) -> None:
    """nmap's own answer is what the case was built for (else it tests nothing)."""
    rec = run.nmap.get(_key(run, case))
    assert rec is not None, f"{case.id}: nmap reports no such port"
    for key, want in {"state": "open", **case.premise}.items():
        assert rec.get(key) == want, f"{case.id}: nmap {key}={rec.get(key)!r}, not {want!r}"
    for script in case.scripts:
        assert script in rec["scripts"], f"{case.id}: nmap printed no {script}: {rec['scripts']}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_port_agrees(run: Run, case: Case) -> None:
    key = _key(run, case)
    diffs = differences(run.nmap.get(key), run.vscan.get(key))
    assert not diffs, f"{case.id} ({key[1]}/{key[0]}) disagrees:\n  " + "\n  ".join(diffs)


@pytest.mark.parametrize(("case", "script"), [("quake3-short", "quake3-info"),
                                               ("ase-counted", "allseeingeye-info")])  # fmt: skip
def test_scripts_that_die_in_nmap(run: Run, case: str, script: str) -> None:
    """The ScriptFailed paths: nmap's own Lua died there (the premise of the comparison)."""
    rec = run.nmap[("udp", run.ports[case])]
    assert rec["scripts"][script]["output"] == SCRIPT_ERROR_OUTPUT


def test_silent_ase_query_on_the_quake_port(run: Run) -> None:
    """allseeingeye-info's rule names 26000 too: it runs there, meets silence, prints nothing."""
    rec = run.nmap[("udp", run.ports["quake1"])]
    assert "allseeingeye-info" not in rec["scripts"]


def test_ndiff_agrees(run: Run) -> None:
    exe = shutil.which("ndiff")
    if exe is None:
        if IN_CI:
            pytest.fail("ndiff is not installed (required in CI)")
        pytest.skip("ndiff is not installed")
    _code, output, changed = ndiff(exe, run.nmap_xml, run.vscan_xml)
    assert not changed, f"ndiff nmap.xml vscan.xml reports differences:\n{output}"


def test_xml_valid(run: Run) -> None:
    xmllint = xmllint_or_skip()
    done = subprocess.run(
        [xmllint, "--noout", "--dtdvalid", str(DTD), str(run.vscan_xml)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
