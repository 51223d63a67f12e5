"""In-memory TLS for the deterministic tests: certificates made now, iosim pumps.

``MemoryTLSDialer`` is a port machine's dialer: plain connections get a
``StringTransport`` the test drives by hand (as in tests/test_tcp_machine.py);
TLS connections go through the production ``TLSClient`` over ``twisted.test.iosim``
to a real TLS server (Twisted's ``TLSMemoryBIOFactory`` with a certificate made
by ``make_identity``), whose application protocol the test chooses.
"""

from __future__ import annotations

import datetime
import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID
from OpenSSL import crypto
from twisted.internet import defer
from twisted.internet.interfaces import IProtocolFactory
from twisted.internet.protocol import Factory, Protocol
from twisted.internet.ssl import CertificateOptions
from twisted.internet.task import Clock
from twisted.internet.testing import StringTransport
from twisted.protocols.tls import TLSMemoryBIOFactory
from twisted.test import iosim

from vscand.scan.model import PortTask
from vscand.scan.tls import TLSClient


@dataclass(frozen=True)
class Identity:
    """A self-signed certificate and its key, as the server's TLS options."""

    options: CertificateOptions
    der: bytes
    subject: str

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.der).hexdigest()


def make_identity(
    common_name: str = "memory.test", sans: tuple[str, ...] = ("memory.test",)
) -> Identity:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(0x1234ABCD)
        .not_valid_before(datetime.datetime(2026, 1, 1, tzinfo=datetime.UTC))
        .not_valid_after(datetime.datetime(2036, 1, 1, tzinfo=datetime.UTC))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(s) for s in sans]), critical=False)
        .sign(key, hashes.SHA256())
    )
    options = CertificateOptions(
        privateKey=crypto.PKey.from_cryptography_key(key),
        certificate=crypto.X509.from_cryptography(cert),
        enableSessionTickets=True,  # so that a client can resume (TLS 1.2 and 1.3 tickets)
    )
    return Identity(options, cert.public_bytes(serialization.Encoding.DER), name.rfc4514_string())


class ServerFactory(Factory):
    noisy = False

    def __init__(self, make: Callable[[], Protocol]) -> None:
        self._make = make

    def buildProtocol(self, addr: Any) -> Protocol:
        return self._make()


@dataclass
class TLSAttempt:
    """One TLS connection the machine asked for."""

    timeout: float
    hostname: str | None
    deferred: defer.Deferred[Protocol] | None = None
    pump: iosim.IOPump | None = None
    server: Protocol | None = None


@dataclass
class MemoryTLSDialer:
    """Plain dials wait for the test (``accept``); TLS dials connect in memory at once.

    ``server`` builds the TLS server's application protocol for each connection;
    ``raw_server``, when set, replaces the whole TLS server by a plain protocol
    (a peer that does not speak TLS at all).
    """

    clock: Clock
    identity: Identity
    server: Callable[[], Protocol]
    raw_server: Callable[[], Protocol] | None = None
    client: TLSClient | None = None
    plain: list[tuple[Protocol, defer.Deferred[Protocol]]] = field(default_factory=list)
    transports: list[StringTransport] = field(default_factory=list)
    tls: list[TLSAttempt] = field(default_factory=list)

    def __post_init__(self) -> None:
        if self.client is None:
            self.client = TLSClient(self.clock)

    def __call__(
        self, task: PortTask, protocol: Protocol, timeout: float, tls: bool
    ) -> defer.Deferred[Protocol]:
        if not tls:
            d: defer.Deferred[Protocol] = defer.Deferred()
            self.plain.append((protocol, d))
            return d
        assert self.client is not None
        attempt = TLSAttempt(timeout, task.hostname)
        self.tls.append(attempt)

        def connect(factory: IProtocolFactory) -> defer.Deferred[Any]:
            client = factory.buildProtocol(None)
            assert client is not None
            if self.raw_server is not None:
                server: Protocol = self.raw_server()
            else:
                wrapper = TLSMemoryBIOFactory(
                    self.identity.options, False, ServerFactory(self.server), clock=self.clock
                )
                built = wrapper.buildProtocol(None)
                assert built is not None
                server = built
            attempt.server = server
            attempt.pump = iosim.connect(
                server,
                iosim.makeFakeServer(server),
                client,
                iosim.makeFakeClient(client),
                greet=False,
                clock=self.clock,
            )
            return defer.succeed(client)

        d = self.client.connect(
            connect,
            protocol,
            address=task.address,
            port=task.port,
            hostname=task.hostname,
            timeout=timeout,
        )
        attempt.deferred = d
        return d

    def accept(self) -> tuple[Protocol, StringTransport]:
        protocol, d = self.plain[-1]
        transport = StringTransport()
        protocol.makeConnection(transport)
        self.transports.append(transport)
        d.callback(protocol)
        return protocol, transport

    def flush(self) -> None:
        """Deliver every byte in flight on every TLS connection, both ways."""
        for attempt in self.tls:
            if attempt.pump is not None:
                attempt.pump.flush()


class RecordingServer(Protocol):
    """A TLS-side application: records what it got; ``reply(data)`` says what to answer."""

    def __init__(
        self,
        log: list[bytes],
        reply: Callable[[bytes], bytes | None],
        banner: bytes = b"",
        close_after_reply: bool = False,
    ) -> None:
        self.log = log
        self.reply = reply
        self.banner = banner
        self.close_after_reply = close_after_reply

    def connectionMade(self) -> None:
        if self.banner:
            assert self.transport is not None
            self.transport.write(self.banner)

    def dataReceived(self, data: bytes) -> None:
        self.log.append(data)
        answer = self.reply(data)
        if answer is not None:
            assert self.transport is not None
            self.transport.write(answer)
            if self.close_after_reply:
                self.transport.loseConnection()
