"""End to end, script output in the reports: ``vscan scan`` against Nmap on one HTTP lookalike.

Nmap prints the version scripts' output only when script scanning was asked for
(``o.script``: ``--script``/``-sC``); ``nmap -sV`` alone runs them and prints nothing of
them. So four scans run side by side on one loopback port this module opens::

    nmap -sV                   -Pn -n -p PORT 127.0.0.1 -oN nmap.nmap -oX nmap.xml
    vscan scan 127.0.0.1 -p PORT                  -oN vscan.nmap -oX vscan.xml
    nmap -sV --script=version  -Pn -n -p PORT 127.0.0.1 -oN nmap-s.nmap -oX nmap-s.xml
    vscan scan 127.0.0.1 -p PORT --script-output  -oN vscan-s.nmap -oX vscan-s.xml -oJ ...

The target answers HTTP with ``server: `` (empty) before ``Server: Xitami`` (a hard
match, so no fingerprint and no fingerprint-strings), and a Server header of a control
byte, Latin-1, XML specials, ``--``, TAB and CR to a request with a Host header:
http-server-header then prints two lines (``<empty>`` and the odd one, escaped
differently by -oN and -oX) and returns them as a list (``<elem>``). Each pair must
agree: the -oN files byte for byte (only the ``#`` lines and Nmap's latency masked),
``ndiff`` with no differing line, the ports' fields and script output
(``tests/e2e/compare.py``); vscan's -oX valid against Nmap's DTD.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import socket
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.e2e.compare import differences, ndiff, parse_xml
from tests.e2e.oracle_run import keep_outputs, oracle_nmap, run_side_by_side, vscan_command
from tests.e2e.servers import ThreadedServer
from tests.test_output import DTD, xmllint_or_skip

pytestmark = pytest.mark.e2e

IN_CI = os.environ.get("CI") == "true"
SCAN_TIMEOUT = 120.0
ODD_SERVER = b"Odd\x01\xe9--x<&>\"'\t\rB/2"
SCRIPT_ROWS = ["| http-server-header: ", "|   <empty>", "|_  Odd\\x01\\xE9--x<&>\"'\t\\x0DB/2"]


def http_two_servers(conn: socket.socket) -> None:
    conn.settimeout(10)
    data = conn.recv(4096)
    if not data.startswith((b"GET ", b"OPTIONS ", b"HEAD ")):
        return
    server = ODD_SERVER if b"\r\nHost:" in data else b"\r\nServer: Xitami"
    conn.sendall(b"HTTP/1.0 200 OK\r\nserver: " + server + b"\r\nContent-Length: 2\r\n\r\nok")


@dataclass
class Files:
    workdir: Path
    port: int

    def path(self, name: str) -> Path:
        return self.workdir / name


@pytest.fixture(scope="module")
def files() -> Iterator[Files]:
    nmap = oracle_nmap()
    with (
        tempfile.TemporaryDirectory(prefix="vscand-writers-") as tmp,
        contextlib.ExitStack() as stack,
    ):
        workdir = Path(tmp)
        server = ThreadedServer(http_two_servers)
        stack.callback(server.close)
        port = str(server.port)
        commands: dict[str, list[str]] = {}
        for suffix, nmap_extra, vscan_extra in (
            ("", [], []),
            ("-s", ["--script=version"], ["--script-output"]),
        ):
            out = {n: str(workdir / f"{n}{suffix}") for n in ("nmap", "vscan")}
            commands[f"nmap{suffix}"] = [
                nmap,
                "-sV",
                *nmap_extra,
                "-Pn",
                "-n",
                "-p",
                port,
                "127.0.0.1",
                "-oN",
                out["nmap"] + ".nmap",
                "-oX",
                out["nmap"] + ".xml",
            ]
            commands[f"vscan{suffix}"] = [
                *vscan_command(), "scan", "127.0.0.1", "-p", port, *vscan_extra,
                "-oN", out["vscan"] + ".nmap", "-oX", out["vscan"] + ".xml",
                "-oJ", out["vscan"] + ".jsonl", "--no-progress",
            ]  # fmt: skip
        run_side_by_side(commands, workdir, SCAN_TIMEOUT)
        keep_outputs(workdir, "writers-")
        yield Files(workdir, server.port)


_LATENCY = re.compile(r"^Host is up \([0-9.]+s latency\)\.$")


def normal_lines(path: Path) -> list[str]:
    """An -oN file without its ``#`` lines (program, times, command line); Nmap's latency
    (vscan measures none: ``Host is up.``) masked."""
    return [
        "Host is up." if _LATENCY.match(line) else line
        for line in path.read_text(encoding="latin-1").split("\n")
        if not line.startswith("#")
    ]


def test_premise_nmap_prints_script_output_only_with_script_scanning(files: Files) -> None:
    plain, scripted = normal_lines(files.path("nmap.nmap")), normal_lines(files.path("nmap-s.nmap"))
    assert not any(line.startswith("|") for line in plain), plain
    row = plain.index(f"{files.port}/tcp open  http    Xitami httpd")
    assert scripted[row + 1 : row + 4] == SCRIPT_ROWS, scripted
    record = parse_xml(files.path("nmap-s.xml"))[files.port]
    assert record["product"] == "Xitami httpd" and record["servicefp"] is None
    assert set(record["scripts"]) == {"http-server-header"}
    assert record["scripts"]["http-server-header"]["elements"] == [
        ("elem", None, ""),
        ("elem", None, "Odd\\x01\\xE9--x<&>\"'\t\rB/2"),
    ]
    assert parse_xml(files.path("nmap.xml"))[files.port]["scripts"] == {}


@pytest.mark.parametrize("suffix", ["", "-s"], ids=["sV", "script-output"])
def test_normal_output_is_byte_for_byte_nmaps(files: Files, suffix: str) -> None:
    ours, theirs = files.path(f"vscan{suffix}.nmap"), files.path(f"nmap{suffix}.nmap")
    assert normal_lines(ours) == normal_lines(theirs)


@pytest.mark.parametrize("suffix", ["", "-s"], ids=["sV", "script-output"])
def test_ports_and_script_output_agree(files: Files, suffix: str) -> None:
    theirs = parse_xml(files.path(f"nmap{suffix}.xml"))
    ours = parse_xml(files.path(f"vscan{suffix}.xml"))
    assert not differences(theirs.get(files.port), ours.get(files.port))


@pytest.mark.parametrize("suffix", ["", "-s"], ids=["sV", "script-output"])
def test_ndiff_has_no_differing_line_and_our_xml_is_valid(files: Files, suffix: str) -> None:
    exe = shutil.which("ndiff")
    if exe is None:
        if IN_CI:
            pytest.fail("ndiff is not installed (required in CI)")
        pytest.skip("ndiff is not installed")
    ours, theirs = files.path(f"vscan{suffix}.xml"), files.path(f"nmap{suffix}.xml")
    _code, output, changed = ndiff(exe, theirs, ours)
    assert not changed, output
    proc = subprocess.run(
        [xmllint_or_skip(), "--noout", "--dtdvalid", str(DTD), str(ours)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_xml_script_elements_are_byte_for_byte_nmaps(files: Files) -> None:
    """The raw ``<script …>…</script>`` bytes (newlines, escapes), not just their meaning."""

    def scripts(path: Path) -> list[str]:
        return re.findall(r"<script .*?(?:/>|</script>)", path.read_text("latin-1"), re.DOTALL)

    theirs = scripts(files.path("nmap-s.xml"))
    assert len(theirs) == 1
    assert scripts(files.path("vscan-s.xml")) == theirs
    assert scripts(files.path("vscan.xml")) == [] == scripts(files.path("nmap.xml"))
