"""One probe's reads: the READING state shared by faithful TCP (one connection), fast
mode's lanes (one per probe) and UDP (one datagram per read). SPEC §4.3: every read is
matched, whole buffer, in order; the probe ends at its deadline, at the read cap, or when
the connection ends (EOF, RESET...), but what was read before is matched first.

States::

    READING --bytes--> MATCHING --matched, nothing waiting--> READING
       |                  |  (deadline, close or cap: held until the matching is done)
       '-- deadline/close-'--> ENDED <-- hard match

A :class:`ProbeReading` owns what its state holds: the probe's wait timer, the match in
flight and the reads still to match. :meth:`ProbeReading.stop` (or any end) cancels them;
once ENDED it absorbs late events. Its owner hears of each matched read and of the end.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from typing import Protocol

from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall, IReactorTime
from twisted.python.failure import Failure

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe
from vscand.scan.ending import MatchFunction, cancel_call, cancel_deferred
from vscand.scan.walk import READ_CAP, EndKind

#: float slack when comparing a Clock's time with a computed deadline
CLOCK_SLACK = 1e-9


class ReadingOwner(Protocol):
    """What a :class:`ProbeReading` tells its owner."""

    def read_matched(self, reading: ProbeReading, found: ServiceMatch | None, length: int) -> None:
        """A read of ``length`` bytes was matched (hard: the reading has ended)."""

    def read_waiting(self, reading: ProbeReading) -> None:
        """A read was matched and the probe goes on reading."""

    def reading_ended(self, reading: ProbeReading, kind: EndKind) -> None:
        """The probe's reading ended (not by a hard match)."""

    def log_match_failure(self, failure: Failure) -> None: ...


class ReadState(enum.Enum):
    READING = "reading"
    MATCHING = "matching"
    ENDED = "ended"


class ProbeReading:
    """One probe's reads on one connection, from its start to its end."""

    def __init__(
        self,
        probe: Probe,
        buffer: bytearray,
        *,
        clock: IReactorTime,
        match: MatchFunction,
        owner: ReadingOwner,
        quiet_window: Callable[[Probe], float | None] | None = None,
    ) -> None:
        self.probe = probe
        #: the probe's response (after a reused connection's, which stays in front)
        self.buffer = buffer
        self.clock = clock
        self._match = match
        self._owner = owner
        self.state = ReadState.READING
        self.started = clock.seconds()
        #: fast mode's lanes: the probe's wait may end after a quiet window (opt-in,
        #: ``fast_wait`` > 0; the function says None while it does not apply)
        self._quiet_window = quiet_window
        self.last_activity = self.started
        # what the state owns
        self.timer: IDelayedCall | None = None
        self._matching: defer.Deferred[ServiceMatch | None] | None = None
        self._pending: list[int] = []  # buffer lengths still to be matched, in order
        # what ends the probe once the matching is done
        self.capped = False
        self._expired = False
        self._lost: EndKind | None = None

    # -- the wait ---------------------------------------------------------------------

    def arm(self, wait: float | None = None) -> None:
        """Start the probe's wait: ``wait`` seconds, by default its ``totalwaitms``."""
        clock = self.clock
        probe = self.probe
        if self._quiet_window is None:
            seconds = probe.totalwaitms / 1000.0 if wait is None else wait
            self.timer = clock.callLater(seconds, self._timer_fired)
            return
        at = self.started + probe.totalwaitms / 1000.0
        quiet = self._quiet_window(probe)
        if quiet is not None:
            at = min(at, self.last_activity + quiet)
        self.timer = clock.callLater(max(0.0, at - clock.seconds()), self._timer_fired)

    def _timer_fired(self) -> None:
        self.timer = None
        if self.state is ReadState.ENDED:
            return
        if self._quiet_window is None or self._waited_out():
            self.expire()
            return
        if self._quiet():
            # confirm after one reactor turn: bytes already waiting in the socket are
            # read first, so a busy reactor cannot make a prompt reply look late
            self.timer = self.clock.callLater(0, self._confirm_quiet)
            return
        self.arm()

    def _confirm_quiet(self) -> None:
        self.timer = None
        if self.state is ReadState.ENDED:
            return
        if self._waited_out() or self._quiet():
            self.expire()
        else:
            self.arm()

    def _waited_out(self) -> bool:
        """The probe's whole ``totalwaitms`` has passed."""
        full = self.started + self.probe.totalwaitms / 1000.0
        return self.clock.seconds() >= full - CLOCK_SLACK

    def _quiet(self) -> bool:
        """The connection has been quiet for the window."""
        assert self._quiet_window is not None
        quiet = self._quiet_window(self.probe)
        return (
            quiet is not None and self.clock.seconds() >= self.last_activity + quiet - CLOCK_SLACK
        )

    def expire(self) -> None:
        """The probe's wait ran out: it ends once the reads before it are matched."""
        if self.state is ReadState.MATCHING:
            self._expired = True
            return
        self._end(EndKind.DEADLINE)

    # -- inputs -----------------------------------------------------------------------

    def accepts(self) -> bool:
        """Whether another read is taken (Nmap reads no more once the cap is reached)."""
        return self.state is not ReadState.ENDED and not self.capped

    def idle(self) -> bool:
        """Whether a read is outstanding with nothing being matched (UDP reads one
        datagram at a time: the next only then)."""
        return self.state is ReadState.READING and not self.capped

    def take(self, data: bytes) -> None:
        """Bytes arrived for the probe (check :meth:`accepts` first)."""
        self.buffer += data
        if len(self.buffer) >= READ_CAP:
            self.capped = True
        self._pending.append(len(self.buffer))
        if self._matching is None:
            self._match_next()

    def lose(self, kind: EndKind) -> None:
        """The connection ended: what arrived before the close is matched first."""
        if self.state is ReadState.ENDED:
            return
        if self.state is ReadState.MATCHING:
            self._lost = kind
            return
        self._end(kind)

    def stop(self) -> None:
        """Leave the state without an end of its own: cancel all it owns."""
        self.state = ReadState.ENDED
        cancel_call(self.timer)
        self.timer = None
        self._pending.clear()
        matching, self._matching = self._matching, None
        cancel_deferred(matching)

    # -- matching ---------------------------------------------------------------------

    def _match_next(self) -> None:
        self.state = ReadState.MATCHING
        length = self._pending.pop(0)
        d = self._match(self.probe, bytes(self.buffer[:length]))
        self._matching = d
        d.addCallbacks(lambda found: self._matched(found, length), self._match_failed)

    def _match_failed(self, failure: Failure) -> None:
        if isinstance(failure.value, defer.CancelledError):
            return
        self._owner.log_match_failure(failure)
        self._matched(None, len(self.buffer))

    def _matched(self, found: ServiceMatch | None, length: int) -> None:
        self._matching = None
        if self.state is ReadState.ENDED:
            return
        if found is not None and not found.soft:
            # a hard match: this probe's answer is complete
            self._leave()
            self._owner.read_matched(self, found, length)
            return
        self._owner.read_matched(self, found, length)
        if self._pending:
            self._owner.read_waiting(self)
            if self.state is ReadState.MATCHING and self._matching is None and self._pending:
                self._match_next()
            return
        self.state = ReadState.READING
        if self._lost is not None:
            self._end(self._lost)
        elif self._expired or self.capped:
            self._end(EndKind.DEADLINE if self._expired else EndKind.CAP)
        else:
            self._owner.read_waiting(self)

    def _leave(self) -> None:
        self.state = ReadState.ENDED
        cancel_call(self.timer)
        self.timer = None

    def _end(self, kind: EndKind) -> None:
        self._leave()
        self._owner.reading_ended(self, kind)
