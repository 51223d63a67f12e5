"""One cache directory: ``vscan``, ``make``, the demo, the tests and the benchmarks share
the user's (``$VSCAND_CACHE_DIR``, else ``$XDG_CACHE_HOME/vscand``, else
``~/.cache/vscand``); the daemon prefers systemd's and ``/var/cache/vscand`` first."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from vscand.cachedir import user_cache_dir
from vscand.config import default_cache_dir as daemon_cache_dir
from vscand.probes.prefilter import default_cache_dir as cli_cache_dir

REPO = Path(__file__).resolve().parent.parent


def test_the_user_cache_directory() -> None:
    home = Path.home()
    assert user_cache_dir({}) == home / ".cache" / "vscand"
    assert user_cache_dir({"XDG_CACHE_HOME": "/x/cache"}) == Path("/x/cache/vscand")
    # the XDG specification: a relative path is invalid and ignored
    assert user_cache_dir({"XDG_CACHE_HOME": "rel/cache"}) == home / ".cache" / "vscand"
    assert user_cache_dir({"VSCAND_CACHE_DIR": "/y", "XDG_CACHE_HOME": "/x"}) == Path("/y")


def test_the_cli_and_the_daemon_fall_back_to_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("VSCAND_CACHE_DIR", raising=False)
    monkeypatch.setenv("XDG_CACHE_HOME", "/x/cache")
    assert cli_cache_dir() == Path("/x/cache/vscand")
    env = {"XDG_CACHE_HOME": "/x/cache"}
    if not os.access("/var/cache/vscand", os.W_OK):  # else an installed service's comes first
        assert daemon_cache_dir(env) == "/x/cache/vscand"
    assert daemon_cache_dir({**env, "CACHE_DIRECTORY": "/var/cache/s"}) == "/var/cache/s"


def test_make_sets_no_cache_directory_of_its_own() -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("VSCAND_CACHE_DIR", "MAKEFLAGS")}
    origin = subprocess.run(
        ["make", "-s", "--no-print-directory", "--eval",
         "show-cache: ; @echo $(origin VSCAND_CACHE_DIR)", "show-cache"],
        cwd=REPO, env=env, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    assert origin.stdout.strip() == "undefined"


def test_vscan_compiles_into_it(tmp_path: Path) -> None:
    # a first `vscan probes --stats` with an empty XDG cache home fills <it>/vscand
    probes = tmp_path / "nmap-service-probes"
    probes.write_text(
        "Probe TCP NULL q||\ntotalwaitms 6000\nmatch ssh m|^SSH-([\\d.]+)-| p/SSH/ v/$1/\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "VSCAND_CACHE_DIR"}
    env["XDG_CACHE_HOME"] = str(tmp_path / "xdg")
    vscan = Path(sys.executable).parent / "vscan"
    run = subprocess.run(
        [str(vscan), "probes", "--stats", "--probes", str(probes)],
        env=env, capture_output=True, text=True, timeout=300, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    if "prefilter: unavailable" in run.stdout:
        pytest.skip("no Hyperscan here: nothing is cached")
    assert "prefilter: built" in run.stdout, run.stdout
    assert any((tmp_path / "xdg" / "vscand").iterdir()), run.stdout
