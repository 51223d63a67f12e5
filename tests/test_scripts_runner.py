"""The version-script phase: rules, runlevels, updates, containment, time bounds, holding.

Deterministic: a Clock and in-memory exchanges; no sockets.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from vscand.scan.fingerprint import ServiceFingerprint
from vscand.scan.model import PortTask
from vscand.scripts.api import (
    BaseScript,
    PortView,
    RuleContext,
    ScriptRun,
    VersionUpdate,
    apply_update,
)
from vscand.scripts.fingerprints import fingerprint_response
from vscand.scripts.runner import ScriptPhase, ScriptRunner, runlevels
from vscand.scripts.shortport import version_port_or_service
from vscand.scripts.testing import FakeExchange
from vscand.service import empty_service


def result(
    port: int, name: str | None = None, *, state: str = "open", **service: Any
) -> dict[str, Any]:
    svc = empty_service(name, method=service.pop("method", "table"), conf=service.pop("conf", 3))
    svc.update(service)
    return {
        "host": "127.0.0.1",
        "hostname": None,
        "port": port,
        "protocol": "tcp",
        "state": state,
        "service": svc,
    }


def silent(_conn: Any, _data: bytes) -> None:
    return None


class Recorder(BaseScript):
    """Runs where ``rule`` says, records the order, applies ``update``."""

    def __init__(
        self,
        name: str,
        log: list[str],
        *,
        deps: tuple[str, ...] = (),
        update: VersionUpdate | None = None,
        state: str = "hardmatched",
        rule: Any = None,
        other: tuple[int, str] | None = None,
    ) -> None:
        self.name = name
        self.dependencies = deps
        self._log = log
        self._update = update
        self._state = state
        self._rule = rule or (lambda port, ctx: True)
        self._other = other
        self.updates_other_ports = other is not None

    def may_apply(self, number: int, protocol: str) -> bool:
        return number == 111

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return bool(self._rule(port, ctx))

    async def action(self, run: ScriptRun) -> str | None:
        self._log.append(f"{self.name}@{run.port.number}:{run.port.name}")
        if self._update is not None:
            run.set_version(self._update, self._state, port=self._other)  # type: ignore[arg-type]
        return f"{self.name} ran"


def run_host(
    runner: ScriptRunner, results: list[dict[str, Any]], ctx: RuleContext | None = None
) -> None:
    d = defer.Deferred.fromCoroutine(runner.run_host(results, ctx or RuleContext()))
    assert d.called, "fake exchanges never wait"
    d.result if not isinstance(d.result, defer.Failure) else d.result.raiseException()  # type: ignore[attr-defined]


def make_runner(clock: Clock, scripts: list[Any], **kw: Any) -> ScriptRunner:
    return ScriptRunner(
        clock, scripts, exchange_factory=lambda view: FakeExchange(silent, port=view.number), **kw
    )


def test_runlevels_follow_dependencies() -> None:
    log: list[str] = []
    a, b, c = (
        Recorder("a", log),
        Recorder("b", log, deps=("a",)),
        Recorder("c", log, deps=("b", "absent")),
    )
    assert [[s.name for s in level] for level in runlevels([c, b, a])] == [["a"], ["b"], ["c"]]
    # an absent dependency (https-redirect for http-server-header) counts as level 1
    lone = Recorder("lone", log, deps=("absent",))
    assert [[s.name for s in level] for level in runlevels([lone, a])] == [["a"], ["lone"]]
    with pytest.raises(ValueError, match="circular"):
        runlevels([Recorder("x", log, deps=("y",)), Recorder("y", log, deps=("x",))])


def test_later_runlevel_sees_earlier_update_and_rule_reads_the_new_name() -> None:
    log: list[str] = []
    first = Recorder(
        "first", log, update=VersionUpdate(name="status", version="1"), state="softmatched"
    )
    # like rpc-grind: runs only where the name is still unknown/table
    second = Recorder("second", log, deps=("first",), rule=lambda p, c: p.method == "table")
    clock = Clock()
    results = [result(5000)]
    run_host(make_runner(clock, [second, first]), results)
    assert log == ["first@5000:None"]
    service = results[0]["service"]
    assert (service["name"], service["version"], service["method"], service["conf"]) == (
        "status",
        "1",
        "probed",
        10,
    )
    assert service["scripts"] == {"first": "first ran"}
    assert not clock.getDelayedCalls()


def test_rules_see_only_open_ports_and_error_results_are_left_alone() -> None:
    log: list[str] = []
    clock = Clock()
    results = [
        result(1, state="closed"),
        result(2, state="filtered"),
        result(3, state="open|filtered"),
        result(4),
    ]
    broken = {
        "host": "127.0.0.1",
        "port": 5,
        "protocol": "tcp",
        "state": "unknown",
        "service": None,
        "error": "x",
    }
    run_host(make_runner(clock, [Recorder("s", log)]), [*results, broken])
    assert sorted(log) == ["s@3:None", "s@4:None"]
    assert results[0]["service"]["scripts"] == {}


def test_a_failing_script_changes_nothing_and_is_logged_at_info(caplog: Any) -> None:
    class Boom(BaseScript):
        name = "boom"

        def portrule(self, port: PortView, ctx: RuleContext) -> bool:
            return True

        async def action(self, run: ScriptRun) -> str | None:
            run.set_version(VersionUpdate(name="bogus"))
            raise RuntimeError("script bug")

    events: list[dict[str, Any]] = []
    from twisted.logger import globalLogPublisher

    globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
    try:
        results = [result(80, "http")]
        before = dict(results[0]["service"])
        run_host(make_runner(Clock(), [Boom()]), results)
    finally:
        globalLogPublisher.removeObserver(events.append)  # type: ignore[arg-type]
    assert results[0]["service"] == before
    failures = [e for e in events if "failed" in e.get("log_format", "")]
    assert failures and all(e["log_level"].name == "info" for e in failures)
    assert not any(e.get("log_failure") for e in events)


def test_script_time_per_port_is_bounded_by_the_budget() -> None:
    class Hang(BaseScript):
        name = "hang"
        cancelled = False

        def portrule(self, port: PortView, ctx: RuleContext) -> bool:
            return True

        async def action(self, run: ScriptRun) -> str | None:
            try:
                await defer.Deferred()
            except defer.CancelledError:
                Hang.cancelled = True
                raise
            return "never"

    clock = Clock()
    runner = make_runner(clock, [Hang()], port_budget=30.0)
    results = [result(80, "http")]
    d = defer.Deferred.fromCoroutine(runner.run_host(results, RuleContext()))
    clock.advance(29.9)
    assert not d.called
    clock.advance(0.2)
    assert d.called and Hang.cancelled
    assert results[0]["service"]["scripts"] == {}
    assert not clock.getDelayedCalls()


def test_set_version_on_another_port_and_host_results_held_until_the_host_ends() -> None:
    log: list[str] = []
    wide = Recorder(
        "wide",
        log,
        update=VersionUpdate(name="nfs", version="3-4", extrainfo="RPC #100003"),
        state="softmatched",
        rule=lambda p, c: p.number == 111,
        other=(2049, "tcp"),
    )
    runner = make_runner(Clock(), [wide])
    tasks = [PortTask("127.0.0.1", p) for p in (111, 2049, 22)] + [PortTask("127.0.0.2", 80)]
    delivered: list[tuple[str, int]] = []
    phase = ScriptPhase(
        runner, tasks, lambda r: delivered.append((r["host"], r["port"])), RuleContext()
    )
    r2049, r111, r22 = (
        result(2049, "rpcbind", method="probed", conf=10),
        result(111, "rpcbind"),
        result(22),
    )
    other_host = dict(result(80), host="127.0.0.2")
    phase.on_result(r2049)
    phase.on_result(other_host)  # another host: streamed at once
    assert delivered == [("127.0.0.2", 80)]
    phase.on_result(r111)
    assert delivered == [("127.0.0.2", 80)]
    phase.on_result(r22)
    assert sorted(delivered) == [
        ("127.0.0.1", 22),
        ("127.0.0.1", 111),
        ("127.0.0.1", 2049),
        ("127.0.0.2", 80),
    ]
    assert (
        r2049["service"]["name"],
        r2049["service"]["version"],
        r2049["service"]["extrainfo"],
    ) == (
        "nfs",
        "3-4",
        "RPC #100003",
    )
    assert r111["service"]["scripts"] == {"wide": "wide ran"}
    d = defer.Deferred.fromCoroutine(phase.flush())
    assert d.called


def test_flush_delivers_a_host_that_never_completed() -> None:
    runner = make_runner(Clock(), [Recorder("wide", [], other=(1, "tcp"))])
    delivered: list[int] = []
    phase = ScriptPhase(
        runner,
        [PortTask("127.0.0.1", 111), PortTask("127.0.0.1", 2)],
        lambda r: delivered.append(r["port"]),
        RuleContext(),
    )
    phase.on_result(result(111))
    assert delivered == []
    defer.Deferred.fromCoroutine(phase.flush())
    assert delivered == [111]


def test_apply_update_maps_states_like_nmap() -> None:
    base = empty_service("http", method="table", conf=3)
    base.update(fingerprint="SF-Port80-TCP:...", cpe=["cpe:/a:x:y"])
    soft = apply_update(base, VersionUpdate(product="P\x01roduct" + "x" * 100), "softmatched")
    assert (soft["method"], soft["conf"], soft["fingerprint"]) == (
        "probed",
        10,
        "SF-Port80-TCP:...",
    )
    assert soft["product"] == "P.roduct" + "x" * 72 and soft["cpe"] == ["cpe:/a:x:y"]
    hard = apply_update(base, VersionUpdate(name="docker", cpe=()), "hardmatched")
    assert (hard["name"], hard["fingerprint"], hard["cpe"]) == ("docker", None, [])
    wrapped = apply_update(empty_service(None), VersionUpdate(), "tcpwrapped")
    assert (wrapped["name"], wrapped["method"], wrapped["conf"]) == ("tcpwrapped", "probed", 8)
    nomatch = apply_update(empty_service(None), VersionUpdate(), "nomatch", table_name="sunrpc")
    assert (nomatch["name"], nomatch["method"], nomatch["conf"]) == ("sunrpc", "table", 3)


def test_version_port_or_service_is_shortports_rule() -> None:
    rule = version_port_or_service([2375, 2376], ["docker", "docker-s"])
    port = PortView("127.0.0.1", 2375, "tcp", "open")
    assert rule(port, RuleContext(intensity=7))
    assert not rule(port, RuleContext(intensity=6))
    assert not rule(port, RuleContext(excluded=lambda p, proto: p == 2375))
    assert rule(PortView("127.0.0.1", 9999, "tcp", "open", name="docker"), RuleContext())
    assert not rule(PortView("127.0.0.1", 2375, "udp", "open"), RuleContext())
    assert not rule(PortView("127.0.0.1", 2375, "tcp", "closed"), RuleContext())


@given(
    responses=st.lists(
        st.tuples(
            st.sampled_from(["GetRequest", "HTTPOptions", "NULL", "Help", "X11Probe"]),
            st.binary(min_size=1, max_size=1200),
        ),
        min_size=1,
        max_size=4,
        unique_by=lambda t: t[0],
    )
)
def test_fingerprint_response_reads_back_what_the_fingerprint_kept(
    responses: list[tuple[str, bytes]],
) -> None:
    fp = ServiceFingerprint(8080, "TCP", intensity=7, ssl=False, when=1_700_000_000.0)
    for probe, data in responses:
        fp.add(probe, data)
    text = fp.text()
    assert text is not None
    for probe, data in responses:
        if f"%r({probe}," in text.replace("\nSF:", ""):
            assert fingerprint_response(text, probe) == data[: fp.max_bytes]
    assert fingerprint_response(text, "NoSuchProbe") is None
