"""The worker's services in-process, on a ``Clock``, against :mod:`vscand.queue.testing`.

A whole :class:`~vscand.daemon.worker.WorkerService` runs here with the in-memory queue and
an engine whose ports end when the test says: lease loss (the attempt is lost and writes
nothing more), drain (stop waits for the running attempt, then releases what is left at
the deadline), cancel, and the sharding decision; then the intake and the duties alone.
At the end of each test the clock has no pending calls.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import Logger

from vscand.config import DaemonConfig
from vscand.daemon.attempt import AttemptState, JobAttempt
from vscand.daemon.duties import WorkerDuties
from vscand.daemon.intake import JobIntake
from vscand.daemon.lograte import RateLimitedLog
from vscand.daemon.state import WorkerState
from vscand.daemon.worker import WorkerService
from vscand.ports import ServicesTable
from vscand.queue.consumer import Delivery
from vscand.queue.heartbeat import parse_heartbeats
from vscand.queue.testing import FakeWorkerQueue, PendingEntry
from vscand.scan.model import PortTask, Result

LEASE_MS = 3000  # renewals every second


class FakeScheduler:
    """Starts every port at once; ``stop`` cancels the ports still running."""

    def __init__(
        self,
        scan_port: Callable[[PortTask], defer.Deferred[Result]],
        on_result: Callable[[Result], None],
    ) -> None:
        self._scan_port = scan_port
        self._on_result = on_result
        self._running: list[defer.Deferred[Result]] = []
        self._done: defer.Deferred[None] = defer.Deferred()
        self.in_flight = 0
        self.stopped = False

    def run(self, tasks: list[PortTask]) -> defer.Deferred[None]:
        for port_task in tasks:
            d = self._scan_port(port_task)
            self.in_flight += 1
            self._running.append(d)
            d.addCallbacks(self._on_result, lambda f: f.trap(defer.CancelledError))
            d.addBoth(self._ended)
        if not tasks:
            self._done.callback(None)
        return self._done

    def _ended(self, _: object) -> None:
        self.in_flight -= 1
        if self.in_flight == 0 and not self._done.called:
            self._done.callback(None)

    def stop(self) -> None:
        self.stopped = True
        for d in list(self._running):
            d.cancel()  # one waiting on the engine's port (called, paused) cancels that


class FakeEngine:
    """A scan engine whose ports end when the test answers them."""

    limiter = None
    lag = None

    def __init__(self) -> None:
        self.ports: dict[tuple[str, int], defer.Deferred[Result]] = {}
        self.schedulers: list[FakeScheduler] = []

    def start(self) -> None:
        pass

    def stop(self) -> None:
        pass

    def scan_port(self, task: PortTask, options: Any = None) -> defer.Deferred[Result]:
        d: defer.Deferred[Result] = defer.Deferred()
        self.ports[(task.address, task.port)] = d
        return d

    def make_scheduler(
        self,
        scan_port: Callable[[PortTask], defer.Deferred[Result]],
        on_result: Callable[[Result], None],
        options: Any = None,
    ) -> FakeScheduler:
        scheduler = FakeScheduler(scan_port, on_result)
        self.schedulers.append(scheduler)
        return scheduler

    def answer(self, port: int, state: str = "closed", address: str = "127.0.0.1") -> None:
        result = {"host": address, "hostname": None, "port": port, "protocol": "tcp"}
        self.ports.pop((address, port)).callback({**result, "state": state})

    def running(self) -> list[int]:
        return sorted(port for (_, port), d in self.ports.items() if not d.called)


PROBES = (
    SimpleNamespace(
        db=SimpleNamespace(
            engine=SimpleNamespace(
                name="fake", profile=SimpleNamespace(name="none"), reason="in-process test"
            ),
            lines=[],
            exclude=SimpleNamespace(excludes=lambda protocol, port, scanned: False),
            # the release the probe database reproduces (decides the version-script set)
            nmap_release="7.93",
        )
    ),
    ServicesTable(entries=[]),
)


class Daemon:
    def __init__(self, tmp_path: Path, **config: Any) -> None:
        self.clock = Clock()
        self.queue = FakeWorkerQueue(self.clock, lease_ms=LEASE_MS)
        self.engine = FakeEngine()
        config.setdefault("job_idle_ms", LEASE_MS)
        self.config = DaemonConfig(
            cache_dir=str(tmp_path), consumer="worker-1", watchdog=False, **config
        )
        self.worker = WorkerService(
            self.config,
            self.clock,
            queue=self.queue,
            probes=PROBES,
            engine_factory=lambda matcher, services: self.engine,
        )
        self.stopped: defer.Deferred[None] | None = None

    def start(self) -> None:
        self.worker.startService()
        assert self.worker.ready.called

    def advance(self, seconds: float, step: float = 0.1) -> None:
        for _ in range(round(seconds / step)):
            self.clock.advance(step)

    def submit(self, job_id: str, ports: str, **fields: Any) -> str:
        entry = self.queue.submit(
            {"id": job_id, "targets": ["127.0.0.1"], "ports": ports, **fields}
        )
        self.advance(0.5)
        return entry

    def attempt(self, entry: str) -> JobAttempt:
        return self.worker.state.attempts[entry]

    def stop(self) -> defer.Deferred[None]:
        self.stopped = self.worker.stopService()
        return self.stopped


@pytest.fixture
def daemon(tmp_path: Path) -> Iterator[Daemon]:
    d = Daemon(tmp_path)
    d.start()
    yield d
    if d.stopped is None:
        d.stop()
        d.advance(30)
    assert d.stopped.called
    assert d.clock.getDelayedCalls() == []


def test_a_job_runs_to_its_end_and_is_acknowledged(daemon: Daemon) -> None:
    entry = daemon.submit("j1", "80,81")
    assert daemon.engine.running() == [80, 81]
    daemon.engine.answer(80)
    daemon.engine.answer(81, "open")
    daemon.advance(0.5)
    assert daemon.queue.status("j1") == "done"
    assert [r["port"] for r in daemon.queue.jobs["j1"].results] == [80, 81]
    assert daemon.queue.acked == [entry]
    assert daemon.worker.state.attempts == {}
    assert daemon.queue.heartbeats["worker-1"]["jobs_done"] == 1


def test_a_lost_lease_stops_the_attempt_and_it_writes_nothing_more(daemon: Daemon) -> None:
    entry = daemon.submit("j1", "80,81")
    daemon.engine.answer(80)
    daemon.advance(0.2)
    attempt = daemon.attempt(entry)
    assert attempt.state is AttemptState.RUNNING
    daemon.queue.take_over(entry)  # another worker claims the entry (a long GC pause, say)
    daemon.advance(1.5)  # a renewal finds out
    assert attempt.state is AttemptState.LOST
    assert daemon.engine.schedulers[0].stopped
    assert attempt.done.called and daemon.worker.state.attempts == {}
    # only the result written before the loss; never acknowledged here, never finished
    assert [r["port"] for r in daemon.queue.jobs["j1"].results] == [80]
    assert daemon.queue.acked == [] and daemon.queue.status("j1") == "running"


def test_a_fenced_result_write_loses_the_attempt(daemon: Daemon) -> None:
    entry = daemon.submit("j1", "80,81")
    attempt = daemon.attempt(entry)
    daemon.queue.jobs["j1"].fields["attempt"] = "another-workers-attempt"
    daemon.engine.answer(80)
    daemon.engine.answer(81)
    daemon.advance(0.2)
    assert attempt.state is AttemptState.LOST
    assert daemon.queue.jobs["j1"].results == [] and daemon.queue.acked == []


def test_stop_waits_for_the_running_attempt_to_end(daemon: Daemon) -> None:
    entry = daemon.submit("j1", "80")
    stopped = daemon.stop()
    daemon.advance(5)
    assert not stopped.called  # draining: the job may still finish
    # its lease is renewed while it drains (5 s > the 3 s lease): nobody else claims it
    assert daemon.clock.seconds() - daemon.queue.pending[entry].delivered_at <= 1.0
    daemon.engine.answer(80)
    daemon.advance(0.2)
    assert stopped.called
    assert daemon.queue.status("j1") == "done" and daemon.queue.acked == [entry]
    assert daemon.queue.released == []


def test_stop_releases_what_did_not_end_by_the_drain_deadline(daemon: Daemon) -> None:
    entry = daemon.submit("j1", "80")
    attempt = daemon.attempt(entry)
    late = daemon.submit("j2", "81")
    stopped = daemon.stop()
    drain = daemon.config.drain_timeout
    daemon.advance(drain - 3.5)
    assert not stopped.called
    daemon.advance(1)  # the deadline less the release margin
    assert stopped.called
    assert attempt.state is AttemptState.RELEASED
    assert sorted(daemon.queue.released) == sorted([entry, late])
    assert daemon.queue.status("j1") == "queued" and daemon.queue.acked == []


def test_a_cancelled_job_stops_and_ends_cancelled(daemon: Daemon) -> None:
    entry = daemon.submit("j1", "80,81")
    attempt = daemon.attempt(entry)
    daemon.engine.answer(80)
    daemon.queue.request_cancel("j1")
    daemon.advance(1.2)
    assert daemon.engine.schedulers[0].stopped
    assert attempt.state is AttemptState.FINISHING  # was CANCELLED, then ended
    assert daemon.queue.status("j1") == "cancelled"
    assert [r["port"] for r in daemon.queue.jobs["j1"].results] == [80]
    assert daemon.queue.acked == [entry]


@pytest.mark.parametrize(
    ("ports", "job_task_ports", "tasks"),
    [("80-84", None, 3), ("80-81", None, 0), ("80-84", 8, 0), ("80-84", 1, 5)],
)
def test_sharding_follows_the_shard_size(
    tmp_path: Path, ports: str, job_task_ports: int | None, tasks: int
) -> None:
    d = Daemon(tmp_path, task_ports=2)
    d.start()
    extra = {} if job_task_ports is None else {"task_ports": job_task_ports}
    entry = d.submit("big", ports, **extra)
    if tasks:
        assert d.queue.jobs["big"].fields["sharded"] == "1"
        assert d.queue.acked[0] == entry
        task_ids = sorted(j for j in d.queue.jobs if j.startswith("big/t"))
        assert len(task_ids) == tasks
        # the tasks are jobs of this very queue: the worker takes them, never splits them
        d.advance(0.5)
        while d.engine.running():
            for port in d.engine.running():
                d.engine.answer(port)
            d.advance(0.5)
        assert all(d.queue.status(t) == "done" for t in task_ids)
        assert sum(len(d.queue.jobs[t].results) for t in task_ids) == 5
    else:
        assert "sharded" not in d.queue.jobs["big"].fields
        first, _, last = ports.partition("-")
        assert d.engine.running() == list(range(int(first), int(last) + 1))
        for port in d.engine.running():
            d.engine.answer(port)
        d.advance(0.5)
        assert d.queue.status("big") == "done" and d.queue.acked == [entry]
    d.stop()
    d.advance(30)
    assert d.clock.getDelayedCalls() == []


# -- each service alone ---------------------------------------------------------


def _state(tmp_path: Path, clock: Clock, fake: FakeWorkerQueue, **config: Any) -> WorkerState:
    config.setdefault("job_idle_ms", LEASE_MS)
    return WorkerState(
        DaemonConfig(cache_dir=str(tmp_path), consumer="worker-1", **config),
        clock,
        fake,
        RateLimitedLog(Logger(), clock, 10.0),
    )


class Handler:
    """An intake's ``handle``: each delivery ends when the test says."""

    def __init__(self) -> None:
        self.deliveries: list[Delivery] = []
        self.ends: list[defer.Deferred[None]] = []

    async def __call__(self, delivery: Delivery) -> None:
        self.deliveries.append(delivery)
        end: defer.Deferred[None] = defer.Deferred()
        self.ends.append(end)
        await end


def _stop_intake(intake: JobIntake, clock: Clock) -> None:
    intake.state.stopping = True
    intake.stopService()
    clock.advance(6)  # the read blocked on the fake queue times out and the loop ends
    assert clock.getDelayedCalls() == []


def test_intake_takes_no_more_than_max_jobs(tmp_path: Path) -> None:
    clock = Clock()
    queue = FakeWorkerQueue(clock, lease_ms=LEASE_MS)
    state = _state(tmp_path, clock, queue, max_jobs=1)
    handler = Handler()
    intake = JobIntake(state, handler)
    defer.Deferred.fromCoroutine(queue.connect())
    first, second = queue.submit(b'{"id": "a"}'), queue.submit(b'{"id": "b"}')
    intake.startService()
    clock.advance(1)
    assert [d.entry_id for d in handler.deliveries] == [first]
    assert state.handling == {first}
    handler.ends[0].callback(None)  # the first entry is ended: a slot is free
    clock.advance(0.1)
    assert [d.entry_id for d in handler.deliveries] == [first, second]
    handler.ends[1].callback(None)
    _stop_intake(intake, clock)


def test_the_janitor_claims_entries_of_a_dead_consumer(tmp_path: Path) -> None:
    clock = Clock()
    queue = FakeWorkerQueue(clock, lease_ms=LEASE_MS)
    state = _state(tmp_path, clock, queue)
    handler = Handler()
    intake = JobIntake(state, handler)
    defer.Deferred.fromCoroutine(queue.connect())
    entry = queue.submit(b'{"id": "a"}')
    queue._delivered = 1
    queue.pending[entry] = PendingEntry("worker-0", 1, clock.seconds())
    intake.startService()
    clock.advance(1)
    assert handler.deliveries == []  # its lease has not run out yet
    for _ in range(5):
        clock.advance(1)
    [claimed] = handler.deliveries
    assert (claimed.entry_id, claimed.deliveries) == (entry, 2)
    assert queue.pending[entry].owner == "worker-1"
    handler.ends[0].callback(None)
    _stop_intake(intake, clock)


def test_the_heartbeat_is_written_in_the_format_vscan_workers_reads(tmp_path: Path) -> None:
    clock = Clock()
    queue = FakeWorkerQueue(clock)
    state = _state(tmp_path, clock, queue, queue="dc2")
    defer.Deferred.fromCoroutine(queue.connect())
    beat = WorkerDuties(state, None).heartbeat_now()
    defer.Deferred.fromCoroutine(queue.write_heartbeat(beat))
    [parsed] = parse_heartbeats([beat.consumer.encode(), beat.encode().encode()])
    assert parsed == queue.heartbeats["worker-1"]
    assert (parsed["consumer"], parsed["queue"], parsed["jobs"]) == ("worker-1", "dc2", [])
    assert parsed["max_pending_writes"] == 2 * state.config.concurrency
