"""snmp-info, stun-version, ike-version, pptp-version: fake peers and pure code."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from tests.e2e.script_servers_brokers_vpn import DPD_V1, RFC3947, ike_answer, pptp_reply
from tests.test_scripts_brokers import port_result, scan
from vscand.scan.fingerprint import ServiceFingerprint
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin.ike_version import (
    Fingerprint,
    IkeError,
    IkeVersion,
    build_request,
    load_fingerprints,
    lookup,
    lua_pattern,
    parse_fingerprints,
    parse_response,
    transforms,
)
from vscand.scripts.builtin.pptp_version import REQUEST, PptpVersion, parse_reply
from vscand.scripts.builtin.snmp_info import (
    SNMPV3_GET_REQUEST,
    AsnError,
    SnmpInfo,
    ber_decode,
    engine_info,
    parse_enterprise_numbers,
)
from vscand.scripts.builtin.stun_version import (
    StunError,
    StunVersion,
    binding_request,
    parse_binding_response,
)
from vscand.scripts.testing import FakeConnection, FakeExchange


def zeros(count: int) -> bytes:
    return b"\x00" * count


# -- SNMP --------------------------------------------------------------------


def tlv(tag: int, body: bytes) -> bytes:
    if len(body) < 128:
        return bytes([tag, len(body)]) + body
    size = len(body).to_bytes(2, "big")
    return bytes([tag, 0x82]) + size + body


def integer(value: int) -> bytes:
    return tlv(0x02, value.to_bytes((value.bit_length() + 8) // 8 or 1, "big", signed=True))


def snmpv3_report(engine_id: bytes, boots: int = 7, time: int = 1234) -> bytes:
    """A net-snmp style Report to the SNMPv3GetRequest (usmStatsUnknownEngineIDs)."""
    usm = tlv(0x30, tlv(0x04, engine_id) + integer(boots) + integer(time)
              + tlv(0x04, b"") + tlv(0x04, b"") + tlv(0x04, b""))  # fmt: skip
    header = tlv(0x30, integer(0x4A69) + integer(65507) + tlv(0x04, b"\x00") + integer(3))
    pdu = tlv(0xA8, integer(0x37F0) + integer(0) + integer(0) + tlv(0x30, b""))
    scoped = tlv(0x30, tlv(0x04, engine_id) + tlv(0x04, b"") + pdu)
    return tlv(0x30, integer(3) + header + tlv(0x04, usm) + scoped)


NET_SNMP_ENGINE = bytes.fromhex("80001f8880") + bytes.fromhex("6b1e6a5c09a5f06500000000")


def test_engine_info_net_snmp() -> None:
    found = engine_info(snmpv3_report(NET_SNMP_ENGINE))
    assert found is not None
    number, high_bit, info = found
    assert (number, high_bit, info.boots, info.time) == (8072, True, 7, 1234)


def test_probe_decodes_as_its_own_request() -> None:
    decoded = ber_decode(SNMPV3_GET_REQUEST)
    assert decoded[0] == 3 and decoded[1][0] == 0x4A69 and decoded[1][3] == 3


@given(st.binary(max_size=80))
def test_ber_decode_total(data: bytes) -> None:
    with contextlib.suppress(AsnError):
        engine_info(data)


def snmp_peer(report: bytes) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> bytes | None:
        return report if data == SNMPV3_GET_REQUEST else None

    return respond


def test_snmp_info_product() -> None:
    names = parse_enterprise_numbers("# comment\n8072\tnet-snmp\n9\tciscoSystems\n")
    exchange = FakeExchange(snmp_peer(snmpv3_report(NET_SNMP_ENGINE)), port=161, protocol="udp")
    result = port_result(161, "snmp", "udp", product="net-snmp", version="SNMPv3 server",
                         method="probed", conf=10)  # fmt: skip
    service = scan(result, SnmpInfo(names), exchange)
    assert service["product"] == "net-snmp; net-snmp SNMPv3 server"
    assert (service["name"], service["version"], service["method"]) == (
        "snmp", "SNMPv3 server", "probed",
    )  # fmt: skip
    again = FakeExchange(snmp_peer(snmpv3_report(NET_SNMP_ENGINE)), port=161, protocol="udp")
    plain = scan(port_result(161, "snmp", "udp"), SnmpInfo(names), again)
    assert plain["product"] == "net-snmp SNMPv3 server"


def test_snmp_info_reads_the_fingerprint_first_and_unknown_enterprises() -> None:
    fp = ServiceFingerprint(161, "UDP", intensity=7, ssl=False, when=1_700_000_000.0)
    fp.add("SNMPv3GetRequest", snmpv3_report(bytes.fromhex("800003e703") + zeros(6)))
    silent = FakeExchange(lambda c, d: None, port=161, protocol="udp")
    service = scan(port_result(161, "snmp", "udp", fingerprint=fp.text()), SnmpInfo({}), silent)
    assert service["product"] == "nil SNMPv3 server"  # 999 is not in the table: Lua's nil
    assert silent.connections == []
    peer = snmp_peer(snmpv3_report(b"\x00\x00\x00\x09abc"))
    low = scan(
        port_result(161, "snmp", "udp"), SnmpInfo({}), FakeExchange(peer, port=161, protocol="udp")
    )
    assert low["product"] == "9 SNMPv3 server"


def test_snmp_info_v1_answer_changes_nothing() -> None:
    v1 = tlv(0x30, integer(0) + tlv(0x04, b"public") + tlv(0xA2, b""))
    exchange = FakeExchange(snmp_peer(v1), port=161, protocol="udp")
    service = scan(port_result(161, "snmp", "udp"), SnmpInfo({}), exchange)
    assert (service["product"], service["method"]) == (None, "table")


# -- STUN --------------------------------------------------------------------


def stun_answer(request: bytes, attributes: bytes, message_type: int = 0x0101) -> bytes:
    return struct.pack(">HH", message_type, len(attributes)) + request[4:20] + attributes


def attribute(kind: int, body: bytes) -> bytes:
    return struct.pack(">HH", kind, len(body)) + body


MAPPED = attribute(0x0001, b"\x00\x01\x30\x39\x7f\x00\x00\x01")


def stun_peer(attributes: bytes, message_type: int = 0x0101) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> bytes | None:
        return stun_answer(data, attributes, message_type) if data[:2] == b"\x00\x01" else None

    return respond


def test_stun_version_server_attribute() -> None:
    exchange = FakeExchange(stun_peer(attribute(0x8022, b"Coturn-4.6.1 'Gorst'") + MAPPED),
                            port=3478, protocol="udp")  # fmt: skip
    result = port_result(3478, "stun", "udp", state="open|filtered")
    service = scan(result, StunVersion(lambda n: b"\x01" * n), exchange)
    assert (service["name"], service["product"], service["method"]) == (
        "stun", "Coturn-4.6.1 'Gorst'", "probed",
    )  # fmt: skip
    assert result["state"] == "open"
    assert exchange.connections[0].sent == [b"\x00\x01\x00\x00\x21\x12\xa4\x42" + b"\x01" * 12]


def test_stun_version_without_server_attribute_and_padding_like_nmap() -> None:
    result = port_result(3478, "stun", "udp", state="open|filtered")
    service = scan(
        result, StunVersion(), FakeExchange(stun_peer(MAPPED), port=3478, protocol="udp")
    )
    assert (service["name"], service["product"], result["state"]) == ("stun", None, "open")
    # RFC 5389 pads "abc" to 4 bytes; Nmap does not skip the pad byte, so the next
    # attribute header is read one byte early (type 0, length 256): the mapped
    # address is lost, the server name is kept
    padded = attribute(0x8022, b"abc") + b"\x00" + MAPPED
    parsed = parse_binding_response(b"\x01\x01" + zeros(18) + padded)
    assert (parsed.server, parsed.mapped_address) == (b"abc", None)
    # a header cut short is Nmap's Lua error: nothing changes
    cut = port_result(3478, "stun", "udp", state="open|filtered")
    scan(
        cut, StunVersion(), FakeExchange(stun_peer(MAPPED + b"\x80\x22"), port=3478, protocol="udp")
    )
    assert cut["state"] == "open|filtered"


def test_stun_error_response_changes_nothing() -> None:
    result = port_result(3478, "stun", "udp", state="open|filtered")
    scan(result, StunVersion(), FakeExchange(stun_peer(MAPPED, 0x0111), port=3478, protocol="udp"))
    assert result["state"] == "open|filtered" and result["service"]["method"] == "table"


@given(st.binary(min_size=12, max_size=12))
def test_binding_request_shape(transaction: bytes) -> None:
    packet = binding_request(transaction)
    assert len(packet) == 20 and packet[4:8] == b"\x21\x12\xa4\x42"


@given(st.binary(max_size=64))
def test_stun_parse_total(body: bytes) -> None:
    with contextlib.suppress(StunError):
        parse_binding_response(b"\x01\x01" + zeros(18) + body)


# -- IKE ---------------------------------------------------------------------


def test_ike_request_layout() -> None:
    packet = build_request("Aggressive", 2, b"vpngroup", 500, zeros)
    assert len(transforms()) == 120
    length = struct.unpack_from(">I", packet, 24)[0]
    # per (auth, hash, group): des and 3des transforms of 36 bytes, three AES ones of 40
    assert length == len(packet) == 48 + 4 * 2 * 3 * (2 * 36 + 3 * 40) + (132 + 24 + 16)
    assert packet[16:20] == b"\x01\x10\x04\x00"
    main = build_request("Main", 0, b"", 500, zeros)
    assert main[18] == 0x02 and len(main) == 48 + 4 * 2 * 3 * (2 * 36 + 3 * 40)
    assert packet[-16:] == b"\x00\x00\x00\x10\x03\x11\x01\xf4vpngroup"


@given(st.binary(max_size=120))
def test_ike_parse_total(data: bytes) -> None:
    with contextlib.suppress(IkeError):
        parse_response(data)


def test_lua_patterns() -> None:
    assert lua_pattern("^afcad71368a1f1c96b8696fc7757....").search(
        "afcad71368a1f1c96b8696fc77570100"
    )
    assert not lua_pattern("^72872B95").search("72872b95")
    assert lua_pattern("%x+%-x").search("ab-x")


def test_fingerprint_file_parses() -> None:
    rows = parse_fingerprints(
        "table.insert(fingerprints, {\n  category = 'vendor',\n  vendor = 'Acme',\n"
        "  version = nil, -- a comment with 'quotes'\n  ostype = \"Os\",\n"
        "  fingerprint = '^abcd'\n});\n"
    )
    assert rows == [Fingerprint("vendor", "^abcd", "Acme", None, "Os")]


ROWS = [
    Fingerprint("attribute", "^afcad71368a1f1c96b8696fc77570100", text="Dead Peer Detection v1.0"),
    Fingerprint(
        "vendor",
        "^4a131c81070358455c5728f20e95452f",
        "strongSwan",
        "5",
        "Linux",
        "general purpose",
        "cpe:/a:strongswan:strongswan:5",
    ),
    Fingerprint("vid_ordering", "^afcad7.*4a131c", "Other", ostype="X"),
]


def test_lookup_like_nmap() -> None:
    info = lookup([DPD_V1.hex(), RFC3947.hex()], ROWS)
    assert info.vendor is not None and info.vendor.vendor == "strongSwan"
    assert [r.text for r in info.attributes] == ["Dead Peer Detection v1.0"]
    ordering = lookup([DPD_V1.hex(), "4a131c00"], ROWS)
    assert ordering.vendor is not None and ordering.vendor.vendor == "Other"


def ike_peer(answer: Any = ike_answer, only_mode: int | None = None) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> bytes | None:
        if only_mode is not None and data[18] != only_mode:
            return None
        reply: bytes | None = answer(data)
        return reply

    return respond


def test_ike_version_vendor_row() -> None:
    exchange = FakeExchange(ike_peer(), port=500, protocol="udp")
    result = port_result(500, "isakmp", "udp", state="open|filtered", ostype="old")
    service = scan(result, IkeVersion(ROWS), exchange)
    assert (service["product"], service["version"], service["ostype"], service["devicetype"]) == (
        "strongSwan", "5", "Linux", "general purpose",
    )  # fmt: skip
    assert service["cpe"] == ["cpe:/a:strongswan:strongswan:5"]
    assert (result["state"], service["method"], service["conf"]) == ("open", "probed", 10)
    assert len(exchange.connections) == 1


def test_ike_version_falls_back_to_main_mode_and_no_vid_opens_only() -> None:
    exchange = FakeExchange(ike_peer(only_mode=0x02), port=500, protocol="udp")
    result = port_result(500, "isakmp", "udp", state="open|filtered")
    scan(result, IkeVersion(ROWS), exchange)
    assert [c.sent[0][18] for c in exchange.connections] == [4, 4, 4, 2]
    assert result["service"]["product"] == "strongSwan"

    def bare(request: bytes) -> bytes:
        return request[:8] + b"\x11" * 8 + struct.pack(">BBBBII", 0, 0x10, 4, 0, 0, 28)

    plain = port_result(500, "isakmp", "udp", state="open|filtered")
    scan(plain, IkeVersion(ROWS), FakeExchange(ike_peer(bare), port=500, protocol="udp"))
    assert plain["state"] == "open" and plain["service"]["method"] == "table"


def test_ike_informational_answers_are_no_answer() -> None:
    def informational(request: bytes) -> bytes:
        return request[:8] + b"\x11" * 8 + struct.pack(">BBBBII", 0, 0x10, 5, 0, 0, 28)

    result = port_result(500, "isakmp", "udp", state="open|filtered")
    exchange = FakeExchange(ike_peer(informational), port=500, protocol="udp")
    scan(result, IkeVersion(ROWS), exchange)
    assert result["state"] == "open|filtered" and len(exchange.connections) == 4


def test_nmap_fingerprint_file_when_installed() -> None:
    rows = load_fingerprints()
    if not rows:
        return  # no Nmap data files here: nothing to check
    categories = {r.category for r in rows}
    assert categories == {"vendor", "attribute", "vid_ordering"}
    info = lookup([DPD_V1.hex()], rows)
    assert any("Dead Peer Detection" in (r.text or "") for r in info.attributes)


# -- PPTP --------------------------------------------------------------------


def test_pptp_version() -> None:
    def respond(conn: FakeConnection, data: bytes) -> bytes | None:
        return pptp_reply() if data == REQUEST else None

    exchange = FakeExchange(respond, port=1723)
    service = scan(port_result(1723, "pptp", product="Point to Point Tunneling Protocol"),
                   PptpVersion(), exchange)  # fmt: skip
    assert (service["name"], service["product"], service["version"], service["hostname"]) == (
        "pptp", "Linux", "(Firmware: 258)", "pptp-gw",
    )  # fmt: skip
    assert len(REQUEST) == 156


@given(st.binary(max_size=200))
def test_pptp_parse_total(tail: bytes) -> None:
    reply = parse_reply(b"\x00\x9c\x00\x01\x1a\x2b" + tail)
    assert (reply is None) == (len(tail) <= 88)


def test_udp_rules() -> None:
    ctx = RuleContext()
    assert SnmpInfo({}).portrule(PortView("h", 161, "udp", "open|filtered"), ctx)
    assert not SnmpInfo({}).portrule(PortView("h", 161, "tcp", "open"), ctx)
    assert StunVersion().portrule(PortView("h", 9, "udp", "open", name="stun"), ctx)
    assert IkeVersion(ROWS).portrule(PortView("h", 500, "udp", "open|filtered"), ctx)
    assert PptpVersion().portrule(PortView("h", 1723, "tcp", "open"), ctx)
    assert not PptpVersion().portrule(PortView("h", 1724, "tcp", "open", name="pptp"), ctx)
