"""Shared fixtures: the installed probe database, with and without the prefilter."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from vscand.probes import prefilter as prefilter_mod
from vscand.probes.matcher import Matcher, load_matcher
from vscand.probes.parser import find_probe_file

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = ["tests.redis_server", "tests.reactor_thread"]

settings.register_profile(
    "vscand",
    derandomize=True,
    deadline=None,
    max_examples=200,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.load_profile("vscand")


def cache_dir() -> Path:
    configured = os.environ.get("VSCAND_CACHE_DIR")
    return Path(configured) if configured else REPO / ".cache" / "vscand"


@pytest.fixture(scope="session")
def shipped_probes_file() -> str:
    return find_probe_file(None)


@pytest.fixture(scope="session")
def matcher(shipped_probes_file: str) -> Matcher:
    """The installed nmap-service-probes with the Hyperscan prefilter (if installed)."""
    return load_matcher(shipped_probes_file, cache_dir=cache_dir())


@pytest.fixture(scope="session")
def plain_matcher(shipped_probes_file: str) -> Matcher:
    """The same database on the plain path: every line confirmed with PCRE in turn."""
    return load_matcher(shipped_probes_file, use_prefilter=False)


@pytest.fixture(scope="session")
def prefilter_available() -> bool:
    return prefilter_mod.available()
