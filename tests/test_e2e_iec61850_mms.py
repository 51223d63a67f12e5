"""iec61850-mms's action against Nmap 7.95's, though ``nmap -sV`` never runs it.

Nmap 7.95's rule (``shortport.portnumber(102, "iso-tsap")``) never holds, so the
oracle is Nmap's own script with its rule changed at test time: a copy of the
installed 7.95 ``iec61850-mms.nse`` in a temporary directory whose portrule is
``shortport.portnumber(102, "tcp")`` (the only change; nothing of Nmap's is kept).
In a network namespace of its own, ``tests/e2e/script_servers_mms.py`` serves one
MMS lookalike per case on 102/tcp of 127.0.0.2, .3, ...; then::

    nmap -Pn -n -p102 --script <copy> 127.0.0.2-8 -oX nmap.xml

and our action through ``ScriptRunner`` with the rule held the same way (a
subclass), on the same servers. Per case, the ``<script>`` output string and
elements must be equal. Needs root, ``ip`` and the 7.95 Nmap (installed on
Debian 13, else the Debian 13 root): skips without them, fails under CI=true.
"""

from __future__ import annotations

import contextlib
import json
import subprocess
import sys
import tempfile
import xml.etree.ElementTree as ET
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests import releases
from tests.e2e.compare import parse_scripts
from tests.e2e.script_servers_mms import CASES
from tests.test_e2e_scripts import IN_CI, REPO, _namespace, _need_root, _require
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT

pytestmark = pytest.mark.e2e

SCRIPT = "iec61850-mms"
RULE = 'portrule = shortport.portnumber(102, "iso-tsap")\n'
HELD = 'portrule = shortport.portnumber(102, "tcp")\n'

#: what Nmap 7.95 prints per case (the premise: each outcome of the action is covered)
EXPECTED: dict[str, str | None] = {
    "identify": SCRIPT_ERROR_OUTPUT,  # packmmsInTPKT always dies after the Identify answer
    "segmented": SCRIPT_ERROR_OUTPUT,
    "empty": SCRIPT_ERROR_OUTPUT,
    "oversized": SCRIPT_ERROR_OUTPUT,
    "not-mms": "",  # the decoder gives up: the empty output table
    "truncated": SCRIPT_ERROR_OUTPUT,
    "silent": None,  # no third answer: nil
}

#: our action in the namespace, its rule held on 102/tcp; prints {address: script result}
RUN_OURS = """
import json, sys
from twisted.internet import defer, reactor
from vscand.service import empty_service
from vscand.scripts.api import RuleContext
from vscand.scripts.builtin.iec61850_mms import Iec61850Mms
from vscand.scripts.runner import ScriptRunner

class Held(Iec61850Mms):
    def portrule(self, port, ctx):
        return port.number == 102 and port.protocol == "tcp"

def result(address):
    return {"host": address, "hostname": None, "port": 102, "protocol": "tcp",
            "state": "open", "service": empty_service("iso-tsap", method="table", conf=3)}

async def main():
    results = {address: result(address) for address in sys.argv[1:]}
    runner = ScriptRunner(reactor, [Held()])
    await defer.DeferredList([
        defer.Deferred.fromCoroutine(runner.run_host([r], RuleContext(release="7.95")))
        for r in results.values()
    ])
    print(json.dumps({a: r["service"].get("script_results") or [] for a, r in results.items()}))

done = defer.Deferred.fromCoroutine(main())
done.addErrback(lambda failure: print(failure, file=sys.stderr))
done.addBoth(lambda _: reactor.stop())
reactor.run()
"""


def _nmap_795() -> releases.NmapRelease:
    release = releases.debian13()
    if isinstance(release, releases.Unavailable):
        if IN_CI:
            pytest.fail(f"Nmap 7.95: {release.reason}")
        pytest.skip(f"Nmap 7.95: {release.reason}")
    return release


def _elements(items: list[dict[str, Any]]) -> list[Any]:
    """Our JSON elements in ``compare.parse_scripts``'s form."""
    return [
        ("table", e["key"], _elements(e["table"])) if "table" in e
        else ("elem", e["key"], e["value"])
        for e in items
    ]  # fmt: skip


@pytest.fixture(scope="module")
def outputs() -> Iterator[tuple[dict[str, Any], dict[str, Any], dict[str, str]]]:
    _need_root()
    release = _nmap_795()
    ip = _require("ip")
    with (
        tempfile.TemporaryDirectory(prefix="vscand-iec61850-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        work = Path(tmp).resolve()
        source = (release.data_dir / "scripts" / f"{SCRIPT}.nse").read_text()
        assert source.count(RULE) == 1, "7.95's rule is not the one reproduced"
        copy = work / f"{SCRIPT}.nse"
        copy.write_text(source.replace(RULE, HELD))
        ns = stack.enter_context(_namespace(ip))
        inside = [ip, "netns", "exec", ns]
        servers = subprocess.Popen(
            [*inside, sys.executable, "-m", "tests.e2e.script_servers_mms"],
            cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
        )  # fmt: skip
        stack.callback(servers.kill)
        assert servers.stdout is not None
        addresses: dict[str, str] = json.loads(servers.stdout.readline())
        command = list(release.command)
        if "run" in command:  # the root's nmap: share the work directory at the same path
            at = command.index("run") + 1
            command[at:at] = ["--bind", str(work)]
        xml = work / "nmap.xml"
        targets = sorted(addresses.values())
        ours = subprocess.Popen(
            [*inside, sys.executable, "-c", RUN_OURS, *targets],
            cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            env={"PYTHONPATH": str(REPO), "PATH": "/usr/bin:/bin"},
        )  # fmt: skip
        nmap = subprocess.run(
            [*inside, *command, "-Pn", "-n", "-p102", "--script", str(copy), *targets,
             "-oX", str(xml)],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        out, err = ours.communicate(timeout=120)
        assert nmap.returncode == 0, nmap.stderr
        assert ours.returncode == 0 and out, err
        theirs: dict[str, Any] = {}
        for host in ET.parse(xml).getroot().iter("host"):
            address = host.find("address")
            port = host.find("ports/port")
            if address is not None and port is not None:
                theirs[address.get("addr", "")] = parse_scripts(port).get(SCRIPT)
        mine = {
            address: next(
                ({"output": r["output"], "elements": _elements(r["elements"] or [])}
                 for r in results if r["id"] == SCRIPT),
                None,
            )
            for address, results in json.loads(out).items()
        }  # fmt: skip
        yield theirs, mine, addresses


@pytest.mark.parametrize("case", CASES)
def test_iec61850_mms_action_equals_nmap_795(
    outputs: tuple[dict[str, Any], dict[str, Any], dict[str, str]], case: str
) -> None:
    theirs, mine, addresses = outputs
    address = addresses[case]
    nmap_says = theirs[address]
    # the premise: Nmap's own script ran and ended the way this case is meant to provoke
    assert (nmap_says and nmap_says["output"]) == EXPECTED[case], nmap_says
    assert mine[address] == nmap_says
