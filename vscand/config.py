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
import os
import socket
from collections.abc import Mapping
from dataclasses import dataclass, field, fields
from typing import cast

from vscand.cachedir import user_cache_dir
from vscand.config_values import KEYS, OPTIONAL, PARSERS, Invalid, LogFormat, redact_url
from vscand.targets.defaults import DEFAULT_ALLOW, DEFAULT_DENY

DEFAULT_CONFIG_PATH = "/etc/vscand/vscand.conf"
SECTION = "vscand"
DEFAULT_REDIS_URL = "redis://127.0.0.1:6379/0"
REDIS_URL_ENV = "VSCAND_REDIS_URL"
SYSTEM_CACHE_DIR = "/var/cache/vscand"


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
    deny: tuple[str, ...] = DEFAULT_DENY
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
            if value is None and f.name in OPTIONAL:
                continue
            try:
                object.__setattr__(self, f.name, PARSERS[f.name](value))
            except Invalid as e:
                raise ConfigError(f"DaemonConfig: {f.name}: {e}") from None

    def __repr__(self) -> str:
        # never print a Redis password into a log
        shown = {f.name: getattr(self, f.name) for f in fields(self)}
        shown["redis_url"] = redact_url(self.redis_url)
        return f"DaemonConfig({', '.join(f'{k}={v!r}' for k, v in shown.items())})"

    def redacted_redis_url(self) -> str:
        """``redis_url`` fit for logs: any password replaced by ``***``."""
        return redact_url(self.redis_url)


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
        return PARSERS[key](value)
    except Invalid as e:
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
        if key not in PARSERS:
            raise _unknown(key, file_path)
        values[key] = _parse(key, text, f"{file_path}: {key}")
    env_url = env.get(REDIS_URL_ENV)
    if env_url:
        values["redis_url"] = _parse("redis_url", env_url, f"${REDIS_URL_ENV}")
    for name, value in overrides.items():
        key = name.replace("-", "_")
        if key not in PARSERS:
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
