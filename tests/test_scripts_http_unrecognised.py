"""fingerprint-strings, https-redirect, hnap-info and http-trane-info with in-memory
exchanges: what they send, what they conclude, and hostile answers."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer
from twisted.internet.task import Clock
from twisted.python.failure import Failure

from tests.e2e.script_servers_http import ABOUT, HNAP_BODY, SUMMARY, http_response
from vscand.output.script_output import ScriptFailed, format_table
from vscand.scan.fingerprint import ServiceFingerprint
from vscand.scripts.api import PortView, RuleContext, VersionScript
from vscand.scripts.builtin.fingerprint_strings import (
    FingerprintStrings,
    fingerprint_strings,
    readable_strings,
)
from vscand.scripts.builtin.hnap_info import HnapInfo, hnap_table, sax_events
from vscand.scripts.builtin.http_trane_info import HttpTraneInfo, devices
from vscand.scripts.builtin.https_redirect import HttpsRedirect, redirects_to_tls
from vscand.scripts.fingerprints import parse_fingerprint
from vscand.scripts.nsehttp import HttpResponse, get
from vscand.scripts.nseurl import parse_url
from vscand.scripts.runner import ScriptRunner
from vscand.scripts.testing import FakeConnection, FakeExchange, Reply
from vscand.service import empty_service

# -- fingerprint-strings --------------------------------------------------------------

#: what nmap 7.93 printed for the lookalike's NULL response (tests/e2e/script_servers_http)
GREETING = b'\x01\x02vsd ab cd\tef  gh\x00hello  world\xff\xfexyz\\x41 q\\"uote\\n end\r\n'


def fingerprint(*responses: tuple[str, bytes], port: int = 4000) -> str:
    fp = ServiceFingerprint(port, "TCP", intensity=7, ssl=False, when=1_700_000_000.0)
    for probe, data in responses:
        fp.add(probe, data)
    text = fp.text()
    assert text is not None
    return text


def test_strings_as_nmap_printed_them() -> None:
    # the fingerprint is decoded twice, as NSE does: "\\x41" becomes "A", "\\n" a newline
    table = fingerprint_strings(fingerprint(("NULL", GREETING)))
    assert table is not None
    assert format_table(table) == '\n  NULL: \n    hello world\n    xyzA q"uote'


def test_probes_with_the_same_strings_share_a_label_in_byte_order() -> None:
    table = fingerprint_strings(
        fingerprint(("NULL", b"\x00same text\x00"), ("GetRequest", b"same text"), ("afp", b"ab"))
    )
    assert table is not None
    assert table.fields == [("GetRequest, NULL", "\n    same text")]


def test_strings_pattern_details() -> None:
    assert readable_strings(b"abc") is None  # nothing matches at the start: LPeg's nil
    assert readable_strings(b" a\tb ") == b" a b "
    # short words between spaces are skipped together, even when they would make a run
    assert readable_strings(b"\x00 ab cd ef\x00longer") == b"\n    longer"
    assert readable_strings(b"long1\x00ab") == b"long1\n    "  # the unmatched tail: dropped


def test_a_fingerprint_nse_cannot_decode_kills_the_script() -> None:
    with pytest.raises(ScriptFailed):
        fingerprint_strings('SF-Port1-TCP:V=7.93%r(NULL,2,"\\\\x")')  # \\x: no hex digit
    with pytest.raises(ScriptFailed):
        fingerprint_strings("SF-Port1-TCP:V=7.93;")


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.tuples(
            st.sampled_from(["NULL", "GetRequest", "Help", "X11Probe", "oracle-tns"]),
            st.binary(min_size=1, max_size=1000),
        ),
        min_size=1,
        max_size=4,
        unique_by=lambda t: t[0],
    )
)
def test_any_responses_give_a_table_or_nothing_or_nse_s_error(
    responses: list[tuple[str, bytes]],
) -> None:
    text = fingerprint(*responses)
    parsed = parse_fingerprint(text)
    assert parsed is not None and set(parsed) <= {p for p, _ in responses}
    for probe, data in responses:
        if b"\\" not in data and probe in parsed:
            assert parsed[probe] == data[:900]
    try:
        table = fingerprint_strings(text)
    except ScriptFailed:
        return
    if table is not None:
        for _label, value in table.fields:
            assert isinstance(value, str) and value.startswith("\n    ")


def test_rule_wants_a_fingerprint() -> None:
    script = FingerprintStrings()
    assert not script.portrule(PortView("127.0.0.1", 1, "udp", "open"), RuleContext(intensity=0))
    assert script.portrule(
        PortView("127.0.0.1", 1, "udp", "open", fingerprint=fingerprint(("NULL", b"x"))),
        RuleContext(intensity=0),
    )


# -- running scripts on a fake peer -----------------------------------------------------------


def port_result(port: int, name: str | None, **service: Any) -> dict[str, Any]:
    svc = empty_service(name, method=service.pop("method", "table"), conf=service.pop("conf", 3))
    svc.update(service)
    return {"host": "127.0.0.1", "hostname": None, "port": port, "protocol": "tcp",
            "state": "open", "service": svc}  # fmt: skip


def scan(script: VersionScript, result: dict[str, Any], exchange: FakeExchange) -> dict[str, Any]:
    clock = Clock()
    runner = ScriptRunner(clock, [script], exchange_factory=lambda view: exchange)
    d = defer.Deferred.fromCoroutine(runner.run_host([result], RuleContext()))
    assert d.called
    service: dict[str, Any] = result["service"]
    return service


def pages(table: dict[str, bytes], *, lie: bool = False) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> Reply | None:
        if conn.tls:
            return None
        path = data.split(b" ")[1].decode()
        body = table.get(path)
        if body is None:
            return Reply([http_response("404 Not Found", b"no", "x")], close=True)
        reply = http_response("200 OK", body, "x", length=(1 << 30) if lie else None)
        return Reply([reply[:50], reply[50:]], close=True)

    return respond


# -- https-redirect -----------------------------------------------------------------------


def redirect(location: str) -> bytes:
    return f"HTTP/1.1 301 Moved\r\nLocation: {location}\r\n\r\n".encode()


def test_redirect_to_https_on_the_same_port_makes_it_tls() -> None:
    view = PortView("127.0.0.1", 8080, "tcp", "open", name="http")
    assert redirects_to_tls(redirect("https://127.0.0.1:8080/x"), view)
    assert redirects_to_tls(redirect("https://:8080/"), view)
    assert not redirects_to_tls(redirect("https://127.0.0.1/x"), view)  # 443
    assert not redirects_to_tls(redirect("https://example.com:8080/"), view)
    assert not redirects_to_tls(redirect("http://127.0.0.1:8080/"), view)
    assert parse_url("HTTPS://u:p@h:1/a;b?c#d").scheme == "https"
    service = scan(
        HttpsRedirect(),
        port_result(8080, "http", method="probed", conf=10, product="nginx"),
        FakeExchange(lambda c, d: redirect("https://127.0.0.1:8080/"), port=8080),
    )
    assert (service["tunnel"], service["method"], service["product"]) == ("ssl", "probed", "nginx")


def test_an_answer_over_tls_is_enough_and_silence_changes_nothing() -> None:
    tls_only = FakeExchange(lambda c, d: b"HTTP/1.1 200 OK\r\n\r\n", port=443, tls_ok=True)
    assert scan(HttpsRedirect(), port_result(443, "https"), tls_only)["tunnel"] == "ssl"
    silent = FakeExchange(lambda c, d: None, port=80)
    assert scan(HttpsRedirect(), port_result(80, "http"), silent)["tunnel"] is None


# -- http-trane-info -----------------------------------------------------------------------


def test_trane_names_the_port_and_lists_equipment_as_nse_searches() -> None:
    exchange = FakeExchange(
        pages({"/evox/about": ABOUT, "/evox/equipment/installedSummary": SUMMARY}), port=80
    )
    service = scan(HttpTraneInfo(), port_result(80, "http"), exchange)
    assert (service["name"], service["product"], service["devicetype"]) == (
        "http", "Tracer SC", "HwVer12AB",
    )  # fmt: skip
    assert service["cpe"] == ["cpe:/h:Trane:Tracer SC"]
    listed = devices(SUMMARY)
    # the second entry's search starts after the first equipmentUri: NSE's own offsets
    assert [format_table(d).count("AHU-1") for d in listed.array] == [1, 1]


@pytest.mark.parametrize(
    "table, lie",
    [
        ({"/evox/about": ABOUT.replace(b"kernelVersion", b"k")}, False),  # NSE dies
        ({"/evox/about": ABOUT}, True),  # lying Content-Length: no 200 status line
        ({"/evox/about": b"serverName nothing"}, False),  # the parse message
    ],
)
def test_trane_hostile_answers_set_nothing(table: dict[str, bytes], lie: bool) -> None:
    service = scan(HttpTraneInfo(), port_result(80, "http"), FakeExchange(pages(table, lie=lie)))
    assert service["product"] is None and service["method"] == "table"


# -- hnap-info ----------------------------------------------------------------------------


def test_hnap_parses_but_like_nse_never_sets_or_prints() -> None:
    table = hnap_table(HNAP_BODY)
    assert "Vendor" in table and "SOAPACTIONS" in table
    service = scan(HnapInfo(), port_result(80, "http"), FakeExchange(pages({"/HNAP1": HNAP_BODY})))
    assert service["name"] == "http" and service["method"] == "table"
    assert "hnap-info" in service["scripts"] and not service.get("script_results")


def test_hnap_dies_where_slaxml_dies() -> None:
    with pytest.raises(ScriptFailed):
        hnap_table(b"<a><Type>&#zz;</Type></a>")
    with pytest.raises(ScriptFailed):
        hnap_table(b'<a b="&#q;">x</a>')
    assert hnap_table(b"<a>&#zz;</a>x") is not None  # text nobody collects is not decoded


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=400))
def test_parsers_take_any_bytes(data: bytes) -> None:
    for raw in (data, b"<a><Type>" + data + b"</Type></a>"):
        try:
            list(sax_events(raw))
            hnap_table(raw)
        except ScriptFailed:
            pass
    # the HTTP client reads any answer, whole or cut, closed or left open, to a response
    # (a failure is a status None with NSE's error text); only a Content-Length Lua
    # cannot turn into an integer is NSE's runtime error
    for answer in (b"HTTP/1.1 200 OK\r\n" + data, data):
        for reply in (Reply([answer], close=True), Reply([answer[:20], answer[20:]])):
            exchange = FakeExchange(lambda _c, _d, r=reply: r, port=80)
            d = defer.Deferred.fromCoroutine(
                get(exchange, PortView("127.0.0.1", 80, "tcp", "open"), "/")
            )
            assert d.called
            outcome: list[object] = []
            d.addBoth(outcome.append)
            if isinstance(outcome[0], Failure):
                outcome[0].trap(ScriptFailed)
                continue
            response = outcome[0]
            assert isinstance(response, HttpResponse)
            assert (response.status is None) == (response.body is None)
            assert response.status_line is not None
            if response.status is None:
                assert response.status_line.startswith("Error")
