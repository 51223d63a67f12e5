"""`twistd vscand`: the plugin is found, its options merge with the config file, and the
plugin module stays light."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import types
from pathlib import Path
from typing import Any

import pytest
from twisted.application.service import IService, Service
from twisted.logger import Logger
from twisted.python import usage
from twisted.scripts.twistd import ServerOptions

from tests.redis_server import RedisServer
from vscand import config as config_mod
from vscand.config import DaemonConfig
from vscand.config_values import KEYS
from vscand.daemon import logs, tap

BIN = Path(sys.executable).parent
REPO = Path(__file__).resolve().parent.parent


@pytest.fixture(autouse=True)
def no_default_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(config_mod, "DEFAULT_CONFIG_PATH", str(tmp_path / "absent.conf"))
    monkeypatch.delenv("VSCAND_REDIS_URL", raising=False)


def parse(*argv: str) -> tap.Options:
    options = tap.Options()
    options.parseOptions(list(argv))
    return options


def test_one_option_per_key() -> None:
    help_text = str(tap.Options())
    for key in KEYS:
        assert f"--{key.replace('_', '-')}=" in help_text, key
    assert "--config=" in help_text


def test_options_win_over_the_file(tmp_path: Path) -> None:
    conf = tmp_path / "vscand.conf"
    conf.write_text("[vscand]\nconcurrency = 10\nqueue = dc1\nmetrics_port = 9100\n")
    options = parse(
        "--config", str(conf), "--concurrency", "20", "--metrics-port", "9109",
        "--redis-url", "redis://r:6379/1", "--consumer", "host-a:2", "--watchdog", "no",
    )  # fmt: skip
    config = options.config
    assert config is not None
    assert (config.concurrency, config.queue, config.metrics_port) == (20, "dc1", 9109)
    assert (config.redis_url, config.consumer, config.watchdog) == (
        "redis://r:6379/1",
        "host-a:2",
        False,
    )


def test_repeatable_list_options() -> None:
    config = parse(
        "--allow", "10.0.0.0/8", "--allow", "192.0.2.0/24,2001:db8::/32",
        "--deny", "10.1.0.0/16", "--extra-probes", "a.probes", "--extra-probes", "b.probes",
    ).config  # fmt: skip
    assert config is not None
    assert config.allow == ("10.0.0.0/8", "192.0.2.0/24", "2001:db8::/32")
    assert config.deny == ("10.1.0.0/16",)
    assert config.extra_probes == ("a.probes", "b.probes")


def test_no_options_gives_the_defaults() -> None:
    config = parse().config
    assert config is not None and config.allow == ("127.0.0.0/8", "::1/128")
    assert config.concurrency == 1000


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--concurrency", "x"], "--concurrency: must be a positive integer, not 'x'"),
        (["--allow", "10.0.0.1/8"], "--allow: '10.0.0.1/8' is not a network"),
        (["--config", "/nonexistent/vscand.conf"], "/nonexistent/vscand.conf: no such file"),
        (["--log-format", "xml"], "--log-format: must be text or json, not 'xml'"),
    ],
)
def test_bad_options_are_usage_errors(argv: list[str], message: str) -> None:
    with pytest.raises(usage.UsageError) as e:
        parse(*argv)
    assert str(e.value).startswith(message)


def test_environment_redis_url_unless_option(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("VSCAND_REDIS_URL", "redis://env:6379/0")
    config = parse().config
    assert config is not None and config.redis_url == "redis://env:6379/0"
    config = parse("--redis-url", "redis://opt:6379/0").config
    assert config is not None and config.redis_url == "redis://opt:6379/0"


class FakeWorkerService(Service):
    def __init__(self, config: DaemonConfig, reactor: Any | None = None) -> None:
        self.config = config


def test_make_service_builds_the_worker(monkeypatch: pytest.MonkeyPatch) -> None:
    fake = types.ModuleType("vscand.daemon.worker")
    fake.WorkerService = FakeWorkerService  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "vscand.daemon.worker", fake)
    service = tap.makeService(parse("--queue", "dc2"))
    assert isinstance(service, FakeWorkerService) and IService.providedBy(service)
    assert service.config.queue == "dc2"


def twistd_options(*argv: str) -> ServerOptions:
    options = ServerOptions()
    options.parseOptions(list(argv))
    return options


def test_twistd_finds_the_plugin_and_its_options() -> None:
    options = twistd_options("--nodaemon", "vscand", "--queue", "dc3")
    assert options.subCommand == "vscand"
    assert options.subOptions.config.queue == "dc3"
    assert options["logger"] is None  # text logs: twistd's default observer


def test_json_logs_under_twistd(capsys: pytest.CaptureFixture[str]) -> None:
    options = twistd_options("--nodaemon", "vscand", "--log-format", "json")
    factory = options["logger"]
    assert factory is logs.json_log_observer  # imported by twistd itself
    observer = factory()
    Logger(namespace="vscand.test", observer=observer).info("scanned {port}", port=22)
    [line] = capsys.readouterr().out.splitlines()
    event = json.loads(line)
    assert (event["port"], event["log_namespace"]) == (22, "vscand.test")


def test_explicit_logger_wins_over_log_format() -> None:
    options = twistd_options(
        "--nodaemon", "--logger", "twisted.logger.textFileLogObserver", "vscand",
        "--log-format", "json",
    )  # fmt: skip
    assert options["logger"].__name__ == "textFileLogObserver"


def test_json_logs_need_stdout_under_twistd() -> None:
    with pytest.raises(usage.UsageError, match="--nodaemon"):
        twistd_options("vscand", "--log-format", "json")


def test_json_logs_under_twist() -> None:
    # what `twist` passes as parent (its options install a reactor, so imitate them)
    parent = usage.Options()
    parent["logFile"] = sys.stdout
    options = tap.Options()
    options.parent = parent
    options.parseOptions(["--log-format", "json"])
    assert parent["fileLogObserverFactory"] is logs.json_log_observer
    explicit = usage.Options()
    explicit["logFile"] = sys.stdout
    explicit["fileLogObserverFactory"] = "twist --log-format text"
    options = tap.Options()
    options.parent = explicit
    options.parseOptions(["--log-format", "json"])
    assert explicit["fileLogObserverFactory"] == "twist --log-format text"


@pytest.mark.parametrize("runner", ["twistd", "twist"])
def test_help_smoke(runner: str) -> None:
    """The installed command finds the plugin (a broken plugin import just vanishes)."""
    result = subprocess.run(
        [str(BIN / runner), "vscand", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stderr
    assert f"Usage: {runner} [options]" in result.stdout
    for key in KEYS:
        assert f"--{key.replace('_', '-')}=" in result.stdout, key


def test_plugin_module_imports_nothing_heavy() -> None:
    code = (
        "import sys\n"
        "import twisted.plugins.vscand_plugin as p\n"
        "assert p.vscand.tapname == 'vscand'\n"
        "heavy = [m for m in sys.modules if m == 'twisted.internet.reactor' "
        "or m.startswith('vscand') or m.startswith('txredisapi')]\n"
        "print(repr(heavy))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_plugin_listing_does_not_import_the_daemon() -> None:
    code = (
        "import sys\n"
        "from twisted.plugin import getPlugins\n"
        "from twisted.application.service import IServiceMaker\n"
        "names = [p.tapname for p in getPlugins(IServiceMaker)]\n"
        "assert 'vscand' in names, names\n"
        "print(sorted(m for m in sys.modules if m.startswith('vscand') "
        "or m == 'twisted.internet.reactor'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_tap_module_stays_light() -> None:
    code = (
        "import sys\n"
        "import vscand.daemon.tap\n"
        "print(sorted(m for m in sys.modules if m.startswith(('vscand.scan', 'vscand.probes',"
        " 'vscand.queue', 'txredisapi')) or m == 'twisted.internet.reactor'))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=True
    )
    assert result.stdout.strip() == "[]"


def test_no_init_in_the_plugin_directories() -> None:
    assert not (REPO / "twisted" / "__init__.py").exists()
    assert not (REPO / "twisted" / "plugins" / "__init__.py").exists()
    source = (REPO / "twisted" / "plugins" / "vscand_plugin.py").read_text()
    imports = [line for line in source.splitlines() if line.startswith(("import", "from"))]
    assert imports == ["from twisted.application.service import ServiceMaker"]


def test_version_option() -> None:
    """``twist vscand --version`` (and ``twistd vscand --version``) print vscand's version."""
    twist = str(Path(sys.executable).with_name("twist"))
    result = subprocess.run(
        [twist, "vscand", "--version"], capture_output=True, text=True, timeout=60, check=False
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("vscand 0."), result.stdout


def test_twist_logs_json_lines_a_pipeline_reads_as_they_are(
    redis_server: RedisServer, tmp_path: Path
) -> None:
    """``twist vscand`` with stdout not a terminal: one JSON object per line, no RFC 7464
    separator, with ``time`` (ISO 8601 UTC), ``level`` (its name) and the rendered
    ``message`` first; a clean stop adds no warning."""
    from tests.daemon_harness import CACHE_DIR, warm_prefilter_cache

    warm_prefilter_cache()
    config = tmp_path / "vscand.conf"
    config.write_text("[vscand]\n")
    env = {k: v for k, v in os.environ.items() if k not in ("NOTIFY_SOCKET", "VSCAND_REDIS_URL")}
    env["VSCAND_CACHE_DIR"] = CACHE_DIR
    twist = str(Path(sys.executable).with_name("twist"))
    proc = subprocess.Popen(
        [twist, "vscand", "--config", str(config), "--redis-url", redis_server.url,
         "--consumer", "logs:1", "--block-ms", "200"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env,
    )  # fmt: skip
    assert proc.stdout is not None
    lines = []
    for raw in proc.stdout:
        lines.append(raw)
        if b"vscand ready" in raw:
            break
    proc.send_signal(signal.SIGTERM)
    rest, _ = proc.communicate(timeout=60)
    lines += rest.splitlines(keepends=True)
    events = [json.loads(line) for line in lines if line.strip()]  # every line is JSON
    assert not any(line.startswith(b"\x1e") for line in lines)
    for event in events:
        assert list(event)[:4] == ["time", "level", "message", "namespace"], event
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}Z", event["time"]), event
    assert {"level": "info", "message": "vscand ready: consumer logs:1"}.items() <= next(
        e for e in events if e["message"].startswith("vscand ready")
    ).items()
    assert [e["message"] for e in events if e["level"] in ("warn", "error", "critical")] == []
