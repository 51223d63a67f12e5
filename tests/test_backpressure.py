"""The worker's write gate (``WriteGate.when_written``, built by ``WorkerService``): a port
starts only while fewer than ``max_pending_writes`` result writes plus started ports are
pending; it waits otherwise, starts when writes end, and a waiting port that is cancelled
never starts. Driven by ``twisted.internet.task.Clock``; the ports are Deferreds the test
fires."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock

from vscand.config import ConfigError, DaemonConfig
from vscand.daemon.backpressure import WriteGate
from vscand.daemon.worker import WorkerService


class Ports:
    """Ports whose scans end when the test says."""

    def __init__(self) -> None:
        self.started: list[int] = []
        self.scans: dict[int, defer.Deferred[Any]] = {}

    def start(self, n: int) -> Any:
        def begin() -> defer.Deferred[Any]:
            self.started.append(n)
            self.scans[n] = defer.Deferred()
            return self.scans[n]

        return begin


def worker(tmp_path: Path, **config: Any) -> tuple[WriteGate, Clock]:
    clock = Clock()
    service = WorkerService(DaemonConfig(cache_dir=str(tmp_path), **config), reactor=clock)
    return service.state.gate, clock


def test_ports_wait_while_writes_are_pending(tmp_path: Path) -> None:
    service, clock = worker(tmp_path, concurrency=2, max_pending_writes=3)
    ports = Ports()
    scans = [service.when_written(ports.start(n)) for n in range(5)]
    assert ports.started == [0, 1, 2]  # 3 started ports fill the bound
    # port 0 ends and its result's write begins (Redis does not answer): still no room
    outcomes: list[Any] = []
    scans[0].addCallback(outcomes.append)
    ports.scans[0].callback("result 0")
    service.write_started()
    clock.advance(0)
    assert outcomes == ["result 0"] and ports.started == [0, 1, 2]
    # ports 1 and 2 end the same way: 3 writes pending, nothing scanning, still no room
    for n in (1, 2):
        ports.scans[n].callback(f"result {n}")
        service.write_started()
    clock.advance(0)
    assert ports.started == [0, 1, 2]
    assert service.pending_writes_peak == 3
    # one write goes through: one port starts, in order
    service.write_ended(True)
    clock.advance(0)
    assert ports.started == [0, 1, 2, 3]
    for _ in range(2):
        service.write_ended(True)
    clock.advance(0)
    assert ports.started == [0, 1, 2, 3, 4]
    assert not service.waiters and not service.holding


def test_a_waiting_port_cancelled_never_starts(tmp_path: Path) -> None:
    service, clock = worker(tmp_path, concurrency=1, max_pending_writes=1)
    ports = Ports()
    first = service.when_written(ports.start(0))
    waiting = service.when_written(ports.start(1))
    failures: list[Any] = []
    waiting.addErrback(failures.append)
    waiting.cancel()  # a stopped scan cancels its ports in flight
    assert failures and failures[0].check(defer.CancelledError)
    assert not service.waiters
    ports.scans[0].callback("result 0")
    clock.advance(0)
    assert ports.started == [0]
    assert first.called


def test_default_bound_is_twice_the_concurrency(tmp_path: Path) -> None:
    service, _ = worker(tmp_path, concurrency=7)
    assert service.max_pending_writes == 14
    service, _ = worker(tmp_path, concurrency=7, max_pending_writes=5)
    assert service.max_pending_writes == 5


@pytest.mark.parametrize(
    ("key", "value"),
    [("max_pending_writes", "-1"), ("max_pending_writes", "x"), ("warn_interval", "0")],
)
def test_outage_keys_are_checked(tmp_path: Path, key: str, value: str) -> None:
    with pytest.raises(ConfigError, match=key):
        DaemonConfig(cache_dir=str(tmp_path), **{key: value})  # type: ignore[arg-type]
