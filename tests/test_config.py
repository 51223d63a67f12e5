"""The daemon configuration: file, options, environment, and the errors a user sees."""

from __future__ import annotations

import dataclasses
import re
from pathlib import Path

import pytest

from vscand import config as config_mod
from vscand.config import (
    KEYS,
    ConfigError,
    DaemonConfig,
    load_config,
    redis_url_for_cli,
)

REPO = Path(__file__).resolve().parent.parent
SHIPPED = REPO / "etc" / "vscand.conf"


def write(tmp_path: Path, text: str, name: str = "vscand.conf") -> str:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return str(path)


@pytest.fixture(autouse=True)
def no_default_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Never read the host's /etc/vscand/vscand.conf, nor its environment."""
    monkeypatch.setattr(config_mod, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.conf"))
    for name in ("VSCAND_REDIS_URL", "CREDENTIALS_DIRECTORY", "CACHE_DIRECTORY"):
        monkeypatch.delenv(name, raising=False)


def test_defaults_are_designs() -> None:
    c = load_config(None, {}, environ={"VSCAND_CACHE_DIR": "/c"})
    assert c.redis_url == "redis://127.0.0.1:6379/0"
    assert c.queue == "default"
    assert c.consumer.endswith(":main") and len(c.consumer) > len(":main")
    assert (c.concurrency, c.per_host_concurrency, c.connect_rate) == (1000, 0, 0.0)
    assert c.allow == ("127.0.0.0/8", "::1/128") and c.deny == ()
    assert (c.probes_file, c.extra_probes, c.intensity) == (None, (), 7)
    assert c.services_file is None, "beside probes_file, else the usual places"
    assert (c.job_idle_ms, c.max_deliveries, c.results_maxlen) == (120000, 3, 100000)
    assert (c.metrics_port, c.log_format, c.key_prefix) == (0, "text", "vscand:")
    assert (c.job_key_file, c.max_job_bytes, c.max_job_port_tasks) == (None, 65536, 1000000)
    assert (c.drain_timeout, c.block_ms, c.command_timeout) == (25.0, 5000, 5.0)
    assert c.watchdog is True
    assert c.cache_dir == "/c"


def test_consumer_is_stable_across_restarts() -> None:
    assert DaemonConfig().consumer == DaemonConfig().consumer


def test_shipped_file_documents_every_key_with_its_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # the cache directory's default follows the environment: hold it the same on both sides
    for name in ("VSCAND_CACHE_DIR", "CACHE_DIRECTORY", "XDG_CACHE_HOME"):
        monkeypatch.delenv(name, raising=False)
    text = SHIPPED.read_text(encoding="utf-8")
    lines = text.splitlines()
    for key in KEYS:
        [index] = [i for i, line in enumerate(lines) if re.match(rf"#?{key} =", line)]
        assert lines[index - 1].startswith("#"), f"{key} has no comment above it"
    shipped = load_config(str(SHIPPED), {}, environ={})
    default = DaemonConfig()
    assert dataclasses.asdict(shipped) == dataclasses.asdict(default)


def test_file_values_lists_and_types(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        """
[vscand]
redis_url = rediss://:p%ss@redis.example:6380/2   # inline comment
queue = dc1
consumer = host-a:1
concurrency = 5_000
per_host_concurrency = 4
connect_rate = 0.5
allow = 10.0.0.0/8, 192.168.0.0/16 2001:db8::/32
deny = 10.9.0.0/16
probes_file = /opt/nmap-service-probes
extra_probes = a.probes,b.probes
services_file = /opt/nmap-services
intensity = 9
watchdog = off
log_format = JSON
job_key_file = /etc/vscand/job.key
drain_timeout = 10
""",
    )
    c = load_config(path, {}, environ={})
    assert c.redis_url == "rediss://:p%ss@redis.example:6380/2"
    assert (c.queue, c.consumer, c.concurrency) == ("dc1", "host-a:1", 5000)
    assert (c.per_host_concurrency, c.connect_rate) == (4, 0.5)
    assert c.allow == ("10.0.0.0/8", "192.168.0.0/16", "2001:db8::/32")
    assert c.deny == ("10.9.0.0/16",)
    assert c.probes_file == "/opt/nmap-service-probes"
    assert c.extra_probes == ("a.probes", "b.probes")
    assert c.services_file == "/opt/nmap-services"
    assert (c.intensity, c.watchdog, c.log_format) == (9, False, "json")
    assert c.job_key_file == "/etc/vscand/job.key"
    assert c.drain_timeout == 10.0


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ("concurrency = x", "concurrency: must be a positive integer, not 'x'"),
        ("concurrency = 0", "concurrency: must be a positive integer, not '0'"),
        ("concurrency = 1.5", "concurrency: must be a positive integer, not '1.5'"),
        ("per_host_concurrency = -1", "per_host_concurrency: must be a non-negative integer"),
        ("intensity = 10", "intensity: must be an integer from 0 to 9, not '10'"),
        ("metrics_port = 70000", "metrics_port: must be a port number from 0 to 65535"),
        ("connect_rate = fast", "connect_rate: must be a non-negative number"),
        ("connect_rate = nan", "connect_rate: must be a non-negative number"),
        ("command_timeout = 0", "command_timeout: must be a positive number of seconds"),
        ("watchdog = maybe", "watchdog: must be yes or no"),
        ("log_format = xml", "log_format: must be text or json, not 'xml'"),
        ("allow = 10.0.0.1/8", "allow: '10.0.0.1/8' is not a network (10.0.0.1/8 has host bits"),
        ("deny = example.com", "deny: 'example.com' is not a network"),
        ("redis_url = http://x", "redis_url: must be a URL starting with redis://"),
        ("redis_url = redis://", "redis_url: needs a host"),
        ("queue = two words", "queue: must be a queue name"),
        ("cache_dir =", "cache_dir: must be a path, not empty"),
    ],
)
def test_bad_values_name_file_key_and_value(tmp_path: Path, line: str, message: str) -> None:
    path = write(tmp_path, f"[vscand]\n{line}\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, {}, environ={})
    assert str(e.value).startswith(f"{path}: {message}")
    assert "\n" not in str(e.value)


def test_exact_message_for_the_classic_mistake(tmp_path: Path) -> None:
    path = write(tmp_path, "[vscand]\nconcurrency = x\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, {}, environ={})
    assert str(e.value) == f"{path}: concurrency: must be a positive integer, not 'x'"


def test_password_never_appears_in_errors_or_repr(tmp_path: Path) -> None:
    path = write(tmp_path, "[vscand]\nredis_url = redis://:hunter2@:99999/0\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, {}, environ={})
    assert "hunter2" not in str(e.value)
    c = DaemonConfig(redis_url="redis://user:hunter2@h:6379/0")
    assert "hunter2" not in repr(c)
    assert c.redacted_redis_url() == "redis://user:***@h:6379/0"


def test_unknown_key_is_rejected_with_a_suggestion(tmp_path: Path) -> None:
    path = write(tmp_path, "[vscand]\nconcurency = 10\n")
    with pytest.raises(ConfigError) as e:
        load_config(path, {}, environ={})
    assert str(e.value) == f"{path}: unknown key 'concurency' (did you mean 'concurrency'?)"


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[vscan]\nqueue = a\n", "unknown section [vscan]"),
        ("[DEFAULT]\nqueue = a\n", "unknown section [DEFAULT]"),
        ("queue = a\n", "File contains no section headers"),
        ("[vscand]\nqueue = a\nqueue = b\n", "option 'queue' in section 'vscand' already exists"),
    ],
)
def test_malformed_files(tmp_path: Path, text: str, message: str) -> None:
    path = write(tmp_path, text)
    with pytest.raises(ConfigError, match=re.escape(message)):
        load_config(path, {}, environ={})


def test_dashed_keys_are_accepted_in_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[vscand]\nmetrics-port = 9109\n")
    assert load_config(path, {}, environ={}).metrics_port == 9109


def test_missing_default_file_is_fine_missing_given_file_is_not(tmp_path: Path) -> None:
    assert load_config(None, {}, environ={}).queue == "default"
    missing = str(tmp_path / "nope.conf")
    with pytest.raises(ConfigError, match=re.escape(f"{missing}: no such file")):
        load_config(missing, {}, environ={})


def test_unreadable_file_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="cannot read"):
        load_config(str(tmp_path), {}, environ={})  # a directory


def test_options_win_over_the_file(tmp_path: Path) -> None:
    path = write(tmp_path, "[vscand]\nconcurrency = 10\nqueue = a\nallow = 10.0.0.0/8\n")
    c = load_config(
        path,
        {"concurrency": "20", "queue": None, "metrics-port": 9109, "allow": ["::1/128"]},
        environ={},
    )
    assert (c.concurrency, c.queue, c.metrics_port, c.allow) == (20, "a", 9109, ("::1/128",))


def test_bad_option_names_the_option() -> None:
    with pytest.raises(ConfigError) as e:
        load_config(None, {"concurrency": "x"}, environ={})
    assert str(e.value) == "--concurrency: must be a positive integer, not 'x'"
    with pytest.raises(ConfigError, match="unknown key 'bogus'"):
        load_config(None, {"bogus": "1"}, environ={})


def test_redis_url_precedence_for_the_daemon(tmp_path: Path) -> None:
    path = write(tmp_path, "[vscand]\nredis_url = redis://file:6379/0\n")
    env = {"VSCAND_REDIS_URL": "redis://env:6379/0"}
    assert load_config(path, {}, environ={}).redis_url == "redis://file:6379/0"
    assert load_config(path, {}, environ=env).redis_url == "redis://env:6379/0"
    option = {"redis_url": "unix:///run/redis.sock"}
    assert load_config(path, option, environ=env).redis_url == "unix:///run/redis.sock"
    with pytest.raises(ConfigError, match=r"^\$VSCAND_REDIS_URL: must be a URL"):
        load_config(path, {}, environ={"VSCAND_REDIS_URL": "nope"})


def test_redis_url_for_cli(tmp_path: Path) -> None:
    path = write(tmp_path, "[vscand]\nredis_url = redis://file:6379/0\nsome_future_key = 1\n")
    env = {"VSCAND_REDIS_URL": "redis://env:6379/0"}
    assert redis_url_for_cli("redis://opt:1/0", path, environ=env) == "redis://opt:1/0"
    assert redis_url_for_cli(None, path, environ=env) == "redis://env:6379/0"
    assert redis_url_for_cli(None, path, environ={}) == "redis://file:6379/0"
    assert redis_url_for_cli(None, None, environ={}) == "redis://127.0.0.1:6379/0"
    with pytest.raises(ConfigError, match="no such file"):
        redis_url_for_cli(None, str(tmp_path / "nope.conf"), environ={})
    with pytest.raises(ConfigError, match=r"^--redis-url: "):
        redis_url_for_cli("localhost", None, environ={})


def test_job_key_file_relative_to_systemd_credentials(tmp_path: Path) -> None:
    path = write(tmp_path, "[vscand]\njob_key_file = vscand-job.key\n")
    creds = {"CREDENTIALS_DIRECTORY": "/run/credentials/vscand.service"}
    c = load_config(path, {}, environ=creds)
    assert c.job_key_file == "/run/credentials/vscand.service/vscand-job.key"
    assert load_config(path, {}, environ={}).job_key_file == "vscand-job.key"
    absolute = load_config(path, {"job_key_file": "/k"}, environ=creds)
    assert absolute.job_key_file == "/k"


def test_cache_dir_default(tmp_path: Path) -> None:
    assert load_config(None, {}, environ={"VSCAND_CACHE_DIR": "/a"}).cache_dir == "/a"
    systemd = {"CACHE_DIRECTORY": "/var/cache/vscand:/var/cache/other"}
    assert load_config(None, {}, environ=systemd).cache_dir == "/var/cache/vscand"
    xdg = load_config(None, {}, environ={"XDG_CACHE_HOME": str(tmp_path)}).cache_dir
    assert xdg in (config_mod.SYSTEM_CACHE_DIR, str(tmp_path / "vscand"))
    assert load_config(None, {"cache_dir": "/b"}, environ={}).cache_dir == "/b"


def test_direct_construction_is_validated_and_normalised() -> None:
    c = DaemonConfig(allow=["10.0.0.0/8 ::1/128"], extra_probes=["x.probes"])  # type: ignore[arg-type]
    assert c.allow == ("10.0.0.0/8", "::1/128")
    assert c.extra_probes == ("x.probes",)
    with pytest.raises(ConfigError, match=r"^DaemonConfig: concurrency: must be a positive"):
        DaemonConfig(concurrency=0)
    with pytest.raises(ConfigError, match=r"^DaemonConfig: watchdog: "):
        DaemonConfig(watchdog="perhaps")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^DaemonConfig: concurrency: "):
        DaemonConfig(concurrency=True)
    with pytest.raises(dataclasses.FrozenInstanceError):
        c.queue = "x"  # type: ignore[misc]
