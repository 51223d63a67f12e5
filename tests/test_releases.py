"""Each Nmap release on this machine (tests/releases.py): its real probe file loads
with that release's grammar and Nmap's own counts, and its nmap runs.

The installed release (Debian 12's 7.93, or Debian 13's 7.95) comes from ``make``; the other
lives in the root ``make other-root`` builds (``make test`` builds it, so CI never skips).
"""

from __future__ import annotations

import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests import pcre8, releases
from tests.e2e import oracle_run
from tests.loopback import BannerServer
from tests.releases import (
    NmapRelease,
    Unavailable,
    dpkg_version,
    nmap_release,
    release_params,
    require,
)
from vscand.probes.engine import resolve
from vscand.probes.matcher import Matcher
from vscand.probes.model import ProbeDatabase
from vscand.probes.parser import load_probe_files
from vscand.scan.udp_payloads import port_scan_payloads

each_release = pytest.mark.parametrize("available", release_params())

_loaded: dict[str, ProbeDatabase] = {}


def database(release: NmapRelease) -> ProbeDatabase:
    """The release's file read with its grammar and its regex engine (once per test session);
    with PCRE2 where its engine is PCRE 8 and this system has none (Debian 13 reading Debian
    12's 7.93 file): the counts do not depend on the library, and the two engines answer alike
    on 7.93's file (tests/test_regex_engine.py, where both exist)."""
    if release.name not in _loaded:
        path = str(release.probes_file)
        engine = resolve("auto", path)
        if engine.name == "pcre" and not pcre8.AVAILABLE:
            engine = resolve("pcre2", path)
        _loaded[release.name] = load_probe_files(path, release=release.version, engine=engine)
    return _loaded[release.name]


def expected(release: NmapRelease) -> dict[str, object]:
    facts = releases.probe_file_facts(release.version)
    return {key: facts[key] for key in releases.COUNT_KEYS}


@each_release
def test_release_versions(available: NmapRelease | Unavailable) -> None:
    release = require(available)
    assert release.version == {"debian12": "7.93", "debian13": "7.95"}[release.name]
    proc = release.run("--version")
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"Nmap version {release.version} "), proc.stdout


@each_release
def test_probe_file_counts(available: NmapRelease | Unavailable) -> None:
    release = require(available)
    want = expected(release)
    db = database(release)
    assert db.grammar.release == {"7.93": "7.93", "7.95": "7.95"}[release.version]
    probes = db.all_probes()
    got = {
        "probes": len(probes),
        "tcp": sum(p.protocol == "TCP" for p in probes),
        "udp": sum(p.protocol == "UDP" for p in probes),
        "match": sum(not m.soft for m in db.lines),
        "softmatch": sum(m.soft for m in db.lines),
        "no_payload": [f"{p.protocol}/{p.name}" for p in probes if p.no_payload],
        "source_ports": {
            f"{p.protocol}/{p.name}": p.source_port for p in probes if p.source_port is not None
        },
    }
    assert got == want
    assert db.empty_match_unchecked == 0


@each_release
def test_counts_agree_with_the_file_text(available: NmapRelease | Unavailable) -> None:
    # what `grep -c '^Probe '` etc. say: the lines Nmap's strncmp() takes as directives
    release = require(available)
    want = expected(release)
    lines = release.probes_file.read_bytes().split(b"\n")
    assert sum(line.startswith(b"Probe ") for line in lines) == want["probes"]
    assert sum(line.startswith(b"match ") for line in lines) == want["match"]
    assert sum(line.startswith(b"softmatch ") for line in lines) == want["softmatch"]


@each_release
def test_version_scan_through_the_release_s_nmap(available: NmapRelease | Unavailable) -> None:
    # nmap -sV against a port opened here (loopback): the root's nmap shares this
    # machine's network; our matcher on the same release's file agrees with it
    release = require(available)
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    with BannerServer(banner, reply=False) as server:
        proc = release.run("-sV", "-Pn", "-n", "-p", str(server.port), "-oX", "-", "127.0.0.1")
    assert proc.returncode == 0, proc.stderr
    service = ET.fromstring(proc.stdout).find("./host/ports/port/service")
    assert service is not None, proc.stdout
    assert (service.get("name"), service.get("product"), service.get("version")) == (
        "ssh",
        "OpenSSH",
        "9.2p1 Debian 2+deb12u3",
    )
    db = database(release)
    assert db.null_probe is not None
    found = Matcher(db=db).match(db.null_probe, banner)
    assert found is not None and not found.soft
    assert (found.service, found.info.product, found.info.version) == (
        service.get("name"),
        service.get("product"),
        service.get("version"),
    )


def test_release_of_a_package_version(tmp_path: Path) -> None:
    assert nmap_release("7.93+dfsg1-1") == "7.93"
    assert nmap_release("7.95+dfsg-3") == "7.95"
    assert nmap_release("1:7.991-1") == "7.991"
    with pytest.raises(ValueError):
        nmap_release("trixie")
    status = tmp_path / "status"
    status.write_text(
        "Package: nmap\nStatus: install ok installed\nVersion: 7.95+dfsg-3\n\n"
        "Package: nmap-common\nStatus: deinstall ok config-files\nVersion: 7.90-1\n\n"
        "Package: nmap-common\nStatus: install ok installed\nArchitecture: all\n"
        "Version: 7.95+dfsg-3\n"
    )
    assert dpkg_version(status, "nmap-common") == "7.95+dfsg-3"
    assert dpkg_version(status, "ndiff") is None
    assert dpkg_version(tmp_path / "missing", "nmap") is None


def test_oracle_is_the_installed_nmap_unless_opted_in(monkeypatch: pytest.MonkeyPatch) -> None:
    """``make test`` compares with the installed nmap; ``VSCAND_ORACLE=debianN`` (opt-in,
    ``make test-oracle-other``) with the Debian N root's; anything else is an error."""
    host = releases.host_name()
    monkeypatch.delenv(releases.ORACLE_ENV, raising=False)
    assert releases.oracle_name() == host and releases.oracle_is_installed()
    assert oracle_run.vscan_oracle_args() == []
    monkeypatch.setenv(releases.ORACLE_ENV, "")
    assert releases.oracle_name() == host
    other = f"debian{releases.other_debian()}"
    monkeypatch.setenv(releases.ORACLE_ENV, other)
    assert releases.oracle_name() == other and not releases.oracle_is_installed()
    release = releases.oracle()
    assert release.name == other
    if isinstance(release, releases.NmapRelease):
        assert release.command[:2] == (str(releases.TOOL), releases.other_debian())
        assert oracle_run.vscan_oracle_args() == ["--probes", str(release.probes_file)]
        wanted = repr(["--probes", str(release.probes_file)])
        assert oracle_run.vscan_command()[-1].endswith(f"{wanted}))")
    monkeypatch.setenv(releases.ORACLE_ENV, host)  # naming the installed release: the default
    assert releases.oracle_is_installed() and oracle_run.vscan_oracle_args() == []
    monkeypatch.setenv(releases.ORACLE_ENV, "debian11")
    with pytest.raises(ValueError, match="VSCAND_ORACLE"):
        releases.oracle_name()


def test_the_other_release_is_the_one_this_machine_is_not() -> None:
    names = [release.name for release in releases.all_releases()]
    assert names[0] == releases.host_name() and len(set(names)) == 2
    assert {releases.debian12().name, releases.debian13().name} == {"debian12", "debian13"}


@each_release
def test_port_scan_payloads_of_each_release(available: NmapRelease | Unavailable) -> None:
    """7.93 sends nmap-payloads' datagrams (the installed file's: Debian 12 only); from 7.94 the
    probe file's UDP probes without no-payload (7.95: all 84 but Sqlping)."""
    release = require(available)
    db = database(release)
    if not db.grammar.udp_payloads_from_probes:
        if release.data_dir != Path("/usr/share/nmap"):
            pytest.skip("7.93's nmap-payloads is read from the installed Nmap only")
        assert len(port_scan_payloads(db)) > 50
        return
    payloads = port_scan_payloads(db)
    udp = [p for p in db.probes if p.protocol == "UDP"]
    assert len(payloads) == sum(not p.no_payload for p in udp) == 83
    snmp = [db.find(name, "UDP").string for name in ("SNMPv1public", "SNMPv3GetRequest")]
    assert payloads.for_port(161) == tuple(snmp)
    assert payloads.for_port(1434) == ()  # Sqlping: no-payload
