"""The Nmap releases on this machine, for tests to parametrize over.

- the installed Nmap (``/usr/bin/nmap``, ``/usr/share/nmap``), from the ``nmap`` and
  ``nmap-common`` packages ``make`` installs; named after this machine's release:
  ``debian12`` (7.93) or ``debian13`` (7.95).
- the other Debian release's Nmap, in the root ``make test`` builds (``make other-root``:
  ``.cache/debian13/root`` on Debian 12, ``.cache/debian12/root`` on Debian 13, or
  ``$VSCAND_DEBIAN13_ROOT`` / ``$VSCAND_DEBIAN12_ROOT``). Its nmap runs through
  ``tools/debian-root N run`` (a chroot, with ``/proc`` mounted in a private mount
  namespace); it shares the machine's network, so it scans the host's 127.0.0.1. Its
  data are read directly under the root.

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
TOOL = REPO / "tools" / "debian-root"
#: the Debian releases whose Nmap the tests know
DEBIANS = ("12", "13")


def host_debian() -> str:
    """This machine's Debian release (``VERSION_ID`` of /etc/os-release), "" if not Debian."""
    try:
        text = Path("/etc/os-release").read_text(encoding="utf-8")
    except OSError:
        return ""
    fields = dict(re.findall(r'^([A-Z_]+)="?([^"\n]*)"?$', text, re.MULTILINE))
    return fields.get("VERSION_ID", "") if fields.get("ID") == "debian" else ""


def host_name() -> str:
    """The installed release's name: ``debian12``, ``debian13`` (``installed`` elsewhere)."""
    version = host_debian()
    return f"debian{version}" if version else "installed"


def other_debian() -> str:
    """The release whose root ``make test`` builds: 12 on Debian 13, 13 everywhere else."""
    return "12" if host_debian() == "13" else "13"


def debian_root(version: str) -> Path:
    configured = os.environ.get(f"VSCAND_DEBIAN{version}_ROOT")
    return Path(configured) if configured else REPO / ".cache" / f"debian{version}" / "root"


@dataclass(frozen=True)
class NmapRelease:
    #: which system: "debian12" or "debian13" (the installed one, or a root)
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
    return _release(host_name(), Path("/"), ("/usr/bin/nmap",), "make system-deps installs it")


def root_release(version: str) -> NmapRelease | Unavailable:
    """The Nmap of the Debian ``version`` root (``make debianN-root``)."""
    name = f"debian{version}"
    root = debian_root(version)
    if not Path(f"{root}.stamp").exists():
        return Unavailable(name, f"{root} is not built: run `make {name}-root`")
    command = (str(TOOL), version, "--root", str(root), "run", "/usr/bin/nmap")
    return _release(name, root, command, f"make {name}-root builds it")


def debian(version: str) -> NmapRelease | Unavailable:
    """Debian ``version``'s Nmap: the installed one on that release, else its root's."""
    return installed() if host_debian() == version else root_release(version)


def debian12() -> NmapRelease | Unavailable:
    return debian("12")


def debian13() -> NmapRelease | Unavailable:
    return debian("13")


def other() -> NmapRelease | Unavailable:
    """The other release's Nmap: the root ``make test`` builds."""
    return root_release(other_debian())


def all_releases() -> list[NmapRelease | Unavailable]:
    return [installed(), other()]


#: the env var that picks the oracle of the differential e2e suites (tests/e2e/oracle_run.py):
#: unset, the installed nmap (``make test``); ``debian12`` or ``debian13``, that release's
#: (``make test-oracle-other``: the other release's root)
ORACLE_ENV = "VSCAND_ORACLE"
ORACLES = tuple(f"debian{version}" for version in DEBIANS)


def oracle_name() -> str:
    """The release the differential e2e suites compare vscan with (``$VSCAND_ORACLE``)."""
    name = os.environ.get(ORACLE_ENV, "") or host_name()
    if name != host_name() and name not in ORACLES:
        raise ValueError(f"${ORACLE_ENV}={name!r}: one of {', '.join(ORACLES)}")
    return name


def oracle_is_installed() -> bool:
    """Whether the oracle is the installed nmap (vscan then uses its own defaults)."""
    return oracle_name() == host_name()


def oracle() -> NmapRelease | Unavailable:
    """The oracle release: the installed nmap by default, a root's when opted in."""
    if oracle_is_installed():
        return installed()
    return root_release(oracle_name().removeprefix("debian"))


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
