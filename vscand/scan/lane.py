"""One connection of a fast-mode port: a thin stream adapter that runs one probe (C0: the
first probe, and maybe the one after it on the same connection) into its
:class:`~vscand.scan.records.ProbeRecord` for the walk (DESIGN.md "Fast mode")."""

from __future__ import annotations

from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe
from vscand.scan.ending import MatchFunction
from vscand.scan.model import PortTask
from vscand.scan.records import CLOCK_SLACK, End, LaneBudget, ProbeRecord, Read, RoundTrip
from vscand.scan.stream import Dialer, end_kind, failed_with
from vscand.scan.walk import READ_CAP, EndKind


class LaneOwner(TypingProtocol):
    """What a lane needs of its port machine (:class:`~vscand.scan.fast.FastTCPPortScan`)."""

    task: PortTask
    clock: IReactorTime
    dial: Dialer
    match: MatchFunction
    rtt: RoundTrip
    budget: LaneBudget

    def quiet_window(self, probe: Probe) -> float | None: ...

    def lane_gone(self, lane: Lane) -> bool: ...

    def lane_connected(self, lane: Lane) -> None: ...

    def lane_connect_failed(self, lane: Lane, failure: Failure) -> None: ...

    def lane_answered(self, lane: Lane) -> None: ...

    def late_event(self, lane: Lane) -> None: ...

    def c0_closed(self, lane: Lane) -> None: ...

    def record_updated(self, record: ProbeRecord) -> None: ...

    def log_match_failure(self, failure: Failure) -> None: ...


class Lane(Protocol):
    """One connection of a fast port, running one probe into its record.

    ``C0`` (``first=True``) is the port's first connection: it runs the first
    probe (NULL) and, when the walk says so, the next probe on the same
    connection.  Other lanes run one probe each.  The lane owns its connect,
    timer and in-flight match and cancels them all in :meth:`stop`.
    """

    def __init__(self, scan: LaneOwner, record: ProbeRecord, *, first: bool = False) -> None:
        self.scan = scan
        self.record = record
        record.lane = self
        self.first = first
        self.connected = False
        self.closed = False
        self.finished = False  # the current record has ended
        self.budgeted = False
        self.connecting: defer.Deferred[Protocol] | None = None
        self.timer: IDelayedCall | None = None
        self.matching: defer.Deferred[ServiceMatch | None] | None = None
        self.pending: list[int] = []
        self.lost: EndKind | None = None
        self.expired = False
        self.capped = False
        self.probe_start = 0.0
        self.last_activity = 0.0
        self.dialled_at = 0.0
        #: a speculative lane whose probe ended in silence stays open, watched: a byte
        #: or a close now means the server had not served it yet (one at a time)
        self.watching = False

    # -- the connection ---------------------------------------------------------

    def dial(self, timeout: float, tls: bool) -> None:
        scan = self.scan
        self.dialled_at = scan.clock.seconds()
        d = scan.dial(scan.task, self, timeout, tls)
        self.connecting = d
        d.addCallbacks(self._connected, self._connect_failed)

    def _connected(self, _: object) -> None:
        self.connecting = None
        if self.closed or self.scan.lane_gone(self):
            self.abort()
            return
        self.connected = True
        self.scan.rtt.sample(self.scan.clock.seconds() - self.dialled_at)
        self.scan.lane_connected(self)

    def _connect_failed(self, failure: Failure) -> None:
        self.connecting = None
        if failed_with(failure, defer.CancelledError) or self.closed:
            return
        self.closed = True
        self.finished = True
        self.scan.lane_connect_failed(self, failure)

    def dataReceived(self, data: bytes) -> None:
        if self.watching and data:
            self.watching = False
            self.scan.late_event(self)
            return
        if self.finished or not self.connected or self.capped or not data:
            return
        if not self.first:
            self.scan.lane_answered(self)
        record = self.record
        now = self.scan.clock.seconds()
        if not self._replied:
            # the first reply of this probe: a round-trip sample (plus the peer's own time)
            self._replied = True
            self.scan.rtt.sample(now - self.probe_start)
        self.last_activity = now
        record.buffer += data
        if len(record.buffer) >= READ_CAP:
            self.capped = True
        self.pending.append(len(record.buffer))
        if self.matching is None:
            self._match_next()

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        ours = self.closed  # we closed it (close, abort, stop) before the loss
        self.closed = True
        if self.first:
            self.scan.c0_closed(self)
        if self.watching and not ours:
            self.watching = False
            self.scan.late_event(self)
            return
        if self.finished or not self.connected:
            return
        if not self.first and not ours:
            self.scan.lane_answered(self)
        kind = end_kind(reason)
        if self.matching is not None or self.pending:
            self.lost = kind  # what arrived before the close is matched first
            return
        self._end(kind)

    # -- one probe --------------------------------------------------------------

    def start(self, record: ProbeRecord) -> None:
        """Send ``record``'s probe on this (connected) lane and read its answer."""
        assert self.connected and not self.closed
        self.record = record
        record.lane = self
        self.finished = False
        self.expired = False
        self.capped = False  # as faithful mode: a reused buffer may take one more read
        self.lost = None
        self._replied = False
        now = self.scan.clock.seconds()
        self.probe_start = now
        self.last_activity = now
        probe = record.probe
        if probe.string:
            assert self.transport is not None
            self.transport.write(probe.string)
        self._arm()

    def _arm(self) -> None:
        clock = self.scan.clock
        probe = self.record.probe
        at = self.probe_start + probe.totalwaitms / 1000.0
        quiet = self.scan.quiet_window(probe)
        if quiet is not None:
            at = min(at, self.last_activity + quiet)
        self.timer = clock.callLater(max(0.0, at - clock.seconds()), self._timer_fired)

    def _timer_fired(self) -> None:
        self.timer = None
        if self.finished:
            return
        now = self.scan.clock.seconds()
        if now >= self.probe_start + self.record.probe.totalwaitms / 1000.0 - CLOCK_SLACK:
            self._expire()
            return
        quiet = self.scan.quiet_window(self.record.probe)
        if quiet is not None and now >= self.last_activity + quiet - CLOCK_SLACK:
            # confirm after one reactor turn: bytes already waiting in the socket are
            # read first, so a busy reactor cannot make a prompt reply look late
            self.timer = self.scan.clock.callLater(0, self._confirm_quiet)
            return
        self._arm()

    def _confirm_quiet(self) -> None:
        self.timer = None
        if self.finished:
            return
        now = self.scan.clock.seconds()
        quiet = self.scan.quiet_window(self.record.probe)
        full = self.probe_start + self.record.probe.totalwaitms / 1000.0
        if now >= full - CLOCK_SLACK or (
            quiet is not None and now >= self.last_activity + quiet - CLOCK_SLACK
        ):
            self._expire()
        else:
            self._arm()

    def _expire(self) -> None:
        if self.matching is not None or self.pending:
            self.expired = True  # ends once the reads before it are matched
            return
        self._end(EndKind.DEADLINE)

    def _match_next(self) -> None:
        length = self.pending.pop(0)
        buffer = bytes(self.record.buffer[:length])
        d = self.scan.match(self.record.probe, buffer)
        self.matching = d
        d.addCallbacks(lambda found: self._matched(found, length), self._match_failed)

    def _match_failed(self, failure: Failure) -> None:
        if failed_with(failure, defer.CancelledError):
            return
        self.scan.log_match_failure(failure)
        self._matched(None, len(self.record.buffer))

    def _matched(self, found: ServiceMatch | None, length: int) -> None:
        self.matching = None
        if self.finished:
            return
        read = Read(length, found)
        record = self.record
        record.events.append(read)
        if read.hard:
            # faithful mode stops here: this probe's answer is complete
            self.finished = True
            self._cancel_timer()
            self.close()
            self.scan.record_updated(record)
            return
        if self.pending:
            self.scan.record_updated(record)
            if not self.finished and self.matching is None and self.pending:
                self._match_next()
            return
        if self.lost is not None:
            self._end(self.lost)
            return
        if self.expired or self.capped:
            self._end(EndKind.DEADLINE if self.expired else EndKind.CAP)
            return
        self.scan.record_updated(record)

    def _end(self, kind: EndKind) -> None:
        self.finished = True
        self._cancel_timer()
        record = self.record
        elapsed = (self.scan.clock.seconds() - self.probe_start) * 1000.0
        record.events.append(End(kind, elapsed))
        if record.speculative and record.silent and not self.closed:
            self.watching = True  # kept open: is it silent, or not served yet?
        elif not (self.first and kind in (EndKind.DEADLINE, EndKind.CAP)):
            # only C0 after its NULL probe's timeout or cap may go on (reuse)
            self.close()
        self.scan.record_updated(record)

    # -- stopping ---------------------------------------------------------------

    def _cancel_timer(self) -> None:
        if self.timer is not None and self.timer.active():
            self.timer.cancel()
        self.timer = None

    def close(self) -> None:
        self.watching = False
        if self.budgeted:
            self.budgeted = False
            self.scan.budget.release()
        if not self.closed and self.transport is not None and self.connected:
            self.closed = True
            if self.first:
                self.scan.c0_closed(self)
            self.transport.loseConnection()

    def abort(self) -> None:
        self.watching = False
        if self.budgeted:
            self.budgeted = False
            self.scan.budget.release()
        if not self.closed and self.transport is not None:
            self.closed = True
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()

    def stop(self) -> None:
        """The port ended: cancel everything this lane owns and close it."""
        self.finished = True
        self.watching = False
        self._cancel_timer()
        self.pending.clear()
        if self.connecting is not None:
            connecting, self.connecting = self.connecting, None
            self.closed = True
            connecting.cancel()
        if self.matching is not None:
            matching, self.matching = self.matching, None
            matching.cancel()
        self.close()
        if self.budgeted:
            self.budgeted = False
            self.scan.budget.release()

    _replied = False
