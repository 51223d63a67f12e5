"""vmware-version, ovs-agent-version, mcafee-epo-agent, netbus-version, openlookup-info,
rfc868-time, cccam-version and NSE's http library: fake peers, a Clock for the bounds,
pure parsers (property-tested)."""

from __future__ import annotations

import contextlib
import gzip
import struct
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport

from tests.e2e.script_servers_agents import agent_log, soap
from tests.test_scripts_brokers import port_result, scan
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT, ScriptFailed
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin.cccam_version import CccamVersion, looks_random
from vscand.scripts.builtin.mcafee_epo_agent import USER_AGENT, McafeeEpoAgent
from vscand.scripts.builtin.netbus_version import NetbusVersion
from vscand.scripts.builtin.openlookup_info import OpenlookupInfo
from vscand.scripts.builtin.ovs_agent_version import LIST_METHODS, OvsAgentVersion
from vscand.scripts.builtin.rfc868_time import Rfc868Time, format_timestamp, parse_time
from vscand.scripts.builtin.vmware_version import REQUEST_BODY, VmwareVersion
from vscand.scripts.exchange import _TCPConnection
from vscand.scripts.proto.lua_values import lua_sub, lua_tonumber
from vscand.scripts.proto.nse_http import USER_AGENT as NSE_UA
from vscand.scripts.proto.nse_http import build_request, parse_header, parse_status_line
from vscand.scripts.proto.nson import hello_options, parse_chunk
from vscand.scripts.runner import ScriptRunner
from vscand.scripts.testing import FakeConnection, FakeExchange, Reply

CTX = RuleContext()


def view(number: int, name: str | None = None, **kw: Any) -> PortView:
    return PortView("127.0.0.1", number, kw.pop("protocol", "tcp"), "open", name=name, **kw)


def http_peer(route: Callable[[bytes], bytes | Reply | None]) -> Callable[..., Any]:
    """A peer answering each complete request (headers and Content-Length body)."""

    def respond(conn: FakeConnection, data: bytes) -> bytes | Reply | None:
        request = b"".join(conn.sent)
        head, sep, body = request.partition(b"\r\n\r\n")
        if not sep:
            return None
        for line in head.split(b"\r\n"):
            if line.lower().startswith(b"content-length:") and len(body) < int(line[15:]):
                return None
        return route(request)

    return respond


def ok(body: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> Reply:
    head = b"HTTP/1.1 " + status + b"\r\n" + extra + b"Content-Length: %d\r\n\r\n" % len(body)
    return Reply([head + body], close=True)


# -- NSE's http library -----------------------------------------------------------------


def test_build_request_post() -> None:
    data = build_request("POST", "/sdk", "127.0.0.1:8443", None, b"abc")
    head, _, body = data.partition(b"\r\n\r\n")
    lines = head.split(b"\r\n")
    assert lines[0] == b"POST /sdk HTTP/1.1" and body == b"abc"
    assert set(lines[1:]) == {
        b"Connection: close", b"Host: 127.0.0.1:8443",
        b"User-Agent: " + NSE_UA.encode(), b"Content-Length: 3",
    }  # fmt: skip
    get = build_request("GET", "/", "h", {"User-Agent": "x"})
    assert b"User-Agent: x\r\n" in get and b"Content-Length" not in get


def test_parse_header_as_nse() -> None:
    header = (b"Server: A  b\r\n\tc\r\nX-Y: 1\r\nx-y: 2\r\n: orphan\r\nBad line\r\n"
              b"Empty:\r\n")  # fmt: skip
    fields = parse_header(header)
    # a line without a token adds its words to the previous field (":" included)
    assert fields == {"server": "A b c", "x-y": "1, 2, : orphan", "empty": ""}
    assert parse_header(b"") == {}


def test_parse_status_line() -> None:
    found = parse_status_line(b"HTTP/1.0 501 Unsupported method\r\n")
    assert found is not None and (found.status, found.version) == (501, "1.0")
    for bad in (b"HTTP/1.1 200OK\r\n", b"HTTP/1 200 OK\r\n", b"SSH-2.0\r\n", b"HTTP/1.1 200"):
        assert parse_status_line(bad) is None


def _vmware(route: Callable[[bytes], Reply | bytes | None], **kw: Any) -> dict[str, Any]:
    port = kw.pop("port", 80)
    result = port_result(port, kw.pop("name", "http"), **kw)
    return scan(result, VmwareVersion(), FakeExchange(http_peer(route), port=port))


XML = soap("VMware ESXi", "6.7.0", "8169922", "vmnix-x86", full=True)


def test_http_bodies_by_length_chunks_close_and_gzip() -> None:
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    chunked += b"".join(b"%x\r\n%s\r\n" % (len(XML[i : i + 50]), XML[i : i + 50])
                        for i in range(0, len(XML), 50)) + b"0\r\n\r\n"  # fmt: skip
    # an HTTP/1.1 100 has no body (an HTTP/1.0 one would read to the close, as NSE does)
    closed = b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.0 200 OK\r\nServer: x\r\n\r\n" + XML
    zipped = ok(gzip.compress(XML), extra=b"Content-Encoding: gzip\r\n")
    for answer in (ok(XML), Reply([chunked], close=True), Reply([closed], close=True), zipped):
        service = _vmware(lambda _r, a=answer: a)
        assert service["product"] == "VMware ESXi SOAP API", answer


def test_http_failures_give_no_status() -> None:
    lying = Reply([b"HTTP/1.1 200 OK\r\nContent-Length: 99999\r\n\r\n" + XML], close=True)
    text_length = Reply([b"HTTP/1.1 200 OK\r\nContent-Length: many\r\n\r\n" + XML], close=True)
    bad_chunk = Reply([b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\nzz\r\n"], close=True)
    huge = Reply([b"HTTP/1.1 200 OK\r\n\r\n" + XML + b"x" * (1 << 20)], close=True)
    for answer in (lying, text_length, bad_chunk, huge, Reply([b"garbage\r\n"], close=True)):
        service = _vmware(lambda _r, a=answer: a)
        assert service["product"] is None and service["method"] == "table"
        assert service["scripts"] == {"vmware-version": ""}


def test_http_fractional_length_is_a_lua_error() -> None:
    answer = Reply([b"HTTP/1.1 200 OK\r\nContent-Length: 1.5\r\n\r\n" + XML], close=True)
    service = _vmware(lambda _r: answer)
    assert service["scripts"] == {"vmware-version": SCRIPT_ERROR_OUTPUT}


def test_tryssl_falls_back_to_tls_on_a_tls_port() -> None:
    def respond(conn: FakeConnection, data: bytes) -> Reply | None:
        return ok(XML) if conn.tls else Reply([], close=True)

    exchange = FakeExchange(respond, port=8443, tls_ok=True)
    service = scan(port_result(8443, "https-alt", conf=10, method="probed"), VmwareVersion(),
                   exchange)  # fmt: skip
    assert service["product"] == "VMware ESXi SOAP API"
    assert exchange.attempts == [(8443, "tcp", False), (8443, "tcp", True)]
    assert b"Host: 127.0.0.1:8443\r\n" in exchange.connections[1].sent[0]


def test_get_follows_redirects_as_nse() -> None:
    def route(request: bytes) -> Reply:
        path = request.split(b" ")[1]
        if path == b"/":
            return ok(b"", b"302 Found", b"Location: /a\r\n")
        if path.startswith(b"/a"):
            return ok(b"", b"301 Moved", b"Location: /b%s\r\n" % path[1:])
        return ok(b"<?xml x?><naLog><ComputerName>H</ComputerName></naLog>")

    exchange = FakeExchange(http_peer(route), port=8081)
    service = scan(port_result(8081, "http"), McafeeEpoAgent(), exchange)
    assert service["hostname"] == "H"
    assert [c.sent[0].split(b" ")[1] for c in exchange.connections] == [b"/", b"/a", b"/ba"]

    # back to "/", another host, another port: not followed
    for location in (b"/", b"http://elsewhere/x", b"http://127.0.0.1:81/x"):
        hop = FakeExchange(http_peer(lambda _r, loc=location: ok(b"", b"302 F",
                                                                 b"Location: " + loc + b"\r\n")),
                           port=8081)  # fmt: skip
        scan(port_result(8081, "http"), McafeeEpoAgent(), hop)
        assert len(hop.connections) == 1, location


def test_get_stops_after_five_redirects() -> None:
    exchange = FakeExchange(
        http_peer(lambda r: ok(b"", b"302 F", b"Location: /x" + r.split(b" ")[1] + b"\r\n")),
        port=8081,
    )
    scan(port_result(8081, "http"), McafeeEpoAgent(), exchange)
    assert len(exchange.connections) == 6


@given(st.binary(max_size=300))
def test_parse_header_total(data: bytes) -> None:
    parse_header(data + b"\r\n")
    parse_status_line(data)


@given(st.binary(max_size=40))
def test_lua_tonumber_total(text: bytes) -> None:
    lua_tonumber(text)


def test_lua_tonumber_cases() -> None:
    cases = {b" 12 ": 12, b"0x10": 16, b"1e2": 100.0, b"-3": -3, b".5": 0.5, b"0x": None,
             b"12a": None, b"": None, b"inf": None, b"0x1p4": 16.0, b"9" * 20: 1e20}  # fmt: skip
    for text, want in cases.items():
        assert lua_tonumber(text) == want, text
        assert type(lua_tonumber(text)) is type(want), text


@given(st.binary(max_size=12), st.integers(-20, 20), st.integers(-20, 20))
def test_lua_sub(text: bytes, i: int, j: int) -> None:
    n = len(text)
    start = i if i > 0 else (1 if i == 0 or -i > n else n + i + 1)
    end = min(j, n) if j >= 0 else (0 if -j > n else n + j + 1)
    assert lua_sub(text, i, j) == (text[start - 1 : end] if start <= end else b"")


# -- vmware-version ---------------------------------------------------------------------


def test_vmware_rule() -> None:
    script = VmwareVersion()
    assert script.portrule(view(443), CTX) and script.portrule(view(9, "http"), CTX)
    assert not script.portrule(view(9443), CTX)
    assert not script.portrule(view(443), RuleContext(intensity=6))
    assert not script.portrule(view(443), RuleContext(excluded=lambda _p, _q: True))


def test_vmware_names_an_unnamed_http_port() -> None:
    seen: list[bytes] = []
    service = _vmware(lambda r: (seen.append(r), ok(XML))[1])
    assert (service["product"], service["version"], service["cpe"]) == (
        "VMware ESXi SOAP API", "6.7.0", ["cpe:/o:vmware:ESXi:6.7.0"],
    )  # fmt: skip
    assert (service["method"], service["conf"]) == ("probed", 10)
    assert seen[0].startswith(b"POST /sdk HTTP/1.1\r\n") and seen[0].endswith(REQUEST_BODY)
    assert service["scripts"]["vmware-version"] == (
        "\n  Server version: VMware ESXi 6.7.0\n  Build: 8169922\n  Locale version: INTL 000"
        "\n  OS type: vmnix-x86\n  Product Line ID: embeddedEsx"
    )
    elements = service["script_results"][0]["elements"]
    assert [e["key"] for e in elements] == [
        "Server version", "Build", "Locale version", "OS type", "Product Line ID",
    ]  # fmt: skip


def test_vmware_keeps_a_product_and_prints_lua_nil() -> None:
    xml = b"<about><name>vmware vCenter</name><localeBuild>9</localeBuild></about>"
    service = _vmware(lambda _r: ok(xml), product="Apache", cpe=["cpe:/a:x"])
    assert (service["product"], service["version"]) == ("Apache", None)
    assert service["cpe"] == ["cpe:/a:x", "cpe:/o:vmware:vCenter:nil"]
    assert service["scripts"]["vmware-version"] == (
        "\n  Server version: vmware vCenter nil\n  Locale version: nil 9"
    )


def test_vmware_needs_200_and_a_name() -> None:
    for answer in (ok(XML, b"500 Internal"), ok(b"<about><version>1</version></about>")):
        service = _vmware(lambda _r, a=answer: a)
        assert service["product"] is None and "script_results" not in service


# -- ovs-agent-version ------------------------------------------------------------------

SERVER = b"Server: BaseHTTP/0.3 Python/2.5.2\r\n"


def _ovs(route: Callable[[bytes], Reply | None]) -> tuple[dict[str, Any], FakeExchange]:
    exchange = FakeExchange(http_peer(route), port=8899)
    return scan(port_result(8899, "ospf-lite"), OvsAgentVersion(), exchange), exchange


def test_ovs_versions() -> None:
    doc = b"<title>Python: OVSAgentServer Document</title>"
    service, _ = _ovs(lambda r: ok(doc, extra=SERVER))
    assert (service["name"], service["version"]) == ("ovs-agent", "2.2")
    assert service["extrainfo"] == "BaseHTTP 0.3; Python SimpleXMLRPCServer; Python 2.5.2"
    for message, version in ((b"Unauthorized HTTP Access Attempt", "3.0"),
                             (b"Unauthorized access attempt", "3.0.1")):  # fmt: skip
        body = b"<p>Message: " + message + b" from ('10.0.0.1', 4242)!.</p>"

        def route(r: bytes, body: bytes = body) -> Reply:
            if r.startswith(b"GET"):
                return ok(b"no", b"501 Unsupported method ('GET')")
            return ok(body, b"403 Forbidden", SERVER)

        service, exchange = _ovs(route)
        assert (service["product"], service["version"]) == ("Oracle Virtual Server Agent", version)
        post = exchange.connections[1].sent[0]
        assert b"Content-Type: text/xml\r\n" in post and post.endswith(LIST_METHODS)


def test_ovs_changes_nothing_otherwise() -> None:
    def denied_otherwise(r: bytes) -> Reply:
        return ok(b"x", b"501 No") if r.startswith(b"GET") else ok(b"?", b"403 F")

    for route in (lambda r: ok(b"x", b"404 Not Found"), denied_otherwise):
        service, _ = _ovs(route)
        assert service["name"] == "ospf-lite" and service["method"] == "table"


# -- mcafee-epo-agent -------------------------------------------------------------------


def test_mcafee_rule() -> None:
    script = McafeeEpoAgent()
    assert script.portrule(view(8081), CTX)
    assert script.portrule(view(80, product="Network Associates ePolicy Orchestrator"), CTX)
    assert script.portrule(view(80, product="ePO Agent"), CTX)
    assert not script.portrule(view(8081, product="Apache httpd"), CTX)
    assert not script.portrule(view(8081, protocol="udp"), CTX)
    assert not script.portrule(view(8081), RuleContext(intensity=6))


def test_mcafee_reads_the_agent_log() -> None:
    exchange = FakeExchange(http_peer(lambda r: ok(agent_log("PC1"))), port=8081)
    service = scan(port_result(8081, "blackice-icecap", hostname="old"), McafeeEpoAgent(),
                   exchange)  # fmt: skip
    assert (service["name"], service["product"], service["version"], service["hostname"]) == (
        "http", "McAfee ePolicy Orchestrator Agent", "4.5.0.1852", "PC1",
    )  # fmt: skip
    assert service["extrainfo"].startswith("ePOServerName: EPOSERVER, AgentGuid: D2E1")
    assert f"User-Agent: {USER_AGENT}\r\n".encode() in exchange.connections[0].sent[0]
    assert service["scripts"] == {"mcafee-epo-agent": ""}


def test_mcafee_missing_elements_and_other_pages() -> None:
    bare = b'<?xml version="1.0"?>\n <naLog></naLog>'
    service = scan(port_result(8081, "http", hostname="old"), McafeeEpoAgent(),
                   FakeExchange(http_peer(lambda r: ok(bare)), port=8081))  # fmt: skip
    assert service["hostname"] is None and service["extrainfo"] == "ePOServerName: , AgentGuid: "
    for body in (b"<html>", b" <?xml ?><naLog>", b"<?xml ?><other/><naLog>"):
        service = scan(port_result(8081, "http"), McafeeEpoAgent(),
                       FakeExchange(http_peer(lambda r, b=body: ok(b)), port=8081))  # fmt: skip
        assert service["product"] is None, body


# -- a peer on a Clock, for the bounds --------------------------------------------------


class _Wire(StringTransport):
    def __init__(self, conn: _TCPConnection, respond: Callable[[bytes], bytes | None]) -> None:
        super().__init__()
        self._conn, self._respond = conn, respond

    def write(self, data: bytes) -> None:
        super().write(data)
        answer = self._respond(data)
        if answer:
            self._conn.dataReceived(answer)

    def abortConnection(self) -> None:
        self.loseConnection()


class ClockExchange:
    """Real connections (``_TCPConnection``) on a Clock: a greeting, answers, then silence."""

    def __init__(self, clock: Clock, greet: Callable[[int], bytes] = lambda _n: b"",
                 respond: Callable[[bytes], bytes | None] = lambda _d: None,
                 close: bool = False, port: int = 1, protocol: str = "tcp") -> None:  # fmt: skip
        self.clock, self.greet, self.respond, self.close = clock, greet, respond, close
        self.address, self.port, self.protocol = "127.0.0.1", port, protocol
        self.timeouts: list[float | None] = []
        self.sent: list[bytes] = []

    async def connect(
        self, *, port: int | None = None, protocol: str | None = None, tls: bool = False,
        timeout: float | None = None,
    ) -> _TCPConnection:  # fmt: skip
        self.timeouts.append(timeout)
        conn = _TCPConnection(self.clock, 1 << 20)

        def respond(data: bytes) -> bytes | None:
            self.sent.append(data)
            return self.respond(data)

        conn.makeConnection(_Wire(conn, respond))
        greeting = self.greet(len(self.timeouts))
        if greeting:
            conn.dataReceived(greeting)
        if self.close:
            conn.connectionLost(None)
        return conn


def run_on_clock(script: Any, result: dict[str, Any], exchange: ClockExchange,
                 bound: float, waits: bool = True) -> dict[str, Any]:  # fmt: skip
    """The action is done at ``bound`` seconds (and, if it ``waits``, not before)."""
    runner = ScriptRunner(exchange.clock, [script], exchange_factory=lambda v: exchange)
    done = defer.Deferred.fromCoroutine(runner.run_host([result], CTX))
    exchange.clock.advance(bound - 0.01)
    assert done.called is not waits
    exchange.clock.advance(0.01)
    assert done.called
    service: dict[str, Any] = result["service"]
    return service


# -- netbus-version ---------------------------------------------------------------------


def test_netbus_rule() -> None:
    assert NetbusVersion().portrule(view(1, "netbus"), CTX)
    assert not NetbusVersion().portrule(view(12345), CTX)


def test_netbuster_closing_after_a_banner_without_cr() -> None:
    exchange = ClockExchange(Clock(), lambda _n: b"NetBus 1.70", close=True)
    service = scan(port_result(12345, "netbus"), NetbusVersion(), exchange, exchange.clock)
    assert (service["product"], service["extrainfo"], service["version"]) == (
        "NetBuster", "honeypot", None,
    )  # fmt: skip
    assert exchange.timeouts == [5.0]


def test_netbus_answering_is_left_alone() -> None:
    exchange = ClockExchange(Clock(), lambda _n: b"NetBus 1.70\r", lambda d: b"Access;1\r")
    service = scan(port_result(12346, "netbus", product="NetBus trojan"), NetbusVersion(),
                   exchange, exchange.clock)  # fmt: skip
    assert service["product"] == "NetBus trojan" and exchange.sent == [b"Password;0;\r"]


def test_netbus_silent_after_the_password_is_netbuster_after_5_s() -> None:
    exchange = ClockExchange(Clock(), lambda _n: b"NetBus 1.70\r")
    service = run_on_clock(NetbusVersion(), port_result(12347, "netbus"), exchange, 5.0)
    assert service["product"] == "NetBuster"


def test_netbus_leftover_bytes_or_no_banner() -> None:
    exchange = ClockExchange(Clock(), lambda _n: b"NetBus 1.70\rxy")
    service = run_on_clock(NetbusVersion(), port_result(12347, "netbus"), exchange, 5.0)
    assert service["product"] is None  # the leftover "xy" is not nil
    for greet, waits in ((b"", True), (b"SSH-2.0-x\r", False), (b"\x00" * 4000, True)):
        exchange = ClockExchange(Clock(), lambda _n, g=greet: g)
        service = run_on_clock(NetbusVersion(), port_result(1, "netbus"), exchange, 5.0, waits)
        assert service["product"] is None and exchange.sent == []


# -- openlookup-info --------------------------------------------------------------------


def netstring(data: bytes) -> bytes:
    return b"%d:%s," % (len(data), data)


def nson_dict(items: list[tuple[bytes, bytes]]) -> bytes:
    return b"d" + b"".join(netstring(b"s" + k) + netstring(v) for k, v in items)


HELLO = netstring(nson_dict([(b"method", b"shello"), (b"options", nson_dict(
    [(b"http_port", b"i5851"), (b"version", b"s2.7")]))]))  # fmt: skip


def _openlookup(banner: bytes, **kw: Any) -> dict[str, Any]:
    exchange = FakeExchange(lambda c, d: None, port=5850)
    exchange.connect = _greeting(exchange, banner)  # type: ignore[method-assign]
    return scan(port_result(5850, kw.pop("name", "unknown"), **kw), OpenlookupInfo(), exchange)


def _greeting(exchange: FakeExchange, banner: bytes) -> Any:
    original = exchange.connect

    async def connect(**kw: Any) -> FakeConnection:
        conn = await original(**kw)
        conn.pending.append(banner)
        return conn

    return connect


def test_openlookup_names_the_port_with_the_raw_version() -> None:
    service = _openlookup(HELLO)
    assert (service["name"], service["version"], service["method"]) == (
        "openlookup", "s2.7", "probed",
    )  # fmt: skip
    assert service["scripts"] == {"openlookup-info": ""}


def test_openlookup_without_options_or_version() -> None:
    bare = netstring(nson_dict([(b"method", b"shello")]))
    service = _openlookup(bare, version="9")
    assert (service["name"], service["version"]) == ("openlookup", "9")
    for banner in (netstring(nson_dict([(b"method", b"sbye")])), b"garbage", b"5:dabc"):
        assert _openlookup(banner)["name"] == "unknown", banner


def test_openlookup_a_key_that_is_no_string_is_a_lua_error() -> None:
    banner = netstring(b"d" + netstring(b"i1") + netstring(b"s"))
    assert _openlookup(banner)["scripts"] == {"openlookup-info": SCRIPT_ERROR_OUTPUT}


def test_parse_chunk_lua_lengths() -> None:
    assert parse_chunk(b"3:abc,rest") == (b"abc", b"rest")
    assert parse_chunk(b"0x3:abc,r") == (b"abc", b"r")
    assert parse_chunk(b"-1:abc") == (b"abc", b"")  # string.sub(s, 1, -1): all of it
    assert parse_chunk(b"9:abc") == (None, b"9:abc")
    assert parse_chunk(b"x:abc") == (None, b"x:abc")
    with contextlib.suppress(ScriptFailed):
        parse_chunk(b"-1.5:abc")
        raise AssertionError("a fractional length is a Lua error")


@given(st.binary(max_size=200))
def test_hello_options_total(banner: bytes) -> None:
    with contextlib.suppress(ScriptFailed):
        hello_options(banner)


@given(st.integers(1, len(HELLO) - 1))
def test_hello_truncated(cut: int) -> None:
    with contextlib.suppress(ScriptFailed):
        options = hello_options(HELLO[:cut])
        assert options is None or b"version" not in options or cut > len(HELLO) - 12


# -- rfc868-time ------------------------------------------------------------------------


def test_rfc868_parse_and_format() -> None:
    assert parse_time(struct.pack(">I", 2208988800)) == (0, "32 bits")
    assert parse_time(struct.pack(">II", 2208988800 + 60, 7)) == (60, "64 bits")
    assert parse_time(b"\x00" * 5) is None and parse_time(b"") is None
    assert format_timestamp(0) == "1970-01-01T00:00:00"
    assert format_timestamp(-2208988800) == "1900-01-01T00:00:00"
    assert format_timestamp(0xFFFFFFFF - 2208988800) == "2036-02-07T06:28:15"


def test_rfc868_sets_extrainfo_only_on_a_time_port() -> None:
    stamp = struct.pack(">I", 946684800 + 2208988800)
    exchange = FakeExchange(lambda c, d: Reply([stamp], close=True), port=37)
    service = scan(port_result(37, "time"), Rfc868Time(), exchange)
    assert (service["extrainfo"], service["method"]) == ("32 bits", "probed")
    assert service["scripts"] == {"rfc868-time": "2000-01-01T00:00:00"}
    assert exchange.connections[0].sent == [b""]
    service = scan(port_result(37, "daytime"), Rfc868Time(), exchange)
    assert (service["extrainfo"], service["method"]) == (None, "table")
    assert service["scripts"] == {"rfc868-time": "2000-01-01T00:00:00"}


def test_rfc868_over_udp_sends_an_empty_datagram() -> None:
    stamp = struct.pack(">II", 3_900_000_000, 0)
    exchange = FakeExchange(lambda c, d: [stamp] and Reply([stamp]), port=37, protocol="udp")
    service = scan(port_result(37, "time", protocol="udp"), Rfc868Time(), exchange)
    assert service["extrainfo"] == "64 bits" and exchange.connections[0].sent == [b""]


def test_rfc868_odd_answers_end_within_the_request_timeout() -> None:
    for greet in (b"\x01\x02", b"\x00" * 5, b"\xff" * 100000, b""):
        exchange = ClockExchange(Clock(), lambda _n, g=greet: g, port=37)
        waits = len(greet) < 4  # at least 4 bytes end the read at once
        service = run_on_clock(Rfc868Time(), port_result(37, "time"), exchange, 8.0, waits)
        assert service["method"] == "table" and service["scripts"] == {"rfc868-time": ""}


# -- cccam-version ----------------------------------------------------------------------


#: answers of nmap 7.93's own formulas.looksRandom (a prerule script, run once)
LOOKS_RANDOM = {
    "b70a14ee1e15d7aa94bd810ec06f4cb7": True,
    "844ecc08164e2eab27634a9adee1afa6": True,
    "844b69c4d54cc264bc2dadb6bb70f53b": True,
    "7985b0c8b858e77f57c6d403b315ade0": True,
    "29f2394eb92d0ded9247b8d7188ebdda": True,
    "0520220e0f12bb847b57ad4bb3dfe908": True,
    "ec31682fde561917952ff78a7a8adeff": False,
    "8cf3ebbdacddfddd6f13673f945f523c": False,
    "240a42374fa81d24508638282a416c46": False,
    "13c463c68a23bc633637b613e63e0025": False,
    "40f4a39fd00e0f49e288f0320331cdc7": False,
    "bf92ea14193019f161819d96d9b1b1e8": False,
    "00102030405060708090a0b0c0d0e0f0": False,
    "41414141414141414141414141414141": False,
    "61626364656667686162636465666768": False,
    "000102030405060708090a0b0c0d0e0f": False,
}


def test_looks_random_as_formulas_lua() -> None:
    for data, want in LOOKS_RANDOM.items():
        assert looks_random(bytes.fromhex(data)) is want, data


def test_cccam_two_different_random_greetings() -> None:
    greetings = [bytes.fromhex("8f14e45fceea167a5a36dedd4bea2543"), bytes(range(0, 256, 17))]
    exchange = ClockExchange(Clock(), lambda n: greetings[n - 1], close=True, port=12000)
    service = scan(port_result(12000, "cce4x"), CccamVersion(), exchange, exchange.clock)
    assert (service["name"], service["version"], service["method"]) == (
        "cccam", "CCcam DVR card sharing system", "probed",
    )  # fmt: skip
    assert exchange.timeouts == [30.0, 30.0]


def test_cccam_rejects_constant_short_or_plain_greetings() -> None:
    same = bytes.fromhex("8f14e45fceea167a5a36dedd4bea2543")
    for greet in (lambda n: same, lambda n: same[: 15 + n % 2], lambda n: b"A" * 16):
        exchange = ClockExchange(Clock(), greet, close=True, port=12000)
        service = scan(port_result(12000, "cce4x"), CccamVersion(), exchange, exchange.clock)
        assert service["name"] == "cce4x"


def test_cccam_silent_port_ends_after_30_s() -> None:
    exchange = ClockExchange(Clock(), port=12000)
    service = run_on_clock(CccamVersion(), port_result(12000, "cce4x"), exchange, 30.0)
    assert service["name"] == "cce4x" and len(exchange.timeouts) == 1


@settings(max_examples=200)
@given(st.binary(min_size=16, max_size=16))
def test_looks_random_total(data: bytes) -> None:
    looks_random(data)
