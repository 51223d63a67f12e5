"""The Nmap releases on this machine, for tests to parametrize over.

- ``debian12``: the installed Nmap (``/usr/bin/nmap``, ``/usr/share/nmap``): 7.93 on
  Debian 12, from the ``nmap`` and ``nmap-common`` packages ``make`` installs.
- ``debian13``: the Debian 13 root ``make debian13-root`` builds
  (``.cache/debian13/root``, or ``$VSCAND_DEBIAN13_ROOT``): 7.95. Its nmap runs
  through ``tools/debian13-root run`` (a chroot, with ``/proc`` mounted in a
  private mount namespace); it shares the machine's network, so it scans the
  host's 127.0.0.1. Its data are read directly under the root.

The release of each is the version of its ``nmap-common`` package (the data files
the tests load), from that system's dpkg database. A release that is not there is
a skip with the reason, except under CI (``CI=true``), where ``make test`` has
built the root, and a missing release is a failure.
"""

from __future__ import annotations

import os
import re
import subprocess
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

REPO = Path(__file__).resolve().parent.parent
TOOL = REPO / "tools" / "debian13-root"


def debian13_root() -> Path:
    configured = os.environ.get("VSCAND_DEBIAN13_ROOT")
    return Path(configured) if configured else REPO / ".cache" / "debian13" / "root"


@dataclass(frozen=True)
class NmapRelease:
    #: which system: "debian12" (the installed one) or "debian13" (the root)
    name: str
    #: Nmap's release number, "7.93"
    version: str
    #: the Debian package version of nmap-common, "7.93+dfsg1-1"
    package_version: str
    #: argv prefix that runs this release's nmap
    command: tuple[str, ...]
    #: its data directory (nmap-service-probes, nmap-services, ...)
    data_dir: Path

    @property
    def probes_file(self) -> Path:
        return self.data_dir / "nmap-service-probes"

    def run(self, *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [*self.command, *args],
            capture_output=True,
            text=True,
            timeout=timeout,
            stdin=subprocess.DEVNULL,
            check=False,
        )


@dataclass(frozen=True)
class Unavailable:
    name: str
    reason: str


def dpkg_version(status_file: Path, package: str) -> str | None:
    """The installed version of ``package`` in a dpkg status file, if installed."""
    try:
        text = status_file.read_text(encoding="utf-8", errors="replace")
    except OSError:
        return None
    for paragraph in text.split("\n\n"):
        fields = dict(re.findall(r"^([A-Za-z-]+): ?(.*)$", paragraph, re.MULTILINE))
        if fields.get("Package") == package and fields.get("Status", "").endswith(" installed"):
            return fields.get("Version")
    return None


def nmap_release(package_version: str) -> str:
    """``7.95+dfsg-3`` → ``7.95``."""
    found = re.match(r"^(?:\d+:)?(\d+\.\d+)", package_version)
    if not found:
        raise ValueError(f"not an Nmap package version: {package_version!r}")
    return found.group(1)


def _release(
    name: str, system: Path, command: tuple[str, ...], how: str
) -> NmapRelease | Unavailable:
    data_dir = system / "usr" / "share" / "nmap"
    version = dpkg_version(system / "var" / "lib" / "dpkg" / "status", "nmap-common")
    if version is None or not (data_dir / "nmap-service-probes").is_file():
        return Unavailable(name, f"no nmap-common in {system} ({how})")
    if not (system / "usr" / "bin" / "nmap").is_file():
        return Unavailable(name, f"no nmap in {system} ({how})")
    return NmapRelease(name, nmap_release(version), version, command, data_dir)


def installed() -> NmapRelease | Unavailable:
    return _release("debian12", Path("/"), ("/usr/bin/nmap",), "make system-deps installs it")


def debian13() -> NmapRelease | Unavailable:
    root = debian13_root()
    if not Path(f"{root}.stamp").exists():
        return Unavailable("debian13", f"{root} is not built: run `make debian13-root`")
    command = (str(TOOL), "--root", str(root), "run", "/usr/bin/nmap")
    return _release("debian13", root, command, "make debian13-root builds it")


def all_releases() -> list[NmapRelease | Unavailable]:
    return [installed(), debian13()]


#: the env var that picks the oracle of the differential e2e suites (tests/e2e/oracle_run.py):
#: unset or ``debian12``, the installed nmap (``make test``); ``debian13``, the root's 7.95
#: (``make test-oracle-debian13``)
ORACLE_ENV = "VSCAND_ORACLE"
ORACLES = ("debian12", "debian13")


def oracle_name() -> str:
    """The release the differential e2e suites compare vscan with (``$VSCAND_ORACLE``)."""
    name = os.environ.get(ORACLE_ENV, "") or "debian12"
    if name not in ORACLES:
        raise ValueError(f"${ORACLE_ENV}={name!r}: one of {', '.join(ORACLES)}")
    return name


def oracle() -> NmapRelease | Unavailable:
    """The oracle release: the installed nmap by default, ``debian13()`` when opted in."""
    return debian13() if oracle_name() == "debian13" else installed()


def release_params() -> list[Any]:
    """``pytest.param`` for each release (id: its name), available or not."""
    return [pytest.param(release, id=release.name) for release in all_releases()]


def require(release: NmapRelease | Unavailable) -> NmapRelease:
    """The release, or a skip with the reason (a failure under CI)."""
    if isinstance(release, Unavailable):
        message = f"Nmap release {release.name} unavailable: {release.reason}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return release


#: what each release's nmap-service-probes holds, as Nmap itself counts it: Probe lines (the NULL
#: probe and the rest; Nmap keeps each as one ServiceProbe), match and softmatch lines (one
#: ServiceProbeMatch each), the UDP probes marked no-payload / with source=; and, for the tests
#: of the installed file, the NULL probe's lines, the probes with a fallback, the match lines by
#: regex delimiter and the fallback chains that differ from 7.93's. 7.95's totals are issue 11's
#: (185 probes, 11,949 match, 203 softmatch, read in a Debian 13 root).
PROBE_FILE_FACTS: dict[str, dict[str, Any]] = {
    "7.93": {
        "probes": 148, "tcp": 100, "udp": 48, "match": 11_721, "softmatch": 196,
        "no_payload": [], "source_ports": {},
        "null": 4029, "with_fallback": 11,
        "delimiters": {ord("|"): 11_689, ord("="): 188, ord("%"): 39, ord("@"): 1},
        "chains": {},
    },
    "7.95": {
        "probes": 185, "tcp": 101, "udp": 84, "match": 11_949, "softmatch": 203,
        "no_payload": ["UDP/Sqlping"],
        "source_ports": {"UDP/IKE_MAIN_MODE": 500, "UDP/IPSEC_START": 500},
        "null": 4072, "with_fallback": 12,
        "delimiters": {ord("|"): 11_913, ord("="): 188, ord("%"): 50, ord("@"): 1},
        # "Probe TCP SIPOptions ...": fallback GetRequest,HTTPOptions in 7.95
        "chains": {"SIPOptions": ["TCP/SIPOptions", "TCP/GetRequest", "TCP/HTTPOptions"]},
    },
}  # fmt: skip

#: the keys of PROBE_FILE_FACTS that Nmap's own counts give (tests/test_releases.py)
COUNT_KEYS = ("probes", "tcp", "udp", "match", "softmatch", "no_payload", "source_ports")


def probe_file_facts(version: str) -> dict[str, Any]:
    """:data:`PROBE_FILE_FACTS` of Nmap ``version``, or a failure saying what to add."""
    if version not in PROBE_FILE_FACTS:
        pytest.fail(f"no expected counts for Nmap {version}'s probe file: add PROBE_FILE_FACTS")
    return PROBE_FILE_FACTS[version]
