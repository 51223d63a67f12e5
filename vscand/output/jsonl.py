"""JSON lines (``-oJ``): one port result per line, keys in DESIGN.md's order.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import IO, Any

from vscand.service import SERVICE_KEYS

RESULT_KEYS = (
    "job",
    "host",
    "hostname",
    "other_addresses",
    "port",
    "protocol",
    "state",
    "reason",
    "service",
    "tags",
    "worker",
    "scanned_at",
    "duration_ms",
)


def _ordered(data: Mapping[str, Any], keys: tuple[str, ...]) -> dict[str, Any]:
    """``data`` with ``keys`` first (in that order, if present), the rest after."""
    out = {key: data[key] for key in keys if key in data}
    out.update((key, value) for key, value in data.items() if key not in out)
    return out


def ordered_result(result: Mapping[str, Any]) -> dict[str, Any]:
    out = _ordered(result, RESULT_KEYS)
    service = out.get("service")
    if isinstance(service, Mapping):
        out["service"] = _ordered(service, SERVICE_KEYS)
    return out


def dumps(result: Mapping[str, Any]) -> str:
    """One result as one line of ASCII JSON (no trailing newline)."""
    return json.dumps(ordered_result(result), ensure_ascii=True, separators=(", ", ": "))


def write_jsonl(results: Iterable[Mapping[str, Any]], stream: IO[str]) -> int:
    """Write each result as a line; returns how many were written."""
    count = 0
    for result in results:
        stream.write(dumps(result) + "\n")
        count += 1
    return count
