"""vscand.daemon.lograte: per kind, the first warning at once, then one count line per interval;
driven by ``twisted.internet.task.Clock`` and a real ``twisted.logger.Logger``."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet.task import Clock
from twisted.logger import Logger, LogLevel, formatEvent

from vscand.daemon.lograte import RateLimitedLog


def make(interval: float = 10.0) -> tuple[RateLimitedLog, Clock, list[dict[str, Any]]]:
    events: list[dict[str, Any]] = []
    clock = Clock()
    return RateLimitedLog(Logger(observer=events.append), clock, interval), clock, events


def lines(events: list[dict[str, Any]]) -> list[str]:
    return [formatEvent(e) for e in events]


def test_first_at_once_then_one_count_per_interval() -> None:
    limited, clock, events = make()
    limited.warn("retry:write", "write: Redis unavailable ({error})", error="OOM 1")
    assert lines(events) == ["write: Redis unavailable (OOM 1)"]
    assert events[0]["log_level"] is LogLevel.warn and events[0]["warn_kind"] == "retry:write"
    clock.advance(1.0)
    for n in range(2, 534):
        limited.warn("retry:write", "write: Redis unavailable ({error})", error=f"OOM {n}")
    assert len(events) == 1
    clock.advance(8.5)
    assert len(events) == 1  # the interval is not over yet
    clock.advance(0.5)
    assert lines(events)[1:] == [
        "retry:write: 532 more like this in the last 10 s (the last: write: Redis unavailable "
        "(OOM 533))"
    ]
    assert events[1]["warn_kind"] == "retry:write" and events[1]["count"] == 532
    # the flood goes on: one line per interval
    for _ in range(3):
        for _ in range(100):
            limited.warn("retry:write", "again")
            clock.advance(0.1)
    assert [e.get("count") for e in events] == [None, 532, 100, 100, 100]


def test_quiet_interval_closes_the_kind() -> None:
    limited, clock, events = make(interval=2.0)
    limited.warn("connect", "Redis not reachable")
    clock.advance(2.0)  # nothing counted: no count line
    assert lines(events) == ["Redis not reachable"]
    limited.warn("connect", "Redis not reachable")  # logged at once again
    assert len(events) == 2
    clock.advance(2.0)
    limited.warn("connect", "Redis not reachable")
    assert len(events) == 3
    assert len(clock.getDelayedCalls()) == 1  # the open interval's end, nothing else


def test_kinds_are_independent() -> None:
    limited, clock, events = make()
    limited.warn("loop:_heartbeat", "heartbeat failed")
    limited.warn("read", "reading jobs failed")
    limited.warn("loop:_heartbeat", "heartbeat failed")
    limited.warn("loop:_heartbeat", "heartbeat failed")
    assert lines(events) == ["heartbeat failed", "reading jobs failed"]
    assert limited.pending() == {"loop:_heartbeat": 2}
    clock.advance(10.0)
    assert [(e["warn_kind"], e.get("count")) for e in events] == [
        ("loop:_heartbeat", None),
        ("read", None),
        ("loop:_heartbeat", 2),
    ]
    assert (limited.logged, limited.suppressed) == (3, 2)


def test_flush_reports_counts_and_cancels_timers() -> None:
    limited, clock, events = make()
    limited.warn("a", "one")
    limited.warn("a", "two")
    limited.warn("b", "three")
    limited.flush()
    assert lines(events) == ["one", "three", "a: 1 more like this in the last 10 s (the last: two)"]
    assert clock.getDelayedCalls() == []
    limited.warn("a", "four")  # after a flush, at once again
    assert lines(events)[-1] == "four"


def test_fields_that_do_not_format_are_kept_as_text() -> None:
    limited, clock, events = make(interval=1.0)
    limited.warn("k", "first {x}", x=1)
    limited.warn("k", "missing {field}")
    clock.advance(1.0)
    assert events[-1]["last"] == "missing {field}"


def test_notices_keep_their_level() -> None:
    limited, clock, events = make(interval=1.0)
    limited.info("resumed", "writes go through again")
    limited.info("resumed", "writes go through again")
    clock.advance(1.0)
    assert [e["log_level"] for e in events] == [LogLevel.info, LogLevel.info]
    assert events[1]["count"] == 1


def test_interval_must_be_positive() -> None:
    with pytest.raises(ValueError, match="positive"):
        RateLimitedLog(Logger(), Clock(), 0)
