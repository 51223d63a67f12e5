"""Worker heartbeats: what each daemon writes to the fleet's ``workers`` hash and what
``vscan workers`` reads back, one format in one place.

``vscand:workers`` (:attr:`Keys.workers`) maps each consumer name to one JSON object:
``consumer``, ``host``, ``pid``, ``queue``, ``started_at`` and ``last_seen`` (ISO 8601
UTC), ``jobs`` (the ids in hand, sorted), ``ports_in_flight``, ``jobs_done``,
``results_written``, ``last_progress_age_s``, ``pending_writes``, ``pending_writes_peak``,
``max_pending_writes``. Readers take what they know and tolerate missing keys (an older
daemon's beat).
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from vscand.queue.commands import RedisCommands
from vscand.queue.keys import Keys


def iso_time(when: float) -> str:
    """Unix seconds as the heartbeat's ISO 8601 UTC text (whole seconds)."""
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))


@dataclass(frozen=True)
class Heartbeat:
    """One worker's heartbeat, as written."""

    consumer: str
    host: str
    pid: int
    queue: str
    started_at: float
    last_seen: float
    jobs: tuple[str, ...]
    ports_in_flight: int
    jobs_done: int
    results_written: int
    last_progress_age_s: float
    pending_writes: int
    pending_writes_peak: int
    max_pending_writes: int

    def encode(self) -> str:
        """The JSON object stored under the consumer's name."""
        return json.dumps(
            {
                "consumer": self.consumer,
                "host": self.host,
                "pid": self.pid,
                "queue": self.queue,
                "started_at": iso_time(self.started_at),
                "last_seen": iso_time(self.last_seen),
                "jobs": sorted(self.jobs),
                "ports_in_flight": self.ports_in_flight,
                "jobs_done": self.jobs_done,
                "results_written": self.results_written,
                "last_progress_age_s": round(self.last_progress_age_s, 3),
                "pending_writes": self.pending_writes,
                "pending_writes_peak": self.pending_writes_peak,
                "max_pending_writes": self.max_pending_writes,
            }
        )


def parse_heartbeats(reply: Iterable[Any] | None) -> list[dict[str, Any]]:
    """The beats of an ``HGETALL`` of the workers hash (a flat name, value list), each
    the decoded JSON object, ordered by consumer name."""
    flat = list(reply or [])
    beats: list[dict[str, Any]] = [json.loads(flat[i + 1]) for i in range(0, len(flat) - 1, 2)]
    beats.sort(key=lambda beat: str(beat.get("consumer")))
    return beats


async def write_heartbeat(client: RedisCommands, keys: Keys, beat: Heartbeat) -> None:
    """Store *beat* under its consumer's name (``HSET``)."""
    await client.execute("HSET", keys.workers, beat.consumer, beat.encode())


async def read_heartbeats(client: RedisCommands, keys: Keys) -> list[dict[str, Any]]:
    """Every worker's last beat (:func:`parse_heartbeats` of the workers hash)."""
    return parse_heartbeats(await client.execute("HGETALL", keys.workers))
