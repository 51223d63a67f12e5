"""End to end, more version scripts: ``vscan scan`` against ``nmap -sV`` (NSE on) in a
private network namespace.

The scripts' rules want their standard ports (pptp-version only runs on
1723), and the machine's own Mosquitto and RabbitMQ hold 1883 and 5672; so
the module creates a network namespace (loopback only) and starts there:

* a real ``mosquitto`` on 1883 (generated config: anonymous, no persistence)
  for mqtt-subscribe,
* a real ``prosody`` on 5222 (generated config, no TLS certificate) for
  xmpp-info (no probe matches prosody 0.12 and its stream ids are not in
  Nmap's table: the script runs and both leave the port ``xmpp-client?``),
* an AMQP 0-9-1 lookalike on 5672 sending a real Connection.Start frame
  (amqp-info) and a PPTP lookalike on 1723 (pptp-version), from
  ``tests/e2e/script_servers_brokers_vpn.py``,

then runs both scanners inside it::

    nmap -sV -Pn -n -p 1723,1883,5222,5672 127.0.0.1 -oX nmap.xml   # all version scripts
    vscan scan 127.0.0.1 -p 1723,1883,5222,5672 -oX vscan.xml -oJ vscan.jsonl

and requires agreement on every port (the fields of ``tests/e2e/compare.py``).
Needs root, ``ip``, ``mosquitto`` and ``prosody``: skips without them, fails
under CI=true.
"""

from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

import tests.e2e.masks_existing  # noqa: F401  (registers the script masks)
from tests.e2e.compare import (
    NMAP_SCRIPT_OUTPUT,
    differences,
    parse_jsonl,
    parse_xml,
)
from tests.e2e.oracle_run import keep_outputs, oracle_nmap, run_side_by_side, vscan_command
from tests.test_e2e_scripts import (
    SCAN_TIMEOUT,
    Case,
    Run,
    _namespace,
    _need_root,
    _require,
    _start_target_module,
)

pytestmark = pytest.mark.e2e

CASES = [
    Case(
        "amqp",
        "AMQP 0-9-1 Connection.Start lookalike on 5672: amqp-info",
        {"name": "amqp", "product": "RabbitMQ", "version": "3.10.8", "extrainfo": "0-9"},
    ),
    Case(
        "mqtt",
        "mosquitto on 1883: mqtt-subscribe names the port after $SYS/broker/version",
        {"method": "probed", "conf": "10"},
    ),
    Case(
        "xmpp",
        "prosody 0.12 on 5222: no probe names it, xmpp-info runs (xmpp-client) and sets nothing",
        {"name": "xmpp-client", "product": None, "method": "table"},
    ),
    Case(
        "pptp",
        "PPTP lookalike on 1723: pptp-version (Nmap's offsets)",
        {"name": "pptp", "product": "Linux", "version": "(Firmware: 258)", "hostname": "pptp-gw"},
    ),
]

MOSQUITTO_CONF = """\
listener 1883 127.0.0.1
allow_anonymous true
persistence false
log_dest stdout
"""

PROSODY_CONF = """\
run_as_root = true
daemonize = false
pidfile = "{dir}/prosody.pid"
data_path = "{dir}/data"
log = {{ {{ levels = {{ min = "info" }}, to = "console" }} }}
c2s_ports = {{ 5222 }}
s2s_ports = {{ 5269 }}
http_ports = {{}}
https_ports = {{}}
c2s_direct_tls_ports = {{}}
s2s_direct_tls_ports = {{}}
interfaces = {{ "127.0.0.1" }}
modules_enabled = {{ "roster"; "saslauth"; "tls"; "disco"; "ping"; }}
modules_disabled = {{ "posix"; }}
authentication = "internal_hashed"
certificates = "{dir}/certs"
VirtualHost "localhost"
"""


def _wait_port(inside: list[str], port: int, proc: subprocess.Popen[bytes], what: str) -> None:
    deadline = time.monotonic() + 30
    probe = f"import socket; socket.create_connection(('127.0.0.1', {port}), timeout=1).close()"
    while True:
        done = subprocess.run(
            [*inside, sys.executable, "-c", probe], capture_output=True, check=False
        )
        if done.returncode == 0:
            return
        if time.monotonic() > deadline or proc.poll() is not None:
            pytest.fail(f"{what} did not start on {port}")
        time.sleep(0.3)


@pytest.fixture(scope="module")
def run() -> Iterator[Run]:
    _need_root()
    nmap = oracle_nmap()
    ip, mosquitto, prosody = _require("ip"), _require("mosquitto"), _require("prosody")
    with (
        tempfile.TemporaryDirectory(prefix="vscand-scripts2-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        os.chmod(workdir, 0o755)
        ns = stack.enter_context(_namespace(ip))
        inside = [ip, "netns", "exec", ns]
        (workdir / "mosquitto.conf").write_text(MOSQUITTO_CONF)
        (workdir / "data").mkdir()
        (workdir / "certs").mkdir()
        (workdir / "prosody.cfg.lua").write_text(PROSODY_CONF.format(dir=workdir))
        daemons = {
            "mosquitto": ([*inside, mosquitto, "-c", str(workdir / "mosquitto.conf")], 1883),
            "prosody": ([*inside, prosody, "--config", str(workdir / "prosody.cfg.lua")], 5222),
        }
        for name, (cmd, port) in daemons.items():
            log = stack.enter_context(open(workdir / f"{name}.log", "wb"))
            proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT)
            stack.callback(proc.kill)
            _wait_port(inside, port, proc, name)
        started = _start_target_module(
            stack, inside, "tests.e2e.script_servers_brokers_vpn", "lookalike servers"
        )
        ports = {k: v for k, v in started.items() if k in {c.id for c in CASES}}
        ports.update(mqtt=1883, xmpp=5222)
        portlist = ",".join(str(p) for p in sorted(ports.values()))
        nmap_xml, vscan_xml, vscan_json = (
            workdir / "nmap.xml",
            workdir / "vscan.xml",
            workdir / "vscan.jsonl",
        )
        commands = {
            "nmap": [*inside, nmap, "-sV", *NMAP_SCRIPT_OUTPUT, "-Pn", "-n", "-p", portlist,
                     "127.0.0.1", "-oX", str(nmap_xml)],
            "vscan": [*inside, *vscan_command(), "scan", "127.0.0.1", "-p", portlist,
                      "-oX", str(vscan_xml), "-oJ", str(vscan_json), "--no-progress",
                      "--script-output"],
        }  # fmt: skip
        _seconds, logs = run_side_by_side(commands, workdir, SCAN_TIMEOUT)
        keep_outputs(workdir, "scripts2-")
        nmap_ports = parse_xml(nmap_xml)
        yield Run(ports, nmap_ports, parse_xml(vscan_xml), parse_jsonl(vscan_json), logs)


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_case_premise(run: Run, case: Case) -> None:
    """nmap's own answer is what the case was built for (else it tests nothing)."""
    rec = run.nmap.get(run.ports[case.id])
    assert rec is not None
    for key, want in {"state": "open", **case.premise}.items():
        assert rec.get(key) == want, (
            f"{case.id}: nmap {key}={rec.get(key)!r}, expected {want!r}: {rec}"
        )


def test_mqtt_named_after_the_broker_version(run: Run) -> None:
    """Nmap 7.93 writes $SYS/broker/version into the service *name*."""
    name = run.nmap[run.ports["mqtt"]]["name"]
    assert name.startswith("mosquitto version "), name


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_port_agrees(run: Run, case: Case) -> None:
    port = run.ports[case.id]
    diffs = differences(run.nmap.get(port), run.vscan.get(port))
    scripts = run.vscan_json.get(port, {}).get("service", {}).get("scripts")
    assert not diffs, (
        f"{case.id} (port {port}) disagrees:\n  "
        + "\n  ".join(diffs)
        + (f"\n  vscan scripts: {scripts}")
    )


def test_script_output_premise(run: Run) -> None:
    """nmap printed these scripts' results (so comparing them is not vacuous)."""
    shown = {sid for rec in run.nmap.values() for sid in rec["scripts"]}
    assert {"amqp-info", "mqtt-subscribe", "xmpp-info"} <= shown, shown
