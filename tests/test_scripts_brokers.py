"""amqp-info, mqtt-subscribe and xmpp-info with in-memory peers, and their pure code."""

from __future__ import annotations

import contextlib
import random
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.e2e.script_servers_brokers_vpn import connection_start
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin.amqp_info import (
    CLIENT_HEADER,
    AmqpError,
    AmqpInfo,
    NeedMore,
    parse_connection_start,
)
from vscand.scripts.builtin.mqtt_subscribe import (
    MqttError,
    MqttSubscribe,
    build_connect,
    build_subscribe,
    encode_length,
    parse_length,
    parse_packet,
)
from vscand.scripts.builtin.xmpp_info import (
    StreamScan,
    XmppInfo,
    identify_server,
    parse_tag,
    tag_end,
)
from vscand.scripts.runner import ScriptRunner
from vscand.scripts.testing import FakeConnection, FakeExchange, Reply
from vscand.service import empty_service


def port_result(
    port: int, name: str | None, protocol: str = "tcp", **service: Any
) -> dict[str, Any]:
    svc = empty_service(name, method=service.pop("method", "table"), conf=service.pop("conf", 3))
    svc.update(service)
    return {"host": "127.0.0.1", "hostname": None, "port": port, "protocol": protocol,
            "state": service.pop("state", "open"), "service": svc}  # fmt: skip


def scan(
    result: dict[str, Any], script: Any, exchange: Any, clock: Clock | None = None
) -> dict[str, Any]:
    clock = clock or Clock()
    runner = ScriptRunner(clock, [script], exchange_factory=lambda view: exchange)
    done = defer.Deferred.fromCoroutine(runner.run_host([result], RuleContext()))
    assert done.called
    assert not clock.getDelayedCalls()
    service: dict[str, Any] = result["service"]
    return service


# -- AMQP --------------------------------------------------------------------


def amqp_peer(frame: bytes, chunk: int = 0) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> Reply | None:
        if data != CLIENT_HEADER:
            return None
        if chunk:
            return Reply([frame[i : i + chunk] for i in range(0, len(frame), chunk)], close=True)
        return Reply([frame], close=True)

    return respond


def test_amqp_info_reads_connection_start_in_pieces() -> None:
    exchange = FakeExchange(amqp_peer(connection_start(), chunk=7), port=5672)
    service = scan(port_result(5672, "amqp", fingerprint="SF:x"), AmqpInfo(), exchange)
    assert (service["name"], service["product"], service["version"], service["extrainfo"]) == (
        "amqp", "RabbitMQ", "3.10.8", "0-9",
    )  # fmt: skip
    assert (service["method"], service["conf"], service["fingerprint"]) == ("probed", 10, None)
    assert "publisher_confirms: YES" in service["scripts"]["amqp-info"]
    assert [c.sent for c in exchange.connections] == [[CLIENT_HEADER]]


def test_amqp_info_version_negotiation_changes_nothing() -> None:
    exchange = FakeExchange(amqp_peer(b"AMQP\x00\x00\x09\x01"), port=5672)
    service = scan(port_result(5672, "amqp", product="x"), AmqpInfo(), exchange)
    assert (service["product"], service["method"]) == ("x", "table")


def _frame(version: int, table: bytes, tail: bytes = b"\0\0\0\0\0\0\0\0") -> bytes:
    payload = struct.pack(">IH", 0x000A000A, version) + struct.pack(">I", len(table)) + table + tail
    return struct.pack(">BHI", 1, 0, len(payload)) + payload


def test_amqp_unknown_value_type_is_not_skipped_like_nmap() -> None:
    # 'I' (a 32-bit int) is not decoded: its four bytes are read as the next key
    table = b"\x01aI" + b"\x00\x00\x00\x07" + b"\x07product" + b"S\x00\x00\x00\x01Q"
    # after "a" the decoder reads key length 0, key "", type 0 (ignored), key length 0, key "",
    # type 7 (ignored), then "product": S "Q"
    start = parse_connection_start(_frame(0x0009, table))
    assert start.product == "Q"
    assert start.protocol == "0-9"


def test_amqp_versions_and_errors() -> None:
    assert parse_connection_start(_frame(0x0800, b"")).protocol == "0-8"
    for bad in (_frame(0x0091, b""), b"\x02" + _frame(9, b"")[1:]):
        try:
            parse_connection_start(bad)
        except AmqpError:
            continue
        raise AssertionError(bad)


@given(st.binary(max_size=200))
def test_amqp_parser_total(data: bytes) -> None:
    """Any bytes: a result, NeedMore, or AmqpError, never another exception."""
    with contextlib.suppress(NeedMore, AmqpError):
        parse_connection_start(data)


@given(st.integers(min_value=1, max_value=len(connection_start()) - 2))
def test_amqp_any_prefix_needs_more(cut: int) -> None:
    frame = connection_start()
    try:
        parse_connection_start(frame[:cut])
    except NeedMore:
        return
    # a prefix may already hold the whole Connection.Start (the frame end byte is not read)
    assert cut >= len(frame) - 1


# -- MQTT --------------------------------------------------------------------


@given(st.integers(min_value=0, max_value=0x0FFFFFFF))
def test_mqtt_length_round_trip(number: int) -> None:
    raw = encode_length(number)
    assert 1 <= len(raw) <= 4
    assert parse_length(raw) == (len(raw), number)


@given(st.binary(max_size=40))
def test_mqtt_parse_total(data: bytes) -> None:
    with contextlib.suppress(MqttError):
        parse_packet(data)


def publish(topic: bytes, payload: bytes) -> bytes:
    body = struct.pack(">H", len(topic)) + topic + payload
    return b"\x31" + encode_length(len(body)) + body


def broker(
    messages: list[bytes], *, connack: bytes = b"\x20\x02\x00\x00", granted: bytes = b"\x00\x00"
) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> Reply | None:
        if data[0] == 0x10:
            return Reply([connack])
        if data[0] == 0x82:
            packet_id = data[2:4]
            return Reply([b"\x90\x04" + packet_id + granted, b"".join(messages)])
        return None

    return respond


def test_mqtt_subscribe_names_the_port_after_the_broker_version() -> None:
    clock = Clock()
    messages = [publish(b"$SYS/broker/version", b"mosquitto version 2.0.11"),
                publish(b"$SYS/broker/uptime", b"5 seconds")]  # fmt: skip
    exchange = FakeExchange(broker(messages), port=1883)
    script = MqttSubscribe(now=clock.seconds, rng=random.Random(1))
    service = scan(port_result(1883, "mqtt"), script, exchange, clock)
    assert (service["name"], service["method"], service["conf"]) == (
        "mosquitto version 2.0.11", "probed", 10,
    )  # fmt: skip
    sent = exchange.connections[0].sent
    assert sent[0].startswith(b"\x10\x20\x00\x04MQTT\x04\x00\x00\x1e\x00\x14nmap")
    assert sent[1] == build_subscribe(2, ("$SYS/#", "#"))
    assert sent[-1] == b"\xe0\x00"


def test_mqtt_subscribe_refused_or_rejected_changes_nothing() -> None:
    for peer in (broker([], connack=b"\x20\x02\x00\x05"), broker([], granted=b"\x80\x80"),
                 broker([publish(b"other", b"x")])):  # fmt: skip
        exchange = FakeExchange(peer, port=1883)
        service = scan(port_result(1883, "mqtt"), MqttSubscribe(now=Clock().seconds), exchange)
        assert (service["name"], service["method"]) == ("mqtt", "table")


def test_mqtt_connect_packet() -> None:
    packet = build_connect("nmapABCDEFGHIJKLMNOP")
    assert packet == b"\x10\x20\x00\x04MQTT\x04\x00\x00\x1e\x00\x14nmapABCDEFGHIJKLMNOP"


# -- XMPP --------------------------------------------------------------------


def test_parse_tag_like_nmap() -> None:
    tag = parse_tag("<stream:stream xmlns='jabber:client' id='abc' version=\"1.0\">")
    assert tag is not None and tag.name == "stream:stream" and tag.start and not tag.finish
    assert tag.attrs == {"xmlns": "jabber:client", "id": "abc", "version": "1.0"}
    end = parse_tag("PLAIN</mechanism>")
    assert end is not None and end.contents == "PLAIN" and end.finish and not end.start
    empty = parse_tag("<c node='x'/>")
    assert empty is not None and empty.start and empty.finish
    assert parse_tag("no tag here") is None


@given(st.binary(max_size=600))
def test_tag_end_is_first_gt_or_256(buffer: bytes) -> None:
    end = tag_end(buffer)
    if b">" in buffer:
        assert end == buffer.index(b">") + 1
    elif len(buffer) >= 256:
        assert end == 256
    else:
        assert end is None


def test_identify_server() -> None:
    uuid = "3d1e853f-910d-4b08-baf8-5cbf1fec3088"
    assert identify_server(uuid, "") == "prosody"
    assert identify_server(uuid, uuid) is None
    assert identify_server("123456789", None) == "jabberd"
    assert identify_server("0000000a", "0000000b") == "Citadel"
    # Citadel's ids are close; else the next entry that matches (Openfire: 6-8 hex digits)
    assert identify_server("0000000a", "000000ff") == "Openfire"
    assert identify_server("12345678", "1234567890") == "ejabberd"


FEATURES = (
    "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
    "xmlns:stream='http://etherx.jabber.org/streams' {id} from='h' version='1.0'>"
    "<stream:features><starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'><required/></starttls>"
    "<mechanisms xmlns='urn:ietf:params:xml:ns:xmpp-sasl'><mechanism>PLAIN</mechanism></mechanisms>"
    "{caps}</stream:features>"
)


class StartTLSConnection(FakeConnection):
    async def start_tls(self, timeout: float) -> bool:
        self.tls = True
        return True


class StartTLSExchange(FakeExchange):
    async def connect(self, **kwargs: Any) -> FakeConnection:
        conn = await super().connect(**kwargs)
        upgraded = StartTLSConnection(conn.port, conn.protocol, conn.tls, conn.respond)
        self.connections[-1] = upgraded
        return upgraded


def xmpp_server(ids: dict[str, str], caps: str = "", caps_after_tls: str = "") -> Any:
    def respond(conn: FakeConnection, data: bytes) -> Reply | None:
        text = data.decode()
        if text.endswith("<starttls xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"):
            return Reply([b"<proceed xmlns='urn:ietf:params:xml:ns:xmpp-tls'/>"])
        to = text.split("to='", 1)[1].split("'", 1)[0]
        extra = caps_after_tls if conn.tls else caps
        return Reply(
            [FEATURES.format(id=f"id='{ids[to]}'" if to in ids else "", caps=extra).encode()]
        )

    return respond


def test_xmpp_info_jabberd_from_stream_ids() -> None:
    # an empty id='' is no attribute for Nmap's parser: the named stream has no id
    exchange = StartTLSExchange(xmpp_server({".": "123456789", "": ""}), port=5222)
    service = scan(port_result(5222, "jabber"), XmppInfo(), exchange)
    assert (service["product"], service["method"], service["conf"]) == ("jabberd", "probed", 10)
    sent = [c.sent[0] for c in exchange.connections]
    assert b"to='.'" in sent[0] and b"xmlns='jabber:server'" in sent[0]
    # NSE's host.name: the reverse-DNS name, "" for an address without one (nmap -n
    # sends to='' too: seen end to end against prosody)
    assert b"to=''" in sent[1]
    assert exchange.connections[2].tls
    assert "TLS (required)" in service["scripts"]["xmpp-info"]


def test_xmpp_info_ejabberd_caps_after_tls_wins() -> None:
    caps = (
        "<c xmlns='http://jabber.org/protocol/caps' "
        "node='http://www.process-one.net/en/ejabberd/' ver='x'/>"
    )
    uuid = "3d1e853f-910d-4b08-baf8-5cbf1fec3088"
    exchange = StartTLSExchange(xmpp_server({".": uuid}, caps_after_tls=caps), port=5222)
    service = scan(port_result(5222, "xmpp-client"), XmppInfo(), exchange)
    assert service["product"] == "ejabberd"
    assert b"xmlns='jabber:client'" in exchange.connections[0].sent[0]


def test_xmpp_info_sm_without_dot_kills_the_script_like_nmap() -> None:
    caps = "<sm xmlns='urn:xmpp:sm:3'/>"
    uuid = "3d1e853f-910d-4b08-baf8-5cbf1fec3088"
    exchange = FakeExchange(xmpp_server({".": uuid}, caps=caps), port=5222)
    service = scan(port_result(5222, "jabber"), XmppInfo(), exchange)
    assert service["product"] is None and len(exchange.connections) == 1


def test_stream_scan_collects_features() -> None:
    scan_state = StreamScan()
    text = FEATURES.format(id="id='i'", caps="<compression><method>zlib</method></compression>")
    data = text.encode()
    done = False
    while data and not done:
        end = tag_end(data) or len(data)
        tag = parse_tag(data[:end].decode())
        data = data[end:]
        assert tag is not None
        done = scan_state.feed(tag)
    assert done and scan_state.stream_id == "i"
    assert scan_state.starttls and scan_state.tls_required
    assert scan_state.mechanisms == ["PLAIN"] and scan_state.methods == ["zlib"]


def test_rules() -> None:
    ctx = RuleContext()
    assert AmqpInfo().portrule(PortView("h", 5672, "tcp", "open"), ctx)
    assert not AmqpInfo().portrule(PortView("h", 5672, "tcp", "open|filtered"), ctx)
    assert MqttSubscribe().portrule(PortView("h", 9, "tcp", "open", name="secure-mqtt"), ctx)
    assert XmppInfo().portrule(PortView("h", 5269, "tcp", "open"), ctx)
    assert not XmppInfo().portrule(PortView("h", 5269, "tcp", "open"), RuleContext(intensity=6))


def test_a_receive_that_times_out_raises_exchange_timeout() -> None:
    """The real connection's receive timeout is an ExchangeTimeout (scripts that
    listen until a deadline, mqtt-subscribe, rely on it)."""
    from twisted.trial.unittest import SynchronousTestCase

    from vscand.scripts.exchange import ExchangeTimeout, _TCPConnection

    clock = Clock()
    conn = _TCPConnection(clock, 1024)
    waiting = defer.Deferred.fromCoroutine(conn.receive(5.0))
    clock.advance(5.0)
    SynchronousTestCase().failureResultOf(waiting, ExchangeTimeout)
    assert not clock.getDelayedCalls()
