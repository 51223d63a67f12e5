"""The daemon scans a job's UDP ports: ``vscan submit -p U:...``, Redis, ``twist vscand``."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import Daemons, daemons_fixture, vscan
from tests.e2e.udp_targets import ClosedUDPPort, UDPServer
from tests.redis_server import RedisServer
from tests.test_udp_scan_cli import rpc_responder

pytestmark = pytest.mark.daemon


@pytest.fixture
def daemons(redis_server: RedisServer, tmp_path: Path) -> Iterator[Daemons]:
    pool_iter = daemons_fixture(redis_server, tmp_path)
    pool = next(pool_iter)
    try:
        yield pool
    finally:
        print(pool.logs())  # shown when the test failed
        next(pool_iter, None)


def test_a_job_with_udp_ports(redis_server: RedisServer, daemons: Daemons) -> None:
    server = UDPServer(rpc_responder)
    closed = ClosedUDPPort()
    try:
        daemons.start("udp:1")
        ports = f"U:{server.port},{closed.port}"
        job_id = vscan(redis_server, "submit", "127.0.0.1", "-p", ports).stdout.strip()
        wait = vscan(redis_server, "wait", job_id, "--timeout", "60", check=False)
        assert wait.returncode == 0, (wait.stdout, wait.stderr)
        out = vscan(redis_server, "results", job_id, "--json").stdout
    finally:
        server.close()
    results = {r["port"]: r for r in map(json.loads, out.splitlines())}
    assert set(results) == {server.port, closed.port}
    rpc, shut = results[server.port], results[closed.port]
    assert (rpc["protocol"], rpc["state"], rpc["service"]["name"]) == ("udp", "open", "rpcbind")
    assert (rpc["service"]["method"], rpc["service"]["conf"]) == ("probed", 10)
    assert (shut["protocol"], shut["state"], shut["reason"]) == ("udp", "closed", "port-unreach")
