"""s7-info, enip-info, bacnet-info, fox-info, omron-info, iec61850-mms: fake peers,
Nmap's quirks, hostile peers on a Clock, and property tests of every parser."""

from __future__ import annotations

import contextlib
import struct
from collections.abc import Callable
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer, task

from tests.e2e import script_servers_industrial as devices
from tests.test_scripts_brokers import port_result, scan
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT, ScriptFailed, Table
from vscand.scripts.api import BaseScript, PortView, RuleContext
from vscand.scripts.builtin.bacnet_info import BacnetInfo, field_size, query, vendor_number
from vscand.scripts.builtin.enip_info import LIST_IDENTITY, EnipInfo, parse_identity
from vscand.scripts.builtin.fox_info import HELLO, FoxInfo, parse_hello
from vscand.scripts.builtin.iec61850_mms import Iec61850Mms
from vscand.scripts.builtin.omron_info import OmronInfo, parse_controller_data, tcp_request
from vscand.scripts.builtin.s7_info import (
    ALT_COTP,
    COTP,
    S7Info,
    first_szl,
    remove_empty,
    second_szl,
)
from vscand.scripts.exchange import ExchangeTimeout
from vscand.scripts.proto.luastring import LuaError
from vscand.scripts.registry import SINCE, builtin_scripts
from vscand.scripts.runner import ScriptRunner
from vscand.scripts.testing import FakeConnection, FakeExchange, Reply

VENDORS = {1: "Rockwell Automation/Allen-Bradley", 260: "BACnet Stack at SourceForge"}
DEVICES = {14: "Programmable Logic Controller"}


def script_output(service: dict[str, Any], name: str) -> dict[str, Any] | None:
    for result in service.get("script_results") or ():
        if result["id"] == name:
            return dict(result)
    return None


def elements(service: dict[str, Any], name: str) -> list[tuple[str, str]]:
    found = script_output(service, name)
    assert found is not None, service
    return [(e["key"], e["value"]) for e in found["elements"]]


def stream_peer(handler: Callable[[bytes], bytes | None]) -> Any:
    """A TCP peer answering each request (None: it hangs up)."""

    def respond(conn: FakeConnection, data: bytes) -> Reply:
        answer = handler(data)
        return Reply([answer]) if answer is not None else Reply(close=True)

    return respond


def udp_peer(answer: Callable[[bytes], bytes | None]) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> bytes | None:
        return answer(data)

    return respond


# -- s7-info -----------------------------------------------------------------------------


def s7_device(first: bytes | None = None, second: bytes | None = None, tsap: bytes = b"") -> Any:
    """The lookalike's S7 answers; ``tsap``: only a COTP request holding it is confirmed."""

    def handler(data: bytes) -> bytes | None:
        if data[5] == 0xE0:
            return devices.s7_connect_confirm() if tsap in data else b"\x03\x00\x00\x07\x02\x80\x00"
        if data[8] == 0x01:
            return devices.s7_setup_ack()
        szl = struct.unpack(">H", data[29:31])[0]
        if szl == 0x0011:
            return first if first is not None else devices.s7_szl_0011()
        return second if second is not None else devices.s7_szl_001c()

    return stream_peer(handler)


S7_ELEMENTS = [
    ("Module", "6ES7 315-2EH14-0AB0"),
    ("Basic Hardware", "6ES7 315-2EH14-0AB0"),
    ("Version", "3.2.6"),
    ("System Name", "SIMATIC 300(Line 4)"),
    ("Module Type", "CPU 315-2 PN/DP"),
    ("Plant Identification", ""),  # NSE's removal skipped it (it followed a removed key)
    ("Copyright", "Original Siemens Equipment"),
]


def test_s7_info_reads_both_szl_answers() -> None:
    exchange = FakeExchange(s7_device(), port=102)
    service = scan(port_result(102, "iso-tsap"), S7Info(), exchange)
    assert (service["name"], service["product"], service["devicetype"], service["method"]) == (
        "iso-tsap", "Siemens S7 PLC", "specialized", "probed",
    )  # fmt: skip
    assert elements(service, "s7-info") == S7_ELEMENTS
    assert exchange.connections[0].sent[0] == COTP
    assert len(exchange.connections) == 1


def test_s7_info_falls_back_to_tsap_0x0200_on_a_new_connection() -> None:
    exchange = FakeExchange(s7_device(tsap=b"\xc2\x02\x02\x00"), port=102)
    service = scan(port_result(102, "iso-tsap"), S7Info(), exchange)
    assert [c.sent[0] for c in exchange.connections] == [COTP, ALT_COTP]
    assert exchange.connections[0].closed
    assert service["product"] == "Siemens S7 PLC"


def test_s7_info_not_cotp_changes_nothing() -> None:
    exchange = FakeExchange(stream_peer(lambda data: b"HTTP/1.0 400 Bad\r\n\r\n"), port=102)
    service = scan(port_result(102, "iso-tsap"), S7Info(), exchange)
    assert service["method"] == "table" and script_output(service, "s7-info") is None
    assert len(exchange.connections) == 2


def test_s7_info_second_answer_not_s7comm_is_nmaps_runtime_error() -> None:
    second = b"\x03\x00\x00\x0b\x02\xf0\x80\x00\x00\x00\x00"
    service = scan(port_result(102, "iso-tsap"), S7Info(), FakeExchange(s7_device(second=second)))
    assert service["method"] == "table" and service["product"] is None
    assert script_output(service, "s7-info") == {
        "id": "s7-info", "output": SCRIPT_ERROR_OUTPUT, "elements": None,
    }  # fmt: skip


def test_s7_info_short_first_answer_kills_the_script() -> None:
    short = devices.s7_szl_0011()[:124]
    service = scan(port_result(102, "iso-tsap"), S7Info(), FakeExchange(s7_device(first=short)))
    assert script_output(service, "s7-info") is not None
    assert service["product"] is None


def test_s7_info_empty_strings_leave_an_empty_table() -> None:
    first = devices._place(153, {8: b"\x32", 44: b"\x00", 72: b"\x00", 123: b"\x00"}, b"")
    second = devices._place(60, {8: b"\x32", 31: b"\x1c", 40: b"\x00"}, b"")
    output = second_szl(second, first_szl(first, Table()))
    assert output is not None
    # Module removed, Basic Hardware skipped (kept ""), Version "0.0.0" kept, System Name removed
    assert output.fields == [("Basic Hardware", ""), ("Version", "0.0.0")]


def test_remove_empty_skips_the_key_after_each_removal() -> None:
    table = Table.of({"a": "", "b": "", "c": "", "d": "x", "e": ""})
    remove_empty(table)
    assert table.fields == [("b", ""), ("d", "x")]


def test_s7_second_answer_without_output_is_a_lua_error() -> None:
    with pytest.raises(LuaError):
        second_szl(devices.s7_szl_001c(), None)
    assert second_szl(b"\x03\x00\x00\x07\x02\xf0\x80", None) is None


@given(st.binary(max_size=260), st.binary(max_size=260))
def test_s7_parsers_raise_only_lua_errors(first: bytes, second: bytes) -> None:
    with contextlib.suppress(LuaError):
        second_szl(second, first_szl(first, Table()))


# -- enip-info ---------------------------------------------------------------------------

ENIP_ELEMENTS = [
    ("type", "Programmable Logic Controller (14)"),
    ("vendor", "Rockwell Automation/Allen-Bradley (1)"),
    ("productName", "1756-L61/B LOGIX5561"),
    ("serialNumber", "0x00c0ffee"),
    ("productCode", "89"),
    ("revision", "20.11"),
    ("status", "0x0060"),
    ("state", "0x03"),
    ("deviceIp", "192.168.1.50"),
]


@pytest.mark.parametrize("protocol", ["tcp", "udp"])
def test_enip_info_list_identity(protocol: str) -> None:
    exchange = FakeExchange(udp_peer(devices.enip_identity), port=44818, protocol=protocol)
    result = port_result(44818, "EtherNetIP-2", protocol, state="open|filtered")
    service = scan(result, EnipInfo(VENDORS, DEVICES), exchange)
    assert (result["state"], service["name"], service["method"]) == (
        "open",
        "EtherNet-IP-2",
        "probed",
    )
    assert elements(service, "enip-info") == ENIP_ELEMENTS
    assert exchange.connections[0].sent == [LIST_IDENTITY]


def test_enip_unknown_numbers_and_zero_formats() -> None:
    answer = bytearray(devices.enip_identity(LIST_IDENTITY) or b"")
    answer[48:62] = bytes(14)  # vendor, type, product, revision, status, serial: all zero
    table = parse_identity(bytes(answer), {}, {})
    assert table is not None
    assert table["vendor"] == "Unknown Vendor Number (0)"
    assert table["type"] == "Unknown Device Type (0)"
    assert (table["serialNumber"], table["status"], table["revision"]) == (
        "00000000",
        "0000",
        "0.0",
    )


def test_enip_not_an_identity_or_short() -> None:
    good = devices.enip_identity(LIST_IDENTITY) or b""
    assert parse_identity(b"\x64" + good[1:], {}, {}) is None
    assert parse_identity(good[:26], {}, {}) is None
    assert parse_identity(good[:26] + b"\x0b" + good[27:], {}, {}) is None
    for cut in (30, 50, 63, len(good) - 1):
        with pytest.raises(LuaError):
            parse_identity(good[:cut], {}, {})
    lying = bytearray(good)
    lying[62] = 200  # product name length past the end
    with pytest.raises(LuaError):
        parse_identity(bytes(lying), {}, {})


def test_enip_short_answer_is_nmaps_runtime_error_and_names_nothing() -> None:
    exchange = FakeExchange(udp_peer(lambda d: (devices.enip_identity(d) or b"")[:45]), port=44818)
    service = scan(port_result(44818, "EtherNetIP-2"), EnipInfo(VENDORS, DEVICES), exchange)
    assert service["name"] == "EtherNetIP-2"
    assert (script_output(service, "enip-info") or {})["output"] == SCRIPT_ERROR_OUTPUT


@given(st.binary(max_size=120))
def test_enip_parser_raises_only_lua_errors(data: bytes) -> None:
    with contextlib.suppress(LuaError):
        parse_identity(b"\x63" + data[:25] + b"\x0c" + data[25:], VENDORS, DEVICES)


# -- bacnet-info -------------------------------------------------------------------------

BACNET_ELEMENTS = [
    ("Vendor ID", "BACnet Stack at SourceForge (260)"),
    ("Vendor Name", "BACnet Stack at SourceForge"),
    ("Object-identifier", "260001"),
    ("Firmware", "0.8.6"),
    ("Application Software", "1.0"),
    ("Object Name", "SimpleServer"),
    ("Model Name", "GNU"),
    ("Location", "Z\xc3\xbcrich"),  # UCS-2 to UTF-8; the output carries the bytes
]


@pytest.mark.parametrize("protocol", ["udp", "tcp"])
def test_bacnet_info_reads_the_device_object(protocol: str) -> None:
    exchange = FakeExchange(udp_peer(devices.bacnet_answer), port=47808, protocol=protocol)
    result = port_result(47808, "bacnet", protocol, state="open|filtered")
    service = scan(result, BacnetInfo(VENDORS), exchange)
    assert (result["state"], service["name"], service["method"]) == ("open", "bacnet", "probed")
    assert elements(service, "bacnet-info") == BACNET_ELEMENTS
    sent = exchange.connections[0].sent
    assert [s[16] for s in sent] == [0x4B, 0x78, 0x79, 0x2C, 0x0C, 0x4D, 0x46, 0x1C, 0x3A]
    assert sent[0] == query(0x4B) and len(sent[0]) == 17


def test_bacnet_error_pdu_first_is_a_string_output() -> None:
    error = bytes.fromhex("810a000d010050010c91029120")
    exchange = FakeExchange(udp_peer(lambda d: error), port=47808, protocol="udp")
    service = scan(port_result(47808, "bacnet", "udp"), BacnetInfo(VENDORS), exchange)
    assert service["name"] == "bacnet" and service["method"] == "probed"
    found = script_output(service, "bacnet-info")
    assert found == {
        "id": "bacnet-info",
        "output": "\nBACNet ADPU Type: Error (5) \n\t" + error.hex(),
        "elements": None,
    }


def test_bacnet_dies_after_naming_the_port() -> None:
    """A short answer to a later query: Nmap's Lua dies, the name it set stands."""

    def answer(request: bytes) -> bytes | None:
        full = devices.bacnet_answer(request)
        return full[:15] if full is not None and request[16] == 0x2C else full

    exchange = FakeExchange(udp_peer(answer), port=47808, protocol="udp")
    service = scan(port_result(47808, "bacnet", "udp"), BacnetInfo(VENDORS), exchange)
    assert service["name"] == "bacnet" and service["method"] == "probed"
    assert (script_output(service, "bacnet-info") or {})["output"] == SCRIPT_ERROR_OUTPUT


def test_bacnet_not_bacnet_changes_nothing() -> None:
    exchange = FakeExchange(udp_peer(lambda d: devices.DTLS_ALERT), port=47808, protocol="udp")
    service = scan(port_result(47808, "bacnet", "udp"), BacnetInfo(VENDORS), exchange)
    assert service["method"] == "table" and script_output(service, "bacnet-info") is None
    assert len(exchange.connections[0].sent) == 1


def _packet(value: bytes) -> bytes:
    return bytes(17) + value


def test_field_size_layouts_and_lua_errors() -> None:
    assert field_size(_packet(b"\x74\x00GNU")) == "GNU"
    assert field_size(_packet(b"\x75\x06\x00hello")) == "hello"
    assert field_size(_packet(b"\x71\x00")) == ""
    assert field_size(_packet(b"\x73\x03ab")) == "ab"  # other charsets: the bytes as they are
    for bad in (b"", b"\x70\x00", b"\x75", b"\x75\x00\x00", b"\x75\x09\x00abc", b"\x74"):
        with pytest.raises(LuaError):
            field_size(_packet(bad))


def test_ucs2_beyond_unicode_differs_between_releases() -> None:
    """A high surrogate over a non-surrogate unit: past U+10FFFF, dropped by 7.93's
    encoder, written by Lua 5.4's utf8.char (7.95)."""
    raw = b"\x00A" + b"\xdf\xff\xff\xff" + b"\x00B"
    packet = _packet(bytes([0x75, len(raw) + 1, 4]) + raw)
    assert field_size(packet, "7.93") == "AB"
    assert field_size(packet, "7.95").encode("latin-1") == b"A\xf8\x88\x91\xbf\xbfB"
    with pytest.raises(LuaError):
        field_size(_packet(bytes([0x74, 4]) + b"\x00A\x00"))  # an odd byte


def test_vendor_number_forms() -> None:
    head = b"\x81\x0a\x00\x00\x01\x00\x30" + bytes(10)
    assert vendor_number(head + b"\x21\x01", VENDORS) == "Rockwell Automation/Allen-Bradley (1)"
    assert vendor_number(head + b"\x22\x01\x04", VENDORS) == "BACnet Stack at SourceForge (260)"
    assert vendor_number(head + b"\x22\x09\x99", {}) == "Unknown Vendor Number (2457)"
    assert vendor_number(head + b"\x23\x00\x00\x01", VENDORS) is None
    for bad in (head + b"\x21", head + b"\x22\x01"):
        with pytest.raises(LuaError):
            vendor_number(bad, VENDORS)


@given(st.binary(max_size=60), st.sampled_from(["7.93", "7.95"]))
def test_bacnet_parsers_raise_only_lua_errors(data: bytes, release: str) -> None:
    for parse in (lambda: field_size(data, release), lambda: vendor_number(data, VENDORS)):
        with contextlib.suppress(LuaError):
            parse()


# -- fox-info ----------------------------------------------------------------------------


def fox_peer(answer: bytes) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> Reply | None:
        return Reply([answer], close=True) if data == HELLO else None

    return respond


def test_fox_info_names_and_hostname() -> None:
    exchange = FakeExchange(fox_peer(devices.FOX_HELLO), port=1911)
    result = port_result(1911, "niagara-fox", method="probed", conf=10, product="Tridium Niagara")
    service = scan(result, FoxInfo(), exchange)
    assert (service["name"], service["product"], service["hostname"], service["tunnel"]) == (
        "niagara-fox", "Tridium Niagara", "bas-jace-01", None,
    )  # fmt: skip
    got = dict(elements(service, "fox-info"))
    assert got["timeZone"] == "America/New_York" and "os.arch" not in got
    assert list(got)[:3] == ["fox.version", "hostName", "hostAddress"]


def test_fox_info_over_tls_sets_the_tunnel() -> None:
    exchange = FakeExchange(fox_peer(devices.FOX_HELLO), port=4911, tls_ok=True)
    service = scan(port_result(4911, "unknown"), FoxInfo(), exchange)
    assert exchange.attempts[0][2] is True  # 4911 is a likely-SSL port: TLS first
    assert (service["name"], service["tunnel"]) == ("niagara-fox", "ssl")


def test_fox_hostname_that_is_an_address_is_not_set() -> None:
    answer = b"fox a 0 -1 fox hello\n{\nhostName=s:10.1.2.3\nhostName=s:...\n};;\n"
    output, hostname = parse_hello(answer) or (Table(), "x")
    assert hostname is None and output.fields == [("hostName", "...")]


def test_fox_quirks() -> None:
    assert parse_hello(b"fox a 1 -1 {\n") is None
    assert parse_hello(b"fox a 0 -1 fox hello\n") is None
    parsed = parse_hello(b"fox a 0 {\ntimeZone=s:UTC;x\ntimeZone=s:;y\nfatal=s:bad\r\n")
    assert parsed is not None
    assert parsed[0].fields == [("fatal", "bad\r")]  # a zone without a name removes the key
    with pytest.raises(LuaError):
        parse_hello(b"fox a 0 {\nhostName=s::\n")


def test_fox_empty_table_changes_nothing() -> None:
    exchange = FakeExchange(fox_peer(b"fox a 0 -1 fox hello\n{\nid=i:1\n};;\n"), port=1911)
    service = scan(port_result(1911, "mtp"), FoxInfo(), exchange)
    assert service["name"] == "mtp" and script_output(service, "fox-info") is None


@given(st.binary(max_size=200))
def test_fox_parser_raises_only_lua_errors(data: bytes) -> None:
    with contextlib.suppress(LuaError):
        parse_hello(b"fox a 0 {" + data)


# -- omron-info --------------------------------------------------------------------------

OMRON_ELEMENTS = [
    ("Response Code", "Normal completion (0x0000)"),
    ("Controller Model", "CJ2M-CPU31"),
    ("Controller Version", "02.01"),
    ("For System Use", ""),
    ("Program Area Size", "20"),
    ("IOM size", "23"),
    ("No. DM Words", "32768"),
    ("Timer/Counter", "8"),
    ("Expansion DM Size", "0"),
    ("No. of steps/transitions", "12"),
    ("Kind of Memory Card", "No Memory Card"),
    ("Memory Card Size", "0"),
]


def omron_tcp_peer(request: bytes) -> bytes | None:
    if request[8:12] == b"\x00\x00\x00\x00":
        return b"FINS" + struct.pack(">IIIII", 16, 1, 0, 0x22, 0x01)
    frame = devices.fins_controller_data(request[16:26])
    return b"FINS" + struct.pack(">III", 8 + len(frame), 2, 0) + frame


def test_omron_info_udp() -> None:
    exchange = FakeExchange(udp_peer(devices.omron_udp), port=9600, protocol="udp")
    result = port_result(9600, "micromuse-ncpw", "udp", state="open|filtered")
    service = scan(result, OmronInfo(), exchange)
    assert (result["state"], service["name"], service["method"]) == ("open", "fins", "probed")
    assert elements(service, "omron-info") == OMRON_ELEMENTS


def test_omron_info_tcp_addresses_the_request_with_byte_24() -> None:
    exchange = FakeExchange(stream_peer(omron_tcp_peer), port=9600)
    service = scan(port_result(9600, "micromuse-ncpw"), OmronInfo(), exchange)
    assert elements(service, "omron-info") == OMRON_ELEMENTS
    sent = exchange.connections[0].sent
    assert sent[1] == tcp_request(b"F" * 23 + b"\x01") and sent[1][20] == 0x01


@pytest.mark.parametrize(
    ("code", "text"),
    [(b"\x21\x08", "Data cannot be changed (0x2108)"),
     (b"\x22\x01", "The mode is wrong (executing) (0x2201)"),
     (b"\x01\x00", "Unknown Response Code")],
)  # fmt: skip
def test_omron_response_codes(code: bytes, text: str) -> None:
    table = parse_controller_data(b"\xc0" + bytes(11) + code, 0)
    assert table is not None and table.fields == [("Response Code", text)]


def test_omron_short_answer_names_the_port_then_dies() -> None:
    exchange = FakeExchange(udp_peer(lambda d: b"\xc0\x00\x02"), port=9600, protocol="udp")
    service = scan(port_result(9600, "micromuse-ncpw", "udp"), OmronInfo(), exchange)
    assert (service["name"], service["method"]) == ("fins", "probed")
    assert (script_output(service, "omron-info") or {})["output"] == SCRIPT_ERROR_OUTPUT


def test_omron_tcp_address_answer_too_short_dies_before_naming() -> None:
    exchange = FakeExchange(stream_peer(lambda d: b"FINS\x00"), port=9600)
    service = scan(port_result(9600, "micromuse-ncpw"), OmronInfo(), exchange)
    assert service["method"] == "table"
    assert (script_output(service, "omron-info") or {})["output"] == SCRIPT_ERROR_OUTPUT


@given(st.binary(max_size=140), st.sampled_from([0, 16]))
def test_omron_parser_raises_only_lua_errors(data: bytes, offset: int) -> None:
    with contextlib.suppress(LuaError):
        parse_controller_data(b"\xc0" + data, offset)


# -- iec61850-mms ------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", ["tcp", "udp", "sctp"])
def test_iec61850_mms_rule_never_holds(protocol: str) -> None:
    port = PortView("127.0.0.1", 102, protocol, "open", name="iso-tsap")
    assert not Iec61850Mms().portrule(port, RuleContext(release="7.95"))


def test_iec61850_mms_only_from_795() -> None:
    assert SINCE["iec61850-mms"] == "7.95"
    assert "iec61850-mms" not in {s.name for s in builtin_scripts(release="7.93")}
    assert "iec61850-mms" in {s.name for s in builtin_scripts(release="7.95")}


# -- rules -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("script", "number", "protocol", "name"),
    [(S7Info(), 102, "tcp", None), (S7Info(), 4000, "tcp", "iso-tsap"),
     (EnipInfo(), 44818, "udp", None), (EnipInfo(), 2222, "tcp", "EtherNet/IP-2"),
     (BacnetInfo(), 47808, "tcp", None), (BacnetInfo(), 1000, "udp", "bacnet"),
     (FoxInfo(), 4911, "tcp", None), (FoxInfo(), 80, "tcp", "niagara-fox"),
     (OmronInfo(), 9600, "udp", None), (OmronInfo(), 1, "tcp", "fins")],
)  # fmt: skip
def test_rules(script: Any, number: int, protocol: str, name: str | None) -> None:
    port = PortView("127.0.0.1", number, protocol, "open", name=name)
    assert script.portrule(port, RuleContext())
    assert not script.portrule(port, RuleContext(intensity=6))
    assert not script.portrule(port, RuleContext(excluded=lambda p, proto: True))
    other = PortView("127.0.0.1", number + 1, protocol, "open", name="http")
    assert not script.portrule(other, RuleContext())


# -- hostile peers, on a Clock -----------------------------------------------------------


class ClockConnection:
    """A connection whose silent peer makes every read wait its whole timeout."""

    def __init__(self, clock: task.Clock, answer: Callable[[bytes], bytes | None]) -> None:
        self.clock, self.answer = clock, answer
        self.pending: list[bytes] = []
        self.waits: list[float] = []

    def send(self, data: bytes) -> None:
        reply = self.answer(data)
        if reply is not None:
            self.pending.append(reply)

    async def _wait(self, timeout: float) -> bytes:
        if self.pending:
            return self.pending.pop(0)
        self.waits.append(timeout)
        await task.deferLater(self.clock, timeout, lambda: None)
        raise ExchangeTimeout("silent")

    async def receive(self, timeout: float, max_bytes: int | None = None) -> bytes:
        return await self._wait(timeout)

    async def receive_at_least(self, count: int, timeout: float) -> bytes:
        return await self._wait(timeout)

    async def receive_exactly(self, count: int, timeout: float) -> bytes:
        return await self._wait(timeout)

    def close(self) -> None:
        pass


class ClockExchange:
    def __init__(self, clock: task.Clock, port: int, protocol: str, answer: Any) -> None:
        self.address, self.port, self.protocol = "127.0.0.1", port, protocol
        self.clock, self.answer = clock, answer
        self.connections: list[ClockConnection] = []

    async def connect(self, **_kwargs: Any) -> ClockConnection:
        conn = ClockConnection(self.clock, self.answer)
        self.connections.append(conn)
        return conn


def run_on_clock(script: Any, result: dict[str, Any], exchange: ClockExchange) -> float:
    """Run the script; the simulated seconds it took."""
    clock = task.Clock()
    exchange.clock = clock
    runner = ScriptRunner(clock, [script], exchange_factory=lambda view: exchange)
    done = defer.Deferred.fromCoroutine(runner.run_host([result], RuleContext()))
    while not done.called:
        clock.advance(0.5)
        assert clock.seconds() <= 200, "the script did not end"
    return clock.seconds()


def silent(_data: bytes) -> None:
    return None


@pytest.mark.parametrize(
    ("script", "number", "protocol", "bound"),
    [(S7Info(), 102, "tcp", 60.0),  # two COTP reads, 30 s each
     (EnipInfo(), 44818, "udp", 2.0),  # one read, stdnse.get_timeout
     (BacnetInfo(), 47808, "udp", 30.0),  # the first read only
     (OmronInfo(), 9600, "udp", 30.0), (OmronInfo(), 9600, "tcp", 30.0),
     (FoxInfo(), 1911, "tcp", 16.0)],  # comm.tryssl: two tries of 8 s
)  # fmt: skip
def test_silent_peer_ends_within_the_scripts_bound(
    script: Any, number: int, protocol: str, bound: float
) -> None:
    exchange = ClockExchange(task.Clock(), number, protocol, silent)
    result = port_result(number, None, protocol, state="open|filtered")
    took = run_on_clock(script, result, exchange)
    assert bound <= took <= bound + 0.5
    assert result["service"]["method"] == "table" and result["state"] == "open|filtered"


def test_bacnet_device_going_silent_is_cut_by_the_port_budget() -> None:
    """The first answer names the port; eight silent queries would take Nmap 240 s.
    Our port budget (120 s) cancels the script: it changes nothing (DESIGN.md)."""

    def first_only(request: bytes) -> bytes | None:
        return devices.bacnet_answer(request) if request[16] == 0x4B else None

    exchange = ClockExchange(task.Clock(), 47808, "udp", first_only)
    result = port_result(47808, "bacnet", "udp")
    took = run_on_clock(BacnetInfo(VENDORS), result, exchange)
    assert 120.0 <= took <= 120.5
    assert result["service"]["method"] == "table"


def garbage(size: int) -> Callable[[bytes], bytes]:
    return lambda _data: bytes(range(256)) * (size // 256) + b"\xff" * (size % 256)


@pytest.mark.parametrize("size", [1, 7, 200, 1 << 20])
@pytest.mark.parametrize(
    ("script", "number", "protocol"),
    [(S7Info(), 102, "tcp"), (EnipInfo(), 44818, "tcp"), (BacnetInfo(), 47808, "udp"),
     (OmronInfo(), 9600, "tcp"), (OmronInfo(), 9600, "udp"), (FoxInfo(), 1911, "tcp")],
)  # fmt: skip
def test_garbage_and_oversized_answers(script: Any, number: int, protocol: str, size: int) -> None:
    """Binary garbage of any size: the script ends at once, no exception escapes, and it
    names nothing it should not (garbage starting 0x00 is no device)."""
    exchange = ClockExchange(task.Clock(), number, protocol, garbage(size))
    result = port_result(number, None, protocol)
    took = run_on_clock(script, result, exchange)
    assert took <= 0.5
    assert result["service"]["method"] == "table"


class Strict(BaseScript):
    """A script whose unexpected exceptions are recorded (the runner would only log them)."""

    def __init__(self, script: Any) -> None:
        self.script, self.name = script, script.name
        self.errors: list[BaseException] = []

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return bool(self.script.portrule(port, ctx))

    async def action(self, run: Any) -> Any:
        try:
            return await self.script.action(run)
        except ScriptFailed:
            raise
        except Exception as exc:
            self.errors.append(exc)
            raise


@settings(max_examples=60, deadline=None)
@given(st.binary(max_size=300))
def test_any_answer_to_any_query(answer: bytes) -> None:
    """Every script against a peer answering ``answer`` to everything: at once, and
    nothing escapes but Nmap's runtime error (ScriptFailed)."""
    targets = ((S7Info(), 102, "tcp"), (EnipInfo({}, {}), 44818, "udp"),
               (BacnetInfo({}), 47808, "udp"), (OmronInfo(), 9600, "tcp"),
               (OmronInfo(), 9600, "udp"), (FoxInfo(), 1911, "tcp"))  # fmt: skip
    for script, number, protocol in targets:
        strict = Strict(script)
        exchange = ClockExchange(task.Clock(), number, protocol, lambda _d: answer)
        assert run_on_clock(strict, port_result(number, None, protocol), exchange) <= 0.5
        assert strict.errors == []
