"""The scheduler and the connection rate limiter, driven by a fake clock.

``scan_port`` is a fake that hands out Deferreds the test fires; nothing
dials anything. Every test ends with no pending call on its Clock.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from twisted.internet.defer import CancelledError, Deferred, fail, succeed
from twisted.internet.task import Clock
from twisted.logger import LogLevel, capturedLogs, formatEvent
from twisted.python.failure import Failure
from twisted.trial.unittest import SynchronousTestCase

from vscand.scan.model import PortTask, Result, ScanOptions
from vscand.scan.pacing import ConnectLimiter, StartPool
from vscand.scan.scheduler import Scheduler, error_result

_sync = SynchronousTestCase()


def result_of(d: Deferred[Any]) -> Any:
    return _sync.successResultOf(d)


def failure_of(d: Deferred[Any]) -> Failure:
    return _sync.failureResultOf(d)


def tasks_for(host: str, *ports: int) -> list[PortTask]:
    return [PortTask(host, port) for port in ports]


def ok(task: PortTask, state: str = "open") -> Result:
    return {"host": task.address, "port": task.port, "protocol": task.protocol, "state": state}


class FakeScan:
    """scan_port that returns a Deferred per task, fired by the test."""

    def __init__(self) -> None:
        self.pending: dict[PortTask, Deferred[Result]] = {}
        self.started: list[PortTask] = []
        self.max_in_flight = 0
        self.max_per_host: dict[str, int] = {}

    def __call__(self, task: PortTask) -> Deferred[Result]:
        d: Deferred[Result] = Deferred()
        self.pending[task] = d
        self.started.append(task)
        d.addBoth(self._done, task)
        self.max_in_flight = max(self.max_in_flight, len(self.pending))
        load = sum(1 for t in self.pending if t.address == task.address)
        self.max_per_host[task.address] = max(self.max_per_host.get(task.address, 0), load)
        return d

    def _done(self, value: Any, task: PortTask) -> Any:
        del self.pending[task]
        return value

    def finish(self, task: PortTask, state: str = "open") -> None:
        self.pending[task].callback(ok(task, state))

    def finish_all(self) -> None:
        while self.pending:
            self.finish(next(iter(self.pending)))


@pytest.fixture
def clock() -> Iterator[Clock]:
    clock = Clock()
    yield clock
    assert not clock.getDelayedCalls()


# --------------------------------------------------------------------------- Scheduler


def test_global_concurrency_is_never_exceeded(clock: Clock) -> None:
    scan = FakeScan()
    emitted: list[Result] = []
    scheduler = Scheduler(clock, scan, emitted.append, concurrency=3)
    tasks = tasks_for("127.0.0.1", *range(1, 11))
    d = scheduler.run(tasks)
    assert scan.started == tasks[:3]
    assert scheduler.in_flight == 3
    scan.finish(tasks[1])
    assert scan.started == tasks[:4]
    scan.finish_all()
    assert scan.max_in_flight == 3
    assert [r["port"] for r in result_of(d)] == [r["port"] for r in emitted]
    assert sorted(r["port"] for r in emitted) == list(range(1, 11))
    assert scheduler.stats.started == scheduler.stats.finished == 10
    assert not scheduler.running


def test_schedulers_sharing_a_pool_share_its_concurrency(clock: Clock) -> None:
    """The daemon's jobs each have a scheduler; together they hold at most the engine's
    concurrency, and a slot freed by one job's port goes to a job that was waiting."""
    pool = StartPool(clock, concurrency=4, turn_budget=None)
    scan = FakeScan()
    first = Scheduler(clock, scan, lambda r: None, concurrency=4, pool=pool)
    second = Scheduler(clock, scan, lambda r: None, concurrency=4, pool=pool)
    a = tasks_for("127.0.0.1", *range(1, 7))
    b = tasks_for("127.0.0.2", *range(1, 7))
    done_a, done_b = first.run(a), second.run(b)
    assert scan.started == a[:4] and pool.in_flight == 4
    assert second.in_flight == 0  # waiting in the pool, not over the limit
    scan.finish(a[0])
    clock.advance(0)  # the pool wakes the waiting scheduler on the next turn
    assert scan.started[-1] in (a[4], b[0])
    assert pool.in_flight == 4 and scan.max_in_flight == 4
    while scan.pending:
        scan.finish_all()
        clock.advance(0)
    assert len(result_of(done_a)) == 6 and len(result_of(done_b)) == 6
    assert scan.max_in_flight == 4 and pool.in_flight == 0
    pool.stop()


def test_schedulers_sharing_a_pool_share_each_turns_budget(clock: Clock) -> None:
    """With the turn's time already spent by one scheduler, another starts nothing this
    turn and resumes on a later one."""
    pool = StartPool(clock, concurrency=100, turn_budget=0.005)
    scan = FakeScan()
    pool.charge(1.0)  # another scheduler spent this turn's budget
    scheduler = Scheduler(clock, scan, lambda r: None, concurrency=100, pool=pool)
    done = scheduler.run(tasks_for("127.0.0.1", 1, 2, 3))
    assert scan.started == []
    clock.advance(0)  # next turn: the budget is fresh
    clock.advance(0)
    assert len(scan.started) == 3
    scan.finish_all()
    clock.advance(0)
    assert len(result_of(done)) == 3
    pool.stop()


def test_results_are_emitted_in_completion_order(clock: Clock) -> None:
    scan = FakeScan()
    emitted: list[int] = []
    scheduler = Scheduler(clock, scan, lambda r: emitted.append(r["port"]))
    tasks = tasks_for("127.0.0.1", 1, 2, 3, 4)
    d = scheduler.run(tasks)
    for port in (3, 1, 4):
        scan.finish(PortTask("127.0.0.1", port))
        assert emitted[-1] == port  # reported as soon as that port ends
    assert not d.called
    scan.finish(PortTask("127.0.0.1", 2))
    assert emitted == [3, 1, 4, 2]
    assert [r["port"] for r in result_of(d)] == [3, 1, 4, 2]


def test_per_host_limit_lets_other_hosts_start(clock: Clock) -> None:
    scan = FakeScan()
    scheduler = Scheduler(clock, scan, lambda r: None, concurrency=10, per_host_concurrency=2)
    a = tasks_for("127.0.0.1", 1, 2, 3, 4, 5)
    b = tasks_for("127.0.0.2", 1, 2, 3)
    d = scheduler.run(a + b)
    assert scan.started == [*a[:2], *b[:2]]
    scan.finish(a[0])
    assert scan.started[-1] == a[2]  # the waiting task of the freed host goes next
    scan.finish(b[1])
    assert scan.started[-1] == b[2]
    scan.finish_all()
    assert scan.max_per_host == {"127.0.0.1": 2, "127.0.0.2": 2}
    assert len(result_of(d)) == 8


def test_per_host_and_global_limits_together(clock: Clock) -> None:
    scan = FakeScan()
    scheduler = Scheduler(clock, scan, lambda r: None, concurrency=3, per_host_concurrency=2)
    tasks = [PortTask(f"127.0.0.{h}", p) for h in (1, 2, 3) for p in range(1, 6)]
    d = scheduler.run(tasks)
    for step in range(100):
        if not scan.pending:
            break
        # finish the newest, then the oldest, to shuffle completion order
        order = list(scan.pending)
        scan.finish(order[-1] if step % 2 else order[0])
        assert len(scan.pending) <= 3
    assert scan.max_in_flight == 3
    assert max(scan.max_per_host.values()) == 2
    assert sorted((r["host"], r["port"]) for r in result_of(d)) == sorted(
        (t.address, t.port) for t in tasks
    )


def test_synchronous_scans_do_not_recurse(clock: Clock) -> None:
    scheduler = Scheduler(clock, lambda t: succeed(ok(t)), lambda r: None, concurrency=2)
    tasks = [PortTask("127.0.0.1", p % 65535 + 1, "udp" if p & 1 else "tcp") for p in range(5000)]
    assert len(result_of(scheduler.run(tasks))) == 5000


def test_a_burst_of_starts_is_spread_over_reactor_turns(clock: Clock) -> None:
    # 10,000 ports in flight must not start in one pass of the reactor
    scan = FakeScan()
    tasks = [PortTask("127.0.0.1", p) for p in range(1, 26)]
    scheduler = Scheduler(clock, scan, lambda r: None, concurrency=100, start_batch=10)
    d = scheduler.run(tasks)
    assert len(scan.started) == 10
    # the rest waits for the next reactor turn (task.Clock runs the chained turns at once)
    assert [c.getTime() for c in clock.getDelayedCalls()] == [0]
    clock.advance(0)
    assert len(scan.started) == 25
    scan.finish_all()
    assert len(result_of(d)) == 25


def test_stop_cancels_a_pending_batch(clock: Clock) -> None:
    scan = FakeScan()
    tasks = [PortTask("127.0.0.1", p) for p in range(1, 26)]
    scheduler = Scheduler(clock, scan, lambda r: None, concurrency=100, start_batch=10)
    scheduler.run(tasks)
    stopped = scheduler.stop()
    assert len(result_of(stopped)) == 10
    assert len(scan.started) == 10


def test_tasks_are_read_lazily(clock: Clock) -> None:
    scan = FakeScan()
    read: list[int] = []

    def tasks() -> Iterator[PortTask]:
        for port in range(1, 1001):
            read.append(port)
            yield PortTask("127.0.0.1", port)

    scheduler = Scheduler(clock, scan, lambda r: None, concurrency=5)
    d = scheduler.run(tasks())
    assert read == [1, 2, 3, 4, 5]
    scan.finish_all()
    assert len(result_of(d)) == 1000


def test_lookahead_bounds_tasks_held_for_a_busy_host(clock: Clock) -> None:
    scan = FakeScan()
    read: list[PortTask] = []

    def tasks() -> Iterator[PortTask]:
        for task in tasks_for("127.0.0.1", *range(1, 11)) + tasks_for("127.0.0.2", 1):
            read.append(task)
            yield task

    scheduler = Scheduler(
        clock, scan, lambda r: None, concurrency=5, per_host_concurrency=1, max_lookahead=3
    )
    d = scheduler.run(tasks())
    assert len(read) == 4  # one started, three held aside, reading paused
    assert scan.started == [PortTask("127.0.0.1", 1)]
    scan.finish_all()
    assert len(result_of(d)) == 11
    assert scan.max_per_host["127.0.0.1"] == 1


def test_empty_run(clock: Clock) -> None:
    scheduler = Scheduler(clock, FakeScan(), lambda r: None)
    assert result_of(scheduler.run([])) == []
    assert result_of(scheduler.stop()) == []


def test_run_while_running_is_refused(clock: Clock) -> None:
    scan = FakeScan()
    scheduler = Scheduler(clock, scan, lambda r: None)
    d = scheduler.run(tasks_for("127.0.0.1", 1))
    with pytest.raises(RuntimeError):
        scheduler.run(tasks_for("127.0.0.1", 2))
    scan.finish_all()
    assert len(result_of(d)) == 1
    # and a finished scheduler runs again
    d = scheduler.run(tasks_for("127.0.0.1", 3))
    scan.finish_all()
    assert [r["port"] for r in result_of(d)] == [3]


def test_failed_scan_yields_an_error_result_and_is_logged(clock: Clock) -> None:
    options = ScanOptions(job="job-1", worker="w1", tags={"site": "dc1"})

    def scan_port(task: PortTask) -> Deferred[Result]:
        if task.port == 2:
            raise RuntimeError("machine bug")
        if task.port == 3:
            clock.advance(1.5)
            return fail(ConnectionError("boom"))
        return succeed(ok(task))

    emitted: list[Result] = []
    scheduler = Scheduler(clock, scan_port, emitted.append, concurrency=1, options=options)
    with capturedLogs() as events:
        d = scheduler.run(tasks_for("127.0.0.1", 1, 2, 3, 4))
    results = result_of(d)
    assert [r["port"] for r in results] == [1, 2, 3, 4]
    assert "error" not in results[0]
    assert results[1] == {
        "job": "job-1",
        "host": "127.0.0.1",
        "hostname": None,
        "port": 2,
        "protocol": "tcp",
        "state": "unknown",
        "reason": "error",
        "service": None,
        "tags": {"site": "dc1"},
        "worker": "w1",
        "scanned_at": "1970-01-01T00:00:00Z",
        "duration_ms": 0,
        "error": "RuntimeError: machine bug",
    }
    assert results[2]["error"] == "ConnectionError: boom"
    assert results[2]["duration_ms"] == 1500
    assert scheduler.stats.errors == 2
    failures = [e for e in events if e.get("log_failure") is not None]
    assert [formatEvent(e) for e in failures] == [
        "scan of 127.0.0.1 port 2/tcp failed",
        "scan of 127.0.0.1 port 3/tcp failed",
    ]
    assert all(e["log_level"] is LogLevel.error for e in failures)
    assert failures[0]["port"] == 2
    assert failures[0]["log_failure"].check(RuntimeError)


def test_failing_result_sink_is_logged_and_the_scan_goes_on(clock: Clock) -> None:
    def sink(result: Result) -> None:
        if result["port"] == 1:
            raise ValueError("sink down")

    scheduler = Scheduler(clock, lambda t: succeed(ok(t)), sink)
    with capturedLogs() as events:
        d = scheduler.run(tasks_for("127.0.0.1", 1, 2))
    assert len(result_of(d)) == 2
    logged = [formatEvent(e) for e in events if e.get("log_failure") is not None]
    assert logged == ["result sink failed for 127.0.0.1 port 1/tcp"]


def test_failing_task_iterable_fails_the_run_after_in_flight_ports(clock: Clock) -> None:
    scan = FakeScan()

    def tasks() -> Iterator[PortTask]:
        yield PortTask("127.0.0.1", 1)
        raise OSError("job store vanished")

    emitted: list[Result] = []
    scheduler = Scheduler(clock, scan, emitted.append)
    with capturedLogs() as events:
        d = scheduler.run(tasks())
    assert not d.called
    scan.finish_all()
    assert failure_of(d).check(OSError)
    assert [r["port"] for r in emitted] == [1]
    assert any(formatEvent(e) == "reading scan tasks failed" for e in events)


def test_stop_cancels_in_flight_and_skips_the_rest(clock: Clock) -> None:
    scan = FakeScan()
    emitted: list[Result] = []
    scheduler = Scheduler(clock, scan, emitted.append, concurrency=2)
    tasks = tasks_for("127.0.0.1", 1, 2, 3, 4, 5)
    d = scheduler.run(tasks)
    scan.finish(tasks[0])
    assert len(scan.started) == 3
    with capturedLogs() as events:
        stopped = scheduler.stop()
    results = result_of(stopped)
    assert result_of(d) == results
    assert [(r["port"], r.get("error")) for r in results] == [
        (1, None),
        (2, "cancelled: scan stopped"),
        (3, "cancelled: scan stopped"),
    ]
    assert emitted == results
    assert len(scan.started) == 3  # nothing started after stop()
    assert not scheduler.running
    assert result_of(scheduler.stop()) == []
    assert "scan stopped: 2 ports in flight cancelled, 0 not started" in [
        formatEvent(e) for e in events
    ]
    assert not any(e.get("log_failure") for e in events)  # a stop is not an error


def test_stop_counts_tasks_held_for_a_busy_host(clock: Clock) -> None:
    scan = FakeScan()
    scheduler = Scheduler(clock, scan, lambda r: None, concurrency=2, per_host_concurrency=1)
    tasks = tasks_for("127.0.0.1", 1, 2, 3, 4) + tasks_for("127.0.0.2", 1)
    d = scheduler.run(tasks)
    assert scan.started == [tasks[0], tasks[4]]
    results = result_of(scheduler.stop())
    assert len(results) == 2
    assert all(r["error"] == "cancelled: scan stopped" for r in results)
    assert scheduler.stats.not_started == 3
    assert scan.started == [tasks[0], tasks[4]]
    assert result_of(d) == results


def test_stop_keeps_a_result_made_by_a_canceller(clock: Clock) -> None:
    def scan_port(task: PortTask) -> Deferred[Result]:
        def partial(d: Deferred[Result]) -> None:
            d.callback(ok(task, "open|filtered"))

        return Deferred(partial)

    scheduler = Scheduler(clock, scan_port, lambda r: None)
    d = scheduler.run(tasks_for("127.0.0.1", 1, 2))
    results = result_of(scheduler.stop())
    assert [r["state"] for r in results] == ["open|filtered", "open|filtered"]
    assert "error" not in results[0]
    assert result_of(d) == results


def test_stop_cancels_what_a_port_waits_on(clock: Clock) -> None:
    inner: list[Deferred[Result]] = []

    def scan_port(task: PortTask) -> Deferred[Result]:
        # cancelling the outer Deferred cancels the one it waits on, whose
        # canceller does nothing: Deferred.cancel() then fails it at once
        slow: Deferred[Result] = Deferred(lambda _: None)
        inner.append(slow)
        outer: Deferred[Result] = Deferred()
        outer.callback(None)  # type: ignore[arg-type]
        return outer.addCallback(lambda _: slow)

    scheduler = Scheduler(clock, scan_port, lambda r: None)
    d = scheduler.run(tasks_for("127.0.0.1", 1))
    results = result_of(scheduler.stop())
    assert inner[0].called
    assert results[0]["error"] == "cancelled: scan stopped"
    assert result_of(d) == results


def test_cancelling_run_is_stop(clock: Clock) -> None:
    scan = FakeScan()
    scheduler = Scheduler(clock, scan, lambda r: None, concurrency=1)
    d = scheduler.run(tasks_for("127.0.0.1", 1, 2))
    d.cancel()
    results = result_of(d)
    assert [r["error"] for r in results] == ["cancelled: scan stopped"]
    assert scheduler.stats.not_started == 0  # port 2 was never read
    assert len(scan.started) == 1


def test_stop_from_the_result_sink(clock: Clock) -> None:
    scheduler: Scheduler

    def sink(result: Result) -> None:
        if result["port"] == 2:
            scheduler.stop()

    scheduler = Scheduler(clock, lambda t: succeed(ok(t)), sink, concurrency=1)
    results = result_of(scheduler.run(tasks_for("127.0.0.1", 1, 2, 3, 4)))
    assert [r["port"] for r in results] == [1, 2]


def test_error_result_helper() -> None:
    task = PortTask("::1", 53, "udp", "localhost")
    result = error_result(task, "x", started=10.0, ended=10.2504)
    assert result["host"] == "::1"
    assert result["hostname"] == "localhost"
    assert result["protocol"] == "udp"
    assert result["duration_ms"] == 250
    assert result["scanned_at"] == "1970-01-01T00:00:10Z"
    assert result["job"] is None
    assert result["tags"] == {}
    assert "other_addresses" not in result
    # a name's other (unscanned) addresses ride along, as in every result of the host
    task = PortTask("127.0.0.1", 53, "udp", "localhost", ("::1",))
    result = error_result(task, "x", started=10.0, ended=10.2504)
    assert list(result)[:4] == ["job", "host", "hostname", "other_addresses"]
    assert result["other_addresses"] == ["::1"]


def test_bad_scheduler_settings(clock: Clock) -> None:
    with pytest.raises(ValueError, match="concurrency"):
        Scheduler(clock, FakeScan(), lambda r: None, concurrency=0)
    with pytest.raises(ValueError, match="per_host_concurrency"):
        Scheduler(clock, FakeScan(), lambda r: None, per_host_concurrency=-1)
    with pytest.raises(ValueError, match="connect rate"):
        Scheduler(clock, FakeScan(), lambda r: None, connect_rate=-1)
    with pytest.raises(ValueError, match="max_lookahead"):
        Scheduler(clock, FakeScan(), lambda r: None, max_lookahead=0)


# --------------------------------------------------------------------------- ConnectLimiter


def fired_at(clock: Clock, limiter: ConnectLimiter, count: int) -> list[float]:
    times: list[float] = []
    for _ in range(count):
        limiter.acquire().addCallback(lambda _: times.append(clock.seconds()))
    return times


def test_rate_limit_spacing(clock: Clock) -> None:
    limiter = ConnectLimiter(clock, rate=10, burst=1)
    times = fired_at(clock, limiter, 4)
    assert times == [0.0]
    assert limiter.waiting == 3
    clock.advance(0.05)
    assert times == [0.0]
    clock.advance(0.05)
    assert times == pytest.approx([0.0, 0.1])
    clock.pump([0.1, 0.1])
    assert times == pytest.approx([0.0, 0.1, 0.2, 0.3])
    assert limiter.waiting == 0
    assert limiter.granted == 4


def test_burst_then_rate(clock: Clock) -> None:
    limiter = ConnectLimiter(clock, rate=4, burst=3)
    times = fired_at(clock, limiter, 5)
    assert times == [0.0, 0.0, 0.0]
    clock.advance(0.25)
    clock.advance(0.25)
    assert times == pytest.approx([0.0, 0.0, 0.0, 0.25, 0.5])
    # idle time refills the bucket, up to the burst
    clock.advance(10)
    later = fired_at(clock, limiter, 4)
    assert later == pytest.approx([10.5, 10.5, 10.5])
    clock.advance(0.25)
    assert later == pytest.approx([10.5, 10.5, 10.5, 10.75])


def test_late_timer_serves_several_waiters(clock: Clock) -> None:
    limiter = ConnectLimiter(clock, rate=100, burst=5)
    times = fired_at(clock, limiter, 8)
    assert len(times) == 5
    clock.advance(1.0)  # the reactor was busy: the one timer fires late
    assert len(times) == 8


def test_cancel_a_waiting_acquire(clock: Clock) -> None:
    limiter = ConnectLimiter(clock, rate=1, burst=1)
    first = limiter.acquire()
    assert first.called
    second = limiter.acquire()
    third = limiter.acquire()
    second.cancel()
    assert failure_of(second).check(CancelledError)
    clock.advance(1)
    assert third.called  # the cancelled waiter gave its turn away
    fourth = limiter.acquire()
    fourth.cancel()
    failure_of(fourth)
    assert limiter.waiting == 0
    assert not clock.getDelayedCalls()  # idle: no timer left behind
    second.cancel()  # cancelling again is harmless


def test_unlimited_rate(clock: Clock) -> None:
    limiter = ConnectLimiter(clock, rate=0)
    assert all(limiter.acquire().called for _ in range(1000))
    assert limiter.granted == 1000


def test_bad_limiter_settings(clock: Clock) -> None:
    with pytest.raises(ValueError, match="connect rate"):
        ConnectLimiter(clock, rate=float("inf"))
    with pytest.raises(ValueError, match="burst"):
        ConnectLimiter(clock, rate=1, burst=0)


def test_scheduler_paces_connections_not_ports(clock: Clock) -> None:
    """Each port dials two connections; the limit applies to each of them."""
    dials: list[tuple[float, int]] = []
    scheduler: Scheduler

    async def scan(task: PortTask) -> Result:
        for _ in range(2):
            await scheduler.connect_limiter.acquire()
            dials.append((clock.seconds(), task.port))
        return ok(task)

    def scan_port(task: PortTask) -> Deferred[Result]:
        return Deferred.fromCoroutine(scan(task))

    scheduler = Scheduler(clock, scan_port, lambda r: None, concurrency=10, connect_rate=20)
    assert scheduler.connect_limiter.burst == 1
    d = scheduler.run(tasks_for("127.0.0.1", 1, 2, 3))
    clock.pump([0.05] * 10)
    assert len(result_of(d)) == 3
    times = [t for t, _ in dials]
    assert times == pytest.approx([0.0, 0.05, 0.1, 0.15, 0.2, 0.25])
    assert scheduler.connect_limiter.granted == 6


def test_stop_cancels_ports_waiting_for_the_limiter(clock: Clock) -> None:
    limiter = ConnectLimiter(clock, rate=1)
    scheduler: Scheduler

    async def scan(task: PortTask) -> Result:
        await limiter.acquire()
        return ok(task)

    scheduler = Scheduler(
        clock,
        lambda t: Deferred.fromCoroutine(scan(t)),
        lambda r: None,
        connect_limiter=limiter,
    )
    assert scheduler.connect_limiter is limiter
    d = scheduler.run(tasks_for("127.0.0.1", 1, 2, 3))
    results = result_of(scheduler.stop())
    assert [r.get("error") for r in results] == [
        None,
        "cancelled: scan stopped",
        "cancelled: scan stopped",
    ]
    assert result_of(d) == results
    assert limiter.waiting == 0
