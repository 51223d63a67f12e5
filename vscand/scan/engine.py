"""The scan engine: per-port machines on real sockets, matching off the reactor.

Wires the pieces together for ``vscan scan`` (and the daemon): an endpoint
dialer paced by the connection-rate limiter, a dedicated thread pool for regex
matching (PCRE and Hyperscan release the GIL, so matching runs in parallel with
the reactor and cannot stall it), and the scheduler's concurrency limits.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IReactorCore, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.threads import deferToThreadPool
from twisted.python.threadpool import ThreadPool

from vscand.ports import ServicesTable
from vscand.probes.matcher import Matcher, ServiceMatch
from vscand.probes.model import Probe
from vscand.scan.model import PortTask, Result, ScanOptions
from vscand.scan.scheduler import ConnectLimiter, Scheduler
from vscand.scan.tcp import Dialer, TCPPortScan

#: PCRE recurses on the C stack (recursion limit 10,000 frames of ~500 bytes)
MATCH_THREAD_STACK = 32 * 1024 * 1024


class ThreadedMatch:
    """Runs ``Matcher.match`` on a dedicated pool of threads."""

    def __init__(self, reactor: Any, matcher: Matcher, threads: int | None = None) -> None:
        self._reactor = reactor
        self._matcher = matcher
        size = threads or max(1, os.cpu_count() or 1)
        self._pool = ThreadPool(minthreads=1, maxthreads=size, name="vscand-match")
        self._started = False

    def start(self) -> None:
        if self._started:
            return
        previous = threading.stack_size()
        threading.stack_size(MATCH_THREAD_STACK)
        try:
            self._pool.start()
        finally:
            threading.stack_size(previous)
        self._started = True

    def stop(self) -> None:
        if self._started:
            self._started = False
            self._pool.stop()

    def __call__(self, probe: Probe, buffer: bytes) -> defer.Deferred[ServiceMatch | None]:
        if not self._started:
            self.start()
        d: defer.Deferred[ServiceMatch | None] = deferToThreadPool(
            self._reactor, self._pool, self._matcher.match, probe, buffer
        )
        return d


class _OneShotFactory(Factory):
    """``connectProtocol``'s factory, defined once and quiet.

    Twisted's ``connectProtocol`` defines a new factory class on every call
    (~60 us of ``__build_class__``) and that class is ``noisy``: two log events
    ("Starting factory", "Stopping factory") per connection. With 10,000 ports
    in flight both showed in the reactor's profile.
    """

    noisy = False

    def __init__(self, protocol: Protocol) -> None:
        self._protocol = protocol

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._protocol


def endpoint_dialer(reactor: IReactorTCP, limiter: ConnectLimiter | None) -> Dialer:
    """Dial with Twisted's TCP endpoints, one connection-rate token per connection."""

    async def dial(task: PortTask, protocol: Protocol, timeout: float) -> Protocol:
        if limiter is not None:
            await limiter.acquire()
        endpoint: TCP4ClientEndpoint | TCP6ClientEndpoint
        # task.address is a literal IP address (names are resolved before tasks
        # are made); a colon is enough to tell IPv6, without ipaddress's ~40 us parse
        if ":" in task.address:
            endpoint = TCP6ClientEndpoint(reactor, task.address, task.port, timeout=timeout)  # type: ignore[no-untyped-call]
        else:
            endpoint = TCP4ClientEndpoint(reactor, task.address, task.port, timeout=timeout)
        await endpoint.connect(_OneShotFactory(protocol))
        return protocol

    def start(
        task: PortTask, protocol: Protocol, timeout: float, tls: bool
    ) -> defer.Deferred[Protocol]:
        if tls:
            return defer.fail(NotImplementedError("TLS tunnels arrive with the SSL engine"))
        return defer.Deferred.fromCoroutine(dial(task, protocol, timeout))

    return start


class ScanEngine:
    """Scans tasks with per-port machines; results are emitted as ports end."""

    def __init__(
        self,
        reactor: Any,
        matcher: Matcher,
        services: ServicesTable,
        options: ScanOptions,
        *,
        concurrency: int = 1000,
        per_host_concurrency: int = 0,
        connect_rate: float = 0,
        match_threads: int | None = None,
    ) -> None:
        self._reactor = reactor
        self._matcher = matcher
        self._services = services
        self.options = options
        self.match = ThreadedMatch(reactor, matcher, match_threads)
        self.limiter = ConnectLimiter(
            reactor, connect_rate, burst=max(1, int(connect_rate // 20) or 1)
        )
        self._dial = endpoint_dialer(reactor, self.limiter)
        self.concurrency = concurrency
        self.per_host_concurrency = per_host_concurrency
        self.scheduler: Scheduler | None = None

    def scan_port(
        self, task: PortTask, options: ScanOptions | None = None
    ) -> defer.Deferred[Result]:
        """One port's machine; ``options`` defaults to the engine's (a job may bring its own)."""
        if task.protocol != "tcp":
            return defer.fail(
                NotImplementedError(f"{task.protocol} version detection is not available yet")
            )
        clock: IReactorTime = self._reactor
        machine = TCPPortScan(
            task,
            db=self._matcher.db,
            match=self.match,
            dial=self._dial,
            clock=clock,
            options=options or self.options,
            table_name=self._services.name(task.port, task.protocol),
        )
        return machine.run()

    def run(
        self, tasks: Iterable[PortTask], on_result: Callable[[Result], None]
    ) -> defer.Deferred[list[Result]]:
        self.match.start()
        core: IReactorCore = self._reactor
        core.addSystemEventTrigger("during", "shutdown", self.match.stop)
        self.scheduler = Scheduler(
            self._reactor,
            self.scan_port,
            on_result,
            concurrency=self.concurrency,
            per_host_concurrency=self.per_host_concurrency,
            connect_limiter=self.limiter,
            options=self.options,
        )
        d = self.scheduler.run(tasks)

        def stop_pool(results: list[Result]) -> list[Result]:
            self.match.stop()
            return results

        d.addBoth(stop_pool)
        return d
