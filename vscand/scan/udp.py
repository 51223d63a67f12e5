"""One UDP port's version detection: Nmap 7.93's UDP path (SPEC §6, §3, §8), and 7.94's.

``UDPPortScan`` is the state machine for one (address, port) over UDP.  Like
the TCP machine, its protocol objects are thin adapters that forward
``datagramReceived``/``connectionRefused`` as inputs; the machine owns every
timer and in-flight Deferred and cancels them on every exit; ``DONE`` absorbs
late events.

What Nmap 7.93 does, and so do we:

* no NULL probe: port-listed UDP probes first, then the rest by rarity
  (``ProbePlan`` with protocol ``UDP``);
* **one connected UDP socket for all probes of the port**; each probe is one
  datagram, never retransmitted, followed by reads until ``totalwaitms``;
  a late reply to an earlier probe is attributed to the current one
  (service_scan.cc ``startNextProbe``: "Can maintain the same UDP
  'connection'", 2094-2101@9732e6979).  From Nmap 7.94 (``84e2e9be5``, the
  DTLS tunnel commit) ``startNextProbe`` deletes the probe's nsock iod and
  makes a new one for every next probe, TCP or UDP (2104-2141@95b974b10): each
  probe goes out from **a socket of its own** (a new source port), and what
  arrives on an earlier probe's socket after that probe ended is lost.  We do
  the same when ``db.grammar.udp_socket_per_probe``: ``_send_probe`` closes
  the probe socket and opens another (``_reopen``) before the next probe;
* one read = one datagram, appended to the probe's response buffer and the
  whole buffer matched; reading stops once the buffer holds 4096 bytes;
  a datagram is cut to 8192 bytes (nsock's read buffer, verified: a
  10,000-byte reply is fingerprinted with length ``2000``);
* a zero-length datagram is an EOF: the probe ends, the next one starts;
* ICMP port-unreachable (``ECONNREFUSED`` on the connected socket) ends the
  probe without fingerprinting its buffer; the next probe starts;
* any datagram makes an ``open|filtered`` port ``open`` (``udp-response``);
  a port nothing answered ends NOMATCH with the table name and stays
  ``open|filtered`` (so no ``?``);
* the tcpwrapped override of SPEC §2 applies (nothing ever read and no read
  timeout): a port with no usable probe is ``tcpwrapped``.

The port scan.  Nmap finds the port's state with its UDP scan (``-sU``) before
version detection: a reply → ``open``, ICMP port-unreachable → ``closed`` (and
no version detection), silence → ``open|filtered``.  We have no separate port
scan; instead the machine opens a second connected socket (the *check
socket*) and sends on it, at the start, the datagram Nmap's UDP scan would
send (``nmap-payloads``' payload for the port, else empty).  A reply on either
socket makes the port ``open``; ICMP on the check socket, or on the first
probe before anything was received, makes it ``closed``.  When no version
probe is sent at all (intensity too low, or the port is excluded), the check
socket alone decides, waiting ``check_wait`` seconds.  Nmap's UDP scan
retransmits; ours sends once.

The DTLS restart (Nmap 7.94+, only when ``db.grammar.dtls_tunnel``) is the
walk's decision; its transport side is :class:`vscand.scan.udp_dtls.DTLSTunnel`.

The transport (the socket adapter, Twisted's UDP port made fit for a scanner, the
opener of real sockets) is :mod:`vscand.scan.datagram`.

Collaborators are injected: the clock, the socket opener (binds an ephemeral
port and connects it to the target; honours the connection-rate limit), the
match function (the matcher off the reactor thread in production), the probe
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

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe
from vscand.scan.datagram import (
    MAX_DATAGRAM,
    DatagramAdapter,
    DatagramOpener,
    DatagramSocket,
    close_socket,
)
from vscand.scan.ending import MachineArgs, cancel_call, cancel_deferred
from vscand.scan.model import PortTask, Result
from vscand.scan.report import FinalState
from vscand.scan.udp_dtls import INBOX_CAP, DTLSTunnel, SocketError, UDPState
from vscand.scan.walk import QUIET_FACTOR, READ_CAP, EndKind

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
        # what the probe's reading owns: its wait, the match in flight
        self._deadline: IDelayedCall | None = None
        self._deadline_passed = False
        self._capped = False
        self._matching: defer.Deferred[ServiceMatch | None] | None = None
        #: fast mode: the slowest first reply to a probe seen on this port (seconds)
        self._reply_latency = 0.0
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

    def _excluded(self) -> bool:
        if self._options.allports:
            return False
        return self._db.exclude.excludes(
            "UDP", self.task.port, [p.upper() for p in self._options.scanned_protocols]
        )

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
        self._deadline_passed = False
        self._capped = False
        self._response = bytearray()
        self._deadline = self._clock.callLater(self._probe_wait(probe), self._deadline_hit)
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

    # -- fast mode: quiet windows (DESIGN.md, "Fast mode"); probes stay one at a time --

    def _quiet_window(self) -> float | None:
        floor = self._options.fast_wait
        if not self._options.fast or floor <= 0:
            return None
        return max(floor, QUIET_FACTOR * self._reply_latency)

    def _probe_wait(self, probe: Probe) -> float:
        """How long a probe waits: its totalwaitms, in fast mode at most the quiet window."""
        full = probe.totalwaitms / 1000.0
        quiet = self._quiet_window()
        return full if quiet is None else min(full, quiet)

    def _fast_heard(self) -> None:
        """A datagram for the current probe: learn the reply time, wait a window more."""
        if self._state is not UDPState.READING or self._probe is None:
            return
        now = self._clock.seconds()
        if not self._response and not self._inbox:
            self._reply_latency = max(self._reply_latency, now - self._probe_start)
        quiet = self._quiet_window()
        deadline = self._deadline
        if quiet is None or deadline is None or not deadline.active():
            return
        end = min(self._probe_start + self._probe.totalwaitms / 1000.0, now + quiet)
        deadline.reset(max(0.0, end - now))

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

    def _reading(self) -> bool:
        """A read is outstanding: the probe runs, no match in flight, not over."""
        return (
            self._state is UDPState.READING
            and self._matching is None
            and not self._capped
            and not self._deadline_passed
        )

    def _read_next(self) -> None:
        """Deliver the oldest waiting datagram (or ICMP error) to the current read."""
        if not self._reading() or not self._inbox:
            return
        event = self._inbox.popleft()
        if isinstance(event, SocketError):
            self._read_error(event.code)
            return
        if not event:
            self._probe_ended(EndKind.EOF)
            return
        self._walk.heard()
        self._mark_open()
        self._response += event
        if len(self._response) >= READ_CAP:
            self._capped = True
        assert self._probe is not None
        d = self._match(self._probe, bytes(self._response))
        self._matching = d
        d.addCallbacks(self._match_done, self._match_failed)

    def _match_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, defer.CancelledError):
            return
        log.failure(
            "matching failed on {address}:{port}/udp",
            failure,
            address=self.task.address,
            port=self.task.port,
        )
        self._match_done(None)

    def _match_done(self, found: ServiceMatch | None) -> None:
        self._matching = None
        if self._state is not UDPState.READING:
            return
        assert self._probe is not None
        decision = self._walk.matched(self._probe, found)
        if decision is not None:
            self._decide(decision)
            return
        if self._capped or self._deadline_passed:
            # the probe is over after data (SPEC §4.3): fingerprint, next probe
            self._probe_ended(EndKind.DEADLINE if self._deadline_passed else EndKind.CAP)
            return
        self._read_next()

    def _deadline_hit(self) -> None:
        self._deadline = None
        if self._state is not UDPState.READING:
            return
        if self._matching is not None:
            self._deadline_passed = True
            return
        # read timeout
        self._probe_ended(EndKind.DEADLINE)

    def _read_error(self, code: int) -> None:
        """An error on the read: ICMP port-unreachable is ECONNREFUSED (SPEC §4.4, §6)."""
        if code in _UNREACHABLE or code == errno.ENETDOWN:
            self._probe_ended(EndKind.UNREACHABLE)
            return
        if code == errno.ECONNREFUSED and self._probes_sent == 1 and not self._received:
            # Nmap's UDP scan would have found the port closed and never probed it
            self._cancel_deadline()
            self._report_port("closed", "port-unreach")
            return
        # the buffered response is lost, not fingerprinted; the next probe
        self._probe_ended(EndKind.RESET)

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

    def _teardown(self) -> None:
        self._enter(UDPState.DONE)
        self._close_dtls()
        opening, self._opening = self._opening, None
        cancel_deferred(opening)
        matching, self._matching = self._matching, None
        cancel_deferred(matching)
        self._inbox.clear()
        self._response = bytearray()
        for sock in (self._check_sock, self._probe_sock):
            close_socket(sock)
        self._check_sock = self._probe_sock = None
