"""Normal and XML output against nmap 7.93 itself (127.0.0.1 only).

nmap scans loopback banner servers with a small probe file; its XML is read
back into vscand result dicts, and our writers must print the same report.
The target is ``localhost``: the address scanned and the name's other addresses
(Nmap's "Other addresses for localhost (not scanned)", which XML does not carry)
are what vscand's own resolution finds on this machine (Debian 12: 127.0.0.1
only; Debian 13's /etc/hosts adds ::1, which getaddrinfo puts first).
"""

from __future__ import annotations

import re
import socket
import subprocess
import time
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from twisted.trial.unittest import SynchronousTestCase

from tests.hostile.measure import allowed, faithful_bound
from tests.loopback import BannerServer, nmap_or_skip
from vscand.output.hosts import ScanMeta
from vscand.output.nmapxml import format_xml
from vscand.output.normal import format_hosts
from vscand.probes.parser import load_probe_files
from vscand.scan.fingerprint import wrap
from vscand.scan.model import PortTask, ScanOptions
from vscand.service import empty_service
from vscand.targets.policy import TargetPolicy
from vscand.targets.resolve import system_addresses
from vscand.targets.tasks import plan_tasks

PROBES = (
    r"""# vscand test probes: version column and Service Info (oracle)
Probe TCP NULL q||
totalwaitms 400
match vc m=^VC ([^|]*)\|([^|]*)\|([^|]*)\r\n= p/$1/ v/$2/ i/$3/
match vh m=^VH ([^|]*)\|([^|]*)\|([^|]*)\|([^\r]*)\r\n= p/x/ h/$1/ o/$2/ d/$3/ i/$4/ \
cpe:/a:app:x/ cpe:/h:hw:$1/ cpe:/o:os:$2/
match ssl/vs m|^VS\r\n| p/tunneled/
softmatch vsoft m|^VSOFT|
"""
).replace(" \\\n", " ")

P78 = "P" * 78  # the longest product a template fills (79 fails: "Capture exceeds length")
BANNERS = [
    # the 8-character rule, checked before the separator is taken
    f"VC {P78}|{'V' * 72}|{'I' * 40}\r\n",
    f"VC {P78}|{'V' * 73}|{'I' * 40}\r\n",
    f"VC {P78}|{'V' * 71}|{'I' * 40}\r\n",
    f"VC {P78}|{'V' * 78}|{'I' * 40}\r\n",
    f"VC {P78}|{'V' * 74}|\r\n",
    f"VC short|1.0|{'I' * 200}\r\n",
    f"VC {'Q' * 60}|{'V' * 40}|{'I' * 58}\r\n",
    f"VC {'Q' * 60}|{'V' * 40}|{'I' * 57}\r\n",
    "VC ||only extra\r\n",
    "VC |only version|\r\n",
    "VC a-b--c<&>'\"|v|x\r\n",
    # Service Info: hostnames (own name skipped, case-insensitive), OSs, devices, CPEs
    "VH LocalHost|Linux|router|a\r\n",
    "VH alpha|Linux|router|b\r\n",
    "VH ALPHA|Unix|switch|c\r\n",
    "VH beta|Unix|x|d\r\n",
    "VH gamma|Windows|y|e\r\n",
    "VH delta|BSD|z|f\r\n",
    "VH eps|Solaris|w|g\r\n",
    "VH zeta|AIX|v|h\r\n",
    "VS\r\n",
    "VSOFT and more\r\n",
    "unrecognized \x00\x01 stuff\r\n",
    "another unknown\r\n",
]


def parse_nmap_xml(text: str) -> list[dict[str, Any]]:
    """nmap's XML read back as vscand per-port result dicts (shown ports only)."""
    root = ET.fromstring(text)
    results = []
    for host in root.iter("host"):
        address = host.find("address")
        assert address is not None
        names = [h.get("name") for h in host.iter("hostname")]
        for port in host.iter("port"):
            state = port.find("state")
            assert state is not None
            service = empty_service()
            svc = port.find("service")
            if svc is not None:
                for key in (
                    "name",
                    "product",
                    "version",
                    "extrainfo",
                    "hostname",
                    "ostype",
                    "devicetype",
                    "tunnel",
                    "method",
                ):
                    service[key] = svc.get(key)
                service["conf"] = int(svc.get("conf") or 0)
                service["cpe"] = [c.text for c in svc.iter("cpe")]
                fp = svc.get("servicefp")
                service["fingerprint"] = wrap(fp) if fp else None
            results.append(
                {
                    "job": None,
                    "host": address.get("addr"),
                    "hostname": names[0] if names else None,
                    "port": int(port.get("portid") or 0),
                    "protocol": port.get("protocol"),
                    "state": state.get("state"),
                    "reason": state.get("reason"),
                    "service": service,
                }
            )
    return results


def closed_ports(count: int) -> list[int]:
    """Ports below 1024 that refuse connections on 127.0.0.1 (nothing listens)."""
    found = []
    for port in range(1, 1024):
        with socket.socket() as sock:
            sock.settimeout(0.5)
            if sock.connect_ex(("127.0.0.1", port)) != 0:
                found.append(port)
        if len(found) == count:
            break
    return found


def run_nmap(tmp_path: Path, ports: list[int], target: str = "localhost") -> tuple[str, str]:
    nmap = nmap_or_skip()
    datadir = tmp_path / "datadir"
    (datadir / "scripts").mkdir(parents=True)
    (datadir / "scripts" / "script.db").write_text("")
    probes = tmp_path / "vc.probes"
    probes.write_text(PROBES)
    out, xml = tmp_path / "n.txt", tmp_path / "n.xml"
    spec = ",".join(map(str, ports))
    subprocess.run(
        [
            *(nmap, "-sV", "-sT", "-Pn", "-n", "--datadir", str(datadir)),
            *("--versiondb", str(probes), "--min-parallelism", "32", "-p", spec, target),
            *("-oN", str(out), "-oX", str(xml)),
        ],
        check=True,
        capture_output=True,
        timeout=300,
    )
    return out.read_text(), xml.read_text()


def vscand_tasks(target: str, ports: list[int]) -> list[PortTask]:
    """*target*'s tasks as ``vscan scan`` makes them: the system resolver, Nmap's choice
    of the address (vscand.targets.resolve.choose_address), the default policy."""
    d = plan_tasks([target], TargetPolicy(), system_addresses, {"tcp": ports})
    tasks: list[PortTask] = SynchronousTestCase().successResultOf(d)
    return tasks


def report_block(text: str) -> str:
    """From "Nmap scan report" to the footer, latency removed."""
    start = text.index("Nmap scan report for")
    end = text.index("# Nmap done")
    block = re.sub(r"(?m)^Read from .*\n", "", text[start:end])  # --datadir notes
    return re.sub(r"Host is up \([^)]*\)\.", "Host is up.", block)


@pytest.mark.oracle_live
def test_live_normal_and_xml_match_nmap(tmp_path: Path) -> None:
    servers = [BannerServer(b.encode("latin-1"), reply=False) for b in BANNERS]
    try:
        closed = closed_ports(30)
        assert len(closed) == 30
        ports = [s.port for s in servers] + closed
        t0 = time.time()
        normal, xml = run_nmap(tmp_path, ports)
        t1 = time.time()
    finally:
        for server in servers:
            server.close()
    # the probe file's own waits (its one NULL probe's 400 ms a port, the ports in
    # parallel) under the suite's machine allowance (tests/hostile/measure.py)
    db = load_probe_files(tmp_path / "vc.probes")
    bound = faithful_bound(db, "TCP", ports[0], ScanOptions().intensity, tls_restart=False)
    assert t1 - t0 <= allowed(bound), (t1 - t0, bound)
    results = parse_nmap_xml(xml)
    assert len(results) == len(servers)  # closed ones were collapsed
    # vscand scans the address nmap scanned, and knows the same other addresses
    tasks = {t.port: t for t in vscand_tasks("localhost", ports)}
    assert {t.address for t in tasks.values()} == {r["host"] for r in results} == {"127.0.0.1"}
    products = [r["service"]["product"] for r in results]
    assert products.count(P78) == 5
    # the collapsed ports come back as results too (our writers get every port)
    for port in closed:
        service = empty_service("x")
        results.append(
            {
                "host": "127.0.0.1",
                "hostname": "localhost",
                "port": port,
                "protocol": "tcp",
                "state": "closed",
                "reason": "conn-refused",
                "service": service,
            }
        )
    for result in results:
        others = tasks[result["port"]].other_addresses
        if others:  # as the engine writes results (vscand.scan.model.target_fields)
            result["other_addresses"] = list(others)
    ours = format_hosts(results)
    assert ours == report_block(normal)
    # XML: the <host> element matches nmap's (times and the <times> element aside)
    meta = ScanMeta(args="nmap", start=t0, end=t1)
    mine = format_xml(results, meta)
    host_theirs = re.search(r"<address.*?</ports>", xml, re.S)
    host_mine = re.search(r"<address.*?</ports>", mine, re.S)
    assert host_theirs is not None and host_mine is not None
    assert host_mine.group(0) == host_theirs.group(0)
