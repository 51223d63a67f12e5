"""The two Redis calls the job and result code needs, as a structural type.

``vscand.queue.client.RedisClient`` satisfies it (its methods return Deferreds,
which are awaitable); tests pass a small synchronous adapter. Replies are raw:
bulk strings are ``bytes``, integers ``int``, nil ``None``.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from collections.abc import Awaitable, Sequence
from typing import Any, Protocol


class RedisCommands(Protocol):
    def execute(self, *args: Any, timeout: float | None = None) -> Awaitable[Any]:
        """Send one command; the reply, raw."""

    def eval(
        self, script: str, keys: Sequence[str], args: Sequence[str | bytes | int]
    ) -> Awaitable[Any]:
        """Run a Lua script (EVALSHA, falling back to EVAL); the reply, raw."""


def text(reply: Any) -> str | None:
    """A bulk or simple string reply as ``str`` (``None`` for nil)."""
    if reply is None:
        return None
    if isinstance(reply, bytes):
        return reply.decode("utf-8", "replace")
    return str(reply)


def integer(reply: Any) -> int:
    """An integer reply (some clients hand numbers back as bytes)."""
    if isinstance(reply, bytes):
        return int(reply)
    return int(reply)
