"""``twistd vscand`` / ``twist vscand``: the command-line options and the service.

Every key of ``etc/vscand.conf`` has an option (the key with ``-`` for ``_``); an option
wins over the file. ``--allow``, ``--deny`` and ``--extra-probes`` may be repeated and
each takes a comma or space separated list.

Logs: ``log_format = json`` selects JSON lines on stdout (:mod:`vscand.daemon.logs`) while
the options are parsed.
"""

from __future__ import annotations

from typing import Any, ClassVar

from twisted.application.service import IService
from twisted.python import usage

from vscand.config import DEFAULT_CONFIG_PATH, ConfigError, DaemonConfig, load_config
from vscand.config_values import KEYS
from vscand.daemon.logs import select_json_logs, twist_chose_json

# option name → help; the order is etc/vscand.conf's
_HELP: dict[str, str] = {
    "redis_url": "Redis URL: redis://[:PASSWORD@]HOST:PORT/DB, rediss:// (TLS), "
    "unix:///PATH, redis+sentinel:// [default: $VSCAND_REDIS_URL, else "
    "redis://127.0.0.1:6379/0]",
    "queue": "jobs queue (vantage point) to consume [default: default]",
    "consumer": "consumer name in the group, stable across restarts [default: HOSTNAME:main]",
    "concurrency": "ports in flight [default: 1000]",
    "per_host_concurrency": "ports in flight per target address, 0 = unlimited [default: 0]",
    "max_jobs": "jobs (or tasks of a sharded job) run at once, 0 = min(64, concurrency) "
    "[default: 0]",
    "task_ports": "a job of more ports than this is split into tasks of this many ports that "
    "every worker of the queue can take [default: 256]",
    "connect_rate": "new connections per second, 0 = unlimited [default: 0]",
    "probes_file": "nmap-service-probes file [default: search /usr/share/nmap, /usr/local/...]",
    "services_file": "nmap-services file [default: the one beside probes_file, else search "
    "/usr/share/nmap, /usr/local/...]",
    "regex_engine": "regex library and limits: auto (the probe file's Nmap release), pcre "
    "(Nmap 7.93), pcre2 (Nmap 7.95) or nmap-X.Y [default: auto]",
    "intensity": "version intensity 0-9 for jobs that give none [default: 7]",
    "job_idle_ms": "lease: ms a job may stay pending on a silent worker before another worker "
    "reclaims it [default: 120000]",
    "max_deliveries": "deliveries before a job goes to the dead-letter stream [default: 3]",
    "results_maxlen": "approximate length of the fleet-wide results stream [default: 100000]",
    "job_retention": "seconds an ended job's status and results are kept, 0 = forever "
    "[default: 604800]",
    "metrics_port": "Prometheus metrics on 127.0.0.1:PORT, 0 = off [default: 0]",
    "log_format": "text or json [default: text]",
    "key_prefix": "prefix of every Redis key [default: vscand:]",
    "job_key_file": "key verifying signed jobs; when set, unsigned jobs are rejected "
    "(relative: in $CREDENTIALS_DIRECTORY) [default: none, unsigned jobs accepted]",
    "max_job_bytes": "largest job document accepted [default: 65536]",
    "max_job_port_tasks": "most (address, port) tasks one job may expand to [default: 1000000]",
    "allow_names": "hostnames jobs may name: shell patterns, comma separated (* = any); "
    "others are refused before any lookup [default: localhost]",
    "replica_confirm": "replicas that must hold a finished job's writes (WAIT) before its "
    "entry is acknowledged, 0 = off [default: 0]",
    "replica_confirm_timeout_ms": "milliseconds one WAIT waits before it is tried again "
    "[default: 5000]",
    "dead_maxlen": "approximate length of the dead-letter stream [default: 10000]",
    "dead_payload_bytes": "bytes of a refused job a dead letter keeps [default: 4096]",
    "drain_timeout": "seconds to finish in-flight work on stop before releasing it [default: 25]",
    "block_ms": "XREADGROUP BLOCK in milliseconds [default: 5000]",
    "command_timeout": "seconds before any other Redis command fails [default: 5]",
    "watchdog": "yes/no: send WATCHDOG=1 to systemd while the consumer makes progress "
    "[default: yes]",
    "cache_dir": "prefilter cache directory [default: $VSCAND_CACHE_DIR, $CACHE_DIRECTORY, "
    "/var/cache/vscand if writable, else ~/.cache/vscand]",
    "warn_interval": "seconds over which repeated warnings of one kind are counted, not "
    "logged (one line at once, then one count per interval) [default: 10]",
    "max_pending_writes": "result writes waiting for Redis before new ports wait too, "
    "0 = 2 x concurrency [default: 0]",
}
_REPEATABLE = ("allow", "deny", "extra_probes")


def _option(key: str) -> str:
    return key.replace("_", "-")


def _overrides(options: usage.Options) -> dict[str, object]:
    return {key: options.get(_option(key)) for key in KEYS}


class Options(usage.Options):
    """``twistd vscand [options]``."""

    synopsis = "[options]"
    longdesc = (
        "Consume version-detection jobs from Redis and write the results back. Every key "
        "of the config file can be given as an option (key with - for _); options win."
    )
    optParameters: ClassVar[list[list[Any]]] = [
        ["config", "c", None, f"INI config file [default: {DEFAULT_CONFIG_PATH}, if it exists]"],
        *([_option(key), None, None, _HELP[key]] for key in KEYS if key not in _REPEATABLE),
    ]

    #: the merged configuration, set by :meth:`postOptions`
    config: DaemonConfig | None = None

    def _append(self, key: str, value: str) -> None:
        name = _option(key)  # usage.Options keeps values under the dashed long name
        current = self.get(name)
        self[name] = [*current, value] if current is not None else [value]

    def opt_allow(self, networks: str) -> None:
        """allowed target networks, repeatable [default: 127.0.0.0/8 ::1/128]"""
        self._append("allow", networks)

    def opt_deny(self, networks: str) -> None:
        """denied target networks (deny wins), repeatable [default: none]"""
        self._append("deny", networks)

    def opt_extra_probes(self, paths: str) -> None:
        """extra probe files layered on the database, repeatable [default: none]"""
        self._append("extra_probes", paths)

    def opt_version(self) -> None:
        """print vscand's version and exit"""
        from importlib.metadata import PackageNotFoundError, version  # noqa: PLC0415

        try:
            ours = version("vscand")
        except PackageNotFoundError:
            ours = "(not installed)"
        print(f"vscand {ours}")
        raise SystemExit(0)

    def overrides(self) -> dict[str, object]:
        """The config keys given on the command line (``None``: not given)."""
        return _overrides(self)

    def postOptions(self) -> None:
        try:
            self.config = load_config(self["config"], self.overrides())
        except ConfigError as e:
            raise usage.UsageError(str(e)) from None
        parent = getattr(self, "parent", None)
        if self.config.log_format == "json" or twist_chose_json(parent):
            select_json_logs(parent)


def makeService(options: usage.Options) -> IService:
    """The daemon: :class:`vscand.daemon.worker.WorkerService` (the job intake and one
    ``TimerService`` per periodic duty under one ``MultiService``) with the merged
    configuration."""
    config = getattr(options, "config", None)
    if not isinstance(config, DaemonConfig):
        config = load_config(options.get("config"), _overrides(options))
    from vscand.daemon.worker import WorkerService  # noqa: PLC0415 - `--help` must stay light

    return WorkerService(config)
