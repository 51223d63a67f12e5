"""The daemon's configuration: ``etc/vscand.conf`` (INI, one ``[vscand]`` section).

Every key can be overridden by a twistd option whose name is the key with ``-`` for ``_``
(``concurrency`` → ``--concurrency``). Precedence, strongest first: the option, then (for
``redis_url`` only) ``$VSCAND_REDIS_URL``, then the file, then the default below.

Keys from ``CONTRACTS.md`` ("Daemon configuration"):

``redis_url``
    ``redis://``, ``rediss://`` (TLS), ``unix://`` (socket path), optionally with a
    password; ``redis+sentinel://`` / ``rediss+sentinel://`` for Sentinel.
``queue``, ``consumer``
    which jobs stream to read (``default`` is ``vscand:jobs``) and this worker's consumer
    name in the group (default ``HOSTNAME:main``; ``vscand@NAME`` uses ``HOSTNAME:NAME``).
``concurrency``, ``per_host_concurrency``, ``connect_rate``
    ports in flight; ports in flight per target address (0 = unlimited); new connections
    per second (0 = unlimited).
``max_jobs``, ``task_ports``
    jobs (or tasks) run at once (0 = min(64, concurrency)); the shard size: a job of more
    (address, port) tasks than ``task_ports`` is split into tasks any worker can take.
``allow``, ``deny``
    target networks (CIDR, comma or space separated); deny wins. Default allow: loopback.
``allow_names``
    hostnames jobs may name (shell patterns such as ``*.corp.example``, case-insensitive,
    comma or space separated). A job naming any other host is refused before anything is
    resolved, so producers cannot make the daemon query the resolver for names of their
    choosing. Default ``localhost`` (answered from ``/etc/hosts``); ``*`` allows every name.
``probes_file``, ``extra_probes``
    the nmap-service-probes file (empty = search the usual places) and extra probe files
    layered on top.
``services_file``
    the nmap-services file (empty: the one beside ``probes_file`` when that is set and has
    one, else search the usual places); ``CONTRACTS.md``: "Same for nmap-services".
``regex_engine``
    the regex library and limits patterns are matched with: ``auto`` (default: those of the
    Nmap release the probe file belongs to), ``pcre`` (PCRE 8, Nmap 7.93), ``pcre2`` (PCRE2,
    Nmap 7.95) or ``nmap-X.Y`` (Nmap release X.Y's); see ``vscand/probes/engine.py``.
``intensity``
    version intensity 0–9 for jobs that do not give one.
``job_idle_ms``, ``max_deliveries``, ``results_maxlen``
    lease: a job pending this long on a silent consumer is reclaimed by another; a job
    delivered this many times goes to the dead-letter stream; approximate length of the
    fleet-wide results stream.
``metrics_port``, ``log_format``
    Prometheus text metrics on 127.0.0.1:PORT (0 = off); ``text`` or ``json`` logs.

Keys the daemon needs beyond DESIGN's list:

``key_prefix``
    prefix of every Redis key (default ``vscand:``).
``job_key_file``
    key that verifies signed jobs. Empty: unsigned jobs are accepted. Set: every job
    must be signed. A relative path is looked up in ``$CREDENTIALS_DIRECTORY`` when
    systemd provides one (``LoadCredential=``), else relative to the working directory.
``job_retention``
    seconds a job's status hash and results stream are kept after it ends (``EXPIRE``;
    a sharded job's tasks expire with it when its last task ends). Default 604800 (7
    days); 0 keeps them forever.
``max_job_bytes``, ``max_job_port_tasks``
    sanity caps: a larger job document, or a job expanding to more (address, port)
    tasks, is rejected to the dead-letter stream. A stream entry's values over
    ``max_job_bytes`` are not even read (:mod:`vscand.queue.resp`).
``replica_confirm``, ``replica_confirm_timeout_ms``
    replicas (``WAIT``) that must hold a finished job's results and status before its entry
    is acknowledged (0 = off, the default); how long one ``WAIT`` waits before it is tried
    again. With Sentinel and ``replica_confirm = 1`` a master that dies loses no finished
    job's end (DESIGN.md: "Redis failover").
``dead_maxlen``, ``dead_payload_bytes``
    the dead-letter stream is trimmed to about ``dead_maxlen`` entries (default 10000);
    each keeps the first ``dead_payload_bytes`` (default 4096) of the refused job and of
    each other field, with the full size beside it.
``drain_timeout``
    seconds the daemon drains in-flight work on stop before releasing it (below
    systemd's ``TimeoutStopSec``).
``block_ms``, ``command_timeout``
    XREADGROUP BLOCK in milliseconds; seconds before any other Redis command fails.
``watchdog``
    send ``WATCHDOG=1`` to systemd (when ``$WATCHDOG_USEC`` is set) while the consumer
    makes progress.
``cache_dir``
    where the compiled prefilter is cached. Default: ``$VSCAND_CACHE_DIR``, else
    ``$CACHE_DIRECTORY`` (systemd ``CacheDirectory=``), else ``/var/cache/vscand`` if
    writable, else ``$XDG_CACHE_HOME/vscand`` or ``~/.cache/vscand``.
``warn_interval``
    seconds over which repeated warnings of one kind (a Redis outage: every retried
    command, every failed loop) are counted instead of logged: the first is logged at
    once, then one line per interval says how many more there were (default 10).
``max_pending_writes``
    result writes that may wait for Redis before the worker stops starting ports (they
    resume as writes succeed): bounds the results held in memory during an outage.
    0 (default) = 2 × ``concurrency``: enough that a healthy Redis never holds the scan
    back (at most ``concurrency`` ports end at once), and a few MB of results at most.
    A value below ``concurrency`` lowers the ports in flight to it.

Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

import configparser
import difflib
import ipaddress
import math
import os
import re
import socket
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field, fields
from typing import Literal, cast
from urllib.parse import urlsplit

from vscand.cachedir import user_cache_dir

DEFAULT_CONFIG_PATH = "/etc/vscand/vscand.conf"
SECTION = "vscand"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_URL_ENV = "VSCAND_REDIS_URL"
REDIS_URL_SCHEMES = ("redis", "rediss", "unix", "redis+sentinel", "rediss+sentinel")
DEFAULT_ALLOW: tuple[str, ...] = ("127.0.0.0/8", "::1/128")
SYSTEM_CACHE_DIR = "/var/cache/vscand"

LogFormat = Literal["text", "json"]


class ConfigError(ValueError):
    """A configuration that cannot be used; the message is one line naming file and key."""


def default_consumer(instance: str | None = None) -> str:
    """``HOSTNAME:INSTANCE``; the same on every start, so a restarted worker gets its own
    pending jobs back."""
    return f"{socket.gethostname()}:{instance or 'main'}"


def default_cache_dir(environ: Mapping[str, str] | None = None) -> str:
    env = os.environ if environ is None else environ
    configured = env.get("VSCAND_CACHE_DIR")
    if configured:
        return configured
    systemd = env.get("CACHE_DIRECTORY")
    if systemd:
        return systemd.split(":")[0]
    if os.path.isdir(SYSTEM_CACHE_DIR) and os.access(SYSTEM_CACHE_DIR, os.W_OK | os.X_OK):
        return SYSTEM_CACHE_DIR
    return str(user_cache_dir(env))


@dataclass(frozen=True)
class DaemonConfig:
    """Everything ``twistd vscand`` needs; see the module docstring for each key."""

    redis_url: str = DEFAULT_REDIS_URL
    queue: str = "default"
    consumer: str = field(default_factory=default_consumer)
    concurrency: int = 1000
    per_host_concurrency: int = 0
    max_jobs: int = 0
    task_ports: int = 256
    connect_rate: float = 0.0
    allow: tuple[str, ...] = DEFAULT_ALLOW
    deny: tuple[str, ...] = ()
    allow_names: tuple[str, ...] = ("localhost",)
    probes_file: str | None = None
    extra_probes: tuple[str, ...] = ()
    services_file: str | None = None
    regex_engine: str = "auto"
    intensity: int = 7
    job_idle_ms: int = 120_000
    max_deliveries: int = 3
    results_maxlen: int = 100_000
    job_retention: int = 604_800
    metrics_port: int = 0
    log_format: LogFormat = "text"
    key_prefix: str = "vscand:"
    job_key_file: str | None = None
    max_job_bytes: int = 65_536
    max_job_port_tasks: int = 1_000_000
    replica_confirm: int = 0
    replica_confirm_timeout_ms: int = 5000
    dead_maxlen: int = 10_000
    dead_payload_bytes: int = 4096
    drain_timeout: float = 25.0
    block_ms: int = 5_000
    command_timeout: float = 5.0
    watchdog: bool = True
    cache_dir: str = field(default_factory=default_cache_dir)
    warn_interval: float = 10.0
    max_pending_writes: int = 0

    def __post_init__(self) -> None:
        # Programmatic construction gets the same checks and normalisation (lists become
        # tuples, networks canonical) as the file and the options.
        for f in fields(self):
            value = getattr(self, f.name)
            if value is None and f.name in _OPTIONAL:
                continue
            try:
                object.__setattr__(self, f.name, _KEYS[f.name](value))
            except _Invalid as e:
                raise ConfigError(f"DaemonConfig: {f.name}: {e}") from None

    def __repr__(self) -> str:
        # never print a Redis password into a log
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["redis_url"] = redact_url(self.redis_url)
        return f"DaemonConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def redacted_redis_url(self) -> str:
        """``redis_url`` fit for logs: any password replaced by ``***``."""
        return redact_url(self.redis_url)


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


# --- value parsers: accept the text of the file or of an option, or an already typed value


class _Invalid(Exception):
    """The reason a value is refused, completed with file and key by the caller."""


def _describe(value: object) -> str:
    return repr(value)


def _text(value: object) -> str:
    if isinstance(value, str):
        return value.strip()
    raise _Invalid(f"must be a string, not {_describe(value)}")


def _int(minimum: int, maximum: int | None, what: str) -> Callable[[object], int]:
    def parse(value: object) -> int:
        if isinstance(value, bool):
            raise _Invalid(f"must be {what}, not {_describe(value)}")
        if isinstance(value, int):
            number = value
        else:
            text = _text(value).replace("_", "")
            if not re.fullmatch(r"[+-]?[0-9]+", text):
                raise _Invalid(f"must be {what}, not {_describe(value)}")
            number = int(text)
        if number < minimum or (maximum is not None and number > maximum):
            raise _Invalid(f"must be {what}, not {_describe(value)}")
        return number

    return parse


def _float(minimum: float, exclusive: bool, what: str) -> Callable[[object], float]:
    def parse(value: object) -> float:
        if isinstance(value, bool):
            raise _Invalid(f"must be {what}, not {_describe(value)}")
        if isinstance(value, int | float):
            number = float(value)
        else:
            text = _text(value)
            try:
                number = float(text)
            except ValueError:
                raise _Invalid(f"must be {what}, not {_describe(value)}") from None
        if not math.isfinite(number):
            raise _Invalid(f"must be {what}, not {_describe(value)}")
        if number < minimum or (exclusive and number == minimum):
            raise _Invalid(f"must be {what}, not {_describe(value)}")
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
    raise _Invalid(f"must be yes or no (true/false, on/off, 1/0), not {_describe(value)}")


def _items(value: object) -> list[str]:
    """A list from text (comma and/or space separated) or from a sequence of such texts."""
    if isinstance(value, str):
        chunks: Iterable[object] = [value]
    elif isinstance(value, list | tuple):
        chunks = value
    else:
        raise _Invalid(f"must be a list, not {_describe(value)}")
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
            raise _Invalid(f"{item!r} is not a network ({e})") from None
        if str(network) not in networks:
            networks.append(str(network))
    return tuple(networks)


_NAME_PATTERN = re.compile(r"[A-Za-z0-9*?.\[\]!_-]{1,253}")


def _name_patterns(value: object) -> tuple[str, ...]:
    patterns: list[str] = []
    for item in _items(value):
        if not _NAME_PATTERN.fullmatch(item):
            raise _Invalid(f"{item!r} is not a hostname pattern (letters, digits, . - _ * ? [ ])")
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
        raise _Invalid("must be a path, not empty")
    return text


_NAME = re.compile(r"[A-Za-z0-9_.:@/+-]+")


def _name(what: str) -> Callable[[object], str]:
    def parse(value: object) -> str:
        text = _text(value)
        if not _NAME.fullmatch(text):
            raise _Invalid(f"must be {what} (letters, digits and _.:@/+-), not {_describe(value)}")
        return text

    return parse


def _key_prefix(value: object) -> str:
    text = _text(value)
    if text and not _NAME.fullmatch(text):
        raise _Invalid(f"must be letters, digits and _.:@/+-, not {_describe(value)}")
    return text


def _redis_url(value: object) -> str:
    text = _text(value)
    scheme = text.partition("://")[0].lower() if "://" in text else ""
    if scheme not in REDIS_URL_SCHEMES:
        allowed = ", ".join(f"{s}://" for s in REDIS_URL_SCHEMES)
        raise _Invalid(f"must be a URL starting with {allowed}, not {redact_url(text)!r}")
    if scheme.endswith("+sentinel"):
        # imported here: `import vscand.daemon.tap` (twistd's plugin scan) must stay light
        from vscand.queue.redis_url import parse_redis_url  # noqa: PLC0415

        try:
            parse_redis_url(text)
        except ValueError as e:
            raise _Invalid(f"{e}: {redact_url(text)!r}") from None
        return text
    parts = urlsplit(text)
    if scheme == "unix":
        if not parts.path:
            raise _Invalid(f"unix:// needs a socket path, not {redact_url(text)!r}")
    else:
        try:
            port = parts.port
        except ValueError:
            raise _Invalid(f"has a bad port: {redact_url(text)!r}") from None
        if not parts.hostname or port == 0:
            raise _Invalid(f"needs a host: {redact_url(text)!r}")
    return text


def _regex_engine(value: object) -> str:
    # imported here: `import vscand.daemon.tap` (twistd's plugin scan) must not load vscand.probes
    from vscand.probes.engine import EngineSpecError, check_spec  # noqa: PLC0415

    try:
        return check_spec(_text(value))
    except EngineSpecError as e:
        raise _Invalid(str(e)) from None


def _log_format(value: object) -> LogFormat:
    text = _text(value).lower()
    if text not in ("text", "json"):
        raise _Invalid(f"must be text or json, not {_describe(value)}")
    return cast(LogFormat, text)


_KEYS: dict[str, Callable[[object], object]] = {
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
_OPTIONAL = frozenset({"probes_file", "services_file", "job_key_file"})

KEYS: tuple[str, ...] = tuple(_KEYS)
"""Every configuration key, in the order of ``etc/vscand.conf``."""


def _unknown(key: str, where: str) -> ConfigError:
    close = difflib.get_close_matches(key, KEYS, n=1)
    hint = f" (did you mean {close[0]!r}?)" if close else ""
    return ConfigError(f"{where}: unknown key {key!r}{hint}")


def _read_file(path: str, *, required: bool) -> dict[str, str]:
    """The ``[vscand]`` section of *path* as raw text, keys normalised to ``snake_case``."""
    parser = configparser.ConfigParser(
        interpolation=None,  # a Redis password may contain '%'
        inline_comment_prefixes=("#", ";"),
        strict=True,
        empty_lines_in_values=False,
        default_section="\x00no default section",
    )
    parser.optionxform = str  # type: ignore[assignment,method-assign]
    try:
        with open(path, encoding="utf-8") as f:
            parser.read_file(f, source=path)
    except FileNotFoundError:
        if required:
            raise ConfigError(f"{path}: no such file") from None
        return {}
    except (OSError, UnicodeDecodeError) as e:
        reason = e.strerror if isinstance(e, OSError) and e.strerror else str(e)
        raise ConfigError(f"{path}: cannot read: {reason}") from None
    except configparser.Error as e:
        message = " ".join(str(e).split())
        raise ConfigError(f"{path}: {message}") from None
    others = [s for s in parser.sections() if s != SECTION]
    if others:
        raise ConfigError(f"{path}: unknown section [{others[0]}] (only [{SECTION}])")
    if not parser.has_section(SECTION):
        return {}
    raw: dict[str, str] = {}
    for name, value in parser.items(SECTION):
        raw[name.replace("-", "_")] = value
    return raw


def _parse(key: str, value: object, where: str) -> object:
    """*where*: ``PATH: KEY`` for the file, ``--OPTION`` or ``$VARIABLE`` otherwise."""
    try:
        return _KEYS[key](value)
    except _Invalid as e:
        raise ConfigError(f"{where}: {e}") from None


def _resolve_credential(path: str | None, environ: Mapping[str, str]) -> str | None:
    credentials = environ.get("CREDENTIALS_DIRECTORY")
    if path is None or os.path.isabs(path) or not credentials:
        return path
    return os.path.join(credentials, path)


def load_config(
    path: str | None,
    overrides: Mapping[str, object],
    *,
    environ: Mapping[str, str] | None = None,
) -> DaemonConfig:
    """The configuration from *path* (default ``/etc/vscand/vscand.conf``) and *overrides*.

    *overrides* maps keys (``_`` or ``-``) to option values; ``None`` means "not given".
    A missing default file is fine; a missing file given explicitly is an error. Raises
    :class:`ConfigError` with a one-line message naming the file (or option) and key.
    """
    env = os.environ if environ is None else environ
    file_path = DEFAULT_CONFIG_PATH if path is None else path
    values: dict[str, object] = {}
    for key, text in _read_file(file_path, required=path is not None).items():
        if key not in _KEYS:
            raise _unknown(key, file_path)
        values[key] = _parse(key, text, f"{file_path}: {key}")
    env_url = env.get(REDIS_URL_ENV)
    if env_url:
        values["redis_url"] = _parse("redis_url", env_url, f"${REDIS_URL_ENV}")
    for name, value in overrides.items():
        key = name.replace("-", "_")
        if key not in _KEYS:
            raise _unknown(key, "options")
        if value is None:
            continue
        values[key] = _parse(key, value, f"--{key.replace('_', '-')}")
    values["job_key_file"] = _resolve_credential(
        cast("str | None", values.get("job_key_file")), env
    )
    if "cache_dir" not in values:
        values["cache_dir"] = default_cache_dir(env)
    return DaemonConfig(**values)  # type: ignore[arg-type]


def redis_url_for_cli(
    option: str | None,
    config_path: str | None,
    *,
    environ: Mapping[str, str] | None = None,
) -> str:
    """Where fleet commands (``vscan submit`` …) find Redis.

    ``--redis-url``, else ``$VSCAND_REDIS_URL``, else ``redis_url`` in the config file
    (``--config``, default ``/etc/vscand/vscand.conf``; only that key is read, so a
    daemon setting this version does not know cannot break the CLI), else the default.
    """
    env = os.environ if environ is None else environ
    if option:
        return cast(str, _parse("redis_url", option, "--redis-url"))
    env_url = env.get(REDIS_URL_ENV)
    if env_url:
        return cast(str, _parse("redis_url", env_url, f"${REDIS_URL_ENV}"))
    file_path = DEFAULT_CONFIG_PATH if config_path is None else config_path
    raw = _read_file(file_path, required=config_path is not None)
    if "redis_url" in raw:
        return cast(str, _parse("redis_url", raw["redis_url"], f"{file_path}: redis_url"))
    return DEFAULT_REDIS_URL
