"""``vscan scan`` over UDP as a user runs it: the console script, real sockets on 127.0.0.1."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from pathlib import Path

from tests.e2e.udp_targets import ClosedUDPPort, UDPServer
from tests.test_scan_cli import run

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
