"""What fast mode's lanes record for the walk: one probe's matched reads and its end.

A record does not depend on the port's state (the matcher is a pure function of probe
and buffer), so a lane can collect it before the walk needs it. Also here: the budget of
speculative lanes across a scan, the port's round-trip estimate (RFC 6298) and what the
walk has learnt of how the server takes parallel connections.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from twisted.internet.interfaces import IDelayedCall, IReactorTime

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe
from vscand.scan.ending import cancel_call
from vscand.scan.reading import CLOCK_SLACK
from vscand.scan.walk import QUIET_FACTOR, EndKind

if TYPE_CHECKING:
    from vscand.scan.lane import Lane


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

    def quiet_window(self, fast_wait: float, probe: Probe) -> float | None:
        """Seconds of silence that end ``probe`` early (opt-in ``fast_wait`` > 0: at least
        that, and QUIET_FACTOR round-trip bounds); None: wait its full time."""
        if fast_wait <= 0:
            return None
        quiet = max(fast_wait, QUIET_FACTOR * self.bound())
        full = probe.totalwaitms / 1000.0
        return quiet if quiet < full else None


class DatagramQuietWindow:
    """Fast mode over UDP (DESIGN.md "Fast mode"): probes stay one at a time; with the
    opt-in ``fast_wait`` > 0 a probe's wait ends a quiet window after its last datagram,
    ``max(fast_wait, QUIET_FACTOR x`` the slowest first reply seen on the port``)``."""

    def __init__(self, fast_wait: float) -> None:
        self._fast_wait = fast_wait
        #: the slowest first reply to a probe seen on this port (seconds)
        self.reply_latency = 0.0

    def window(self) -> float | None:
        if self._fast_wait <= 0:
            return None
        return max(self._fast_wait, QUIET_FACTOR * self.reply_latency)

    def probe_wait(self, probe: Probe) -> float:
        """How long a probe waits: its totalwaitms, at most the quiet window."""
        full = probe.totalwaitms / 1000.0
        quiet = self.window()
        return full if quiet is None else min(full, quiet)

    def heard(
        self, timer: IDelayedCall | None, probe: Probe, started: float, *, now: float, first: bool
    ) -> None:
        """A datagram for the probe that started at ``started``: learn the reply time
        (``first``: the probe's first reply) and move ``timer`` to a window from now."""
        if first:
            self.reply_latency = max(self.reply_latency, now - started)
        quiet = self.window()
        if quiet is None or timer is None or not timer.active():
            return
        end = min(started + probe.totalwaitms / 1000.0, now + quiet)
        timer.reset(max(0.0, end - now))


#: before the walk trusts a lane's silence, at least this long (and 4 round-trip bounds)
#: after C0 closed, unless the port served another connection while C0 was open: a
#: server that serves one connection at a time answers the next queued one then
SETTLE_FLOOR = 0.5


class ServingEvidence:
    """One phase's evidence on how the server takes parallel connections.

    Two facts, each learnt once: ``concurrent`` (a lane was answered while C0 was
    open: a lane's silence is its answer) and ``serial`` (a silent lane got a byte or
    a close late: the server takes one connection at a time, the walk stops
    speculating). Until one is known, a silent lane is trusted only
    :meth:`settle_due` after C0 closed; the wait for that is a timer this object owns.
    """

    def __init__(self, clock: IReactorTime, rtt: RoundTrip) -> None:
        self._clock = clock
        self._rtt = rtt
        self.concurrent = False
        self.serial = False
        self._c0_closed_at: float | None = None
        self._settle: IDelayedCall | None = None

    def reset(self) -> None:
        """A new phase (plain, then TLS): nothing known."""
        self.concurrent = False
        self.serial = False
        self._c0_closed_at = None
        self.cancel()

    def c0_closed(self) -> None:
        if self._c0_closed_at is None:
            self._c0_closed_at = self._clock.seconds()

    def settle_due(self) -> float | None:
        """When a lane's silence may be trusted (None: now)."""
        if self.concurrent or self._c0_closed_at is None:
            return None
        due = self._c0_closed_at + max(SETTLE_FLOOR, 4 * self._rtt.bound())
        return due if due > self._clock.seconds() + CLOCK_SLACK else None

    def wait(self, due: float, then: Callable[[], None]) -> None:
        """Call ``then`` at ``due`` (once: a wait already running stands)."""
        if self._settle is None:
            self._settle = self._clock.callLater(due - self._clock.seconds(), self._settled, then)

    def _settled(self, then: Callable[[], None]) -> None:
        self._settle = None
        then()

    def cancel(self) -> None:
        cancel_call(self._settle)
        self._settle = None
