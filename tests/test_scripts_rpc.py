"""rpcinfo and rpc-grind against in-memory RPC peers (TCP records, UDP datagrams, liars)."""

from __future__ import annotations

import struct
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.logger import globalLogPublisher

from tests.e2e.script_servers_rpc_http import rpc_reply
from vscand.rpc.messages import (
    ACCEPT_PROG_MISMATCH,
    PortmapEntry,
    RecordReader,
    build_accepted_reply,
    build_dump_reply,
    parse_call,
    record,
)
from vscand.rpc.programs import load_rpc_programs
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin.rpc import RpcGrind, RpcInfoScript
from vscand.scripts.runner import ScriptRunner
from vscand.scripts.testing import FakeConnection, FakeExchange, Reply
from vscand.service import empty_service

PROGRAMS = load_rpc_programs()


def port(number: int, name: str | None, protocol: str = "tcp", **service: Any) -> dict[str, Any]:
    svc = empty_service(name, method=service.pop("method", "probed"), conf=service.pop("conf", 10))
    svc.update(service)
    return {"host": "127.0.0.1", "hostname": None, "port": number, "protocol": protocol,
            "state": "open", "service": svc}  # fmt: skip


def server(program: int, low: int, high: int) -> Any:
    """An RPC server for ``program`` (TCP records or UDP datagrams)."""

    def respond(conn: FakeConnection, data: bytes) -> bytes:
        if conn.protocol == "udp":
            return rpc_reply(program, low, high, data)
        message = RecordReader().feed(data)
        assert message is not None, "a call is one complete record"
        return record(rpc_reply(program, low, high, message))

    return respond


def run(
    results: list[dict[str, Any]], scripts: list[Any], exchanges: dict[int, FakeExchange]
) -> list[dict[str, Any]]:
    events: list[dict[str, Any]] = []
    globalLogPublisher.addObserver(events.append)  # type: ignore[arg-type]
    try:
        clock = Clock()
        runner = ScriptRunner(clock, scripts, exchange_factory=lambda view: exchanges[view.number])
        d = defer.Deferred.fromCoroutine(runner.run_host(results, RuleContext()))
        assert d.called
        assert not clock.getDelayedCalls()
    finally:
        globalLogPublisher.removeObserver(events.append)  # type: ignore[arg-type]
    assert not [
        e for e in events if e.get("log_failure") or e["log_level"].name in ("error", "critical")
    ]
    return events


def test_grind_finds_an_unregistered_program_over_tcp() -> None:
    exchange = FakeExchange(server(100024, 1, 1), port=40000)
    result = port(40000, "rpcbind", fingerprint="SF-Port...")
    run([result], [RpcGrind(PROGRAMS)], {40000: exchange})
    service = result["service"]
    assert (service["name"], service["version"], service["extrainfo"]) == (
        "status",
        "1",
        "RPC #100024",
    )
    assert (service["method"], service["conf"], service["fingerprint"]) == ("probed", 10, None)
    assert service["rpc"] == {"program": 100024, "name": "status", "low": 1, "high": 1}
    assert len(exchange.connections) == 4  # rpcbind already: no confirmation call, 4 workers
    calls = [
        parse_call(RecordReader().feed(sent) or b"")
        for c in exchange.connections
        for sent in c.sent
    ]
    assert {program for _, program, _, _ in calls} >= {100000, 100001, 100024}
    assert all(12345 <= version <= 123456789 for _, _, version, _ in calls)


def test_grind_over_udp_sends_bare_messages_and_reports_a_range() -> None:
    exchange = FakeExchange(server(100003, 2, 4), port=2049, protocol="udp")
    result = port(2049, None, "udp", method="table", conf=3)
    run([result], [RpcGrind(PROGRAMS)], {2049: exchange})
    assert (result["service"]["name"], result["service"]["version"]) == ("nfs", "2-4")
    first = exchange.connections[0].sent[0]  # the confirmation NULL call to 100000 v2
    assert parse_call(first)[1:] == (100000, 2, 0) and len(first) == 40


def test_grind_leaves_a_non_rpc_port_alone_and_skips_identified_ones() -> None:
    silent = FakeExchange(lambda c, d: None, port=5000)
    result = port(5000, None, method="table", conf=3)
    run([result], [RpcGrind(PROGRAMS)], {5000: silent})
    assert result["service"]["name"] is None and len(silent.connections) == 1
    ssh = port(22, "ssh")
    assert not RpcGrind(PROGRAMS).portrule(
        PortView.from_result(ssh),
        RuleContext(),
    )


def portmapper_v2_only(conn: FakeConnection, data: bytes) -> bytes | None:
    """A UDP peer that answers only NULL calls to program 100000 version 2 and ignores
    everything else: the scan's probes (RPCCheck's bogus version included) get nothing."""
    xid, program, version, procedure = parse_call(data)
    if (program, version, procedure) != (100000, 2, 0):
        return None
    return build_accepted_reply(xid, 0)


def test_grind_confirmation_answer_opens_an_open_filtered_udp_port() -> None:
    """NSE's isRPC calls set_port_state(open) on any answer: a UDP port the scan left
    open|filtered (silent to every probe) becomes open, reason script-set; nothing is
    found, so the service is left as it was."""
    exchange = FakeExchange(portmapper_v2_only, port=40001, protocol="udp")
    result = port(40001, None, "udp", method="table", conf=3)
    result.update(state="open|filtered", reason="no-response")
    run([result], [RpcGrind(PROGRAMS)], {40001: exchange})
    assert (result["state"], result["reason"]) == ("open", "script-set")
    service = result["service"]
    assert (service["name"], service["version"], service["method"]) == (None, None, "table")
    assert service.get("rpc") is None


def test_grind_leaves_a_silent_open_filtered_udp_port_open_filtered() -> None:
    silent = FakeExchange(lambda c, d: None, port=40002, protocol="udp")
    result = port(40002, None, "udp", method="table", conf=3)
    result.update(state="open|filtered", reason="no-response")
    run([result], [RpcGrind(PROGRAMS)], {40002: silent})
    assert (result["state"], result["reason"]) == ("open|filtered", "no-response")
    assert len(silent.connections) == 1  # the confirmation call only


def test_an_already_open_port_keeps_its_reason_when_the_grind_confirms_rpc() -> None:
    exchange = FakeExchange(server(100003, 2, 4), port=2049, protocol="udp")
    result = port(2049, None, "udp", method="table", conf=3)
    result.update(reason="udp-response")
    run([result], [RpcGrind(PROGRAMS)], {2049: exchange})
    assert (result["state"], result["reason"]) == ("open", "udp-response")
    assert result["service"]["name"] == "nfs"


def test_a_lying_record_mark_ends_the_grind_at_once_with_the_result_unchanged() -> None:
    def liar(conn: FakeConnection, data: bytes) -> bytes:
        xid = parse_call(RecordReader().feed(data) or b"")[0]
        return struct.pack(">I", 0x80000000 | (1 << 30)) + build_accepted_reply(
            xid, ACCEPT_PROG_MISMATCH
        )

    exchange = FakeExchange(liar, port=40001)
    result = port(40001, "rpcbind")
    before = dict(result["service"])
    run([result], [RpcGrind(PROGRAMS)], {40001: exchange})
    assert {k: v for k, v in result["service"].items() if k != "scripts"} == {
        k: v for k, v in before.items() if k != "scripts"
    }
    assert all(len(c.sent) == 1 for c in exchange.connections)  # each worker gave up after one call


def test_a_fragment_that_never_completes_times_out_with_the_result_unchanged() -> None:
    def dripper(conn: FakeConnection, data: bytes) -> Reply:
        return Reply(
            [struct.pack(">I", 0x80000000 | 100) + b"\0" * 10]
        )  # 10 of 100 bytes, then silence

    result = port(40002, "rpcbind")
    run([result], [RpcGrind(PROGRAMS)], {40002: FakeExchange(dripper, port=40002)})
    assert result["service"]["name"] == "rpcbind" and result["service"]["version"] is None


def portmapper(entries: list[PortmapEntry], versions: tuple[int, ...] = (2, 3, 4)) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> bytes:
        message = data if conn.protocol == "udp" else RecordReader().feed(data) or b""
        xid, _program, version, _procedure = parse_call(message)
        if version not in versions:
            reply = build_accepted_reply(
                xid, ACCEPT_PROG_MISMATCH, struct.pack(">II", min(versions), max(versions))
            )
        else:
            reply = build_dump_reply(xid, entries, version)
        return reply if conn.protocol == "udp" else record(reply)

    return respond


def test_rpcinfo_rewrites_every_registered_open_port_of_the_host() -> None:
    entries = [
        *(PortmapEntry(100000, v, p, 111, "0.0.0.0") for v in (4, 3, 2) for p in ("tcp", "udp")),
        PortmapEntry(100005, 1, "tcp", 20048, "0.0.0.0"),
        PortmapEntry(100005, 3, "tcp", 20048, "0.0.0.0"),
        PortmapEntry(100024, 1, "tcp", 5000, "0.0.0.0"),
        PortmapEntry(100021, 4, "tcp", 6000, "0.0.0.0"),  # a port that was not scanned
    ]
    ports = [port(111, "rpcbind"), port(20048, "rpcbind"), port(5000, "ssh", product="OpenSSH")]
    exchanges = {111: FakeExchange(portmapper(entries, versions=(2,)), port=111)}
    run(ports, [RpcInfoScript(PROGRAMS)], exchanges)
    by_port = {r["port"]: r["service"] for r in ports}
    assert (by_port[111]["name"], by_port[111]["version"], by_port[111]["extrainfo"]) == (
        "rpcbind",
        "2-4",
        "RPC #100000",
    )
    assert (by_port[20048]["name"], by_port[20048]["version"]) == ("mountd", "1-3")
    # port 111 is named rpcbind, so even an identified port is rewritten (NSE's guard)
    assert (by_port[5000]["name"], by_port[5000]["version"], by_port[5000]["product"]) == (
        "status",
        "1",
        "OpenSSH",
    )
    assert by_port[20048]["method"] == "probed" and by_port[20048]["conf"] == 10
    assert by_port[20048]["rpc"] == {"program": 100005, "name": "mountd", "low": 1, "high": 3}
    assert "100005  1,3        20048/tcp   mountd" in by_port[111]["scripts"]["rpcinfo"]
    # rpcbind v4 and v3 were refused (PROG_MISMATCH), v2 answered
    assert [
        parse_call(RecordReader().feed(c.sent[0]) or b"")[2] for c in exchanges[111].connections
    ] == [4, 3, 2]


def test_rpcinfo_output_table_and_lines() -> None:
    entries = [
        PortmapEntry(100000, 4, "tcp", 111, "0.0.0.0", "superuser"),
        PortmapEntry(100000, 3, "tcp", 111, "0.0.0.0", "superuser"),
        PortmapEntry(100000, 4, "local", None, "/run/rpcbind.sock", "superuser"),
    ]
    ports = [port(111, "rpcbind")]
    run(ports, [RpcInfoScript(PROGRAMS)], {111: FakeExchange(portmapper(entries), port=111)})
    (kept,) = ports[0]["service"]["script_results"]
    assert kept["output"] == (
        "\n  program version    port/proto  service\n  100000  3,4          111/tcp   rpcbind\n"
    )
    (program,) = kept["elements"]
    assert program["key"] == "100000"
    tcp, local = program["table"]
    assert tcp == {"key": "tcp", "table": [
        {"key": "port", "value": "111"}, {"key": "addr", "value": "0.0.0.0"},
        {"key": "owner", "value": "superuser"},
        {"key": "version", "table": [{"key": None, "value": "3"}, {"key": None, "value": "4"}]},
    ]}  # fmt: skip
    # a transport without a port: no line, its address kept, no port key
    assert [e["key"] for e in local["table"]] == ["addr", "owner", "version"]
