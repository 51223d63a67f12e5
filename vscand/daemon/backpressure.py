"""The write gate: results waiting for Redis bound the ports that may start.

A port that starts may end in a result to write, so both count: a port starts now, or
once fewer than ``max_pending_writes`` result writes and ports started through the gate
are pending. During a Redis outage ports wait, not results (memory stays bounded).
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from typing import Any

from twisted.internet import defer

from vscand.daemon.lograte import RateLimitedLog
from vscand.scan.model import Result


class WriteGate:
    """Counts pending result writes and started ports; holds new ports past the bound."""

    def __init__(self, clock: Any, warnings: RateLimitedLog, max_pending_writes: int) -> None:
        self.clock = clock
        self.warnings = warnings
        self.max_pending_writes = max_pending_writes
        self.pending_writes = 0  # result writes started and not ended (retrying included)
        self.pending_writes_peak = 0
        self.scanning = 0  # ports started through the gate and not ended
        self.waiters: deque[defer.Deferred[None]] = deque()
        self.holding = False  # ports are waiting for writes: logged once per episode
        self._wake_call: Any = None

    def _room(self) -> bool:
        return self.pending_writes + self.scanning < self.max_pending_writes

    def when_written(self, start: Callable[[], defer.Deferred[Result]]) -> defer.Deferred[Result]:
        """Start a port (*start*) now, or once there is room (see the module docstring).
        Cancelling a waiting port (a stopped scan) forgets it."""
        if not self.waiters and self._room():
            return self._scan(start)
        if not self.holding:
            self.holding = True
            self.warnings.warn(
                "backpressure",
                "{pending} result writes wait for Redis (max_pending_writes {limit}): "
                "new ports wait until they are written",
                pending=self.pending_writes,
                limit=self.max_pending_writes,
            )
        waiter: defer.Deferred[None] = defer.Deferred(self.waiters.remove)
        self.waiters.append(waiter)
        return waiter.addCallback(lambda _: self._scan(start))

    def _scan(self, start: Callable[[], defer.Deferred[Result]]) -> defer.Deferred[Result]:
        self.scanning += 1

        def ended(outcome: Any) -> Any:
            self.scanning -= 1
            self._wake_soon()
            return outcome

        return start().addBoth(ended)

    def write_started(self) -> None:
        self.pending_writes += 1
        self.pending_writes_peak = max(self.pending_writes_peak, self.pending_writes)

    def write_ended(self, outcome: Any) -> Any:
        self.pending_writes -= 1
        self._wake_soon()
        return outcome

    def _wake_soon(self) -> None:
        # next turn: the result of a port that just ended reaches on_result (and counts as a
        # pending write) in this one
        if self.waiters and self._wake_call is None:
            self._wake_call = self.clock.callLater(0, self._wake)

    def _wake(self) -> None:
        self._wake_call = None
        while self.waiters and self._room():
            self.waiters.popleft().callback(None)
        if self.holding and not self.waiters:
            self.holding = False
            self.warnings.info(
                "backpressure-end",
                "result writes go through again ({pending} pending): ports start again",
                pending=self.pending_writes,
            )

    def stop(self) -> None:
        """Cancel a wake-up still scheduled (shutdown)."""
        if self._wake_call is not None and self._wake_call.active():
            self._wake_call.cancel()
        self._wake_call = None
