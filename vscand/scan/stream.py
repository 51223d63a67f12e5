"""The stream transport of the TCP machines: a thin ``Protocol`` adapter and how a
connection's end reads as an :class:`EndKind` (SPEC §4.4).

What a TCP machine needs of the network is injected as a :data:`Dialer`: it connects a
protocol to the target, in TLS or not, honouring the connection-rate limit.
"""

from __future__ import annotations

import errno
from collections.abc import Callable
from typing import Protocol as TypingProtocol

from twisted.internet import defer, error
from twisted.internet.protocol import Protocol, connectionDone
from twisted.python.failure import Failure

from vscand.scan.model import PortTask
from vscand.scan.walk import EndKind

#: dial(task, protocol, timeout_seconds, tls) -> Deferred firing with the protocol once connected
Dialer = Callable[[PortTask, Protocol, float, bool], "defer.Deferred[Protocol]"]


def failed_with(failure: Failure, *kinds: type[BaseException]) -> bool:
    """``Failure.check`` with a type mypy can see."""
    return isinstance(failure.value, kinds)


def reset_after_handshake(failure: Failure) -> bool:
    """A connect that failed with ECONNRESET: the peer accepted, then reset at once."""
    value = failure.value
    return (
        isinstance(value, error.ConnectError)
        and not isinstance(value, error.ConnectionRefusedError)
        and getattr(value, "osError", None) == errno.ECONNRESET
    )


def end_kind(reason: Failure) -> EndKind:
    """How a lost connection ends its probe."""
    if failed_with(reason, error.ConnectionDone):
        return EndKind.EOF
    if failed_with(reason, error.ConnectionRefusedError):
        return EndKind.RESET
    if failed_with(reason, error.ConnectionLost):
        return EndKind.RESET
    if failed_with(reason, error.NoRouteError):
        return EndKind.UNREACHABLE
    return EndKind.OTHER


class StreamEvents(TypingProtocol):
    """What a :class:`ProbeConnection` tells its machine."""

    def data_received(self, conn: ProbeConnection, data: bytes) -> None: ...

    def connection_lost(self, conn: ProbeConnection, reason: Failure) -> None: ...


class ProbeConnection(Protocol):
    """Thin adapter: forwards the transport's events to its port machine."""

    def __init__(self, machine: StreamEvents) -> None:
        self.machine = machine
        self.closed = False

    def dataReceived(self, data: bytes) -> None:
        self.machine.data_received(self, data)

    def connectionLost(self, reason: Failure = connectionDone) -> None:
        self.closed = True
        self.machine.connection_lost(self, reason)

    def close(self) -> None:
        if not self.closed and self.transport is not None:
            self.transport.loseConnection()

    def abort(self) -> None:
        if not self.closed and self.transport is not None:
            abort = getattr(self.transport, "abortConnection", None)
            if abort is not None:
                abort()
            else:
                self.transport.loseConnection()
