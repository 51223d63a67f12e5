"""The daemon configuration's values: one parser per kind of value, and the table of
every key with its parser (``PARSERS``, in the order of ``etc/vscand.conf``).

Each parser takes the text of the file or of an option, or an already typed value,
and returns the typed value or raises :class:`Invalid` with the reason; ``config.py``
adds the file and key.
"""

from __future__ import annotations

import ipaddress
import math
import re
from collections.abc import Callable, Iterable
from typing import Literal, cast
from urllib.parse import urlsplit

REDIS_URL_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")

LogFormat = Literal["text", "json"]


_SECRET_QUERY = re.compile(r"(?i)((?:^|&)(?:sentinel_)?password=)[^&]*")


def redact_url(url: str) -> str:
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:
        return "(a Redis URL that cannot be parsed)"
    if parts.query:
        parts = parts._replace(query=_SECRET_QUERY.sub(r"\1***", parts.query))
    if password is not None:
        user = parts.username or ""
        host = parts.netloc.rpartition("@")[2]
        parts = parts._replace(netloc=f"{user}:***@{host}")
    return parts.geturl()


class Invalid(Exception):
    """The reason a value is refused, completed with file and key by the caller."""


def _describe(value: object) -> str:
    return repr(value)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    raise Invalid(f"must be a string, not {_describe(value)}")


def _int(minimum: int, maximum: int | None, what: str) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool):
            raise Invalid(f"must be {what}, not {_describe(value)}")
        if isinstance(value, int):
            number = value
        else:
            text = _text(value).replace("_", "")
            if not re.fullmatch(r"[+-]?[0-9]+", text):
                raise Invalid(f"must be {what}, not {_describe(value)}")
            number = int(text)
        if number < minimum or (maximum is not None and number > maximum):
            raise Invalid(f"must be {what}, not {_describe(value)}")
        return number

    return parse


def _float(minimum: float, exclusive: bool, what: str) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool):
            raise Invalid(f"must be {what}, not {_describe(value)}")
        if isinstance(value, int | float):
            number = float(value)
        else:
            text = _text(value)
            try:
                number = float(text)
            except ValueError:
                raise Invalid(f"must be {what}, not {_describe(value)}") from None
        if not math.isfinite(number):
            raise Invalid(f"must be {what}, not {_describe(value)}")
        if number < minimum or (exclusive and number == minimum):
            raise Invalid(f"must be {what}, not {_describe(value)}")
        return number

    return parse


_TRUE = frozenset({"1", "yes", "true", "on"})
_FALSE = frozenset({"0", "no", "false", "off"})


def _bool(value: object) -> bool:
    if isinstance(value, bool):
        return value
    text = _text(value).lower()
    if text in _TRUE:
        return True
    if text in _FALSE:
        return False
    raise Invalid(f"must be yes or no (true/false, on/off, 1/0), not {_describe(value)}")


def _items(value: object) -> list[str]:
    """A list from text (comma and/or space separated) or from a sequence of such texts."""
    if isinstance(value, str):
        chunks: Iterable[object] = [value]
    elif isinstance(value, list | tuple):
        chunks = value
    else:
        raise Invalid(f"must be a list, not {_describe(value)}")
    items: list[str] = []
    for chunk in chunks:
        items.extend(part for part in re.split(r"[\s,]+", _text(chunk)) if part)
    return items


def _networks(value: object) -> tuple[str, ...]:
    networks: list[str] = []
    for item in _items(value):
        try:
            network = ipaddress.ip_network(item, strict=True)
        except ValueError as e:
            raise Invalid(f"{item!r} is not a network ({e})") from None
        if str(network) not in networks:
            networks.append(str(network))
    return tuple(networks)


_NAME_PATTERN = re.compile(r"[A-Za-z0-9*?.\[\]!_-]{1,253}")


def _name_patterns(value: object) -> tuple[str, ...]:
    patterns: list[str] = []
    for item in _items(value):
        if not _NAME_PATTERN.fullmatch(item):
            raise Invalid(f"{item!r} is not a hostname pattern (letters, digits, . - _ * ? [ ])")
        if item.lower() not in patterns:
            patterns.append(item.lower())
    return tuple(patterns)


def _paths(value: object) -> tuple[str, ...]:
    return tuple(_items(value))


def _optional_path(value: object) -> str | None:
    text = _text(value)
    return text or None


def _path(value: object) -> str:
    text = _text(value)
    if not text:
        raise Invalid("must be a path, not empty")
    return text


_NAME = re.compile(r"[A-Za-z0-9_.:@/+-]+")


def _name(what: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _text(value)
        if not _NAME.fullmatch(text):
            raise Invalid(f"must be {what} (letters, digits and _.:@/+-), not {_describe(value)}")
        return text

    return parse


def _key_prefix(value: object) -> str:
    text = _text(value)
    if text and not _NAME.fullmatch(text):
        raise Invalid(f"must be letters, digits and _.:@/+-, not {_describe(value)}")
    return text


def _redis_url(value: object) -> str:
    text = _text(value)
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme not in REDIS_URL_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in REDIS_URL_SCHEMES)
        raise Invalid(f"must be a URL starting with {allowed}, not {redact_url(text)!r}")
    if scheme.endswith("+sentinel"):
        # imported here: `import vscand.daemon.tap` (twistd's plugin scan) must stay light
        from vscand.queue.redis_url import parse_redis_url  # noqa: PLC0415

        try:
            parse_redis_url(text)
        except ValueError as e:
            raise Invalid(f"{e}: {redact_url(text)!r}") from None
        return text
    parts = urlsplit(text)
    if scheme == "unix":
        if not parts.path:
            raise Invalid(f"unix:// needs a socket path, not {redact_url(text)!r}")
    else:
        try:
            port = parts.port
        except ValueError:
            raise Invalid(f"has a bad port: {redact_url(text)!r}") from None
        if not parts.hostname or port == 0:
            raise Invalid(f"needs a host: {redact_url(text)!r}")
    return text


def _regex_engine(value: object) -> str:
    # imported here: `import vscand.daemon.tap` (twistd's plugin scan) must not load
    # vscand.probes
    from vscand.probes.engine import EngineSpecError, check_spec  # noqa: PLC0415

    try:
        return check_spec(_text(value))
    except EngineSpecError as e:
        raise Invalid(str(e)) from None


def _log_format(value: object) -> LogFormat:
    text = _text(value).lower()
    if text not in ("text", "json"):
        raise Invalid(f"must be text or json, not {_describe(value)}")
    return cast(LogFormat, text)


PARSERS: dict[str, Callable[[object], object]] = {
    "redis_url": _redis_url,
    "queue": _name("a queue name"),
    "consumer": _name("a consumer name"),
    "concurrency": _int(1, None, "a positive integer"),
    "per_host_concurrency": _int(0, None, "a non-negative integer (0 = unlimited)"),
    "max_jobs": _int(0, 1024, "an integer from 0 to 1024 (0 = min(64, concurrency))"),
    "task_ports": _int(1, 1024, "an integer from 1 to 1024"),
    "connect_rate": _float(0.0, False, "a non-negative number (0 = unlimited)"),
    "allow": _networks,
    "deny": _networks,
    "allow_names": _name_patterns,
    "probes_file": _optional_path,
    "extra_probes": _paths,
    "services_file": _optional_path,
    "regex_engine": _regex_engine,
    "intensity": _int(0, 9, "an integer from 0 to 9"),
    "job_idle_ms": _int(1, None, "a positive integer"),
    "max_deliveries": _int(1, None, "a positive integer"),
    "results_maxlen": _int(1, None, "a positive integer"),
    "job_retention": _int(0, None, "a number of seconds (0 = keep forever)"),
    "metrics_port": _int(0, 65535, "a port number from 0 to 65535 (0 = off)"),
    "log_format": _log_format,
    "key_prefix": _key_prefix,
    "job_key_file": _optional_path,
    "max_job_bytes": _int(1, None, "a positive integer"),
    "max_job_port_tasks": _int(1, None, "a positive integer"),
    "replica_confirm": _int(0, 64, "an integer from 0 to 64 (0 = off)"),
    "replica_confirm_timeout_ms": _int(1, 600_000, "an integer from 1 to 600000"),
    "dead_maxlen": _int(1, None, "a positive integer"),
    "dead_payload_bytes": _int(0, 1_048_576, "an integer from 0 to 1048576"),
    "drain_timeout": _float(0.0, False, "a non-negative number of seconds"),
    "block_ms": _int(1, None, "a positive integer"),
    "command_timeout": _float(0.0, True, "a positive number of seconds"),
    "watchdog": _bool,
    "cache_dir": _path,
    "warn_interval": _float(0.0, True, "a positive number of seconds"),
    "max_pending_writes": _int(0, None, "a non-negative integer (0 = 2 x concurrency)"),
}
OPTIONAL = frozenset({"probes_file", "services_file", "job_key_file"})

KEYS: tuple[str, ...] = tuple(PARSERS)
"""Every configuration key, in the order of ``etc/vscand.conf``."""
