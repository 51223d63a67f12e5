"""The one retry loop for Redis operations: a bounded back-off while Redis is unavailable.

Every operation the daemon must not lose (start, write, finish, acknowledge, dead-letter a
job; connect; confirm replicas) is retried through :func:`retrying` on
:class:`~vscand.queue.errors.RedisUnavailable`: another error is a bug or a reply to act on
and goes up at once. The caller says what to log before each wait (``on_retry``) and when
to give up (``give_up``, e.g. a daemon that is stopping gives up after a few tries).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from twisted.internet import task

from vscand.queue.errors import RedisUnavailable

T = TypeVar("T")

#: seconds between two tries: the n-th wait is the n-th delay, then the last one again
RETRY_DELAYS: tuple[float, ...] = (0.2, 0.5, 1.0, 2.0, 5.0)


def retry_delay(attempt: int) -> float:
    """The wait after failed try number *attempt* (0 for the first failure)."""
    return RETRY_DELAYS[min(attempt, len(RETRY_DELAYS) - 1)]


def never(attempt: int) -> bool:
    """Never give up (the default of :func:`retrying`)."""
    return False


async def retrying(
    clock: Any,
    function: Callable[..., Awaitable[T]],
    *args: Any,
    on_retry: Callable[[RedisUnavailable, float], None],
    give_up: Callable[[int], bool] = never,
) -> T:
    """``await function(*args)`` until it does not raise :class:`RedisUnavailable`.

    Before each wait ``on_retry(error, delay)`` is called; when ``give_up(failures so
    far)`` is true the error is raised instead. *clock* is the reactor (or a ``Clock``).
    """
    attempt = 0
    while True:
        try:
            return await function(*args)
        except RedisUnavailable as exc:
            if give_up(attempt):
                raise
            delay = retry_delay(attempt)
            attempt += 1
            on_retry(exc, delay)
            await task.deferLater(clock, delay)
