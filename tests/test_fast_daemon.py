"""The daemon honours a job's ``"fast": true`` (``vscan submit --fast``)."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import Daemons, daemons_fixture, vscan
from tests.e2e import servers as srv
from tests.redis_server import RedisServer

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


def test_a_fast_job(redis_server: RedisServer, daemons: Daemons) -> None:
    http = srv.ThreadedServer(srv.http_silent_until_data)
    ssh = srv.ThreadedServer(srv.banner_then_silence(b"SSH-2.0-OpenSSH_9.2p1 Debian-2\r\n"))
    try:
        daemons.start("fast:1")
        ports = f"{http.port},{ssh.port}"
        job_id = vscan(redis_server, "submit", "127.0.0.1", "-p", ports, "--fast").stdout.strip()
        wait = vscan(redis_server, "wait", job_id, "--timeout", "120", check=False)
        assert wait.returncode == 0, (wait.stdout, wait.stderr)
        out = vscan(redis_server, "results", job_id, "--json").stdout
    finally:
        http.close()
        ssh.close()
    results = {r["port"]: r for r in map(json.loads, out.splitlines())}
    assert set(results) == {http.port, ssh.port}
    assert all(r.get("fast") is True for r in results.values()), "the job's fast field was lost"
    web, shell = results[http.port]["service"], results[ssh.port]["service"]
    assert (web["name"], web["product"]) == ("http", "Apache httpd")
    assert (shell["name"], shell["product"]) == ("ssh", "OpenSSH")
