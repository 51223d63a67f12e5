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

The DTLS restart (Nmap 7.94+, only when ``db.grammar.dtls_tunnel``; DESIGN.md
"DTLS restart (Nmap 7.94+)").  Nmap's ``scanThroughTunnel`` (service_scan.cc:2165-2198
@95b974b10) restarts a port whose *hard* match is exactly ``dtls`` or ``ssl``
(:2180-2183), once: findings and fingerprint are cleared (``resetProbes(true)``,
:2193), the plan starts over with the ``sslports`` lists, and since 7.94
(``84e2e9be5``) every UDP probe has an iod of its own (:2104-2141), in the tunnel a
DTLS connect bounded by ``DEFAULT_CONNECT_SSL_TIMEOUT`` = 8000 ms (service_scan.h:83);
a failed or timed-out connect ends the port INCOMPLETE (:2366-2377), reported
``tunnel="ssl"`` with the table name.  We do the same: ``_restart_through_dtls``,
then per probe a new socket, state HANDSHAKE (``vscand.scan.dtls.DTLSClient`` on
memory BIOs, deadline ``ssl_connect_timeout``), the probe sent encrypted once the
handshake completed (its ``totalwaitms`` counted from then, :2363), and the
plaintext read and matched as usual.

Collaborators are injected: the clock, the socket opener (binds an ephemeral
port and connects it to the target; honours the connection-rate limit), the
match function (the matcher off the reactor thread in production), the probe
database and the services table.
"""

from __future__ import annotations

import collections
import enum
import errno
import socket
import time
from collections.abc import Callable
from typing import Any, Protocol

from twisted.internet import defer, udp
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import DatagramProtocol
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe, ProbeDatabase
from vscand.scan.dtls import DTLSClient, DTLSFailed, dtls_context
from vscand.scan.ending import PortEnding
from vscand.scan.model import PortTask, Result, ScanOptions
from vscand.scan.report import FinalState
from vscand.scan.stream import MatchFunction
from vscand.scan.walk import QUIET_FACTOR, READ_CAP, EndKind

__all__ = [
    "CHECK_WAIT",
    "DATAGRAMS_PER_READ",
    "INBOX_CAP",
    "MAX_DATAGRAM",
    "BoundedReadUDPPort",
    "ConnectedUDPPort",
    "DatagramOpener",
    "DatagramSocket",
    "UDPPortScan",
]

log = Logger()

#: bytes of a datagram that are kept (nsock reads UDP into an 8192-byte buffer)
MAX_DATAGRAM = 8192
#: datagrams held while a match is in flight (Nmap leaves them in the kernel's queue);
#: more are dropped, as a full socket buffer drops them
INBOX_CAP = 64
#: seconds a port without any version probe waits for an answer to the check datagram
CHECK_WAIT = 1.0


class DatagramSocket(Protocol):
    """What the machine needs of a connected UDP socket (Twisted's ``udp.Port``)."""

    def write(self, datagram: bytes) -> Any: ...

    def stopListening(self) -> Any: ...


#: open(task, protocol) -> Deferred firing with a socket bound to an ephemeral port,
#: connected to (task.address, task.port), delivering to ``protocol``
DatagramOpener = Callable[[PortTask, DatagramProtocol], "defer.Deferred[DatagramSocket]"]


#: the walk's restart (Nmap 7.94+): a hard ``dtls`` or ``ssl`` match goes on inside DTLS
DTLS_SERVICES = frozenset({"dtls", "ssl"})


class _State(enum.Enum):
    OPENING = "opening"
    HANDSHAKE = "handshake"
    READING = "reading"
    CHECKING = "checking"
    DONE = "done"


class _SocketError:
    """An ICMP error (``ECONNREFUSED``, ``EHOSTUNREACH``...), queued in order with the datagrams."""

    def __init__(self, code: int) -> None:
        self.code = code


_REFUSED = _SocketError(errno.ECONNREFUSED)
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


class DatagramAdapter(DatagramProtocol):
    """Thin adapter: forwards a socket's events to its port machine."""

    noisy = False

    def __init__(self, machine: UDPPortScan) -> None:
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


def _close(sock: DatagramSocket | None) -> None:
    if sock is None:
        return
    d = sock.stopListening()
    if isinstance(d, defer.Deferred):
        d.addErrback(_log_close_failure)


class UDPPortScan(PortEnding):
    """Version detection of one UDP port; ``run()`` fires with the result."""

    PROTOCOL = "udp"

    def __init__(
        self,
        task: PortTask,
        *,
        db: ProbeDatabase,
        match: MatchFunction,
        open_socket: DatagramOpener,
        clock: IReactorTime,
        options: ScanOptions,
        table_name: str | None,
        check_payloads: tuple[bytes, ...] = (),
        check_wait: float = CHECK_WAIT,
        wallclock: Callable[[], float] = time.time,
    ) -> None:
        self.task = task
        self._db = db
        self._match = match
        self._open_socket = open_socket
        self._clock = clock
        self._options = options
        self._table_name = table_name
        self._check_payloads = check_payloads or (b"",)
        self._check_wait = check_wait
        self._wallclock = wallclock
        self._state = _State.OPENING
        self._done: defer.Deferred[Result] = defer.Deferred(self._cancelled)
        self._started = 0.0
        self._port_state = "open|filtered"
        self._reason = "no-response"
        # per-port scan record (SPEC §2)
        self._walk = self._new_walk(db, DTLS_SERVICES if db.grammar.dtls_tunnel else frozenset())
        self._probe: Probe | None = None
        self._probes_sent = 0
        self._response = bytearray()
        self._probe_start = 0.0
        self._excluded_port = False
        self._received = False  # any datagram on either socket
        # what the current state owns
        self._check_adapter = DatagramAdapter(self)
        self._probe_adapter = DatagramAdapter(self)
        self._check_sock: DatagramSocket | None = None
        self._probe_sock: DatagramSocket | None = None
        self._opening: defer.Deferred[DatagramSocket] | None = None
        self._deadline: IDelayedCall | None = None
        #: fast mode: the slowest first reply to a probe seen on this port (seconds)
        self._reply_latency = 0.0
        self._deadline_passed = False
        self._capped = False
        self._interrupted = False
        self._matching: defer.Deferred[ServiceMatch | None] | None = None
        #: datagrams (and ICMP errors) not yet consumed by a read, oldest first
        self._inbox: collections.deque[bytes | _SocketError] = collections.deque()
        self.dropped = 0  # datagrams dropped because the inbox was full
        # the DTLS tunnel (Nmap 7.94+, DESIGN.md "DTLS restart (Nmap 7.94+)")
        self._tls = None
        self._dtls: DTLSClient | None = None
        self._retransmit_call: IDelayedCall | None = None
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
        return self._state is _State.DONE

    # -- opening --------------------------------------------------------------

    def _open(self, adapter: DatagramAdapter, opened: Callable[[DatagramSocket], None]) -> None:
        self._state = _State.OPENING
        d = self._open_socket(self.task, adapter)
        self._opening = d
        d.addCallbacks(opened, self._open_failed)

    def _open_failed(self, failure: Failure) -> None:
        self._opening = None
        if self._state is _State.DONE:
            return
        if isinstance(failure.value, defer.CancelledError):
            return
        # no socket (out of descriptors, no route for the family...): the scan failed
        self._teardown()
        self._done.errback(failure)

    def _check_opened(self, sock: DatagramSocket) -> None:
        self._opening = None
        if self._state is _State.DONE:
            _close(sock)
            return
        self._check_sock = sock
        for payload in self._check_payloads:
            self._send(sock, payload)
            if self._ended():  # refused synchronously on the write
                return
        if self._probe is None:
            # no version probe (excluded, or none at this intensity): the check decides
            self._state = _State.CHECKING
            self._deadline = self._clock.callLater(self._check_wait, self._check_over)
            return
        self._open(self._probe_adapter, self._probe_opened)

    def _probe_opened(self, sock: DatagramSocket) -> None:
        self._opening = None
        if self._state is _State.DONE:
            _close(sock)
            return
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
        if self._state is not _State.CHECKING:
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
        self._state = _State.READING
        self._probe = probe
        self._probes_sent += 1
        self._probe_start = self._clock.seconds()
        self._deadline_passed = False
        self._capped = False
        self._response = bytearray()
        self._deadline = self._clock.callLater(self._probe_wait(probe), self._deadline_hit)
        # the write may report a pending ICMP error at once (Twisted calls
        # connectionRefused from write); it is queued and read like any event
        if self._dtls is not None:
            try:
                datagrams = self._dtls.send(probe.string)
            except DTLSFailed:
                datagrams = []
            for datagram in datagrams:
                self._send(sock, datagram)
                if self._ended():
                    return
        else:
            self._send(sock, probe.string)
        self._read_next()

    def datagram_received(self, adapter: DatagramAdapter, datagram: bytes) -> None:
        if self._state is _State.DONE:
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
        if self._state is not _State.READING or self._probe is None:
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
        if self._state is _State.DONE:
            return
        if adapter is self._check_adapter:
            if code == errno.ECONNREFUSED and not self._received:
                self._report_port("closed", "port-unreach")
            return
        if adapter is not self._probe_adapter:
            return
        if self._state is _State.HANDSHAKE:
            # nsock's DTLS connect fails: the port ends INCOMPLETE
            self._finish(FinalState.INCOMPLETE)
            return
        if len(self._inbox) < INBOX_CAP:
            self._inbox.append(_REFUSED if code == errno.ECONNREFUSED else _SocketError(code))
        self._read_next()

    def _reading(self) -> bool:
        """A read is outstanding: the probe runs, no match in flight, not over."""
        return (
            self._state is _State.READING
            and self._matching is None
            and not self._capped
            and not self._deadline_passed
        )

    def _read_next(self) -> None:
        """Deliver the oldest waiting datagram (or ICMP error) to the current read."""
        if not self._reading() or not self._inbox:
            return
        event = self._inbox.popleft()
        if isinstance(event, _SocketError):
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
        if self._state is not _State.READING:
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
        if self._state is not _State.READING:
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

    def _probe_ended(self, kind: EndKind) -> None:
        """The current probe ended: by deadline or read cap, an EOF (a zero-length
        datagram, SPEC §6) or an ICMP error."""
        assert self._probe is not None
        self._cancel_deadline()
        elapsed_ms = (self._clock.seconds() - self._probe_start) * 1000.0
        decision = self._walk.ended(
            self._probe, kind, bytes(self._response), elapsed_ms, reusable=False
        )
        self._decide(decision)

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
        _close(old)
        self._probe_adapter = DatagramAdapter(self)
        self._open(self._probe_adapter, opened)

    # -- the DTLS restart (Nmap 7.94+) -------------------------------------------

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
        self._opening = None
        if self._state is _State.DONE:
            _close(sock)
            return
        self._probe_sock = sock
        self._state = _State.HANDSHAKE
        self.handshakes += 1
        # no SNI: nsock leaves it out of DTLS ClientHellos (nsock_core.c:377@95b974b10)
        self._dtls = DTLSClient(dtls_context())
        # DEFAULT_CONNECT_SSL_TIMEOUT: the handshake's whole time
        self._deadline = self._clock.callLater(
            self._options.ssl_connect_timeout, self._handshake_timeout
        )
        try:
            datagrams = self._dtls.start()
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
        if self._dtls is None or self._state is not _State.HANDSHAKE:
            return
        wait = self._dtls.next_retransmit()
        if wait is not None:
            self._retransmit_call = self._clock.callLater(wait, self._retransmit)

    def _retransmit(self) -> None:
        self._retransmit_call = None
        if self._dtls is None or self._state is not _State.HANDSHAKE:
            return
        try:
            datagrams = self._dtls.retransmit()
        except DTLSFailed:
            self._finish(FinalState.INCOMPLETE)
            return
        self._send_all(datagrams)
        self._schedule_retransmit()

    def _cancel_retransmit(self) -> None:
        call = self._retransmit_call
        self._retransmit_call = None
        if call is not None and call.active():
            call.cancel()

    def _handshake_timeout(self) -> None:
        self._deadline = None
        if self._state is _State.HANDSHAKE:
            self._finish(FinalState.INCOMPLETE)

    def _dtls_datagram(self, datagram: bytes) -> None:
        dtls = self._dtls
        assert dtls is not None
        if not datagram:
            return  # no record in it: DTLS ignores it
        handshaking = self._state is _State.HANDSHAKE
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

    # -- ending ---------------------------------------------------------------

    def _teardown(self) -> None:
        self._state = _State.DONE
        self._cancel_deadline()
        self._cancel_retransmit()
        self._close_dtls()
        if self._opening is not None:
            opening = self._opening
            self._opening = None
            opening.cancel()
        if self._matching is not None:
            matching = self._matching
            self._matching = None
            matching.cancel()
        self._inbox.clear()
        self._response = bytearray()
        for sock in (self._check_sock, self._probe_sock):
            _close(sock)
        self._check_sock = self._probe_sock = None


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
            _close(port)
            raise
        sock: DatagramSocket = port
        return sock

    def start(task: PortTask, protocol: DatagramProtocol) -> defer.Deferred[DatagramSocket]:
        return defer.Deferred.fromCoroutine(open_socket(task, protocol))

    return start
