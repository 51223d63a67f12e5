"""NSE's ``http`` library as the version scripts share it: ``identify_404`` with
``clean_404``, NSE's error texts, Lua's ``%q`` (the client's reading of bodies,
chunks, gzip and redirects is tested with the agents in test_scripts_agents)."""

from __future__ import annotations

from collections.abc import Coroutine
from typing import Any, TypeVar

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import defer

from tests.e2e.script_servers_http import ABOUT, http_response
from tests.test_scripts_brokers import port_result, scan
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT
from vscand.scripts.api import PortView
from vscand.scripts.builtin.http_trane_info import HttpTraneInfo
from vscand.scripts.nsehttp import HttpResponse, get
from vscand.scripts.nsehttp404 import all_uris_200, identify_404
from vscand.scripts.proto.lua_values import lua_q
from vscand.scripts.proto.nse_http import clean_404
from vscand.scripts.testing import FakeConnection, FakeExchange, Reply

T = TypeVar("T")
VIEW = PortView("127.0.0.1", 80, "tcp", "open", name="http")


def run(coro: Coroutine[Any, Any, T]) -> T:
    d = defer.Deferred.fromCoroutine(coro)
    assert d.called
    out: list[T] = []
    d.addCallback(out.append)
    return out[0]


def path_of(conn: FakeConnection) -> str:
    return conn.sent[0].split(b" ")[1].decode()


def peer(answer: Any) -> FakeExchange:
    """Each request answered by ``answer(path)`` (bytes), then closed."""
    return FakeExchange(lambda c, _d: Reply([answer(path_of(c))], close=True), port=80)


# -- clean_404 and identify_404 -----------------------------------------------------------


def test_clean_404_removes_what_nse_removes_in_its_order() -> None:
    assert clean_404(b"at 9:15:02 PM on 2024-01-31, 12/31/99 or 20240131 x") == b"at   on ,  or  x"
    # the path pass takes the URI and everything up to the next space
    assert clean_404(b"<p>/nmaplowercheck1700000000 not found</p>") == b"<p> not found<"
    assert clean_404(b"C:\\inetpub\\x y") == b" y"
    # each pass is one gsub over the result of the previous one
    # each pass is one gsub over the result of the previous ones (checked against Lua 5.4)
    assert clean_404(b"1234567") == b"7"
    assert clean_404(b"aAMm") == b""  # "AM" goes, then the "am" it leaves
    assert clean_404(b"aaPMm") == b"aam"  # "PM" goes after the "am" pass: "am" stays


def test_every_uri_200_with_the_same_page_stops_the_scripts() -> None:
    def same(path: str) -> bytes:
        return http_response("200 OK", f"<p>{path} at 10:11:12 is here</p>".encode(), "x")

    exchange = peer(same)
    assert run(identify_404(exchange, VIEW)) == (True, 200)
    assert run(all_uris_200(peer(same), VIEW))
    sent = [path_of(c) for c in exchange.connections]
    assert [p.rstrip("0123456789") for p in sent] == [
        "/nmaplowercheck", "/NmapUpperCheck", "/Nmap/folder/check",
    ]  # fmt: skip
    assert b"Connection: close\r\n" in exchange.connections[0].sent[0]


def test_a_404_a_different_page_or_a_changed_status_let_the_scripts_run() -> None:
    assert run(identify_404(peer(lambda _p: http_response("404 No", b"", "x")), VIEW)) == (
        True,
        404,
    )

    def varying(path: str) -> bytes:
        return http_response("200 OK", b"page " + str(len(path)).encode(), "x")

    found, why = run(identify_404(peer(varying), VIEW))
    assert not found and "different" in str(why)

    def folder_404(path: str) -> bytes:
        return http_response("404 No" if "folder" in path else "200 OK", b"same", "x")

    assert run(identify_404(peer(folder_404), VIEW)) == (
        False,
        "HTTP 404 status changed for third request (became 404).",
    )
    silent = FakeExchange(lambda _c, _d: None, port=80)
    assert run(identify_404(silent, VIEW)) == (True, None)
    assert not run(all_uris_200(silent, VIEW))


def test_identify_404_follows_redirects_from_the_second_uri_on() -> None:
    def moved(path: str) -> bytes:
        if path.startswith("/found"):
            return http_response("200 OK", b"same", "x")
        head = f"HTTP/1.1 302 Found\r\nLocation: /found{path}\r\nContent-Length: 0\r\n\r\n"
        return head.encode()

    exchange = peer(moved)
    assert run(identify_404(exchange, VIEW)) == (True, 302)  # the first is not followed
    assert len(exchange.connections) == 1

    def first_ok(path: str) -> bytes:
        return http_response("200 OK", b"same", "x") if "lower" in path else moved(path)

    exchange = peer(first_ok)
    assert run(identify_404(exchange, VIEW)) == (True, 200)
    assert len(exchange.connections) == 5


def test_a_redirect_to_the_same_place_over_https_meets_nse_s_cache() -> None:
    # nginx's "plain HTTP to an HTTPS port" answer: NSE's cache key has no scheme, so
    # the https request for the same host, port and path is the cached 301 again
    moved = b"HTTP/1.1 301 Moved\r\nLocation: https://127.0.0.1:8443/x\r\nContent-Length: 0\r\n\r\n"
    exchange = FakeExchange(lambda _c, _d: Reply([moved], close=True), port=8443, tls_ok=True)
    view = PortView("127.0.0.1", 8443, "tcp", "open", name="http")
    response = run(get(exchange, view, "/x"))
    assert response.status == 301 and len(response.location) == 6
    assert len(exchange.connections) == 1
    # elsewhere on the same port is followed (over TLS, as the scheme says)
    hop = b"HTTP/1.1 301 Moved\r\nLocation: https://127.0.0.1:8080/y\r\nContent-Length: 0\r\n\r\n"

    def respond(conn: FakeConnection, _d: bytes) -> Reply:
        return Reply([http_response("200 OK", b"y", "x") if conn.tls else hop], close=True)

    exchange = FakeExchange(respond, port=8080, tls_ok=True)
    view = PortView("127.0.0.1", 8080, "tcp", "open", name="http")
    assert run(get(exchange, view, "/x")).body == b"y"
    assert [c.tls for c in exchange.connections] == [False, True]


# -- NSE's error texts ------------------------------------------------------------------------


def test_failures_carry_nse_s_error_text() -> None:
    prefix = "Error in next_response function; "
    chunked = b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n"
    cases = {
        b"HTTP/1.1 200OK\r\n\r\n": 'Error parsing status-line "HTTP/1.1 200OK\\13\\\n".',
        b"HTTP/1.1 200 OK\r\nContent-Length: x1\r\n\r\n": 'Content-Length "x1" is non-numeric',
        b"HTTP/1.1 200 OK\r\nContent-Length: 9\r\n\r\nab": "EOF",
        chunked + b"  zz\r\n": 'Chunked encoding didn\'t find hex; got "zz\\13\\\n".',
        chunked + b"5\r\nab": "Incomplete chunk; EOF",
    }
    for answer, text in cases.items():
        response = run(get(peer(lambda _p, a=answer: a), VIEW, "/"))
        assert (response.status, response.body, response.status_line) == (None, None, prefix + text)
    refused = FakeExchange(lambda _c, _d: None, port=80, refuse=True)
    assert run(get(refused, VIEW, "/")).status_line == "Error creating socket."
    udp = PortView("127.0.0.1", 80, "udp", "open")
    assert run(get(refused, udp, "/")) == HttpResponse(status_line="Unsupported protocol.")


def test_trane_dies_where_nse_indexes_the_nil_body_of_an_error_holding_200() -> None:
    exchange = peer(lambda p: b"HTTP/1.1 200OK\r\n" if p == "/evox/about" else b"")
    service = scan(port_result(80, "http"), HttpTraneInfo(), exchange)
    assert service["scripts"] == {"http-trane-info": SCRIPT_ERROR_OUTPUT}
    assert service["product"] is None
    # a document served behind a redirect is found, as NSE's http.get finds it
    pages = {"/about": http_response("200 OK", ABOUT, "x")}
    redirect = b"HTTP/1.1 301 Moved\r\nLocation: /about\r\nContent-Length: 0\r\n\r\n"
    moved = peer(
        lambda p: redirect if p == "/evox/about" else pages.get(p, b"HTTP/1.1 404 N\r\n\r\n")
    )
    service = scan(port_result(80, "http"), HttpTraneInfo(), moved)
    assert (service["product"], service["devicetype"]) == ("Tracer SC", "HwVer12AB")


# -- Lua's %q ---------------------------------------------------------------------------------


def test_lua_q() -> None:
    assert lua_q(b'a"b\\c\nd') == b'"a\\"b\\\\c\\\nd"'
    assert lua_q(b"\r\n\x001\x7f\xff") == b'"\\13\\\n\\0001\\127\xff"'


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=60))
def test_lua_q_quotes_everything_inside(data: bytes) -> None:
    quoted = lua_q(data)
    assert quoted.startswith(b'"') and quoted.endswith(b'"') and len(quoted) >= len(data) + 2


@pytest.mark.parametrize("body", [b"", b"x" * 100, b"12:00 /a b"])
def test_clean_404_is_idempotent_on_clean_pages(body: bytes) -> None:
    assert clean_404(clean_404(body)) == clean_404(body)
