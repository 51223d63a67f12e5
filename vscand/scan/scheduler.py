"""Run port tasks under global and per-host concurrency limits, and pace new connections.

:class:`Scheduler` starts ``scan_port(task)`` for as many tasks as the limits
allow, hands each result to ``on_result`` as soon as that port ends (as Nmap's
``service_scan.cc`` reports a port when it finishes) and starts the next task.
A port whose scan fails still produces a result: an error result (see
:func:`error_result`) that names the failure, and the failure is logged.

New connections are paced by a :class:`~vscand.scan.pacing.ConnectLimiter` the
scheduler owns (``scheduler.connect_limiter``, built from ``connect_rate``); the
ports in flight are counted in the engine's shared
:class:`~vscand.scan.pacing.StartPool`.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from twisted.internet.defer import CancelledError, Deferred, maybeDeferred, succeed
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.logger import Logger, LogLevel
from twisted.python.failure import Failure

from vscand.scan.model import PortTask, Result, ScanOptions, target_fields
from vscand.scan.pacing import ConnectLimiter, StartPool

log = Logger()

ScanPort = Callable[[PortTask], "Deferred[Result]"]
ResultSink = Callable[[Result], None]


def _timestamp(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def error_result(
    task: PortTask,
    message: str,
    *,
    started: float,
    ended: float,
    options: ScanOptions | None = None,
) -> Result:
    """The result of a port whose scan failed: state ``unknown``, reason ``error``.

    ``unknown`` is Nmap's own name for a port state it could not determine
    (``PORT_UNKNOWN``); the ``error`` key says why.
    """
    opts = options or ScanOptions()
    return {
        "job": opts.job,
        **target_fields(task),
        "port": task.port,
        "protocol": task.protocol,
        "state": "unknown",
        "reason": "error",
        "service": None,
        "tags": dict(opts.tags),
        "worker": opts.worker,
        "scanned_at": _timestamp(ended),
        "duration_ms": max(0, round((ended - started) * 1000)),
        "error": message,
    }


@dataclass
class SchedulerStats:
    started: int = 0
    finished: int = 0
    #: results that are error results (scan_port failed or was cancelled)
    errors: int = 0
    #: tasks taken from the iterable but never started (stop())
    not_started: int = 0


class Scheduler:
    """Run ``scan_port`` over tasks: ``concurrency`` ports in flight, at most
    ``per_host_concurrency`` per address (0 = unlimited), new connections
    paced at ``connect_rate`` per second (0 = unlimited) by ``connect_limiter``.

    ``run(tasks)`` pulls tasks lazily from the iterable, so a large scan is not
    held in memory; tasks waiting for a busy host are held aside, at most
    ``max_lookahead`` of them (beyond that the scheduler waits rather than reads
    further). Tasks start in the iterable's order except that a task waiting for
    its host starts as soon as that host has room.
    """

    def __init__(
        self,
        clock: IReactorTime,
        scan_port: ScanPort,
        on_result: ResultSink,
        concurrency: int = 1000,
        per_host_concurrency: int = 0,
        connect_rate: float = 0,
        *,
        connect_limiter: ConnectLimiter | None = None,
        options: ScanOptions | None = None,
        max_lookahead: int = 100_000,
        start_batch: int = 256,
        turn_budget: float | None = None,
        admission: Callable[[], float] | None = None,
        pool: StartPool | None = None,
    ) -> None:
        if concurrency < 1:
            raise ValueError(f"concurrency must be at least 1, not {concurrency!r}")
        if per_host_concurrency < 0:
            raise ValueError(f"per_host_concurrency must be >= 0, not {per_host_concurrency!r}")
        if max_lookahead < 1:
            raise ValueError(f"max_lookahead must be at least 1, not {max_lookahead!r}")
        if start_batch < 1:
            raise ValueError(f"start_batch must be at least 1, not {start_batch!r}")
        self._clock = clock
        self._scan_port = scan_port
        self._on_result = on_result
        self.concurrency = concurrency
        self.per_host_concurrency = per_host_concurrency
        self.connect_limiter = connect_limiter or ConnectLimiter(
            clock, connect_rate, burst=max(1, math.ceil(connect_rate / 20))
        )
        self._options = options
        self._max_lookahead = max_lookahead
        #: at most this many ports start (and stay in flight) in one pass; the
        #: rest start on the next reactor turns, so a burst of starts (10,000 at
        #: once) cannot hold the reactor for seconds
        self.start_batch = start_batch
        #: seconds of reactor time one pump may spend starting ports (None: no limit)
        self.turn_budget = turn_budget
        #: returns how long to wait before starting more ports (0: go); e.g. reactor lag
        self.admission = admission
        #: shared with the engine's other schedulers (None: this one alone)
        self.pool = pool
        self._pump_call: IDelayedCall | None = None
        self.stats = SchedulerStats()
        self._reset()

    def _reset(self) -> None:
        self._tasks: Iterator[PortTask] | None = None
        self._exhausted = True
        self._iteration_error: Exception | None = None
        #: tasks whose host slot is reserved, to start before reading further
        self._ready: deque[PortTask] = deque()
        #: tasks waiting for their host to have room
        self._blocked: dict[str, deque[PortTask]] = {}
        self._blocked_count = 0
        #: per address: tasks in flight plus tasks in _ready
        self._host_load: dict[str, int] = {}
        self._running: dict[int, Deferred[Result]] = {}
        self._next_key = 0
        self._results: list[Result] = []
        self._waiters: list[Deferred[list[Result]]] = []
        self._active = False
        self._stopping = False
        self._pumping = False
        self._cancel_pump_call()

    # ------------------------------------------------------------------ public

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def running(self) -> bool:
        return self._active

    def run(self, tasks: Iterable[PortTask]) -> Deferred[list[Result]]:
        """Scan every task; fires with all results, in completion order.

        Cancelling the returned Deferred is :meth:`stop`.
        """
        if self._active:
            raise RuntimeError("Scheduler.run() while a run is in progress")
        self._reset()
        self.stats = SchedulerStats()
        self._active = True
        self._tasks = iter(tasks)
        self._exhausted = False
        done: Deferred[list[Result]] = Deferred(lambda _: self._stop())
        self._waiters.append(done)
        self._pump()
        return done

    def stop(self) -> Deferred[list[Result]]:
        """Start nothing more and cancel the ports in flight.

        Fires with the run's results once every port in flight has reported
        (a cancelled port reports an error result unless its own canceller
        produced a result). Tasks not started produce no result; their count is
        ``stats.not_started`` (tasks still unread in the iterable are not read).
        """
        if not self._active:
            return succeed([])
        waiter: Deferred[list[Result]] = Deferred()
        self._waiters.append(waiter)
        self._stop()
        return waiter

    # ------------------------------------------------------------------ internals

    def _stop(self) -> None:
        if not self._active or self._stopping:
            return
        self._stopping = True
        self._cancel_pump_call()
        if self.pool is not None:
            self.pool.forget(self)
        self.stats.not_started += len(self._ready) + self._blocked_count
        for task in self._ready:
            self._release_host(task.address)
        self._ready.clear()
        self._blocked.clear()
        self._blocked_count = 0
        self._exhausted = True
        self._tasks = None
        log.info(
            "scan stopped: {in_flight} ports in flight cancelled, {not_started} not started",
            in_flight=len(self._running),
            not_started=self.stats.not_started,
        )
        for running in list(self._running.values()):
            running.cancel()
        self._maybe_done()

    def _release_host(self, host: str) -> None:
        load = self._host_load.get(host, 0) - 1
        if load > 0:
            self._host_load[host] = load
        else:
            self._host_load.pop(host, None)

    def _next_ready(self) -> bool:
        """Whether tasks may remain to start (ready ones, or the iterable not read out)."""
        return bool(self._ready) or not self._exhausted

    def _next_task(self) -> PortTask | None:
        if self._ready:
            return self._ready.popleft()
        limit = self.per_host_concurrency
        while not self._exhausted and self._blocked_count < self._max_lookahead:
            assert self._tasks is not None
            try:
                task = next(self._tasks)
            except StopIteration:
                self._exhausted = True
                break
            except Exception as e:
                self._iteration_error = e
                log.failure("reading scan tasks failed")
                self._exhausted = True
                break
            load = self._host_load.get(task.address, 0)
            if limit and load >= limit:
                self._blocked.setdefault(task.address, deque()).append(task)
                self._blocked_count += 1
                continue
            self._host_load[task.address] = load + 1
            return task
        return None

    def _cancel_pump_call(self) -> None:
        call = self._pump_call
        self._pump_call = None
        if call is not None and call.active():
            call.cancel()

    def deferred_pump(self) -> None:
        self._pump_call = None
        self._pump()

    def _pump(self) -> None:
        if self._pumping:
            return
        if self._pump_call is not None and self.admission is not None:
            return  # a later pump is already due (the reactor is catching up)
        self._pumping = True
        started = 0
        began = time.perf_counter()
        pool = self.pool
        try:
            while not self._stopping and len(self._running) < self.concurrency:
                if pool is not None and (
                    pool.full()
                    or (
                        pool.turn_budget is not None
                        and pool.spent() + (time.perf_counter() - began) > pool.turn_budget
                    )
                ):
                    # the engine's other schedulers hold the slots or used this turn's
                    # time: the pool wakes this one when there is room
                    if self._next_ready():
                        pool.wait(self)
                    break
                if self.admission is not None:
                    delay = self.admission()
                    if delay > 0:
                        # the reactor is behind: let it catch up before adding work
                        self._pump_call = self._clock.callLater(delay, self.deferred_pump)
                        break
                over_budget = (
                    self.turn_budget is not None
                    and started > 0
                    and time.perf_counter() - began > self.turn_budget
                )
                if started >= self.start_batch or over_budget:
                    # let the reactor poll (and fire timers) before the next batch
                    if self._pump_call is None:
                        self._pump_call = self._clock.callLater(0, self.deferred_pump)
                    break
                task = self._next_task()
                if task is None:
                    break
                if self._start(task):
                    started += 1
        finally:
            self._pumping = False
            if pool is not None:
                pool.charge(time.perf_counter() - began)
        self._maybe_done()

    def _start(self, task: PortTask) -> bool:
        """Start *task*; True if it is still in flight (it did not end at once)."""
        key = self._next_key
        self._next_key += 1
        self.stats.started += 1
        started = self._clock.seconds()
        if self.pool is not None:
            self.pool.acquire()
        scanning = maybeDeferred(self._scan_port, task)
        self._running[key] = scanning
        scanning.addErrback(self._failed, task, started)
        scanning.addCallback(self._finished, key, task)
        scanning.addErrback(self._bug, task)
        return key in self._running

    def _failed(self, failure: Failure, task: PortTask, started: float) -> Result:
        ended = self._clock.seconds()
        if isinstance(failure.value, CancelledError) and self._stopping:
            message = "cancelled: scan stopped"
            log.info(
                "{host} port {port}/{protocol} cancelled",
                host=task.address,
                port=task.port,
                protocol=task.protocol,
            )
        else:
            message = f"{type(failure.value).__name__}: {failure.getErrorMessage()}"
            log.failure(
                "scan of {host} port {port}/{protocol} failed",
                failure,
                LogLevel.error,
                host=task.address,
                port=task.port,
                protocol=task.protocol,
            )
        self.stats.errors += 1
        return error_result(task, message, started=started, ended=ended, options=self._options)

    def _finished(self, result: Result, key: int, task: PortTask) -> None:
        del self._running[key]
        if self.pool is not None:
            self.pool.release()
        self._release_host(task.address)
        waiting = self._blocked.get(task.address)
        if waiting:
            self._ready.append(waiting.popleft())
            self._blocked_count -= 1
            self._host_load[task.address] = self._host_load.get(task.address, 0) + 1
            if not waiting:
                del self._blocked[task.address]
        self._results.append(result)
        self.stats.finished += 1
        try:
            self._on_result(result)
        except Exception:
            log.failure(
                "result sink failed for {host} port {port}/{protocol}",
                host=task.address,
                port=task.port,
                protocol=task.protocol,
            )
        if self.turn_budget is not None and not self._pumping:
            # many ports can end in one reactor turn (their deadlines fall due
            # together): start their successors in one budgeted pass next turn
            if self._pump_call is None and not self._stopping:
                self._pump_call = self._clock.callLater(0, self.deferred_pump)
            self._maybe_done()
            return
        self._pump()

    def _bug(self, failure: Failure, task: PortTask) -> None:
        log.failure(
            "scheduler error after {host} port {port}/{protocol}",
            failure,
            host=task.address,
            port=task.port,
            protocol=task.protocol,
        )

    def _maybe_done(self) -> None:
        if not self._active or self._pumping or self._running:
            return
        if not (self._stopping or (self._exhausted and not self._ready and not self._blocked)):
            return
        results, waiters, failure = self._results, self._waiters, self._iteration_error
        self._cancel_pump_call()
        if self.pool is not None:
            self.pool.forget(self)
        self._active = False
        self._waiters = []
        self._tasks = None
        for waiter in waiters:
            if waiter.called:  # a cancelled run() whose ports did not end at once
                continue
            if failure is not None:
                waiter.errback(failure)
            else:
                waiter.callback(results)
