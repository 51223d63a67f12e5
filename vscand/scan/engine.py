"""The scan engine: per-port machines on real sockets, matching off the reactor.

Wires the pieces together for ``vscan scan`` (and the daemon): an endpoint
dialer paced by the connection-rate limiter, a dedicated thread pool for regex
matching (PCRE and Hyperscan release the GIL, so matching runs in parallel with
the reactor and cannot stall it), and the scheduler's concurrency limits.
"""

from __future__ import annotations

import collections
import gc
import os
import resource
import threading
import time
from collections.abc import Callable, Iterable
from typing import Any

from twisted.internet import defer
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP6ClientEndpoint
from twisted.internet.interfaces import IReactorCore, IReactorTCP, IReactorTime
from twisted.internet.protocol import Factory, Protocol
from twisted.python.failure import Failure
from twisted.python.threadpool import ThreadPool

from vscand.ports import ServicesTable
from vscand.probes.matcher import Matcher, ServiceMatch
from vscand.probes.model import Probe
from vscand.scan.datagram import DatagramOpener, listen_udp_opener
from vscand.scan.fast import FastTCPPortScan
from vscand.scan.lag import ReactorLagMonitor
from vscand.scan.model import PortTask, Result, ScanOptions
from vscand.scan.pacing import ConnectLimiter, StartPool
from vscand.scan.records import LaneBudget
from vscand.scan.scheduler import Scheduler
from vscand.scan.stream import Dialer
from vscand.scan.tcp import TCPPortScan
from vscand.scan.tls import TLSClient
from vscand.scan.udp import UDPPortScan
from vscand.scan.udp_payloads import UDPPayloads, port_scan_payloads

#: PCRE recurses on the C stack (recursion limit 10,000 frames of ~500 bytes)
MATCH_THREAD_STACK = 32 * 1024 * 1024


#: young-generation threshold and the older ones: collections of the young
#: generation stay short (~10 ms at 10,000 ports in flight) and full ones become rare
GC_THRESHOLDS = (20_000, 100, 100)


def tune_gc() -> None:
    """Keep the cyclic garbage collector from pausing the reactor for long.

    Everything alive when scanning starts (the probe database: ~12,000 match lines
    with their templates and patterns; the modules) lives for the whole process:
    ``gc.freeze()`` moves it out of the collector's sight. The thresholds then
    make full collections rare: with Python's defaults, generation-2 collections
    over ~1M live scan objects paused the reactor 0.13-0.31 s at 10,000 ports in
    flight (BENCHMARKS.md). Cycles that outlive the young generations wait for a
    full collection: the daemon runs one itself when it is idle.
    """
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def lane_budget_limit() -> int:
    """Fast mode's speculative connections across a scan: half the open-file limit.

    The other half is left for the ports' own connections, UDP sockets, Redis and
    the rest; a full budget only means fewer lanes (slower), never a failed port.
    """
    soft, _ = resource.getrlimit(resource.RLIMIT_NOFILE)
    if soft == resource.RLIM_INFINITY:
        soft = 1 << 20
    return max(0, soft // 2)


class ThreadedMatch:
    """Runs ``Matcher.match`` on a dedicated pool of threads.

    Results come back through our own queue, drained on the reactor with a time
    budget per turn: thousands of matches finishing together (a wave of banners)
    must not run all their callbacks in one reactor iteration, which is what
    ``deferToThreadPool`` (one ``callFromThread`` each) would do.
    """

    def __init__(
        self,
        reactor: Any,
        matcher: Matcher,
        threads: int | None = None,
        turn_budget: float = 0.005,
    ) -> None:
        self._reactor = reactor
        self._matcher = matcher
        size = threads or max(1, os.cpu_count() or 1)
        self._pool = ThreadPool(minthreads=1, maxthreads=size, name="vscand-match")
        self._started = False
        self._turn_budget = turn_budget
        self._lock = threading.Lock()
        self._done: collections.deque[tuple[defer.Deferred[ServiceMatch | None], Any, bool]] = (
            collections.deque()
        )
        self._drain_scheduled = False

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
        d: defer.Deferred[ServiceMatch | None] = defer.Deferred()
        self._pool.callInThread(self._work, d, probe, buffer)
        return d

    def _work(self, d: defer.Deferred[ServiceMatch | None], probe: Probe, buffer: bytes) -> None:
        """In a pool thread: match, then queue the outcome for the reactor."""
        try:
            outcome: Any = self._matcher.match(probe, buffer)
            ok = True
        except BaseException:
            outcome = Failure()  # type: ignore[no-untyped-call]
            ok = False
        with self._lock:
            self._done.append((d, outcome, ok))
            schedule = not self._drain_scheduled
            self._drain_scheduled = True
        if schedule:
            self._reactor.callFromThread(self._drain)

    def _drain(self) -> None:
        """On the reactor: fire queued outcomes until this turn's budget is spent."""
        deadline = time.perf_counter() + self._turn_budget
        while True:
            with self._lock:
                if not self._done:
                    self._drain_scheduled = False
                    return
                d, outcome, ok = self._done.popleft()
            if not d.called:  # a cancelled match (the port ended meanwhile) is dropped
                if ok:
                    d.callback(outcome)
                else:
                    d.errback(outcome)
            if time.perf_counter() > deadline:
                self._reactor.callLater(0, self._drain)
                return


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


def endpoint_dialer(
    reactor: IReactorTCP, limiter: ConnectLimiter | None, tls: TLSClient | None = None
) -> Dialer:
    """Dial with Twisted's TCP endpoints, one connection-rate token per connection.

    A TLS dial (the SSL restart) fires once the handshake has completed; ``timeout``
    then bounds connect and handshake together.
    """
    tls_client = tls if tls is not None else TLSClient(reactor)  # type: ignore[arg-type]

    async def dial(task: PortTask, protocol: Protocol, timeout: float, tls: bool) -> Protocol:
        if limiter is not None:
            await limiter.acquire()
        endpoint: TCP4ClientEndpoint | TCP6ClientEndpoint
        # task.address is a literal IP address (names are resolved before tasks
        # are made); a colon is enough to tell IPv6, without ipaddress's ~40 us parse
        if ":" in task.address:
            endpoint = TCP6ClientEndpoint(reactor, task.address, task.port, timeout=timeout)  # type: ignore[no-untyped-call]
        else:
            endpoint = TCP4ClientEndpoint(reactor, task.address, task.port, timeout=timeout)
        if tls:
            return await tls_client.connect(
                endpoint.connect,
                protocol,
                address=task.address,
                port=task.port,
                hostname=task.hostname,
                timeout=timeout,
            )
        await endpoint.connect(_OneShotFactory(protocol))
        return protocol

    def start(
        task: PortTask, protocol: Protocol, timeout: float, tls: bool
    ) -> defer.Deferred[Protocol]:
        return defer.Deferred.fromCoroutine(dial(task, protocol, timeout, tls))

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
        lag_limit: float = 0.02,
        turn_budget: float = 0.005,
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
        self._open_udp: DatagramOpener = listen_udp_opener(reactor, self.limiter)
        self._udp_payloads: UDPPayloads | None = None
        self.concurrency = concurrency
        self.per_host_concurrency = per_host_concurrency
        self.scheduler: Scheduler | None = None
        #: admission control: no new port starts while the reactor runs later than this
        self.lag_limit = lag_limit
        #: reactor time one scheduling pass may spend starting ports
        self.turn_budget = turn_budget
        self.lag = ReactorLagMonitor(reactor, interval=0.02)
        #: every scheduler made here (one per job in the daemon) shares the ports in flight
        #: and each reactor turn's start-up time
        self.pool = StartPool(reactor, concurrency, turn_budget)
        #: fast mode's speculative lanes, shared by every port of this engine
        self.lanes = LaneBudget(lane_budget_limit())

    def admission(self) -> float:
        """How long to wait before starting more ports: 0 unless the reactor is behind."""
        if not self.lag.running:
            self.lag.start()
        return self.lag.interval if self.lag.last() > self.lag_limit else 0.0

    def start(self) -> None:
        """Start the matching pool and the lag monitor (idempotent).

        Everything alive now (the probe database: ~12,000 match lines with their
        templates and compiled patterns, the modules) lives for the whole process;
        ``gc.freeze()`` moves it out of the cyclic collector's sight, so a full
        collection walks only the scan's own objects. Without it, generation-2
        collections over the database paused the reactor 0.13-0.31 s under load.
        """
        tune_gc()
        self.match.start()
        if not self.lag.running:
            self.lag.start()

    def stop(self) -> None:
        self.pool.stop()
        self.match.stop()
        if self.lag.running:
            self.lag.stop()

    def make_scheduler(
        self,
        scan_port: Callable[[PortTask], defer.Deferred[Result]],
        on_result: Callable[[Result], None],
        options: ScanOptions | None = None,
    ) -> Scheduler:
        """A scheduler sharing this engine's limits, rate limiter and admission control."""
        return Scheduler(
            self._reactor,
            scan_port,
            on_result,
            concurrency=self.concurrency,
            per_host_concurrency=self.per_host_concurrency,
            connect_limiter=self.limiter,
            options=options or self.options,
            turn_budget=self.turn_budget,
            admission=self.admission,
            pool=self.pool,
        )

    def scan_port(
        self, task: PortTask, options: ScanOptions | None = None
    ) -> defer.Deferred[Result]:
        """One port's machine; ``options`` defaults to the engine's (a job may bring its own)."""
        clock: IReactorTime = self._reactor
        if task.protocol == "udp":
            return self._scan_udp_port(task, options or self.options)
        if task.protocol != "tcp":
            return defer.fail(
                NotImplementedError(f"{task.protocol} version detection is not available")
            )
        opts = options or self.options
        if opts.fast:
            fast = FastTCPPortScan(
                task,
                db=self._matcher.db,
                match=self.match,
                dial=self._dial,
                clock=clock,
                options=opts,
                table_name=self._services.name(task.port, task.protocol),
                budget=self.lanes,
            )
            return fast.run()
        machine = TCPPortScan(
            task,
            db=self._matcher.db,
            match=self.match,
            dial=self._dial,
            clock=clock,
            options=opts,
            table_name=self._services.name(task.port, task.protocol),
        )
        return machine.run()

    def _scan_udp_port(self, task: PortTask, options: ScanOptions) -> defer.Deferred[Result]:
        if self._udp_payloads is None:
            self._udp_payloads = port_scan_payloads(self._matcher.db)
        machine = UDPPortScan(
            task,
            db=self._matcher.db,
            match=self.match,
            open_socket=self._open_udp,
            clock=self._reactor,
            options=options,
            table_name=self._services.name(task.port, task.protocol),
            check_payloads=self._udp_payloads.for_port(task.port),
        )
        return machine.run()

    def run(
        self,
        tasks: Iterable[PortTask],
        on_result: Callable[[Result], None],
        on_port_started: Callable[[PortTask], None] | None = None,
    ) -> defer.Deferred[list[Result]]:
        """Scan *tasks*; *on_result* gets each port's result as it ends, and
        *on_port_started* (if given) each port as its scan starts."""
        self.start()
        core: IReactorCore = self._reactor
        core.addSystemEventTrigger("during", "shutdown", self.stop)

        def scan_port(task: PortTask) -> defer.Deferred[Result]:
            if on_port_started is not None:
                on_port_started(task)
            return self.scan_port(task)

        self.scheduler = self.make_scheduler(scan_port, on_result)
        d = self.scheduler.run(tasks)

        def stop_pool(results: list[Result]) -> list[Result]:
            self.stop()
            return results

        d.addBoth(stop_pool)
        return d
