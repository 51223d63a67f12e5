"""murmur-version, iax2-version, ubiquiti-discovery, wdb-version, tftp-version: fake peers,
pure parsers (property-tested), hostile answers."""

from __future__ import annotations

import contextlib
import struct
import time
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.e2e import script_servers_voip as look
from tests.test_scripts_brokers import port_result
from tests.test_scripts_exchange_udp import RealReactor
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin.iax2_version import POKE, Iax2Version, is_iax2_answer
from vscand.scripts.builtin.murmur_version import PING, MurmurVersion, parse_pong
from vscand.scripts.builtin.tftp_version import (
    SUBMIT,
    TftpError,
    TftpPacket,
    TftpVersion,
    load_fingerprints,
    match,
    parse,
    parse_fingerprints,
    random_path,
    read_request,
)
from vscand.scripts.builtin.ubiquiti_discovery import (
    PROBE_V1,
    PROBE_V2,
    UbiquitiDiscovery,
    UbiquitiError,
    format_mac,
    parse_response,
    str_to_ip,
)
from vscand.scripts.builtin.wdb_version import (
    VULNERABLE,
    WdbError,
    WdbVersion,
    checksum,
    decode_header,
    decode_reply,
    request,
)
from vscand.scripts.lua_literal import LuaSyntaxError, LuaTable, parse_assignments
from vscand.scripts.registry import builtin_scripts
from vscand.scripts.runner import ScriptRunner
from vscand.scripts.testing import FakeConnection, FakeExchange, Reply

Respond = Any


def run_host(
    results: list[dict[str, Any]], script: Any, exchange: Any, release: str = "7.93"
) -> list[dict[str, Any]]:
    clock = Clock()
    runner = ScriptRunner(clock, [script], exchange_factory=lambda view: exchange)
    done = defer.Deferred.fromCoroutine(runner.run_host(results, RuleContext(release=release)))
    assert done.called, "a script waited on a fake peer"
    assert not clock.getDelayedCalls()
    return results


def one(result: dict[str, Any], script: Any, respond: Respond, release: str = "7.93") -> Any:
    exchange = FakeExchange(respond, port=result["port"], protocol=result["protocol"])
    run_host([result], script, exchange, release)
    return result, exchange


def elements(service: dict[str, Any], script_id: str) -> list[dict[str, Any]]:
    found = [r for r in service.get("script_results") or () if r["id"] == script_id]
    return list(found[0]["elements"]) if found else []


def test_registry_has_the_group_and_tftp_only_from_795() -> None:
    names_93 = {s.name for s in builtin_scripts(release="7.93")}
    names_95 = {s.name for s in builtin_scripts(release="7.95")}
    group = {"murmur-version", "iax2-version", "ubiquiti-discovery", "wdb-version"}
    assert group <= names_93 and "tftp-version" not in names_93
    assert group | {"tftp-version"} <= names_95


# -- murmur-version --------------------------------------------------------------


def pong(users: int = 3) -> bytes:
    return b"\x00\x01\x03\x04abcdefgh" + struct.pack(">III", users, 100, 72000)


def murmur_peer(answer: bytes | None) -> Respond:
    def respond(conn: FakeConnection, data: bytes) -> bytes | None:
        assert conn.protocol == "udp" and data == PING
        return answer

    return respond


def test_murmur_tcp_port_pings_udp_and_names_both() -> None:
    tcp = port_result(64738, "tcpwrapped", method="probed", conf=8)
    udp = port_result(64738, "murmur", "udp", state="open|filtered")
    exchange = FakeExchange(murmur_peer(pong()), port=64738)
    run_host([tcp, udp], MurmurVersion(), exchange)
    assert len(exchange.connections) == 1, "one ping per port number"
    assert exchange.attempts == [(64738, "udp", False)]
    assert tcp["service"]["name"] == "murmur" and tcp["service"]["version"] == "1.3.4"
    assert tcp["service"]["extrainfo"] == (
        "control port; users: 3; max. users: 100; bandwidth: 72000 b/s"
    )
    assert udp["service"]["extrainfo"].startswith("voice port; users: 3;")
    assert udp["state"] == "open" and udp["reason"] == "script-set"
    assert tcp["service"]["method"] == "probed" and tcp["service"]["conf"] == 10
    assert "script_results" not in tcp["service"]


def test_murmur_other_answer_opens_udp_only() -> None:
    udp = port_result(64738, "murmur", "udp", state="open|filtered")
    result, _ = one(udp, MurmurVersion(), murmur_peer(b"\x00" * 23))
    assert result["state"] == "open"
    assert result["service"]["product"] is None and result["service"]["method"] == "table"


def test_murmur_silent_changes_nothing() -> None:
    result, _ = one(port_result(64738, "murmur", "udp", state="open|filtered"), MurmurVersion(),
                    murmur_peer(None))  # fmt: skip
    assert result["state"] == "open|filtered" and result["service"]["method"] == "table"


def test_murmur_rule() -> None:
    rule = MurmurVersion().portrule
    ctx = RuleContext()
    assert rule(PortView("127.0.0.1", 64738, "tcp", "open"), ctx)
    assert rule(PortView("127.0.0.1", 1234, "udp", "open", name="murmur"), ctx)
    assert not rule(PortView("127.0.0.1", 1234, "tcp", "open"), ctx)
    assert not rule(PortView("127.0.0.1", 64738, "tcp", "open"), RuleContext(intensity=6))


@given(st.binary(max_size=40))
def test_murmur_parse_total(data: bytes) -> None:
    info = parse_pong(data)
    assert (info is not None) == (len(data) == 24 and data[0] == 0 and data[4:12] == PING[4:])


# -- iax2-version ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("answer", "named"),
    [
        (look.iax2_answer(POKE), True),
        (look.iax2_answer(POKE)[:11] + b"\x04", True),  # ACK
        (look.iax2_hostile(POKE), False),  # 13 bytes
        (look.iax2_answer(POKE)[:11] + b"\x05", False),
        (b"", False),
    ],
)
def test_iax2(answer: bytes, named: bool) -> None:
    result, exchange = one(
        port_result(4569, "iax", "udp", state="open|filtered"),
        Iax2Version(),
        lambda conn, data: answer or None,
    )
    assert exchange.connections[0].sent == [POKE]
    assert (result["service"]["name"] == "iax2") is named
    assert (result["state"] == "open") is named
    assert "script_results" not in result["service"]


def test_iax2_rule_is_the_port_only() -> None:
    rule = Iax2Version().portrule
    assert rule(PortView("127.0.0.1", 4569, "udp", "open|filtered"), RuleContext())
    assert not rule(PortView("127.0.0.1", 4570, "udp", "open", name="iax2"), RuleContext())


@given(st.binary(max_size=20))
def test_iax2_answer_total(data: bytes) -> None:
    is_iax2_answer(data)


# -- ubiquiti-discovery ----------------------------------------------------------


def test_ubiquiti_v1_lookalike_793() -> None:
    result, exchange = one(
        port_result(10001, "ubiquiti-discovery", "udp", method="probed", conf=10,
                    product="Ubiquiti Discovery Service", extrainfo="v1 protocol, NBE-5AC-Gen2"),
        UbiquitiDiscovery(),
        lambda conn, data: look.ubiquiti_answer(data),
    )  # fmt: skip
    assert exchange.connections[0].sent == [PROBE_V1]
    service = result["service"]
    assert service["extrainfo"] == "v1 protocol, NBE-5AC-Gen2 software ver. v5.6.3"
    assert service["ostype"] == "Linux"
    assert elements(service, "ubiquiti-discovery") == [
        {"key": "protocol", "value": "v1"},
        {"key": "uptime_seconds", "value": "98765"},
        {"key": "uptime", "value": "1 days 03:26:05"},
        {"key": "hostname", "value": "ap-roof"},
        {"key": "product", "value": "NBE-5AC-Gen2"},
        {"key": "firmware", "value": "XM.ar7240.v5.6.3.28591.151130.1749"},
        {"key": "version", "value": "v5.6.3"},
        {"key": "essid", "value": "backhaul"},
        {"key": "interface_to_ip",
         "table": [{"key": "24a43c0a0b0c", "table": [{"key": None, "value": "192.168.1.20"}]}]},
        {"key": "mac_addresses", "table": [{"key": None, "value": "24a43c0a0b0c"}]},
    ]  # fmt: skip


def test_ubiquiti_mac_colons_from_794() -> None:
    table = parse_response(look.ubiquiti_v1(), "7.95")
    assert table is not None
    macs = table["mac_addresses"]
    assert not isinstance(macs, str) and macs.array == ["24:a4:3c:0a:0b:0c"]
    assert format_mac(b"\x01\x02", "7.93") == "0102" and format_mac(b"", "7.95") == ""


def test_ubiquiti_v2_after_silent_v1_without_version_keeps_extrainfo() -> None:
    body = look.tlv(0x15, b"UCK-v2") + look.tlv(0x17, b"\x01\x00\x00\x00")
    answer = struct.pack(">BBH", 2, 6, len(body)) + body

    def respond(conn: FakeConnection, data: bytes) -> bytes | None:
        return answer if data == PROBE_V2 else None

    result, exchange = one(
        port_result(10001, "scp-config", "udp", state="open|filtered", extrainfo="kept"),
        UbiquitiDiscovery(),
        respond,
    )
    assert [c.sent for c in exchange.connections] == [[PROBE_V1], [PROBE_V2]]
    service = result["service"]
    assert result["state"] == "open" and service["extrainfo"] == "kept"
    assert service["name"] == "ubiquiti-discovery" and service["ostype"] == "Linux"
    assert elements(service, "ubiquiti-discovery") == [
        {"key": "protocol", "value": "v2"},
        {"key": "model", "value": "UCK-v2"},
        {"key": "config_status", "value": "default/unmanaged"},  # "I4": host byte order
    ]


def test_ubiquiti_hostile_overrun_opens_only() -> None:
    result, _ = one(
        port_result(10001, "ubiquiti-discovery", "udp", state="open|filtered"),
        UbiquitiDiscovery(),
        lambda conn, data: look.ubiquiti_hostile(data),
    )
    assert result["state"] == "open" and result["service"]["method"] == "table"
    assert "script_results" not in result["service"]


def test_ubiquiti_address_of_odd_length_dies_like_lua() -> None:
    body = look.tlv(0x02, look.MAC + b"\x01\x02\x03")
    answer = struct.pack(">BBH", 1, 0, len(body)) + body
    result, _ = one(
        port_result(10001, "ubiquiti-discovery", "udp", state="open|filtered"),
        UbiquitiDiscovery(),
        lambda conn, data: answer,
    )
    assert result["state"] == "open" and result["service"]["method"] == "table"
    assert result["service"]["scripts"]["ubiquiti-discovery"] == SCRIPT_ERROR_OUTPUT


def test_ubiquiti_reads_until_four_bytes() -> None:
    answer = look.ubiquiti_v1()
    result, _ = one(
        port_result(10001, "ubiquiti-discovery", "udp", state="open|filtered"),
        UbiquitiDiscovery(),
        lambda conn, data: Reply([answer[:2], answer[2:]]) if data == PROBE_V1 else None,
    )
    assert result["service"]["extrainfo"] == "v1 protocol, NBE-5AC-Gen2 software ver. v5.6.3"


@pytest.mark.parametrize(
    ("raw", "text"),
    [
        (bytes(16), "::"),  # Lua's shortening: "0:0:...:0" -> "0::" -> "::"
        (bytes(15) + b"\x01", "::1"),
        (bytes.fromhex("20010db8000000000000000000000001"), "2001:db8::1"),
        (bytes.fromhex("fe800000000000001234000000000001"), "fe80::1234:0:0:1"),
        (bytes.fromhex("0001000a000b00000000000000000000"), "1:a:b::"),  # checked with lua5.4
        (b"\x0a\x00\x00\x01", "10.0.0.1"),
        (b"\x01", None),
    ],
)
def test_str_to_ip_as_ipops(raw: bytes, text: str | None) -> None:
    assert str_to_ip(raw) == text


@given(st.binary(max_size=80), st.sampled_from(["7.93", "7.95"]))
def test_ubiquiti_parse_total(data: bytes, release: str) -> None:
    with contextlib.suppress(UbiquitiError):
        parse_response(data, release)
    with contextlib.suppress(UbiquitiError):
        parse_response(b"\x01\x00" + struct.pack(">H", len(data)) + data, release)


# -- wdb-version -----------------------------------------------------------------

PROGRAM = 0x55555555


def wdb_script(**kwargs: Any) -> WdbVersion:
    return WdbVersion(program=lambda: PROGRAM, xid=lambda: 0x01020304, **kwargs)


def test_wdb_request_layout_and_checksum() -> None:
    packet = request(PROGRAM, 1, 0x01020304, 1, struct.pack(">III", 2, 0, 0))
    assert len(packet) == 64
    assert struct.unpack_from(">6I", packet) == (0x01020304, 0, 2, PROGRAM, 1, 1)
    assert packet[40:42] == b"\xff\xff"
    assert struct.unpack_from(">II", packet, 44) == (60, 1)
    summed = packet[:40] + b"\x00" * 4 + packet[44:]
    assert struct.unpack_from(">H", packet, 42)[0] == checksum(summed)
    words = sum(struct.unpack(">30H", summed[4:]))
    assert checksum(summed) == ~((words & 0xFFFF) + (words >> 16)) & 0xFFFF


def test_wdb_lookalike() -> None:
    result, exchange = one(
        port_result(17185, "wdbrpc", "udp", state="open|filtered"),
        wdb_script(),
        lambda conn, data: look.wdb_answer(data),
    )
    sent = exchange.connections[0].sent
    assert [struct.unpack_from(">I", p, 20)[0] for p in sent] == [1, 2]  # CONNECT, DISCONNECT
    assert [struct.unpack_from(">I", p, 48)[0] for p in sent] == [1, 2]  # sequence numbers
    service = result["service"]
    assert result["state"] == "open"
    assert (service["name"], service["product"], service["version"]) == (
        "wdb", "Wind DeBug Agent", "2.0"
    )  # fmt: skip
    assert service["ostype"] is None  # only set when the port already had one
    assert elements(service, "wdb-version") == [
        {"key": None, "value": look_vulnerable()},
        {"key": "Agent version", "value": "2.0"},
        {"key": "VxWorks version", "value": "5.5.1"},
        {"key": "Board Support Package", "value": "PowerPC 604"},
        {"key": "Boot line",
         "value": "ata=0,0(0,0)host:/ata0a/vxWorks h=10.0.0.2 e=10.0.0.9 u=target"},
    ]  # fmt: skip


def look_vulnerable() -> str:
    return VULNERABLE


def test_wdb_ostype_when_the_port_had_one() -> None:
    result, _ = one(
        port_result(17185, "wdbrpc", "udp", state="open", ostype="VxWorks"),
        wdb_script(),
        lambda conn, data: look.wdb_answer(data),
    )
    assert result["service"]["ostype"] == "VxWorks 5.5.1"


def test_wdb_truncated_reply_dies_after_opening() -> None:
    result, _ = one(
        port_result(17185, "wdbrpc", "udp", state="open|filtered"),
        wdb_script(),
        lambda conn, data: look.wdb_hostile(data),
    )
    assert result["state"] == "open"
    assert result["service"]["name"] == "wdbrpc" and result["service"]["method"] == "table"
    assert result["service"]["scripts"]["wdb-version"] == SCRIPT_ERROR_OUTPUT


def test_wdb_error_bits_end_quietly() -> None:
    reply = bytearray(look.wdb_reply(7))
    reply[32:36] = b"\x80\x00\x00\x00"
    result, _ = one(
        port_result(17185, "wdbrpc", "udp", state="open|filtered"),
        wdb_script(),
        lambda conn, data: bytes(reply) if len(conn.sent) == 1 else None,
    )
    assert result["state"] == "open" and result["service"]["method"] == "table"
    assert result["service"]["scripts"]["wdb-version"] == ""


def test_wdb_short_header_reads_more_then_gives_up() -> None:
    result, _ = one(
        port_result(17185, "wdbrpc", "udp", state="open|filtered"),
        wdb_script(),
        lambda conn, data: b"\x00" * 8,
    )
    assert result["state"] == "open" and result["service"]["scripts"]["wdb-version"] == ""


def test_wdb_without_nmap_rpc_dies_before_sending() -> None:
    result, exchange = one(
        port_result(17185, "wdbrpc", "udp", state="open|filtered"),
        WdbVersion(program=lambda: None),
        lambda conn, data: look.wdb_answer(data),
    )
    assert exchange.connections == [] and result["state"] == "open|filtered"
    assert result["service"]["scripts"]["wdb-version"] == SCRIPT_ERROR_OUTPUT


@given(st.binary(max_size=200), st.integers(min_value=0, max_value=40))
def test_wdb_decode_reply_total(data: bytes, pos: int) -> None:
    with contextlib.suppress(WdbError):
        decode_reply(data, pos)


@given(st.binary(min_size=1, max_size=80), st.lists(st.binary(max_size=30), max_size=3))
def test_wdb_decode_header_total(first: bytes, more: list[bytes]) -> None:
    conn = FakeConnection(17185, "udp", False, lambda c, d: None, pending=list(more))

    async def go() -> None:
        with contextlib.suppress(WdbError):
            await decode_header(conn, first)

    done = defer.Deferred.fromCoroutine(go())
    assert done.called
    done.result  # noqa: B018  (re-raises anything but WdbError)


# -- tftp-version ----------------------------------------------------------------


#: a fingerprint file of the same form as Nmap's (made-up rows)
FAKE_ROWS = parse_fingerprints(
    "fingerprints = {[1] = {}, [2] = {}, [3] = {}, [4] = {}, [5] = {"
    ' { errcode = 1, errmsg = "File not found",'
    '   product = { p = "Test tftpd", o = "TestOS", cpe = {"cpe:/a:test:a", "cpe:/a:test:b"} } },'
    "}}\nreturn fingerprints"
)


def tftp_script() -> TftpVersion:
    return TftpVersion(fingerprints=lambda: FAKE_ROWS)


def tftp_peer(answer: bytes | None, source: int | None = 40000) -> Respond:
    def respond(conn: FakeConnection, data: bytes) -> bytes | None:
        assert conn.any_source_port and data.startswith(b"\x00\x01") and data.endswith(b"octet\x00")
        conn.peer_port = source
        return answer

    return respond


def test_tftp_request_and_name() -> None:
    path = random_path()
    assert len(path) == 12 and path[8] == "." and path[9:].isalpha()
    assert read_request("AB.c") == b"\x00\x01AB.c\x00octet\x00"


def test_tftp_known_answer_fills_empty_fields() -> None:
    result, _ = one(
        port_result(69, "tftp", "udp", state="open|filtered", cpe=["cpe:/a:test:a"]),
        tftp_script(),
        tftp_peer(look.NOT_FOUND),
        release="7.95",
    )
    service = result["service"]
    assert result["state"] == "open" and service["name"] == "tftp"
    assert service["product"] == "Test tftpd" and service["method"] == "probed"
    assert service["ostype"] == "TestOS"
    assert service["cpe"] == ["cpe:/a:test:a", "cpe:/a:test:b"]
    assert service["scripts"]["tftp-version"] == ""


def test_tftp_known_answer_differing_product_prints_the_row() -> None:
    result, _ = one(
        port_result(69, "tftp", "udp", state="open", method="probed", conf=10, product="Other"),
        tftp_script(),
        tftp_peer(look.NOT_FOUND),
        release="7.95",
    )
    assert result["service"]["product"] == "Other"
    assert elements(result["service"], "tftp-version") == [
        {"key": "p", "value": "Test tftpd"},
        {"key": "o", "value": "TestOS"},
        {"key": "cpe", "table": [{"key": None, "value": "cpe:/a:test:a"},
                                 {"key": None, "value": "cpe:/a:test:b"}]},
    ]  # fmt: skip


def test_tftp_unknown_answer_asks_for_a_submission() -> None:
    answer = b"\x00\x05\x00\x02Go away\x00"
    result, _ = one(
        port_result(69, "tftp", "udp", state="open|filtered"),
        tftp_script(),
        tftp_peer(answer, 41234),
        release="7.95",
    )
    service = result["service"]
    assert service["method"] == "probed" and service["product"] is None
    assert elements(service, "tftp-version") == [
        {"key": SUBMIT, "table": [{"key": "opcode", "value": "5"},
                                  {"key": "errcode", "value": "2"},
                                  {"key": "length", "value": "12"},
                                  {"key": "rport", "value": "41234"},
                                  {"key": "errmsg", "value": "Go away"}]},
    ]  # fmt: skip


def test_tftp_hostile_error_without_nul_dies_before_opening() -> None:
    result, _ = one(
        port_result(69, "tftp", "udp", state="open|filtered"),
        tftp_script(),
        tftp_peer(look.tftp_transfer_hostile(read_request("AAAAAAAA.aaa"))),
        release="7.95",
    )
    assert result["state"] == "open|filtered"
    assert result["service"]["scripts"]["tftp-version"] == SCRIPT_ERROR_OUTPUT


@pytest.mark.parametrize(
    ("buf", "want"),
    [
        (b"\x00\x03\x00\x01hello", TftpPacket(3, 1, 9, 7, "hello")),
        (b"\x00\x03\x00\x01" + b"x" * 513, TftpPacket(3, 1, 517, 7, None)),
        (b"\x00\x04\x00\x00\x00", TftpPacket(4, 0, 5, 7, "")),
        (b"\x00\x01\x00\x02a\x00octet\x00", TftpPacket(1, 2, 12, 7, "", "\x02a")),
        (b"\x00\x01ab\x00octet\x00", TftpPacket(1, 0x6162, 11, 7, "ab", "octet")),
        (b"\x00\x06\x00\x00", None),
        (b"\x00\x05\x00", None),
    ],
)
def test_tftp_parse(buf: bytes, want: TftpPacket | None) -> None:
    assert parse(buf, 7) == want


def test_tftp_rport_rows() -> None:
    rows = parse_fingerprints(
        'fingerprints = {[1] = {}, [2] = {}, [3] = {}, [4] = {}, [5] = {'
        '{errcode = 1, errmsg = "x", rport = 69, product = {p = "Same port"}},'
        '{errcode = 1, errmsg = "x", product = {p = "Any port"}}}}\nreturn fingerprints'
    )  # fmt: skip
    assert rows is not None
    for rport, product in ((69, "Same port"), (4000, "Any port")):
        row = match(TftpPacket(5, 1, 6, rport, "x"), rows)
        assert row is not None and row.get("p") == product


def test_tftp_installed_fingerprints_if_any() -> None:
    rows = load_fingerprints()
    if rows is None:
        pytest.skip("no tftp-fingerprints.lua (Nmap 7.95 on)")
    assert match(TftpPacket(5, 1, 18, 1, "File not found"), rows) is not None


@given(st.binary(max_size=40), st.none() | st.integers(0, 65535))
def test_tftp_parse_total(buf: bytes, rport: int | None) -> None:
    with contextlib.suppress(TftpError):
        parse(buf, rport)


# -- Lua literals ----------------------------------------------------------------


def test_lua_literal_forms() -> None:
    found = parse_assignments(
        '--[[ block ]] local t = { \'a\', "b\\n\\65\\x42", [3] = 0x10, k = true, ["s p"] = nil,'
        " nested = { 1.5; -- comment\n [[long]] } }\nreturn t"
    )
    table = found["t"]
    assert isinstance(table, LuaTable)
    assert table.array == ["a", "b\nAB", 16]
    assert table.get("k") is True and table.get("s p") is None
    nested = table.get("nested")
    assert isinstance(nested, LuaTable) and nested.ipairs() == [1.5, "long"]


@pytest.mark.parametrize("text", ["x = f()", "x = {", "x = 'open", "= 1", "x = {1 2}", "x = '\\q'"])
def test_lua_literal_refuses(text: str) -> None:
    with pytest.raises(LuaSyntaxError):
        parse_assignments(text)


def test_lua_literal_depth_bounded() -> None:
    with pytest.raises(LuaSyntaxError):
        parse_assignments("x = " + "{" * 100 + "}" * 100)


@given(st.text(alphabet="{}[]=,;'\"\\xab01 \n-.", max_size=60))
def test_lua_literal_total(text: str) -> None:
    with contextlib.suppress(LuaSyntaxError):
        parse_assignments(text)


# -- hostile peers over real loopback sockets ------------------------------------

HOSTILE = [
    # (script, port result, hostile answer, transfer answer, bound in seconds, expectation)
    ("murmur", MurmurVersion, port_result(0, "murmur", "udp", state="open|filtered"),
     look.murmur_hostile, None, 6.0, "open-only"),
    ("ubiquiti", UbiquitiDiscovery,
     port_result(0, "ubiquiti-discovery", "udp", state="open|filtered"),
     look.ubiquiti_hostile, None, 5.0, "open-only"),
    ("wdb", WdbVersion, port_result(0, "wdbrpc", "udp", state="open|filtered"),
     look.wdb_hostile, None, 16.0 / 7, "failed"),
    ("tftp", lambda: TftpVersion(fingerprints=lambda: FAKE_ROWS),
     port_result(0, "tftp", "udp", state="open|filtered"),
     look.tftp_answer, look.tftp_transfer_hostile, 2.0, "failed-closed"),
]  # fmt: skip


@pytest.mark.parametrize("case", HOSTILE, ids=[c[0] for c in HOSTILE])
def test_hostile_peer_ends_within_the_scripts_bound(case: Any) -> None:
    """The hostile lookalike answers on a real loopback socket; the script ends well within
    its own timeout, nothing escapes, and it sets nothing wrong."""
    _name, make, result, answer, transfer, bound, expect = case
    result = {**result, "service": dict(result["service"])}
    result["port"] = look.serve_udp(0, answer, new_port=transfer)
    real = RealReactor("epoll")
    try:
        runner = ScriptRunner(real.reactor, [make()])
        started = time.monotonic()
        real.run(lambda: runner.run_host([result], RuleContext(release="7.95")), timeout=60)
        elapsed = time.monotonic() - started
    finally:
        real.stop()
    assert elapsed < bound + 1.0
    service = result["service"]
    assert service["method"] == "table" and service.get("product") is None
    output = next(iter(service["scripts"].values()))
    if expect == "open-only":
        assert result["state"] == "open" and output == ""
    elif expect == "failed":
        assert result["state"] == "open" and output == SCRIPT_ERROR_OUTPUT
    else:
        assert result["state"] == "open|filtered" and output == SCRIPT_ERROR_OUTPUT
