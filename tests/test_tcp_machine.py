"""The per-port TCP machine, driven deterministically (Clock, StringTransport, fake dialer)."""

from __future__ import annotations

import errno
from typing import Any

import pytest
from twisted.internet import defer, error
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.python.failure import Failure

from tests.matching import MatchGate
from vscand.probes.matcher import Matcher
from vscand.probes.parser import parse_probe_text
from vscand.scan.model import PortTask, ScanOptions
from vscand.scan.tcp import TCPPortScan

PROBES = rb"""Exclude T:9100
Probe TCP NULL q||
totalwaitms 6000
tcpwrappedms 3000
match ssh m|^SSH-2\.0-OpenSSH_(\S+)\r\n| p/OpenSSH/ v/$1/ o/Linux/ cpe:/a:openbsd:openssh:$1/
softmatch ssh m|^SSH-2\.0-| i/soft info/
match ftp m|^220 ProFTPD (\S+) Server| p/ProFTPD/ v/$1/
softmatch ftp m|^220 | h/softhost/

Probe TCP GenericLines q|\r\n\r\n|
rarity 1
ports 21
match ftp m|^220 [^\r\n]*\r\n500 | p/GenericFTP/

Probe TCP GetRequest q|GET / HTTP/1.0\r\n\r\n|
rarity 1
ports 80
match http m|^HTTP/1\.[01] \d\d\d .*\r\nServer: Apache/([\d.]+)|s p/Apache httpd/ v/$1/

Probe TCP Rare q|RARE\r\n|
rarity 8
match rare m|^RAREOK|
"""

GENERIC = b"\r\n\r\n"
GET = b"GET / HTTP/1.0\r\n\r\n"


class FakeDialer:
    """Records each connection attempt; the test accepts, refuses or times it out."""

    def __init__(self) -> None:
        self.attempts: list[tuple[Protocol, defer.Deferred[Protocol], float]] = []
        self.transports: list[StringTransport] = []

    def __call__(
        self, task: PortTask, protocol: Protocol, timeout: float, tls: bool
    ) -> defer.Deferred[Protocol]:
        d: defer.Deferred[Protocol] = defer.Deferred()
        self.attempts.append((protocol, d, timeout))
        return d

    def accept(self) -> tuple[Protocol, StringTransport]:
        protocol, d, _ = self.attempts[-1]
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        d.callback(protocol)
        return protocol, transport

    def fail(self, exc: Exception) -> None:
        _, d, _ = self.attempts[-1]
        d.errback(exc)


def eof(protocol: Protocol) -> None:
    protocol.connectionLost(Failure(error.ConnectionDone()))


def reset(protocol: Protocol) -> None:
    protocol.connectionLost(Failure(error.ConnectionLost()))


@pytest.fixture
def db_matcher() -> Matcher:
    return Matcher(db=parse_probe_text(PROBES, "test.probes"))


class Harness(MatchGate):
    """One port machine on a Clock and a fake dialer (``slow``: see :class:`MatchGate`)."""

    def __init__(
        self, matcher: Matcher, port: int = 7001, intensity: int = 7, *, slow: bool = False
    ) -> None:
        self.clock = Clock()
        self.dialer = FakeDialer()
        super().__init__(matcher, slow)
        self.results: list[dict[str, Any]] = []
        self.scan = TCPPortScan(
            PortTask("127.0.0.1", port),
            db=matcher.db,
            match=self.match,
            dial=self.dialer,
            clock=self.clock,
            options=ScanOptions(intensity=intensity),
            table_name="afs3-callback" if port == 7001 else None,
            wallclock=lambda: 1_700_000_000.0,
        )
        self.deferred = self.scan.run()
        self.deferred.addCallback(self.results.append)

    @property
    def result(self) -> dict[str, Any]:
        assert len(self.results) == 1, "the port has not finished"
        return self.results[0]

    def finished_cleanly(self) -> None:
        assert self.results, "the port has not finished"
        assert not self.clock.getDelayedCalls(), "a timer is still pending"


def test_banner_hard_match_on_null(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    proto, transport = h.dialer.accept()
    proto.dataReceived(b"SSH-2.0-OpenSSH_9.2p1\r\n")
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["name"], svc["product"], svc["version"], svc["ostype"]) == (
        "ssh",
        "OpenSSH",
        "9.2p1",
        "Linux",
    )
    assert (svc["method"], svc["conf"], svc["fingerprint"]) == ("probed", 10, None)
    assert svc["cpe"] == ["cpe:/a:openbsd:openssh:9.2p1"]
    assert h.result["state"] == "open" and h.result["reason"] == "syn-ack"
    assert transport.value() == b""  # nothing was sent: the NULL probe
    assert transport.disconnecting


def test_soft_match_then_hard_match_on_reused_connection(db_matcher: Matcher) -> None:
    """The NULL banner stays at the front of the next probe's buffer (SPEC §4.5)."""
    h = Harness(db_matcher, port=21)
    proto, transport = h.dialer.accept()
    proto.dataReceived(b"220 hello there\r\n")  # softmatch ftp, h/softhost/
    assert not h.results  # a soft match does not end the probe
    h.clock.advance(6.0)  # the NULL wait ends: same connection, next probe written
    assert len(h.dialer.attempts) == 1
    assert transport.value() == GENERIC  # port 21 is GenericLines' port: it goes first
    proto.dataReceived(b"500 what?\r\n")
    h.finished_cleanly()
    svc = h.result["service"]
    assert svc["name"] == "ftp" and svc["product"] == "GenericFTP"
    assert svc["hostname"] == "softhost"  # kept from the soft match
    assert [m["soft"] for m in h.result["matches"]] == [True, False]


def test_partial_reads_soft_then_hard_keeps_soft_fields(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    proto, _ = h.dialer.accept()
    proto.dataReceived(b"SSH-2.0-")
    assert not h.results
    proto.dataReceived(b"OpenSSH_8.0\r\n")
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["product"], svc["version"], svc["extrainfo"]) == ("OpenSSH", "8.0", "soft info")


def test_immediate_close_is_tcpwrapped(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    proto, _ = h.dialer.accept()
    h.clock.advance(0.1)
    eof(proto)
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["name"], svc["method"], svc["conf"]) == ("tcpwrapped", "probed", 8)
    assert len(h.dialer.attempts) == 1  # only the NULL probe


def test_reset_during_null_within_window_is_tcpwrapped(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    proto, _ = h.dialer.accept()
    reset(proto)
    h.finished_cleanly()
    assert h.result["service"]["name"] == "tcpwrapped"


def test_late_close_walks_all_probes_and_still_tcpwrapped(db_matcher: Matcher) -> None:
    """Closes after >= tcpwrappedms, never a byte: all probes, then the override."""
    h = Harness(db_matcher)
    proto, _ = h.dialer.accept()
    h.clock.advance(3.5)
    eof(proto)
    while not h.results:
        proto, _ = h.dialer.accept()
        eof(proto)
    h.finished_cleanly()
    assert h.result["service"]["name"] == "tcpwrapped"
    # NULL, then GenericLines and GetRequest (rarity 1); Rare (8) is above intensity 7
    sent = [t.value() for t in h.dialer.transports]
    assert sent == [b"", GENERIC, GET]


def test_silent_port_gets_probes_in_order_and_no_match(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    _, t0 = h.dialer.accept()
    h.clock.advance(6.0)  # NULL: read timeout, connection reused
    assert t0.value() == GENERIC
    h.clock.advance(5.0)  # GenericLines: timeout, new connection
    assert len(h.dialer.attempts) == 2
    _, t1 = h.dialer.accept()
    assert t1.value() == GET
    h.clock.advance(5.0)
    h.finished_cleanly()
    svc = h.result["service"]
    # no data ever, but a read timed out: not tcpwrapped; no match -> table name
    assert (svc["name"], svc["method"], svc["conf"]) == ("afs3-callback", "table", 3)
    assert svc["fingerprint"] is None


def test_unrecognised_reply_gives_fingerprint(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    proto, _ = h.dialer.accept()
    proto.dataReceived(b"WELCOME zzqq\r\n")
    h.clock.advance(6.0)
    proto.dataReceived(b"what?\r\n")
    eof(proto)
    while not h.results:
        proto, _ = h.dialer.accept()
        proto.dataReceived(b"WELCOME zzqq\r\n")
        eof(proto)
    h.finished_cleanly()
    svc = h.result["service"]
    assert svc["method"] == "table" and svc["conf"] == 3
    fp = svc["fingerprint"]
    assert fp.startswith("SF-Port7001-TCP:V=7.93%I=7%")
    assert "%r(NULL,E," in fp.replace("\nSF:", "")
    assert "%r(GenericLines,15," in fp.replace("\nSF:", "")  # banner kept + reply (0x15 = 21)
    assert fp.endswith(";")


@pytest.mark.parametrize("release", ["7.93", "7.94", "7.95"])
def test_fingerprint_names_the_release_reproduced(release: str) -> None:
    """``V=`` is the Nmap release whose probe grammar the database was read with (Nmap 7.95
    writes ``V=7.95``); not always 7.93."""
    h = Harness(Matcher(db=parse_probe_text(PROBES, "test.probes", release=release)))
    while not h.results:
        proto, _ = h.dialer.accept()
        proto.dataReceived(b"WELCOME zzqq\r\n")
        eof(proto)
    h.finished_cleanly()
    assert h.result["service"]["fingerprint"].startswith(f"SF-Port7001-TCP:V={release}%I=7%")


def test_read_cap_ends_the_probe_without_waiting(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    proto, transport = h.dialer.accept()
    proto.dataReceived(b"A" * 5000)
    # the NULL probe is over at once (>= 4096 bytes); the connection is reused
    assert transport.value() == GENERIC
    proto.dataReceived(b"B" * 10)  # this read ends GenericLines too (buffer >= 4096)
    assert len(h.dialer.attempts) == 2
    _, t2 = h.dialer.accept()
    assert t2.value() == GET
    h.clock.advance(5.0)
    h.finished_cleanly()
    fp = h.result["service"]["fingerprint"].replace("\nSF:", "")
    assert "%r(NULL,1388," in fp and "%r(GenericLines,1392," in fp


def test_closed_and_filtered_ports(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7001)
    h.dialer.fail(error.ConnectionRefusedError())
    h.finished_cleanly()
    assert (h.result["state"], h.result["reason"]) == ("closed", "conn-refused")
    assert h.result["service"]["name"] == "afs3-callback"
    assert h.result["service"]["method"] == "table"

    h2 = Harness(db_matcher)
    h2.dialer.fail(error.TimeoutError())
    h2.finished_cleanly()
    assert (h2.result["state"], h2.result["reason"]) == ("filtered", "no-response")


def test_reset_during_connect_is_an_open_tcpwrapped_port(db_matcher: Matcher) -> None:
    """RST on accept can beat the connect's completion: ECONNRESET, not a refusal.

    The handshake completed, so Nmap's port scan says open; the service connection
    failed with nothing read: tcpwrapped (SPEC §4.2, §4.8).  Seen live in the e2e test.
    """
    h = Harness(db_matcher)
    h.dialer.fail(error.ConnectError(errno.ECONNRESET, "Connection reset by peer"))
    h.finished_cleanly()
    assert h.result["state"] == "open"
    svc = h.result["service"]
    assert (svc["name"], svc["method"], svc["conf"]) == ("tcpwrapped", "probed", 8)


def test_excluded_port_is_not_probed(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=9100)
    _, transport = h.dialer.accept()
    h.finished_cleanly()
    svc = h.result["service"]
    assert svc["product"] == "Excluded from version scan"
    assert (svc["method"], svc["conf"]) == ("table", 3)
    assert transport.value() == b""


def test_soft_match_prunes_probes(db_matcher: Matcher) -> None:
    """After a soft `ftp`, only probes with ftp lines remain (GetRequest has none)."""
    h = Harness(db_matcher, port=7001)
    proto, transport = h.dialer.accept()
    proto.dataReceived(b"220 nothing known\r\n")
    h.clock.advance(6.0)
    assert transport.value() == GENERIC
    h.clock.advance(5.0)
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["name"], svc["method"], svc["conf"]) == ("ftp", "probed", 10)
    assert svc["hostname"] == "softhost"
    assert svc["fingerprint"] is not None
    assert len(h.dialer.attempts) == 1


def test_later_connect_failure_is_incomplete(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    proto, _ = h.dialer.accept()
    proto.dataReceived(b"220 soft only\r\n")
    eof(proto)  # next probe on a new connection
    h.dialer.fail(error.ConnectionRefusedError())
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["name"], svc["method"], svc["conf"]) == ("ftp", "table", 3)


def test_cancel_keeps_what_was_found(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    proto, _ = h.dialer.accept()
    proto.dataReceived(b"SSH-2.0-")
    h.deferred.cancel()
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["name"], svc["method"]) == ("ssh", "table")
    assert svc["extrainfo"] == "soft info"


def test_late_events_after_the_end_are_absorbed(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    proto, _ = h.dialer.accept()
    proto.dataReceived(b"SSH-2.0-OpenSSH_9.2p1\r\n")
    proto.dataReceived(b"more data")
    eof(proto)
    h.clock.advance(100)
    h.finished_cleanly()
    assert len(h.results) == 1


def test_data_and_close_during_an_asynchronous_match(db_matcher: Matcher) -> None:
    """Reads that arrive while a match runs are matched in order, before the close."""
    h = Harness(db_matcher, slow=True)
    proto, _ = h.dialer.accept()
    proto.dataReceived(b"SSH-2.0-")
    proto.dataReceived(b"OpenSSH_7.4\r\n")
    eof(proto)
    assert [b for _, _, b in h.pending] == [b"SSH-2.0-"]
    h.release()
    assert h.release() == b"SSH-2.0-OpenSSH_7.4\r\n"
    h.finished_cleanly()
    assert h.result["service"]["version"] == "7.4"


def test_deadline_during_a_match_waits_for_the_match(db_matcher: Matcher) -> None:
    """A deadline that falls while a read is being matched ends the probe after the match."""
    h = Harness(db_matcher, slow=True)
    proto, transport = h.dialer.accept()
    h.clock.advance(5.9)
    proto.dataReceived(b"220 slow one\r\n")
    h.clock.advance(0.2)  # the NULL deadline passes while the match is pending
    assert transport.value() == b""  # the next probe waits for the match
    h.release()  # soft ftp
    assert transport.value() == GENERIC  # now the probe is over: connection reused
    h.clock.advance(5.0)
    h.finished_cleanly()
    assert h.result["service"]["name"] == "ftp"


def test_eof_with_data_on_null_means_a_new_connection(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    proto, t0 = h.dialer.accept()
    proto.dataReceived(b"HELLO unknown\r\n")
    eof(proto)  # data then close: fingerprinted, next probe on a NEW connection
    assert t0.value() == b""
    assert len(h.dialer.attempts) == 2
    _, t1 = h.dialer.accept()
    assert t1.value() == GENERIC
    h.clock.advance(5.0)
    _, t2 = h.dialer.accept()
    assert t2.value() == GET
    h.clock.advance(5.0)
    h.finished_cleanly()
    fp = h.result["service"]["fingerprint"].replace("\nSF:", "")
    assert "%r(NULL,F," in fp and "GenericLines" not in fp  # no data on the later probes


def test_reset_after_data_loses_the_buffer(db_matcher: Matcher) -> None:
    """ECONNRESET: buffered data is not fingerprinted (SPEC §4.4)."""
    h = Harness(db_matcher)
    proto, _ = h.dialer.accept()
    proto.dataReceived(b"partial")
    reset(proto)
    while not h.results:
        h.dialer.accept()
        h.clock.advance(5.0)
    h.finished_cleanly()
    svc = h.result["service"]
    assert svc["name"] == "afs3-callback" and svc["fingerprint"] is None


def test_unreachable_during_a_read_is_incomplete(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    proto, _ = h.dialer.accept()
    proto.connectionLost(Failure(error.NoRouteError()))
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["method"], svc["conf"]) == ("table", 3)
    assert svc["name"] == "afs3-callback"  # not tcpwrapped: the flag was cleared


def test_no_further_reads_after_the_cap(db_matcher: Matcher) -> None:
    """Once a read brings the buffer to 4096 bytes, later bytes of that probe are not read."""
    h = Harness(db_matcher, port=80)  # GetRequest is port-listed for 80
    proto, transport = h.dialer.accept()
    h.clock.advance(6.0)  # silent NULL: connection reused for GetRequest
    assert transport.value() == GET
    proto.dataReceived(b"X" * 4096)
    proto.dataReceived(b"HTTP/1.0 200 OK\r\nServer: Apache/2.4.1\r\n")  # ignored: capped
    h.clock.advance(60)
    while not h.results:
        h.dialer.accept()
        h.clock.advance(5.0)
    h.finished_cleanly()
    assert h.result["service"]["product"] is None


def test_cancel_before_any_data_is_incomplete_not_tcpwrapped(db_matcher: Matcher) -> None:
    """Our own interruption says nothing about the service: no tcpwrapped override."""
    h = Harness(db_matcher)
    h.dialer.accept()
    h.clock.advance(1.0)
    h.deferred.cancel()
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["name"], svc["method"], svc["conf"]) == ("afs3-callback", "table", 3)
    assert h.result["interrupted"] is True
    assert h.result["final_state"] == "incomplete"
