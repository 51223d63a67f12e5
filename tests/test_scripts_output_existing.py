"""The output of vscand's first 12 version scripts, as NSE returns it (issue 16).

Each script's table/string pair, key order, what is returned when nothing is
found, and ``ScriptFailed`` where NSE's Lua dies (Nmap then prints its error
line and keeps what ``set_port_version``/``set_port_state`` did before).
"""

from __future__ import annotations

import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.e2e.script_servers_brokers_vpn import connection_start
from tests.test_scripts_brokers import amqp_peer, port_result
from tests.test_scripts_udp_vpn import (
    MAPPED,
    NET_SNMP_ENGINE,
    ROWS,
    attribute,
    ike_peer,
    snmp_peer,
    snmpv3_report,
    stun_peer,
)
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT, Table
from vscand.scripts.api import RuleContext
from vscand.scripts.builtin.amqp_info import AmqpInfo
from vscand.scripts.builtin.docker_version import to_table
from vscand.scripts.builtin.http_server_header import format_output as http_output
from vscand.scripts.builtin.ike_version import IkeVersion
from vscand.scripts.builtin.snmp_info import SnmpInfo
from vscand.scripts.builtin.stun_version import StunVersion
from vscand.scripts.builtin.xmpp_factor import factor
from vscand.scripts.builtin.xmpp_info import StreamScan
from vscand.scripts.nsefmt import format_output, format_time, str_to_ip, tohex
from vscand.scripts.runner import ScriptRunner
from vscand.scripts.testing import FakeExchange


def run(result: dict[str, Any], script: Any, exchange: Any, release: str = "7.93") -> Any:
    clock = Clock()
    runner = ScriptRunner(clock, [script], exchange_factory=lambda view: exchange)
    done = defer.Deferred.fromCoroutine(runner.run_host([result], RuleContext(release=release)))
    assert done.called
    return result["service"]


def only_result(service: dict[str, Any]) -> dict[str, Any]:
    (kept,) = service["script_results"]
    return dict(kept)


# -- NSE's text helpers -----------------------------------------------------------


def test_format_output_like_stdnse() -> None:
    assert format_output([]) is None
    assert format_output(["a: b", "c: ", ["x: y", "z: w"], "d: e"]) == (
        "\n  a: b\n  c: \n    x: y\n    z: w\n  d: e\n"
    )
    assert format_output(["a\r\nb"]) == "\n  \n  b\n"  # gmatch on "([^\r\n]-)\n"


def test_format_time_tohex_str_to_ip() -> None:
    assert [format_time(n) for n in (0, 10, 12345, 86400 * 100, -61)] == [
        "0s", "10s", "3h25m45s", "100d00h00m00s", "-1m01s",
    ]  # fmt: skip
    assert tohex(b"\x00\x1b\xff", "7.93", separator=True) == "001bff"  # 7.93 drops the grouping
    assert tohex(b"\x00\x1b\xff", "7.95", separator=True) == "00:1b:ff"
    assert str_to_ip(b"\x7f\x00\x00\x01") == "127.0.0.1"
    assert str_to_ip(bytes(15) + b"\x01") == "::1"
    assert str_to_ip(b"\x20\x01\x0d\xb8" + bytes(11) + b"\x01") == "2001:db8::1"
    assert str_to_ip(b"abc") is None


# -- http-server-header, docker-version -----------------------------------------------


def test_http_server_header_pair() -> None:
    out = http_output({"b", ""})
    assert out is not None and out.table == Table(["", "b"])
    assert out.output == "\n  <empty>\n  b"
    single = http_output({"nginx"})
    assert single is not None and single.output == "nginx"
    assert http_output(set()) is None


def test_docker_document_as_nse_table() -> None:
    table = to_table({"Version": "20.10", "ApiVersion": 1.41, "Os": None, "Experimental": False,
                      "Components": [{"Name": "Engine"}], "Ints": 3, "Exp": 1e3})  # fmt: skip
    assert isinstance(table, Table)
    assert table["ApiVersion"] == "1.41" and table["Experimental"] == "false"
    assert table["Os"] == Table() and table["Ints"] == "3" and table["Exp"] == "1000.0"
    assert table["Components"] == Table([Table.of({"Name": "Engine"})])


# -- amqp-info -------------------------------------------------------------------


def test_amqp_info_format_output_and_error_strings() -> None:
    exchange = FakeExchange(amqp_peer(connection_start()))
    service = run(port_result(5672, "amqp"), AmqpInfo(), exchange)
    kept = only_result(service)
    assert kept["elements"] is None
    assert kept["output"] == (
        "\n  capabilities: \n    publisher_confirms: YES\n    exchange_exchange_bindings: YES\n"
        "    basic.nack: YES\n    authentication_failure_close: NO\n"
        "  cluster_name: rabbit@ns\n  copyright: Copyright (c) 2007-2023 VMware, Inc.\n"
        "  information: Licensed under the MPL 2.0.\n  platform: Erlang/OTP 25.2.3\n"
        "  product: RabbitMQ\n  version: 3.10.8\n  mechanisms: AMQPLAIN PLAIN\n  locales: en_US\n"
    )
    cut = FakeExchange(amqp_peer(connection_start()[:40]))
    failed = run(port_result(5672, "amqp"), AmqpInfo(), cut)
    assert failed["scripts"]["amqp-info"].startswith(
        "ERROR: AMQP:handshake connection closed unexpectedly while reading"
    )
    assert failed["method"] == "table"
    wrong = FakeExchange(amqp_peer(b"\x02" + connection_start()[1:]))
    assert run(port_result(5672, "amqp"), AmqpInfo(), wrong)["scripts"]["amqp-info"] == (
        "ERROR: AQMP:handshake expected header (1) frame, but was 2"
    )


# -- stun-version ------------------------------------------------------------------


def test_stun_version_returns_nothing_and_dies_on_a_cut_attribute() -> None:
    exchange = FakeExchange(stun_peer(attribute(0x8022, b"Coturn") + MAPPED), port=3478,
                            protocol="udp")  # fmt: skip
    service = run(port_result(3478, "stun", "udp", state="open|filtered"), StunVersion(), exchange)
    assert service["product"] == "Coturn" and service["scripts"]["stun-version"] == ""
    assert not service.get("script_results")
    cut = port_result(3478, "stun", "udp", state="open|filtered")
    peer = stun_peer(MAPPED + b"\x80\x22")
    died = run(cut, StunVersion(), FakeExchange(peer, port=3478, protocol="udp"))
    assert died["scripts"]["stun-version"] == SCRIPT_ERROR_OUTPUT
    assert cut["state"] == "open|filtered" and died["method"] == "table"


# -- ike-version --------------------------------------------------------------------


def test_ike_version_output_table() -> None:
    exchange = FakeExchange(ike_peer(), port=500, protocol="udp")
    service = run(port_result(500, "isakmp", "udp", state="open|filtered"), IkeVersion(ROWS),
                  exchange)  # fmt: skip
    kept = only_result(service)
    assert kept["elements"][0] == {"key": "vendor_id", "value": "strongSwan 5"}
    assert kept["output"].startswith("\n  vendor_id: strongSwan 5")


def test_ike_version_without_vendor_ids_dies_after_opening() -> None:
    def bare(request: bytes) -> bytes:
        return request[:8] + b"\x11" * 8 + struct.pack(">BBBBII", 0, 0x10, 4, 0, 0, 28)

    plain = port_result(500, "isakmp", "udp", state="open|filtered")
    service = run(plain, IkeVersion(ROWS), FakeExchange(ike_peer(bare), port=500, protocol="udp"))
    assert plain["state"] == "open"
    assert only_result(service) == {"id": "ike-version", "output": SCRIPT_ERROR_OUTPUT,
                                    "elements": None}  # fmt: skip


# -- snmp-info ------------------------------------------------------------------------


def test_snmp_info_output_table_and_release() -> None:
    names = {8072: "net-snmp"}
    exchange = FakeExchange(snmp_peer(snmpv3_report(NET_SNMP_ENGINE)), port=161, protocol="udp")
    kept = only_result(run(port_result(161, "snmp", "udp"), SnmpInfo(names), exchange))
    assert kept["output"] == (
        "\n  enterprise: net-snmp\n  engineIDFormat: unknown\n"
        "  engineIDData: 6b1e6a5c09a5f06500000000\n  snmpEngineBoots: 7\n"
        "  snmpEngineTime: 20m34s"
    )
    mac = bytes.fromhex("80001f8803") + bytes.fromhex("001122334455")
    for release, shown in (("7.93", "001122334455"), ("7.95", "00:11:22:33:44:55")):
        peer = FakeExchange(snmp_peer(snmpv3_report(mac)), port=161, protocol="udp")
        got = only_result(run(port_result(161, "snmp", "udp"), SnmpInfo(names), peer, release))
        assert {"key": "engineIDData", "value": shown} in got["elements"]
    # a number without the high bit and no name: the number; with it: no key
    low = FakeExchange(snmp_peer(snmpv3_report(b"\x00\x00\x00\x09abc")), port=161, protocol="udp")
    got = only_result(run(port_result(161, "snmp", "udp"), SnmpInfo({}), low))
    assert got["elements"][:2] == [
        {"key": "enterprise", "value": "9"},
        {"key": "engineIDFormat", "value": "unknown"},
    ]
    short = FakeExchange(snmp_peer(snmpv3_report(b"\x80\x00\x1f\x88")), port=161, protocol="udp")
    died = run(port_result(161, "snmp", "udp"), SnmpInfo(names), short)
    assert died["scripts"]["snmp-info"] == SCRIPT_ERROR_OUTPUT and died["method"] == "table"


# -- xmpp-info --------------------------------------------------------------------------


def test_xmpp_factor_like_nse() -> None:
    plain, tls = StreamScan(), StreamScan()
    plain.info["lang"], plain.info["version"] = "en", "1.0"
    tls.info["lang"], tls.info["version"] = "en", "2.0"
    plain.features += ["TLS", "Resource Binding"]
    tls.features += ["Resource Binding", "IM Session Establishment"]
    plain.errors.append(Table.of({"text": "x"}))
    tls.errors.append(Table.of({"text": "x"}))
    both, first, second = factor(plain, tls)
    assert both["xmpp"] == Table.of({"lang": "en"})
    assert first["xmpp"] == Table.of({"version": "1.0"})
    assert second["xmpp"] == Table.of({"version": "2.0"})
    assert both["capabilities"] == Table() and "compression_methods" not in both
    assert both["features"] == Table(["Resource Binding"])
    assert first["features"] == Table(["TLS"])
    assert second["features"] == Table(["IM Session Establishment"])
    # error texts are Lua tables: never the same value in both streams
    assert "errors" not in both and len(first["errors"].array) == 1


def test_docker_strings_are_lua_bytes() -> None:
    table = to_table({"Os": "caf\u00e9", "Raw": b"\xff".decode("utf-8", "surrogateescape")})
    assert isinstance(table, Table)
    assert table["Os"] == "caf\xc3\xa9"  # UTF-8 bytes, as Lua holds them
    assert table["Raw"] == "\xff"


@given(st.integers(min_value=-(2**62), max_value=2**62))
def test_format_time_total(seconds: int) -> None:
    text = format_time(seconds)
    assert text.endswith("s") and (text[0] == "-") == (seconds < 0)


@given(st.binary(max_size=40))
def test_str_to_ip_and_tohex_total(raw: bytes) -> None:
    shown = str_to_ip(raw)
    assert (shown is None) == (len(raw) not in (4, 16))
    assert tohex(raw, "7.95", separator=True).replace(":", "") == raw.hex()


@given(st.lists(st.text(max_size=20), max_size=5))
def test_format_output_lines(items: list[str]) -> None:
    out = format_output(items)
    assert out is None or (out.startswith("\n") and out.endswith("\n"))
