"""What one read is over TLS: everything one socket read decrypts, as Nmap's nsock has it.

nsock (``nsock_core.c: do_actual_read()``) calls ``SSL_read()`` until it would block and gives
the service scan all of it as one read; the scan reads again only below 4,096 bytes. Twisted
decrypts record by record; ``vscand.scan.tls`` joins the records one socket read brings
(DESIGN.md, SSL/TLS restart).
"""

from __future__ import annotations

from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Protocol
from twisted.internet.task import Clock
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.python.failure import Failure
from twisted.test import iosim

from tests.tls_memory import ServerFactory, make_identity
from vscand.scan.tls import TLSClient


class Reads(Protocol):
    def __init__(self) -> None:
        self.reads: list[bytes] = []
        self.lost: Failure | None = None

    def dataReceived(self, data: bytes) -> None:
        self.reads.append(data)

    def connectionLost(self, reason: Failure | None = None) -> None:
        self.lost = reason


class Writes(Protocol):
    """Writes ``payload`` (more than a TLS record holds: several records) when it is spoken to,
    then, with ``close``, closes."""

    def __init__(self, payload: bytes, close: bool) -> None:
        self.payload = payload
        self.close = close

    def dataReceived(self, data: bytes) -> None:
        assert self.transport is not None
        self.transport.write(self.payload)
        if self.close:
            self.transport.loseConnection()


def connect(payload: bytes, close: bool = False) -> tuple[Reads, iosim.IOPump, Clock]:
    clock = Clock()
    identity = make_identity()
    reads = Reads()
    pumps: list[iosim.IOPump] = []

    def dial(factory: IProtocolFactory) -> defer.Deferred[Any]:
        client = factory.buildProtocol(None)
        server_factory = TLSMemoryBIOFactory(
            identity.options, False, ServerFactory(lambda: Writes(payload, close)), clock=clock
        )
        server = server_factory.buildProtocol(None)
        assert client is not None and server is not None
        pumps.append(
            iosim.connect(
                server,
                iosim.makeFakeServer(server),
                client,
                iosim.makeFakeClient(client),
                greet=False,
                clock=clock,
            )
        )
        return defer.succeed(client)

    done = TLSClient(clock).connect(
        dial, reads, address="127.0.0.1", port=443, hostname=None, timeout=8.0
    )
    [pump] = pumps
    pump.flush()
    assert done.called, "handshake"
    return reads, pump, clock


def test_records_arriving_together_are_one_read() -> None:
    payload = bytes(range(256)) * 160  # 40,960 bytes: three TLS records (16 KiB at most each)
    reads, pump, clock = connect(payload)
    reads.transport.write(b"GET / HTTP/1.0\r\n\r\n")  # type: ignore[union-attr]
    clock.advance(0)  # the client's small write goes out
    pump.flush()
    clock.advance(0)
    pump.flush()
    assert [len(r) for r in reads.reads] == [len(payload)]
    assert reads.reads[0] == payload


def test_records_then_close_notify_are_one_read_then_the_end() -> None:
    payload = b"x" * 20_000
    reads, pump, clock = connect(payload, close=True)
    reads.transport.write(b"GET / HTTP/1.0\r\n\r\n")  # type: ignore[union-attr]
    for _ in range(3):
        clock.advance(0)
        pump.flush()
    assert [len(r) for r in reads.reads] == [len(payload)]
    assert reads.lost is not None


def test_records_arriving_apart_are_separate_reads() -> None:
    """Each socket read is one read: what arrives later is a read of its own."""
    reads, pump, clock = connect(b"y" * 5_000)
    for n in (1, 2):
        reads.transport.write(b"again\r\n")  # type: ignore[union-attr]
        clock.advance(0)
        pump.flush()
        clock.advance(0)
        pump.flush()
        assert [len(r) for r in reads.reads] == [5_000] * n
