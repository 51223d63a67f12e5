"""One connection of a fast-mode port: a thin stream adapter that runs one probe (C0: the
first probe, and maybe the one after it on the same connection) into its
:class:`~vscand.scan.records.ProbeRecord` for the walk (DESIGN.md "Fast mode")."""

from __future__ import annotations

import enum
from typing import Protocol as TypingProtocol

from twisted.internet import defer
from twisted.internet.interfaces import IReactorTime
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe
from vscand.scan.ending import MatchFunction
from vscand.scan.model import PortTask
from vscand.scan.reading import ProbeReading, ReadState
from vscand.scan.records import End, LaneBudget, ProbeRecord, Read, RoundTrip
from vscand.scan.stream import Dialer, end_kind, failed_with
from vscand.scan.walk import EndKind


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


class LaneState(enum.Enum):
    """A lane's connection.

    ::

        DIALLING --connected--> OPEN --probe ended in silence (speculative)--> WATCHING
            |                    |                                                |
            '--failed, stopped---+--closed (either side), stopped-----------------+--> CLOSED

    WATCHING: the probe's record is complete, the connection kept open to see whether
    a byte or a close comes late (the server had not served it yet).
    """

    DIALLING = "dialling"
    OPEN = "open"
    WATCHING = "watching"
    CLOSED = "closed"


class Lane(Protocol):
    """One connection of a fast port, running one probe into its record.

    ``C0`` (``first=True``) is the port's first connection: it runs the first
    probe (NULL) and, when the walk says so, the next probe on the same
    connection.  Other lanes run one probe each.  The lane owns its connect and its
    probe's :class:`~vscand.scan.reading.ProbeReading` (timer, match in flight) and cancels them in
    :meth:`stop`.
    """

    def __init__(self, scan: LaneOwner, record: ProbeRecord, *, first: bool = False) -> None:
        self.scan = scan
        self.record = record
        record.lane = self
        self.first = first
        self.state = LaneState.DIALLING
        #: holds a place in the scan's LaneBudget (a speculative lane) until released
        self.budgeted = False
        self.connecting: defer.Deferred[Protocol] | None = None
        #: the current record's reading (None before the first probe starts)
        self.reading: ProbeReading | None = None
        self.dialled_at = 0.0
        self._replied = False

    @property
    def closed(self) -> bool:
        return self.state is LaneState.CLOSED

    @property
    def is_open(self) -> bool:
        return self.state in (LaneState.OPEN, LaneState.WATCHING)

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
        self.state = LaneState.OPEN
        self.scan.rtt.sample(self.scan.clock.seconds() - self.dialled_at)
        self.scan.lane_connected(self)

    def _connect_failed(self, failure: Failure) -> None:
        self.connecting = None
        if failed_with(failure, defer.CancelledError) or self.closed:
            return
        self.state = LaneState.CLOSED
        self.scan.lane_connect_failed(self, failure)

    def _reading(self) -> ProbeReading | None:
        """The probe being read, if its reading has not ended."""
        reading = self.reading
        if reading is None or reading.state is ReadState.ENDED:
            return None
        return reading

    def dataReceived(self, data: bytes) -> None:
        if self.state is LaneState.WATCHING and data:
            self.state = LaneState.OPEN
            self.scan.late_event(self)
            return
        reading = self._reading()
        if reading is None or not reading.accepts() or not data:
            return
        if not self.first:
            self.scan.lane_answered(self)
        now = self.scan.clock.seconds()
        if not self._replied:
            # the first reply of this probe: a round-trip sample (plus the peer's own time)
            self._replied = True
            self.scan.rtt.sample(now - reading.started)
        reading.last_activity = now
        reading.take(data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        ours = self.closed  # we closed it (close, abort, stop) before the loss
        watched = self.state is LaneState.WATCHING
        self.state = LaneState.CLOSED
        if self.first:
            self.scan.c0_closed(self)
        if watched:
            self.scan.late_event(self)
            return
        reading = self._reading()
        if reading is None:
            return
        if not self.first and not ours:
            self.scan.lane_answered(self)
        reading.lose(end_kind(reason))

    # -- one probe --------------------------------------------------------------

    def start(self, record: ProbeRecord) -> None:
        """Send ``record``'s probe on this (connected) lane and read its answer."""
        assert self.is_open
        self.record = record
        record.lane = self
        self._replied = False
        scan = self.scan
        # as faithful mode: a reused buffer may take one more read
        self.reading = ProbeReading(
            record.probe,
            record.buffer,
            clock=scan.clock,
            match=scan.match,
            owner=self,
            quiet_window=scan.quiet_window,
        )
        probe = record.probe
        if probe.string:
            assert self.transport is not None
            self.transport.write(probe.string)
        self.reading.arm()

    # -- what the reading tells (ReadingOwner) ------------------------------------

    def read_matched(self, reading: ProbeReading, found: ServiceMatch | None, length: int) -> None:
        read = Read(length, found)
        record = self.record
        record.events.append(read)
        if read.hard:
            # faithful mode stops here: this probe's answer is complete
            self.close()
            self.scan.record_updated(record)

    def read_waiting(self, reading: ProbeReading) -> None:
        self.scan.record_updated(self.record)

    def reading_ended(self, reading: ProbeReading, kind: EndKind) -> None:
        record = self.record
        elapsed = (self.scan.clock.seconds() - reading.started) * 1000.0
        record.events.append(End(kind, elapsed))
        if record.speculative and record.silent and self.state is LaneState.OPEN:
            self.state = LaneState.WATCHING  # kept open: is it silent, or not served yet?
        elif not (self.first and kind in (EndKind.DEADLINE, EndKind.CAP)):
            # only C0 after its NULL probe's timeout or cap may go on (reuse)
            self.close()
        self.scan.record_updated(record)

    def log_match_failure(self, failure: Failure) -> None:
        self.scan.log_match_failure(failure)

    # -- stopping ---------------------------------------------------------------

    def _release_budget(self) -> None:
        if self.budgeted:
            self.budgeted = False
            self.scan.budget.release()

    def close(self) -> None:
        self._release_budget()
        if self.is_open and self.transport is not None:
            self.state = LaneState.CLOSED
            if self.first:
                self.scan.c0_closed(self)
            self.transport.loseConnection()

    def abort(self) -> None:
        self._release_budget()
        if not self.closed and self.transport is not None:
            self.state = LaneState.CLOSED
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()

    def stop(self) -> None:
        """The port ended: cancel everything this lane owns and close it."""
        if self.reading is not None:
            self.reading.stop()
        if self.connecting is not None:
            connecting, self.connecting = self.connecting, None
            self.state = LaneState.CLOSED
            connecting.cancel()
        self.close()
        self._release_budget()
