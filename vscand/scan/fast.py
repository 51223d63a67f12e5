"""Fast mode: the faithful answer for a TCP port, sooner (issue 7; DESIGN.md "Fast mode").

Faithful mode (``tcp.py``) runs Nmap's per-port algorithm: one probe at a time,
each waiting out its ``totalwaitms``.  Fast mode gets the same answer by

1. **probing in parallel**: while the NULL probe waits on the first connection
   (``C0``), *lanes* — one new connection per probe, at most
   ``ScanOptions.fast_lanes`` per port — send the next probes of the faithful
   plan, each on its own connection, and record what each one produced: the
   matched reads, then how the probe ended (:class:`ProbeRecord`);
2. **walking the faithful plan over those records**: the port walk
   (:mod:`vscand.scan.walk`, faithful mode's decisions) fed with records instead of
   live sockets, each record's events as they arrive, so the port ends as soon as
   every probe *before* the one where faithful mode would stop has its full answer;
3. **no shortened waits** by default: every probe, the NULL probe first, waits its
   whole ``totalwaitms``, so the answer is faithful mode's by construction
   (DESIGN.md, "Fast mode: the guarantee"). The opt-in quiet window
   (``fast_wait`` > 0) ends a probe once its connection has been quiet for
   ``Q = max(fast_wait, QUIET_FACTOR x (srtt + 4 rttvar))``: sooner, and outside the
   guarantee (a late banner, a pause inside a reply, a close on the service's own
   timer are read differently);
4. **one connection at a time**: a server that takes the next connection only when
   the current one closes leaves lanes connected and silent in its accept queue; a
   lane's silence is trusted only as :class:`~vscand.scan.records.ServingEvidence`
   allows, and a late byte or close turns the port sequential.

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
from typing import Any

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.logger import Logger
from twisted.python.failure import Failure

from vscand.probes.model import Probe
from vscand.scan.findings import FinalState
from vscand.scan.lane import Lane, LaneState
from vscand.scan.model import Result
from vscand.scan.records import End, LaneBudget, ProbeRecord, Read, RoundTrip, ServingEvidence
from vscand.scan.tcp import TCPPortScan, _State
from vscand.scan.tls import session_facts
from vscand.scan.walk import EndKind

log = Logger()

#: lanes start this long after C0 connects (unless the NULL probe's first reply
#: did not hard-match earlier): a banner that hard-matches at once costs no lane
GRACE_FLOOR = 0.1


class FastTCPPortScan(TCPPortScan):
    """A TCP port in fast mode: same inputs, same result dict as :class:`TCPPortScan`,
    whose walk and ending it keeps; its one connection is replaced by lanes."""

    _log = log

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
        self._serving = ServingEvidence(self._clock, self.rtt)

    # -- public ---------------------------------------------------------------

    def run(self) -> defer.Deferred[Result]:
        self._started = self._clock.seconds()
        self._start_phase(self._walk.plan.next(), first=True)
        return self._done

    def quiet_window(self, probe: Probe) -> float | None:
        return self.rtt.quiet_window(self._options.fast_wait, probe)

    # -- phases (plain, then maybe TLS) -----------------------------------------

    def _start_phase(self, probe: Probe | None, *, first: bool) -> None:
        self._enter(_State.CONNECTING)
        self._probe = probe
        self._lanes_open = False
        self._serving.reset()
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
        self._c0_first = first
        lane.dial(self._connect_timeout(), self._walk.tunnel_ssl)

    def lane_gone(self, lane: Lane) -> bool:
        return self._state is _State.DONE or lane not in self._lanes

    # -- one connection at a time? --------------------------------------------------

    def c0_closed(self, lane: Lane) -> None:
        """C0 closed (either side): a one-at-a-time server turns to a queued lane now.
        Only this phase's C0 counts: the plain C0 of a port restarting through TLS is
        closed before the TLS phase starts, but Twisted reports its loss a turn later."""
        if lane is self._c0:
            self._serving.c0_closed()

    def lane_answered(self, lane: Lane) -> None:
        """A lane got a byte or a close while running its probe: served, and if C0 is
        still open, served alongside it."""
        c0 = self._c0
        serving = self._serving
        if serving.concurrent or c0 is None or lane is c0 or not c0.is_open:
            return
        serving.concurrent = True
        for other in self._lanes:
            if other.state is LaneState.WATCHING:
                other.close()  # silence from a server that serves in parallel

    def late_event(self, lane: Lane) -> None:
        """A lane whose probe had ended in silence got a byte or a close: the server had
        not served it yet. From here on the walk goes one connection at a time, as
        faithful mode does: no lane's silence is an answer any more."""
        if self._state is _State.DONE or self._serving.serial or lane not in self._lanes:
            return
        self._serving.serial = True
        self._serving.cancel()
        current = self._current
        for record in self._spec.values():
            self._drop_lane(record)
        self._spec.clear()
        if current is not None and current.speculative and self._cursor == 0:
            # adopted by the walk but not read yet: ask again, alone
            self._drop_lane(current)
            self._current = self._dial_on_demand(current.probe)
            self._cursor = 0
        self._advance()

    def lane_connected(self, lane: Lane) -> None:
        if self._walk.tunnel_ssl and self._tls is None:
            self._tls = session_facts(lane.transport)
        if lane is not self._c0:
            lane.start(lane.record)
            return
        self._enter(_State.READING)
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
            self._port_scan_failed(failure)
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
            self._advance()
        elif not record.on_demand and record.complete:
            self._fill_lanes()

    def _advance(self) -> None:
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
                due = self._serving.settle_due()
                if due is not None:
                    self._serving.wait(due, self._advance)
                    return
            self._cursor += 1
            if isinstance(event, Read):
                self._walk_read(record, event)
            else:
                if record.lane is not None and record.lane.state is LaneState.WATCHING:
                    record.lane.close()  # its silence is the answer now: no more watching
                self._walk_end(record, event)

    def _walk_read(self, record: ProbeRecord, read: Read) -> None:
        self._walk.heard()
        decision = self._walk.matched(record.probe, read.found)
        if decision is not None:
            self._decide(decision)
            return
        if record is self._first_record and not self._lanes_open:
            # the banner is not a hard match: the other probes will be needed
            self._cancel_grace()
            self._lanes_open = True

    def _walk_end(self, record: ProbeRecord, end: End) -> None:
        lane = record.lane
        reusable = lane is not None and lane is self._c0 and not lane.closed
        decision = self._walk.ended(
            record.probe, end.kind, bytes(record.buffer), end.elapsed_ms, reusable=reusable
        )
        # the first probe is over: the walk will need the next ones
        self._lanes_open = True
        self._cancel_grace()
        self._decide(decision)

    def _send_probe(self, probe: Probe, *, reuse: bool) -> None:
        ended = self._current
        assert ended is not None
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
        lane.dial(self._connect_timeout(), self._walk.tunnel_ssl)
        return lane

    def _fill_lanes(self) -> None:
        """Start speculative lanes for the plan's next probes, up to ``fast_lanes`` at once."""
        if self._state is _State.DONE or not self._lanes_open or self._serving.serial:
            return
        limit = self._options.fast_lanes
        if self._walk.findings.soft_found:
            self._drop_pruned()
        # a watched lane (silent, kept open) still holds its place
        busy = sum(1 for lane in self._lanes if lane.budgeted and not lane.closed)
        if busy >= limit:
            return
        predicted = copy.copy(self._walk.plan)
        soft = self._walk.soft_service()
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
        soft = self._walk.findings.service
        walk = copy.copy(self._walk.plan)
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

    def _restart_in_tunnel(self, probe: Probe | None) -> None:
        """A hard ``ssl`` in plain text: the whole fast procedure again, inside TLS (SPEC §5.2)."""
        self._teardown_lanes()
        self._start_phase(probe, first=False)

    def _cancel_grace(self) -> None:
        if self._grace is not None and self._grace.active():
            self._grace.cancel()
        self._grace = None

    def _teardown_lanes(self) -> None:
        self._cancel_grace()
        self._serving.cancel()
        lanes, self._lanes = self._lanes, []
        for lane in lanes:
            lane.stop()
        self._spec.clear()
        self._c0 = None
        self._current = None

    def _teardown(self) -> None:
        self._teardown_lanes()
        super()._teardown()


#: placeholder probe for a C0 that runs no probe (a probe file without any TCP probe)
_NO_PROBE = Probe(protocol="TCP", name="", string=b"", filename="", lineno=0)
