"""``vscan scan`` as a user runs it: real sockets on 127.0.0.1, the installed console script."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.loopback import BannerServer, free_port

VSCAN = str(Path(sys.executable).with_name("vscan"))


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    return subprocess.run(
        [VSCAN, "scan", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1", "-p", "99999"], "out of range"),
        (["10.0.0.1", "-p", "22"], "outside the allowed networks"),
        (["192.168.1.1", "-p", "22"], "outside the allowed networks"),
        (["127.0.0.2", "--deny", "127.0.0.2/32", "-p", "22"], "denied"),
        (["0x7f.0.0.1", "-p", "22"], "not a valid IPv4 address"),
        (["2130706433", "-p", "22"], "not a valid IPv4 address"),
        (["127.0.0.1", "-p", "22", "--probes", "/nonexistent/probes"], "cannot read probe file"),
        (["127.0.0.1", "-p", "22", "-oX", "/nonexistent/dir/out.xml"], "not a writable directory"),
        ([], "no targets given"),
        (["127.0.0.1", "-p", "S:53"], "SCTP"),
        (["-iL", "/nonexistent/targets.txt", "-p", "22"], "nonexistent"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vscan: error:"), proc.stderr
    assert message.lower() in lines[0].lower()
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_scan_banner_and_closed_ports_with_all_outputs(tmp_path: Path) -> None:
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    closed = free_port()  # nothing listens on it
    with BannerServer(banner) as server:
        xml_out = tmp_path / "out.xml"
        normal_out = tmp_path / "out.nmap"
        json_out = tmp_path / "out.jsonl"
        proc = run(
            "127.0.0.1",
            "-p",
            f"{server.port},{closed}",
            "-oX",
            str(xml_out),
            "-oN",
            str(normal_out),
            "-oJ",
            str(json_out),
        )
    assert proc.returncode == 0, proc.stderr
    # the table on stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith(f"{server.port}/tcp"))
    assert row.split()[1:4] == ["open", "ssh", "OpenSSH"]
    assert "9.2p1 Debian 2+deb12u3 (protocol 2.0)" in row
    assert "Service Info: OS: Linux; CPE: cpe:/o:linux:linux_kernel" in proc.stdout
    assert f"{closed}/tcp" in proc.stdout and "closed" in proc.stdout
    # JSON lines: one result per port, the DESIGN result format
    results = {r["port"]: r for r in map(json.loads, json_out.read_text().splitlines())}
    assert set(results) == {server.port, closed}
    ssh = results[server.port]
    assert (ssh["state"], ssh["reason"], ssh["protocol"]) == ("open", "syn-ack", "tcp")
    assert ssh["service"]["product"] == "OpenSSH"
    assert ssh["service"]["cpe"] == ["cpe:/a:openbsd:openssh:9.2p1", "cpe:/o:linux:linux_kernel"]
    assert (results[closed]["state"], results[closed]["reason"]) == ("closed", "conn-refused")
    # Nmap XML
    root = ET.parse(xml_out).getroot()
    assert root.tag == "nmaprun"
    port = root.find(f".//port[@portid='{server.port}']")
    assert port is not None
    service = port.find("service")
    assert service is not None
    assert service.get("name") == "ssh" and service.get("product") == "OpenSSH"
    assert [c.text for c in service.findall("cpe")] == [
        "cpe:/a:openbsd:openssh:9.2p1",
        "cpe:/o:linux:linux_kernel",
    ]
    # -oN has the same table
    assert row in normal_out.read_text()


def test_json_streams_results() -> None:
    with BannerServer(b"220 zzhost FTP server ready\r\n") as server:
        proc = run("127.0.0.1", "-p", str(server.port), "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["service"]["product"] == "ProFTPD"
    assert result["service"]["hostname"] == "zzhost"
    assert result["port"] == server.port
