"""The DTLS restart of the UDP machine (Nmap 7.94+), deterministic: Clock, fake sockets,
and a pyOpenSSL DTLS server on memory BIOs as the peer."""

from __future__ import annotations

import struct
from pathlib import Path
from typing import Any

import pytest
from OpenSSL import SSL
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock

from tests.e2e.tls_servers import make_certificate
from tests.matching import MatchGate
from vscand.probes.matcher import Matcher
from vscand.probes.parser import parse_probe_text
from vscand.scan.datagram import DatagramSocket
from vscand.scan.dtls import (
    MAX_HANDSHAKE_BYTES,
    MAX_RETRANSMITS,
    DTLSClient,
    dtls_context,
    split_records,
)
from vscand.scan.model import PortTask, ScanOptions
from vscand.scan.udp import UDPPortScan

PORT = 4433
PROBES = rb"""Probe UDP Hello q|HELLO|
rarity 1
ports 4433
match dtls m|^\x15\xfe[\xfd\xff]|

Probe UDP Inner q|INNER|
rarity 2
sslports 4433
match inner m|^INNEROK (\S+)| p/Inner/ v/$1/

Probe UDP Other q|OTHER|
rarity 3
match other m|^OTHEROK|
"""
#: a DTLS alert record (what a DTLS server answers to plain text)
ALERT = b"\x15\xfe\xfd" + b"\0" * 8 + b"\x00\x02\x02\x28"
WALL = 1_700_000_000.0


@pytest.fixture(scope="module")
def server_context(tmp_path_factory: pytest.TempPathFactory) -> SSL.Context:
    cert = make_certificate(Path(tmp_path_factory.mktemp("dtls-cert")))
    context = SSL.Context(SSL.DTLS_SERVER_METHOD)
    context.use_certificate_file(str(cert.cert))
    context.use_privatekey_file(str(cert.key))
    return context


class Peer:
    """A DTLS server association on memory BIOs; answers ``reply_to`` plaintext."""

    def __init__(self, context: SSL.Context, answers: dict[bytes, bytes]) -> None:
        self.conn = SSL.Connection(context, None)
        self.conn.set_accept_state()
        self.answers = answers
        self.plaintext: list[bytes] = []

    def feed(self, datagrams: list[bytes]) -> list[bytes]:
        for datagram in datagrams:
            self.conn.bio_write(datagram)
        try:
            self.conn.do_handshake()
        except SSL.WantReadError:
            pass
        else:
            while True:
                try:
                    data = self.conn.recv(65536)
                except (SSL.WantReadError, SSL.ZeroReturnError):
                    break
                self.plaintext.append(data)
                if data in self.answers:
                    self.conn.send(self.answers[data])
        out = bytearray()
        while True:
            try:
                out += self.conn.bio_read(65536)
            except SSL.WantReadError:
                break
        return split_records(bytes(out), 1400)


class FakeSocket:
    def __init__(self, protocol: DatagramProtocol) -> None:
        self.protocol = protocol
        self.sent: list[bytes] = []
        self.taken = 0
        self.closed = False

    def write(self, datagram: bytes) -> int:
        assert not self.closed, "write on a closed socket"
        self.sent.append(datagram)
        return len(datagram)

    def stopListening(self) -> None:
        self.closed = True

    def take(self) -> list[bytes]:
        new = self.sent[self.taken :]
        self.taken = len(self.sent)
        return new

    def reply(self, datagram: bytes) -> None:
        self.protocol.datagramReceived(datagram, ("127.0.0.1", PORT))


class Harness(MatchGate):
    def __init__(self, release: str) -> None:
        matcher = Matcher(db=parse_probe_text(PROBES, "dtls.probes", release=release))
        super().__init__(matcher)
        self.clock = Clock()
        self.sockets: list[FakeSocket] = []
        self.results: list[dict[str, Any]] = []
        self.scan = UDPPortScan(
            PortTask("127.0.0.1", PORT, "udp"),
            db=matcher.db,
            match=self.match,
            open_socket=self.open,
            clock=self.clock,
            options=ScanOptions(intensity=7, scanned_protocols=("udp",)),
            table_name="pharos",
            wallclock=lambda: WALL,
        )
        self.scan.run().addCallback(self.results.append)

    def open(self, task: PortTask, protocol: DatagramProtocol) -> defer.Deferred[DatagramSocket]:
        sock = FakeSocket(protocol)
        self.sockets.append(sock)
        return defer.succeed(sock)

    @property
    def result(self) -> dict[str, Any]:
        assert len(self.results) == 1, "the port has not finished"
        return self.results[0]

    def restart(self) -> FakeSocket:
        """The plain probe is answered with a DTLS alert: hard ``dtls``, restart."""
        plain = self.sockets[1]
        assert plain.sent == [b"HELLO"]
        plain.reply(ALERT)
        return self.sockets[-1]

    def pump(self, sock: FakeSocket, peer: Peer, rounds: int = 10) -> None:
        for _ in range(rounds):
            out = peer.feed(sock.take())
            if not out:
                return
            for datagram in out:
                sock.reply(datagram)

    def finished_cleanly(self) -> None:
        assert self.results, "the port has not finished"
        assert not self.clock.getDelayedCalls(), "a timer is still pending"
        assert all(s.closed for s in self.sockets), "a socket was left open"


def test_793_reports_dtls_and_never_restarts() -> None:
    h = Harness("7.93")
    h.restart()
    h.finished_cleanly()
    assert len(h.sockets) == 2, "no DTLS socket"
    svc = h.result["service"]
    assert (svc["name"], svc["method"], svc["tunnel"]) == ("dtls", "probed", None)


def test_handshake_then_the_sslports_probe_through_dtls(server_context: SSL.Context) -> None:
    h = Harness("7.95")
    sock = h.restart()
    assert len(h.sockets) == 3 and h.sockets[1].closed, "a new socket for the DTLS association"
    assert sock.sent and sock.sent[0][0] == 0x16, "a DTLS handshake record (ClientHello)"
    peer = Peer(server_context, {b"INNER": b"INNEROK 1.2"})
    h.pump(sock, peer)
    assert peer.plaintext == [b"INNER"], "the sslports-listed probe first, encrypted"
    h.finished_cleanly()
    assert sock.sent[-1][0] == 0x15, "a close_notify alert at the end, as nsock's SSL_shutdown"
    svc = h.result["service"]
    assert (svc["name"], svc["product"], svc["version"]) == ("inner", "Inner", "1.2")
    assert (svc["method"], svc["conf"], svc["tunnel"]) == ("probed", 10, "ssl")
    assert svc["tls"]["version"] == "DTLSv1.2"
    assert svc["tls"]["subject"] == "CN=vscand-test.local"


def test_nothing_answered_inside_a_handshake_per_probe(server_context: SSL.Context) -> None:
    h = Harness("7.95")
    sock = h.restart()
    peers = []
    for _ in range(3):  # Inner, Hello, Other
        peer = Peer(server_context, {})
        peers.append(peer)
        h.pump(sock, peer)
        h.clock.advance(5.0)  # totalwaitms default for the probe
        if h.results:
            break
        assert h.sockets[-1] is not sock, "every probe has its own association"
        sock = h.sockets[-1]
    h.finished_cleanly()
    assert [p.plaintext for p in peers] == [[b"INNER"], [b"HELLO"], [b"OTHER"]]
    svc = h.result["service"]
    assert (svc["name"], svc["method"], svc["conf"], svc["tunnel"]) == (
        "pharos",
        "table",
        3,
        "ssl",
    )
    assert svc["fingerprint"] is None
    assert svc["tls"]["version"] == "DTLSv1.2"


def test_handshake_timeout_is_incomplete_with_bounded_retransmits() -> None:
    h = Harness("7.95")
    sock = h.restart()
    h.clock.pump([0.5] * 15)
    assert not h.results, "still inside the 8 s of DEFAULT_CONNECT_SSL_TIMEOUT"
    h.clock.pump([0.5] * 2)
    h.finished_cleanly()
    assert 2 <= len(sock.sent) <= 1 + MAX_RETRANSMITS, "the ClientHello sent again, bounded"
    assert h.result["state"] == "open"
    svc = h.result["service"]
    assert (svc["name"], svc["method"], svc["conf"], svc["tunnel"]) == (
        "pharos",
        "table",
        3,
        "ssl",
    )
    assert "tls" not in svc or svc["tls"] is None


@pytest.mark.parametrize(
    "garbage",
    [
        b"",
        b"plain text, not DTLS",
        b"\x16\xfe\xfd" + b"\0" * 8 + b"\xff\xff",  # header claims 65535 bytes, body absent
        b"\x16\xfe\xfd" + b"\0" * 8 + b"\xff\xff" + b"A" * 70000,  # oversized datagram
        b"\x16\xfe\xfd" + b"\0" * 8 + b"\x00\x0c" + b"\x02\xff\xff\xff" + b"\0" * 8,
    ],
    ids=["empty", "text", "short-record", "huge-record", "hostile-handshake-length"],
)
def test_garbage_during_the_handshake_ends_incomplete(garbage: bytes) -> None:
    h = Harness("7.95")
    sock = h.restart()
    for _ in range(3):
        sock.reply(garbage)
    h.clock.advance(8.0)
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["name"], svc["method"], svc["tunnel"]) == ("pharos", "table", "ssl")


def test_a_flood_before_the_handshake_is_cut_off() -> None:
    h = Harness("7.95")
    sock = h.restart()
    record = b"\x16\xfe\xfd" + b"\0" * 8 + struct.pack("!H", 8000) + b"\0" * 8000
    for _ in range(MAX_HANDSHAKE_BYTES // len(record) + 2):
        if h.results:
            break
        sock.reply(record)
    assert h.results, "the handshake failed before its deadline"
    h.finished_cleanly()
    assert h.result["service"]["tunnel"] == "ssl"


def test_client_bounds_on_its_own() -> None:
    client = DTLSClient(dtls_context())
    assert client.start(), "a ClientHello"
    sent = 0
    while client.next_retransmit() is not None:
        sent += len(client.retransmit())
    assert sent == MAX_RETRANSMITS
    assert client.retransmit() == []


def test_split_records_keeps_records_whole() -> None:
    record = b"\x16\xfe\xfd" + b"\0" * 8 + struct.pack("!H", 600) + b"x" * 600
    assert split_records(record * 3, 1400) == [record * 2, record]
    assert split_records(b"\x16\xfe", 1400) == [b"\x16\xfe"]


def test_icmp_during_the_handshake_ends_incomplete() -> None:
    h = Harness("7.94")
    sock = h.restart()
    sock.protocol.connectionRefused()
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["name"], svc["method"], svc["conf"], svc["tunnel"]) == (
        "pharos",
        "table",
        3,
        "ssl",
    )


def test_a_response_inside_the_tunnel_is_fingerprinted_with_t_ssl(
    server_context: SSL.Context,
) -> None:
    h = Harness("7.95")
    sock = h.restart()
    peer = Peer(server_context, {b"INNER": b"unknown answer"})
    h.pump(sock, peer)
    h.clock.advance(5.0)
    for _ in range(2):  # Hello, Other: new associations, nothing answered
        sock = h.sockets[-1]
        h.pump(sock, Peer(server_context, {}))
        h.clock.advance(5.0)
    h.finished_cleanly()
    svc = h.result["service"]
    assert (svc["name"], svc["tunnel"]) == ("pharos", "ssl")
    fp = svc["fingerprint"]
    assert "SF-Port4433-UDP:V=" in fp and "%T=SSL" in fp, fp
    assert 'r(Inner,E,"unknown\\x20answer")' in fp, fp
