"""End to end, the VoIP-and-devices scripts: ``vscan scan`` against ``nmap -sS -sU -sV``
(NSE on) in a private network namespace, TCP and UDP in one run of each.

The scripts' rules want their standard ports, so the module creates a network
namespace (loopback only) and starts there:

* a real Murmur (Debian's ``mumble-server``: ``murmurd -fg`` from a generated ini,
  its SQLite database in the test's temporary directory, run as the current user)
  on 64738/tcp and 64738/udp: murmur-version on both protocols (one UDP ping, shared
  between the two runs of the port number). Before the scan the test gets 127.0.0.1
  banned (autoban after one attempt, for an hour: two connections): Murmur then
  closes every TCP connection at once, as it does after a scanner's probes, so both
  scanners' engines see ``tcpwrapped`` at once (the issue's example; deterministic,
  where a ban in the middle of two scans side by side would not be, and quick, where
  an unbanned TLS port costs nmap ~170 s) and the script, whose ping is UDP (never
  banned), names the port;
* the lookalikes of ``tests/e2e/script_servers_voip.py``: IAX2 on 4569/udp
  (iax2-version), Ubiquiti discovery v1 on 10001/udp (ubiquiti-discovery), a VxWorks
  WDB agent on 17185/udp (wdb-version), a TFTP server answering from a new port on
  69/udp (tftp-version, Nmap 7.95 on; with 7.93 the port is compared all the same:
  neither runs the script). A real ``tftpd-hpa`` answers nothing of Nmap's probes on
  its port (every answer comes from a new one): its port costs ``nmap -sV`` ~100 s;

then runs both scanners side by side inside it::

    nmap -sS -sU -sV -Pn -n -p T:64738,U:69,4569,10001,17185,64738 127.0.0.1 -oX nmap.xml
    vscan scan 127.0.0.1 -p T:64738,U:69,4569,10001,17185,64738 -oX vscan.xml -oJ vscan.jsonl

and requires agreement on every port (the fields of ``tests/e2e/compare.py``, script
output included), ``ndiff`` without a differing line and a DTD-valid ``-oX``. Needs
root, ``ip`` and Murmur (``murmurd``; ``mumble-server`` from 1.5 on): skips without them,
fails under CI=true.

``nmap`` runs with ``--script version`` (the same scripts ``-sV`` runs): plain ``-sV``
runs the version scripts but prints none of their output (Nmap's ``output.cc`` writes
script results only when ``o.script`` is set, i.e. with ``-sC``/``--script``).
"""

from __future__ import annotations

import contextlib
import getpass
import os
import shutil
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests import releases
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
from vscand.probes.grammar import release_key

pytestmark = pytest.mark.e2e

MURMUR_INI = """\
database={dir}/murmur.sqlite
host=127.0.0.1
port=64738
uname={user}
logfile=
pidfile=
bonjour=false
kdfIterations=1000
autobanAttempts=1
autobanTimeframe=120
autobanTime=3600
users=50
bandwidth=72000
"""


@dataclass(frozen=True)
class Case:
    id: str
    protocol: str
    port: int
    what: str
    premise: dict[str, Any]
    #: the first Nmap release whose version category has the script
    since: str = "7.93"


CASES = [
    Case(
        "murmur-tcp", "tcp", 64738, "mumble-server's control port: murmur-version (UDP ping)",
        {"name": "murmur", "product": "Murmur", "method": "probed",
         "extrainfo": "control port; users: 0; max. users: 50; bandwidth: 72000 b/s"},
    ),
    Case(
        "murmur-udp", "udp", 64738, "mumble-server's voice port: murmur-version",
        {"name": "murmur", "product": "Murmur",
         "extrainfo": "voice port; users: 0; max. users: 50; bandwidth: 72000 b/s"},
    ),
    Case(
        "iax2", "udp", 4569, "IAX2 lookalike answering POKE with PONG: iax2-version",
        {"name": "iax2", "method": "probed", "conf": "10"},
    ),
    Case(
        "ubiquiti", "udp", 10001, "Ubiquiti v1 discovery lookalike: ubiquiti-discovery",
        {"name": "ubiquiti-discovery", "product": "Ubiquiti Discovery Service",
         "extrainfo": "v1 protocol, NBE-5AC-Gen2 software ver. v5.6.3", "ostype": "Linux",
         "scripts": True},
    ),
    Case(
        "wdb", "udp", 17185, "VxWorks WDB agent lookalike: wdb-version",
        {"name": "wdb", "product": "Wind DeBug Agent", "version": "2.0", "scripts": True},
    ),
    Case(
        "tftp", "udp", 69, "TFTP lookalike answering from a new port: tftp-version",
        {"name": "tftp", "product": "Netkit tftpd or atftpd", "method": "probed",
         "cpe": ["cpe:/a:netkit:netkit", "cpe:/a:lefebvre:atftpd"]},
        since="7.95",
    ),
]  # fmt: skip
TCP_PORTS = sorted({c.port for c in CASES if c.protocol == "tcp"})
UDP_PORTS = sorted({c.port for c in CASES if c.protocol == "udp"})
PORT_SPEC = f"T:{','.join(map(str, TCP_PORTS))},U:{','.join(map(str, UDP_PORTS))}"


@dataclass
class Run:
    release: str
    #: protocol -> port -> record
    nmap: dict[str, dict[int, dict[str, Any]]]
    vscan: dict[str, dict[int, dict[str, Any]]]
    nmap_xml: Path
    vscan_xml: Path


def _by_protocol(path: Path, workdir: Path) -> dict[str, dict[int, dict[str, Any]]]:
    """``parse_xml`` per protocol (it keys ports by number; 64738 is scanned twice)."""
    out = {}
    for protocol in ("tcp", "udp"):
        tree = ET.parse(path)
        for ports in tree.getroot().iter("ports"):
            for port in list(ports.findall("port")):
                if port.get("protocol") != protocol:
                    ports.remove(port)
        part = workdir / f"{path.stem}-{protocol}.xml"
        tree.write(part)
        out[protocol] = parse_xml(part)
    return out


def _wait_udp(inside: list[str], port: int, payload: bytes, proc: Any, what: str) -> None:
    probe = (
        "import socket; s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); "
        f"s.settimeout(0.5); s.sendto({payload!r}, ('127.0.0.1', {port})); s.recvfrom(100)"
    )
    deadline = time.monotonic() + 30
    command = [*inside, sys.executable, "-c", probe]
    while subprocess.run(command, capture_output=True, check=False).returncode:
        if time.monotonic() > deadline or proc.poll() is not None:
            pytest.fail(f"{what} did not start on {port}/udp")


#: two connections (the second is over the one attempt allowed) get 127.0.0.1 banned; then
#: a third must be closed by Murmur at once, without a byte
BAN = """
import socket, time
for _ in range(2):
    socket.create_connection(("127.0.0.1", 64738), timeout=5).close()
    time.sleep(0.2)
conn = socket.create_connection(("127.0.0.1", 64738), timeout=5)
conn.settimeout(5)
assert conn.recv(10) == b"", "Murmur did not ban 127.0.0.1"
"""


def _get_banned(inside: list[str]) -> None:
    subprocess.run([*inside, sys.executable, "-c", BAN], check=True, timeout=30)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    _need_root()
    nmap = oracle_nmap()
    release = releases.oracle()
    if isinstance(release, releases.Unavailable):
        pytest.fail(f"oracle unavailable: {release.reason}")
    ip = _require("ip")
    # Debian 12's mumble-server 1.3 installs murmurd; Debian 13's 1.5 names it mumble-server
    murmurd = shutil.which("murmurd") or shutil.which("mumble-server") or _require("murmurd")
    with (
        tempfile.TemporaryDirectory(prefix="vscand-scripts-voip-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        ns = stack.enter_context(_namespace(ip))
        inside = [ip, "netns", "exec", ns]
        user = getpass.getuser()
        (workdir / "murmur.ini").write_text(MURMUR_INI.format(dir=workdir, user=user))
        log = stack.enter_context(open(workdir / "murmurd.log", "wb"))
        murmur = subprocess.Popen(
            [*inside, murmurd, "-fg", "-ini", str(workdir / "murmur.ini")],
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        stack.callback(murmur.kill)
        _wait_udp(inside, 64738, b"\x00\x00\x00\x00abcdefgh", murmur, "murmurd")
        _get_banned(inside)
        _start_target_module(stack, inside, "tests.e2e.script_servers_voip", "lookalikes")
        nmap_xml, vscan_xml = workdir / "nmap.xml", workdir / "vscan.xml"
        commands = {
            "nmap": [*inside, nmap, "-sS", "-sU", "-sV", "--script", "version", "-Pn", "-n",
                     "-p", PORT_SPEC, "127.0.0.1", "-oX", str(nmap_xml)],
            # NMAPDIR: the oracle's data files (tftp-fingerprints.lua exists from 7.95 on)
            "vscan": [*inside, "env", f"NMAPDIR={release.data_dir}", *vscan_command(), "scan",
                      "127.0.0.1", "-p", PORT_SPEC,
                      "-oX", str(vscan_xml), "--no-progress", "--script-output"],
        }  # fmt: skip
        run_side_by_side(commands, workdir, SCAN_TIMEOUT)
        keep_outputs(workdir, "scripts-voip-")
        yield Run(
            release.version,
            _by_protocol(nmap_xml, workdir),
            _by_protocol(vscan_xml, workdir),
            nmap_xml,
            vscan_xml,
        )


def _in_release(case: Case, run: Run) -> bool:
    return release_key(run.release) >= release_key(case.since)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_premise(run: Run, case: Case) -> None:
    """nmap's own answer is what the case was built for (else it tests nothing)."""
    if not _in_release(case, run):
        pytest.skip(
            f"{case.id}: the script is in Nmap {case.since} on, the oracle is {run.release}"
        )
    rec = run.nmap[case.protocol].get(case.port)
    assert rec is not None
    for key, want in {"state": "open", **case.premise}.items():
        got = bool(rec["scripts"]) if key == "scripts" else rec.get(key)
        assert got == want, f"{case.id}: nmap {key}={got!r}, expected {want!r}: {rec}"


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_port_agrees(run: Run, case: Case) -> None:
    diffs = differences(
        run.nmap[case.protocol].get(case.port), run.vscan[case.protocol].get(case.port)
    )
    assert not diffs, f"{case.id} ({case.port}/{case.protocol}) disagrees:\n  " + "\n  ".join(diffs)


def _without_fingerprint_strings(path: Path, workdir: Path) -> Path:
    """A copy without fingerprint-strings' output (another group's script; until it lands
    nmap prints it for the ports it could not name and we do not, and Debian's ndiff dies
    of a TypeError on any script difference)."""
    tree = ET.parse(path)
    for port in tree.getroot().iter("port"):
        for script in port.findall("script"):
            if script.get("id") == "fingerprint-strings":
                port.remove(script)
    out = workdir / f"{path.stem}-no-fps.xml"
    tree.write(out)
    return out


def test_ndiff_agrees(run: Run, tmp_path: Path) -> None:
    exe = shutil.which("ndiff")
    if exe is None:
        if IN_CI:
            pytest.fail("ndiff is not installed (required in CI)")
        pytest.skip("ndiff is not installed")
    code, output, changed = ndiff(
        exe,
        _without_fingerprint_strings(run.nmap_xml, tmp_path),
        _without_fingerprint_strings(run.vscan_xml, tmp_path),
    )
    assert code in (0, 1), output
    assert not changed, f"ndiff nmap.xml vscan.xml reports differences:\n{output}"


def test_xml_is_valid(run: Run) -> None:
    xmllint = xmllint_or_skip()
    done = subprocess.run(
        [xmllint, "--noout", "--dtdvalid", str(DTD), str(run.vscan_xml)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert done.returncode == 0, done.stderr
