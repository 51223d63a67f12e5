"""One UDP port's version detection: Nmap 7.93's UDP path (SPEC §6, §3, §8), and 7.94's
(DESIGN.md "UDP", where the Nmap behaviour reproduced here is described and sourced).

``UDPPortScan`` is the port walk (:mod:`vscand.scan.walk`) over datagrams. Its states::

    OPENING --check socket--> (no probe: CHECKING --check_wait--> DONE)
       '--probe socket--> READING --datagram--> (matched) --> READING ... --> DONE
                          (7.94+ DTLS: HANDSHAKE --done--> READING, per probe)

Each state owns its wait (the check's, the handshake's, the probe's) and the transition
function cancels it on exit; DONE absorbs late datagrams and ICMP errors. One read is one
datagram from the *inbox* (datagrams and ICMP errors, in arrival order, at most
``INBOX_CAP``); a zero-length datagram is an EOF, ICMP port-unreachable a RESET, host
unreachable the end of the port (the walk's :class:`~vscand.scan.walk.EndKind`). One
connected socket carries every probe (7.93), or one per probe
(``db.grammar.udp_socket_per_probe``, 7.94+).

The port scan: a second connected socket, the *check socket*, sends at the start what
Nmap's ``-sU`` would send; a reply on either socket makes the port ``open``; ICMP on it,
or on the first probe before anything was received, makes it ``closed``; with no version
probe at all it alone decides, waiting ``check_wait`` seconds.

The DTLS restart (7.94+, ``db.grammar.dtls_tunnel``) is the walk's decision; its
transport side is :class:`vscand.scan.udp_dtls.DTLSTunnel`. The socket adapter and
Twisted's UDP port made fit for a scanner are :mod:`vscand.scan.datagram`.
Collaborators are injected: the clock, the socket opener, the match function, the probe
database and the services table.
"""

from __future__ import annotations

import collections
import errno
from collections.abc import Callable
from typing import Unpack

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.probes.model import Probe
from vscand.scan.datagram import (
    MAX_DATAGRAM,
    DatagramAdapter,
    DatagramOpener,
    DatagramSocket,
    close_socket,
)
from vscand.scan.ending import MachineArgs, cancel_call, cancel_deferred
from vscand.scan.findings import FinalState
from vscand.scan.model import PortTask, Result
from vscand.scan.reading import ProbeReading
from vscand.scan.records import DatagramQuietWindow
from vscand.scan.udp_dtls import INBOX_CAP, DTLSTunnel, SocketError, UDPState
from vscand.scan.walk import EndKind

log = Logger()

#: seconds a port without any version probe waits for an answer to the check datagram
CHECK_WAIT = 1.0

#: the walk's restart (Nmap 7.94+): a hard ``dtls`` or ``ssl`` match goes on inside DTLS
DTLS_SERVICES = frozenset({"dtls", "ssl"})

_REFUSED = SocketError(errno.ECONNREFUSED)
#: errors after which Nmap gives the port up (SPEC §4.4): INCOMPLETE
_UNREACHABLE = frozenset(
    code
    for code in (
        errno.EHOSTUNREACH,
        errno.ENETUNREACH,
        getattr(errno, "EHOSTDOWN", None),
        getattr(errno, "ENONET", None),
    )
    if code is not None
)


class UDPPortScan(DTLSTunnel):
    """Version detection of one UDP port; ``run()`` fires with the result."""

    PROTOCOL = "udp"
    _log = log
    _MATCH_FAILED = "matching failed on {address}:{port}/udp"

    def __init__(
        self,
        task: PortTask,
        *,
        open_socket: DatagramOpener,
        check_payloads: tuple[bytes, ...] = (),
        check_wait: float = CHECK_WAIT,
        **machine: Unpack[MachineArgs],
    ) -> None:
        db = machine["db"]
        super().__init__(
            task,
            tunnel_services=DTLS_SERVICES if db.grammar.dtls_tunnel else frozenset(),
            port_state="open|filtered",
            reason="no-response",
            **machine,
        )
        self._open_socket = open_socket
        self._check_payloads = check_payloads or (b"",)
        self._check_wait = check_wait
        self._state = UDPState.OPENING
        self._probes_sent = 0
        self._excluded_port = False
        self._received = False  # any datagram on either socket
        # what the current state owns
        self._check_adapter = DatagramAdapter(self)
        self._probe_adapter = DatagramAdapter(self)
        self._check_sock: DatagramSocket | None = None
        self._probe_sock: DatagramSocket | None = None
        self._opening: defer.Deferred[DatagramSocket] | None = None
        #: the wait of CHECKING and HANDSHAKE (READING's is its reading's)
        self._deadline: IDelayedCall | None = None
        #: the READING state's probe: it owns the probe's wait and match in flight
        self._reading: ProbeReading | None = None
        #: fast mode's quiet windows (probes stay one at a time)
        self._quiet = DatagramQuietWindow(self._options.fast_wait if self._options.fast else 0.0)
        #: datagrams (and ICMP errors) not yet consumed by a read, oldest first
        self._inbox: collections.deque[bytes | SocketError] = collections.deque()
        self.dropped = 0  # datagrams dropped because the inbox was full
        # the DTLS tunnel (Nmap 7.94+, DESIGN.md "DTLS restart (Nmap 7.94+)")
        self._dtls = None
        self._retransmit_call = None
        self.handshakes = 0

    # -- public ---------------------------------------------------------------

    def run(self) -> defer.Deferred[Result]:
        self._started = self._clock.seconds()
        self._excluded_port = self._excluded()
        if not self._excluded_port:
            self._probe = self._walk.plan.next()
        self._open(self._check_adapter, self._check_opened)
        return self._done

    @property
    def state(self) -> str:
        return self._state.value

    def _ended(self) -> bool:
        return self._state is UDPState.DONE

    # -- opening --------------------------------------------------------------

    def _open(self, adapter: DatagramAdapter, opened: Callable[[DatagramSocket], None]) -> None:
        self._enter(UDPState.OPENING)
        d = self._open_socket(self.task, adapter)
        self._opening = d
        d.addCallbacks(lambda sock: self._opened(sock, opened), self._open_failed)

    def _opened(self, sock: DatagramSocket, then: Callable[[DatagramSocket], None]) -> None:
        self._opening = None
        if self._state is UDPState.DONE:
            close_socket(sock)  # the port ended while the socket was opening
            return
        then(sock)

    def _open_failed(self, failure: Failure) -> None:
        self._opening = None
        if self._state is UDPState.DONE:
            return
        if isinstance(failure.value, defer.CancelledError):
            return
        # no socket (out of descriptors, no route for the family...): the scan failed
        self._teardown()
        self._done.errback(failure)

    def _check_opened(self, sock: DatagramSocket) -> None:
        self._check_sock = sock
        for payload in self._check_payloads:
            self._send(sock, payload)
            if self._ended():  # refused synchronously on the write
                return
        if self._probe is None:
            # no version probe (excluded, or none at this intensity): the check decides
            self._enter(UDPState.CHECKING)
            self._deadline = self._clock.callLater(self._check_wait, self._check_over)
            return
        self._open(self._probe_adapter, self._probe_opened)

    def _probe_opened(self, sock: DatagramSocket) -> None:
        self._probe_sock = sock
        assert self._probe is not None
        self._start_probe(self._probe)

    def _send(self, sock: DatagramSocket, datagram: bytes) -> None:
        try:
            sock.write(datagram)
        except OSError as exc:
            # EMSGSIZE and friends: Nmap's write handler would finish the port INCOMPLETE
            log.info(
                "UDP send to {address}:{port} failed: {error}",
                address=self.task.address,
                port=self.task.port,
                error=str(exc),
            )
            self._finish(FinalState.INCOMPLETE)

    # -- the check socket -------------------------------------------------------

    def _check_over(self) -> None:
        self._deadline = None
        if self._state is not UDPState.CHECKING:
            return
        self._finish(FinalState.EXCLUDED if self._excluded_port else FinalState.NOMATCH)

    def _mark_open(self) -> None:
        self._received = True
        if self._port_state != "open":
            self._port_state = "open"
            self._reason = "udp-response"

    # -- probing --------------------------------------------------------------

    def _start_probe(self, probe: Probe) -> None:
        sock = self._probe_sock
        assert sock is not None
        self._enter(UDPState.READING)
        self._probe = probe
        self._probes_sent += 1
        self._probe_start = self._clock.seconds()
        self._response = bytearray()
        reading = ProbeReading(
            probe, self._response, clock=self._clock, match=self._match, owner=self
        )
        self._reading = reading
        reading.arm(self._quiet.probe_wait(probe))
        # the write may report a pending ICMP error at once (Twisted calls
        # connectionRefused from write); it is queued and read like any event
        for datagram in self._sealed(probe.string):
            self._send(sock, datagram)
            if self._ended():
                return
        self._read_next()

    def datagram_received(self, adapter: DatagramAdapter, datagram: bytes) -> None:
        if self._state is UDPState.DONE:
            return
        if adapter is self._check_adapter:
            # an answer to the port-scan datagram: the port is open, nothing more
            self._mark_open()
            return
        if adapter is not self._probe_adapter:
            return  # a socket of an earlier DTLS association
        if self._dtls is not None:
            self._dtls_datagram(datagram)
            return
        if len(self._inbox) >= INBOX_CAP:
            self.dropped += 1
            return
        if self._options.fast:
            self._fast_heard()
        self._inbox.append(datagram[:MAX_DATAGRAM])
        self._read_next()

    def _fast_heard(self) -> None:
        """A datagram for the current probe: learn the reply time, wait a window more."""
        if self._state is not UDPState.READING or self._probe is None:
            return
        self._quiet.heard(
            self._reading.timer if self._reading is not None else None,
            self._probe,
            self._probe_start,
            now=self._clock.seconds(),
            first=not self._response and not self._inbox,
        )

    def refused(self, adapter: DatagramAdapter) -> None:
        self.socket_error(adapter, errno.ECONNREFUSED)

    def socket_error(self, adapter: DatagramAdapter, code: int) -> None:
        if self._state is UDPState.DONE:
            return
        if adapter is self._check_adapter:
            if code == errno.ECONNREFUSED and not self._received:
                self._report_port("closed", "port-unreach")
            return
        if adapter is not self._probe_adapter:
            return
        if self._state is UDPState.HANDSHAKE:
            # nsock's DTLS connect fails: the port ends INCOMPLETE
            self._finish(FinalState.INCOMPLETE)
            return
        if len(self._inbox) < INBOX_CAP:
            self._inbox.append(_REFUSED if code == errno.ECONNREFUSED else SocketError(code))
        self._read_next()

    def _read_next(self) -> None:
        """Deliver the oldest waiting datagram (or ICMP error) to the current read."""
        reading = self._reading
        if self._state is not UDPState.READING or reading is None or not reading.idle():
            return
        if not self._inbox:
            return
        event = self._inbox.popleft()
        if isinstance(event, SocketError):
            self._read_error(event.code)
            return
        if not event:
            reading.lose(EndKind.EOF)
            return
        self._walk.heard()
        self._mark_open()
        reading.take(event)

    # -- what the reading tells (ReadingOwner) ------------------------------------

    def read_waiting(self, reading: ProbeReading) -> None:
        self._read_next()

    def reading_ended(self, reading: ProbeReading, kind: EndKind) -> None:
        # after data, a deadline or the cap ends the probe (SPEC §4.3): fingerprint, next
        self._probe_ended(kind)

    def _read_error(self, code: int) -> None:
        """An error on the read: ICMP port-unreachable is ECONNREFUSED (SPEC §4.4, §6)."""
        assert self._reading is not None
        if code in _UNREACHABLE or code == errno.ENETDOWN:
            self._reading.lose(EndKind.UNREACHABLE)
            return
        if code == errno.ECONNREFUSED and self._probes_sent == 1 and not self._received:
            # Nmap's UDP scan would have found the port closed and never probed it
            self._reading.stop()
            self._report_port("closed", "port-unreach")
            return
        # the buffered response is lost, not fingerprinted; the next probe
        self._reading.lose(EndKind.RESET)

    def _cancel_deadline(self) -> None:
        cancel_call(self._deadline)
        self._deadline = None

    def _probe_ended(self, kind: EndKind) -> None:
        self._cancel_deadline()
        super()._probe_ended(kind)

    def _send_probe(self, probe: Probe, *, reuse: bool) -> None:
        if self._walk.tunnel_ssl:
            # through DTLS every probe has a socket and a handshake of its own
            self._probe = probe
            self._dtls_connect()
            return
        if self._db.grammar.udp_socket_per_probe:
            # Nmap 7.94+: a new iod per probe; what waits on the old socket is dropped
            self._probe = probe
            self._new_probe_socket(self._probe_opened)
            return
        # Nmap 7.93: same socket, whatever is still queued goes to the next probe's reads
        self._start_probe(probe)

    def _new_probe_socket(self, opened: Callable[[DatagramSocket], None]) -> None:
        """Close the probe socket and open another (a new source port, as nsock's new iod);
        what waited on the old one is dropped with it."""
        self._cancel_deadline()
        self._inbox.clear()
        old = self._probe_sock
        self._probe_sock = None
        close_socket(old)
        self._probe_adapter = DatagramAdapter(self)
        self._open(self._probe_adapter, opened)

    # -- ending ---------------------------------------------------------------

    def _enter(self, state: UDPState) -> None:
        """The transition function: leaving a state cancels what it owned (its wait:
        the check's, the handshake's or the probe's; the handshake's retransmission)."""
        self._state = state
        self._cancel_deadline()
        self._cancel_retransmit()
        reading, self._reading = self._reading, None
        if reading is not None:
            reading.stop()

    def _teardown(self) -> None:
        self._enter(UDPState.DONE)
        self._close_dtls()
        opening, self._opening = self._opening, None
        cancel_deferred(opening)
        self._inbox.clear()
        self._response = bytearray()
        for sock in (self._check_sock, self._probe_sock):
            close_socket(sock)
        self._check_sock = self._probe_sock = None
