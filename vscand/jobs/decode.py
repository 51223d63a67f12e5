"""A job's raw bytes → its JSON object: the cheap checks first, then a strict parse.

Size in bytes (``JobLimits.max_bytes``) before anything else, then UTF-8, then the
nesting depth (counted without parsing), and only then ``json.loads``: one JSON object,
no duplicate fields, no ``NaN``/``Infinity``. :func:`canonical_json` is the byte form a
signature covers.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

from vscand.jobs.schema import DEFAULT_LIMITS, JobError, JobLimits, json_type


def _no_duplicates(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for key, value in pairs:
        if key in out:
            raise JobError(None, f"duplicate field {key!r} in a JSON object")
        out[key] = value
    return out


def _no_constant(name: str) -> Any:
    raise JobError(None, f"{name} is not valid JSON")


def canonical_json(obj: Mapping[str, Any]) -> bytes:
    """The bytes a signature covers: sorted keys, no spaces, ASCII only."""
    return json.dumps(obj, sort_keys=True, separators=(",", ":"), ensure_ascii=True).encode("ascii")


#: JSON strings (escapes included), then any bracket: what :func:`json_depth` looks at
_JSON_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_NOT_BRACKET = re.compile(r"[^\[\]{}]+")


def json_depth(text: str) -> int:
    """How deeply *text*'s arrays and objects nest, counted without parsing: brackets
    outside strings (an unterminated string's brackets count too). Linear time."""
    brackets = _NOT_BRACKET.sub("", _JSON_STRING.sub("", text))
    depth = deepest = 0
    for char in brackets:
        if char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        else:
            depth -= 1
    return deepest


def decode_job(raw: bytes, limits: JobLimits = DEFAULT_LIMITS) -> dict[str, Any]:
    """The job's JSON object, or :class:`JobError`. The cheap checks come first: size in
    bytes, UTF-8, nesting depth; only then is the JSON parsed."""
    if len(raw) > limits.max_bytes:
        raise JobError(None, f"job is {len(raw)} bytes, more than the limit of {limits.max_bytes}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError as e:
        raise JobError(None, f"job is not UTF-8 (byte {e.start})") from None
    depth = json_depth(text)
    if depth > limits.max_depth:
        raise JobError(
            None, f"bad JSON: nested too deeply ({depth} levels; the limit is {limits.max_depth})"
        )
    try:
        obj = json.loads(text, object_pairs_hook=_no_duplicates, parse_constant=_no_constant)
    except JobError:
        raise
    except json.JSONDecodeError as e:
        raise JobError(None, f"bad JSON: {e.msg} at line {e.lineno} column {e.colno}") from None
    except RecursionError:
        raise JobError(None, "bad JSON: nested too deeply") from None
    except ValueError as e:  # e.g. an integer of more than 4300 digits
        raise JobError(None, f"bad JSON: {e}") from None
    if not isinstance(obj, dict):
        raise JobError(None, f"a job must be a JSON object, not {json_type(obj)}")
    return obj
