"""The per-port UDP machine, driven deterministically (Clock, fake datagram sockets, no reactor)."""

from __future__ import annotations

from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock

from tests.matching import MatchGate
from vscand.probes.matcher import Matcher
from vscand.probes.parser import parse_probe_text
from vscand.scan.datagram import MAX_DATAGRAM, DatagramSocket
from vscand.scan.model import PortTask, ScanOptions
from vscand.scan.udp import CHECK_WAIT, UDPPortScan
from vscand.scan.udp_dtls import INBOX_CAP
from vscand.scan.walk import READ_CAP

PROBES = rb"""Exclude U:9999
Probe TCP NULL q||
match tcponly m|^X|

Probe UDP First q|FIRST|
rarity 1
ports 53
match domain m|^DNSOK (\S+)| p/FakeDNS/ v/$1/ cpe:/a:fake:dns:$1/
softmatch soft m|^SOFT| i/soft info/

Probe UDP Second q|SECOND|
rarity 3
match second m|^SECONDOK| p/Second/
match soft m|^SOFTHARD| p/HardSoft/

Probe UDP Rare q|RARE|
rarity 8
match rare m|^RAREOK|
"""

SRC = ("127.0.0.1", 53)
WALL = 1_700_000_000.0


class FakeSocket:
    """A connected datagram socket: records what is sent; the test delivers replies."""

    def __init__(self, protocol: DatagramProtocol) -> None:
        self.protocol = protocol
        self.sent: list[bytes] = []
        self.closed = False

    def write(self, datagram: bytes) -> int:
        assert not self.closed, "write on a closed socket"
        self.sent.append(datagram)
        return len(datagram)

    def stopListening(self) -> None:
        self.closed = True

    def reply(self, datagram: bytes) -> None:
        self.protocol.datagramReceived(datagram, SRC)

    def icmp(self) -> None:
        self.protocol.connectionRefused()


class FakeOpener:
    def __init__(self) -> None:
        self.sockets: list[FakeSocket] = []

    def __call__(
        self, task: PortTask, protocol: DatagramProtocol
    ) -> defer.Deferred[DatagramSocket]:
        sock = FakeSocket(protocol)
        self.sockets.append(sock)
        return defer.succeed(sock)


class Harness(MatchGate):
    def __init__(
        self,
        matcher: Matcher,
        port: int = 53,
        intensity: int = 7,
        *,
        slow: bool = False,
        payloads: tuple[bytes, ...] = (),
    ) -> None:
        self.clock = Clock()
        self.opener = FakeOpener()
        super().__init__(matcher, slow)
        self.results: list[dict[str, Any]] = []
        self.scan = UDPPortScan(
            PortTask("127.0.0.1", port, "udp"),
            db=matcher.db,
            match=self.match,
            open_socket=self.opener,
            clock=self.clock,
            options=ScanOptions(intensity=intensity, scanned_protocols=("udp",)),
            table_name="domain" if port == 53 else None,
            check_payloads=payloads,
            wallclock=lambda: WALL,
        )
        self.deferred = self.scan.run()
        self.deferred.addCallback(self.results.append)

    @property
    def check(self) -> FakeSocket:
        return self.opener.sockets[0]

    @property
    def sock(self) -> FakeSocket:
        return self.opener.sockets[1]

    @property
    def probe_sockets(self) -> list[FakeSocket]:
        """Every socket a probe went out on, oldest first."""
        return self.opener.sockets[1:]

    @property
    def result(self) -> dict[str, Any]:
        assert len(self.results) == 1, "the port has not finished"
        return self.results[0]

    def finished_cleanly(self) -> None:
        assert self.results, "the port has not finished"
        assert not self.clock.getDelayedCalls(), "a timer is still pending"
        assert all(s.closed for s in self.opener.sockets), "a socket was left open"


@pytest.fixture
def db_matcher() -> Matcher:
    return Matcher(db=parse_probe_text(PROBES, "test.probes"))


@pytest.fixture
def db794_matcher() -> Matcher:
    """The same probes read as Nmap 7.94+ reads them: a socket per UDP probe."""
    return Matcher(db=parse_probe_text(PROBES, "test.probes", release="7.95"))


def test_port_listed_probe_first_and_a_reply_hard_matches(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, payloads=(b"PAYLOAD",))
    assert h.check.sent == [b"PAYLOAD"], "the port-scan datagram goes out on the check socket"
    assert h.sock.sent == [b"FIRST"], "no NULL probe; the port-listed probe first"
    h.sock.reply(b"DNSOK 2.90\n")
    h.finished_cleanly()
    r = h.result
    assert (r["protocol"], r["state"], r["reason"]) == ("udp", "open", "udp-response")
    svc = r["service"]
    assert (svc["name"], svc["product"], svc["version"]) == ("domain", "FakeDNS", "2.90")
    assert (svc["method"], svc["conf"], svc["cpe"], svc["fingerprint"]) == (
        "probed",
        10,
        ["cpe:/a:fake:dns:2.90"],
        None,
    )
    assert r["final_state"] == "hardmatched"


def test_silent_port_is_open_filtered_nomatch_without_question_mark(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7201)
    assert h.sock.sent == [b"FIRST"]
    h.clock.advance(5.0)
    assert h.sock.sent == [b"FIRST", b"SECOND"], "one datagram per probe, never retransmitted"
    h.clock.advance(5.0)
    h.finished_cleanly()
    r = h.result
    assert (r["state"], r["reason"]) == ("open|filtered", "no-response")
    svc = r["service"]
    assert (svc["name"], svc["method"], svc["conf"], svc["fingerprint"]) == (None, "table", 3, None)
    assert r["final_state"] == "nomatch", "a read timeout happened: no tcpwrapped override"
    assert h.sock.sent == [b"FIRST", b"SECOND"], "Rare (rarity 8) is not sent at intensity 7"
    assert r["duration_ms"] == 10_000


def test_unknown_reply_waits_the_whole_probe_and_fingerprints_as_udp(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7200)
    h.sock.reply(b"garbage 1")
    h.clock.advance(4.9)
    assert h.sock.sent == [b"FIRST"], "after a non-matching datagram Nmap waits for the deadline"
    h.clock.advance(0.1)
    h.sock.reply(b"garbage 2")
    h.clock.advance(5.0)
    h.finished_cleanly()
    r = h.result
    assert (r["state"], r["reason"]) == ("open", "udp-response")
    fp = r["service"]["fingerprint"]
    assert fp.startswith("SF-Port7200-UDP:V=7.93%I=7%D=")
    assert '%r(First,9,"garbage\\x201")%r(Second,9,"garbage\\x202");' in fp.replace("\nSF:", "")


def test_datagrams_accumulate_in_the_probe_buffer(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7200)
    h.sock.reply(b"DNSOK")
    assert not h.results
    h.sock.reply(b" 1.0\n")
    h.finished_cleanly()
    assert h.result["service"]["version"] == "1.0", "the whole buffer is matched on each datagram"


def test_icmp_unreachable_on_the_first_probe_means_closed(db_matcher: Matcher) -> None:
    h = Harness(db_matcher)
    h.sock.icmp()
    h.finished_cleanly()
    r = h.result
    assert (r["state"], r["reason"]) == ("closed", "port-unreach")
    assert (r["service"]["name"], r["service"]["method"], r["service"]["conf"]) == (
        "domain",
        "table",
        3,
    )
    assert "final_state" not in r


def test_icmp_on_the_check_socket_means_closed(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7201)
    h.check.icmp()
    h.finished_cleanly()
    assert (h.result["state"], h.result["reason"]) == ("closed", "port-unreach")


def test_icmp_after_data_moves_on_and_loses_the_buffer(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7200)
    h.sock.reply(b"junk one")
    h.sock.icmp()
    assert h.sock.sent == [b"FIRST", b"SECOND"], "ICMP ends the probe at once"
    h.clock.advance(5.0)
    h.finished_cleanly()
    r = h.result
    assert r["state"] == "open"
    assert r["service"]["fingerprint"] is None, "the refused probe's buffer is not fingerprinted"
    assert r["final_state"] == "nomatch"


def test_every_probe_refused_after_an_answer_to_the_check_is_tcpwrapped(
    db_matcher: Matcher,
) -> None:
    # the port answered the port scan (open) but every probe gets ICMP: nothing was
    # read and no read timed out, so the override of SPEC §2 applies
    h = Harness(db_matcher, port=7201)
    h.check.reply(b"hi")
    h.sock.icmp()
    h.sock.icmp()
    h.finished_cleanly()
    r = h.result
    assert (r["state"], r["service"]["name"], r["service"]["conf"]) == ("open", "tcpwrapped", 8)


def test_late_reply_is_attributed_to_the_current_probe(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7200)
    h.clock.advance(5.0)  # First times out silently
    assert h.sock.sent[-1] == b"SECOND"
    h.sock.reply(b"DNSOK 9.9\n")  # First's answer arrives late: Second's buffer, Second's lines
    h.clock.advance(5.0)
    h.finished_cleanly()
    r = h.result
    assert r["service"]["product"] is None, "First's match line is never tried on it"
    fp = r["service"]["fingerprint"].replace("\nSF:", "")
    assert '%r(Second,A,"DNSOK\\x209\\.9\\n")' in fp


def test_zero_length_datagram_is_eof_and_next_datagrams_carry_over(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7200, slow=True)
    h.sock.reply(b"hello")  # matching in flight: the next two wait, as in the kernel queue
    h.sock.reply(b"")
    h.sock.reply(b"SECONDOK")
    assert h.release() == b"hello"
    # the empty datagram ended First (EOF, buffer fingerprinted), Second started at once
    assert h.sock.sent == [b"FIRST", b"SECOND"]
    assert h.release() == b"SECONDOK", "the queued datagram is read by the next probe"
    h.finished_cleanly()
    r = h.result
    assert (r["service"]["name"], r["service"]["product"]) == ("second", "Second")


def test_only_empty_datagrams_is_tcpwrapped(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7200)
    h.sock.reply(b"")
    h.sock.reply(b"")
    h.finished_cleanly()
    r = h.result
    assert (r["service"]["name"], r["service"]["method"], r["service"]["conf"]) == (
        "tcpwrapped",
        "probed",
        8,
    )
    assert r["duration_ms"] == 0


def test_soft_match_keeps_probing_with_pruning(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7200)
    h.sock.reply(b"SOFT thing")
    h.clock.advance(5.0)
    assert h.sock.sent[-1] == b"SECOND", "Second has a 'soft' line: still sent"
    h.sock.reply(b"SOFTHARD")
    h.finished_cleanly()
    r = h.result
    assert (r["service"]["name"], r["service"]["product"]) == ("soft", "HardSoft")
    assert r["service"]["extrainfo"] == "soft info", "the soft match's fields are kept"


def test_intensity_0_without_listed_probe_is_tcpwrapped_after_the_check(
    db_matcher: Matcher,
) -> None:
    h = Harness(db_matcher, port=7201, intensity=0)
    assert len(h.opener.sockets) == 1, "no version probe at all: only the check socket"
    h.clock.advance(CHECK_WAIT)
    h.finished_cleanly()
    r = h.result
    assert (r["state"], r["service"]["name"], r["service"]["conf"]) == (
        "open|filtered",
        "tcpwrapped",
        8,
    )


def test_intensity_0_still_sends_port_listed_probes(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=53, intensity=0)
    assert h.sock.sent == [b"FIRST"]
    h.clock.advance(5.0)
    h.finished_cleanly()
    assert h.result["service"]["name"] == "domain"


def test_excluded_port_is_not_probed(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=9999)
    h.check.reply(b"x")
    assert len(h.opener.sockets) == 1
    h.clock.advance(CHECK_WAIT)
    h.finished_cleanly()
    r = h.result
    assert r["state"] == "open"
    assert (r["service"]["product"], r["service"]["method"], r["service"]["conf"]) == (
        "Excluded from version scan",
        "table",
        3,
    )


def test_excluded_closed_port_is_closed(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=9999)
    h.check.icmp()
    h.finished_cleanly()
    assert h.result["state"] == "closed"


def test_flood_is_bounded_and_ends_the_probes_early(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7200, slow=True)
    biggest = 0
    for _ in range(10_000):
        h.sock.reply(b"F" * 1000)
    assert h.scan.dropped == 10_000 - 1 - INBOX_CAP, "at most INBOX_CAP datagrams wait"
    while h.pending:
        biggest = max(biggest, len(h.release()))
        for _ in range(100):  # the flood goes on while matching
            if not h.results:
                h.sock.reply(b"F" * 1000)
    h.finished_cleanly()
    assert biggest < READ_CAP + 1000, "no read once the buffer holds READ_CAP bytes"
    r = h.result
    fp = r["service"]["fingerprint"].replace("\nSF:", "")
    assert "%r(First,1388," in fp and "%r(Second,1388," in fp  # 5 datagrams of 1000 each
    assert r["duration_ms"] == 0, "the cap ends each probe, not the deadline"


def test_flood_does_not_keep_the_port_past_its_deadlines(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7200, slow=True)
    h.sock.reply(b"x")
    h.clock.advance(5.0)  # First's deadline passes while its match is in flight
    h.sock.reply(b"y")
    h.release()  # → First is over; Second starts and reads the waiting "y"
    assert h.sock.sent == [b"FIRST", b"SECOND"]
    h.clock.advance(5.0)  # Second's deadline passes while "y" is being matched
    h.sock.reply(b"z")
    h.release()
    h.finished_cleanly()
    assert not h.pending, "no read after the deadline: 'z' is never matched"
    assert h.result["duration_ms"] == 10_000


def test_datagram_is_cut_to_nsock_buffer(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7200)
    h.sock.reply(b"A" * 10_000)
    h.clock.advance(5.0)
    h.finished_cleanly()
    fp = h.result["service"]["fingerprint"].replace("\nSF:", "")
    assert f"%r(First,{MAX_DATAGRAM:X}," in fp, "nmap fingerprints a 10,000-byte reply as 2000"
    assert "%r(Second" not in fp, "past 2200 characters no entry is added"


def test_cancel_stops_the_port_and_keeps_findings(db_matcher: Matcher) -> None:
    h = Harness(db_matcher, port=7200)
    h.sock.reply(b"SOFT x")
    h.deferred.cancel()
    h.finished_cleanly()
    r = h.result
    assert r["interrupted"] is True and r["final_state"] == "incomplete"
    assert r["service"]["name"] == "soft"
    h.sock.protocol.datagramReceived(b"late", SRC)  # DONE absorbs late events
    h.sock.protocol.connectionRefused()
    assert len(h.results) == 1


def test_open_failure_fails_the_port(db_matcher: Matcher) -> None:
    clock = Clock()

    def opener(task: PortTask, protocol: DatagramProtocol) -> defer.Deferred[DatagramSocket]:
        return defer.fail(OSError(24, "Too many open files"))

    scan = UDPPortScan(
        PortTask("127.0.0.1", 7200, "udp"),
        db=db_matcher.db,
        match=lambda p, b: defer.succeed(None),
        open_socket=opener,
        clock=clock,
        options=ScanOptions(),
        table_name=None,
    )
    failure = []
    scan.run().addErrback(failure.append)
    assert failure and isinstance(failure[0].value, OSError)
    assert not clock.getDelayedCalls()


# --- Nmap 7.94+: a socket per probe (service_scan.cc startNextProbe, 84e2e9be5) -----------


def test_794_every_probe_goes_out_on_a_socket_of_its_own(db794_matcher: Matcher) -> None:
    h = Harness(db794_matcher, port=7201)
    assert [s.sent for s in h.probe_sockets] == [[b"FIRST"]]
    h.clock.advance(5.0)
    first, second = h.probe_sockets
    assert (first.sent, second.sent) == ([b"FIRST"], [b"SECOND"])
    assert first.closed and not second.closed, "the timed-out probe's socket is closed"
    h.clock.advance(5.0)
    h.finished_cleanly()
    r = h.result
    assert (r["state"], r["service"]["name"], r["final_state"]) == (
        "open|filtered",
        None,
        "nomatch",
    )


def test_794_late_reply_to_an_earlier_probe_is_lost(db794_matcher: Matcher) -> None:
    # 7.93 gives it to the current probe (test_late_reply_is_attributed_to_the_current_probe)
    h = Harness(db794_matcher, port=7200)
    h.clock.advance(5.0)  # First times out silently; Second goes out on a new socket
    first, second = h.probe_sockets
    first.reply(b"DNSOK 9.9\n")  # nsock deleted that iod: nobody reads it
    assert not h.pending
    h.clock.advance(5.0)
    h.finished_cleanly()
    r = h.result
    assert (r["state"], r["reason"]) == ("open|filtered", "no-response"), "never read"
    assert (r["service"]["fingerprint"], r["final_state"]) == (None, "nomatch")
    assert second.sent == [b"SECOND"]


def test_794_datagrams_queued_behind_an_eof_go_with_its_socket(db794_matcher: Matcher) -> None:
    # 7.93 reads them in the next probe (test_zero_length_datagram_is_eof_and_next_...)
    h = Harness(db794_matcher, port=7200, slow=True)
    first = h.probe_sockets[0]
    first.reply(b"hello")  # matching in flight: the next two wait in the socket's queue
    first.reply(b"")
    first.reply(b"SECONDOK")
    assert h.release() == b"hello"
    assert first.closed, "the EOF ended First and closed its socket"
    assert not h.pending, "SECONDOK was queued on First's socket: dropped with it"
    second = h.probe_sockets[1]
    assert second.sent == [b"SECOND"]
    second.reply(b"SECONDOK")
    assert h.release() == b"SECONDOK"
    h.finished_cleanly()
    r = h.result
    assert (r["service"]["name"], r["service"]["product"]) == ("second", "Second")


def test_794_icmp_on_the_first_probe_still_means_closed(db794_matcher: Matcher) -> None:
    h = Harness(db794_matcher)
    h.probe_sockets[0].icmp()
    h.finished_cleanly()
    assert (h.result["state"], h.result["reason"]) == ("closed", "port-unreach")
    assert len(h.probe_sockets) == 1


@pytest.mark.parametrize(
    ("release", "name", "method", "conf", "fingerprint"),
    [
        # one socket: each probe's EOF is followed by the previous probe's "hello zz"
        ("7.93", None, "table", 3, '%r(Second,8,"hello\\x20zz");'),
        # a socket per probe: every probe ends on its EOF, nothing is ever read
        ("7.95", "tcpwrapped", "probed", 8, None),
    ],
)
def test_empty_then_hello_per_release(
    release: str, name: str | None, method: str, conf: int, fingerprint: str | None
) -> None:
    """The e2e case ``empty-then-hello``: every probe is answered by an empty datagram,
    then ``hello zz``, both at once (tests/e2e/udp_targets.py)."""
    h = Harness(Matcher(db=parse_probe_text(PROBES, "test.probes", release=release)), port=7200)
    answered: dict[int, int] = {}
    while not h.results:
        fresh = [
            (n, sock)
            for n, sock in enumerate(h.probe_sockets)
            if answered.get(n, 0) < len(sock.sent)
        ]
        if not fresh:
            h.clock.advance(5.0)  # nothing left to answer: the probe waits out its time
            continue
        n, sock = fresh[0]
        answered[n] = answered.get(n, 0) + 1
        sock.reply(b"")  # the EOF ends the probe (7.94+: and closes its socket) ...
        sock.reply(b"hello zz")  # ... so this is read by the next probe, or by nobody
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["name"], svc["method"], svc["conf"]) == (name, method, conf)
    if fingerprint is None:
        assert svc["fingerprint"] is None
    else:
        assert svc["fingerprint"].replace("\nSF:", "").endswith(fingerprint)
