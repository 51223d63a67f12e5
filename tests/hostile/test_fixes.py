"""Deterministic tests of the fixes the hostile-target suite led to (no timing).

* A UDP flood could hold the reactor in one ``doRead``: Twisted's loop stops after
  256 KiB, and empty datagrams count for nothing. ``BoundedReadUDPPort`` takes a
  fixed number of datagrams per turn (real sockets on loopback, driven by hand).
* A script receive that timed out raised Twisted's ``defer.TimeoutError`` (what
  ``addTimeout`` raises) instead of ``ExchangeTimeout``: one rpc-grind worker
  waiting on a lying record mark failed the whole script instead of stopping that
  worker, as NSE's does (``Clock``; then the grinder through a real ``Exchange``
  against a real lying server).
* ``ReactorLagMonitor.worst`` keeps the largest sample after the ring buffer forgot it.
"""

from __future__ import annotations

import select
import socket
from pathlib import Path
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from tests.hostile.servers import HostilePool
from tests.reactor_thread import ReactorThread
from vscand.rpc.programs import load_rpc_programs
from vscand.scan.datagram import DATAGRAMS_PER_READ, BoundedReadUDPPort, ConnectedUDPPort
from vscand.scan.lag import ReactorLagMonitor
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin.rpc import RpcGrind
from vscand.scripts.exchange import (
    ExchangeTimeout,
    ReactorExchange,
    _TCPConnection,
    _UDPConnection,
)


class Counter(DatagramProtocol):
    def __init__(self) -> None:
        self.datagrams: list[bytes] = []

    def datagramReceived(self, datagram: bytes, addr: Any) -> None:
        self.datagrams.append(datagram)


def _queued(sock: socket.socket) -> bool:
    return bool(select.select([sock], [], [], 5)[0])


@pytest.mark.parametrize("payload", [b"", b"x"], ids=["empty", "one-byte"])
def test_one_read_takes_a_bounded_number_of_datagrams(payload: bytes) -> None:
    reactor = MemoryReactorClock()
    counter = Counter()
    port = BoundedReadUDPPort(0, counter, "127.0.0.1", reactor=reactor)  # type: ignore[no-untyped-call]
    port.startListening()  # type: ignore[no-untyped-call]
    sender = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        sender.connect(("127.0.0.1", port.getHost().port))  # type: ignore[no-untyped-call]
        flood = 3 * DATAGRAMS_PER_READ
        for _ in range(flood):
            sender.send(payload)
        assert _queued(port.socket)  # type: ignore[attr-defined]
        port.doRead()
        # one turn: a fixed number, whatever the datagrams weigh (stock Twisted reads
        # until 256 KiB: every one of these, and for as long as a flood keeps coming)
        assert len(counter.datagrams) == DATAGRAMS_PER_READ
        while len(counter.datagrams) < flood and _queued(port.socket):  # type: ignore[attr-defined]
            before = len(counter.datagrams)
            port.doRead()
            assert len(counter.datagrams) - before <= DATAGRAMS_PER_READ
        assert counter.datagrams == [payload] * flood  # nothing lost on the way
    finally:
        sender.close()
        port.stopListening()  # type: ignore[no-untyped-call]
        reactor.advance(0)


def test_the_scan_and_script_sockets_are_bounded_ports() -> None:
    assert issubclass(ConnectedUDPPort, BoundedReadUDPPort)


@pytest.mark.parametrize("kind", [_TCPConnection, _UDPConnection])
def test_a_receive_that_times_out_is_an_exchange_timeout(kind: Any) -> None:
    clock = Clock()
    conn = kind(clock, 1 << 20)
    d = defer.Deferred.fromCoroutine(conn.receive(2.0))
    clock.advance(2.0)
    failure = SynchronousTestCase().failureResultOf(d, ExchangeTimeout)
    assert "within 2 s" in failure.getErrorMessage()
    assert not clock.getDelayedCalls()


def test_a_worker_stuck_on_a_lying_record_mark_stops_alone(tmp_path: Path) -> None:
    """rpc-grind against a real liar (the first call of each connection answered, then
    a lie per call, one of which never completes): the script ends without an error."""
    pool = HostilePool(tmp_path)
    thread = ReactorThread()
    try:
        endpoint = pool.rpc_liar_tcp()
        port = int(endpoint.rsplit(":", 1)[1])
        programs = load_rpc_programs(None)
        grind = RpcGrind(programs, timeout=0.5)

        class Run:
            """The part of ``ScriptRun`` rpc-grind uses, over a real exchange."""

            def __init__(self) -> None:
                self.exchange = ReactorExchange(thread.reactor, "127.0.0.1", port, "tcp")
                self.port = PortView(
                    address="127.0.0.1", number=port, protocol="tcp", state="open", name="rpcbind"
                )
                self.updates: list[Any] = []

            def set_version(self, update: Any, state: str = "hardmatched") -> None:
                self.updates.append(update)

        run = Run()
        assert grind.portrule(run.port, RuleContext(intensity=7))
        # before the fix: FirstError(TimeoutError) out of gatherResults
        assert thread.call(lambda: defer.Deferred.fromCoroutine(grind.action(run))) is None  # type: ignore[arg-type]
        assert run.updates == []  # PROG_MISMATCH behind a lie is never believed
        thread.call(run.exchange.close_all)
    finally:
        thread.stop()
        pool.close()


def test_the_worst_lag_survives_the_ring_buffer() -> None:
    clock = Clock()
    monitor = ReactorLagMonitor(clock, interval=0.0625, max_samples=4)
    monitor.start()
    clock.advance(0.0625)
    clock.advance(0.25)  # due 0.125, runs at 0.3125: 0.1875 late
    clock.pump([0.0625] * 8)  # on time: the late sample leaves the ring buffer
    assert monitor.max() == 0.0
    assert monitor.worst == 0.1875
    monitor.stop()
    assert not clock.getDelayedCalls()
