"""A private, non-global reactor running in a thread, for integration tests against real servers.

The test thread stays free to kill and restart ``redis-server`` while the client runs;
the global reactor is never started (other tests may use it). Everything that touches
Deferreds runs in the reactor thread through :meth:`ReactorThread.call`.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Coroutine, Iterator
from typing import Any, TypeVar

import pytest
from twisted.internet.defer import Deferred, maybeDeferred
from twisted.internet.selectreactor import SelectReactor
from twisted.logger import globalLogPublisher
from twisted.python.failure import Failure

T = TypeVar("T")


class ReactorThread:
    def __init__(self) -> None:
        self.reactor: Any = SelectReactor()  # type: ignore[no-untyped-call]
        self.thread = threading.Thread(
            target=self.reactor.run, kwargs={"installSignalHandlers": False}, daemon=True
        )
        self.thread.start()

    def call(self, function: Callable[..., Any], *args: Any, timeout: float = 30.0) -> Any:
        """Run *function* in the reactor thread; wait for its (Deferred) result."""
        results: queue.Queue[Any] = queue.Queue()

        def start() -> None:
            maybeDeferred(function, *args).addBoth(results.put)

        self.reactor.callFromThread(start)
        try:
            result = results.get(timeout=timeout)
        except queue.Empty:
            raise AssertionError(f"no result within {timeout} s") from None
        if isinstance(result, Failure):
            result.raiseException()
        return result

    def run(self, coro: Callable[[], Coroutine[Any, Any, T]], timeout: float = 30.0) -> T:
        """Run an ``async def`` (given as a 0-argument callable) in the reactor thread."""
        result: T = self.call(lambda: Deferred.fromCoroutine(coro()), timeout=timeout)
        return result

    def start(self, function: Callable[[], Deferred[Any]]) -> Deferred[Any]:
        """Start an operation in the reactor thread and return its Deferred, to be waited for
        later with ``call(lambda: d)``; its failure is kept, never left unhandled."""
        holder: list[Deferred[Any]] = []
        self.call(lambda: holder.append(function()))
        return holder[0]

    def stop(self) -> None:
        self.reactor.callFromThread(self.reactor.stop)
        self.thread.join(10)


@pytest.fixture
def reactor_thread() -> Iterator[ReactorThread]:
    runner = ReactorThread()
    try:
        yield runner
    finally:
        runner.stop()


@pytest.fixture
def logged_errors() -> Iterator[list[dict[str, Any]]]:
    """Log events with a failure or at level error/critical; a test asserts it stays empty."""
    events: list[dict[str, Any]] = []

    def observe(event: dict[str, Any]) -> None:
        level = getattr(event.get("log_level"), "name", "")
        if "log_failure" in event or level in ("error", "critical") or event.get("isError"):
            events.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield events
    finally:
        globalLogPublisher.removeObserver(observe)
