"""Fast mode: the faithful answer for a TCP port, sooner (issue 7; DESIGN.md "Fast mode").

Faithful mode (``tcp.py``) runs Nmap's per-port algorithm: one probe at a time,
each waiting out its ``totalwaitms``.  Fast mode gets the same answer by

1. **probing in parallel**: while the NULL probe waits on the first connection
   (``C0``), *lanes* — one new connection per probe, at most
   ``ScanOptions.fast_lanes`` per port — send the next probes of the faithful
   plan, each on its own connection, and record what each one produced: the
   matched reads, then how the probe ended (:class:`ProbeRecord`);
2. **walking the faithful plan over those records**: the walk is faithful
   mode's decision logic (NULL first; soft-match pruning; fallbacks; the
   tcpwrapped rules; connection reuse after a NULL timeout; the SSL restart),
   fed with records instead of live sockets.  It consumes each record's events
   as they arrive, so the port ends as soon as every probe *before* the one
   where faithful mode would stop has its full answer: the answer cannot change
   any more;
3. **no shortened waits** by default: every probe, the NULL probe first, waits its
   whole ``totalwaitms``, so the answer is faithful mode's by construction
   (DESIGN.md, "Fast mode: the guarantee"). The opt-in quiet window
   (``fast_wait`` > 0) ends a probe once its connection has been quiet for
   ``Q = max(fast_wait, QUIET_FACTOR x (srtt + 4 rttvar))``: sooner, and outside the
   guarantee (a late banner, a pause inside a reply, a close on the service's own
   timer are read differently);
4. **one connection at a time**: a server that takes the next connection only when
   the current one closes leaves lanes connected and silent in its accept queue.
   A lane's silence is trusted once another lane was answered while C0 was open,
   or ``SETTLE_FLOOR`` (and 4 round-trip bounds) after C0 closed; a silent lane
   stays open until then, and a byte or a close on it afterwards turns the port
   sequential: the walk dials every probe it still needs alone.

A probe sent on a fresh connection produces, for a service whose connections do
not influence one another, exactly what faithful mode would have seen on the fresh
connection it opens for that probe;
the one probe faithful mode sends on a *reused* connection (the first after a
NULL probe that ended by timeout or read cap) is sent on ``C0`` itself, as
faithful mode does.  Speculative lanes whose probe the plan does not reach are
closed when the port ends; a lane whose connect fails is not an answer — the
walk dials that probe again when it needs it, alone, as faithful mode would.
"""

from __future__ import annotations

import copy
import enum
from dataclasses import dataclass
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import Protocol, connectionDone
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe
from vscand.scan.model import Result
from vscand.scan.plan import ProbePlan
from vscand.scan.report import FinalState
from vscand.scan.tcp import READ_CAP, TCPPortScan, _classify, _failed_with, _LostKind, _State
from vscand.scan.tls import session_facts

log = Logger()

#: the quiet window is at least this many round-trip bounds (srtt + 4 rttvar)
QUIET_FACTOR = 4.0
#: lanes start this long after C0 connects (unless the NULL probe's first reply
#: did not hard-match earlier): a banner that hard-matches at once costs no lane
GRACE_FLOOR = 0.1
#: before the walk trusts a lane's silence, at least this long (and 4 round-trip bounds)
#: after C0 closed, unless the port served another connection while C0 was open: a
#: server that serves one connection at a time answers the next queued one then
SETTLE_FLOOR = 0.5
#: float slack when comparing a Clock's time with a computed deadline
_EPSILON = 1e-9


class EndKind(enum.Enum):
    """How a probe's reading ended (SPEC §4.4 outcomes, plus our connect failure)."""

    DEADLINE = "deadline"  # its wait ran out: totalwaitms, or the quiet window
    CAP = "cap"  # a read brought the buffer to READ_CAP
    EOF = "eof"
    RESET = "reset"
    UNREACHABLE = "unreachable"
    OTHER = "other"
    CONNECT_FAILED = "connect-failed"


_FROM_LOST = {
    _LostKind.EOF: EndKind.EOF,
    _LostKind.RESET: EndKind.RESET,
    _LostKind.UNREACHABLE: EndKind.UNREACHABLE,
    _LostKind.OTHER: EndKind.OTHER,
}


@dataclass(frozen=True)
class Read:
    """One read, matched: the buffer's length after it and the first line that hit."""

    length: int
    found: ServiceMatch | None

    @property
    def hard(self) -> bool:
        return self.found is not None and not self.found.soft


@dataclass(frozen=True)
class End:
    kind: EndKind
    elapsed_ms: float


class ProbeRecord:
    """What one probe produced on one connection: matched reads, then how it ended.

    A record does not depend on the port's state (the matcher is a pure function
    of probe and buffer), so it can be collected before the walk needs it.  A
    hard-matching read is the record's last event: faithful mode stops there.
    """

    def __init__(self, probe: Probe, *, reuse: bool = False, prefix: bytes = b"") -> None:
        self.probe = probe
        self.reuse = reuse
        self.buffer = bytearray(prefix)
        self.events: list[Read | End] = []
        #: dialled on the walk's demand (its connect failure is the port's)
        self.on_demand = False
        #: run by a speculative lane (before the walk asked for it)
        self.speculative = False
        self.lane: Lane | None = None

    @property
    def silent(self) -> bool:
        """Ended by its deadline without a byte: what a queued connection looks like."""
        return (
            not self.buffer
            and bool(self.events)
            and isinstance(self.events[-1], End)
            and self.events[-1].kind is EndKind.DEADLINE
        )

    @property
    def complete(self) -> bool:
        if not self.events:
            return False
        last = self.events[-1]
        return isinstance(last, End) or last.hard


class LaneBudget:
    """Speculative lanes open at once across a whole scan (file descriptors are finite).

    Only speculative lanes count: a probe the walk dials on demand is the port's
    one faithful connection.  A full budget means fewer lanes (slower), never an error.
    """

    def __init__(self, limit: int) -> None:
        self.limit = max(0, limit)
        self.in_use = 0

    def try_acquire(self) -> bool:
        if self.in_use >= self.limit:
            return False
        self.in_use += 1
        return True

    def release(self) -> None:
        self.in_use = max(0, self.in_use - 1)


class RoundTrip:
    """RFC 6298's smoothed round-trip time and variation, from this port's samples."""

    def __init__(self) -> None:
        self.srtt: float | None = None
        self.rttvar = 0.0

    def sample(self, seconds: float) -> None:
        seconds = max(0.0, seconds)
        if self.srtt is None:
            self.srtt = seconds
            self.rttvar = seconds / 2
            return
        self.rttvar = 0.75 * self.rttvar + 0.25 * abs(self.srtt - seconds)
        self.srtt = 0.875 * self.srtt + 0.125 * seconds

    def bound(self) -> float:
        """srtt + 4 rttvar (0 before any sample)."""
        if self.srtt is None:
            return 0.0
        return self.srtt + 4 * self.rttvar


class Lane(Protocol):
    """One connection of a fast port, running one probe into its record.

    ``C0`` (``first=True``) is the port's first connection: it runs the first
    probe (NULL) and, when the walk says so, the next probe on the same
    connection.  Other lanes run one probe each.  The lane owns its connect,
    timer and in-flight match and cancels them all in :meth:`stop`.
    """

    def __init__(self, scan: FastTCPPortScan, record: ProbeRecord, *, first: bool = False) -> None:
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
        if _failed_with(failure, defer.CancelledError) or self.closed:
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
        kind = _FROM_LOST[_classify(reason)]
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
        if now >= self.probe_start + self.record.probe.totalwaitms / 1000.0 - _EPSILON:
            self._expire()
            return
        quiet = self.scan.quiet_window(self.record.probe)
        if quiet is not None and now >= self.last_activity + quiet - _EPSILON:
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
        if now >= full - _EPSILON or (
            quiet is not None and now >= self.last_activity + quiet - _EPSILON
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
        if _failed_with(failure, defer.CancelledError):
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


class FastTCPPortScan(TCPPortScan):
    """A TCP port in fast mode: same inputs, same result dict as :class:`TCPPortScan`.

    The result-building half of the faithful machine (final-state override,
    ``build_service``, delivery, cancellation) is inherited unchanged; the
    reading half is replaced by lanes and the walk.
    """

    def __init__(self, *args: Any, budget: LaneBudget | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.budget = budget if budget is not None else LaneBudget(1 << 30)
        self.rtt = RoundTrip()
        self.clock = self._clock
        self.dial = self._dial
        self.match = self._match
        self._c0: Lane | None = None
        self._lanes: list[Lane] = []
        #: records of speculative lanes, by id(probe)
        self._spec: dict[int, ProbeRecord] = {}
        self._current: ProbeRecord | None = None
        self._cursor = 0
        self._walking = False
        self._again = False
        self._lanes_open = False
        self._grace: IDelayedCall | None = None
        self._first_record: ProbeRecord | None = None
        #: this phase's evidence on how the server takes parallel connections
        self._concurrent = False  # a lane was answered while C0 was open
        self._serial = False  # a lane's silence ended late: one connection at a time
        self._c0_closed_at: float | None = None
        self._settle: IDelayedCall | None = None

    # -- public ---------------------------------------------------------------

    def run(self) -> defer.Deferred[Result]:
        self._started = self._clock.seconds()
        self._start_phase(first=True)
        return self._done

    def quiet_window(self, probe: Probe) -> float | None:
        """Seconds of silence that end ``probe`` early; None: wait its full time."""
        floor = self._options.fast_wait
        if floor <= 0:
            return None
        quiet = max(floor, QUIET_FACTOR * self.rtt.bound())
        full = probe.totalwaitms / 1000.0
        return quiet if quiet < full else None

    # -- phases (plain, then maybe TLS) -----------------------------------------

    def _start_phase(self, *, first: bool) -> None:
        self._state = _State.CONNECTING
        probe = self._plan.next()
        self._probe = probe
        self._lanes_open = False
        self._concurrent = False
        self._serial = False
        self._c0_closed_at = None
        self._cancel_settle()
        if probe is None:
            # no probe at all: connect (the port scan), then NOMATCH as faithful mode
            probe_record = None
        else:
            probe_record = ProbeRecord(probe)
            probe_record.on_demand = True
        self._first_record = probe_record
        self._current = probe_record
        self._cursor = 0
        lane = Lane(self, probe_record or ProbeRecord(_NO_PROBE), first=True)
        self._c0 = lane
        self._lanes.append(lane)
        timeout = (
            self._options.ssl_connect_timeout if self._tunnel_ssl else self._options.connect_timeout
        )
        self._c0_first = first
        lane.dial(timeout, self._tunnel_ssl)

    def lane_gone(self, lane: Lane) -> bool:
        return self._state is _State.DONE or lane not in self._lanes

    # -- one connection at a time? --------------------------------------------------

    def c0_closed(self, lane: Lane) -> None:
        """C0 closed (either side): a one-at-a-time server turns to a queued lane now.
        Only this phase's C0 counts: the plain C0 of a port restarting through TLS is
        closed before the TLS phase starts, but Twisted reports its loss a turn later."""
        if lane is self._c0 and self._c0_closed_at is None:
            self._c0_closed_at = self._clock.seconds()

    def lane_answered(self, lane: Lane) -> None:
        """A lane got a byte or a close while running its probe: served, and if C0 is
        still open, served alongside it."""
        c0 = self._c0
        if self._concurrent or c0 is None or lane is c0 or not c0.connected or c0.closed:
            return
        self._concurrent = True
        for other in self._lanes:
            if other.watching:
                other.close()  # silence from a server that serves in parallel

    def late_event(self, lane: Lane) -> None:
        """A lane whose probe had ended in silence got a byte or a close: the server had
        not served it yet. From here on the walk goes one connection at a time, as
        faithful mode does: no lane's silence is an answer any more."""
        if self._state is _State.DONE or self._serial or lane not in self._lanes:
            return
        self._serial = True
        self._cancel_settle()
        current = self._current
        for record in self._spec.values():
            self._drop_lane(record)
        self._spec.clear()
        if current is not None and current.speculative and self._cursor == 0:
            # adopted by the walk but not read yet: ask again, alone
            self._drop_lane(current)
            self._current = self._dial_on_demand(current.probe)
            self._cursor = 0
        self._walk()

    def _settle_due(self) -> float | None:
        """When a lane's silence may be trusted (None: now)."""
        if self._concurrent or self._c0_closed_at is None:
            return None
        due = self._c0_closed_at + max(SETTLE_FLOOR, 4 * self.rtt.bound())
        return due if due > self._clock.seconds() + _EPSILON else None

    def _settled(self) -> None:
        self._settle = None
        self._walk()

    def _cancel_settle(self) -> None:
        if self._settle is not None and self._settle.active():
            self._settle.cancel()
        self._settle = None

    def lane_connected(self, lane: Lane) -> None:
        if self._tunnel_ssl and self._tls is None:
            self._tls = session_facts(lane.transport)
        if lane is not self._c0:
            lane.start(lane.record)
            return
        self._state = _State.READING
        if self._c0_first and self._excluded():
            self._finish(FinalState.EXCLUDED)
            return
        if self._first_record is None:
            self._finish(FinalState.NOMATCH)
            return
        lane.start(self._first_record)
        if self._first_record.probe.is_null:
            grace = max(GRACE_FLOOR, 2 * self.rtt.bound())
            quiet = self.quiet_window(self._first_record.probe)
            if quiet is not None:
                grace = min(grace, quiet)
            self._grace = self._clock.callLater(grace, self._open_lanes)
        else:
            self._open_lanes()

    def lane_connect_failed(self, lane: Lane, failure: Failure) -> None:
        if self._state is _State.DONE:
            return
        if lane is self._c0 and self._c0_first:
            self._teardown_lanes()
            # the first connection is the port scan: closed / filtered / tcpwrapped
            self._connect_failed(failure, True)
            return
        record = lane.record
        if record.on_demand:
            record.events.append(End(EndKind.CONNECT_FAILED, 0.0))
            self.record_updated(record)
            return
        # a speculative lane could not connect: not an answer; the walk dials again
        self._spec.pop(id(record.probe), None)
        if record is self._current:
            self._current = self._dial_on_demand(record.probe)
            self._cursor = 0
        self._fill_lanes()

    def _open_lanes(self) -> None:
        self._grace = None
        if self._state is _State.DONE or self._lanes_open:
            return
        self._lanes_open = True
        self._fill_lanes()

    # -- the walk (faithful mode's decisions over the records) -------------------

    def record_updated(self, record: ProbeRecord) -> None:
        if self._state is _State.DONE:
            return
        if record is self._current:
            self._walk()
        elif not record.on_demand and record.complete:
            self._fill_lanes()

    def _walk(self) -> None:
        if self._walking:
            self._again = True
            return
        self._walking = True
        try:
            while True:
                self._again = False
                self._walk_available()
                if not self._again:
                    break
        finally:
            self._walking = False
        if self._state is not _State.DONE:
            self._fill_lanes()

    def _walk_available(self) -> None:
        while self._state is not _State.DONE and self._current is not None:
            record = self._current
            if self._cursor >= len(record.events):
                return
            event = record.events[self._cursor]
            if isinstance(event, End) and record.speculative and record.silent:
                due = self._settle_due()
                if due is not None:
                    if self._settle is None:
                        self._settle = self._clock.callLater(
                            due - self._clock.seconds(), self._settled
                        )
                    return
            self._cursor += 1
            if isinstance(event, Read):
                self._walk_read(record, event)
            else:
                if record.lane is not None and record.lane.watching:
                    record.lane.close()  # its silence is the answer now: no more watching
                self._walk_end(record, event)

    def _walk_read(self, record: ProbeRecord, read: Read) -> None:
        self.tcpwrap_possible = False
        if read.found is not None and self._findings.apply(read.found, record.probe.name):
            self._hard_match()
            return
        if record is self._first_record and not self._lanes_open:
            # the banner is not a hard match: the other probes will be needed
            self._cancel_grace()
            self._lanes_open = True

    def _walk_end(self, record: ProbeRecord, end: End) -> None:
        probe = record.probe
        kind = end.kind
        if kind is EndKind.CONNECT_FAILED:
            self._finish(FinalState.INCOMPLETE)  # a later connection failed (SPEC §4.2)
            return
        if kind is EndKind.UNREACHABLE:
            self.tcpwrap_possible = False
            self._finish(FinalState.INCOMPLETE)
            return
        wrapped_window = (
            probe.is_null
            and self.tcpwrap_possible
            and not record.buffer
            and end.elapsed_ms < probe.tcpwrappedms
        )
        reuse = False
        if kind in (EndKind.DEADLINE, EndKind.CAP):
            if kind is EndKind.DEADLINE:
                self.tcpwrap_possible = False  # a read timeout
            if record.buffer:
                self._record_response(record.probe.name, bytes(record.buffer))
            lane = record.lane
            reuse = probe.is_null and lane is not None and lane is self._c0 and not lane.closed
        elif kind is EndKind.EOF:
            if record.buffer:
                self._record_response(record.probe.name, bytes(record.buffer))
                self.tcpwrap_possible = False
            if wrapped_window:
                self._finish(FinalState.TCPWRAPPED)
                return
        elif kind is EndKind.RESET and wrapped_window:
            self._finish(FinalState.TCPWRAPPED)
            return
        self._walk_next(record, reuse=reuse)

    def _walk_next(self, ended: ProbeRecord, *, reuse: bool) -> None:
        soft = self._findings.service if self._findings.soft_found else None
        probe = self._plan.next(soft)
        self._lanes_open = True
        self._cancel_grace()
        if probe is None:
            self._finish(
                FinalState.SOFTMATCHED if self._findings.soft_found else FinalState.NOMATCH
            )
            return
        self._probe = probe
        c0 = self._c0
        if reuse and c0 is not None:
            # the NULL probe's connection is reused; its response stays in front
            record = ProbeRecord(probe, reuse=True, prefix=bytes(ended.buffer))
            record.on_demand = True
            self._current, self._cursor = record, 0
            c0.start(record)
            return
        if c0 is not None and not c0.closed:
            c0.close()
        record_or_none = self._spec.pop(id(probe), None)
        if record_or_none is None:
            record_or_none = self._dial_on_demand(probe)
        record_or_none.on_demand = True
        self._current, self._cursor = record_or_none, 0

    def _dial_on_demand(self, probe: Probe) -> ProbeRecord:
        record = ProbeRecord(probe)
        record.on_demand = True
        self._dial_lane(record)
        return record

    def _dial_lane(self, record: ProbeRecord) -> Lane:
        lane = Lane(self, record)
        self._lanes.append(lane)
        timeout = (
            self._options.ssl_connect_timeout if self._tunnel_ssl else self._options.connect_timeout
        )
        lane.dial(timeout, self._tunnel_ssl)
        return lane

    def _fill_lanes(self) -> None:
        """Start speculative lanes for the plan's next probes, up to ``fast_lanes`` at once."""
        if self._state is _State.DONE or not self._lanes_open or self._serial:
            return
        limit = self._options.fast_lanes
        if self._findings.soft_found:
            self._drop_pruned()
        # a watched lane (silent, kept open) still holds its place
        busy = sum(1 for lane in self._lanes if lane.budgeted and not lane.closed)
        if busy >= limit:
            return
        predicted = copy.copy(self._plan)
        soft = self._findings.service if self._findings.soft_found else None
        # while the walk is on the first probe, the next one may go on C0 (reuse):
        # its fresh-connection answer might not be the one faithful mode reads
        skip = self._current is self._first_record
        current = self._current
        while busy < limit:
            probe = predicted.next(soft)
            if probe is None:
                return
            if skip:
                skip = False
                continue
            if id(probe) in self._spec or (current is not None and current.probe is probe):
                continue
            if not self.budget.try_acquire():
                return
            record = ProbeRecord(probe)
            record.speculative = True
            self._spec[id(probe)] = record
            lane = self._dial_lane(record)
            lane.budgeted = True
            busy += 1

    def _drop_pruned(self) -> None:
        """After a soft match: close the lanes of probes the pruned plan no longer reaches
        (their records would never be read; their places go to probes it does)."""
        soft = self._findings.service
        walk = copy.copy(self._plan)
        needed: set[int] = set()
        while (probe := walk.next(soft)) is not None:
            needed.add(id(probe))
        for key, record in list(self._spec.items()):
            if key in needed or record is self._current:
                continue
            del self._spec[key]
            self._drop_lane(record)

    def _drop_lane(self, record: ProbeRecord) -> None:
        """Stop the lane running *record* and forget it (the walk will not read it)."""
        lane = record.lane
        if lane is not None:
            lane.stop()
            if lane in self._lanes:
                self._lanes.remove(lane)

    # -- ending -----------------------------------------------------------------

    def _hard_match(self) -> None:
        if self._findings.service == "ssl" and not self._tunnel_ssl:
            self._restart_through_tls()
            return
        self._finish(FinalState.HARDMATCHED)

    def _restart_through_tls(self) -> None:
        """A hard ``ssl`` in plain text: the whole fast procedure again, inside TLS (SPEC §5.2)."""
        self._teardown_lanes()
        self._findings.reset()
        self._fingerprint = None
        self._tunnel_ssl = True
        self._plan = ProbePlan(
            self._db, "TCP", self.task.port, self._options.intensity, tunnel_ssl=True
        )
        self._start_phase(first=False)

    def _cancel_grace(self) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None

    def _teardown_lanes(self) -> None:
        self._cancel_grace()
        self._cancel_settle()
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.stop()
        self._spec.clear()
        self._c0 = None
        self._current = None

    def _teardown(self) -> None:
        self._teardown_lanes()
        super()._teardown()

    def log_match_failure(self, failure: Failure) -> None:
        log.failure(
            "matching failed on {address}:{port}",
            failure,
            address=self.task.address,
            port=self.task.port,
        )


#: placeholder probe for a C0 that runs no probe (a probe file without any TCP probe)
_NO_PROBE = Probe(protocol="TCP", name="", string=b"", filename="", lineno=0)
