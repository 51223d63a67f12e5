"""The enterprise-middleware scripts with in-memory peers (the e2e lookalikes' bytes),
their hostile variants, and property tests of their parsers."""

from __future__ import annotations

import contextlib
import re
import struct
from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock

from tests.e2e import script_servers_enterprise as peers
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT, ScriptFailed
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin import (
    db2_das_info,
    drda_info,
    jdwp_version,
    maxdb_info,
    ndmp_version,
    oracle_tns_version,
    weblogic_t3_info,
)
from vscand.scripts.proto.nse_text import Group, format_output, tab_dump
from vscand.scripts.registry import builtin_scripts
from vscand.scripts.runner import ScriptRunner
from vscand.scripts.testing import FakeConnection, FakeExchange, Reply
from vscand.service import empty_service

NSE = Path("/usr/share/nmap")
needs_nmap = pytest.mark.skipif(not (NSE / "scripts").is_dir(), reason="Nmap's scripts")


def port_result(
    port: int, name: str | None, protocol: str = "tcp", **service: Any
) -> dict[str, Any]:
    svc = empty_service(name, method=service.pop("method", "table"), conf=service.pop("conf", 3))
    svc.update(service)
    return {"host": "127.0.0.1", "hostname": None, "port": port, "protocol": protocol,
            "state": "open", "service": svc}  # fmt: skip


def scan(
    result: dict[str, Any], script: Any, exchange: Any, ctx: RuleContext | None = None
) -> dict[str, Any]:
    """Run ``script`` on ``result`` (its rule included) on a Clock: it must end at once."""
    clock = Clock()
    runner = ScriptRunner(clock, [script], exchange_factory=lambda view: exchange)
    done = defer.Deferred.fromCoroutine(runner.run_host([result], ctx or RuleContext()))
    assert done.called
    assert not clock.getDelayedCalls()
    service: dict[str, Any] = result["service"]
    return service


def view(number: int, name: str | None = None, protocol: str = "tcp", **kw: Any) -> PortView:
    return PortView("127.0.0.1", number, protocol, "open", name=name, **kw)


def constant(reply: bytes | None, close: bool = False) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> Reply | None:
        return None if reply is None else Reply([reply], close=close)

    return respond


def test_registered() -> None:
    names = {s.name for s in builtin_scripts()}
    assert {"oracle-tns-version", "weblogic-t3-info", "db2-das-info", "drda-info", "maxdb-info",
            "ndmp-version", "jdwp-version"} <= names  # fmt: skip


# -- the bytes we send are NSE's -------------------------------------------------------


def _lua_bytes(literal: str) -> bytes:
    out, i = bytearray(), 0
    while i < len(literal):
        if literal.startswith("\\x", i):
            out.append(int(literal[i + 2 : i + 4], 16))
            i += 4
        else:
            out += literal[i].encode()
            i += 1
    return bytes(out)


@needs_nmap
def test_db2_das_requests_are_the_scripts() -> None:
    source = (NSE / "scripts/db2-das-info.nse").read_text()
    action = source[source.index("action = function") :]
    blocks = [
        b"".join(_lua_bytes(p) for p in re.findall(r'"([^"]*)"', m.group(1)))
        for m in re.finditer(r'data\s*=\s*((?:"[^"]*"\s*(?:\.\.\s*)?)+)', action)
    ]
    magics = [int(m, 16) for m in re.findall(r"create_das_packet\((0x[0-9a-f]+), data\)", action)]
    assert list(db2_das_info.REQUESTS) == list(zip(magics, blocks, strict=True))


@needs_nmap
def test_maxdb_packets_are_the_scripts() -> None:
    source = (NSE / "scripts/maxdb-info.nse").read_text()
    packets = (("handshake", maxdb_info.HANDSHAKE), ("dbm_version", maxdb_info.DBM_VERSION),
               ("db_enum", maxdb_info.DB_ENUM))  # fmt: skip
    for name, value in packets:
        found = re.search(name + r'\s*=\s*"([0-9a-f]+)"', source)
        assert found and bytes.fromhex(found.group(1)) == value


def _probe_bytes(text: str) -> bytes:
    """A probe string of nmap-service-probes (``\\0`` is a NUL, never octal)."""
    simple = {"0": 0, "n": 10, "r": 13, "t": 9, "a": 7, "f": 12, "v": 11, "\\": 92, "|": 124}
    out, i = bytearray(), 0
    while i < len(text):
        if text[i] != "\\":
            out.append(ord(text[i]))
            i += 1
        elif text[i + 1] == "x":
            out.append(int(text[i + 2 : i + 4], 16))
            i += 4
        else:
            out.append(simple[text[i + 1]])
            i += 2
    return bytes(out)


@needs_nmap
def test_tns_and_drda_requests_are_the_probe_files() -> None:
    probes = (NSE / "nmap-service-probes").read_text(encoding="latin-1")
    for name, value in (("oracle-tns", oracle_tns_version.PROBE), ("drda", drda_info.EXCSAT)):
        found = re.search(rf"^Probe TCP {name} q\|(.*)\|$", probes, re.M)
        assert found
        raw = _probe_bytes(found.group(1))
        assert raw == value, name


@needs_nmap
def test_ebcdic_table_from_nselib() -> None:
    table = drda_info.ebcdic_table()
    assert table is not None
    assert peers.ebcdic("DB2/LINUXX8664 db2inst1 SQL11055").translate(table) == (
        b"DB2/LINUXX8664 db2inst1 SQL11055"
    )
    assert drda_info.ebcdic_table(("/nonexistent/drda.lua",)) is None


# -- oracle-tns-version ------------------------------------------------------------------


def test_oracle_decode_and_rule() -> None:
    cases = {"135290880": "8.1.6.0.0", "153092352": "9.2.0.1.0", "169869568": "10.2.0.1.0",
             "185599488": "11.1.0.6.0", "202375680": "12.1.0.2.0", "301989888": "18.0.0.0.0",
             "318767104": "19.0.0.0.0", "352321536": "21.0.0.0.0"}  # fmt: skip
    for digits, version in cases.items():
        assert oracle_tns_version.decode_vsnnum(digits) == version
    assert oracle_tns_version.decode_vsnnum("0" * 50 + "1") == "0.0.0.0.1"
    assert oracle_tns_version.decode_vsnnum(str(2**63 - 1)) == "549755813887.15.255.15.255"
    for huge in (str(2**63), "9" * 5000):
        with pytest.raises(ScriptFailed):
            oracle_tns_version.decode_vsnnum(huge)
    script, ctx = oracle_tns_version.OracleTnsVersion(), RuleContext()
    assert script.portrule(view(1521), ctx) and script.portrule(view(4000, "oracle-tns"), ctx)
    assert not script.portrule(view(1521, version="19"), ctx)
    assert not script.portrule(view(1521), RuleContext(intensity=6))


def test_oracle_sends_the_probe_and_sets_version() -> None:
    answer = peers.tns_refuse(b"(DESCRIPTION=(TMP=)(VSNNUM=318767104)(ERR=1189))")
    exchange = FakeExchange(constant(answer), port=1521)
    result = port_result(1521, "oracle-tns", product="Oracle TNS Listener", cpe=["cpe:/a:x"])
    service = scan(result, oracle_tns_version.OracleTnsVersion(), exchange)
    assert exchange.connections[0].sent == [oracle_tns_version.PROBE]
    assert (service["product"], service["version"], service["extrainfo"]) == (
        "Oracle TNS listener", "19.0.0.0.0", "unauthorized",
    )  # fmt: skip
    assert service["cpe"] == ["cpe:/a:x", "cpe:/a:oracle:database_server:19.0.0.0.0"]
    assert service["scripts"] == {"oracle-tns-version": ""}


def test_oracle_reads_the_fingerprint_first() -> None:
    answer = peers.tns_refuse(b"(DESCRIPTION=(ERR=12345))")
    escaped = "".join(
        chr(b) if 32 <= b < 127 and b not in b'"\\' else f"\\x{b:02X}" for b in answer
    )
    fingerprint = (
        f'SF-Port1522-TCP:V=7.93%I=7%D=1/1%Time=0%P=x%r(oracle-tns,{len(answer):X},"{escaped}");'
    )
    exchange = FakeExchange(constant(None), port=1522, refuse=True)
    service = scan(
        port_result(1522, "oracle-tns", fingerprint=fingerprint),
        oracle_tns_version.OracleTnsVersion(),
        exchange,
    )
    assert exchange.attempts == []
    assert (service["extrainfo"], service["version"], service["method"]) == (
        "error: 12345",
        None,
        "probed",
    )


@pytest.mark.parametrize(
    "answer",
    [
        None,
        b"",
        b"(VSNNUM=1)(ERR=1)",
        b"\x00" * 11,
        b"x" * 11 + b"(VSNNUM=)(ERR=x)",
        b"\xff" * 70000,
    ],
)
def test_oracle_hostile_sets_nothing(answer: bytes | None) -> None:
    exchange = FakeExchange(constant(answer), port=1521)
    service = scan(port_result(1521, None), oracle_tns_version.OracleTnsVersion(), exchange)
    assert (service["method"], service["product"]) == ("table", None)


def test_oracle_vsnnum_lua_cannot_hold_fails_like_nse() -> None:
    answer = b"x" * 11 + b"(VSNNUM=" + b"9" * 30 + b")"
    service = scan(
        port_result(1521, None),
        oracle_tns_version.OracleTnsVersion(),
        FakeExchange(constant(answer)),
    )
    assert service["scripts"]["oracle-tns-version"] == SCRIPT_ERROR_OUTPUT
    assert service["method"] == "table"


@given(st.binary(max_size=300))
def test_oracle_parse_total(data: bytes) -> None:
    vsnnum, err = oracle_tns_version.parse_answer(data)
    assert vsnnum is None or vsnnum.isdigit()
    assert err is None or err.isdigit()


# -- weblogic-t3-info --------------------------------------------------------------------


def test_weblogic_rule() -> None:
    script, ctx = weblogic_t3_info.WeblogicT3Info(), RuleContext()
    assert script.portrule(view(7001), ctx) and script.portrule(view(80, "http"), ctx)
    assert script.portrule(view(9999, product="Oracle WebLogic Server", conf=10), ctx)
    assert not script.portrule(view(7001, product="nginx", conf=10), ctx)
    assert not script.portrule(view(9999, product="WebLogic", conf=10), RuleContext(intensity=6))
    assert script.portrule(view(7001, product="nginx", conf=3), ctx)


@pytest.mark.parametrize(
    ("answer", "output", "version"),
    [
        (b"HELO:12.2.1.3.0.false\nAS:2048\n\n",
         "T3 protocol in use (WebLogic version: 12.2.1.3)", "12.2.1.3"),
        (b"HELO:12.1.2.false\n", None, None),
        (b"LGIN:x", "T3 protocol in use (handshake failed)", None),
        (b"VERS:Incompatible versions - this server:10.3.6.0\n",
         "T3 protocol in use (Incompatible version)", "10.3.6.0"),
        (b"VERS:nope", "T3 protocol in use (Incompatible version)", None),
        (b"CMND:", "T3 protocol in use (No such command)", None),
        (b" HELO:1.2.3.4.", None, None),
    ],
)  # fmt: skip
def test_weblogic_answers(answer: bytes, output: str | None, version: str | None) -> None:
    exchange = FakeExchange(constant(answer), port=7001)
    service = scan(
        port_result(7001, "afs3-callback", extrainfo="old"),
        weblogic_t3_info.WeblogicT3Info(),
        exchange,
    )
    assert exchange.connections[0].sent == [weblogic_t3_info.HANDSHAKE]
    if output is None:
        assert (service["method"], service["extrainfo"]) == ("table", "old")
        return
    assert service["scripts"]["weblogic-t3-info"] == output
    assert (service["product"], service["version"], service["extrainfo"]) == (
        "WebLogic application server", version, "old; T3 enabled",
    )  # fmt: skip


@given(st.binary(max_size=120))
def test_weblogic_read_answer_total(data: bytes) -> None:
    found = weblogic_t3_info.read_answer(data)
    assert found is None or isinstance(found[0], str)


# -- db2-das-info ------------------------------------------------------------------------


def das_peer(chunk: int = 0, udp: bool = False) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> Reply | None:
        reply = peers.das_udp(data) if udp else peers.das_reply(data)
        if reply is None:
            return None
        if chunk:
            return Reply([reply[i : i + chunk] for i in range(0, len(reply), chunk)])
        return Reply([reply])

    return respond


@pytest.mark.parametrize(("protocol", "chunk"), [("tcp", 0), ("tcp", 7), ("udp", 0)])
def test_db2_das_exports_the_profile(protocol: str, chunk: int) -> None:
    exchange = FakeExchange(das_peer(chunk, protocol == "udp"), port=523, protocol=protocol)
    result = port_result(
        523, "ibm-db2", protocol, product="IBM DB2 Database Server", version="9.07"
    )
    service = scan(result, db2_das_info.Db2DasInfo(), exchange)
    sent = exchange.connections[0].sent
    assert sent == [db2_das_info.das_packet(m, d) for m, d in db2_das_info.REQUESTS]
    assert (service["name"], service["version"], service["method"]) == (
        "ibm-db2",
        "9.07.0",
        "probed",
    )
    output = service["scripts"]["db2-das-info"]
    assert output == "DB2 Administration Server Settings\r\n" + peers.DB2_PROFILE.decode()


def test_db2_das_version_keeps_the_more_precise() -> None:
    assert db2_das_info.server_version("SQL09070") == "9.07.0"
    assert db2_das_info.server_version("SQL10053x") == "10.05.3x"
    assert db2_das_info.server_version("DB2") is None
    exchange = FakeExchange(das_peer(), port=523)
    service = scan(
        port_result(523, "ibm-db2", version="9.7.0.5"), db2_das_info.Db2DasInfo(), exchange
    )
    assert service["version"] == "9.7.0.5"


def _last(data: bytes, data_len: int | None = None) -> Any:
    def respond(conn: FakeConnection, sent: bytes) -> Reply | None:
        if sent[36] == 0x06 and sent[41:45] == b"\x00\x00\x00\x20":
            length = len(data) if data_len is None else data_len
            return Reply([peers.das_header(6, 0)[:37] + struct.pack("<I", length) + data])
        return peers.das_reply(sent) and Reply([peers.das_reply(sent) or b""])

    return respond


@pytest.mark.parametrize(
    ("data", "data_len", "output"),
    [
        (b"\x00" * 200, None, "false"),  # a profile length of 0
        (b"\x00" * 100, None, SCRIPT_ERROR_OUTPUT),  # under NSE's offsets
        (b"\x01" * 200, None, SCRIPT_ERROR_OUTPUT),  # no terminator after the release
        (b"\x00" * 200, 10**9, None),  # a lying length: waits, times out (NSE's try)
    ],
)
def test_db2_das_hostile(data: bytes, data_len: int | None, output: str | None) -> None:
    exchange = FakeExchange(_last(data, data_len), port=523)
    service = scan(port_result(523, "ibm-db2"), db2_das_info.Db2DasInfo(), exchange)
    assert service["scripts"]["db2-das-info"] == (output or "")
    assert (service["method"], service["product"]) == ("table", None)


def test_db2_das_not_das_or_silent() -> None:
    for respond in (
        constant(b"HTTP/1.0 400\r\n\r\n" * 4),
        constant(None),
        constant(b"\x00\x00\x00\x00DB2DAS", close=True),
    ):
        service = scan(
            port_result(523, "ibm-db2"), db2_das_info.Db2DasInfo(), FakeExchange(respond, port=523)
        )
        assert service["method"] == "table"
        assert service["scripts"]["db2-das-info"] in ("", SCRIPT_ERROR_OUTPUT)


@given(st.binary(max_size=400), st.integers(min_value=0, max_value=2**32 - 1))
def test_db2_parse_das_total(data: bytes, data_len: int) -> None:
    with contextlib.suppress(ScriptFailed):
        response = db2_das_info.parse_das(db2_das_info.DasPacket(data_len, data))
        assert len(response.info) <= len(data)


# -- drda-info ---------------------------------------------------------------------------


def drda_peer(reply: bytes) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> Reply | None:
        return Reply([reply]) if data == drda_info.EXCSAT else None

    return respond


@needs_nmap
def test_drda_db2() -> None:
    exchange = FakeExchange(drda_peer(peers.excsatrd()), port=50000)
    service = scan(port_result(50000, "ibm-db2"), drda_info.DrdaInfo(), exchange)
    assert (service["name"], service["product"], service["extrainfo"]) == (
        "drda", "IBM DB2 Database Server", "DB2/LINUXX8664",
    )  # fmt: skip
    assert service["scripts"]["drda-info"] == (
        "\n  DB2 Version: 11.05.5\n  Server Platform: DB2/LINUXX8664\n  Instance Name: db2inst1\n"
        "  External Name: db2inst1db2agent00002B430\n"
    )


def _ddm(params: list[tuple[int, bytes]], codepoint: int = 0x1443, fmt: int = 0x02) -> bytes:
    body = b"".join(struct.pack(">HH", len(v) + 4, c) + v for c, v in params)
    return struct.pack(">HBBHHH", 10 + len(body), 0xD0, fmt, 1, 4 + len(body), codepoint) + body


@needs_nmap
@pytest.mark.parametrize(
    ("reply", "output", "name"),
    [
        (_ddm([(0x1147, peers.ebcdic("Apache Derby")),
               (0x115A, peers.ebcdic("CSS10140/10.14.2.0"))]),
         "\n  Derby Version: 10.14.2.0\n  Server Platform: Apache Derby\n  Instance Name: nil\n"
         "  External Name: nil\n", "drda"),
        (_ddm([(0x1147, peers.ebcdic("IDS/UNIX64")), (0x115A, peers.ebcdic("IFX11500"))]),
         "\n  Informix Version: 11.50.0\n  Server Platform: IDS/UNIX64\n  Instance Name: nil\n"
         "  External Name: nil\n", "drda"),
        (_ddm([(0x115A, peers.ebcdic("XYZ"))], fmt=0x42) + _ddm([(0x1147, peers.ebcdic("Q"))]),
         "\n  Version: XYZ\n  Server Platform: nil\n  Instance Name: nil\n  External Name: nil\n",
         "ibm-db2"),
        (_ddm([(0x1147, b"")], codepoint=0x1234), "The response contained no EXCSATRD", "ibm-db2"),
        (_ddm([(0x1147, peers.ebcdic("DB2"))]), SCRIPT_ERROR_OUTPUT, "ibm-db2"),  # no release
        (_ddm([])[:10].replace(b"\x0a", b"\x0e", 1) + b"\x00\x02\x11\x47", SCRIPT_ERROR_OUTPUT,
         "ibm-db2"),  # a parameter length under 4
        (_ddm([])[:10], "", "ibm-db2"),  # NSE spins forever on an empty body: we stop
        (b"\x00\x05" + _ddm([])[2:10], SCRIPT_ERROR_OUTPUT, "ibm-db2"),
        (_ddm([(0x1147, b"x" * 10)])[:20], "", "ibm-db2"),  # cut short: times out
    ],
)  # fmt: skip
def test_drda_variants(reply: bytes, output: str, name: str) -> None:
    service = scan(
        port_result(50000, "ibm-db2"), drda_info.DrdaInfo(), FakeExchange(drda_peer(reply))
    )
    assert service["scripts"]["drda-info"] == output
    assert service["name"] == name


@given(st.binary(max_size=300))
def test_drda_parameters_total(data: bytes) -> None:
    with contextlib.suppress(ScriptFailed, drda_info.Spin):
        params = drda_info.parse_parameters(data)
        assert params


# -- maxdb-info --------------------------------------------------------------------------


def maxdb_peer(version: str = peers.MAXDB_VERSION, enum: str = peers.MAXDB_DATABASES) -> Any:
    def respond(conn: FakeConnection, request: bytes) -> Reply | None:
        if b"pdbmsrv" in request:
            return Reply([peers.maxdb_packet(request, "")])
        if b"dbm_version" in request:
            return Reply([peers.maxdb_packet(request, version)])
        return Reply([peers.maxdb_packet(request, enum)])

    return respond


def test_maxdb_version_and_databases() -> None:
    service = scan(
        port_result(7210, None), maxdb_info.MaxdbInfo(), FakeExchange(maxdb_peer(), port=7210)
    )
    assert (service["name"], service["product"], service["version"], service["ostype"]) == (
        "maxdb", "SAP MaxDB", "7.9.10", "Linux",
    )  # fmt: skip
    assert service["scripts"]["maxdb-info"] == (
        "\n  Version: 7.9.10\n  Build: DBMServer 7.9.10   Build 004-123-265-969\n  OS: UNIX\n"
        "  Instroot: /opt/sdb/MaxDB\n  Sysname: Linux\n  Databases\n"
        "    instance  path            version    kernel  state\n"
        "    MAXDB     /opt/sdb/MaxDB  7.9.10.04  fast    running\n"
        "    MAXDB     /opt/sdb/MaxDB  7.9.10.04  quick   offline\n"
    )


def test_maxdb_missing_keys_and_failures() -> None:
    service = scan(port_result(7210, None, version="1", ostype="x"), maxdb_info.MaxdbInfo(),
                   FakeExchange(maxdb_peer(version="OTHER = 1\n"), port=7210))  # fmt: skip
    assert (service["version"], service["ostype"]) == (None, None)
    assert "  Version: nil\n" in service["scripts"]["maxdb-info"]

    def refuses_enum(conn: FakeConnection, request: bytes) -> Reply | None:
        if b"db_enum" in request:
            return Reply([struct.pack("<I", 30) + b"\x00" * 20 + b"ERR\n"])
        return maxdb_peer()(conn, request)

    for respond in (
        refuses_enum,
        constant(b"\x05"),
        constant(None),
        constant(b"\xff\xff" + b"x" * 9),
    ):
        service = scan(
            port_result(7210, None), maxdb_info.MaxdbInfo(), FakeExchange(respond, port=7210)
        )
        assert service["method"] == "table"
        assert service["scripts"]["maxdb-info"] in ("", SCRIPT_ERROR_OUTPUT)


def test_database_row_and_dump() -> None:
    assert maxdb_info.database_row("a \t b\t c \t d \t e \r") == ["a", " b", " c", " d", " e"]
    assert maxdb_info.database_row("a\tb\tc") is None
    assert tab_dump([["ab", "c"], ["a", "cd"]]) == "ab  c\na   cd\n"
    assert maxdb_info.parse_version(b"x" * 27 + b"A = b \r\nC=d\nE =  f") == {
        "A": "b \r",
        "E": " f",
    }


_LUA_ROW = re.compile(r"^(.*?)[ \t\n\v\f\r]*\t(.*?)[ \t\n\v\f\r]*\t(.*?)[ \t\n\v\f\r]*\t(.*?)"
                      r"[ \t\n\v\f\r]*?\t(.*?)[ \t\n\v\f\r]*?\Z", re.S)  # fmt: skip


@given(st.text(alphabet="a \t\r\x0b", max_size=16))
def test_database_row_is_the_backtracking_match(line: str) -> None:
    found = _LUA_ROW.match(line)
    assert maxdb_info.database_row(line) == (list(found.groups()) if found else None)


def test_database_row_is_linear_on_hostile_lines() -> None:
    line = " " * 200_000 + "\t \t \t " + " " * 200_000
    assert maxdb_info.database_row(line) is None


# -- ndmp-version ------------------------------------------------------------------------


def ndmp_peer(host_body: bytes | None = None, server_body: bytes | None = None,
              server_msg: int = 0x108, notify: bool = True) -> Any:  # fmt: skip
    def respond(conn: FakeConnection, request: bytes) -> Reply | None:
        seq, _t, _k, message = struct.unpack_from(">IIII", request, 4)
        chunks = []
        if notify and seq == 1:
            chunks.append(
                peers.ndmp_message(1, 0x502, 0, struct.pack(">II", 0, 4) + peers.xdr(""), 0)
            )
        if message == 0x100:
            body = (
                host_body
                if host_body is not None
                else (
                    b"\x00" * 4
                    + peers.xdr("backup01")
                    + peers.xdr("Linux")
                    + peers.xdr(
                        "Major Version=5 Minor Version=2 Build Number=3790 ServicePack Major=2 "
                        "ServicePack Minor=0"
                    )
                    + peers.xdr("id")
                )
            )
            chunks.append(peers.ndmp_message(seq + 1, 0x100, seq, body))
        else:
            body = (
                server_body
                if server_body is not None
                else (
                    b"\x00" * 4
                    + peers.xdr("VERITAS Software, Corp.")
                    + peers.xdr("RA")
                    + peers.xdr("5")
                )
            )
            chunks.append(peers.ndmp_message(seq + 1, server_msg, seq, body))
        return Reply(chunks)

    return respond  # fmt: skip


def test_ndmp_version() -> None:
    exchange = FakeExchange(ndmp_peer(), port=10000)
    service = scan(
        port_result(10000, "ndmp", cpe=["cpe:/a:netapp:data_ontap"]),
        ndmp_version.NdmpVersion(),
        exchange,
    )
    assert (service["product"], service["extrainfo"], service["ostype"], service["cpe"]) == (
        "Symantec/Veritas Backup Exec ndmp",
        "Name: backup01; OS ver: 5.2; OS Build: 3790; OS Service Pack: 2",
        "Linux", ["cpe:/a:netapp:data_ontap"],
    )  # fmt: skip
    sent = exchange.connections[0].sent
    assert [struct.unpack_from(">IIxxxxII", s) for s in sent] == [
        (0x80000018, 1, 0, 0x100), (0x80000018, 2, 0, 0x108)]  # fmt: skip
    assert service["scripts"] == {"ndmp-version": ""}


@pytest.mark.parametrize(
    ("kwargs", "output", "product"),
    [
        ({"host_body": b""}, SCRIPT_ERROR_OUTPUT, None),
        ({"host_body": b"\x00" * 4 + b"\xff\xff\xff\xff"}, SCRIPT_ERROR_OUTPUT, None),
        ({"server_msg": 0x100}, SCRIPT_ERROR_OUTPUT, None),
        ({"server_body": b"\x00" * 4 + peers.xdr("NetApp") + peers.xdr("p") + peers.xdr("v")},
         "", "NetApp"),
        ({"host_body": b"\x00" * 4 + peers.xdr("h") + peers.xdr("o") + peers.xdr(
            "Major Version=99999999999999999999 Minor Version=1 Build Number=1 ServicePack Major=1 "
            "ServicePack Minor=1") + peers.xdr("")}, SCRIPT_ERROR_OUTPUT, None),
    ],
)  # fmt: skip
def test_ndmp_hostile(kwargs: dict[str, Any], output: str, product: str | None) -> None:
    service = scan(
        port_result(10000, "ndmp"), ndmp_version.NdmpVersion(), FakeExchange(ndmp_peer(**kwargs))
    )
    assert service["scripts"]["ndmp-version"] == output
    assert service["product"] == product


def test_ndmp_short_fragment_and_silence() -> None:
    short = constant(struct.pack(">I", 0x80000004) + b"\x00" * 24)
    service = scan(port_result(10000, "ndmp"), ndmp_version.NdmpVersion(), FakeExchange(short))
    assert service["scripts"]["ndmp-version"] == SCRIPT_ERROR_OUTPUT
    lying = constant(struct.pack(">I", 0xFFFFFFFF) + b"\x00" * 30)
    for respond in (constant(None), lying, constant(b"\x80", close=True)):
        service = scan(
            port_result(10000, "ndmp"), ndmp_version.NdmpVersion(), FakeExchange(respond)
        )
        assert (service["scripts"]["ndmp-version"], service["method"]) == ("", "table")


@given(st.binary(min_size=24, max_size=24), st.binary(max_size=120))
def test_ndmp_parse_total(header: bytes, body: bytes) -> None:
    with contextlib.suppress(ScriptFailed):
        ndmp_version.parse_message(header, body)


# -- jdwp-version ------------------------------------------------------------------------

JVM_REPLY = (
    b"JDWP-Handshake\x00\x00\x00\xe3\x00\x00\x00\x01\x80\x00\x00\x00\x00\x00\xa5Java Debug Wire "
    b"Protocol (Reference Implementation) version 17.0\nJVM Debug Interface version 17.0\nJVM "
    b"version 17.0.15 (OpenJDK 64-Bit Server VM, mixed mode, sharing)\x00\x00\x00\x11\x00\x00\x00"
    b"\x00\x00\x00\x00\x0717.0.15\x00\x00\x00\x18OpenJDK 64-Bit Server VM"
)


def test_jdwp_rule_and_reply() -> None:
    script, ctx = jdwp_version.JdwpVersion(), RuleContext()
    assert script.portrule(view(8000, "tcpwrapped"), ctx)
    assert not script.portrule(view(8000, "http"), ctx)
    assert not script.portrule(view(8000, "tcpwrapped"), RuleContext(intensity=6))
    exchange = FakeExchange(constant(JVM_REPLY), port=8000)
    service = scan(port_result(8000, "tcpwrapped", method="probed", conf=8), script, exchange)
    assert exchange.connections[0].sent == [jdwp_version.REQUEST]
    assert (service["name"], service["product"], service["version"]) == (
        "jdwp", "Java Debug Wire Protocol (Reference Implementation) version 17.0", "17.0.15",
    )  # fmt: skip


@pytest.mark.parametrize(
    ("answer", "product"),
    [
        (b"JDWP-Handshake", None),
        (b"JDWP-Handshake\x00garbage\x80", "unknown"),
        (b"\x80" * 40, None),
    ],
)
def test_jdwp_partial(answer: bytes, product: str | None) -> None:
    service = scan(
        port_result(8000, "tcpwrapped"), jdwp_version.JdwpVersion(), FakeExchange(constant(answer))
    )
    assert service["product"] == product


@given(st.binary(max_size=300))
def test_jdwp_read_reply_total(data: bytes) -> None:
    jdwp_version.read_reply(b"JDWP-Handshake" + data)


# -- format_output -----------------------------------------------------------------------


def test_format_output() -> None:
    assert format_output([]) is None
    assert format_output(["a", "b\r\nc"]) == "\n  a\n  \n  c\n"
    assert (
        format_output(["a", Group("G", ["x\ny"]), Group("E", [])]) == "\n  a\n  G\n    x\n    y\n"
    )


@given(st.lists(st.text(max_size=20), max_size=5))
def test_format_output_total(items: list[str]) -> None:
    out = format_output(items)
    assert out is None or out.startswith("\n")
