"""Rate-limited warnings: a Redis outage must not write a log line per retried command.

Per *kind* of message (a short name: ``"retry:write a result"``, ``"loop:_heartbeat"``),
the first occurrence is logged at once. Further ones within ``interval`` seconds are only
counted; when the interval ends, one line reports how many there were (``… 532 more like
this in the last 10 s``) and the next interval starts. An interval that counted nothing
closes the kind: its next occurrence is logged at once again.

Every line carries ``warn_kind`` (the kind) as a log field, so the lines of one kind can be
told apart in JSON logs.

Pure code: the clock (``seconds()`` and ``callLater()``, e.g. the reactor or
``twisted.internet.task.Clock``) and the logger are given to it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol


class _Clock(Protocol):
    def seconds(self) -> float: ...

    def callLater(
        self, delay: float, callable: Callable[..., Any], *args: Any, **kw: Any
    ) -> Any: ...


class _Logger(Protocol):
    def warn(self, format: str | None = None, **kwargs: Any) -> None: ...

    def info(self, format: str | None = None, **kwargs: Any) -> None: ...


@dataclass
class _Window:
    timer: Any
    emit: Callable[..., None]
    suppressed: int = 0
    last: str = ""


def _render(format: str, fields: dict[str, Any]) -> str:
    try:
        return format.format(**fields)
    except (KeyError, IndexError, ValueError, AttributeError):
        return format


class RateLimitedLog:
    """Warnings (and notices) through *log* (a ``twisted.logger.Logger``), at most one line
    at once and one count line per *interval* seconds for each kind."""

    def __init__(self, log: _Logger, clock: _Clock, interval: float) -> None:
        if not interval > 0:
            raise ValueError(f"interval must be positive, not {interval!r}")
        self.log = log
        self.clock = clock
        self.interval = interval
        self._windows: dict[str, _Window] = {}
        #: lines logged and occurrences only counted, over the whole life (for tests, metrics)
        self.logged = 0
        self.suppressed = 0

    def warn(self, kind: str, format: str, **fields: Any) -> None:
        """Log ``format.format(**fields)`` as a warning of *kind*, or count it."""
        self._emit(self.log.warn, kind, format, fields)

    def info(self, kind: str, format: str, **fields: Any) -> None:
        """The same at level info (a notice that may repeat as often as its warning)."""
        self._emit(self.log.info, kind, format, fields)

    def _emit(
        self, emit: Callable[..., None], kind: str, format: str, fields: dict[str, Any]
    ) -> None:
        window = self._windows.get(kind)
        if window is not None:
            window.suppressed += 1
            window.last = _render(format, fields)
            self.suppressed += 1
            return
        self._windows[kind] = _Window(self.clock.callLater(self.interval, self._end, kind), emit)
        self.logged += 1
        emit(format, warn_kind=kind, **fields)

    def _end(self, kind: str) -> None:
        window = self._windows.pop(kind)
        if not window.suppressed:
            return  # quiet for a whole interval: the next one is logged at once
        self._report(kind, window)
        timer = self.clock.callLater(self.interval, self._end, kind)
        self._windows[kind] = _Window(timer, window.emit)

    def _report(self, kind: str, window: _Window) -> None:
        self.logged += 1
        window.emit(
            "{warn_kind}: {count} more like this in the last {interval:g} s (the last: {last})",
            warn_kind=kind,
            count=window.suppressed,
            interval=self.interval,
            last=window.last,
        )

    def pending(self) -> dict[str, int]:
        """Per kind, the occurrences counted and not reported yet."""
        return {kind: w.suppressed for kind, w in self._windows.items() if w.suppressed}

    def flush(self) -> None:
        """Report every count not reported yet and stop the timers (at shutdown)."""
        windows, self._windows = self._windows, {}
        for kind, window in windows.items():
            if window.timer is not None and window.timer.active():
                window.timer.cancel()
            if window.suppressed:
                self._report(kind, window)
