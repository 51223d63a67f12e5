"""Fixtures of the daemon suites (a pytest plugin, see ``conftest.py``): a pool of real
``twist vscand`` daemons on the test's redis-server, and loopback listeners. A module
may override either (the chaos suite's daemons use its durable Redis)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.daemon_harness import Daemons, Listeners, daemons_fixture
from tests.redis_server import RedisServer


@pytest.fixture
def daemons(redis_server: RedisServer, tmp_path: Path) -> Iterator[Daemons]:
    pool_iter = daemons_fixture(redis_server, tmp_path)
    pool = next(pool_iter)
    try:
        yield pool
    finally:
        print(pool.logs())  # shown when the test failed
        next(pool_iter, None)


@pytest.fixture
def listen() -> Iterator[Listeners]:
    listeners = Listeners()
    try:
        yield listeners
    finally:
        listeners.close()
