"""http-server-header with in-memory exchanges (what it sends, what it concludes)."""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.task import Clock

from vscand.scan.fingerprint import ServiceFingerprint
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin.http_server_header import HttpServerHeader, server_header
from vscand.scripts.runner import ScriptRunner
from vscand.scripts.testing import FakeConnection, FakeExchange
from vscand.service import empty_service

OK = b"HTTP/1.0 200 OK\r\nServer: ZzzServer/1.2\r\nContent-Length: 2\r\n\r\nok"


def port_result(port: int, name: str | None, **service: Any) -> dict[str, Any]:
    svc = empty_service(name, method=service.pop("method", "table"), conf=service.pop("conf", 3))
    svc.update(service)
    return {
        "host": "127.0.0.1",
        "hostname": None,
        "port": port,
        "protocol": "tcp",
        "state": "open",
        "service": svc,
    }


def scan(result: dict[str, Any], exchange: FakeExchange, intensity: int = 7) -> dict[str, Any]:
    clock = Clock()
    runner = ScriptRunner(clock, [HttpServerHeader()], exchange_factory=lambda view: exchange)
    d = defer.Deferred.fromCoroutine(runner.run_host([result], RuleContext(intensity=intensity)))
    assert d.called
    assert not clock.getDelayedCalls()
    service: dict[str, Any] = result["service"]
    return service


def http(conn: FakeConnection, data: bytes) -> bytes | None:
    return OK if data.startswith(b"GET ") and not conn.tls else None


def test_unidentified_http_port_gets_the_server_header_as_product() -> None:
    fp = ServiceFingerprint(7080, "TCP", intensity=7, ssl=False, when=1_700_000_000.0)
    fp.add("GetRequest", OK)
    fp.add("FourOhFourRequest", OK)
    exchange = FakeExchange(http, port=7080)
    service = scan(port_result(7080, "empowerid", fingerprint=fp.text()), exchange)
    assert (service["name"], service["product"], service["method"], service["conf"]) == (
        "empowerid",
        "ZzzServer/1.2",
        "probed",
        10,
    )
    assert service["fingerprint"] == fp.text()  # soft match keeps it, as nmap 7.93 does
    assert service["scripts"] == {"http-server-header": "ZzzServer/1.2"}
    # responses came from the fingerprint; only the HTTP/1.1 request was sent
    assert [c.sent for c in exchange.connections] == [
        [b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\n\r\n"]
    ]


def test_without_fingerprint_it_asks_itself_and_an_empty_header_shows_as_empty() -> None:
    def empty_server(conn: FakeConnection, data: bytes) -> bytes:
        return b"HTTP/1.1 404 Not Found\r\nServer:\r\n\r\n"

    service = scan(port_result(8080, "http-proxy"), FakeExchange(empty_server, port=8080))
    assert service["product"] is None and service["method"] == "probed"
    assert service["scripts"] == {"http-server-header": "<empty>"}
    # NSE returns the list too: -oX <elem></elem> (the value, not its printed form)
    assert service["script_results"] == [
        {"id": "http-server-header", "output": "<empty>", "elements": [{"key": None, "value": ""}]}
    ]


def test_identified_product_is_kept_and_other_servers_are_listed() -> None:
    service = scan(
        port_result(80, "http", method="probed", conf=10, product="Apache httpd", version="2.4"),
        FakeExchange(http, port=80),
    )
    assert (service["product"], service["version"], service["conf"]) == ("Apache httpd", "2.4", 10)
    assert service["scripts"] == {"http-server-header": "ZzzServer/1.2"}


def test_rule_needs_a_likely_http_port_and_intensity_7() -> None:
    rule = HttpServerHeader().portrule
    assert rule(PortView("127.0.0.1", 631, "tcp", "open"), RuleContext())
    assert rule(PortView("127.0.0.1", 5000, "tcp", "open", name="http"), RuleContext())
    assert not rule(PortView("127.0.0.1", 5000, "tcp", "open", name="ssh"), RuleContext())
    assert not rule(PortView("127.0.0.1", 80, "tcp", "open"), RuleContext(intensity=6))


def test_tls_is_tried_first_on_likely_ssl_ports_then_plain() -> None:
    exchange = FakeExchange(http, port=443, tls_ok=False)
    service = scan(port_result(443, "https"), exchange)
    assert service["product"] == "ZzzServer/1.2"
    assert [c.tls for c in exchange.connections] == [
        False,
        False,
    ]  # TLS refused twice, plain both times


def test_not_http_and_no_answer_change_nothing() -> None:
    service = scan(port_result(80, "http"), FakeExchange(lambda c, d: b"SSH-2.0-x\r\n", port=80))
    assert (service["method"], service["scripts"]) == ("table", {"http-server-header": ""})
    silent = port_result(80, "http")
    assert scan(silent, FakeExchange(lambda c, d: None, port=80))["scripts"] == {
        "http-server-header": ""
    }


def test_server_header_parsing() -> None:
    assert server_header(b"HTTP/1.1 200 OK\r\nsErVeR:\t nginx/1.2\r\nX: y\r\n") == "nginx/1.2"
    assert server_header(b"HTTP/1.1 200 OK\nServer: a b\nX: y\n") == "a b"
    assert server_header(b"HTTP/1.1 200 OK\r\n\r\n") is None
