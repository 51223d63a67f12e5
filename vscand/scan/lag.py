"""Reactor lag: how late timers fire, a direct measure of a blocked event loop.

A :class:`~twisted.internet.task.LoopingCall` ticks every ``interval`` seconds on
a fixed grid from its start; each tick records how long after its due time it
ran. Work that holds the reactor thread (a slow regex, a big parse) shows up as
lag. Samples are kept in a ring buffer of ``max_samples``.
"""

from __future__ import annotations

import math
from collections import deque

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()


class ReactorLagMonitor:
    """Sample reactor lag (seconds) every *interval* seconds on *clock*."""

    def __init__(
        self, clock: IReactorTime, interval: float = 0.05, max_samples: int = 4096
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, not {interval!r}")
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, not {max_samples!r}")
        self._clock = clock
        self.interval = interval
        self._samples: deque[float] = deque(maxlen=max_samples)
        self._loop: LoopingCall | None = None
        self._start = 0.0
        self._due = 0.0
        #: ticks seen since start (not bounded like the samples)
        self.ticks = 0
        #: the largest sample since start (the ring buffer forgets; this does not)
        self.worst = 0.0

    @property
    def running(self) -> bool:
        return self._loop is not None

    @property
    def samples(self) -> list[float]:
        return list(self._samples)

    def start(self) -> None:
        if self._loop is not None:
            return
        loop = LoopingCall(self._tick)
        loop.clock = self._clock
        self._loop = loop
        loop.start(self.interval, now=False).addErrback(self._failed)
        assert loop.starttime is not None and loop.call is not None
        self._start = loop.starttime
        self._due = loop.call.getTime()

    def stop(self) -> None:
        loop, self._loop = self._loop, None
        if loop is not None and loop.running:
            loop.stop()

    def _tick(self) -> None:
        now = self._clock.seconds()
        sample = max(0.0, now - self._due)
        self._samples.append(sample)
        self.worst = max(self.worst, sample)
        self.ticks += 1
        # when LoopingCall will schedule the next tick: the next point of its
        # grid (computed as LoopingCall._scheduleFrom does, to the last bit)
        until_next = self.interval - ((now - self._start) % self.interval)
        if now == now + until_next:
            until_next = self.interval
        self._due = now + until_next

    def _failed(self, failure: Failure) -> None:
        self._loop = None
        log.failure("reactor lag monitor stopped", failure)

    def percentile(self, p: float) -> float:
        """The *p*-th percentile (0-100, nearest rank) of the samples; 0.0 if none."""
        if not 0 <= p <= 100:
            raise ValueError(f"percentile must be within 0-100, not {p!r}")
        if not self._samples:
            return 0.0
        ordered = sorted(self._samples)
        rank = max(1, math.ceil(p / 100 * len(ordered)))
        return ordered[rank - 1]

    def last(self) -> float:
        """The most recent sample (0.0 if none): how late the last tick fired."""
        return self._samples[-1] if self._samples else 0.0

    def max(self) -> float:
        return max(self._samples, default=0.0)
