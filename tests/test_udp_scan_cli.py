"""``vscan scan`` over UDP as a user runs it: the console script, real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import subprocess
import sys
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.e2e.udp_targets import ClosedUDPPort, UDPServer
from tests.test_scan_cli import run

REPO = Path(__file__).resolve().parent.parent

#: the UDP RPCCheck probe's transaction id, and an ONC RPC reply to it (PROG_MISMATCH 2-4)
RPC_XID = b"\x72\xfe\x1d\x13"
RPC_REPLY = RPC_XID + bytes.fromhex("00000001 00000000 0000000000000000 00000002 00000002 00000004")


def rpc_responder(data: bytes) -> list[bytes]:
    return [RPC_REPLY] if data.startswith(RPC_XID) else []


def test_udp_ports_in_every_output(tmp_path: Path) -> None:
    server = UDPServer(rpc_responder)
    closed = ClosedUDPPort()
    try:
        xml_out, json_out = tmp_path / "out.xml", tmp_path / "out.jsonl"
        proc = run(
            "127.0.0.1",
            "-p",
            f"U:{server.port},{closed.port}",
            "-oX",
            str(xml_out),
            "-oJ",
            str(json_out),
            "--no-progress",
        )
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    row = next(line for line in proc.stdout.splitlines() if line.startswith(f"{server.port}/udp"))
    assert row.split()[1:3] == ["open", "rpcbind"]
    assert f"{closed.port}/udp closed" in " ".join(proc.stdout.split())
    results = {r["port"]: r for r in map(json.loads, json_out.read_text().splitlines())}
    rpc = results[server.port]
    assert (rpc["protocol"], rpc["state"], rpc["reason"]) == ("udp", "open", "udp-response")
    assert (rpc["service"]["name"], rpc["service"]["method"], rpc["service"]["conf"]) == (
        "rpcbind",
        "probed",
        10,
    )
    assert rpc["matches"][0]["probe"] == "RPCCheck", "no NULL probe: RPCCheck is the first"
    assert (results[closed.port]["state"], results[closed.port]["reason"]) == (
        "closed",
        "port-unreach",
    )
    root = ET.parse(xml_out).getroot()
    port = root.find(f".//port[@portid='{server.port}']")
    assert port is not None and port.get("protocol") == "udp"
    scaninfo = root.find("scaninfo")
    assert scaninfo is not None and scaninfo.get("protocol") == "udp"


def test_udp_endpoint_target() -> None:
    server = UDPServer(rpc_responder)
    try:
        proc = run(f"127.0.0.1:{server.port}/udp", "--json")
    finally:
        server.close()
    assert proc.returncode == 0, proc.stderr
    (result,) = map(json.loads, proc.stdout.splitlines())
    assert (result["port"], result["protocol"], result["service"]["name"]) == (
        server.port,
        "udp",
        "rpcbind",
    )


def run_checkout(*args: str) -> subprocess.CompletedProcess[str]:
    """``vscan scan`` of this checkout (the venv's console script may run another's)."""
    code = (
        f"import sys; sys.path.insert(0, {str(REPO)!r}); "
        "from vscand.cli import main; sys.exit(main())"
    )
    return subprocess.run(
        [sys.executable, "-c", code, "scan", *args],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


@pytest.mark.parametrize(("release", "named"), [("7.93", True), ("7.95", False)])
def test_a_port_nmap_services_names_unknown_per_release(
    tmp_path: Path, release: str, named: bool
) -> None:
    """The nmap-services beside ``--probes`` is read, as the probe file's release reads it:
    from 7.94 a line naming its port ``unknown`` gives no name (b7c76ea08), so a closed port
    listed so has no ``<service>`` element, like an unlisted one."""
    closed = ClosedUDPPort()
    datadir = tmp_path / "share" / "nmap"
    datadir.mkdir(parents=True)
    (datadir / "nmap-service-probes").write_text(
        "Probe UDP Hello q|hello|\nrarity 1\nmatch hello m|^hello|\n"
    )
    (datadir / "nmap-services").write_text(f"unknown\t{closed.port}/udp\t0.000000\n")
    xml_out = tmp_path / "out.xml"
    proc = run_checkout(
        "127.0.0.1",
        "-p",
        f"U:{closed.port}",
        "--probes",
        str(datadir / "nmap-service-probes"),
        "--nmap-release",
        release,
        "-oX",
        str(xml_out),
        "--no-progress",
        "--no-scripts",
    )
    assert proc.returncode == 0, proc.stderr
    port = ET.parse(xml_out).getroot().find(f".//port[@portid='{closed.port}']")
    assert port is not None
    state = port.find("state")
    assert state is not None and state.get("state") == "closed"
    service = port.find("service")
    if named:
        assert service is not None
        assert (service.get("name"), service.get("method"), service.get("conf")) == (
            "unknown",
            "table",
            "3",
        )
    else:
        assert service is None, ET.tostring(port)
    # the table says unknown either way (Nmap prints "unknown" for no name)
    assert f"{closed.port}/udp closed unknown" in " ".join(proc.stdout.split())
