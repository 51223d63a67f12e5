"""Job signatures: HMAC-SHA256 over the canonical JSON, an expiry, and the key file.

:class:`JobSigner` signs for submitters; :class:`JobVerifier` is what a daemon that
requires signed jobs checks (the key comes from a file the daemon reads, never from
Redis: :func:`load_key`). The replay guard, which needs Redis, is
:func:`vscand.queue.replay.claim_signature`.

Nothing here imports ``twisted.internet`` (only the logger, for :func:`load_key`).
"""

from __future__ import annotations

import hmac
import math
import os
import stat
import time
import uuid
from collections.abc import Mapping
from hashlib import sha256
from pathlib import Path
from typing import Any

from twisted.logger import Logger

from vscand.jobs.decode import canonical_json
from vscand.jobs.schema import HEX_SIG, MAX_NOT_AFTER_AHEAD_S, JobError, json_type

log = Logger()


def _signature(key: bytes, obj: Mapping[str, Any]) -> str:
    unsigned = {k: v for k, v in obj.items() if k != "sig"}
    return hmac.new(key, canonical_json(unsigned), sha256).hexdigest()


def _check_key(key: bytes) -> bytes:
    if not isinstance(key, bytes) or not key:
        raise ValueError("the job signing key must be non-empty bytes")
    return key


class JobSigner:
    """Signs jobs for submitters: HMAC-SHA256 over the canonical JSON without ``sig``."""

    def __init__(self, key: bytes) -> None:
        self._key = _check_key(key)

    def sign(
        self, job: Mapping[str, Any], ttl_s: float, *, now: float | None = None
    ) -> dict[str, Any]:
        """A copy of *job* with ``not_after`` (unix seconds) and ``sig`` added.

        An ``id`` (uuid4) is added if the job has none: the replay guard is keyed
        on it, so a signed job must carry one.
        """
        if not ttl_s > 0:
            raise ValueError("ttl_s must be positive")
        signed = {k: v for k, v in job.items() if k != "sig"}
        signed.setdefault("id", str(uuid.uuid4()))
        signed["not_after"] = math.ceil((time.time() if now is None else now) + ttl_s)
        signed["sig"] = _signature(self._key, signed)
        return signed


class JobVerifier:
    """Checks a job's signature and expiry; raises :class:`JobError` (field ``sig``
    or ``not_after``) for unsigned, tampered, expired or undated jobs."""

    def __init__(self, key: bytes) -> None:
        self._key = _check_key(key)

    def verify(self, obj: Mapping[str, Any], now: float) -> None:
        sig = obj.get("sig")
        if sig is None:
            raise JobError("sig", "unsigned job: this daemon requires signed jobs")
        if not isinstance(sig, str) or not HEX_SIG.fullmatch(sig):
            raise JobError("sig", "must be 64 hex digits (HMAC-SHA256)")
        if not hmac.compare_digest(_signature(self._key, obj), sig.lower()):
            raise JobError(
                "sig", "bad signature: the job was altered after signing or signed with another key"
            )
        # the signature is good, so not_after is what the signer wrote
        if "not_after" not in obj:
            raise JobError("not_after", "a signed job must carry not_after (unix seconds)")
        check_not_after(obj["not_after"], now)


def check_not_after(value: object, now: float) -> float:
    """A job's expiry (unix seconds), or :class:`JobError` if odd or past."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise JobError("not_after", f"must be a number (unix seconds), not {json_type(value)}")
    when = float(value)
    if not math.isfinite(when) or when < 0:
        raise JobError("not_after", f"must be unix seconds, not {value!r}")
    if now > when:
        stamp = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(when))
        raise JobError("not_after", f"job expired at {stamp} ({now - when:.0f} s ago)")
    if when - now > MAX_NOT_AFTER_AHEAD_S:
        raise JobError(
            "not_after",
            f"{value!r} is more than {MAX_NOT_AFTER_AHEAD_S / 86400:.0f} days ahead "
            "(a job's lifetime is at most that)",
        )
    return when


def load_key(path: str | os.PathLike[str]) -> bytes:
    """The job signing key: the file's bytes, trailing newline stripped.

    The file must exist and be non-empty; a key readable or writable by other
    users is logged as a warning (the daemon's unit should make it 0400).
    """
    location = Path(path)
    try:
        data = location.read_bytes()
        mode = location.stat().st_mode
    except OSError as e:
        raise ValueError(f"job key file {str(location)!r}: {e.strerror or e}") from None
    key = data.removesuffix(b"\n").removesuffix(b"\r")
    if not key:
        raise ValueError(f"job key file {str(location)!r} is empty")
    if mode & (stat.S_IROTH | stat.S_IWOTH):
        log.warn(
            "job key file {path} is accessible to other users (mode {mode}); chmod 0400 it",
            path=str(location),
            mode=oct(stat.S_IMODE(mode)),
        )
    if len(key) < 16:
        log.warn(
            "job key in {path} is only {n} bytes; use at least 32 random bytes",
            path=str(location),
            n=len(key),
        )
    return key
