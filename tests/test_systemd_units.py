"""The shipped systemd units: hardened (systemd-analyze security), valid, and in step with
the daemon's configuration (notify, watchdog, stop timeout above the drain budget)."""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vscand.config import DaemonConfig

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
MAX_EXPOSURE = 2.0

needs_systemd_analyze = pytest.mark.skipif(
    shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed"
)


def directives(path: Path) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    for raw in path.read_text().splitlines():
        line = raw.strip()
        if not line or line.startswith(("#", ";", "[")):
            continue
        key, _, value = line.partition("=")
        found.setdefault(key.strip(), []).append(value.strip())
    return found


def installed_copy(tmp_path: Path, unit: str, name: str) -> Path:
    """The unit under *name*, ExecStart pointing at this venv's twistd (verify checks it)."""
    text = (UNITS / unit).read_text()
    twistd = Path(sys.executable).parent / "twistd"
    path = tmp_path / name
    path.write_text(text.replace("/usr/bin/twistd", str(twistd)))
    return path


def exposure(path: Path) -> float:
    result = subprocess.run(
        ["systemd-analyze", "security", "--offline=true", "--no-pager", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    match = re.search(r"Overall exposure level for \S+: ([0-9.]+)", result.stdout)
    assert match, result.stdout + result.stderr
    return float(match.group(1))


@needs_systemd_analyze
@pytest.mark.parametrize(("unit", "name"), [("vscand.service", "vscand.service"),
                                            ("vscand@.service", "vscand@dc1.service")])  # fmt: skip
def test_exposure_is_low(tmp_path: Path, unit: str, name: str) -> None:
    score = exposure(installed_copy(tmp_path, unit, name))
    assert score <= MAX_EXPOSURE, f"{unit}: exposure {score} > {MAX_EXPOSURE}"


@needs_systemd_analyze
@pytest.mark.parametrize(("unit", "name"), [("vscand.service", "vscand.service"),
                                            ("vscand@.service", "vscand@dc1.service")])  # fmt: skip
def test_units_verify(tmp_path: Path, unit: str, name: str) -> None:
    path = installed_copy(tmp_path, unit, name)
    result = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vscand" not in result.stderr, result.stderr


def test_liveness_settings_match_the_daemon() -> None:
    unit = directives(UNITS / "vscand.service")
    assert unit["Type"] == ["notify"]
    assert unit["WatchdogSec"] == ["30"]
    assert unit["KillMode"] == ["mixed"]
    assert unit["Restart"] == ["on-failure"]
    assert float(unit["TimeoutStopSec"][0]) > DaemonConfig().drain_timeout
    [exec_start] = unit["ExecStart"]
    assert "--nodaemon" in exec_start and "--pidfile= " in exec_start
    assert exec_start.split().index("vscand") > exec_start.split().index("--nodaemon")
    assert "--config /etc/vscand/vscand.conf" in exec_start


def test_hardening_settings() -> None:
    unit = directives(UNITS / "vscand.service")
    for key, value in {
        "DynamicUser": "yes",
        "CapabilityBoundingSet": "",
        "NoNewPrivileges": "yes",
        "ProtectSystem": "strict",
        "ProtectHome": "yes",
        "PrivateTmp": "yes",
        "PrivateDevices": "yes",
        "ProtectProc": "invisible",
        "ProcSubset": "pid",
        "RestrictAddressFamilies": "AF_INET AF_INET6 AF_UNIX",
        "SystemCallArchitectures": "native",
        "OOMPolicy": "stop",
        "UMask": "0077",
        "CacheDirectory": "vscand",
    }.items():
        assert unit.get(key) == [value], key
    assert unit["SystemCallFilter"] == ["@system-service", "~@privileged @resources"]
    for key in ("MemoryMax", "MemoryHigh", "TasksMax", "LimitNOFILE", "LoadCredential"):
        assert key in unit, key
    # cffi callbacks (pyOpenSSL, Twisted TLS) need writable+executable memory
    assert "MemoryDenyWriteExecute" not in unit


def test_template_differs_only_by_instance() -> None:
    single = directives(UNITS / "vscand.service")
    template = directives(UNITS / "vscand@.service")
    assert template["ExecStart"] == [
        "/usr/bin/twistd --nodaemon --pidfile= vscand --config /etc/vscand/%i.conf --consumer %H:%i"
    ]
    assert template["CacheDirectory"] == ["vscand/%i"]
    differing = {k for k in single.keys() | template.keys() if single.get(k) != template.get(k)}
    assert differing == {
        "Description",
        "Documentation",
        "ExecStart",
        "EnvironmentFile",
        "CacheDirectory",
    }
