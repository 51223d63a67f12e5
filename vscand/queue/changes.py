"""Inventory change detection: what of a port result counts as a change.

A rescan of an unchanged service must never show up as new, so the inventory is
compared on a *normalised* form of each result (:func:`normalised_service`): the
port state and, for an open port, the service's identifying fields and the TLS
certificate's SHA-256 — never scan times, durations, the worker, the matched
probe, an unmatched service's fingerprint (which embeds the scan date) or the
version scripts' output (``service.scripts``/``script_results``: often time- or
peer-dependent — a clock, an uptime, a server's list order; what a script
*identifies* is already in the service fields it sets). The inventory still
holds the latest output.

The comparison itself runs inside the fenced result-writing Lua script
(:mod:`vscand.queue.results`), atomically with the inventory update; this module
holds the normalisation, the event format and the ``--since`` parsing of
``vscan changes``.

Event fields (stream ``vscand:changes``, one entry per change): ``host``,
``port``, ``protocol``, ``kind`` (one of :data:`CHANGE_KINDS`), ``before`` (the
previous normalised JSON, empty on a first sighting), ``after`` (the new one),
``job`` and ``at`` (the result's ``scanned_at``).

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

#: the service fields that identify what runs on a port, in the normalised form
NORMALISED_FIELDS = (
    "name",
    "product",
    "version",
    "extrainfo",
    "ostype",
    "devicetype",
    "hostname",
    "tunnel",
)

CHANGE_KINDS = (
    "opened",  # first seen open, or open after being closed/filtered
    "closed",  # open before, now closed, filtered or open|filtered
    "service_changed",  # open both times, another service name or tunnel
    "version_changed",  # same service; product, version, extrainfo, ostype, ... or CPEs
    "tls_changed",  # same service and version; another certificate
    "changed",  # anything else in the normalised form
)

_SPACE = re.compile(r"\s+")
_HEX = re.compile(r"^[0-9a-f]{64}$")
_DURATION = re.compile(r"^(\d+(?:\.\d+)?)([smhdw])$")
_ENTRY_ID = re.compile(r"^\d+(?:-\d+)?$")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 604800}


def _clean(value: object) -> str | None:
    if value is None or isinstance(value, bool):
        return None
    text = _SPACE.sub(" ", str(value)).strip()
    return text or None


def tls_sha256(tls: object) -> str | None:
    """The certificate's SHA-256 (lower-case hex, no colons) from a result's ``tls``."""
    if not isinstance(tls, Mapping):
        return None
    candidates: list[object] = [tls.get("sha256"), tls.get("cert_sha256")]
    for name in ("certificate", "cert"):
        nested = tls.get(name)
        if isinstance(nested, Mapping):
            candidates.append(nested.get("sha256"))
    for candidate in candidates:
        if isinstance(candidate, str):
            digest = candidate.replace(":", "").strip().lower()
            if _HEX.match(digest):
                return digest
    return None


def tracks_inventory(result: Mapping[str, Any]) -> bool:
    """Whether *result* may update the inventory (and so raise change events).

    An interrupted port (cancel, job timeout, shutdown) or a port whose scan
    failed says nothing about the service: the inventory keeps what it knew.
    """
    if result.get("interrupted") or result.get("error"):
        return False
    return str(result.get("state") or "unknown") != "unknown"


def normalised_service(result: Mapping[str, Any]) -> str:
    """Compact canonical JSON of what a change is measured on.

    ``state`` always; for an open port the non-empty :data:`NORMALISED_FIELDS`
    of ``service`` (whitespace collapsed), ``cpe`` (sorted, unique) and ``tls``
    (the certificate's SHA-256) when present. A closed or filtered port's service
    is only the port table's guess, so it is left out.
    """
    state = _clean(result.get("state")) or "unknown"
    norm: dict[str, Any] = {"state": state}
    service = result.get("service")
    if state == "open" and isinstance(service, Mapping):
        for name in NORMALISED_FIELDS:
            value = _clean(service.get(name))
            if value is not None:
                norm[name] = value
        raw_cpe = service.get("cpe")
        if isinstance(raw_cpe, list | tuple):
            cpe = sorted({c for c in (_clean(item) for item in raw_cpe) if c})
            if cpe:
                norm["cpe"] = cpe
        digest = tls_sha256(service.get("tls"))
        if digest:
            norm["tls"] = digest
    return json.dumps(norm, sort_keys=True, separators=(",", ":"))


def describe(normalised: str | Mapping[str, Any] | None) -> str:
    """One line for a normalised entry, as the ``vscan changes`` table prints it."""
    if not normalised:
        return "-"
    norm = json.loads(normalised) if isinstance(normalised, str) else normalised
    parts = [str(norm.get("state", "?"))]
    name = norm.get("name")
    if name:
        parts.append(f"{norm['tunnel']}/{name}" if norm.get("tunnel") else str(name))
    parts.extend(str(norm[k]) for k in ("product", "version") if norm.get(k))
    if norm.get("extrainfo"):
        parts.append(f"({norm['extrainfo']})")
    if norm.get("tls"):
        parts.append(f"cert {str(norm['tls'])[:16]}")
    return " ".join(parts)


def since_entry_id(since: str, now: float) -> str:
    """The first stream entry id to read for ``vscan changes --since SINCE``.

    *since* is a stream entry id (``1700000000000-0`` or milliseconds), an ISO
    8601 time (``2027-01-15T08:00:00Z``, ``2027-01-15``; UTC when no offset is
    given), or a duration before *now* (``90s``, ``15m``, ``1h``, ``2d``, ``1w``).
    Raises :class:`ValueError` naming the accepted forms.
    """
    text = since.strip()
    duration = _DURATION.match(text)
    if duration:
        seconds = float(duration.group(1)) * _UNITS[duration.group(2)]
        return str(max(0, int((now - seconds) * 1000)))
    if _ENTRY_ID.match(text):
        return text
    try:
        when = datetime.fromisoformat(text.replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(
            f"--since {since!r}: give an ISO time (2027-01-15T08:00:00Z), "
            "a stream entry id (1700000000000-0) or a duration (30m, 1h, 7d)"
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return str(max(0, int(when.timestamp() * 1000)))
