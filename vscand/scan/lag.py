"""Reactor lag: how late timers fire, a direct measure of a blocked event loop.

A :class:`~twisted.internet.task.LoopingCall` ticks every ``interval`` seconds on
a fixed grid from its start; each tick records how long after its due time it
ran. Work that holds the reactor thread (a slow regex, a big parse) shows up as
lag. Samples are kept in a ring buffer of ``max_samples``.

Lag has two causes: work in the reactor thread (ours: a slow regex, a big parse, a
blocking call) and a thread that was ready but got no CPU (the machine's: other
processes on the same cores, or the hypervisor running another guest). Where Linux
tells (:class:`CpuWaitClock`: the thread's run-queue wait from
``/proc/<pid>/task/<tid>/schedstat``, plus the guest's steal time from ``/proc/stat``),
each tick also records how late it was *blocked*: the lag less the time the thread
waited for a CPU since the previous tick. That is the part our own code caused.
"""

from __future__ import annotations

import contextlib
import math
import os
import threading
from collections import deque
from collections.abc import Callable

from twisted.internet.interfaces import IReactorTime
from twisted.internet.task import LoopingCall
from twisted.logger import Logger
from twisted.python.failure import Failure

log = Logger()

#: USER_HZ, the unit of /proc/stat's times
_CLOCK_TICK = os.sysconf("SC_CLK_TCK") if hasattr(os, "sysconf") else 100


class CpuWaitClock:
    """Seconds one thread has waited for a CPU so far, from Linux's ``/proc``.

    Two waits count: on the run queue (the second field of the thread's ``schedstat``,
    ready to run while other tasks held the CPUs) and the guest's steal time (the
    eighth field of ``/proc/stat``'s ``cpu`` line, averaged over the CPUs: the
    hypervisor ran someone else). The files stay open; each reading is one ``pread``.
    :meth:`open` returns ``None`` where the files are missing (not Linux, no
    schedstat): then lag is not split.
    """

    def __init__(self, schedstat_fd: int, stat_fd: int | None, cpus: int) -> None:
        self._schedstat = schedstat_fd
        self._stat = stat_fd
        self._cpus = max(1, cpus)

    @classmethod
    def open(cls, tid: int | None = None) -> CpuWaitClock | None:
        """For thread *tid* (default: the calling thread) of this process."""
        tid = threading.get_native_id() if tid is None else tid
        try:
            schedstat = os.open(f"/proc/{os.getpid()}/task/{tid}/schedstat", os.O_RDONLY)
        except OSError:
            return None
        try:
            stat: int | None = os.open("/proc/stat", os.O_RDONLY)
        except OSError:
            stat = None
        clock = cls(schedstat, stat, os.cpu_count() or 1)
        if clock.read() is None:
            clock.close()
            return None
        return clock

    def read(self) -> float | None:
        """The wait so far in seconds (``None`` if the files stopped answering)."""
        try:
            fields = os.pread(self._schedstat, 128, 0).split()
            waited = int(fields[1]) / 1e9
            if self._stat is not None:
                cpu = os.pread(self._stat, 256, 0).split(b"\n", 1)[0].split()
                if len(cpu) > 8 and cpu[0] == b"cpu":
                    waited += int(cpu[8]) / _CLOCK_TICK / self._cpus
        except (OSError, IndexError, ValueError):
            return None
        return waited

    def close(self) -> None:
        for fd in (self._schedstat, self._stat):
            if fd is not None:
                with contextlib.suppress(OSError):
                    os.close(fd)


class ReactorLagMonitor:
    """Sample reactor lag (seconds) every *interval* seconds on *clock*.

    *cpu_wait*: a reading of the seconds the reactor thread has waited for a CPU so far
    (:meth:`CpuWaitClock.read`); with it, each tick also records its *blocked* lag, the
    lag less that wait since the previous tick. Without one, :meth:`start` opens a
    :class:`CpuWaitClock` for the calling thread when *cpu_wait* is ``"auto"`` (the
    real reactor's case; tests on a fake clock pass ``None`` or a fake).
    """

    def __init__(
        self,
        clock: IReactorTime,
        interval: float = 0.05,
        max_samples: int = 4096,
        cpu_wait: Callable[[], float | None] | str | None = "auto",
    ) -> None:
        if interval <= 0:
            raise ValueError(f"interval must be > 0, not {interval!r}")
        if max_samples < 1:
            raise ValueError(f"max_samples must be at least 1, not {max_samples!r}")
        self._clock = clock
        self.interval = interval
        self._samples: deque[float] = deque(maxlen=max_samples)
        self._blocked: deque[float] = deque(maxlen=max_samples)
        if isinstance(cpu_wait, str) and cpu_wait != "auto":
            raise ValueError(f"cpu_wait must be a callable, None or 'auto', not {cpu_wait!r}")
        self._cpu_wait_spec = cpu_wait
        self._cpu_wait: Callable[[], float | None] | None = None
        self._cpu_wait_clock: CpuWaitClock | None = None
        self._waited: float | None = None
        self._loop: LoopingCall | None = None
        self._start = 0.0
        self._due = 0.0
        #: ticks seen since start (not bounded like the samples)
        self.ticks = 0
        #: the largest sample since start (the ring buffer forgets; this does not)
        self.worst = 0.0
        #: the largest blocked sample since start
        self.worst_blocked = 0.0
        #: seconds the reactor thread waited for a CPU since start (None: not known)
        self.cpu_waited: float | None = None

    @property
    def running(self) -> bool:
        return self._loop is not None

    @property
    def samples(self) -> list[float]:
        return list(self._samples)

    @property
    def splits_lag(self) -> bool:
        """Whether the blocked lag is known (the thread's CPU wait has been read)."""
        return self.cpu_waited is not None

    @property
    def blocked_samples(self) -> list[float]:
        """Per tick, the lag less the CPU wait since the previous tick (the same ticks
        as :attr:`samples`; equal to them when the lag is not split)."""
        return list(self._blocked)

    def start(self) -> None:
        if self._loop is not None:
            return
        if self._cpu_wait_spec == "auto":
            self._cpu_wait_clock = CpuWaitClock.open()  # stop() closed any earlier one
            self._cpu_wait = None if self._cpu_wait_clock is None else self._cpu_wait_clock.read
        elif callable(self._cpu_wait_spec):
            self._cpu_wait = self._cpu_wait_spec
        if self._cpu_wait is not None:
            self._waited = self._cpu_wait()
            if self._waited is not None and self.cpu_waited is None:
                self.cpu_waited = 0.0
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
        if self._cpu_wait_clock is not None:
            self._cpu_wait_clock.close()
            self._cpu_wait_clock = None
        self._cpu_wait = None

    def _tick(self) -> None:
        now = self._clock.seconds()
        sample = max(0.0, now - self._due)
        self._samples.append(sample)
        self.worst = max(self.worst, sample)
        blocked = sample
        if self._cpu_wait is not None:
            waited = self._cpu_wait()
            if waited is not None and self._waited is not None:
                wait = max(0.0, waited - self._waited)
                blocked = max(0.0, sample - wait)
                self.cpu_waited = (self.cpu_waited or 0.0) + wait
            self._waited = waited
        self._blocked.append(blocked)
        self.worst_blocked = max(self.worst_blocked, blocked)
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
