"""A fleet command whose reader has gone (``vscan status JOB | head -1``) ends quietly with
exit 0, as the local commands do: no traceback. Real redis-server; the reader is a pipe whose
read end is closed before the command writes, so every write fails with EPIPE."""

from __future__ import annotations

import os
import subprocess

import pytest

from tests.daemon_harness import CACHE_DIR, REPO, VSCAN, vscan
from tests.redis_server import RedisServer


@pytest.mark.parametrize("command", ["status", "export", "schedule-list"])
def test_a_closed_reader_is_not_an_error(redis_server: RedisServer, command: str) -> None:
    job = vscan(redis_server, "submit", "127.0.0.1", "-p", "22", "--id", "piped").stdout.strip()
    vscan(redis_server, "schedule", "add", "s", "--every", "1h", "127.0.0.1", "--paused")
    args = {
        "status": ["status", job],
        "export": ["export", job, "-oX", "-"],
        "schedule-list": ["schedule", "list"],
    }[command]
    read_end, write_end = os.pipe()
    os.close(read_end)
    env = {k: v for k, v in os.environ.items() if k != "VSCAND_REDIS_URL"}
    env["VSCAND_CACHE_DIR"] = CACHE_DIR
    try:
        proc = subprocess.run(
            [VSCAN, *args, "--redis-url", redis_server.url],
            stdout=write_end,
            stderr=subprocess.PIPE,
            text=True,
            timeout=60,
            env=env,
            cwd=str(REPO),
            check=False,
        )
    finally:
        os.close(write_end)
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr and "Error" not in proc.stderr, proc.stderr
