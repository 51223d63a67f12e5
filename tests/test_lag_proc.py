"""The CPU-wait reading on a real Linux thread: a reactor that shares its one CPU with
busy processes waits for it (and that wait is not counted as blocked lag), while a
reactor that blocks itself (a sleep in a callback) is blocked however idle the CPU."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from vscand.scan.lag import CpuWaitClock

pytestmark = pytest.mark.skipif(
    not Path(f"/proc/{os.getpid()}/task/{os.getpid()}/schedstat").exists(),
    reason="no per-thread schedstat in /proc (not Linux, or a kernel without schedstat)",
)

_RUN = textwrap.dedent(
    """
    import json, os, subprocess, sys, time
    from twisted.internet import reactor
    from vscand.scan.lag import ReactorLagMonitor

    cpu = min(os.sched_getaffinity(0))
    os.sched_setaffinity(0, {cpu})
    hogs = [
        subprocess.Popen(
            [sys.executable, "-c",
             f"import os; os.sched_setaffinity(0, {{{cpu}}}); os.nice(19)\\nwhile True: pass"]
        )
        for _ in range(int(sys.argv[1]))
    ]
    # all at the lowest priority: the test's neighbours (other tests running beside it)
    # hardly notice; this thread shares its one CPU with the hogs and waits for it
    os.nice(19)
    monitor = ReactorLagMonitor(reactor, interval=0.02)
    monitor.start()
    if sys.argv[2] == "sleep":
        reactor.callLater(0.5, time.sleep, 0.25)  # the reactor thread blocks itself
    reactor.callLater(1.5, reactor.stop)
    try:
        reactor.run()
    finally:
        for hog in hogs:
            hog.kill()
            hog.wait()
    monitor.stop()
    print(json.dumps({
        "splits": monitor.splits_lag, "ticks": monitor.ticks, "worst": monitor.worst,
        "worst_blocked": monitor.worst_blocked, "cpu_waited": monitor.cpu_waited,
        "lag_total": sum(monitor.samples), "blocked_total": sum(monitor.blocked_samples),
    }))
    """
)


def _run(hogs: int, what: str) -> dict[str, float]:
    out = subprocess.run(
        [sys.executable, "-c", _RUN, str(hogs), what],
        capture_output=True, text=True, check=True, timeout=60,
    )  # fmt: skip
    figures: dict[str, float] = json.loads(out.stdout)
    return figures


def test_the_reading_is_the_calling_threads_and_grows() -> None:
    clock = CpuWaitClock.open()
    assert clock is not None
    try:
        first = clock.read()
        assert first is not None and first >= 0
        second = clock.read()
        assert second is not None and second >= first
    finally:
        clock.close()
    assert CpuWaitClock.open(tid=2**22 + 12345) is None  # no such thread


def test_waiting_for_a_shared_cpu_is_not_blocked_lag() -> None:
    figures = _run(3, "idle")
    assert figures["splits"]
    # the thread waited for its CPU, and those waits are subtracted from the lag
    assert figures["cpu_waited"] > 0.005, figures
    assert figures["worst_blocked"] <= figures["worst"], figures
    assert figures["blocked_total"] < figures["lag_total"], figures


def test_a_blocking_callback_is_blocked_lag_on_an_idle_cpu() -> None:
    figures = _run(0, "sleep")
    assert figures["splits"]
    assert figures["worst"] >= 0.2, figures
    # a sleeping thread is not waiting for a CPU: the block is the reactor's own (less
    # any hypervisor steal meanwhile, which the reading spreads over the CPUs)
    assert figures["worst_blocked"] >= 0.15, figures
