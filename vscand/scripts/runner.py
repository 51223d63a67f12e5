"""Running version scripts on scan results, as Nmap runs its NSE version category.

:class:`ScriptRunner` runs scripts on the results of one host: scripts are
grouped in *runlevels* by their dependencies (NSE's rule: one more than the
highest runlevel of what a script depends on); at each runlevel every open
(or open|filtered) port's view is rebuilt from the current results, each
script's port rule is asked, and the actions whose rule held run concurrently.
A script's ``set_version`` calls are applied when its action returns; a script
that fails (an exception, a timeout) changes nothing and is logged at info.
The time all scripts may spend on one port is bounded (``port_budget``).

:class:`ScriptPhase` sits between the scheduler and the result sink: a result
goes through the runner and is delivered afterwards. Most hosts are streamed
port by port; a host with a port where a script that updates *other* ports
may run (``rpcinfo`` on 111) is held until all its ports ended, then run as
one host — the portmapper's answer rewrites the host's RPC ports.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any, cast

from twisted.internet import defer
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.output.script_output import (
    MAX_OUTPUT_CHARS,
    SCRIPT_ERROR_OUTPUT,
    ScriptFailed,
    ScriptOutput,
    script_result,
)
from vscand.scan.model import PortTask, Result, ScanOptions
from vscand.scan.pacing import ConnectLimiter
from vscand.scripts.api import (
    SCRIPT_SET_REASON,
    SCRIPTED_STATES,
    MatchState,
    PortKey,
    PortState,
    PortView,
    RuleContext,
    VersionScript,
    VersionUpdate,
    apply_update,
)
from vscand.scripts.exchange import Exchange, ReactorExchange

log = Logger()

__all__ = ["ExchangeFactory", "ScriptPhase", "ScriptRunner", "runlevels"]

#: builds the exchange of one script run on one port
ExchangeFactory = Callable[[PortView], Exchange]


def runlevels(scripts: Iterable[VersionScript]) -> list[list[VersionScript]]:
    """Scripts grouped by NSE runlevel: one more than the highest level of the
    dependencies; a dependency that is not among ``scripts`` counts as level 1."""
    by_name = {s.name: s for s in scripts}
    level: dict[str, int] = {}

    def compute(name: str, seen: frozenset[str]) -> int:
        if name in level:
            return level[name]
        if name in seen:
            raise ValueError(f"circular script dependencies through {name}")
        # a dependency we do not have counts as a level-1 script: it exists in Nmap
        # (https-redirect before http-server-header), so the dependent still runs
        # after everything of level 1 (skypev2-version's answer, for one)
        deps = by_name[name].dependencies
        value = 1 + max((compute(d, seen | {name}) if d in by_name else 1 for d in deps), default=0)
        level[name] = value
        return value

    for name in by_name:
        compute(name, frozenset())
    grouped: dict[int, list[VersionScript]] = {}
    for script in by_name.values():
        grouped.setdefault(level[script.name], []).append(script)
    return [grouped[k] for k in sorted(grouped)]


@dataclass
class _Run:
    """One action's view of the world (implements ``ScriptRun``)."""

    port: PortView
    host: _Host
    intensity: int
    exchange: Exchange
    #: the Nmap release reproduced (a script that changed between releases asks)
    release: str = "7.93"
    updates: list[tuple[PortKey, VersionUpdate, MatchState]] = field(default_factory=list)
    states: list[tuple[PortKey, PortState]] = field(default_factory=list)

    def set_version(
        self,
        update: VersionUpdate,
        state: MatchState = "hardmatched",
        *,
        port: PortKey | None = None,
    ) -> None:
        self.updates.append((port or self.port.key, update, state))

    def set_state(self, state: PortState, *, port: PortKey | None = None) -> None:
        self.states.append((port or self.port.key, state))

    def set_port_state(self, state: str) -> None:
        self.set_state(cast(PortState, state))


class _Host:
    def __init__(self, results: dict[PortKey, Result]) -> None:
        self._results = results

    def port(self, number: int, protocol: str) -> PortView | None:
        result = self._results.get((number, protocol))
        if result is None or result.get("service") is None:
            return None
        return PortView.from_result(result)


def _scriptable(result: Result) -> bool:
    return (
        result.get("service") is not None
        and not result.get("error")
        and not result.get("interrupted")
        and result.get("state") in SCRIPTED_STATES
    )


class ScriptRunner:
    """Runs ``scripts`` on one host's results (in place)."""

    def __init__(
        self,
        clock: Any,
        scripts: Sequence[VersionScript],
        *,
        exchange_factory: ExchangeFactory | None = None,
        limiter: ConnectLimiter | None = None,
        table_name: Callable[[int, str], str | None] = lambda _port, _proto: None,
        port_budget: float = 120.0,
    ) -> None:
        self._clock = clock
        self.scripts = list(scripts)
        self.levels = runlevels(self.scripts)
        self._table_name = table_name
        self.port_budget = port_budget
        self._limiter = limiter
        self._exchange_factory = exchange_factory or self._reactor_exchange

    def _reactor_exchange(self, port: PortView) -> Exchange:
        return ReactorExchange(
            self._clock, port.address, port.number, port.protocol, limiter=self._limiter
        )

    def holds_host(self, tasks: Iterable[PortTask]) -> bool:
        """Must this host's results wait for all its ports (a script updates others)?"""
        wide = [s for s in self.scripts if s.updates_other_ports]
        return any(s.may_apply(t.port, t.protocol) for t in tasks for s in wide)

    async def run_host(self, results: Sequence[Result], ctx: RuleContext) -> None:
        """Run every runlevel over ``results`` (one host); results are updated in place."""
        ports: dict[PortKey, Result] = {}
        for result in results:
            if _scriptable(result):
                ports[(int(result["port"]), result["protocol"])] = result
        if not ports or not self.scripts:
            return
        order = sorted(ports, key=lambda k: (k[1] != "tcp", k[1], k[0]))
        deadline = self._clock.seconds() + self.port_budget
        host = _Host(ports)
        for level in self.levels:
            jobs: list[defer.Deferred[None]] = []
            for key in order:
                view = PortView.from_result(ports[key])
                if view.state not in SCRIPTED_STATES:
                    continue
                for script in level:
                    if self._rule(script, view, ctx):
                        jobs.append(
                            defer.Deferred.fromCoroutine(
                                self._one(script, view, host, ports, ctx, deadline)
                            )
                        )
            if jobs:
                await defer.gatherResults(jobs, consumeErrors=True)

    def _rule(self, script: VersionScript, view: PortView, ctx: RuleContext) -> bool:
        try:
            return bool(script.portrule(view, ctx))
        except Exception as exc:
            log.info(
                "script {script}: port rule failed on {host} {port}/{protocol}: {error!r}",
                script=script.name,
                host=view.address,
                port=view.number,
                protocol=view.protocol,
                error=exc,
            )
            return False

    async def _one(
        self,
        script: VersionScript,
        view: PortView,
        host: _Host,
        ports: dict[PortKey, Result],
        ctx: RuleContext,
        deadline: float,
    ) -> None:
        remaining = deadline - self._clock.seconds()
        if remaining <= 0:
            log.info(
                "script {script} skipped on {host} {port}/{protocol}: port's script time spent",
                script=script.name,
                host=view.address,
                port=view.number,
                protocol=view.protocol,
            )
            return
        exchange = self._exchange_factory(view)
        run = _Run(view, host, ctx.intensity, exchange, ctx.release)
        action = defer.Deferred.fromCoroutine(script.action(run))
        action.addTimeout(remaining, self._clock)
        try:
            output = await action
        except ScriptFailed:
            # NSE: a Lua runtime error; what set_port_version did stays, the
            # output is Nmap's error line
            output = ScriptOutput(text=SCRIPT_ERROR_OUTPUT)
        except Exception as exc:
            reason = "timed out" if isinstance(exc, defer.CancelledError) else repr(exc)
            log.info(
                "script {script} failed on {host} {port}/{protocol}: {error}",
                script=script.name,
                host=view.address,
                port=view.number,
                protocol=view.protocol,
                error=reason,
            )
            return
        finally:
            close = getattr(exchange, "close_all", None)
            if close is not None:
                close()
        for key, port_state in run.states:
            target = ports.get(key)
            if target is not None and target.get("state") != port_state:
                target["state"] = port_state
                target["reason"] = SCRIPT_SET_REASON
        for key, update, state in run.updates:
            target = ports.get(key)
            if target is None:
                continue  # not a scanned open port of this host (NSE: no such port)
            target["service"] = apply_update(
                target["service"], update, state, table_name=self._table_name(*key)
            )
        own = ports[view.key]["service"]
        if isinstance(output, str):
            output = ScriptOutput(text=output)
        own["scripts"] = {
            **(own.get("scripts") or {}),
            script.name: output.printed(ctx.release)[:MAX_OUTPUT_CHARS] if output else "",
        }
        if output is not None:
            # NSE keeps a result for any non-nil return, even an empty string (-oX then has
            # <script output="">, -oN no line); Nmap prints them by id. Bounded
            # (script_result): what a hostile peer makes a script print cannot grow a
            # result without limit
            recorded = script_result(output.to_json(script.name, ctx.release))
            kept = [r for r in own.get("script_results") or () if r["id"] != script.name]
            if recorded is not None:
                kept.append(recorded)
            own["script_results"] = sorted(kept, key=lambda r: str(r["id"]))


def rule_context(
    options: ScanOptions, excluded: Callable[[int, str], bool], release: str | None = None
) -> RuleContext:
    """The rule context of a scan: its intensity, the probe file's Exclude, the release."""

    def is_excluded(port: int, protocol: str) -> bool:
        return not options.allports and excluded(port, protocol)

    return RuleContext(intensity=options.intensity, excluded=is_excluded, release=release or "7.93")


class ScriptPhase:
    """Between the scheduler and the sink: scripts run on each result, then it is delivered.

    ``on_result`` is the scheduler's sink; ``flush()`` (after the scheduler's
    run) runs what is still held (hosts whose ports did not all report, e.g.
    after a stop) and waits until every result has been delivered.
    """

    def __init__(
        self,
        runner: ScriptRunner,
        tasks: Sequence[PortTask],
        sink: Callable[[Result], None],
        ctx: RuleContext,
        *,
        concurrency: int = 100,
    ) -> None:
        self._runner = runner
        self._sink = sink
        self._ctx = ctx
        by_host: dict[str, list[PortTask]] = {}
        for task in tasks:
            by_host.setdefault(task.address, []).append(task)
        self._expected: Counter[str] = Counter()
        for address, host_tasks in by_host.items():
            if runner.holds_host(host_tasks):
                self._expected[address] = len(host_tasks)
        self._held: dict[str, list[Result]] = {}
        self._pending: set[defer.Deferred[None]] = set()
        self._slots = defer.DeferredSemaphore(max(1, concurrency))
        self.skip_scripts = False

    def on_result(self, result: Result) -> None:
        address = result.get("host", "")
        if address in self._expected:
            held = self._held.setdefault(address, [])
            held.append(result)
            if len(held) >= self._expected[address]:
                del self._expected[address]
                self._start(self._held.pop(address))
            return
        self._start([result])

    def _start(self, results: list[Result]) -> None:
        if self.skip_scripts or not any(_scriptable(r) for r in results):
            self._deliver(results)
            return
        d: defer.Deferred[None] = self._slots.run(
            lambda: defer.Deferred.fromCoroutine(self._runner.run_host(results, self._ctx))
        )
        self._pending.add(d)

        def done(outcome: object) -> None:
            self._pending.discard(d)
            if isinstance(outcome, Failure):
                log.failure("version scripts failed", outcome)
            self._deliver(results)

        d.addBoth(done)

    def _deliver(self, results: list[Result]) -> None:
        for result in results:
            try:
                self._sink(result)
            except Exception:
                log.failure(
                    "result sink failed for {host} port {port}",
                    host=result.get("host"),
                    port=result.get("port"),
                )

    async def flush(self) -> None:
        """Run held hosts now and wait until every result has been delivered."""
        for address in list(self._held):
            self._expected.pop(address, None)
            self._start(self._held.pop(address))
        self._expected.clear()
        while self._pending:
            await defer.DeferredList(list(self._pending), consumeErrors=True)
