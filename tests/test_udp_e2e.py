"""End to end over UDP: ``vscan scan -p U:...`` against ``nmap -sU -sV`` (127.0.0.1 only).

The module starts UDP targets on free 127.0.0.1 ports — small Python servers
(tests/e2e/udp_targets.py) and real daemons (dnsmasq, snmpd) from generated
configurations — then runs, all at the same time against the same targets::

    nmap -sU -sV -Pn -n -p U:<ports> 127.0.0.1 -oX nmap.xml --datadir <tmp>
    vscan scan 127.0.0.1 -p U:<ports> -oX vscan.xml -oJ vscan.jsonl
    (both again with --version-intensity 0)

and asserts that they agree on every port: state, service name, product,
version, extrainfo, hostname, ostype, devicetype, CPE, tunnel, method, conf,
and the fingerprint (``%D``/``%Time`` masked).  NSE is off on the nmap side
(an empty ``script.db`` in the temporary ``--datadir``), as in
tests/test_e2e_scan.py.  nmap runs its UDP scan (``-sU``) to find the ports;
vscan decides the states from its own datagrams (udp.py's docstring).

Both scanners reproduce the same release: the installed nmap (7.93) and vscan on its
probe file, or with ``VSCAND_ORACLE=debian13`` the Debian 13 root's nmap 7.95 and vscan
on that root's probe file (tests/e2e/oracle_run.py). What each case must provoke in
nmap (``Case.premise``) is per release.

The silent and unknown-reply ports cost ~98 s in both scanners (19 probes at
5 s, SIPOptions 7.5 s): the bound on the module's wall time.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests import releases
from tests.e2e import udp_targets as udp
from tests.e2e.compare import differences, parse_jsonl, parse_xml
from tests.e2e.oracle_run import (
    keep_outputs,
    nse_off_datadir,
    oracle_nmap,
    run_side_by_side,
    start_targets,
    vscan_command,
)

pytestmark = pytest.mark.e2e

SCAN_TIMEOUT = 300.0
IN_CI = os.environ.get("CI") == "true"


def _release(version: str) -> tuple[int, ...]:
    """``"7.95"`` → ``(7, 95)``; 7.991 sorts after 7.99 (the digits compare as integers)."""
    return tuple(int(part) for part in version.split("."))


#: {intensity: {field: value}}: what nmap says of a case's port (``servicefp``: whether
#: there is a fingerprint; ``service``: whether there is a ``<service>`` element)
Premise = dict[int, dict[str, Any]]


@dataclass(frozen=True)
class Case:
    """One UDP target; ``premise[level]``: what nmap must say for the case to make its point.

    ``premise`` is Nmap 7.93's answer; ``later`` maps a release to the premises that
    change from it on (per intensity), each what that Nmap says: the suite shows each
    vscand mode agreeing with its own Nmap. 7.94 changed three things these ports show
    (DESIGN.md, "Against Nmap 7.95"): the probe file's ONCRPC_CALL probe (ports
    32768-65535, where these servers listen) is sent even at intensity 0; every UDP probe
    has a socket of its own; a port nmap-services names ``unknown`` has no name.
    """

    id: str
    what: str
    make: Callable[[], Any] | None = None  # a server (``.port``, ``.close()``)
    daemon: Callable[[Path], udp.UDPDaemon] | None = None
    premise: Premise = field(default_factory=dict)
    later: dict[str, Premise] = field(default_factory=dict)

    def premise_of(self, release: str, level: int) -> dict[str, Any]:
        """The premise at ``level`` for Nmap ``release`` (the latest change not after it)."""
        chosen = self.premise.get(level, {})
        for since in sorted(self.later, key=_release):
            if _release(since) <= _release(release) and level in self.later[since]:
                chosen = self.later[since][level]
        return chosen


#: 7.94+, intensity 0: ONCRPC_CALL goes out and nothing answers it: NOMATCH (a read timed
#: out, so not tcpwrapped) on a port with no name: no <service> element at all
SILENT_AT_0_FROM_794 = {"state": "open|filtered", "service": False}

CASES = [
    Case(
        "sip-hard",
        "answers only SIPOptions, as Asterisk: a hard match after 5 silent probes",
        # unlisted: the port's table answer has no name in any release
        lambda: udp.UDPServer(udp.sip_asterisk, unlisted=True),
        premise={
            7: {
                "state": "open",
                "name": "sip-proxy",
                "product": "Asterisk PBX",
                "servicefp": False,
            },
            0: {"state": "open|filtered", "name": "tcpwrapped"},
        },
        later={"7.94": {0: SILENT_AT_0_FROM_794}},
    ),
    Case(
        "garbage",
        "answers every datagram with unknown bytes: UDP fingerprint of all 19 probes",
        lambda: udp.UDPServer(udp.garbage),
        premise={
            7: {"state": "open", "method": "table", "servicefp": True},
            0: {"state": "open", "name": "tcpwrapped", "conf": "8"},
        },
        # ONCRPC_CALL's answer fingerprinted
        later={"7.94": {0: {"state": "open", "method": "table", "servicefp": True}}},
    ),
    Case(
        "silent",
        "never answers: open|filtered, NOMATCH, no '?'",
        # on a number nmap-services has no UDP entry for (read from the table): no name
        lambda: udp.UDPServer(udp.silent, unlisted=True),
        premise={
            # NOMATCH, nothing read, no table name: no <service> element at all
            7: {"state": "open|filtered", "service": False, "servicefp": False},
            0: {"state": "open|filtered", "name": "tcpwrapped", "conf": "8"},
        },
        later={"7.94": {0: SILENT_AT_0_FROM_794}},
    ),
    Case(
        "silent-unknown",
        "never answers, on a port nmap-services names 'unknown': a name until 7.93, none after",
        lambda: udp.UDPServer(udp.silent, named="unknown"),
        premise={
            7: {"state": "open|filtered", "name": "unknown", "method": "table", "conf": "3"},
            0: {"state": "open|filtered", "name": "tcpwrapped", "conf": "8"},
        },
        later={
            "7.94": {
                7: {"state": "open|filtered", "service": False},
                0: SILENT_AT_0_FROM_794,
            }
        },
    ),
    Case(
        "closed",
        "nothing bound: ICMP port-unreachable",
        udp.ClosedUDPPort,
        premise={7: {"state": "closed"}, 0: {"state": "closed"}},
    ),
    Case(
        "empty-then-hello",
        "an empty datagram (EOF) then 'hello zz': until 7.93 each reply lands in the next "
        "probe; from 7.94 on a socket already closed (a socket per probe): tcpwrapped",
        lambda: udp.UDPServer(udp.empty_then_hello),
        premise={7: {"state": "open", "servicefp": True}},
        later={
            "7.94": {
                7: {
                    "state": "open",
                    "name": "tcpwrapped",
                    "method": "probed",
                    "conf": "8",
                    "servicefp": False,
                }
            }
        },
    ),
    Case(
        "portscan-only",
        "answers only the port scan's RPC datagram: open, nothing matched (7.94+: that "
        "datagram is the ONCRPC_CALL probe, so -sV sends it too and fingerprints 'pong')",
        lambda: udp.UDPServer(udp.portscan_payload_only),
        premise={7: {"state": "open", "servicefp": False}, 0: {"state": "open"}},
        later={
            "7.94": {
                7: {"state": "open", "method": "table", "servicefp": True},
                0: {"state": "open", "method": "table", "servicefp": True},
            }
        },
    ),
    Case(
        "dnsmasq",
        "dnsmasq (real), version.bind",
        daemon=udp.start_dnsmasq,
        premise={7: {"state": "open", "name": "domain", "product": "dnsmasq"}},
    ),
    Case(
        "snmpd",
        "Net-SNMP snmpd (real), community public",
        daemon=udp.start_snmpd,
        premise={7: {"state": "open", "name": "snmp"}},
    ),
]

INTENSITIES = (7, 0)


@dataclass
class Run:
    ports: dict[str, int]
    unavailable: dict[str, str]
    nmap: dict[int, dict[int, dict[str, Any]]]  # intensity → port → record
    vscan: dict[int, dict[int, dict[str, Any]]]
    vscan_json: dict[int, dict[int, dict[str, Any]]]
    seconds: dict[str, float]
    logs: dict[str, str]


def _start_targets(
    stack: contextlib.ExitStack[Any], workdir: Path
) -> tuple[dict[str, int], dict[str, str]]:
    return start_targets(stack, workdir, [(c.id, c.make, c.daemon) for c in CASES])


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    nmap = oracle_nmap()
    if os.geteuid() != 0:
        pytest.skip("nmap -sU needs root (raw sockets)")
    with (
        tempfile.TemporaryDirectory(prefix="vscand-udp-e2e-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        datadir = nse_off_datadir(workdir)
        ports, unavailable = _start_targets(stack, workdir)
        portlist = "U:" + ",".join(str(p) for p in sorted(ports.values()))
        commands: dict[str, list[str]] = {}
        for level in INTENSITIES:
            commands[f"nmap-{level}"] = [
                nmap,
                "-sU",
                "-sV",
                "--version-intensity",
                str(level),
                "-Pn",
                "-n",
                "-p",
                portlist,
                "127.0.0.1",
                "-oX",
                str(workdir / f"nmap-{level}.xml"),
                "--datadir",
                str(datadir),
            ]
            commands[f"vscan-{level}"] = [
                *vscan_command(),
                "scan",
                "127.0.0.1",
                "-p",
                portlist,
                "--version-intensity",
                str(level),
                "-oX",
                str(workdir / f"vscan-{level}.xml"),
                "-oJ",
                str(workdir / f"vscan-{level}.jsonl"),
                "--no-progress",
                "--no-scripts",  # nmap runs without its NSE version scripts here
            ]
        seconds, logs = run_side_by_side(commands, workdir, SCAN_TIMEOUT)
        for level in INTENSITIES:
            text = (workdir / f"nmap-{level}.xml").read_text()
            assert "<script " not in text, "NSE ran: the empty script.db was ignored"
        (workdir / "ports.txt").write_text(
            "".join(f"{case} {port}\n" for case, port in sorted(ports.items()))
        )
        (workdir / "seconds.txt").write_text(
            "".join(f"{name} {took}\n" for name, took in sorted(seconds.items()))
        )
        keep_outputs(workdir, "udp-")
        yield Run(
            ports=ports,
            unavailable=unavailable,
            nmap={lv: parse_xml(workdir / f"nmap-{lv}.xml") for lv in INTENSITIES},
            vscan={lv: parse_xml(workdir / f"vscan-{lv}.xml") for lv in INTENSITIES},
            vscan_json={lv: parse_jsonl(workdir / f"vscan-{lv}.jsonl") for lv in INTENSITIES},
            seconds=seconds,
            logs=logs,
        )


def _port_of(run: Run, case: Case) -> int:
    reason = run.unavailable.get(case.id)
    if reason is not None:
        if reason.startswith("FAILED") or IN_CI:
            pytest.fail(f"{case.id}: {reason}")
        pytest.skip(f"{case.id}: {reason}")
    return run.ports[case.id]


PAIRS = [(case, level) for level in INTENSITIES for case in CASES]
PAIR_IDS = [f"{case.id}-i{level}" for case, level in PAIRS]


@pytest.mark.parametrize(("case", "level"), PAIRS, ids=PAIR_IDS)
def test_udp_port_agrees(run: Run, case: Case, level: int) -> None:
    port = _port_of(run, case)
    nmap_rec, vscan_rec = run.nmap[level].get(port), run.vscan[level].get(port)
    record = run.vscan_json[level].get(port, {})
    diffs = differences(nmap_rec, vscan_rec)
    assert nmap_rec is None or nmap_rec["protocol"] == "udp"
    assert vscan_rec is None or vscan_rec["protocol"] == "udp"
    assert not diffs, (
        f"{case.id} at intensity {level} (127.0.0.1:{port}/udp, {case.what}) disagrees:\n  "
        + "\n  ".join(diffs)
        + f"\n  vscan final_state={record.get('final_state')} matches={record.get('matches')}"
    )


@pytest.mark.parametrize(("case", "level"), PAIRS, ids=PAIR_IDS)
def test_udp_case_premise(run: Run, case: Case, level: int) -> None:
    """nmap's own answer is what the case was built to provoke (else it tests nothing),
    as the oracle's release answers (``Case.later``)."""
    port = _port_of(run, case)
    rec = run.nmap[level].get(port)
    assert rec is not None, f"nmap did not report port {port}/udp"
    release = releases.oracle()
    assert isinstance(release, releases.NmapRelease), release
    for key, want in case.premise_of(release.version, level).items():
        got = rec["servicefp"] is not None if key == "servicefp" else rec.get(key)
        assert got == want, (
            f"{case.id}: nmap {release.version} {key}={got!r}, the case expects {want!r}: {rec}"
        )


def test_premises_per_release() -> None:
    """7.93's premises hold until a later release changes them, per intensity."""
    silent = next(c for c in CASES if c.id == "silent")
    assert silent.premise_of("7.93", 0)["name"] == "tcpwrapped"
    assert silent.premise_of("7.95", 0) == SILENT_AT_0_FROM_794
    assert silent.premise_of("7.95", 7) == silent.premise[7], "unchanged at intensity 7"
    hello = next(c for c in CASES if c.id == "empty-then-hello")
    assert hello.premise_of("7.94", 7)["name"] == "tcpwrapped"
    assert hello.premise_of("7.93", 0) == hello.premise_of("7.991", 0) == {}


def test_every_udp_port_reported(run: Run) -> None:
    wanted = set(run.ports.values())
    for level in INTENSITIES:
        assert set(run.nmap[level]) == wanted, f"nmap -sU at intensity {level} missed ports"
        assert set(run.vscan[level]) == wanted, f"vscan at intensity {level} missed ports"
        assert set(run.vscan_json[level]) == wanted, f"vscan -oJ at intensity {level}"


def test_normal_output_names_udp_ports(run: Run) -> None:
    """vscan's table says ``PORT/udp`` like nmap's."""
    sip = run.ports.get("sip-hard")
    assert sip is not None
    line = next(
        (row for row in run.logs["vscan-7"].splitlines() if row.startswith(f"{sip}/udp ")),
        None,
    )
    assert line is not None, run.logs["vscan-7"]
    assert line.split()[1:4] == ["open", "sip-proxy", "Asterisk"]
