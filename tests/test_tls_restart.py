"""The SSL restart (SPEC §5), driven deterministically: Clock, StringTransport, iosim TLS.

Plain-text connections are ``StringTransport``s the test feeds by hand; after the
hard ``ssl`` match the machine dials TLS, which runs the production ``TLSClient``
over ``twisted.test.iosim`` against a real in-memory TLS server with a
certificate made at test time.
"""

from __future__ import annotations

import gc
from collections.abc import Iterator
from typing import Any

import pytest
from OpenSSL._util import lib as openssl_lib
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.logger import ILogObserver, LogEvent, formatEvent, globalLogPublisher
from zope.interface import provider

from tests.e2e.tls_servers import huge_certificate_chain, record, server_hello
from tests.matching import MatchGate
from tests.tls_memory import Identity, MemoryTLSDialer, RecordingServer, make_identity
from vscand.probes.matcher import Matcher
from vscand.probes.parser import parse_probe_text
from vscand.scan.model import PortTask, ScanOptions
from vscand.scan.tcp import TCPPortScan

PROBES = rb"""Probe TCP NULL q||
totalwaitms 6000
tcpwrappedms 3000
match ssh m|^SSH-2\.0-OpenSSH_(\S+)\r\n| p/OpenSSH/ v/$1/ cpe:/a:openbsd:openssh:$1/
softmatch ftp m|^220 | h/softhost/

Probe TCP GenericLines q|\r\n\r\n|
rarity 1
match ssl m|^\x15\x03[\x00-\x03]\0\x02\x02[F\x28]| p/TLS alert/
match ssl/vmware-auth m|^VMWARE-SSL| p/VMware Authentication Daemon/
match generic m|^GENERIC-OK|

Probe TCP GetRequest q|GET / HTTP/1.0\r\n\r\n|
rarity 1
ports 80
sslports 7443
match ssl m|^SSL-AGAIN|
match http m|^HTTP/1\.0 200 OK\r\nServer: TestHTTP/([\d.]+)| p/TestHTTP/ v/$1/ cpe:/a:test:http:$1/
"""

ALERT = b"\x15\x03\x01\x00\x02\x02\x28"
GENERIC = b"\r\n\r\n"
GET = b"GET / HTTP/1.0\r\n\r\n"
HTTP_OK = b"HTTP/1.0 200 OK\r\nServer: TestHTTP/2.5\r\n\r\nhello"


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher(db=parse_probe_text(PROBES, "tls-test.probes"))


@pytest.fixture(scope="module")
def identity() -> Identity:
    return make_identity("memory.test", ("memory.test", "alt.memory.test"))


@pytest.fixture(autouse=True)
def no_logged_errors() -> Iterator[None]:
    """Hostile peers end ports, never in a logged error or an unhandled Deferred failure."""
    errors: list[LogEvent] = []

    @provider(ILogObserver)
    def observe(event: LogEvent) -> None:
        if event.get("log_failure") is not None or event.get("isError"):
            errors.append(event)

    globalLogPublisher.addObserver(observe)
    try:
        yield
        gc.collect()  # an unhandled failure in a dropped Deferred is logged now
    finally:
        globalLogPublisher.removeObserver(observe)
    assert not errors, [formatEvent(e) for e in errors]


def http_reply(data: bytes) -> bytes | None:
    return HTTP_OK if data.startswith(b"GET ") else None


class TLSHarness(MatchGate):
    """One port machine whose TLS connections reach ``server`` in memory."""

    def __init__(
        self,
        matcher: Matcher,
        identity: Identity,
        *,
        port: int = 7443,
        server_reply: Any = http_reply,
        banner: bytes = b"",
        close_after_reply: bool = False,
        raw_server: Any = None,
        hostname: str | None = None,
    ) -> None:
        self.clock = Clock()
        self.server_log: list[bytes] = []
        self.dialer = MemoryTLSDialer(
            self.clock,
            identity,
            lambda: RecordingServer(self.server_log, server_reply, banner, close_after_reply),
            raw_server=raw_server,
        )
        super().__init__(matcher)
        self.results: list[dict[str, Any]] = []
        self.scan = TCPPortScan(
            PortTask("127.0.0.1", port, hostname=hostname),
            db=matcher.db,
            match=self.match,
            dial=self.dialer,
            clock=self.clock,
            options=ScanOptions(),
            table_name="https-alt" if port == 7443 else None,
            wallclock=lambda: 1_700_000_000.0,
        )
        self.scan.run().addCallback(self.results.append)

    def plain_ssl_match(self) -> None:
        """Plain text: the NULL probe times out, GenericLines is answered by a TLS alert."""
        proto, transport = self.dialer.accept()
        self.clock.advance(6.0)
        assert transport.value() == GENERIC
        proto.dataReceived(ALERT)

    def advance(self, seconds: float) -> None:
        self.dialer.flush()
        self.clock.advance(seconds)
        self.dialer.flush()

    @property
    def result(self) -> dict[str, Any]:
        assert len(self.results) == 1, "the port has not finished"
        return self.results[0]

    def finished_cleanly(self) -> None:
        assert self.results, "the port has not finished"
        assert not self.clock.getDelayedCalls(), "a timer is still pending"


def test_ssl_match_restarts_through_tls_and_finds_http(
    matcher: Matcher, identity: Identity
) -> None:
    h = TLSHarness(matcher, identity)
    h.plain_ssl_match()
    # the restart: one TLS dial, bounded by the 8 s SSL connect timeout
    assert len(h.dialer.tls) == 1
    assert h.dialer.tls[0].timeout == 8.0
    h.dialer.flush()
    assert h.scan.state == "reading"  # handshake done: the NULL probe runs inside TLS
    assert h.server_log == []
    h.advance(6.0)  # NULL inside TLS times out; GetRequest (sslports 7443) comes first
    h.dialer.flush()
    h.finished_cleanly()
    assert h.server_log == [GET]
    svc = h.result["service"]
    assert (svc["name"], svc["tunnel"], svc["product"], svc["version"]) == (
        "http",
        "ssl",
        "TestHTTP",
        "2.5",
    )
    assert (svc["method"], svc["conf"], svc["cpe"]) == ("probed", 10, ["cpe:/a:test:http:2.5"])
    # the plain-text `ssl` match's product ("TLS alert") was cleared by the restart
    assert h.result["final_state"] == "hardmatched"
    tls = svc["tls"]
    assert tls["sha256"] == identity.sha256
    assert tls["subject"] == "CN=memory.test"
    assert tls["issuer"] == "CN=memory.test"
    assert tls["san"] == ["DNS:memory.test", "DNS:alt.memory.test"]
    assert (tls["not_before"], tls["not_after"]) == ("2026-01-01T00:00:00Z", "2036-01-01T00:00:00Z")
    assert tls["serial"] == "1234abcd"
    assert tls["version"].startswith("TLSv1")
    assert tls["cipher"]


def test_nothing_matches_inside_tls(matcher: Matcher, identity: Identity) -> None:
    """NOMATCH inside the tunnel: table name with ssl/, fingerprint starting %T=SSL."""
    h = TLSHarness(
        matcher,
        identity,
        server_reply=lambda data: b"WHO ARE YOU\r\n",
        banner=b"ZZQQ hello\r\n",
    )
    h.plain_ssl_match()
    h.advance(0)
    h.advance(6.0)  # NULL: banner, then nothing more
    h.advance(5.0)  # GetRequest (sslports): banner + answer, no match
    h.advance(5.0)  # GenericLines: same
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["name"], svc["tunnel"], svc["method"], svc["conf"]) == (
        "https-alt",
        "ssl",
        "table",
        3,
    )
    assert svc["product"] is None
    fp = svc["fingerprint"]
    assert fp.startswith("SF-Port7443-TCP:V=7.93%T=SSL%I=7%D=")
    # only TLS-phase responses: the plain GenericLines alert was discarded with the restart
    assert "%r(NULL,C," in fp
    assert "x15" not in fp
    assert svc["tls"]["sha256"] == identity.sha256


def test_ssl_inside_tls_does_not_recurse(matcher: Matcher, identity: Identity) -> None:
    h = TLSHarness(matcher, identity, server_reply=lambda data: b"SSL-AGAIN\r\n")
    h.plain_ssl_match()
    h.advance(0)
    h.advance(6.0)
    h.finished_cleanly()
    assert len(h.dialer.tls) == 1
    svc = h.result["service"]
    assert (svc["name"], svc["tunnel"], svc["method"], svc["conf"]) == ("ssl", "ssl", "probed", 10)


def test_ssl_slash_match_needs_no_connection(matcher: Matcher, identity: Identity) -> None:
    h = TLSHarness(matcher, identity)
    proto, transport = h.dialer.accept()
    h.clock.advance(6.0)
    assert transport.value() == GENERIC
    proto.dataReceived(b"VMWARE-SSL 1.0\r\n")
    h.finished_cleanly()
    assert h.dialer.tls == []
    svc = h.result["service"]
    assert (svc["name"], svc["tunnel"], svc["product"]) == (
        "vmware-auth",
        "ssl",
        "VMware Authentication Daemon",
    )
    assert svc["tls"] is None


class _Silent(Protocol):
    """Accepts and never says a word (no ServerHello)."""


class _Plaintext(Protocol):
    """Answers the ClientHello with plain text."""

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(b"HTTP/1.0 400 Bad Request\r\n\r\nnot TLS\r\n")


class _HugeChain(Protocol):
    """Answers the ClientHello with a ServerHello and a ~1 MiB Certificate message."""

    def __init__(self, der: bytes) -> None:
        self.der = der
        self.sent = 0

    def dataReceived(self, data: bytes) -> None:
        if self.sent:
            return
        assert self.transport is not None
        message = server_hello() + huge_certificate_chain(self.der)
        for start in range(0, len(message), 16384):
            self.transport.write(record(0x16, message[start : start + 16384]))
        self.sent = len(message)


def _incomplete(h: TLSHarness) -> None:
    h.finished_cleanly()
    svc = h.result["service"]
    assert h.result["final_state"] == "incomplete"
    assert (svc["name"], svc["tunnel"], svc["method"], svc["conf"]) == (
        "https-alt",
        "ssl",
        "table",
        3,
    )
    # what the plain-text ssl match said (p/TLS alert/) is lost, as in Nmap
    assert svc["product"] is None
    assert svc["fingerprint"] is None
    assert svc["tls"] is None


def test_handshake_never_completes_ends_incomplete_at_8s(
    matcher: Matcher, identity: Identity
) -> None:
    h = TLSHarness(matcher, identity, raw_server=_Silent)
    h.plain_ssl_match()
    h.advance(7.9)
    assert not h.results
    h.advance(0.1)
    _incomplete(h)
    # the connection was aborted
    pump = h.dialer.tls[0].pump
    assert pump is not None and pump.clientIO.disconnecting


def test_plaintext_answer_to_client_hello_is_a_failed_connect(
    matcher: Matcher, identity: Identity
) -> None:
    h = TLSHarness(matcher, identity, raw_server=_Plaintext)
    h.plain_ssl_match()
    h.advance(0)
    _incomplete(h)


def test_megabyte_certificate_chain_is_a_failed_connect(
    matcher: Matcher, identity: Identity
) -> None:
    servers: list[_HugeChain] = []

    def huge() -> _HugeChain:
        servers.append(_HugeChain(identity.der))
        return servers[-1]

    h = TLSHarness(matcher, identity, raw_server=huge)
    h.plain_ssl_match()
    h.advance(0)
    assert servers and servers[0].sent > 1_000_000
    _incomplete(h)


def test_handshake_failure_on_a_later_connection(matcher: Matcher, identity: Identity) -> None:
    """The first TLS connection works and closes; the next one's handshake fails: INCOMPLETE."""
    h = TLSHarness(
        matcher,
        identity,
        server_reply=lambda data: None,
        banner=b"ZZQQ\r\n",
        close_after_reply=False,
    )
    h.plain_ssl_match()
    h.advance(0)
    # the NULL probe's connection is reused for GetRequest; then GenericLines needs a new one
    h.dialer.raw_server = _Plaintext
    h.advance(6.0)
    h.advance(5.0)
    assert len(h.dialer.tls) == 2
    h.finished_cleanly()
    svc = h.result["service"]
    assert h.result["final_state"] == "incomplete"
    assert (svc["name"], svc["tunnel"], svc["conf"]) == ("https-alt", "ssl", 3)
    # the first handshake did complete: what it showed is kept
    assert svc["tls"]["sha256"] == identity.sha256


def test_sni_only_for_names(matcher: Matcher, identity: Identity) -> None:
    seen: list[bytes | None] = []

    class _SNIRecorder(RecordingServer):
        def dataReceived(self, data: bytes) -> None:
            assert self.transport is not None
            handle = self.transport.getHandle()  # type: ignore[attr-defined]
            seen.append(handle.get_servername())
            super().dataReceived(data)

    for hostname in ("www.memory.test", "127.0.0.1", None):
        log: list[bytes] = []
        h = TLSHarness(matcher, identity, hostname=hostname)
        h.dialer.server = lambda log=log: _SNIRecorder(log, http_reply)
        h.plain_ssl_match()
        h.advance(0)
        h.advance(6.0)
        h.finished_cleanly()
        assert h.result["service"]["name"] == "http"
    assert seen == [b"www.memory.test", None, None]


def test_cancel_during_handshake_aborts_and_leaves_no_timer(
    matcher: Matcher, identity: Identity
) -> None:
    h = TLSHarness(matcher, identity, raw_server=_Silent)
    h.plain_ssl_match()
    h.dialer.flush()
    d = h.scan._done
    d.cancel()
    h.dialer.flush()
    h.finished_cleanly()
    assert h.result["final_state"] == "incomplete"
    assert h.result["interrupted"] is True
    d_tls = h.dialer.tls[0].deferred
    assert d_tls is not None and d_tls.called
    pump = h.dialer.tls[0].pump
    assert pump is not None and pump.clientIO.disconnecting


def test_next_tls_connection_resumes_the_session(matcher: Matcher, identity: Identity) -> None:
    """Like Nmap, a port's later TLS connections offer the session of the earlier one."""
    reused: list[bool] = []

    class _ResumeRecorder(RecordingServer):
        def dataReceived(self, data: bytes) -> None:
            assert self.transport is not None
            handle = self.transport.getHandle()  # type: ignore[attr-defined]
            # pyOpenSSL has no public session_reused(): OpenSSL's own flag, through its binding
            reused.append(bool(openssl_lib.SSL_session_reused(handle._ssl)))
            super().dataReceived(data)

    h = TLSHarness(matcher, identity)
    h.dialer.server = lambda: _ResumeRecorder(h.server_log, lambda data: None, b"ZZQQ\r\n")
    h.plain_ssl_match()
    h.advance(0)
    h.advance(6.0)  # NULL over; GetRequest on the same connection
    h.advance(5.0)  # GetRequest over; GenericLines on a new TLS connection
    h.advance(5.0)  # GenericLines over: nothing left
    h.finished_cleanly()
    assert len(h.dialer.tls) == 2
    assert h.server_log == [GET, GENERIC]
    assert reused == [False, True]
    assert h.result["service"]["name"] == "https-alt"
