"""The job attempt's state machine (:mod:`vscand.daemon.attempt`) and the sharding decision
(:func:`vscand.daemon.run.shard_size`): pure, no reactor."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from vscand.daemon.attempt import AttemptState, IllegalTransition, JobAttempt, diagram
from vscand.daemon.run import shard_size
from vscand.jobs.schema import Job
from vscand.queue.consumer import Delivery


def _job(**fields: Any) -> Job:
    base: dict[str, Any] = {
        "id": "j",
        "targets": (),
        "endpoints": (),
        "ports": None,
        "intensity": 7,
        "version_all": False,
        "connect_ms": 5000,
        "host_ms": None,
        "tags": {},
        "priority": 0,
        "fast": False,
        "queue": None,
        "not_after": None,
        "raw": b"{}",
    }
    return Job(**{**base, **fields})


def test_shard_size_decision() -> None:
    assert shard_size(_job(), task_ports=256, ports=257) == 256
    assert shard_size(_job(), task_ports=256, ports=256) is None
    assert shard_size(_job(task_ports=10), task_ports=256, ports=11) == 10
    assert shard_size(_job(parent="p"), task_ports=2, ports=100) is None  # a task: never


def _attempt() -> JobAttempt:
    return JobAttempt(Delivery("s", "1-1", {}, 1), _job(), "a1", started=0.0)


def test_the_attempt_machine_refuses_illegal_transitions() -> None:
    attempt = _attempt()
    attempt.finish()
    with pytest.raises(IllegalTransition):
        attempt.finish()  # a second end
    attempt = _attempt()
    attempt.lease_lost()
    assert attempt.state is AttemptState.LOST and attempt.stopped
    with pytest.raises(IllegalTransition):
        attempt.finish()  # a lost attempt never ends the job
    attempt.release()
    attempt.cancel()
    assert attempt.state is AttemptState.LOST  # final: late inputs absorbed
    attempt = _attempt()
    attempt.release()
    with pytest.raises(IllegalTransition):
        attempt.finish()
    attempt.lease_lost()
    assert attempt.state is AttemptState.RELEASED


def test_the_attempt_machine_walks_cancel_then_finish() -> None:
    attempt = _attempt()
    attempt.cancel()
    assert attempt.was_cancelled and not attempt.stopped
    attempt.finish()
    attempt.lease_lost()  # a renewal racing the end: absorbed
    assert attempt.state is AttemptState.FINISHING
    attempt.fenced()  # the end was fenced off
    assert attempt.state is AttemptState.LOST


def test_design_md_holds_the_generated_diagram() -> None:
    design = (Path(__file__).resolve().parent.parent / "DESIGN.md").read_text()
    assert "```mermaid\n" + diagram() + "```\n" in design
