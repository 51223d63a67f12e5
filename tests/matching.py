"""The match function the port machines' tests give a machine: immediate, or held."""

from __future__ import annotations

from twisted.internet import defer

from vscand.probes.matcher import Matcher, ServiceMatch
from vscand.probes.model import Probe


class MatchGate:
    """Matches with *matcher*. With ``slow=True`` matches do not complete by themselves:
    each waits in ``pending`` until the test calls ``release()``, as a match on the thread
    pool would."""

    def __init__(self, matcher: Matcher, slow: bool = False) -> None:
        self.matcher = matcher
        self.slow = slow
        self.pending: list[tuple[defer.Deferred[ServiceMatch | None], Probe, bytes]] = []

    def match(self, probe: Probe, buffer: bytes) -> defer.Deferred[ServiceMatch | None]:
        if not self.slow:
            return defer.succeed(self.matcher.match(probe, buffer))
        d: defer.Deferred[ServiceMatch | None] = defer.Deferred()
        self.pending.append((d, probe, buffer))
        return d

    def release(self) -> bytes:
        """Complete the oldest pending match; returns the buffer it matched."""
        d, probe, buffer = self.pending.pop(0)
        d.callback(self.matcher.match(probe, buffer))
        return buffer
