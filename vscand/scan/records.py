"""What fast mode's lanes record for the walk: one probe's matched reads and its end.

A record does not depend on the port's state (the matcher is a pure function of probe
and buffer), so a lane can collect it before the walk needs it. Also here: the budget of
speculative lanes across a scan, and the port's round-trip estimate (RFC 6298).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from vscand.probes.matcher import ServiceMatch
from vscand.probes.model import Probe
from vscand.scan.walk import EndKind

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
