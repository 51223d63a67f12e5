"""Shared fixtures: the installed probe database, with and without the prefilter."""

from __future__ import annotations

import ipaddress
import os
import socket
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings

from vscand.cachedir import user_cache_dir
from vscand.probes import prefilter as prefilter_mod
from vscand.probes.matcher import Matcher, load_matcher
from vscand.probes.parser import find_probe_file

REPO = Path(__file__).resolve().parent.parent

pytest_plugins = [
    "tests.redis_server",
    "tests.sentinel_cluster",
    "tests.reactor_thread",
    "tests.daemon_fixtures",
]

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
    return Path(configured) if configured else user_cache_dir()


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


_real_connect = socket.socket.connect
_real_connect_ex = socket.socket.connect_ex
_real_sendto = socket.socket.sendto


def _loopback_only(address: object) -> None:
    """Refuse any TCP/UDP destination outside 127.0.0.0/8 and ::1 (AF_UNIX is fine)."""
    if not isinstance(address, tuple):
        return  # AF_UNIX path
    host = str(address[0])
    try:
        ip = ipaddress.ip_address(host.split("%", 1)[0])
    except ValueError:
        raise AssertionError(f"test tried to connect to a name, not an address: {host!r}") from None
    mapped = getattr(ip, "ipv4_mapped", None)
    if not (ip.is_loopback or (mapped is not None and mapped.is_loopback)):
        raise AssertionError(f"test tried to connect to {host}: only loopback is allowed")


def _guarded_connect(self: socket.socket, address: object) -> None:
    _loopback_only(address)
    _real_connect(self, address)  # type: ignore[arg-type]


def _guarded_connect_ex(self: socket.socket, address: object) -> int:
    _loopback_only(address)
    return _real_connect_ex(self, address)  # type: ignore[arg-type]


def _guarded_sendto(self: socket.socket, data: Any, *args: Any) -> int:
    # sendto(data, address) or sendto(data, flags, address): the address is last
    _loopback_only(args[-1])
    return _real_sendto(self, data, *args)


@pytest.fixture(autouse=True, scope="session")
def loopback_only_network() -> Iterator[None]:
    """Every test, whatever the code under test does, can only dial loopback."""
    socket.socket.connect = _guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = _guarded_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = _guarded_sendto  # type: ignore[method-assign]
    try:
        yield
    finally:
        socket.socket.connect = _real_connect  # type: ignore[method-assign]
        socket.socket.connect_ex = _real_connect_ex  # type: ignore[method-assign]
        socket.socket.sendto = _real_sendto  # type: ignore[method-assign]
