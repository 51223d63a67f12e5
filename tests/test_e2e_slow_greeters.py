"""End to end: slow greeters and a one-connection-at-a-time server, ``vscan scan --fast`` and
faithful ``vscan scan`` against ``nmap -sV`` (127.0.0.1 only; issue 15).

The targets (``benchmarks/scan_vs_nmap.py``'s ``Targets``):

* slow greeters (``benchmarks/_targets.py`` kind ``slowbanner``): an SSH, an SMTP and an FTP
  banner, each sent 1, 3, 5.7, 6.3, 7 and 12 s after the connection opens (18 ports; they
  ignore what they read). Nmap's NULL probe waits 6 s: at 1, 3 and 5.7 s it matches the
  banner; at 6.3 and 7 s the banner lands on the same connection during the next probe
  (GenericLines, 5 s: Nmap reuses the connection of a NULL probe that timed out), which
  matches it through the NULL probe's lines; at 12 s no probe of Nmap's waits long enough
  (the longest, Verifier, waits 11 s), so Nmap never sees it and walks every probe. The
  SSH and SMTP banners hard-match; the FTP one (ProFTPD's Debian banner, no version)
  only soft-matches, so Nmap walks the ftp probes and prints a fingerprint, whose
  ``r(NULL,...)`` entry shows which probe got the banner;
* ``openssl s_server -www`` (Debian's openssl), which serves one connection at a time:
  Nmap finds ``ssl/http`` (``OpenSSL s_server -www httpd``). It is started three times (one
  instance per scanner, like ``scan_both``'s twins in tests/e2e/oracle_run.py), so no
  scanner waits in the accept queue behind another scanner's connection; each scanner meets
  a server that only it talks to, as in the field.

One run of each scanner, all three at once (NSE off for nmap: an empty ``script.db``)::

    nmap -sV -Pn -n -p PORTS 127.0.0.1 -oX nmap.xml --datadir TMP
    vscan scan 127.0.0.1 -p PORTS -oX faithful.xml -oJ faithful.jsonl --no-progress --no-scripts
    vscan scan 127.0.0.1 -p PORTS -oX fast.xml -oJ fast.jsonl --no-progress --no-scripts --fast

then, per case (named ``PROTOCOL-DELAYs`` or ``s_server-www``): faithful against nmap and fast
against nmap (``tests/e2e/compare.py``'s ``differences``: state, service name, product,
version, extrainfo, hostname, ostype, devicetype, tunnel, method, conf, CPEs, the masked
fingerprint), and fast against faithful (the same, plus the final state, the reason and
the probes under which the matches were made: NULL or the next one, for a slow greeter).
Faithful mode is the reference of fast mode's guarantee (DESIGN.md, "Fast mode"); both must
equal Nmap here. No timing is asserted (the wall times are printed with ``-s``).

Ports from 24600 (free, none that ``nmap-services`` names): tests/test_e2e_fast.py takes
its own from 23000 and the benchmarks from 21000; ``tests/loopback.py``'s worker slices stop
at 24499 with the Makefile's three workers. The 12 s greeters make nmap and faithful mode
walk every probe: the module takes ~3 min.
"""

from __future__ import annotations

import sys
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO / "benchmarks"))

from scan_vs_nmap import (  # noqa: E402
    SLOW_BANNERS,
    SLOW_DELAYS,
    Targets,
    slow_label,
    slow_mix,
)

from tests.e2e.compare import differences, parse_jsonl, parse_xml  # noqa: E402
from tests.e2e.oracle_run import (  # noqa: E402
    _renumbered,
    keep_outputs,
    nse_off_datadir,
    oracle_nmap,
    run_side_by_side,
    vscan_command,
)
from tests.e2e.servers import listed_ports  # noqa: E402

PORT_START = 24600
#: the issue's delays, with the two around the NULL probe's 6 s moved 0.3 s from it: three
#: scanners at once on real sockets (CI's 2 cores have shown 100-250 ms stalls) must not
#: decide a case by scheduling; 5.9 and 6.1 s exactly are tested on a Clock
#: (tests/test_fast_machine.py) and run by `make bench-fast` (one scanner at a time)
E2E_DELAYS = tuple({5.9: 5.7, 6.1: 6.3}.get(d, d) for d in SLOW_DELAYS)
#: all three scanners at once; nmap and faithful mode walk every probe of the 12 s greeters
SCAN_TIMEOUT = 480.0
#: Nmap sees a slow greeter's banner when it comes within the NULL probe's wait (6 s) and the
#: wait of the probe it sends next on the same connection (GenericLines, 5 s)
SEEN_BEFORE = 11.0
S_SERVER = "s_server-www"
#: what Nmap finds on a slow greeter that it sees (the case's premise): the service name and
#: whether it is a hard match (product, no fingerprint) or a soft one (no product, a
#: fingerprint): ProFTPD's Debian banner names no version, and Nmap 7.93's ProFTPD lines
#: want one, so only the generic ftp line soft-matches and Nmap walks the ftp probes
PREMISE = {"ssh": ("ssh", True), "smtp": ("smtp", True), "ftp": ("ftp", False)}
SCANNERS = ("nmap", "faithful", "fast")


@dataclass(frozen=True)
class Case:
    id: str
    what: str
    #: the slow greeter's protocol and delay (None: the s_server case)
    protocol: str | None = None
    delay: float | None = None


CASES = [
    Case(
        f"{protocol}-{delay:g}s",
        f"{protocol.upper()} banner {banner.strip()!r} {delay:g} s after the connect",
        protocol,
        delay,
    )
    for protocol, banner in SLOW_BANNERS.items()
    for delay in E2E_DELAYS
] + [Case(S_SERVER, "openssl s_server -www, one connection at a time (an instance per scanner)")]


@dataclass
class Run:
    #: case id -> the port its records are keyed by (nmap's instance of the s_server)
    ports: dict[str, int]
    #: scanner -> port -> record (tests/e2e/compare.py parse_xml); the twins renumbered
    xml: dict[str, dict[int, dict[str, Any]]]
    #: faithful/fast -> port -> -oJ record
    json: dict[str, dict[int, dict[str, Any]]]
    seconds: dict[str, float]


def _portlist(ports: list[int]) -> str:
    return ",".join(str(p) for p in sorted(ports))


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    nmap = oracle_nmap()
    with tempfile.TemporaryDirectory(prefix="vscand-e2e-slow-") as tmp:
        workdir = Path(tmp)
        targets = Targets(
            0,
            0,
            False,
            workdir,
            port_start=PORT_START,
            mix=slow_mix(E2E_DELAYS),
            s_servers=len(SCANNERS),
            # unlisted ports: a table answer is then the same on every s_server twin
            avoid=listed_ports("tcp"),
        )
        try:
            by_label = {label: port for port, label in targets.labels.items()}
            slow_ports = {
                c.id: by_label[slow_label(c.protocol, c.delay)]
                for c in CASES
                if c.protocol is not None and c.delay is not None
            }
            twin = dict(zip(SCANNERS, targets.s_server_ports, strict=True))
            datadir = nse_off_datadir(workdir)
            files = {name: workdir / f"{name}.xml" for name in SCANNERS}
            jsonl = {name: workdir / f"{name}.jsonl" for name in ("faithful", "fast")}

            def vscan(name: str, *extra: str) -> list[str]:
                portlist = _portlist([*slow_ports.values(), twin[name]])
                return [
                    *vscan_command(), "scan", "127.0.0.1", "-p", portlist,
                    "-oX", str(files[name]), "-oJ", str(jsonl[name]),
                    "--no-progress", "--no-scripts", *extra,
                ]  # fmt: skip

            commands = {
                "nmap": [
                    nmap, "-sV", "-Pn", "-n", "-p", _portlist([*slow_ports.values(), twin["nmap"]]),
                    "127.0.0.1", "-oX", str(files["nmap"]), "--datadir", str(datadir),
                ],
                "faithful": vscan("faithful"),
                "fast": vscan("fast", "--fast"),
            }  # fmt: skip
            seconds, _ = run_side_by_side(commands, workdir, SCAN_TIMEOUT)
            keep_outputs(workdir, "slow-greeters-")
            if "<script " in files["nmap"].read_text():
                raise AssertionError("NSE ran: the empty script.db was ignored")
            xml = {name: parse_xml(path) for name, path in files.items()}
            records = {name: parse_jsonl(path) for name, path in jsonl.items()}
            # every scanner's s_server instance is reported under nmap's
            for name in ("faithful", "fast"):
                old, new = twin[name], twin["nmap"]
                if old in xml[name]:
                    xml[name][new] = _renumbered(xml[name].pop(old), old, new)
                if old in records[name]:
                    records[name][new] = records[name].pop(old)
            ports = {**slow_ports, S_SERVER: twin["nmap"]}
            _print_summary(ports, xml, records, seconds)
            yield Run(ports, xml, records, seconds)
        finally:
            targets.close()


def _brief(rec: dict[str, Any] | None) -> str:
    if rec is None:
        return "(missing)"
    service = "/".join(x for x in (rec.get("tunnel"), rec.get("name") or "?") if x)
    product = " ".join(x for x in (rec.get("product"), rec.get("version")) if x)
    return f"{service} {product!r} fp={rec.get('servicefp') is not None}"


def _print_summary(
    ports: dict[str, int],
    xml: dict[str, dict[int, dict[str, Any]]],
    records: dict[str, dict[int, dict[str, Any]]],
    seconds: dict[str, float],
) -> None:
    print(f"\nslow greeters: wall seconds {seconds}")
    for case_id, port in ports.items():
        fast = records["fast"].get(port, {})
        print(
            f"  {case_id:>14} {port}: nmap {_brief(xml['nmap'].get(port))} | "
            f"faithful {_brief(xml['faithful'].get(port))} | fast {_brief(xml['fast'].get(port))}"
            f" ({fast.get('final_state')}, {fast.get('duration_ms')} ms)"
        )


def _ours(run: Run, scanner: str, port: int) -> str:
    record = run.json[scanner].get(port, {})
    matches = [
        (m["probe"], m["matched_probe"], m["line"], "soft" if m["soft"] else "hard")
        for m in record.get("matches") or []
    ]
    return (
        f"\n  {scanner}: final_state={record.get('final_state')} "
        f"duration_ms={record.get('duration_ms')} matches={matches}"
    )


def _fail(run: Run, case: Case, what: str, diffs: list[str], scanners: tuple[str, ...]) -> str:
    port = run.ports[case.id]
    return (
        f"{case.id} (127.0.0.1:{port}, {case.what}): {what}:\n  "
        + "\n  ".join(diffs)
        + "".join(_ours(run, scanner, port) for scanner in scanners)
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_faithful_agrees_with_nmap(run: Run, case: Case) -> None:
    port = run.ports[case.id]
    diffs = differences(run.xml["nmap"].get(port), run.xml["faithful"].get(port))
    assert not diffs, _fail(run, case, "faithful vscan disagrees with nmap", diffs, ("faithful",))


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fast_agrees_with_nmap(run: Run, case: Case) -> None:
    port = run.ports[case.id]
    diffs = differences(run.xml["nmap"].get(port), run.xml["fast"].get(port))
    assert not diffs, _fail(run, case, "vscan --fast disagrees with nmap", diffs, ("fast",))


def _matched_under(record: dict[str, Any]) -> list[tuple[str, bool]]:
    """The probes whose responses made the record's matches, soft or hard (not the lines:
    how a response is split into reads may pick another line, tests/test_e2e_fast.py)."""
    return [(m["probe"], m["soft"]) for m in record.get("matches") or []]


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_fast_agrees_with_faithful(run: Run, case: Case) -> None:
    """Fast mode's guarantee: faithful mode's answer (with the fingerprint, final state and
    reason), reached on the same probes' responses: a banner the NULL probe matched in
    faithful mode must not be matched under the next probe in fast mode (through the NULL
    probe's lines, as a fallback, the answer may well be the same: a hard match shows no
    fingerprint to tell)."""
    port = run.ports[case.id]
    diffs = [
        d.replace("nmap =", "faithful=").replace("vscan=", "fast=").replace("nmap=", "faithful=")
        for d in differences(run.xml["faithful"].get(port), run.xml["fast"].get(port))
    ]
    faithful, fast = run.json["faithful"].get(port, {}), run.json["fast"].get(port, {})
    for key in ("reason", "final_state"):
        if faithful.get(key) != fast.get(key):
            diffs.append(f"{key}: faithful={faithful.get(key)!r} fast={fast.get(key)!r}")
    if _matched_under(faithful) != _matched_under(fast):
        diffs.append(
            f"matched under (probe, soft): faithful={_matched_under(faithful)} "
            f"fast={_matched_under(fast)}"
        )
    assert not diffs, _fail(
        run, case, "vscan --fast disagrees with faithful vscan", diffs, ("faithful", "fast")
    )


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_premise(run: Run, case: Case) -> None:
    """Nmap's answer is the one the case was built to provoke."""
    port = run.ports[case.id]
    rec = run.xml["nmap"].get(port)
    assert rec is not None, f"{case.id}: nmap did not report 127.0.0.1:{port}"
    assert rec["state"] == "open", f"{case.id}: nmap: {rec}"
    if case.protocol is None:
        want = {"name": "http", "tunnel": "ssl", "product": "OpenSSL s_server -www httpd"}
        got = {key: rec[key] for key in want}
        assert got == want, f"{case.id}: nmap found {rec}"
    elif case.delay is not None and case.delay < SEEN_BEFORE:
        name, hard = PREMISE[case.protocol]
        seen = (rec["name"], rec["product"] is not None, rec["servicefp"] is None)
        assert seen == (name, hard, hard), (
            f"{case.id}: nmap did not recognise the banner sent after {case.delay:g} s as "
            f"{'a hard' if hard else 'a soft'} {name} match: {rec}"
        )
    else:
        assert rec["product"] is None and rec["servicefp"] is None, (
            f"{case.id}: nmap saw the banner sent after {case.delay} s: {rec}"
        )
