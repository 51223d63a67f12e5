"""docker-version and skypev2-version with in-memory peers."""

from __future__ import annotations

import json
from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from vscand.scan.fingerprint import ServiceFingerprint
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin.docker_version import DockerVersion
from vscand.scripts.builtin.skypev2_version import SkypeV2Version
from vscand.scripts.runner import ScriptRunner
from vscand.scripts.testing import FakeConnection, FakeExchange, Reply
from vscand.service import empty_service


def port_result(port: int, name: str | None, **service: Any) -> dict[str, Any]:
    svc = empty_service(name, method=service.pop("method", "table"), conf=service.pop("conf", 3))
    svc.update(service)
    return {"host": "127.0.0.1", "hostname": None, "port": port, "protocol": "tcp",
            "state": "open", "service": svc}  # fmt: skip


def scan(result: dict[str, Any], script: Any, exchange: FakeExchange) -> dict[str, Any]:
    clock = Clock()
    runner = ScriptRunner(clock, [script], exchange_factory=lambda view: exchange)
    assert defer.Deferred.fromCoroutine(runner.run_host([result], RuleContext())).called
    assert not clock.getDelayedCalls()
    service: dict[str, Any] = result["service"]
    return service


def docker_api(body: dict[str, Any], *, chunked: bool = False) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> Reply | None:
        if conn.tls or not data.startswith(b"GET /version HTTP/1.1\r\n"):
            return None
        raw = json.dumps(body).encode()
        if chunked:
            head = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
            return Reply(
                [
                    head,
                    b"%x\r\n" % 5 + raw[:5] + b"\r\n",
                    b"%x\r\n" % (len(raw) - 5) + raw[5:] + b"\r\n0\r\n\r\n",
                ],
                close=True,
            )
        return Reply([b"HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n" % len(raw), raw])

    return respond


def test_docker_version_hard_match() -> None:
    exchange = FakeExchange(docker_api({"Version": "24.0.7", "GitCommit": "311b9ff"}), port=2375)
    service = scan(port_result(2375, "docker", fingerprint="SF:..."), DockerVersion(), exchange)
    assert (service["name"], service["product"], service["version"]) == (
        "docker",
        "Docker",
        "24.0.7",
    )
    assert (service["method"], service["conf"], service["fingerprint"]) == ("probed", 10, None)
    assert "GitCommit: 311b9ff" in service["scripts"]["docker-version"]


def test_docker_version_chunked_body_and_missing_commit() -> None:
    chunked = FakeExchange(
        docker_api({"Version": "1.2", "GitCommit": "x"}, chunked=True), port=2375
    )
    assert scan(port_result(2375, "docker"), DockerVersion(), chunked)["version"] == "1.2"
    no_commit = FakeExchange(docker_api({"Version": "1.2"}), port=2375)
    assert scan(port_result(2375, "docker"), DockerVersion(), no_commit)["method"] == "table"


def test_docker_rule() -> None:
    rule = DockerVersion().portrule
    assert rule(PortView("127.0.0.1", 2376, "tcp", "open"), RuleContext())
    assert rule(PortView("127.0.0.1", 9, "tcp", "open", name="docker-s"), RuleContext())
    assert not rule(PortView("127.0.0.1", 9, "tcp", "open", name="http"), RuleContext())


def skype(conn: FakeConnection, data: bytes) -> bytes:
    return b"HTTP/1.0 404 Not Found\r\n\r\n" if data.startswith(b"GET ") else b"\x81\x92\xff\x00ab"


def test_skype_v2_from_its_two_answers() -> None:
    exchange = FakeExchange(skype, port=80)
    service = scan(port_result(80, "http"), SkypeV2Version(), exchange)
    assert (service["name"], service["product"], service["method"]) == ("skype2", "Skype", "probed")
    assert [c.sent for c in exchange.connections] == [
        [b"GET / HTTP/1.0\r\n\r\n"],
        [b"random data\r\n\r\n"],
    ]


def test_skype_v2_reads_the_fingerprint_first_and_needs_three_odd_bytes() -> None:
    fp = ServiceFingerprint(4000, "TCP", intensity=7, ssl=False, when=1_700_000_000.0)
    fp.add("GetRequest", b"HTTP/1.0 404 Not Found\r\n\r\n")
    fp.add("HTTPOptions", b"\x80x\x81")  # only two odd bytes
    silent = FakeExchange(lambda c, d: None, port=4000)
    service = scan(port_result(4000, None, fingerprint=fp.text()), SkypeV2Version(), silent)
    assert service["name"] is None and silent.connections == []


def test_skype_rule_wants_unidentified_or_web_ports() -> None:
    rule = SkypeV2Version().portrule
    assert rule(PortView("127.0.0.1", 80, "tcp", "open", name="http", conf=3), RuleContext())
    assert rule(PortView("127.0.0.1", 4000, "tcp", "open", conf=3), RuleContext())
    assert not rule(PortView("127.0.0.1", 4000, "tcp", "open", name="ftp", conf=3), RuleContext())
    assert not rule(PortView("127.0.0.1", 80, "tcp", "open", name="http", conf=10), RuleContext())
