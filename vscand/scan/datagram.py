"""The datagram transport of the UDP machine: a thin ``DatagramProtocol`` adapter, the
socket the machine writes to, and Twisted's UDP port made fit for a scanner (bounded
reads, kept alive by ICMP errors on a connected socket).

The socket opener (:data:`DatagramOpener`) is injected into the machine: it binds an
ephemeral port, connects it to the target and honours the connection-rate limit.
"""

from __future__ import annotations

import errno
import socket
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, udp
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.scan.model import PortTask

log = Logger()

#: bytes of a datagram that are kept (nsock reads UDP into an 8192-byte buffer)
MAX_DATAGRAM = 8192


class DatagramSocket(Protocol):
    """What the machine needs of a connected UDP socket (Twisted's ``udp.Port``)."""

    def write(self, datagram: bytes) -> Any: ...

    def stopListening(self) -> Any: ...


#: open(task, protocol) -> Deferred firing with a socket bound to an ephemeral port,
#: connected to (task.address, task.port), delivering to ``protocol``
DatagramOpener = Callable[[PortTask, DatagramProtocol], "defer.Deferred[DatagramSocket]"]


class DatagramEvents(Protocol):
    """What a :class:`DatagramAdapter` tells its machine."""

    def datagram_received(self, adapter: DatagramAdapter, datagram: bytes) -> None: ...

    def refused(self, adapter: DatagramAdapter) -> None: ...

    def socket_error(self, adapter: DatagramAdapter, code: int) -> None: ...


class DatagramAdapter(DatagramProtocol):
    """Thin adapter: forwards a socket's events to its port machine."""

    noisy = False

    def __init__(self, machine: DatagramEvents) -> None:
        self.machine = machine

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.machine.datagram_received(self, datagram)

    def connectionRefused(self) -> None:
        self.machine.refused(self)

    def socketError(self, code: int) -> None:
        """Another asynchronous error on the connected socket (ICMP host unreachable...)."""
        self.machine.socket_error(self, code)


def _log_close_failure(failure: Failure) -> None:
    log.failure("closing a UDP socket failed", failure)


def close_socket(sock: DatagramSocket | None) -> None:
    if sock is None:
        return
    d = sock.stopListening()
    if isinstance(d, defer.Deferred):
        d.addErrback(_log_close_failure)


#: datagrams one ``doRead`` takes from the socket before the reactor gets its turn back
DATAGRAMS_PER_READ = 64


class BoundedReadUDPPort(udp.Port):
    """Twisted's UDP port, reading at most ``DATAGRAMS_PER_READ`` datagrams per turn.

    Twisted's ``doRead`` loops until it has read ``maxThroughput`` bytes (256 KiB)
    or the socket is empty. An empty datagram counts for no byte, and a small one
    for very few: a peer that floods the socket faster than we read it (one thread
    of a hostile server is enough) keeps that loop running for as long as the
    flood lasts, and no timer, no other socket and no lease renewal gets the
    reactor meanwhile. Here a turn ends after a fixed number of datagrams; the
    rest wait in the kernel's queue (which drops what it cannot hold, as it
    would for Nmap) until the reactor polls the socket again.
    """

    datagrams_per_read = DATAGRAMS_PER_READ

    def doRead(self) -> None:
        for _ in range(self.datagrams_per_read):
            sock = getattr(self, "socket", None)
            if sock is None:
                return  # closed by a datagram's handler
            try:
                data, addr = sock.recvfrom(self.maxPacketSize)
            except OSError as exc:
                code = exc.args[0]
                if code in udp._sockErrReadIgnore:
                    return
                if code in udp._sockErrReadRefuse:
                    if self._connectedAddr:
                        self.protocol.connectionRefused()
                    return
                raise
            if self.addressFamily == socket.AF_INET6:
                addr = addr[:2]
            try:
                self.protocol.datagramReceived(data, addr)
            except BaseException:
                log.failure("datagramReceived failed")


class ConnectedUDPPort(BoundedReadUDPPort):
    """Twisted's UDP port, kept alive by the asynchronous errors of a connected socket.

    On Linux an ICMP error on a connected UDP socket makes epoll/poll report
    ``POLLERR`` without ``POLLIN``; Twisted's poll-like reactors take that for a
    lost connection and close the port before ``doRead`` could turn the
    ``ECONNREFUSED`` into ``connectionRefused``.  Here the pending error is
    read (``SO_ERROR``, which also clears it), delivered to the protocol
    (``connectionRefused`` or ``socketError``) and reading resumes.  Only
    ``stopListening`` closes the port.  (The select reactor already goes
    through ``doRead``.)
    """

    _closing = False

    def stopListening(self) -> Any:
        self._closing = True
        return super().stopListening()  # type: ignore[no-untyped-call]

    def connectionLost(self, reason: Any = None) -> None:
        sock = getattr(self, "socket", None)
        if not self._closing and reason is not None and sock is not None:
            code = sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
            if code:
                self.startReading()  # type: ignore[no-untyped-call]
                if code == errno.ECONNREFUSED:
                    self.protocol.connectionRefused()
                else:
                    report = getattr(self.protocol, "socketError", None)
                    if report is not None:
                        report(code)
                return
            # nothing pending: a real loss; tell the protocol like an unreachable host
            report = getattr(self.protocol, "socketError", None)
            if report is not None:
                report(errno.ENETDOWN)
        super().connectionLost(reason)  # type: ignore[no-untyped-call]

    def write(self, datagram: bytes, addr: Any = None) -> Any:
        if getattr(self, "socket", None) is None:
            raise OSError(errno.EBADF, "the UDP socket is closed")
        return super().write(datagram, addr)


def listen_udp_opener(reactor: Any, limiter: Any = None) -> DatagramOpener:
    """Open real sockets: ``listenUDP`` on an ephemeral port, then ``connect`` it.

    ``limiter`` (a ``ConnectLimiter``) paces socket opening like TCP connects.
    The socket is bound to the wildcard address of the target's family, so
    the kernel picks the source address the route needs (loopback for loopback).
    """

    async def open_socket(task: PortTask, protocol: DatagramProtocol) -> DatagramSocket:
        if limiter is not None:
            await limiter.acquire()
        interface = "::" if ":" in task.address else "0.0.0.0"
        port = ConnectedUDPPort(0, protocol, interface, MAX_DATAGRAM, reactor)  # type: ignore[no-untyped-call]
        port.startListening()  # type: ignore[no-untyped-call]
        try:
            port.connect(task.address, task.port)  # type: ignore[no-untyped-call]
        except BaseException:
            close_socket(port)
            raise
        sock: DatagramSocket = port
        return sock

    def start(task: PortTask, protocol: DatagramProtocol) -> defer.Deferred[DatagramSocket]:
        return defer.Deferred.fromCoroutine(open_socket(task, protocol))

    return start
