"""The UDP version scripts against ``nmap -sU -sV`` (NSE on), two ways.

1. ``vscan scan 127.0.0.1 -p U:161,500,3478`` (engine and scripts) against
   nmap on the same ports, every field of ``tests/e2e/compare.py``;
2. our script phase alone (``ScriptRunner`` with every built-in script, real
   UDP sockets) on the port results the engine hands it — written here from what Nmap's own probes
found before its scripts ran (SNMPv1public's hard match on 161; no probe
answer on 500 and 3478: ``open|filtered``, table names) — then compares the
final answers field by field (state, name, product, version, extra info,
hostname, OS/device type, tunnel, method, conf, CPEs):

* a real ``snmpd`` on 161/udp (snmp-info),
* a real ``turnserver`` (coturn) on 3478/udp (stun-version),
* the IKE lookalike of ``tests/e2e/script_servers_brokers_vpn.py`` on 500/udp (ike-version).

Needs root, ``ip``, ``snmpd`` and ``turnserver``: skips without them, fails under CI=true.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

import tests.e2e.masks_existing  # noqa: F401  (registers the script masks)
from tests.e2e.compare import NMAP_SCRIPT_OUTPUT, differences, parse_xml
from tests.e2e.oracle_run import oracle_nmap, scan_env, vscan_command
from tests.test_e2e_scripts import REPO, _namespace, _need_root, _require, _start_target_module

pytestmark = pytest.mark.e2e

PORTS = {"snmp": 161, "ike": 500, "stun": 3478}

#: our script phase, in the namespace: print the final results as JSON lines
RUN_SCRIPTS = """
import json, sys
from twisted.internet import reactor, defer
from vscand.service import empty_service
from vscand.scripts.api import RuleContext
from vscand.scripts.registry import builtin_scripts
from vscand.scripts.runner import ScriptRunner

def port(number, name, state, method="table", conf=3, **fields):
    service = empty_service(name, method=method, conf=conf)
    service.update(fields)
    return {"host": "127.0.0.1", "hostname": None, "port": number, "protocol": "udp",
            "state": state, "service": service}

results = [
    port(161, "snmp", "open", "probed", 10, product="SNMPv1 server", extrainfo="public",
         hostname=sys.argv[1]),
    port(500, "isakmp", "open|filtered"),
    port(3478, "stun", "open|filtered"),
]

async def main():
    await ScriptRunner(reactor, builtin_scripts()).run_host(results, RuleContext())
    for result in results:
        print(json.dumps(result))

done = defer.Deferred.fromCoroutine(main())
done.addErrback(lambda failure: print(failure, file=sys.stderr))
done.addBoth(lambda _: reactor.stop())
reactor.run()
"""


@pytest.fixture(scope="module")
def answers() -> Iterator[
    tuple[dict[int, dict[str, Any]], dict[int, dict[str, Any]], dict[int, dict[str, Any]]]
]:
    _need_root()
    nmap = oracle_nmap()
    ip, snmpd, turnserver = _require("ip"), _require("snmpd"), _require("turnserver")
    with (
        tempfile.TemporaryDirectory(prefix="vscand-scripts2-udp-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        ns = stack.enter_context(_namespace(ip))
        inside = [ip, "netns", "exec", ns]
        (workdir / "snmpd.conf").write_text("rocommunity public 127.0.0.1\n")
        servers = [
            [snmpd, "-f", "-Lo", "-C", "-c", str(workdir / "snmpd.conf"), "udp:127.0.0.1:161"],
            [turnserver, "-n", "--listening-ip=127.0.0.1", "--listening-port=3478", "--no-tls",
             "--no-dtls", "--no-cli", "--log-file=stdout"],
        ]  # fmt: skip
        for i, cmd in enumerate(servers):
            log = stack.enter_context(open(workdir / f"server{i}.log", "wb"))
            proc = subprocess.Popen([*inside, *cmd], stdout=log, stderr=subprocess.STDOUT)
            stack.callback(proc.kill)
        _start_target_module(
            stack, inside, "tests.e2e.script_servers_brokers_vpn", "lookalike servers"
        )
        time.sleep(1.0)  # snmpd and turnserver bind at start-up; nothing to poll over UDP
        hostname = subprocess.run(
            [*inside, "hostname"], capture_output=True, text=True, check=True
        ).stdout.strip()
        nmap_xml = workdir / "nmap.xml"
        portlist = ",".join(str(p) for p in sorted(PORTS.values()))
        subprocess.run(
            [*inside, nmap, "-sU", "-sV", *NMAP_SCRIPT_OUTPUT, "-Pn", "-n", "-p", portlist,
             "127.0.0.1", "-oX", str(nmap_xml)],
            check=True, capture_output=True, timeout=300,
        )  # fmt: skip
        vscan_xml = workdir / "vscan.xml"
        subprocess.run(
            [*inside, *vscan_command(), "scan", "127.0.0.1", "-p", "U:" + portlist, "-oX",
             str(vscan_xml), "--no-progress", "--script-output"],
            check=True, capture_output=True, timeout=300, env=scan_env(),
        )  # fmt: skip
        ours = subprocess.run(
            [*inside, sys.executable, "-c", RUN_SCRIPTS, hostname],
            cwd=REPO, check=True, capture_output=True, text=True, timeout=300,
        )  # fmt: skip

        vscan = {}
        for line in ours.stdout.splitlines():
            result = json.loads(line)
            vscan[int(result["port"])] = result
        yield (
            parse_xml(nmap_xml),
            vscan,
            parse_xml(vscan_xml),
        )


FIELDS = ("name", "product", "version", "extrainfo", "hostname", "ostype", "devicetype",
          "tunnel", "method", "conf")  # fmt: skip

PREMISES = {
    "snmp": {"product": "SNMPv1 server; net-snmp SNMPv3 server"},
    "ike": {"product": "strongSwan", "version": "4.3.6"},
    "stun": {"name": "stun", "method": "probed"},
}


@pytest.mark.parametrize("case", sorted(PORTS))
def test_vscan_scan_udp_agrees(answers: Any, case: str) -> None:
    nmap, _phase, scanned = answers
    port = PORTS[case]
    diffs = differences(nmap.get(port), scanned.get(port))
    assert not diffs, f"{case} (port {port}/udp):\n  " + "\n  ".join(diffs)


@pytest.mark.parametrize("case", sorted(PORTS))
def test_udp_script_agrees(answers: Any, case: str) -> None:
    nmap, vscan, _scanned = answers
    port = PORTS[case]
    theirs, ours = nmap[port], vscan[port]
    for key, want in {"state": "open", **PREMISES[case]}.items():
        assert theirs.get(key) == want, f"nmap {case}: {key}={theirs.get(key)!r}"
    service = ours["service"]
    diffs = (
        [f"state: nmap={theirs['state']!r} ours={ours['state']!r}"]
        if (theirs["state"] != ours["state"])
        else []
    )
    for key in FIELDS:
        mine = service.get(key)
        mine = str(mine) if key == "conf" and mine is not None else mine
        if theirs.get(key) != mine:
            diffs.append(f"{key}: nmap={theirs.get(key)!r} ours={mine!r}")
    if sorted(theirs.get("cpe") or []) != sorted(service.get("cpe") or []):
        diffs.append(f"cpe: nmap={theirs.get('cpe')} ours={service.get('cpe')}")
    assert not diffs, f"{case} (port {port}/udp):\n  " + "\n  ".join(diffs)


def test_script_output_premise(answers: Any) -> None:
    """nmap printed snmp-info's and ike-version's results (stun-version prints none)."""
    nmap, _vscan, _scanned = answers
    shown = {sid for rec in nmap.values() for sid in rec["scripts"]}
    assert {"snmp-info", "ike-version"} <= shown, shown
