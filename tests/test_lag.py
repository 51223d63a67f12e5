"""Reactor lag sampling on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from twisted.internet.task import Clock

from vscand.scan.lag import ReactorLagMonitor


@pytest.fixture
def clock() -> Iterator[Clock]:
    clock = Clock()
    yield clock
    assert not clock.getDelayedCalls()


def test_on_time_ticks_have_no_lag(clock: Clock) -> None:
    monitor = ReactorLagMonitor(clock, interval=0.0625)
    monitor.start()
    assert monitor.running
    clock.pump([0.0625] * 40)
    assert monitor.ticks == 40
    assert monitor.max() == 0.0
    monitor.stop()
    assert not monitor.running


def test_late_ticks_are_measured(clock: Clock) -> None:
    # binary fractions keep the fake clock's sums exact
    monitor = ReactorLagMonitor(clock, interval=0.0625)
    monitor.start()
    clock.advance(0.0625)  # due 0.0625, on time
    clock.advance(0.09375)  # due 0.125, runs at 0.15625
    clock.advance(0.03125)  # due 0.1875 (the grid, not 0.15625 + 0.0625), on time
    clock.advance(0.25)  # due 0.25, runs at 0.4375: a long block
    clock.advance(0.0625)  # due 0.5, on time
    assert monitor.samples == [0.0, 0.03125, 0.0, 0.1875, 0.0]
    assert monitor.ticks == 5
    assert monitor.max() == 0.1875
    assert monitor.percentile(50) == 0.0
    assert monitor.percentile(80) == 0.03125
    assert monitor.percentile(100) == 0.1875
    assert monitor.percentile(0) == 0.0
    monitor.stop()


def test_samples_are_a_ring_buffer(clock: Clock) -> None:
    monitor = ReactorLagMonitor(clock, interval=1, max_samples=3)
    monitor.start()
    clock.advance(1)
    clock.advance(1.5)  # lag 0.5
    clock.advance(0.5)
    clock.advance(1.25)  # lag 0.25
    clock.advance(0.75)
    assert monitor.ticks == 5
    assert monitor.samples == pytest.approx([0.0, 0.25, 0.0])
    assert monitor.max() == pytest.approx(0.25)
    monitor.stop()


def test_empty_and_idempotent(clock: Clock) -> None:
    monitor = ReactorLagMonitor(clock)
    assert monitor.percentile(99) == 0.0
    assert monitor.max() == 0.0
    monitor.stop()  # not started: harmless
    monitor.start()
    monitor.start()  # already running: one loop only
    assert len(clock.getDelayedCalls()) == 1
    monitor.stop()
    monitor.stop()


def test_bad_arguments(clock: Clock) -> None:
    with pytest.raises(ValueError, match="interval"):
        ReactorLagMonitor(clock, interval=0)
    with pytest.raises(ValueError, match="max_samples"):
        ReactorLagMonitor(clock, max_samples=0)
    with pytest.raises(ValueError, match="percentile"):
        ReactorLagMonitor(clock).percentile(101)


def test_float_intervals_never_give_negative_lag(clock: Clock) -> None:
    monitor = ReactorLagMonitor(clock, interval=0.05)
    monitor.start()
    clock.pump([0.05] * 40 + [0.03, 0.11, 0.07] * 5)
    assert monitor.ticks > 40
    assert all(0.0 <= sample <= 0.11 for sample in monitor.samples)
    monitor.stop()


def test_blocked_lag_is_the_lag_less_the_wait_for_a_cpu(clock: Clock) -> None:
    # the thread's CPU wait so far (seconds), read at start and at every tick
    readings = iter([10.0, 10.0, 10.125, 10.125, 10.5, 10.5])
    monitor = ReactorLagMonitor(clock, interval=0.0625, cpu_wait=lambda: next(readings))
    monitor.start()
    assert monitor.splits_lag
    assert monitor.cpu_waited == 0.0
    clock.advance(0.0625)  # on time, no wait
    clock.advance(0.25)  # 0.1875 late, of which 0.125 waiting for a CPU: 0.0625 ours
    clock.advance(0.0625)  # due 0.375: on time (the grid)
    clock.advance(0.4375)  # 0.375 late, and the thread waited 0.375: the machine's
    clock.advance(0.0625)  # on time
    assert monitor.samples == [0.0, 0.1875, 0.0, 0.375, 0.0]
    assert monitor.blocked_samples == [0.0, 0.0625, 0.0, 0.0, 0.0]
    assert monitor.worst == 0.375
    assert monitor.worst_blocked == 0.0625
    assert monitor.cpu_waited == 0.5
    monitor.stop()
    assert monitor.splits_lag  # still known after the stop (run statistics read it then)


def test_a_wait_longer_than_the_lag_leaves_no_negative_blocked_lag(clock: Clock) -> None:
    readings = iter([0.0, 1.0])
    monitor = ReactorLagMonitor(clock, interval=0.0625, cpu_wait=lambda: next(readings))
    monitor.start()
    clock.advance(0.125)  # 0.0625 late; the thread waited a whole second (steal, spread)
    assert monitor.blocked_samples == [0.0]
    monitor.stop()


def test_without_a_cpu_wait_reading_blocked_lag_is_the_lag(clock: Clock) -> None:
    monitor = ReactorLagMonitor(clock, interval=0.0625, cpu_wait=None)
    monitor.start()
    clock.advance(0.125)
    assert not monitor.splits_lag
    assert monitor.cpu_waited is None
    assert monitor.blocked_samples == monitor.samples == [0.0625]
    monitor.stop()
    # a reading that stops answering (None) leaves that tick unsplit, then resumes
    readings = iter([0.0, None, 0.0, 0.0625])
    monitor = ReactorLagMonitor(clock, interval=0.0625, cpu_wait=lambda: next(readings))
    monitor.start()
    clock.advance(0.125)  # 0.0625 late, no reading
    clock.advance(0.0625)  # on time; the reading is back (the baseline)
    clock.advance(0.125)  # 0.0625 late, all of it waiting
    assert monitor.samples == [0.0625, 0.0, 0.0625]
    assert monitor.blocked_samples == [0.0625, 0.0, 0.0]
    monitor.stop()
    with pytest.raises(ValueError, match="cpu_wait"):
        ReactorLagMonitor(clock, cpu_wait="proc")
