"""The TLS client of the SSL restart (SPEC §5.2): connect, handshake, hand over.

After a hard match named ``ssl`` the port machine reconnects "with TLS"; for it a
TLS connection is *connected* only once its handshake has completed, and a
handshake that fails or does not finish in time is a failed connect (SPEC §5.3:
the port ends INCOMPLETE).  ``HandshakeGate`` does that: it sits between
Twisted's ``TLSMemoryBIOProtocol`` and the machine's probe protocol and hides the
connection from it until ``handshakeCompleted``.

The client is deliberately permissive, as Nmap's is: no certificate verification
(a scanner records what it is shown), ``OP_ALL`` bug workarounds, every cipher
OpenSSL still has (``ALL:@SECLEVEL=0``), protocol versions from TLS 1.0 up (SSLv3
is gone from the OpenSSL that pyOpenSSL's ``cryptography`` wheel bundles), SNI
only when the target was given by name, sessions kept per (address, port) and
offered again on that port's next connection.

``TLSClient.connect`` takes any "connect this factory" function (a TCP
endpoint's ``connect`` in production, an in-memory pump in tests), so the very
same code runs on sockets and in ``twisted.test.iosim``.
"""

from __future__ import annotations

import collections
import ipaddress
from collections.abc import Callable
from typing import Any

from OpenSSL import SSL, crypto
from twisted.internet import defer
from twisted.internet.interfaces import (
    IAddress,
    IHandshakeListener,
    IOpenSSLClientConnectionCreator,
    IProtocolFactory,
    IReactorTime,
)
from twisted.internet.protocol import Factory, Protocol, connectionDone
from twisted.protocols.tls import TLSMemoryBIOFactory, TLSMemoryBIOProtocol
from twisted.python.failure import Failure
from zope.interface import implementer

from vscand.scan.certinfo import tls_object

#: Nmap's client is "fast", not strict: every cipher, any key size
CIPHERS = b"ALL:@SECLEVEL=0"
#: sessions remembered for resumption (least recently used dropped first)
SESSION_CACHE_SIZE = 4096

Connect = Callable[[IProtocolFactory], "defer.Deferred[Any]"]


class TLSHandshakeFailed(Exception):
    """The peer closed or broke the connection before the TLS handshake completed."""

    def __init__(self, reason: Failure) -> None:
        super().__init__(reason.getErrorMessage())
        self.reason = reason


def scanner_context() -> SSL.Context:
    """The OpenSSL client context: permissive, never verifying (SPEC §5.2)."""
    context = SSL.Context(SSL.TLS_CLIENT_METHOD)
    context.set_options(SSL.OP_ALL)
    context.set_verify(SSL.VERIFY_NONE)
    context.set_cipher_list(CIPHERS)
    context.set_min_proto_version(SSL.TLS1_VERSION)
    # the client keeps its own per-port sessions (TLSClient), not OpenSSL's internal cache
    context.set_session_cache_mode(SSL.SESS_CACHE_CLIENT | SSL.SESS_CACHE_NO_INTERNAL_STORE)
    return context


def server_name(hostname: str | None) -> bytes | None:
    """The SNI value: the name the target was given by, never an address literal."""
    if not hostname:
        return None
    try:
        ipaddress.ip_address(hostname.split("%", 1)[0])
    except ValueError:
        pass
    else:
        return None
    try:
        return hostname.rstrip(".").encode("idna")
    except UnicodeError:
        return None


@implementer(IOpenSSLClientConnectionCreator)
class _ConnectionCreator:
    """Makes each TLS connection's ``SSL.Connection`` (SNI, offered session)."""

    def __init__(
        self,
        context: SSL.Context,
        sni: bytes | None,
        session: Callable[[], SSL.Session | None],
    ) -> None:
        self._context = context
        self._sni = sni
        self._session = session

    def clientConnectionForTLS(self, tlsProtocol: TLSMemoryBIOProtocol) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_connect_state()
        if self._sni is not None:
            connection.set_tlsext_host_name(self._sni)
        session = self._session()  # asked now, when TCP is up: the freshest one
        if session is not None:
            connection.set_session(session)
        return connection


@implementer(IHandshakeListener)
class HandshakeGate(Protocol):
    """Connects ``inner`` to the TLS connection only once the handshake has completed.

    ``handshake`` fires with ``inner`` then, or fails with ``TLSHandshakeFailed``
    when the connection ends first; cancelling it aborts the connection.
    """

    def __init__(self, inner: Protocol) -> None:
        self.inner = inner
        self.handshake: defer.Deferred[Protocol] = defer.Deferred(self._cancel)
        self.open = False
        #: called with the SSL connection when the handshake completed / when it ends
        self.on_open: Callable[[SSL.Connection], None] | None = None
        self.on_close: Callable[[SSL.Connection], None] | None = None
        #: the application data of the underlying read under way (``hold``/``release``)
        self._held: list[bytes] | None = None

    def connectionMade(self) -> None:
        """TCP is up and the ClientHello is on its way; the inner protocol waits."""

    def handshakeCompleted(self) -> None:
        if self.handshake.called:
            return  # cancelled (timed out) meanwhile: the abort is under way
        self.open = True
        handle = _ssl_connection(self.transport)
        if self.on_open is not None and handle is not None:
            self.on_open(handle)
        assert self.transport is not None
        self.inner.makeConnection(self.transport)  # type: ignore[no-untyped-call]
        self.handshake.callback(self.inner)

    def hold(self) -> None:
        """Collect the application data of one underlying read (see :class:`_NsockReads`)."""
        self._held = []

    def release(self) -> None:
        """Hand what one underlying read decrypted to ``inner`` as one read."""
        held, self._held = self._held, None
        if held and self.open:
            self.inner.dataReceived(b"".join(held))

    def dataReceived(self, data: bytes) -> None:
        if not self.open:
            return
        if self._held is not None:
            self._held.append(data)
        else:
            self.inner.dataReceived(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.release()  # data decrypted before the end comes first
        if self.open:
            self.open = False
            handle = _ssl_connection(self.transport)
            if self.on_close is not None and handle is not None:
                self.on_close(handle)
            self.inner.connectionLost(reason)
        elif not self.handshake.called:
            self.handshake.errback(TLSHandshakeFailed(reason))

    def _cancel(self, _: defer.Deferred[Protocol]) -> None:
        transport = self.transport
        if transport is not None:
            abort = getattr(transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                transport.loseConnection()


class _NsockReads(TLSMemoryBIOProtocol):
    """TLS whose application sees one read per read of the socket, as Nmap's nsock does.

    nsock's SSL read (``nsock_core.c: do_actual_read()``, Nmap 7.93 and 7.95 alike) calls
    ``SSL_read()`` until it would block and hands the service scan everything it got as one
    read; the scan then reads again only while the probe's buffer holds less than 4,096 bytes
    (``service_scan.cc``, ``readstrlen < 4096``). Twisted hands over each TLS record as it is
    decrypted: a response of several records that arrive together (``openssl s_server -www``
    under OpenSSL 3.5: 5 KiB) would be cut after the record that crossed 4,096 bytes. Here the
    records one socket read brings are joined (``HandshakeGate.hold``/``release``).
    """

    def dataReceived(self, data: bytes) -> None:
        gate = self.wrappedProtocol
        if not isinstance(gate, HandshakeGate):
            super().dataReceived(data)  # type: ignore[no-untyped-call]
            return
        gate.hold()
        try:
            super().dataReceived(data)  # type: ignore[no-untyped-call]
        finally:
            gate.release()


class _NsockReadsFactory(TLSMemoryBIOFactory):
    protocol = _NsockReads


class _GateFactory(Factory):
    noisy = False

    def __init__(self, gate: HandshakeGate) -> None:
        self._gate = gate

    def buildProtocol(self, addr: IAddress | None) -> Protocol:
        return self._gate


class SessionCache:
    """The TLS session of each (address, port), bounded, least recently used dropped first.

    While a port's connection is open its live ``SSL.Connection`` is kept and asked for
    its session when the next connection starts: TLS 1.3 session tickets arrive after
    the handshake, so the session is taken as late as possible. When the connection
    ends only its session stays.
    """

    def __init__(self, size: int = SESSION_CACHE_SIZE) -> None:
        self._size = size
        self._entries: collections.OrderedDict[tuple[str, int], SSL.Session | SSL.Connection] = (
            collections.OrderedDict()
        )

    def session(self, key: tuple[str, int]) -> SSL.Session | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        self._entries.move_to_end(key)
        return entry.get_session() if isinstance(entry, SSL.Connection) else entry

    def opened(self, key: tuple[str, int], connection: SSL.Connection) -> None:
        self._entries[key] = connection
        self._entries.move_to_end(key)
        while len(self._entries) > self._size:
            self._entries.popitem(last=False)

    def closed(self, key: tuple[str, int], connection: SSL.Connection) -> None:
        if self._entries.get(key) is not connection:
            return  # a later connection of the port is the one to remember
        session = connection.get_session()
        if session is None:
            del self._entries[key]
        else:
            self._entries[key] = session

    def __len__(self) -> int:
        return len(self._entries)


class TLSClient:
    """Opens TLS connections for the port machines (one per scanner, shared)."""

    def __init__(
        self,
        clock: IReactorTime,
        context: SSL.Context | None = None,
        sessions: SessionCache | None = None,
    ) -> None:
        self._clock = clock
        self._context = context if context is not None else scanner_context()
        self.sessions = sessions if sessions is not None else SessionCache()

    def connect(
        self,
        connect: Connect,
        protocol: Protocol,
        *,
        address: str,
        port: int,
        hostname: str | None,
        timeout: float,
    ) -> defer.Deferred[Protocol]:
        """Connect ``protocol`` over TLS; fires once the handshake has completed.

        ``timeout`` bounds connect and handshake together (Nmap: 8 s).
        """
        key = (address, port)
        gate = HandshakeGate(protocol)
        gate.on_open = lambda handle: self.sessions.opened(key, handle)
        gate.on_close = lambda handle: self.sessions.closed(key, handle)
        creator = _ConnectionCreator(
            self._context, server_name(hostname), lambda: self.sessions.session(key)
        )
        clock = self._clock
        # small writes are coalesced on this clock (the injected one, not the global reactor)
        factory = _NsockReadsFactory(creator, True, _GateFactory(gate), clock=clock)

        async def run() -> Protocol:
            started = clock.seconds()
            await connect(factory)
            remaining = max(0.0, timeout - (clock.seconds() - started))
            gate.handshake.addTimeout(remaining, clock)
            return await gate.handshake

        return defer.Deferred.fromCoroutine(run())


def _ssl_connection(transport: object) -> SSL.Connection | None:
    get_handle = getattr(transport, "getHandle", None)
    if get_handle is None:
        return None
    handle = get_handle()
    return handle if isinstance(handle, SSL.Connection) else None


def session_facts(transport: object) -> dict[str, Any] | None:
    """The ``tls`` object of a connection whose handshake completed (None: not TLS)."""
    connection = _ssl_connection(transport)
    if connection is None:
        return None
    certificate = connection.get_peer_certificate()
    # DER straight from OpenSSL: a certificate cryptography cannot parse still has a hash
    der = crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate) if certificate else None
    version = connection.get_protocol_version_name()
    cipher = connection.get_cipher_name()
    return tls_object(version, cipher, der)
