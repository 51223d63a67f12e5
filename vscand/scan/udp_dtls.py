"""The DTLS restart of a UDP port (Nmap 7.94+; DESIGN.md "DTLS restart (Nmap 7.94+)").

Nmap's ``scanThroughTunnel`` (service_scan.cc:2165-2198@95b974b10) restarts a port whose
*hard* match is exactly ``dtls`` or ``ssl`` (:2180-2183), once: findings and fingerprint
are cleared (``resetProbes(true)``, :2193), the plan starts over with the ``sslports``
lists, and since 7.94 (``84e2e9be5``) every UDP probe has an iod of its own
(:2104-2141), in the tunnel a DTLS connect bounded by ``DEFAULT_CONNECT_SSL_TIMEOUT`` =
8000 ms (service_scan.h:83); a failed or timed-out connect ends the port INCOMPLETE
(:2366-2377), reported ``tunnel="ssl"`` with the table name.  We do the same: the walk
decides the restart, then per probe a new socket, state HANDSHAKE
(:class:`~vscand.scan.dtls.DTLSClient` on memory BIOs), which owns the handshake's
deadline (``ssl_connect_timeout``) and its retransmission timer; the probe is sent
encrypted once the handshake completed (its ``totalwaitms`` counted from then, :2363),
and the plaintext read and matched as usual.

:class:`DTLSTunnel` is that half of :class:`~vscand.scan.udp.UDPPortScan`.
"""

from __future__ import annotations

import collections
import enum
from collections.abc import Callable

from twisted.internet.interfaces import IDelayedCall

from vscand.probes.model import Probe
from vscand.scan.datagram import MAX_DATAGRAM, DatagramSocket
from vscand.scan.dtls import DTLSClient, DTLSFailed, dtls_context
from vscand.scan.ending import PortEnding, cancel_call
from vscand.scan.findings import FinalState

#: datagrams held while a match is in flight (Nmap leaves them in the kernel's queue);
#: more are dropped, as a full socket buffer drops them
INBOX_CAP = 64


class UDPState(enum.Enum):
    OPENING = "opening"
    HANDSHAKE = "handshake"
    READING = "reading"
    CHECKING = "checking"
    DONE = "done"


class SocketError:
    """An ICMP error (``ECONNREFUSED``, ``EHOSTUNREACH``...), queued in order with the datagrams."""

    def __init__(self, code: int) -> None:
        self.code = code


class DTLSTunnel(PortEnding):
    """The DTLS half of the UDP machine: one association, and its handshake, per probe."""

    # the UDP machine's, set by its __init__
    _state: UDPState
    _probe_sock: DatagramSocket | None
    #: datagrams (and ICMP errors) not yet consumed by a read, oldest first
    _inbox: collections.deque[bytes | SocketError]
    dropped: int
    # the tunnel's own
    _dtls: DTLSClient | None
    #: what the HANDSHAKE state owns besides its deadline: the flight's retransmission
    _retransmit_call: IDelayedCall | None
    handshakes: int

    _deadline: IDelayedCall | None

    def _cancel_deadline(self) -> None:
        raise NotImplementedError

    def _enter(self, state: UDPState) -> None:
        raise NotImplementedError

    def _send(self, sock: DatagramSocket, datagram: bytes) -> None:
        raise NotImplementedError

    def _start_probe(self, probe: Probe) -> None:
        raise NotImplementedError

    def _new_probe_socket(self, opened: Callable[[DatagramSocket], None]) -> None:
        raise NotImplementedError

    def _read_next(self) -> None:
        raise NotImplementedError

    def _fast_heard(self) -> None:
        raise NotImplementedError

    def _sealed(self, data: bytes) -> list[bytes]:
        """The datagrams that carry ``data``: itself in plain UDP, DTLS records in the tunnel."""
        if self._dtls is None:
            return [data]
        try:
            return self._dtls.send(data)
        except DTLSFailed:
            return []

    def _restart_in_tunnel(self, probe: Probe | None) -> None:
        """Everything again, inside DTLS: the ``sslports`` plan, a handshake per probe.

        The walk dropped what plain UDP found and the fingerprint (Nmap's
        ``scanThroughTunnel`` + ``resetProbes(true)``); inside the tunnel a hard
        ``dtls`` match is final.
        """
        self._cancel_deadline()
        self._inbox.clear()
        self._response = bytearray()
        if probe is None:
            self._finish(FinalState.NOMATCH)
            return
        self._probe = probe
        self._dtls_connect()

    def _dtls_connect(self) -> None:
        """A new socket (a new source port, as nsock's new iod) and a DTLS handshake."""
        self._cancel_retransmit()
        self._close_dtls()  # its close_notify goes out on the old socket
        self._new_probe_socket(self._dtls_opened)

    def _dtls_opened(self, sock: DatagramSocket) -> None:
        self._probe_sock = sock
        self._enter(UDPState.HANDSHAKE)
        self.handshakes += 1
        # no SNI: nsock leaves it out of DTLS ClientHellos (nsock_core.c:377@95b974b10)
        self._dtls = DTLSClient(dtls_context())
        # DEFAULT_CONNECT_SSL_TIMEOUT: the handshake's whole time
        self._deadline = self._clock.callLater(
            self._options.ssl_connect_timeout, self._handshake_timeout
        )
        self._send_flight(self._dtls.start)

    def _send_flight(self, flight: Callable[[], list[bytes]]) -> None:
        """Send a handshake flight (the first, or again) and time its retransmission; a
        handshake that fails ends the port INCOMPLETE."""
        try:
            datagrams = flight()
        except DTLSFailed:
            self._finish(FinalState.INCOMPLETE)
            return
        self._send_all(datagrams)
        self._schedule_retransmit()

    def _send_all(self, datagrams: list[bytes]) -> None:
        sock = self._probe_sock
        for datagram in datagrams:
            if sock is None or self._ended():
                return
            self._send(sock, datagram)

    def _close_dtls(self) -> None:
        """End the association as nsock's iod delete does: ``SSL_shutdown``, a close_notify
        (nsock_iod.c:251@95b974b10), sent once and not waited for."""
        dtls, self._dtls = self._dtls, None
        sock = self._probe_sock
        if dtls is None or sock is None:
            return
        for datagram in dtls.close():
            try:
                sock.write(datagram)
            except OSError:
                return

    def _schedule_retransmit(self) -> None:
        self._cancel_retransmit()
        if self._dtls is None or self._state is not UDPState.HANDSHAKE:
            return
        wait = self._dtls.next_retransmit()
        if wait is not None:
            self._retransmit_call = self._clock.callLater(wait, self._retransmit)

    def _retransmit(self) -> None:
        self._retransmit_call = None
        if self._dtls is None or self._state is not UDPState.HANDSHAKE:
            return
        self._send_flight(self._dtls.retransmit)

    def _cancel_retransmit(self) -> None:
        cancel_call(self._retransmit_call)
        self._retransmit_call = None

    def _handshake_timeout(self) -> None:
        self._deadline = None
        if self._state is UDPState.HANDSHAKE:
            self._finish(FinalState.INCOMPLETE)

    def _dtls_datagram(self, datagram: bytes) -> None:
        dtls = self._dtls
        assert dtls is not None
        if not datagram:
            return  # no record in it: DTLS ignores it
        handshaking = self._state is UDPState.HANDSHAKE
        try:
            datagrams, plaintext = dtls.datagram_received(datagram)
        except DTLSFailed:
            if handshaking:
                self._finish(FinalState.INCOMPLETE)
            return
        self._send_all(datagrams)
        if self._ended():
            return
        if handshaking:
            if not dtls.handshake_done:
                if datagrams:
                    self._schedule_retransmit()  # a new flight: its own timer
                return
            self._cancel_retransmit()
            self._cancel_deadline()
            if self._tls is None:
                self._tls = dtls.facts()
            assert self._probe is not None
            self._start_probe(self._probe)
            if self._ended():
                return
        if plaintext and len(self._inbox) < INBOX_CAP:
            if self._options.fast:
                self._fast_heard()
            self._inbox.append(plaintext[:MAX_DATAGRAM])
        elif plaintext:
            self.dropped += 1
        if dtls.closed and len(self._inbox) < INBOX_CAP:
            self._inbox.append(b"")  # close_notify: nsock reports EOF
        self._read_next()
