"""End to end, the enterprise-middleware version scripts: ``vscan scan`` against ``nmap -sV``
(NSE on) in a private network namespace.

The scripts' rules want their standard ports (1521, 7001, 523, 50000, 7210, 10000), so
the module creates a network namespace (loopback only) and starts there the lookalikes
of ``tests/e2e/script_servers_enterprise.py`` (oracle-tns-version twice: a probe match
without a version and a softmatch read back from the fingerprint; weblogic-t3-info
twice; db2-das-info over TCP and UDP; drda-info; maxdb-info; ndmp-version) and, for
jdwp-version, a real JVM (``java -agentlib:jdwp=...`` running an idle class written
here) — twice: a JDWP agent serves one connection at a time and re-listens after each,
so each scanner meets its own (vscan's answer for its twin is reported under nmap's
port). Then, side by side::

    nmap -sV --script version -Pn -n -p <tcp ports> 127.0.0.1 -oX nmap.xml
    vscan scan 127.0.0.1 -p <tcp ports, vscan's JVM twin> -oX vscan.xml -oJ vscan.jsonl
    nmap -sU -sV --script version -Pn -n -p U:523 127.0.0.1 -oX nmap-udp.xml
    vscan scan 127.0.0.1 -p U:523 -oX vscan-udp.xml -oJ vscan-udp.jsonl

and requires agreement on every port (service fields, CPEs, fingerprint, every script's
output and elements), ``ndiff`` without a differing line, and vscan's ``-oX`` valid
against nmap.dtd. Needs root, ``ip``, ``java``, ``xmllint``: skips without them, fails
under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import re
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.compare import differences, ndiff, parse_jsonl, parse_xml
from tests.e2e.oracle_run import keep_outputs, oracle_nmap, run_side_by_side, vscan_command
from tests.e2e.script_servers_enterprise import idle_class
from tests.test_e2e_scripts import SCAN_TIMEOUT, _namespace, _need_root, _require
from tests.test_e2e_scripts import _start_target_module as start_target_module
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT

pytestmark = pytest.mark.e2e

#: the JVM twins: nmap scans the first, vscan the second (no nmap-services name on either)
JDWP_PORTS = (20917, 20918)
#: plain ``nmap -sV`` runs the version scripts but prints their output only when scripts
#: were asked for (``o.script`` in output.cc): ``--script version`` selects the same
#: scripts (the category -sV adds anyway) and makes nmap print what they returned
SCRIPT_OUTPUT = ("--script", "version")
#: scripts left out of the comparison: none (every version script is compared, also
#: fingerprint-strings and cccam-version, which may run on these ports too)
FOREIGN_SCRIPTS: frozenset[str] = frozenset()


@dataclass(frozen=True)
class Case:
    id: str
    what: str
    premise: dict[str, Any]
    scripts: frozenset[str] = field(default_factory=frozenset)
    protocol: str = "tcp"
    #: script id -> the output nmap must print (the premise of a hostile variant)
    outputs: dict[str, str] = field(default_factory=dict)


CASES = [
    Case(
        "oracle",
        "TNS REFUSE matched by a probe without a version: the script sends the probe",
        {"name": "oracle-tns", "product": "Oracle TNS listener", "version": "19.0.0.0.0",
         "extrainfo": "unauthorized", "cpe": ["cpe:/a:oracle:database_server:19.0.0.0.0"]},
    ),
    Case(
        "oracle-soft",
        "TNS REFUSE only softmatched: the script reads it back from the fingerprint",
        {"name": "oracle-tns", "version": "11.1.0.6.0", "extrainfo": "unknown service name",
         "servicefp": None},
    ),
    Case(
        "weblogic",
        "T3 HELO on 7001",
        {"product": "WebLogic application server", "version": "12.2.1.3",
         "extrainfo": "T3 enabled"},
        frozenset({"weblogic-t3-info"}),
    ),
    Case(
        "weblogic-vers",
        "T3 VERS (incompatible version) on 7002",
        {"product": "WebLogic application server", "version": "10.3.6.0"},
        frozenset({"weblogic-t3-info"}),
    ),
    Case(
        "db2-das",
        "DB2 DAS over TCP: the probe names it, the script exports the profile",
        {"name": "ibm-db2", "product": "IBM DB2 Database Server", "version": "9.07.0"},
        frozenset({"db2-das-info"}),
    ),
    Case(
        "drda",
        "DRDA EXCSATRD (softmatched by the drda probe) on 50000",
        {"name": "drda", "product": "IBM DB2 Database Server", "extrainfo": "DB2/LINUXX8664"},
        frozenset({"drda-info"}),
    ),
    Case(
        "maxdb",
        "MaxDB DBM server on 7210",
        {"name": "maxdb", "product": "SAP MaxDB", "version": "7.9.10", "ostype": "Linux"},
        frozenset({"maxdb-info"}),
    ),
    Case(
        "ndmp",
        "NDMPv4 (NetApp's NULL-probe match) with a VERITAS vendor on 10000",
        {"name": "ndmp", "product": "Symantec/Veritas Backup Exec ndmp", "ostype": "Linux",
         "extrainfo": "Name: backup01; OS ver: 5.2; OS Build: 3790; OS Service Pack: 2"},
    ),
    Case(
        "jdwp",
        "a real JVM's JDWP agent (tcpwrapped to the probes)",
        {"name": "jdwp", "method": "probed"},
    ),
    Case(
        "oracle-huge-vsnnum",
        "hostile: a VSNNUM over 2^63 (softmatch, read from the fingerprint): NSE's Lua dies",
        {"name": "oracle-tns", "version": None},
        outputs={"oracle-tns-version": SCRIPT_ERROR_OUTPUT},
    ),
    Case(
        "weblogic-echo",
        "hostile: a T3 server echoing 12.1.2 (three numbers): nothing set, nothing printed",
        {"name": "afs3-vlserver", "product": None, "method": "table"},
    ),
    Case(
        "drda-no-excsatrd",
        "hostile: a DRDA reply without EXCSATRD: the script says so, sets nothing",
        {"product": None},
        outputs={"drda-info": "The response contained no EXCSATRD"},
    ),
    Case(
        "drda-short-parameter",
        "hostile: an EXCSATRD parameter shorter than its header: NSE's Lua dies",
        {"product": None},
        outputs={"drda-info": SCRIPT_ERROR_OUTPUT},
    ),
    Case(
        "drda-negative-length",
        "hostile: a DDM header saying 5 bytes (NSE asks for -5 more): NSE's Lua dies",
        {"product": None},
        outputs={"drda-info": SCRIPT_ERROR_OUTPUT},
    ),
    Case(
        "db2-das-udp",
        "DB2 DAS over UDP: DB2RETADDR names it, the script exports the profile over UDP",
        {"name": "ibm-db2", "version": "9.07.0", "extrainfo": "Hostname: dbhost"},
        frozenset({"db2-das-info"}),
        "udp",
    ),
]  # fmt: skip


@dataclass
class Run:
    ports: dict[str, int]
    nmap: dict[str, dict[int, dict[str, Any]]]
    vscan: dict[str, dict[int, dict[str, Any]]]
    vscan_json: dict[str, dict[int, dict[str, Any]]]
    ndiff: dict[str, tuple[int, str, list[str]]]
    xml_valid: dict[str, subprocess.CompletedProcess[bytes]]
    seconds: dict[str, float]


def _start_jvm(stack: contextlib.ExitStack[Any], inside: list[str], java: str, workdir: Path,
               port: int) -> None:  # fmt: skip
    """A JVM idling with a JDWP agent on ``port``; ready when the agent says it listens
    (a connection to it would cost the agent's 2 s handshake wait)."""
    log_path = workdir / f"jvm-{port}.log"
    log = stack.enter_context(log_path.open("wb"))
    proc = subprocess.Popen(
        [*inside, java, "-Xmx32m", "-XX:TieredStopAtLevel=1", "-XX:+UseSerialGC",
         f"-agentlib:jdwp=transport=dt_socket,server=y,suspend=n,address=127.0.0.1:{port}",
         "-cp", str(workdir), "Idle"],
        stdout=log, stderr=subprocess.STDOUT,
    )  # fmt: skip
    stack.callback(proc.kill)
    deadline = time.monotonic() + 30
    while b"Listening for transport dt_socket" not in log_path.read_bytes():
        if time.monotonic() > deadline or proc.poll() is not None:
            pytest.fail(f"the JVM did not listen on {port}: {log_path.read_text()}")
        time.sleep(0.05)


def _renumber_vscan_twin(path: Path) -> None:
    """vscan's JVM twin under nmap's port number, in its XML (for ndiff)."""
    text = path.read_text()
    path.write_text(text.replace(f'portid="{JDWP_PORTS[1]}"', f'portid="{JDWP_PORTS[0]}"'))


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    _need_root()
    nmap = oracle_nmap()
    ip, java = _require("ip"), _require("java")
    ndiff_exe, xmllint = _require("ndiff"), _require("xmllint")
    with (
        tempfile.TemporaryDirectory(prefix="vscand-scripts-ent-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        (workdir / "Idle.class").write_bytes(idle_class())
        ns = stack.enter_context(_namespace(ip))
        inside = [ip, "netns", "exec", ns]
        for port in JDWP_PORTS:
            _start_jvm(stack, inside, java, workdir, port)
        ports = start_target_module(
            stack, inside, "tests.e2e.script_servers_enterprise", "lookalike servers"
        )
        ports["jdwp"] = JDWP_PORTS[0]
        tcp = sorted(ports[c.id] for c in CASES if c.protocol == "tcp")
        vscan_tcp = sorted(JDWP_PORTS[1] if p == JDWP_PORTS[0] else p for p in tcp)
        udp = sorted(ports[c.id] for c in CASES if c.protocol == "udp")

        def joined(numbers: list[int]) -> str:
            return ",".join(str(p) for p in numbers)

        commands = {
            "nmap": [*inside, nmap, "-sV", *SCRIPT_OUTPUT, "-Pn", "-n", "-p", joined(tcp),
                     "127.0.0.1", "-oX", str(workdir / "nmap.xml")],
            "vscan": [*inside, *vscan_command(), "scan", "127.0.0.1", "-p", joined(vscan_tcp),
                      "-oX", str(workdir / "vscan.xml"), "-oJ", str(workdir / "vscan.jsonl"),
                      "--no-progress", "--script-output"],
            "nmap-udp": [*inside, nmap, "-sU", "-sV", *SCRIPT_OUTPUT, "-Pn", "-n", "-p",
                         "U:" + joined(udp), "127.0.0.1", "-oX", str(workdir / "nmap-udp.xml")],
            "vscan-udp": [*inside, *vscan_command(), "scan", "127.0.0.1", "-p",
                          "U:" + joined(udp), "-oX", str(workdir / "vscan-udp.xml"),
                          "-oJ", str(workdir / "vscan-udp.jsonl"), "--no-progress",
                          "--script-output"],
        }  # fmt: skip
        seconds, _logs = run_side_by_side(commands, workdir, SCAN_TIMEOUT)
        keep_outputs(workdir, "scripts-ent-")
        nmap_recs = {
            "tcp": parse_xml(workdir / "nmap.xml"),
            "udp": parse_xml(workdir / "nmap-udp.xml"),
        }
        vscan_recs = {
            "tcp": parse_xml(workdir / "vscan.xml"),
            "udp": parse_xml(workdir / "vscan-udp.xml"),
        }
        vscan_json = {
            "tcp": parse_jsonl(workdir / "vscan.jsonl"),
            "udp": parse_jsonl(workdir / "vscan-udp.jsonl"),
        }
        valid = {
            proto: subprocess.run(
                [xmllint, "--noout", "--dtdvalid", "/usr/share/nmap/nmap.dtd",
                 str(workdir / f"vscan{suffix}.xml")],
                capture_output=True, check=False,
            )
            for proto, suffix in (("tcp", ""), ("udp", "-udp"))
        }  # fmt: skip
        twin = re.compile(rf"(?<![0-9]){JDWP_PORTS[1]}(?![0-9])")
        for records in (vscan_recs["tcp"], vscan_json["tcp"]):
            if JDWP_PORTS[1] in records:
                records[JDWP_PORTS[0]] = records.pop(JDWP_PORTS[1])
        rec = vscan_recs["tcp"].get(JDWP_PORTS[0])
        if rec is not None and rec.get("servicefp"):
            rec["servicefp"] = twin.sub(str(JDWP_PORTS[0]), rec["servicefp"])
        _renumber_vscan_twin(workdir / "vscan.xml")
        diffs = {
            proto: ndiff(ndiff_exe, workdir / f"nmap{suffix}.xml", workdir / f"vscan{suffix}.xml")
            for proto, suffix in (("tcp", ""), ("udp", "-udp"))
        }
        yield Run(ports, nmap_recs, vscan_recs, vscan_json, diffs, valid, seconds)


def _without_foreign(record: dict[str, Any] | None) -> dict[str, Any] | None:
    if record is None:
        return None
    scripts = {k: v for k, v in (record.get("scripts") or {}).items() if k not in FOREIGN_SCRIPTS}
    return {**record, "scripts": scripts}


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_premise(run: Run, case: Case) -> None:
    """nmap's own answer is what the case was built for (else it tests nothing)."""
    rec = run.nmap[case.protocol].get(run.ports[case.id])
    assert rec is not None, f"{case.id}: nmap reported no such port"
    for key, want in {"state": "open", **case.premise}.items():
        assert rec.get(key) == want, f"{case.id}: nmap {key}={rec.get(key)!r}, expected {want!r}"
    assert case.scripts <= set(rec["scripts"]), f"{case.id}: nmap's scripts {rec['scripts']}"
    for script_id, output in case.outputs.items():
        assert rec["scripts"].get(script_id, {}).get("output") == output, rec["scripts"]


def test_jdwp_premise(run: Run) -> None:
    """The JVM answered the script: the product is its JDWP description."""
    rec = run.nmap["tcp"][run.ports["jdwp"]]
    assert (rec["product"] or "").startswith("Java Debug Wire Protocol"), rec
    assert re.fullmatch(r"[0-9._]+", rec["version"] or ""), rec


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_port_agrees(run: Run, case: Case) -> None:
    port = run.ports[case.id]
    nmap_rec = _without_foreign(run.nmap[case.protocol].get(port))
    vscan_rec = _without_foreign(run.vscan[case.protocol].get(port))
    diffs = differences(nmap_rec, vscan_rec)
    if nmap_rec and vscan_rec and nmap_rec["reason"] != vscan_rec["reason"]:
        diffs.append(f"reason: nmap={nmap_rec['reason']!r} vscan={vscan_rec['reason']!r}")
    record = run.vscan_json[case.protocol].get(port, {})
    assert not diffs, (
        f"{case.id} (port {port}/{case.protocol}) disagrees:\n  "
        + "\n  ".join(diffs)
        + f"\n  vscan scripts: {record.get('service', {}).get('scripts')}"
    )


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_ndiff_sees_no_difference(run: Run, protocol: str) -> None:
    _code, output, changed = run.ndiff[protocol]
    changed = [line for line in changed if not any(s in line for s in FOREIGN_SCRIPTS)]
    assert changed == [], output


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_vscan_xml_is_valid(run: Run, protocol: str) -> None:
    done = run.xml_valid[protocol]
    assert done.returncode == 0, done.stderr.decode(errors="replace")
