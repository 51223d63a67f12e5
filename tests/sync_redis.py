"""A blocking Redis adapter with the ``RedisClient`` interface, for tests without a reactor.

``execute``/``eval`` talk RESP to the fixture's loopback ``redis-server`` and
return Deferreds that have already fired, so coroutines that await them run to
the end inside :func:`run` with no reactor. Replies are raw as txredisapi's with
``charset=None``: bulk strings ``bytes``, integers ``int``, nil ``None``; an error
reply fails the Deferred with :class:`RedisReplyError`.
"""

from __future__ import annotations

import hashlib
import socket
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

from twisted.internet.defer import Deferred, fail, succeed
from twisted.python.failure import Failure

T = TypeVar("T")


class RedisReplyError(Exception):
    pass


class SyncRedis:
    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = self.sock.makefile("rb")
        self.commands: list[tuple[Any, ...]] = []

    def close(self) -> None:
        self.reader.close()
        self.sock.close()

    def _encode(self, arg: Any) -> bytes:
        if isinstance(arg, bytes):
            return arg
        if isinstance(arg, bool):
            raise TypeError("bool is not a Redis argument")
        return str(arg).encode()

    def _read(self) -> Any:
        line = self.reader.readline()
        if not line:
            raise ConnectionError("redis closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body
        if kind == b"-":
            return RedisReplyError(body.decode())
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = self.reader.read(size + 2)
            return data[:-2]
        if kind == b"*":
            count = int(body)
            if count < 0:
                return None
            return [self._read() for _ in range(count)]
        raise ValueError(f"bad RESP line {line!r}")

    def call(self, *args: Any) -> Any:
        parts = [self._encode(a) for a in args]
        payload = b"*%d\r\n" % len(parts) + b"".join(b"$%d\r\n%s\r\n" % (len(p), p) for p in parts)
        self.commands.append(args)
        self.sock.sendall(payload)
        reply = self._read()
        if isinstance(reply, RedisReplyError):
            raise reply
        return reply

    def execute(self, *args: Any, timeout: float | None = None) -> Deferred[Any]:
        try:
            return succeed(self.call(*args))
        except RedisReplyError:
            return fail()

    def eval(
        self, script: str, keys: Sequence[str], args: Sequence[str | bytes | int]
    ) -> Deferred[Any]:
        sha = hashlib.sha1(script.encode()).hexdigest()
        try:
            try:
                return succeed(self.call("EVALSHA", sha, len(keys), *keys, *args))
            except RedisReplyError as e:
                if not str(e).startswith("NOSCRIPT"):
                    raise
            return succeed(self.call("EVAL", script, len(keys), *keys, *args))
        except RedisReplyError:
            return fail()


def run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine whose awaits are all already-fired Deferreds; its result."""
    outcome: list[T | Failure] = []
    Deferred.fromCoroutine(coro).addBoth(outcome.append)
    assert outcome, "the coroutine waited on something that never fired"
    result = outcome[0]
    if isinstance(result, Failure):
        result.raiseException()
    return result
