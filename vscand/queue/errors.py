"""What our Redis client raises: Redis unreachable (:class:`RedisUnavailable`, and
:class:`RedisRefused` for a transient refusal retried like an outage) or an error reply
(:class:`RedisReplyError`).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations


class RedisUnavailable(Exception):
    """Redis could not be reached: not connected, the connection was lost, or no reply in time.

    Whether a write sent before the connection was lost was applied is unknown, which is
    why everything written to Redis is idempotent.
    """


class RedisReplyError(Exception):
    """Redis answered with an error reply (``NOGROUP``, ``OOM``, ``READONLY``, ``WRONGTYPE``...)."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message

    @property
    def code(self) -> str:
        """The error code: the first word (``NOGROUP``, ``NOSCRIPT``, ``BUSYGROUP``, ``ERR``...)."""
        return self.message.split(" ", 1)[0] if self.message else ""


#: out of memory under ``noeviction``, loading its data after a restart, a script running
#: too long, a replica promoted or a master down, a cluster resharding
TRANSIENT_REPLY_CODES = frozenset(
    {"OOM", "LOADING", "BUSY", "MASTERDOWN", "READONLY", "TRYAGAIN", "CLUSTERDOWN"}
)


class RedisRefused(RedisUnavailable):
    """Redis refused the command for now (one of :data:`TRANSIENT_REPLY_CODES`): retried
    like an outage, never treated as a bug."""
