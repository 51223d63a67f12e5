"""``vscan scan``'s live progress display: ports done, the slowest still running, and the
worst case left by the probe plan."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Sequence
from typing import Any

from vscand.scan.model import PortTask, Result


def _duration(seconds: float) -> str:
    """``45s``, ``2m05s``, ``1h02m``."""
    whole = math.ceil(max(0.0, seconds))
    if whole < 60:
        return f"{whole}s"
    if whole < 3600:
        return f"{whole // 60}m{whole % 60:02d}s"
    return f"{whole // 3600}h{whole % 3600 // 60:02d}m"


class Progress:
    """A live progress display on stderr when it is a terminal (tqdm), else nothing: ports
    done of all, refreshed every second whether or not a port ended (:meth:`tick`), with how
    many are in flight, the slowest ones still running with their elapsed time, and the
    worst case left by the probe plan.

    The worst case: *bound* gives a port's longest scan (:func:`plan_wait_seconds`: every
    probe its plan can send, each waiting its whole ``totalwaitms``, as a silent peer makes
    them); what is left is the ports not started at their bound plus the running ones' bound
    less their elapsed time, spread over *concurrency* slots, and never less than the longest
    single port left. Ports that answer end far sooner: it is the figure that does not lie
    about a scan of silent ports (tqdm's own rate-based estimate sits beside it).
    """

    #: how many of the slowest running ports are named
    SLOWEST = 3

    def __init__(
        self,
        tasks: Sequence[PortTask],
        enabled: bool,
        clock: Callable[[], float] = time.monotonic,
        *,
        bound: Callable[[PortTask], float] | None = None,
        concurrency: int = 1,
    ) -> None:
        self._bar: Any = None
        self._clock = clock
        self._bound = bound
        self._concurrency = max(1, concurrency)
        #: (address, port, protocol) → (when its scan started, its bound)
        self.running: dict[tuple[str, int, str], tuple[float, float]] = {}
        #: the bounds of the ports not started yet
        self._waiting: dict[tuple[str, int, str], float] = {}
        if bound is not None:
            memo: dict[tuple[int, str], float] = {}
            for t in tasks:
                key = (t.port, t.protocol)
                if key not in memo:
                    memo[key] = bound(t)
                self._waiting[(t.address, t.port, t.protocol)] = memo[key]
        if enabled and len(tasks) > 1 and sys.stderr.isatty():
            from tqdm import tqdm  # noqa: PLC0415 - only for a terminal

            self._bar = tqdm(total=len(tasks), unit="port", file=sys.stderr, leave=False)

    def started(self, task: PortTask) -> None:
        key = (task.address, task.port, task.protocol)
        self.running[key] = (self._clock(), self._waiting.pop(key, 0.0))

    def update(self, result: Result) -> None:
        key = (str(result["host"]), int(result["port"]), str(result.get("protocol") or "tcp"))
        self.running.pop(key, None)
        self._waiting.pop(key, None)  # ended without starting (refused, interrupted)
        if self._bar is not None:
            self._bar.set_postfix_str(self.status(), refresh=False)
            self._bar.update(1)

    def worst_case_left(self) -> float | None:
        """Seconds the rest of the scan takes at worst by the probe plan (``None``: no
        bound was given)."""
        if self._bound is None:
            return None
        now = self._clock()
        running = [max(0.0, bound - (now - since)) for since, bound in self.running.values()]
        waiting = self._waiting.values()
        longest = max([*running, *waiting], default=0.0)
        return max(longest, (sum(running) + sum(waiting)) / self._concurrency)

    def status(self) -> str:
        """``N in flight; slowest HOST:PORT Ts, ...; worst case 2m05s left`` (empty when
        nothing runs)."""
        if not self.running:
            return ""
        now = self._clock()
        slowest = sorted(self.running.items(), key=lambda item: item[1][0])[: self.SLOWEST]
        named = ", ".join(
            f"{host}:{port}{'/udp' if proto == 'udp' else ''} {now - since:.0f}s"
            for (host, port, proto), (since, _bound) in slowest
        )
        text = f"{len(self.running)} in flight; slowest {named}"
        left = self.worst_case_left()
        if left is not None:
            text += f"; worst case {_duration(left)} left"
        return text

    def tick(self) -> None:
        """Redraw (elapsed times and tqdm's own clock move on with no port ending)."""
        if self._bar is not None:
            self._bar.set_postfix_str(self.status(), refresh=False)
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
