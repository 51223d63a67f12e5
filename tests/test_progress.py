"""The progress display's figures on a fake clock: ports in flight, the slowest, and the
worst case left by the probe plan."""

from __future__ import annotations

import pytest

from vscand.cli.progress import Progress, _duration
from vscand.probes.matcher import Matcher
from vscand.scan.model import PortTask
from vscand.scan.plan import plan_wait_seconds


class FakeClock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def result(task: PortTask) -> dict[str, object]:
    return {"host": task.address, "port": task.port, "protocol": task.protocol}


def test_the_worst_case_left_follows_the_plan_and_the_clock() -> None:
    clock = FakeClock()
    tasks = [PortTask("127.0.0.1", port) for port in (1, 2, 3, 4)]
    bounds = {1: 10.0, 2: 10.0, 3: 40.0, 4: 10.0}
    progress = Progress(
        tasks, enabled=False, clock=clock, bound=lambda t: bounds[t.port], concurrency=2
    )
    # nothing started: 70 s of work on 2 slots is 35 s, but port 3 alone takes 40
    assert progress.worst_case_left() == 40.0
    progress.started(tasks[0])
    progress.started(tasks[2])
    clock.now += 4
    # running: 6 s and 36 s left; waiting: 10 + 10; (6 + 36 + 20) / 2 = 31 < 36
    assert progress.worst_case_left() == 36.0
    assert progress.status() == (
        "2 in flight; slowest 127.0.0.1:1 4s, 127.0.0.1:3 4s; worst case 36s left"
    )
    progress.update(result(tasks[0]))  # ended early: an answering port
    progress.update(result(tasks[3]))  # ended without starting (e.g. an interruption)
    clock.now += 30
    # port 3 has 6 s left, port 2 waits with 10
    assert progress.worst_case_left() == 10.0
    clock.now += 100  # past its bound: a port never counts below zero
    assert progress.worst_case_left() == 10.0
    progress.started(tasks[1])
    progress.update(result(tasks[2]))
    progress.update(result(tasks[1]))
    assert progress.worst_case_left() == 0.0
    assert progress.status() == ""


def test_without_a_bound_no_worst_case_is_shown() -> None:
    clock = FakeClock()
    task = PortTask("127.0.0.1", 22)
    progress = Progress([task], enabled=False, clock=clock)
    progress.started(task)
    clock.now += 2
    assert progress.worst_case_left() is None
    assert progress.status() == "1 in flight; slowest 127.0.0.1:22 2s"


@pytest.mark.parametrize(
    ("seconds", "text"),
    [(0, "0s"), (0.2, "1s"), (59, "59s"), (60, "1m00s"), (125, "2m05s"), (3720, "1h02m")],
)
def test_durations(seconds: float, text: str) -> None:
    assert _duration(seconds) == text


def test_a_silent_tcp_port_at_default_intensity_is_the_sum_of_its_waits(matcher: Matcher) -> None:
    # the figure the display starts from for one silent port: every probe's whole wait
    db = matcher.db
    seconds = plan_wait_seconds(db, "tcp", 1, 7)
    assert seconds == sum(
        p.totalwaitms for p in db.probes if p.protocol == "TCP" and p.rarity <= 7
    ) / 1000 + (db.null_probe.totalwaitms / 1000 if db.null_probe is not None else 0)
    assert seconds > 60
