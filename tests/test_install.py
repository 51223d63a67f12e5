"""`make install` / `make uninstall` (tools/install) into a scratch DESTDIR, offline.

The scratch venv gets its packages from a wheelhouse made here from this test's own venv:
each installed distribution vscand needs (with the `accel` and `producer` extras, and
setuptools and wheel to build vscand itself) is zipped back into a wheel from its RECORD, and
the install runs with VSCAND_PIP_ARGS="--no-index --find-links WHEELHOUSE": no network, the
same versions. tests/test_new_user_walk.py builds its wheelhouse the same way."""

from __future__ import annotations

import base64
import csv
import hashlib
import io
import os
import shutil
import subprocess
import sys
import time
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from tests.test_systemd_units import needs_systemd_analyze, verify

REPO = Path(__file__).resolve().parent.parent
UNITDIR = Path("etc/systemd/system")


def _closure(roots: list[str]) -> list[metadata.Distribution]:
    """The installed distributions *roots* need (markers evaluated, extras followed)."""
    found: dict[str, metadata.Distribution] = {}
    todo: list[tuple[str, frozenset[str]]] = [(root, frozenset()) for root in roots]
    seen: set[tuple[str, frozenset[str]]] = set()
    while todo:
        spec, extras = todo.pop()
        req = Requirement(spec)
        key = (canonicalize_name(req.name), frozenset(req.extras) | extras)
        if key in seen:
            continue
        seen.add(key)
        dist = metadata.distribution(req.name)
        found[key[0]] = dist
        for dep in dist.requires or []:
            sub = Requirement(dep)
            if sub.marker is None:
                todo.append((dep, frozenset()))
                continue
            for extra in {""} | key[1]:
                if sub.marker.evaluate({"extra": extra}):
                    todo.append((str(Requirement(dep.split(";")[0])), frozenset()))
                    break
    return list(found.values())


def _repack(dist: metadata.Distribution, into: Path) -> Path:
    """*dist* as installed, zipped back into a wheel (console scripts come back from
    entry_points.txt; files outside site-packages and compiled caches are left out)."""
    files = [
        f
        for f in dist.files or []
        if not str(f).startswith("..")
        and "__pycache__" not in f.parts
        and f.name not in ("RECORD", "INSTALLER", "REQUESTED", "direct_url.json")
    ]
    info = next(f for f in dist.files or [] if f.name == "WHEEL")
    tags = [
        line.split(":", 1)[1].strip()
        for line in Path(str(dist.locate_file(info))).read_text().splitlines()
        if line.startswith("Tag:")
    ]
    pythons, abis, platforms = (
        ".".join(sorted({tag.split("-")[i] for tag in tags})) for i in range(3)
    )
    stem = info.parts[0].removesuffix(".dist-info")
    wheel = into / f"{stem}-{pythons}-{abis}-{platforms}.whl"
    record = io.StringIO()
    writer = csv.writer(record, lineterminator="\n")
    with zipfile.ZipFile(wheel, "w", zipfile.ZIP_DEFLATED) as archive:
        for f in files:
            data = Path(str(dist.locate_file(f))).read_bytes()
            archive.writestr(str(f.as_posix()), data)
            digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=")
            writer.writerow([f.as_posix(), f"sha256={digest.decode()}", len(data)])
        writer.writerow([f"{info.parts[0]}/RECORD", "", ""])
        archive.writestr(f"{info.parts[0]}/RECORD", record.getvalue())
    return wheel


#: what tools/install installs (vscand with both extras) and builds it with
WHEELHOUSE_ROOTS = ["vscand[accel,producer]", "setuptools", "wheel"]


def build_wheelhouse(into: Path) -> Path:
    """*into* filled with wheels of WHEELHOUSE_ROOTS' closure from this venv (vscand itself
    is built from the checkout); skips the test when this venv lacks one of them."""
    try:
        dists = _closure(WHEELHOUSE_ROOTS)
    except metadata.PackageNotFoundError as missing:
        pytest.skip(f"not installed in this venv (make venv): {missing}")
    for dist in dists:
        if canonicalize_name(dist.metadata["Name"]) != "vscand":  # built from the checkout
            _repack(dist, into)
    return into


@pytest.fixture(scope="module")
def wheelhouse(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_wheelhouse(tmp_path_factory.mktemp("wheelhouse"))


def run(
    *args: str | Path, env: dict[str, str], cwd: Path = REPO, timeout: int = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(a) for a in args],
        cwd=cwd,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def make_env(destdir: Path, wheelhouse: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PIP_", "VIRTUAL_ENV"))}
    # the venv is made from this interpreter's base Python; PATH without this venv's bin/
    env["PATH"] = os.pathsep.join(
        p for p in env.get("PATH", "").split(os.pathsep) if Path(p) != Path(sys.executable).parent
    )
    env.pop("PYTHONPATH", None)
    env["PIP_NO_INPUT"] = "1"
    env["PIP_CONFIG_FILE"] = os.devnull
    env["DESTDIR"] = str(destdir)
    env["PYTHON"] = sys._base_executable  # type: ignore[attr-defined]
    env["VSCAND_PIP_ARGS"] = f"--no-index --find-links {wheelhouse}"
    # a systemctl that records being called: with DESTDIR set it never is
    fake = destdir.parent / "fake-bin"
    fake.mkdir(parents=True, exist_ok=True)
    (fake / "systemctl").write_text(f'#!/bin/sh\necho "$@" >>{fake}/systemctl.called\n')
    (fake / "systemctl").chmod(0o755)
    env["PATH"] = f"{fake}{os.pathsep}{env['PATH']}"
    return env


def systemctl_called(destdir: Path) -> bool:
    return (destdir.parent / "fake-bin/systemctl.called").exists()


def directive(path: Path, key: str) -> list[str]:
    return [
        line.partition("=")[2].strip()
        for line in path.read_text().splitlines()
        if line.startswith(f"{key}=")
    ]


@pytest.fixture(scope="module")
def installed(tmp_path_factory: pytest.TempPathFactory, wheelhouse: Path) -> Path:
    """`make install DESTDIR=root` once for this module's tests: the scratch root."""
    root = tmp_path_factory.mktemp("install") / "root"
    started = time.monotonic()
    first = run(
        "make", "--no-print-directory", "install", f"DESTDIR={root}", env=make_env(root, wheelhouse)
    )
    assert first.returncode == 0, first.stdout + first.stderr
    print(f"first install: {time.monotonic() - started:.1f} s")
    assert "systemctl" not in first.stdout + first.stderr
    assert not systemctl_called(root)
    assert "did not install" not in first.stdout + first.stderr  # the accel extra installed
    return root


def test_installed_venv_runs_vscand(installed: Path, wheelhouse: Path) -> None:
    env = make_env(installed, wheelhouse)
    venv = installed / "opt/vscand"
    # the CLI, and twistd finding the vscand plugin (from the cache generated at install);
    # run outside the checkout, so nothing is imported from it
    vscan = run(venv / "bin/vscan", "--help", env=env, cwd=installed, timeout=60)
    assert vscan.returncode == 0, vscan.stdout + vscan.stderr
    twistd = run(venv / "bin/twistd", "vscand", "--help", env=env, cwd=installed, timeout=60)
    assert twistd.returncode == 0, twistd.stdout + twistd.stderr
    assert "--config" in twistd.stdout
    site = next(venv.glob("lib/python3*/site-packages"))
    assert (site / "twisted/plugins/vscand_plugin.py").exists()
    assert (site / "twisted/plugins/dropin.cache").exists()
    assert (site / "hyperscan").is_dir()  # the accel extra
    assert (site / "redis").is_dir()  # the producer extra (vscand/producer.py's redis-py)
    code = "import vscand; print(vscand.__file__)"
    imported = run(venv / "bin/python", "-c", code, env=env, cwd=installed)
    assert imported.stdout.startswith(str(site)), imported.stdout + imported.stderr


def test_installed_files(installed: Path) -> None:
    conf = installed / "etc/vscand/vscand.conf"
    assert conf.read_text() == (REPO / "etc/vscand.conf").read_text()
    units = installed / UNITDIR
    for name in ("vscand.service", "vscand@.service"):
        text = (units / name).read_text()
        [exec_start] = directive(units / name, "ExecStart")
        assert exec_start.startswith("/opt/vscand/bin/twistd --nodaemon --pidfile= vscand ")
        assert directive(units / name, "DynamicUser") == ["yes"]  # hence no vscand user
        # everything but ExecStart is the shipped unit's
        shipped = (REPO / "systemd" / name).read_text()
        assert text == shipped.replace("/usr/bin/twistd", "/opt/vscand/bin/twistd")
    example = units / "vscand.service.d/networks.conf.example"
    assert (
        example.read_text() == (REPO / "systemd/vscand.service.d/networks.conf.example").read_text()
    )
    assert not (units / "vscand.service.d/networks.conf").exists()  # an example, not enabled


@needs_systemd_analyze
def test_installed_units_verify(installed: Path, tmp_path: Path) -> None:
    """The installed units pass systemd-analyze verify, with the example drop-in enabled.
    verify checks that ExecStart's binary exists: the copies verified point at the scratch
    venv's twistd instead of /opt/vscand/bin/twistd (as tests/test_systemd_units.py does)."""
    verify_installed_units(installed, tmp_path)


def verify_installed_units(installed: Path, into: Path) -> None:
    """systemd-analyze verify of the units installed under *installed* (copies in *into*,
    ExecStart pointing at the scratch venv's twistd, the example drop-in enabled)."""
    twistd = installed / "opt/vscand/bin/twistd"
    assert twistd.exists()
    for name, as_name in (
        ("vscand.service", "vscand.service"),
        ("vscand@.service", "vscand@dc1.service"),
    ):
        directory = into / name
        directory.mkdir()
        text = (installed / UNITDIR / name).read_text()
        unit = directory / as_name
        unit.write_text(text.replace("/opt/vscand/bin/twistd", str(twistd)))
        drop_ins = directory / f"{as_name}.d"
        drop_ins.mkdir()
        shutil.copy(
            installed / UNITDIR / "vscand.service.d/networks.conf.example",
            drop_ins / "networks.conf",
        )
        result = verify(unit)
        assert result.returncode == 0, result.stdout + result.stderr
        assert "vscand" not in result.stderr and "networks.conf" not in result.stderr, result.stderr


def test_reinstall_keeps_config_then_uninstall(installed: Path, wheelhouse: Path) -> None:
    # last in this file: it uninstalls what the fixture installed
    env = make_env(installed, wheelhouse)
    units = installed / UNITDIR
    conf = installed / "etc/vscand/vscand.conf"
    # a second install keeps the admin's config, and the admin's own drop-in
    conf.write_text(conf.read_text() + "\n# edited by the admin\n")
    edited = conf.read_text()
    own_drop_in = units / "vscand.service.d/networks.conf"
    own_drop_in.write_text("[Service]\nIPAddressAllow=192.0.2.0/24\n")
    started = time.monotonic()
    second = run("make", "--no-print-directory", "install", f"DESTDIR={installed}", env=env)
    assert second.returncode == 0, second.stdout + second.stderr
    print(f"second install: {time.monotonic() - started:.1f} s")
    assert conf.read_text() == edited
    assert "keeping the existing" in second.stdout
    again = run(installed / "opt/vscand/bin/vscan", "--help", env=env, cwd=installed)
    assert again.returncode == 0, again.stdout + again.stderr

    gone = run("make", "--no-print-directory", "uninstall", f"DESTDIR={installed}", env=env)
    assert gone.returncode == 0, gone.stdout + gone.stderr
    assert not (installed / "opt/vscand").exists()
    for name in ("vscand.service", "vscand@.service", "vscand.service.d/networks.conf.example"):
        assert not (units / name).exists(), name
    assert conf.read_text() == edited  # without PURGE=1 the config stays
    assert own_drop_in.exists()  # and so does the admin's drop-in

    purged = run(
        "make", "--no-print-directory", "uninstall", f"DESTDIR={installed}", "PURGE=1", env=env
    )
    assert purged.returncode == 0, purged.stdout + purged.stderr
    assert not conf.exists() and not conf.parent.exists()
    leftovers = sorted(str(p.relative_to(installed)) for p in installed.rglob("*") if p.is_file())
    assert leftovers == ["etc/systemd/system/vscand.service.d/networks.conf"]
    assert not systemctl_called(installed)
