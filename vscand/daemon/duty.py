"""A periodic duty as a service: one ``TimerService`` per duty of the worker."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from typing import Any

from twisted.application.internet import TimerService
from twisted.internet import defer


def duty_service(
    name: str,
    interval: float,
    duty: Callable[[], Coroutine[Any, Any, None]],
    clock: Any,
    on_error: Callable[[Any, str], None],
    *,
    now: bool = False,
) -> TimerService:
    """A ``TimerService`` named *name* that runs *duty* every *interval* seconds on
    *clock* (first at once when *now*, else after one interval); a failure goes to
    ``on_error(failure, name)`` and the duty runs again at the next tick."""
    first = [not now]

    def tick() -> defer.Deferred[None] | None:
        if first[0]:  # TimerService calls at once on start
            first[0] = False
            return None
        d = defer.Deferred.fromCoroutine(duty())
        d.addErrback(on_error, name)
        return d

    timer = TimerService(interval, tick)  # type: ignore[no-untyped-call]
    timer.clock = clock
    timer.setName(name)  # type: ignore[no-untyped-call]
    return timer
