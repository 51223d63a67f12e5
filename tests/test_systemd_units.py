"""The shipped systemd units: hardened (systemd-analyze security), valid, and in step with
the daemon's configuration (notify, watchdog, stop timeout above the drain budget)."""

from __future__ import annotations

import ipaddress
import re
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from vscand.config import DaemonConfig

REPO = Path(__file__).resolve().parent.parent
UNITS = REPO / "systemd"
#: 1.1 without the address restriction (IPAddressDeny=any), 0.9 with it (localhost only),
#: 1.0 with the example drop-in's non-localhost networks: systemd 252's offline score
MAX_EXPOSURE = 1.1
DROP_IN = UNITS / "vscand.service.d" / "networks.conf.example"

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


def installed_copy(tmp_path: Path, unit: str, name: str, drop_in: str | None = None) -> Path:
    """The unit under *name*, ExecStart pointing at this venv's twistd (verify checks it);
    with *drop_in*, that text as ``NAME.d/networks.conf`` beside it (systemd-analyze reads
    the drop-in directory next to a unit file it is given)."""
    text = (UNITS / unit).read_text()
    twistd = Path(sys.executable).parent / "twistd"
    path = tmp_path / name
    path.write_text(text.replace("/usr/bin/twistd", str(twistd)))
    if drop_in is not None:
        directory = tmp_path / f"{name}.d"
        directory.mkdir()
        (directory / "networks.conf").write_text(drop_in)
    return path


def verify(path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["systemd-analyze", "verify", "--man=no", str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


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
    path = installed_copy(tmp_path, unit, name)
    score = exposure(path)
    assert score <= MAX_EXPOSURE, f"{unit}: exposure {score} > {MAX_EXPOSURE}"
    # the address restriction counts: the same unit without it scores worse
    (tmp_path / "open").mkdir()
    unrestricted = tmp_path / "open" / name
    unrestricted.write_text(
        "".join(
            line
            for line in path.read_text().splitlines(keepends=True)
            if not line.startswith(("IPAddressDeny=", "IPAddressAllow="))
        )
    )
    assert exposure(unrestricted) > score


@needs_systemd_analyze
@pytest.mark.parametrize(("unit", "name"), [("vscand.service", "vscand.service"),
                                            ("vscand@.service", "vscand@dc1.service")])  # fmt: skip
def test_units_verify(tmp_path: Path, unit: str, name: str) -> None:
    path = installed_copy(tmp_path, unit, name)
    result = verify(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vscand" not in result.stderr, result.stderr


@needs_systemd_analyze
@pytest.mark.parametrize(("unit", "name"), [("vscand.service", "vscand.service"),
                                            ("vscand@.service", "vscand@dc1.service")])  # fmt: skip
def test_example_drop_in_parses_and_keeps_the_exposure(
    tmp_path: Path, unit: str, name: str
) -> None:
    # the drop-in is read: a broken copy of it is reported, by file and line
    (tmp_path / "broken").mkdir()
    broken = DROP_IN.read_text() + "IPAddressAllow=not-an-address\n"
    result = verify(installed_copy(tmp_path / "broken", unit, name, broken))
    assert "networks.conf" in result.stderr and "not-an-address" in result.stderr, result.stderr
    # the shipped example: no complaint about it or the unit, and still a low exposure
    path = installed_copy(tmp_path, unit, name, DROP_IN.read_text())
    result = verify(path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "vscand" not in result.stderr and "networks.conf" not in result.stderr, result.stderr
    score = exposure(path)
    assert score <= MAX_EXPOSURE, f"{unit} with the example drop-in: exposure {score}"


def test_example_drop_in_directives() -> None:
    # checked without systemd-analyze as well: one [Service] section of IPAddressAllow=
    # entries, every one an address or network (documentation ranges, not loopback)
    text = DROP_IN.read_text()
    sections = [line for line in text.splitlines() if line.startswith("[")]
    assert sections == ["[Service]"]
    found = directives(DROP_IN)
    assert set(found) == {"IPAddressAllow"}
    entries = [entry for value in found["IPAddressAllow"] for entry in value.split()]
    assert entries
    for entry in entries:
        network = ipaddress.ip_network(entry)
        assert not network.is_loopback, entry


def test_address_restriction() -> None:
    # loopback only, like the daemon's default allow list (and Redis on loopback by default)
    assert DaemonConfig().allow == ("127.0.0.0/8", "::1/128")
    for unit in ("vscand.service", "vscand@.service"):
        found = directives(UNITS / unit)
        assert found["IPAddressDeny"] == ["any"], unit
        assert found["IPAddressAllow"] == ["localhost"], unit
        text = (UNITS / unit).read_text()
        assert "vscand.service.d/networks.conf" in text, unit  # the drop-in is documented


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
