"""End to end: the DTLS restart (Nmap 7.94+) against ``openssl s_server -dtls``.

Two instances of the same target on free 127.0.0.1 UDP ports (s_server serves one
DTLS client at a time and stays with it, so each scanner gets its own), scanned at
the same time by the Debian 13 root's Nmap 7.95 and by ``vscan scan -p U:PORT
--probes <its 7.95 file> --nmap-release 7.95``; the port records must agree
(tests/e2e/compare.py).  What Nmap 7.95 answers (seen by hand with
``--version-trace``): DTLSSessionReq gets a HelloVerifyRequest, a hard ``dtls``
match (line 16803 of the file); the restart's DTLS connect from a new socket is not
answered by the busy s_server and times out after 8 s, so the port ends INCOMPLETE:
``<service name="unknown" tunnel="ssl" method="table" conf="3"/>`` (``ssl/unknown``).

The ``listen`` case runs ``s_server -dtls -listen`` (stateless cookie exchange, then
the first client that completes a handshake; not ``-quiet``, which there never
answers the restart's handshake): the restart's first DTLS handshake completes, so
vscan's JSON carries ``service.tls``; the XML must still agree with Nmap's.
"""

from __future__ import annotations

import errno
import json
import os
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.compare import differences, parse_xml
from tests.e2e.oracle_run import REPO, scan_env
from tests.e2e.tls_servers import make_certificate
from tests.loopback import free_port
from tests.releases import debian13, require

pytestmark = pytest.mark.e2e

SCAN_TIMEOUT = 300.0


def _udp_bound(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        try:
            probe.bind(("127.0.0.1", port))
        except OSError as exc:
            return exc.errno == errno.EADDRINUSE
    return False


def start_dtls_server(
    workdir: Path, cert_dir: Path, name: str, listen: bool
) -> tuple[int, subprocess.Popen[bytes]]:
    cert = make_certificate(cert_dir)
    port = free_port()
    cmd = ["openssl", "s_server", "-dtls", "-accept", f"127.0.0.1:{port}"]
    cmd += ["-cert", str(cert.cert), "-key", str(cert.key), "-naccept", "1000000"]
    # without -quiet s_server ends at EOF on stdin: a pipe kept open stands in for a terminal
    cmd += ["-listen"] if listen else ["-quiet"]
    log = open(workdir / f"{name}.out", "wb")  # noqa: SIM115 (kept open by the child)
    proc = subprocess.Popen(
        cmd,
        stdin=subprocess.PIPE if listen else subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    deadline = time.monotonic() + 20
    while not _udp_bound(port):
        if proc.poll() is not None or time.monotonic() > deadline:
            proc.kill()
            pytest.fail(f"openssl s_server -dtls did not bind 127.0.0.1:{port}")
        time.sleep(0.05)
    return port, proc


@pytest.fixture(params=["plain", "listen"])
def servers(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[int, int, bool]]:
    listen = request.param == "listen"
    procs: list[subprocess.Popen[bytes]] = []
    try:
        a, pa = start_dtls_server(tmp_path, tmp_path / "cert-a", "s_server-a", listen)
        procs.append(pa)
        b, pb = start_dtls_server(tmp_path, tmp_path / "cert-b", "s_server-b", listen)
        procs.append(pb)
        yield a, b, listen
    finally:
        for proc in procs:
            if proc.stdin is not None:
                proc.stdin.close()
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def test_dtls_restart_matches_nmap_795(servers: tuple[int, int, bool], tmp_path: Path) -> None:
    release = require(debian13())
    if tuple(int(x) for x in release.version.split(".")) < (7, 94):
        pytest.skip(f"Nmap {release.version} has no DTLS restart")
    nmap_port, vscan_port, listen = servers
    nmap_xml, vscan_xml = tmp_path / "nmap.xml", tmp_path / "vscan.xml"
    vscan_json = tmp_path / "vscan.jsonl"
    env = scan_env()
    env["PYTHONPATH"] = str(REPO)  # this checkout's vscand, whatever the venv installed
    vscan = subprocess.Popen(
        [
            os.environ.get("VSCAN_PYTHON", __import__("sys").executable),
            "-m",
            "vscand.cli",
            "scan",
            "127.0.0.1",
            "-p",
            f"U:{vscan_port}",
            "--probes",
            str(release.probes_file),
            "--nmap-release",
            release.version,
            "-oX",
            str(vscan_xml),
            "-oJ",
            str(vscan_json),
        ],
        env=env,
        cwd=REPO,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    nmap = release.run(
        "-sU",
        "-sV",
        "-Pn",
        "-n",
        "-p",
        f"U:{nmap_port}",
        "127.0.0.1",
        "-oX",
        "-",
        timeout=SCAN_TIMEOUT,
    )
    _, err = vscan.communicate(timeout=SCAN_TIMEOUT)
    assert nmap.returncode == 0, nmap.stderr
    assert vscan.returncode == 0, err.decode(errors="replace")
    nmap_xml.write_text(nmap.stdout)
    ours = parse_xml(vscan_xml)[vscan_port]
    theirs = parse_xml(nmap_xml)[nmap_port]
    # the premise: Nmap 7.95 restarted through DTLS
    assert theirs["tunnel"] == "ssl", f"nmap did not restart through DTLS: {theirs}"
    assert differences(theirs, ours) == []
    record = json.loads(vscan_json.read_text().splitlines()[0])
    tls = record["service"]["tls"]
    if listen:
        assert tls is not None and tls["version"].startswith("DTLS"), record["service"]
        assert tls["subject"] == "CN=vscand-test.local"
    else:
        assert tls is None, "no DTLS handshake ever completed"
