"""One attempt at a job: an explicit state machine.

A worker that takes a job entry starts an *attempt* (a fresh id that fences every write:
:mod:`vscand.queue.results`). The attempt is in exactly one state (:func:`diagram` draws
the machine from :data:`TRANSITIONS`; ``python -m vscand.daemon.attempt`` prints it):

* ``RUNNING``: ports are scanned and their results written.
* ``CANCELLED``: a cancel was requested; the scan stops, the results so far are kept
  and the job ends ``cancelled`` (through ``FINISHING``).
* ``FINISHING``: the results are written; the final status and the acknowledgement
  are under way. Renewal stops (a lease lost now is absorbed: the end is fenced anyway).
* ``LOST``: another worker owns the job (its lease was taken over, or a write was fenced
  off). Nothing more is written and the entry is never acknowledged here.
* ``RELEASED``: the worker is stopping and hands the job back unfinished; the ports it
  interrupted are not stored.

``LOST`` and ``RELEASED`` are final: they absorb every late input. An input a state has
no row for (``finish`` after ``LOST``, a second ``finish``) is a bug:
:class:`IllegalTransition`.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from typing import Any

from twisted.internet import defer

from vscand.jobs.schema import Job
from vscand.queue.consumer import Delivery
from vscand.scan.scheduler import Scheduler


class AttemptState(enum.Enum):
    RUNNING = "running"
    CANCELLED = "cancelled"
    FINISHING = "finishing"
    LOST = "lost"
    RELEASED = "released"


class AttemptInput(enum.Enum):
    CANCEL = "cancel"  # a cancel was requested
    FINISH = "finish"  # the results are written: end the job
    LEASE_LOST = "lease_lost"  # a renewal found the entry taken over
    FENCED = "fenced"  # a fenced write (result, status, split, ack) was refused
    RELEASE = "release"  # shutdown: hand the job back


class IllegalTransition(RuntimeError):
    """An input the attempt's state has no transition for."""


_S, _I = AttemptState, AttemptInput
#: (state, input) → next state; anything missing is illegal
TRANSITIONS: dict[tuple[AttemptState, AttemptInput], AttemptState] = {
    (_S.RUNNING, _I.CANCEL): _S.CANCELLED,
    (_S.RUNNING, _I.FINISH): _S.FINISHING,
    (_S.RUNNING, _I.LEASE_LOST): _S.LOST,
    (_S.RUNNING, _I.FENCED): _S.LOST,
    (_S.RUNNING, _I.RELEASE): _S.RELEASED,
    (_S.CANCELLED, _I.CANCEL): _S.CANCELLED,
    (_S.CANCELLED, _I.FINISH): _S.FINISHING,
    (_S.CANCELLED, _I.LEASE_LOST): _S.LOST,
    (_S.CANCELLED, _I.FENCED): _S.LOST,
    (_S.CANCELLED, _I.RELEASE): _S.RELEASED,
    (_S.FINISHING, _I.CANCEL): _S.FINISHING,
    (_S.FINISHING, _I.LEASE_LOST): _S.FINISHING,
    (_S.FINISHING, _I.FENCED): _S.LOST,
    (_S.FINISHING, _I.RELEASE): _S.RELEASED,
    **{(_S.LOST, i): _S.LOST for i in _I if i is not _I.FINISH},
    **{(_S.RELEASED, i): _S.RELEASED for i in _I if i is not _I.FINISH},
}
#: states in which the attempt may write nothing more and never acknowledges its entry
STOPPED = frozenset({_S.LOST, _S.RELEASED})


@dataclass(eq=False)
class JobAttempt:
    """A job being run by this worker, and where its attempt stands."""

    delivery: Delivery
    job: Job
    attempt: str
    started: float
    state: AttemptState = AttemptState.RUNNING
    scheduler: Scheduler | None = None
    #: fired when the attempt has ended, whatever its end (drain waits on it)
    done: defer.Deferred[None] = field(default_factory=defer.Deferred)
    ports_done: int = 0
    ports_total: int = 0  # known once the targets are planned
    writes: list[defer.Deferred[Any]] = field(default_factory=list)

    def _input(self, what: AttemptInput) -> AttemptState:
        try:
            self.state = TRANSITIONS[(self.state, what)]
        except KeyError:
            raise IllegalTransition(
                f"job {self.job.id}: {what.value} while {self.state.value}"
            ) from None
        return self.state

    def cancel(self) -> None:
        if self._input(AttemptInput.CANCEL) is AttemptState.CANCELLED:
            self._stop_scan()

    def finish(self) -> None:
        self._input(AttemptInput.FINISH)

    def lease_lost(self) -> None:
        if self._input(AttemptInput.LEASE_LOST) is AttemptState.LOST:
            self._stop_scan()

    def fenced(self) -> None:
        self._input(AttemptInput.FENCED)

    def release(self) -> None:
        self._input(AttemptInput.RELEASE)
        self._stop_scan()

    @property
    def stopped(self) -> bool:
        """Lost or released: write nothing more, never acknowledge."""
        return self.state in STOPPED

    @property
    def finishing(self) -> bool:
        return self.state is AttemptState.FINISHING

    @property
    def was_cancelled(self) -> bool:
        return self.state is AttemptState.CANCELLED

    def _stop_scan(self) -> None:
        if self.scheduler is not None:
            self.scheduler.stop()


def diagram() -> str:
    """The machine as a Mermaid ``stateDiagram-v2``, generated from :data:`TRANSITIONS`
    (inputs a state absorbs are left out): DESIGN.md holds this text."""
    edges: dict[tuple[AttemptState, AttemptState], list[str]] = {}
    for (state, what), target in TRANSITIONS.items():
        if target is not state:
            edges.setdefault((state, target), []).append(what.value)
    lines = ["stateDiagram-v2", f"    [*] --> {AttemptState.RUNNING.name}"]
    for (state, target), inputs in edges.items():
        lines.append(f"    {state.name} --> {target.name}: {', '.join(inputs)}")
    lines.append(f"    {AttemptState.FINISHING.name} --> [*]: acknowledged")
    lines += [f"    {state.name} --> [*]" for state in AttemptState if state in STOPPED]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    print(diagram(), end="")
