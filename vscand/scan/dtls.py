"""The DTLS client of the UDP tunnel restart (Nmap 7.94+): a pure memory-BIO adapter.

No sockets and no timers here: ``DTLSClient`` turns datagrams received into
datagrams to send and plaintext, and the UDP port machine (``vscand.scan.udp``)
owns the socket, the clock and the handshake deadline.  OpenSSL's own DTLS
timer (``DTLSv1_get_timeout``/``DTLSv1_handle_timeout``) decides when a flight
is not used (it reads the wall clock, not the machine's): we send our last flight
again after 1, 2, 4... seconds (OpenSSL's default doubling schedule), at most
``MAX_RETRANSMITS`` times; the machine asks ``next_retransmit()`` and calls
``retransmit()``.

What Nmap does (facts from its source; the machine's docstring and DESIGN.md
"DTLS restart (Nmap 7.94+)" have the whole list):

* nsock connects a UDP iod "with SSL" through a DTLS ``SSL_CTX`` of its own
  (``nsock_pool_dtls_init``, service_scan.cc:2818@95b974b10; separate SSL vs DTLS
  contexts since ``d43df98ab``), at ``NSOCK_SSL_MAX_SPEED``: no certificate
  verification, every cipher;
* the handshake and the UDP "connect" share ``DEFAULT_CONNECT_SSL_TIMEOUT``,
  8000 ms (service_scan.h:83@95b974b10); a handshake that fails or times out is
  a failed connect and the port ends INCOMPLETE (service_scan.cc:2366-2377@95b974b10).

Bounds of ours: at most ``MAX_RETRANSMITS`` resent flights, at most
``MAX_HANDSHAKE_BYTES`` taken in before the handshake completes, at most
``MAX_RECORD_DATAGRAM`` bytes of a datagram handed to OpenSSL; OpenSSL itself
rejects records longer than the protocol allows.
"""

from __future__ import annotations

from typing import Any

from OpenSSL import SSL, crypto

from vscand.scan.certinfo import tls_object
from vscand.scan.tls import CIPHERS

__all__ = [
    "MAX_HANDSHAKE_BYTES",
    "MAX_RECORD_DATAGRAM",
    "MAX_RETRANSMITS",
    "MTU",
    "DTLSClient",
    "DTLSFailed",
    "dtls_context",
    "split_records",
]

#: flights sent again (after 1 s, then doubling, as OpenSSL's timer) before we stop resending
MAX_RETRANSMITS = 6
#: bytes received before the handshake completes; more is a failed handshake
MAX_HANDSHAKE_BYTES = 256 * 1024
#: bytes of one received datagram given to OpenSSL (nsock reads into 8192 bytes;
#: a DTLS record is at most 2^14 + 2048 + 13 bytes)
MAX_RECORD_DATAGRAM = 8192
#: the path MTU we tell OpenSSL (a memory BIO has none to query)
MTU = 1400
#: a DTLS record header: type, version, epoch, sequence number, length
_HEADER = 13
#: bytes read from the memory BIOs per call
_CHUNK = 65536


class DTLSFailed(Exception):
    """The DTLS handshake failed (alert, garbage, closed, too much data)."""


def dtls_context() -> SSL.Context:
    """The DTLS client context: as permissive as the TLS one, never verifying."""
    context = SSL.Context(SSL.DTLS_CLIENT_METHOD)
    context.set_options(SSL.OP_ALL | SSL.OP_NO_QUERY_MTU)
    context.set_verify(SSL.VERIFY_NONE)
    context.set_cipher_list(CIPHERS)
    return context


class DTLSClient:
    """One DTLS association over datagrams the caller carries."""

    def __init__(self, context: SSL.Context, sni: bytes | None = None) -> None:
        self._conn = SSL.Connection(context, None)
        self._conn.set_connect_state()
        self._conn.set_ciphertext_mtu(MTU)
        if sni is not None:
            self._conn.set_tlsext_host_name(sni)
        self.handshake_done = False
        #: the peer sent close_notify
        self.closed = False
        self.received = 0
        self.retransmits = 0
        self._flight: list[bytes] = []

    # -- driving ---------------------------------------------------------------

    def start(self) -> list[bytes]:
        """The first flight (the ClientHello)."""
        self._handshake()
        return self._outgoing()

    def datagram_received(self, datagram: bytes) -> tuple[list[bytes], bytes]:
        """A datagram from the peer → (datagrams to send, plaintext received)."""
        datagram = datagram[:MAX_RECORD_DATAGRAM]
        if not self.handshake_done:
            self.received += len(datagram)
            if self.received > MAX_HANDSHAKE_BYTES:
                raise DTLSFailed(f"more than {MAX_HANDSHAKE_BYTES} bytes before the handshake")
        self._conn.bio_write(datagram)
        plaintext = b""
        if not self.handshake_done:
            self._handshake()
        if self.handshake_done:
            plaintext = self._read_plaintext()
        return self._outgoing(), plaintext

    def next_retransmit(self) -> float | None:
        """Seconds until our last flight is sent again (None: no more resending)."""
        if self.handshake_done or not self._flight or self.retransmits >= MAX_RETRANSMITS:
            return None
        return float(2**self.retransmits)

    def retransmit(self) -> list[bytes]:
        """The last flight again (at most ``MAX_RETRANSMITS`` times)."""
        if self.handshake_done or self.retransmits >= MAX_RETRANSMITS:
            return []
        self.retransmits += 1
        return list(self._flight)

    def send(self, plaintext: bytes) -> list[bytes]:
        """Application data → datagrams (the handshake must have completed)."""
        assert self.handshake_done
        if plaintext:
            try:
                self._conn.send(plaintext)
            except SSL.Error as exc:
                raise DTLSFailed(f"send failed: {exc}") from None
        return self._outgoing()

    def close(self) -> list[bytes]:
        """The ``close_notify`` to send when the association ends (nothing before the
        handshake completed: OpenSSL's ``SSL_shutdown`` fails then, as nsock logs)."""
        if not self.handshake_done:
            return []
        try:
            self._conn.shutdown()
        except SSL.Error:
            return []
        return self._outgoing()

    def facts(self) -> dict[str, Any]:
        """The ``tls`` object of the completed handshake."""
        certificate = self._conn.get_peer_certificate()
        der = crypto.dump_certificate(crypto.FILETYPE_ASN1, certificate) if certificate else None
        return tls_object(self._conn.get_protocol_version_name(), self._conn.get_cipher_name(), der)

    # -- inside ----------------------------------------------------------------

    def _handshake(self) -> None:
        try:
            self._conn.do_handshake()
        except SSL.WantReadError:
            return
        except SSL.ZeroReturnError:
            raise DTLSFailed("closed during the handshake") from None
        except SSL.Error as exc:
            raise DTLSFailed(f"handshake failed: {exc}") from None
        self.handshake_done = True

    def _read_plaintext(self) -> bytes:
        """Every decrypted byte now available; a close_notify or error ends it quietly."""
        data = bytearray()
        while True:
            try:
                chunk = self._conn.recv(_CHUNK)
            except SSL.WantReadError:
                break
            except SSL.ZeroReturnError:
                self.closed = True
                break
            except SSL.Error:
                # a bad record after the handshake: DTLS drops it (RFC 6347 §4.1.2.7)
                break
            if not chunk:
                break
            data += chunk
        return bytes(data)

    def _outgoing(self) -> list[bytes]:
        """What OpenSSL wrote into its memory BIO, as datagrams of whole records."""
        out = bytearray()
        while True:
            try:
                chunk = self._conn.bio_read(_CHUNK)
            except SSL.WantReadError:
                break
            if not chunk:
                break
            out += chunk
        datagrams = split_records(bytes(out), MTU)
        if datagrams and not self.handshake_done:
            self._flight = datagrams
        return datagrams


def split_records(stream: bytes, mtu: int) -> list[bytes]:
    """DTLS records (13-byte header, 2-byte length at 11) packed into datagrams of <= mtu."""
    datagrams: list[bytes] = []
    current = bytearray()
    at = 0
    while at < len(stream):
        if len(stream) - at < _HEADER:
            end = len(stream)
        else:
            end = min(len(stream), at + _HEADER + int.from_bytes(stream[at + 11 : at + 13], "big"))
        record = stream[at:end]
        at = end
        if current and len(current) + len(record) > mtu:
            datagrams.append(bytes(current))
            current = bytearray()
        current += record
    if current:
        datagrams.append(bytes(current))
    return datagrams
