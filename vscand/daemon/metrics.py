"""The daemon's Prometheus metrics (``metrics_port``), in the text exposition format.

:class:`DaemonMetrics` owns its own :class:`~prometheus_client.CollectorRegistry`
(never the process-global one), so several daemons' worth of metrics can live in one
process (tests). The worker feeds it: counters as jobs and ports end, gauges from its
periodic heartbeat and again just before each scrape (:class:`MetricsPage`).

:class:`MetricsPage` renders on the reactor thread (``generate_latest`` over a few dozen
samples takes well under a millisecond), so it reads the worker's state without locks;
``prometheus_client.twisted.MetricsResource`` would run a WSGI app on the reactor's
thread pool and imports the global reactor at import time. :func:`listen_metrics`
binds 127.0.0.1 only: the endpoint is for a local agent or an SSH tunnel, not the
network.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    disable_created_metrics,
)
from prometheus_client.exposition import generate_latest
from twisted.logger import Logger
from twisted.web import http
from twisted.web.resource import Resource
from twisted.web.server import Request, Site

from vscand.scan.lag import ReactorLagMonitor

log = Logger()

# no ``*_created`` series (one more per counter and label set, telling when the process
# met it first): a process-wide switch of prometheus_client, which only vscand uses here
disable_created_metrics()  # type: ignore[no-untyped-call]

PREFIX = "vscand"
METRICS_INTERFACE = "127.0.0.1"
#: what generate_latest writes (legacy names, underscores); every Prometheus 2.x parses it
CONTENT_TYPE = b"text/plain; version=0.0.4; charset=utf-8"

#: job ends; every job a worker takes ends in exactly one of these
#: (sharded: split into tasks, each an entry of the queue)
JOB_OUTCOMES = ("done", "failed", "cancelled", "dead_lettered", "released", "sharded")
#: what happens to tasks of sharded jobs on this worker: queued by its splits, or ended
TASK_EVENTS = ("queued", "done", "failed", "cancelled")

#: seconds; the engine's lag sampler ticks every 20 ms, admission control holds new ports
#: above 20 ms of lag, a healthy reactor stays under a few milliseconds
LAG_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)

#: a port whose result says it got no answer in time
_TIMEOUT_REASONS = frozenset({"no-response"})
_TIMEOUT_FINAL_STATES = frozenset({"incomplete"})


class DaemonMetrics:
    """Every ``vscand_*`` metric of one worker, in a registry of its own."""

    def __init__(self, registry: CollectorRegistry | None = None) -> None:
        self.registry = registry if registry is not None else CollectorRegistry(auto_describe=True)
        r = self.registry
        self.jobs = Counter(
            "jobs",
            "Jobs ended by this worker, by outcome (dead_lettered: rejected or poison, "
            "status failed; released: handed back at shutdown)",
            ["outcome"],
            namespace=PREFIX,
            registry=r,
        )
        for outcome in JOB_OUTCOMES:
            self.jobs.labels(outcome=outcome)  # every outcome exported from the start, at 0
        self.tasks = Counter(
            "tasks",
            "Tasks of sharded jobs: queued by this worker's splits, or ended by this worker "
            "(done, failed, cancelled)",
            ["event"],
            namespace=PREFIX,
            registry=r,
        )
        for event in TASK_EVENTS:
            self.tasks.labels(event=event)
        self.ports = Counter(
            "ports", "Ports scanned, by port state", ["state"], namespace=PREFIX, registry=r
        )
        self.matches = Counter(
            "matches",
            "Ports identified by a match line, by the probe whose line matched",
            ["probe"],
            namespace=PREFIX,
            registry=r,
        )
        self.timeouts = Counter(
            "timeouts",
            "Ports that ended without an answer in time (reason no-response, or the scan "
            "was cut short: final state incomplete)",
            namespace=PREFIX,
            registry=r,
        )
        self.results_written = Counter(
            "results_written", "Port results written to Redis", namespace=PREFIX, registry=r
        )
        self.jobs_in_flight = Gauge(
            "jobs_in_flight", "Jobs this worker is running", namespace=PREFIX, registry=r
        )
        self.ports_in_flight = Gauge(
            "ports_in_flight",
            "Ports started by the running jobs' schedulers and not ended yet",
            namespace=PREFIX,
            registry=r,
        )
        self.connections_in_flight = Gauge(
            "connections_in_flight",
            "Ports holding one of the worker's concurrency slots: live per-port scans, "
            "at most one connection each",
            namespace=PREFIX,
            registry=r,
        )
        self.queue_depth = Gauge(
            "queue_depth",
            "Entries in the jobs stream (XLEN; acknowledged entries stay until trimmed)",
            namespace=PREFIX,
            registry=r,
        )
        self.pending = Gauge(
            "pending",
            "Jobs delivered to the consumer group and not acknowledged (XPENDING), "
            "all workers of the queue",
            namespace=PREFIX,
            registry=r,
        )
        self.reactor_lag = Gauge(
            "reactor_lag_seconds",
            "How late the reactor ran the latest lag-sampling timer",
            namespace=PREFIX,
            registry=r,
        )
        self.reactor_lag_samples = Histogram(
            "reactor_lag_samples_seconds",
            "Every reactor lag sample (one per 20 ms tick)",
            namespace=PREFIX,
            registry=r,
            buckets=LAG_BUCKETS,
        )
        self.reactor_blocked_samples = Histogram(
            "reactor_blocked_samples_seconds",
            "Every reactor lag sample less the time the reactor thread waited for a CPU "
            "since the previous one (run queue, hypervisor steal): the lag the daemon's own "
            "work caused (equal to the lag where Linux does not tell the wait)",
            namespace=PREFIX,
            registry=r,
            buckets=LAG_BUCKETS,
        )
        self.reactor_cpu_wait = Gauge(
            "reactor_cpu_wait_seconds",
            "Seconds the reactor thread has waited for a CPU since it started "
            "(run queue, hypervisor steal; -1 where Linux does not tell)",
            namespace=PREFIX,
            registry=r,
        )
        self.last_progress_age = Gauge(
            "last_progress_age_seconds",
            "Seconds since the consumer last completed a read of the jobs stream",
            namespace=PREFIX,
            registry=r,
        )
        self._lag_ticks_seen = 0

    # -- counters -------------------------------------------------------------

    def job_ended(self, outcome: str) -> None:
        if outcome not in JOB_OUTCOMES:
            raise ValueError(f"unknown job outcome {outcome!r}")
        self.jobs.labels(outcome=outcome).inc()

    def task_event(self, event: str, count: int = 1) -> None:
        if event not in TASK_EVENTS:
            raise ValueError(f"unknown task event {event!r}")
        self.tasks.labels(event=event).inc(count)

    def port_result(self, result: Mapping[str, Any]) -> None:
        """One port's result (the result format of DESIGN.md, plus ``final_state`` and
        ``matches`` when a service scan ran)."""
        self.ports.labels(state=str(result.get("state") or "unknown")).inc()
        matches = result.get("matches") or []
        if matches:
            last = matches[-1]
            probe = last.get("matched_probe") or last.get("probe")
            if probe:
                self.matches.labels(probe=str(probe)).inc()
        if (
            result.get("reason") in _TIMEOUT_REASONS
            or result.get("final_state") in _TIMEOUT_FINAL_STATES
        ):
            self.timeouts.inc()

    def result_written(self, written: bool) -> bool:
        """A write's outcome (``True``: stored, ``False``: fenced off); passed through,
        so this can sit in the write's callback chain."""
        if written:
            self.results_written.inc()
        return written

    # -- gauges ---------------------------------------------------------------

    def observe_local(
        self,
        *,
        jobs_in_flight: int,
        ports_in_flight: int,
        connections_in_flight: int,
        progress_age: float,
        lag: ReactorLagMonitor | None,
    ) -> None:
        """The gauges known without asking Redis, and the lag samples taken since the
        previous call (those the monitor's ring buffer still holds)."""
        self.jobs_in_flight.set(jobs_in_flight)
        self.ports_in_flight.set(ports_in_flight)
        self.connections_in_flight.set(connections_in_flight)
        self.last_progress_age.set(max(0.0, progress_age))
        if lag is None:
            return
        self.reactor_lag.set(lag.last())
        new = lag.ticks - self._lag_ticks_seen
        self._lag_ticks_seen = lag.ticks
        self.reactor_cpu_wait.set(-1 if lag.cpu_waited is None else lag.cpu_waited)
        if new > 0:
            for sample in lag.samples[-new:]:
                self.reactor_lag_samples.observe(sample)
            for sample in lag.blocked_samples[-new:]:
                self.reactor_blocked_samples.observe(sample)

    def observe_queue(self, depth: int, pending: int) -> None:
        self.queue_depth.set(depth)
        self.pending.set(pending)

    def exposition(self) -> bytes:
        """The registry in Prometheus text format 0.0.4."""
        return generate_latest(self.registry)


class MetricsPage(Resource):
    """``GET /metrics`` (any path, in fact): the registry, after *before_scrape*."""

    isLeaf = True

    def __init__(
        self, metrics: DaemonMetrics, before_scrape: Callable[[], None] | None = None
    ) -> None:
        super().__init__()  # type: ignore[no-untyped-call]
        self._metrics = metrics
        self._before_scrape = before_scrape

    def render_GET(self, request: Request) -> bytes:
        if self._before_scrape is not None:
            try:
                self._before_scrape()
            except Exception:
                log.failure("refreshing metrics before a scrape")
        request.setHeader(b"Content-Type", CONTENT_TYPE)  # type: ignore[no-untyped-call]
        return self._metrics.exposition()


class _QuietSite(Site):
    """No access log line per scrape, no "Starting factory" events."""

    noisy = False

    def log(self, request: http.Request) -> None:
        pass


def listen_metrics(
    reactor: Any,
    port: int,
    metrics: DaemonMetrics,
    before_scrape: Callable[[], None] | None = None,
    interface: str = METRICS_INTERFACE,
) -> Any:
    """Serve *metrics* on ``interface:port``; the listening port (``stopListening()``).

    Raises ``CannotListenError`` when the port is taken: a daemon told to export
    metrics does not start silently without them.
    """
    site = _QuietSite(MetricsPage(metrics, before_scrape))  # type: ignore[no-untyped-call]
    return reactor.listenTCP(port, site, interface=interface)
