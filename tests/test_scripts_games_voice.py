"""freelancer-info, teamspeak2-version, ventrilo-info: fake peers (the e2e lookalikes' answers
and hostile variants), the pattern matchers against Python's backtracking ``re``, Ventrilo's
decryption against the lookalike's encryption, property-tested."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.e2e import script_servers_games as games
from tests.test_scripts_brokers import scan
from tests.test_scripts_games import Recording, output, peer, udp
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT, ScriptFailed, Table
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin.freelancer_info import QUERY, FreelancerInfo, clean, match_status
from vscand.scripts.builtin.teamspeak2_version import LOGIN, TeamSpeak2Version, match_login_reply
from vscand.scripts.builtin.ventrilo_crypt import (
    PROBE_ID,
    STATUS_REQUEST,
    crc,
    decode_data,
    decode_header,
    load_tables,
)
from vscand.scripts.builtin.ventrilo_info import VentriloInfo
from vscand.scripts.builtin.ventrilo_status import format_status, parse_status, uptime_str
from vscand.scripts.runner import ScriptRunner
from vscand.scripts.testing import FakeExchange, Reply

TABLES = load_tables()
needs_tables = pytest.mark.skipif(TABLES is None, reason="ventrilo-info.nse is not installed")

# -- freelancer-info --------------------------------------------------------------------

FREELANCER_RE = re.compile(
    rb"\A\x00\x03\xf1\x26.{12}(.).{3}(.).{3}(.).{67}(.*)\x00\x00(.):(.):.*:.*:.*:(.*)\x00\x00\Z",
    re.DOTALL,
)


def test_freelancer_status() -> None:
    assert QUERY == games.FREELANCER_QUERY
    result = udp(2302, "freelancer")
    exchange = Recording(peer(games.freelancer_answer), protocol="udp")
    service = scan(result, FreelancerInfo(), exchange)
    assert exchange.timeouts == [6.0] and result["state"] == "open"
    assert service["extrainfo"] == "name: Lookalike RP 24/7; players: 152/225; password: no"
    out = output(service, "freelancer-info")
    assert out is not None
    assert [(e["key"], e["value"]) for e in out["elements"]] == [
        ("server name", "Lookalike RP 24/7"),
        ("server description", "A lookalike server, see example.org"),
        ("players", "152"), ("max. players", "225"), ("password", "no"),
        ("allow players to harm other players", "yes"), ("allow new players", "no"),
    ]  # fmt: skip


@settings(max_examples=300)
@given(st.binary(min_size=88, max_size=88), st.lists(st.sampled_from(
    [b"\x00", b":", b"a", b"1", b"\x00\x00"]), max_size=24))  # fmt: skip
def test_freelancer_matcher_is_luas_backtracking(middle: bytes, tail: list[bytes]) -> None:
    data = b"\x00\x03\xf1\x26" + middle + b"".join(tail)
    want = FREELANCER_RE.match(data)
    got = match_status(data)
    if want is None:
        assert got is None
        return
    assert got is not None
    assert (bytes([got.password]), bytes([got.max_players]), bytes([got.players]), got.name,
            got.pvp, got.new_players, got.description) == want.groups()  # fmt: skip


@pytest.mark.parametrize(
    "data", [b"", b"\x00\x03\xf1\x26", b"\x00\x03\xf1\x26" + b":" * 70000, b"\xff" * 500]
)
def test_freelancer_hostile(data: bytes) -> None:
    result = udp(2302)
    service = scan(result, FreelancerInfo(), FakeExchange(peer(lambda d: data), protocol="udp"))
    assert service["method"] == "table" and output(service, "freelancer-info") is None
    assert result["state"] == ("open" if data else "open|filtered")


def test_freelancer_clean_keeps_printable_and_space() -> None:
    assert clean("a\x00b\tc\x80 d~\x7f".encode("latin-1")) == "ab\tc d~"


# -- teamspeak2-version -----------------------------------------------------------------

TEAMSPEAK_RE = re.compile(
    rb"\A\xf4\xbe\x04\x00{5}.{13}([^\x00]*)[^\x21-\x7e]+([^\x00]*)\x00*(.{8})", re.DOTALL
)


def test_teamspeak2_login_reply() -> None:
    result = udp(8767, "teamspeak2", product="TeamSpeak 2", version="2.0.23.19",
                 cpe=["cpe:/a:teamspeak:teamspeak2:2.0.23.19"])  # fmt: skip
    exchange = Recording(peer(games.teamspeak2_answer), protocol="udp")
    service = scan(result, TeamSpeak2Version(), exchange)
    assert exchange.connections[0].sent == [LOGIN] and exchange.timeouts == [6.0]
    assert (service["product"], service["version"], service["ostype"]) == (
        "TeamSpeak", "2.0.23.19", "Windows")  # fmt: skip
    assert service["extrainfo"] == "name: COWCLANS; no password"
    assert output(service, "teamspeak2-version") is None


def test_teamspeak2_password_server_and_other_platform() -> None:
    reply = games.teamspeak2_reply(name=b"", platform=b"BeOS")
    service = scan(udp(8767), TeamSpeak2Version(), FakeExchange(peer(lambda d: reply)))
    assert (service["name"], service["version"], service["extrainfo"]) == ("teamspeak2", "2", None)
    reply = games.teamspeak2_reply(platform=b"Linux")
    service = scan(udp(8767), TeamSpeak2Version(), FakeExchange(peer(lambda d: reply)))
    assert service["ostype"] == "Linux"


@settings(max_examples=300)
@given(st.binary(min_size=13, max_size=13), st.lists(st.sampled_from(
    [b"\x00", b"\x01", b" ", b"A", b"\x80", b"W"]), max_size=30))  # fmt: skip
def test_teamspeak2_matcher_is_luas_backtracking(middle: bytes, tail: list[bytes]) -> None:
    data = b"\xf4\xbe\x04\x00\x00\x00\x00\x00" + middle + b"".join(tail)
    want = TEAMSPEAK_RE.match(data)
    got = match_login_reply(data)
    assert got == (want.groups() if want else None)


TS_HEADER = b"\xf4\xbe\x04\x00\x00\x00\x00\x00"


@pytest.mark.parametrize("data", [b"\xf4\xbe\x04", b"\x01" * 65000, TS_HEADER + b"\x01" * 65000])
def test_teamspeak2_hostile(data: bytes) -> None:
    result = udp(8767)
    service = scan(result, TeamSpeak2Version(), FakeExchange(peer(lambda d: data)))
    assert result["state"] == "open"
    if data.startswith(b"\xf4\xbe\x04\x00") and len(data) > 30:
        assert service["version"] is not None  # the pattern matches any long run
    else:
        assert service["method"] == "table"


# -- ventrilo-info ----------------------------------------------------------------------


@needs_tables
def test_ventrilo_request_and_lookalike_packets_decrypt() -> None:
    assert TABLES is not None
    header = decode_header(STATUS_REQUEST, TABLES)
    assert header is not None and header.id == PROBE_ID
    packets = games.ventrilo_packets(PROBE_ID, games.VENTRILO_TEXT, TABLES)
    parts = {}
    for packet in packets:
        head = decode_header(packet, TABLES)
        assert head is not None and head.total == len(games.VENTRILO_TEXT)
        parts[head.packet] = decode_data(packet, head.length, head.key, TABLES)
        assert head.crc == crc(games.VENTRILO_TEXT, TABLES)
    assert b"".join(parts[i] or b"" for i in sorted(parts)) == games.VENTRILO_TEXT


@needs_tables
@given(st.lists(st.integers(0, 0xFFFF), min_size=9, max_size=9), st.integers(1, 255),
       st.integers(0, 255))  # fmt: skip
def test_ventrilo_header_roundtrip(fields: list[int], step: int, index: int) -> None:
    assert TABLES is not None
    packet = games.encode_header(fields, (step, index), TABLES)
    head = decode_header(packet, TABLES)
    assert head is not None
    assert (head.id, head.total, head.length, head.packets, head.packet, head.key, head.crc) == (
        fields[2], fields[3], fields[4], fields[5], fields[6], fields[7], fields[8])  # fmt: skip


def ventrilo_peer(packets: list[bytes] | None = None) -> Any:
    assert TABLES is not None
    answer = games.ventrilo_answerer(TABLES)

    def respond(conn: Any, data: bytes) -> Reply:
        return Reply(packets if packets is not None else answer(data))

    return respond


@needs_tables
def test_ventrilo_udp_and_tcp_share_one_query() -> None:
    exchange = Recording(ventrilo_peer(), protocol="udp", port=3784)
    script = VentriloInfo()
    results = [udp(3784), {**udp(3784, "tcpwrapped", state="open", method="probed", conf=8),
                           "protocol": "tcp"}]  # fmt: skip
    runner = ScriptRunner(Clock(), [script], exchange_factory=lambda view: exchange)
    done = defer.Deferred.fromCoroutine(runner.run_host(results, RuleContext()))
    assert done.called
    assert len(exchange.connections) == 1 and exchange.attempts == [(3784, "udp", False)]
    assert exchange.timeouts == [2.0, 2.0]  # the first answer, then the second packet
    by_protocol = {r["protocol"]: r for r in results}
    assert by_protocol["udp"]["state"] == "open"
    udp_service, tcp_service = by_protocol["udp"]["service"], by_protocol["tcp"]["service"]
    assert udp_service["extrainfo"] == (
        "status port; name: Lookalike Vent; uptime: 153h:12m; auth: pw")  # fmt: skip
    assert tcp_service["extrainfo"].startswith("voice port; name: Lookalike Vent;")
    assert (tcp_service["version"], tcp_service["ostype"]) == ("3.0.3.C", "WIN32")
    out = output(udp_service, "ventrilo-info")
    assert out is not None and out == {**output(tcp_service, "ventrilo-info"), "id": out["id"]}
    assert "\n<clients with unrecognized CIDs> (CID: -1, PID: n/a, PROT: n/a, COMM: n/a): " in (
        out["output"])  # fmt: skip


@needs_tables
def test_ventrilo_silent_udp_port_three_tries() -> None:
    result = udp(3784)
    exchange = Recording(lambda c, d: None, protocol="udp")
    service = scan(result, VentriloInfo(), exchange)
    assert exchange.timeouts == [2.0] * 3 and exchange.connections[0].sent == [STATUS_REQUEST] * 3
    assert result["state"] == "open|filtered" and service["method"] == "table"


@needs_tables
@pytest.mark.parametrize(
    ("packets", "failed"),
    [
        ([b"\x01\x02\x03"], True),  # under 20 bytes: NSE's Lua dies
        ([b"\x05\x00" + b"\x00" * 30], True),  # header key 0: dies too
        ([b"\x01\x02" * 1000], False),  # another request id: read on, then silence
    ],
)
def test_ventrilo_hostile(packets: list[bytes], failed: bool) -> None:
    result = udp(3784)
    service = scan(result, VentriloInfo(), FakeExchange(ventrilo_peer(packets), protocol="udp"))
    assert result["state"] == "open" and service["method"] == "table"
    out = output(service, "ventrilo-info")
    assert (out is not None and out["output"] == SCRIPT_ERROR_OUTPUT) if failed else out is None


@needs_tables
def test_ventrilo_bad_crc_and_lying_lengths() -> None:
    assert TABLES is not None
    good = games.ventrilo_packets(PROBE_ID, games.VENTRILO_TEXT, TABLES)
    bad_crc = games.ventrilo_packets(PROBE_ID, games.VENTRILO_TEXT[:-1] + b"?", TABLES)
    mixed = [bad_crc[0], good[1]]  # the CRC of one text over another's data
    short = [good[0][:30]]  # a data part shorter than its header says: NSE dies
    for packets, failed in ((mixed, False), (short, True)):
        result = udp(3784)
        service = scan(result, VentriloInfo(), FakeExchange(ventrilo_peer(packets)))
        out = output(service, "ventrilo-info")
        assert service["method"] == "table"
        assert (out is not None and out["output"] == SCRIPT_ERROR_OUTPUT) if failed else out is None


def test_ventrilo_status_text() -> None:
    info = parse_status(games.VENTRILO_TEXT)
    text = format_status(info)
    assert text.startswith("\nname: Lookalike Vent\nphonetic: Look a like\n")
    assert "\nchannel fields: CID, PID, PROT, NAME, COMM\n" in text
    assert "\nOfficers (CID: 720, PID: 0, PROT: 1, COMM: secret): <empty>" in text
    assert "\n  stabya (ADMIN: 0, PHAN: 0, PING: 47, SEC: 206304, COMM: " in text
    assert [k for k, _ in info.fields][-4:] == [
        "channelfields", "channels", "clientcount", "clientfields"]  # fmt: skip


def test_ventrilo_missing_name_field_fails_when_printing() -> None:
    info = parse_status(b"CHANNELFIELDS: CID\nCHANNEL: CID=5\nCLIENTFIELDS: CID\n")
    with pytest.raises(ScriptFailed):
        format_status(info)


def test_ventrilo_uptime() -> None:
    assert uptime_str("3670") == "1h:1m" and uptime_str("x") == "x"
    assert uptime_str("-5") == "-1h:59m" and uptime_str("1e30").startswith("2.7777777777778e+26")


@settings(max_examples=300)
@given(st.lists(st.sampled_from([b"NAME: a\n", b"CHANNELFIELDS: CID,NAME\n",
    b"CHANNEL: CID=1,NAME=x\n", b"CLIENTFIELDS: CID,NAME\n", b"CLIENT: CID=9,NAME=y\n",
    b"CLIENT: CID=1\n", b"UPTIME: 7\n", b"\n", b",", b"="]), max_size=12))  # fmt: skip
def test_ventrilo_status_total(lines: list[bytes]) -> None:
    try:
        info = parse_status(b"".join(lines))
        assert isinstance(info, Table)
        assert isinstance(format_status(info), str)
    except ScriptFailed:
        pass


@given(st.binary(max_size=100))
def test_ventrilo_decrypt_total(data: bytes) -> None:
    if TABLES is None:
        return
    head = decode_header(data, TABLES)
    if head is not None:
        decode_data(data, min(head.length, 600), head.key, TABLES)


def test_ventrilo_rule() -> None:
    script, ctx = VentriloInfo(), RuleContext()
    assert script.portrule(PortView("127.0.0.1", 3784, "tcp", "open"), ctx)
    assert script.portrule(PortView("127.0.0.1", 3784, "udp", "open|filtered"), ctx)
    assert not script.portrule(PortView("127.0.0.1", 3785, "udp", "open"), ctx)
