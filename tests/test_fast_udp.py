"""Fast mode on UDP ports: quiet windows, probes still one at a time (Clock, fake sockets).

The same scripted responder is scanned by the faithful UDP machine and in fast
mode; the answers (state, reason, service object, final state, matches) must be
equal, except in the documented case of a reply slower than the quiet window.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from twisted.internet import defer
from twisted.internet.interfaces import IDelayedCall
from twisted.internet.protocol import DatagramProtocol
from twisted.internet.task import Clock

from tests.test_udp_machine import PROBES, SRC, WALL
from vscand.probes.matcher import Matcher
from vscand.probes.parser import parse_probe_text
from vscand.scan.datagram import DatagramSocket
from vscand.scan.model import PortTask, ScanOptions
from vscand.scan.udp import UDPPortScan

Responder = Callable[[bytes], list[tuple[float, bytes]]]


class ScriptedSocket:
    def __init__(self, clock: Clock, protocol: DatagramProtocol, respond: Responder) -> None:
        self.clock = clock
        self.protocol = protocol
        self.respond = respond
        self.closed = False
        self.calls: list[IDelayedCall] = []

    def write(self, datagram: bytes) -> int:
        for delay, reply in self.respond(datagram):
            self.calls.append(self.clock.callLater(delay, self._deliver, reply))
        return len(datagram)

    def _deliver(self, reply: bytes) -> None:
        if not self.closed:
            self.protocol.datagramReceived(reply, SRC)

    def stopListening(self) -> None:
        self.closed = True
        for call in self.calls:
            if call.active():
                call.cancel()


@pytest.fixture(scope="module")
def matcher() -> Matcher:
    return Matcher(db=parse_probe_text(PROBES, "udp.probes"))


def scan(
    matcher: Matcher, respond: Responder, *, fast: bool, port: int = 7200, fast_wait: float = 1.0
) -> dict[str, Any]:
    clock = Clock()
    sockets: list[ScriptedSocket] = []

    def opener(task: PortTask, protocol: DatagramProtocol) -> defer.Deferred[DatagramSocket]:
        # the first socket is the port-scan check: it hears nothing
        sock = ScriptedSocket(clock, protocol, respond if sockets else (lambda d: []))
        sockets.append(sock)
        return defer.succeed(sock)

    machine = UDPPortScan(
        PortTask("127.0.0.1", port, "udp"),
        db=matcher.db,
        match=lambda p, b: defer.succeed(matcher.match(p, b)),
        open_socket=opener,
        clock=clock,
        options=ScanOptions(scanned_protocols=("udp",), fast=fast, fast_wait=fast_wait),
        table_name=None,
        check_payloads=(),
        wallclock=lambda: WALL,
    )
    results: list[dict[str, Any]] = []
    machine.run().addCallback(results.append)
    while not results:
        calls = clock.getDelayedCalls()
        assert calls, "stuck"
        clock.advance(max(0.0, min(c.getTime() for c in calls) - clock.seconds()))
    assert not clock.getDelayedCalls()
    assert all(s.closed for s in sockets)
    assert results[0].get("fast", False) is fast
    return results[0]


def answer(result: dict[str, Any]) -> tuple[Any, ...]:
    return (
        result["state"],
        result["reason"],
        result["service"],
        result.get("final_state"),
        result.get("matches"),
    )


CASES: dict[str, Responder] = {
    "silent": lambda d: [],
    "prompt-hard": lambda d: [(0.002, b"DNSOK 2.90\n")] if d == b"FIRST" else [],
    "second-probe": lambda d: [(0.002, b"SECONDOK")] if d == b"SECOND" else [],
    "unknown-two-datagrams": lambda d: [(0.002, b"garbage 1"), (0.3, b" garbage 2")],
    "soft-then-hard": lambda d: [(0.001, b"SOFT" if d == b"FIRST" else b"SOFTHARD")],
}


@pytest.mark.parametrize("respond", CASES.values(), ids=CASES.keys())
def test_fast_udp_answers_as_faithful(matcher: Matcher, respond: Responder) -> None:
    assert answer(scan(matcher, respond, fast=True)) == answer(scan(matcher, respond, fast=False))


def test_fast_udp_is_sooner_on_a_silent_port(matcher: Matcher) -> None:
    faithful = scan(matcher, CASES["silent"], fast=False)
    fast = scan(matcher, CASES["silent"], fast=True)
    assert fast["duration_ms"] < faithful["duration_ms"]


def test_exception_reply_slower_than_the_quiet_window(matcher: Matcher) -> None:
    """A reply 2 s after its probe: faithful mode reads it within the probe's 5 s; fast
    mode has moved on after 1 s, and the late datagram lands in the next probe (as it
    does in Nmap 7.93 for a reply later than totalwaitms)."""

    def slow(datagram: bytes) -> list[tuple[float, bytes]]:
        return [(2.0, b"DNSOK 1.0\n")] if datagram == b"FIRST" else []

    faithful = scan(matcher, slow, fast=False)
    fast = scan(matcher, slow, fast=True)
    assert faithful["service"]["product"] == "FakeDNS"
    assert faithful["matches"][-1]["probe"] == "First"
    assert answer(fast) != answer(faithful)
    assert answer(scan(matcher, slow, fast=True, fast_wait=0.0)) == answer(faithful)
