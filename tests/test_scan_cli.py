"""``vscan scan`` as a user runs it: real sockets on 127.0.0.1, the installed console script."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from tests.loopback import BannerServer, free_port
from tests.test_output import DTD, xmllint_or_skip

VSCAN = str(Path(sys.executable).with_name("vscan"))


def run(*args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    env = dict(os.environ)
    return subprocess.run(
        [VSCAN, "scan", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=env,
        check=False,
    )


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["127.0.0.1", "-p", "99999"], "out of range"),
        (["10.0.0.1", "-p", "22"], "outside the allowed networks"),
        (["192.168.1.1", "-p", "22"], "outside the allowed networks"),
        (["127.0.0.2", "--deny", "127.0.0.2/32", "-p", "22"], "denied"),
        (["0x7f.0.0.1", "-p", "22"], "not a valid IPv4 address"),
        (["2130706433", "-p", "22"], "not a valid IPv4 address"),
        (["127.0.0.1", "-p", "22", "--probes", "/nonexistent/probes"], "cannot read probe file"),
        (["127.0.0.1", "-p", "22", "-oX", "/nonexistent/dir/out.xml"], "not a writable directory"),
        ([], "no targets given"),
        (["127.0.0.1", "-p", "S:53"], "SCTP"),
        (["-iL", "/nonexistent/targets.txt", "-p", "22"], "nonexistent"),
    ],
)
def test_bad_input_is_one_line_exit_2(args: list[str], message: str) -> None:
    proc = run(*args)
    assert proc.returncode == 2, proc.stderr
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("vscan: error:"), proc.stderr
    assert message.lower() in lines[0].lower()
    assert "Traceback" not in proc.stderr
    assert proc.stdout == ""


def test_scan_banner_and_closed_ports_with_all_outputs(tmp_path: Path) -> None:
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    closed = free_port()  # nothing listens on it
    with BannerServer(banner) as server:
        xml_out = tmp_path / "out.xml"
        normal_out = tmp_path / "out.nmap"
        json_out = tmp_path / "out.jsonl"
        proc = run(
            "127.0.0.1",
            "-p",
            f"{server.port},{closed}",
            "-oX",
            str(xml_out),
            "-oN",
            str(normal_out),
            "-oJ",
            str(json_out),
        )
    assert proc.returncode == 0, proc.stderr
    # the table on stdout
    row = next(line for line in proc.stdout.splitlines() if line.startswith(f"{server.port}/tcp"))
    assert row.split()[1:4] == ["open", "ssh", "OpenSSH"]
    assert "9.2p1 Debian 2+deb12u3 (protocol 2.0)" in row
    assert "Service Info: OS: Linux; CPE: cpe:/o:linux:linux_kernel" in proc.stdout
    assert f"{closed}/tcp" in proc.stdout and "closed" in proc.stdout
    # JSON lines: one result per port, the DESIGN result format
    results = {r["port"]: r for r in map(json.loads, json_out.read_text().splitlines())}
    assert set(results) == {server.port, closed}
    ssh = results[server.port]
    assert (ssh["state"], ssh["reason"], ssh["protocol"]) == ("open", "syn-ack", "tcp")
    assert ssh["service"]["product"] == "OpenSSH"
    assert ssh["service"]["cpe"] == ["cpe:/a:openbsd:openssh:9.2p1", "cpe:/o:linux:linux_kernel"]
    assert (results[closed]["state"], results[closed]["reason"]) == ("closed", "conn-refused")
    # Nmap XML
    root = ET.parse(xml_out).getroot()
    assert root.tag == "nmaprun"
    port = root.find(f".//port[@portid='{server.port}']")
    assert port is not None
    service = port.find("service")
    assert service is not None
    assert service.get("name") == "ssh" and service.get("product") == "OpenSSH"
    assert [c.text for c in service.findall("cpe")] == [
        "cpe:/a:openbsd:openssh:9.2p1",
        "cpe:/o:linux:linux_kernel",
    ]
    # -oN has the same table
    assert row in normal_out.read_text()


@pytest.mark.parametrize("option", ["-oX", "-oN", "-oJ"])
def test_an_output_to_stdout_is_all_stdout_carries(option: str) -> None:
    """As with nmap: ``-oX -`` writes the XML alone (a pipe to xmllint works), no table;
    the recorded command line is the one typed, so it can be run again."""
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    with BannerServer(banner) as server:
        proc = run("127.0.0.1", "-p", str(server.port), option, "-", "--no-progress")
    assert proc.returncode == 0, proc.stderr
    if option == "-oX":
        root = ET.fromstring(proc.stdout)  # the whole of stdout is one XML document
        assert root.get("args") == f"vscan scan 127.0.0.1 -p {server.port} -oX - --no-progress"
        # the host's times lie inside the run's (endtime was scanned_at + duration: late)
        finished = root.find("runstats/finished")
        host = root.find("host")
        assert finished is not None and host is not None
        run_start, run_end = int(root.get("start") or 0), int(finished.get("time") or 0)
        assert run_start <= int(host.get("starttime") or 0) <= int(host.get("endtime") or 0)
        assert int(host.get("endtime") or 0) <= run_end
        assert root.find(f".//port[@portid='{server.port}']") is not None
    elif option == "-oJ":
        [result] = map(json.loads, proc.stdout.splitlines())
        assert result["port"] == server.port
    else:
        assert proc.stdout.startswith("# vscan scan initiated"), proc.stdout[:200]
        assert proc.stdout.count(f"{server.port}/tcp") == 1  # the -oN text, not also the table


def test_json_streams_results() -> None:
    with BannerServer(b"220 zzhost FTP server ready\r\n") as server:
        proc = run("127.0.0.1", "-p", str(server.port), "--json")
    assert proc.returncode == 0, proc.stderr
    lines = proc.stdout.splitlines()
    assert len(lines) == 1
    result = json.loads(lines[0])
    assert result["service"]["product"] == "ProFTPD"
    assert result["service"]["hostname"] == "zzhost"
    assert result["port"] == server.port


#: ``vscan scan`` (``vscand.cli.main``) in a process whose ``getaddrinfo`` answers for
#: ``localhost`` as Debian 13's does (its /etc/hosts names both 127.0.0.1 and ::1, and the
#: IPv6 address comes first); every other name goes to the real resolver
V6_FIRST_LOCALHOST = """
import socket, sys
real = socket.getaddrinfo
def getaddrinfo(host, port, family=0, type=0, proto=0, flags=0):
    if host != "localhost":
        return real(host, port, family, type, proto, flags)
    return [
        (socket.AF_INET6, socket.SOCK_STREAM, 6, "", ("::1", 0, 0, 0)),
        (socket.AF_INET, socket.SOCK_STREAM, 6, "", ("127.0.0.1", 0)),
    ]
socket.getaddrinfo = getaddrinfo
from vscand.cli import main
sys.exit(main(sys.argv[1:]))
"""


def test_name_resolving_ipv6_first_is_scanned_over_ipv4(tmp_path: Path) -> None:
    # Nmap (without -6) scans localhost's first IPv4 address and lists ::1 as not scanned.
    # The server listens on 127.0.0.1 only: a dial to ::1 would find the port closed.
    json_out = tmp_path / "out.jsonl"
    normal_out = tmp_path / "out.nmap"
    env = dict(os.environ)
    repo = str(Path(__file__).resolve().parent.parent)  # this checkout's vscand
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [repo, env.get("PYTHONPATH")]))
    with BannerServer(b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n") as server:
        proc = subprocess.run(
            [
                *(sys.executable, "-c", V6_FIRST_LOCALHOST, "scan", "localhost"),
                *("-p", str(server.port), "--no-progress"),
                *("-oJ", str(json_out), "-oN", str(normal_out)),
            ],
            capture_output=True,
            text=True,
            timeout=120,
            env=env,
            check=False,
        )
    assert proc.returncode == 0, proc.stderr
    header = [
        "Nmap scan report for localhost (127.0.0.1)",
        "Host is up.",
        "Other addresses for localhost (not scanned): ::1",
    ]
    assert proc.stdout.splitlines()[:3] == header
    assert normal_out.read_text().splitlines()[1:4] == header
    (result,) = map(json.loads, json_out.read_text().splitlines())
    assert (result["host"], result["hostname"], result["other_addresses"]) == (
        "127.0.0.1",
        "localhost",
        ["::1"],
    )
    assert (result["state"], result["service"]["product"]) == ("open", "OpenSSH")


def test_ctrl_c_writes_the_finished_ports_and_exits_130(tmp_path: Path) -> None:
    """Ctrl-C ends the ports in flight, writes every finished port to each requested output
    (valid XML marked interrupted, JSON lines) and exits 130, saying so on stderr."""
    import signal
    import socket

    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    silent = socket.socket()  # accepts (the kernel's backlog) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    xml_out, json_out = tmp_path / "out.xml", tmp_path / "out.jsonl"
    with silent, BannerServer(banner) as server:
        proc = subprocess.Popen(
            [VSCAN, "scan", "127.0.0.1", "-p", f"{server.port},{silent.getsockname()[1]}",
             "--json", "-oX", str(xml_out), "-oJ", str(json_out)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        assert proc.stdout is not None and proc.stderr is not None
        first = json.loads(proc.stdout.readline())  # the banner port has ended
        assert first["port"] == server.port
        proc.send_signal(signal.SIGINT)
        code = proc.wait(60)
        err = proc.stderr.read()
    assert code == 130, err
    assert "interrupted by the user (SIGINT): 1 of 2 ports finished" in err
    [result] = map(json.loads, json_out.read_text().splitlines())
    assert (result["port"], result["service"]["product"]) == (server.port, "OpenSSH")
    root = ET.parse(xml_out).getroot()
    assert [p.get("portid") for p in root.iter("port")] == [str(server.port)]
    finished = root.find("runstats/finished")
    assert finished is not None
    assert finished.get("exit") == "error"
    assert "interrupted" in (finished.get("errormsg") or "")
    checked = subprocess.run(
        [xmllint_or_skip(), "--noout", "--dtdvalid", str(DTD), str(xml_out)],
        capture_output=True, text=True, check=False,
    )  # fmt: skip
    assert checked.returncode == 0, checked.stderr


def test_nmap_habits_that_mean_what_vscan_does_are_taken() -> None:
    """``-sV -sT -Pn -n -T4 -v -d``: the same scan, the same answer."""
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    with BannerServer(banner) as server:
        plain = run("127.0.0.1", "-p", str(server.port), "--json")
        habits = run(
            "-sV", "-sT", "-Pn", "-n", "-T4", "-vv", "-d", "127.0.0.1", "-p", str(server.port),
            "--json",
        )  # fmt: skip
    assert plain.returncode == habits.returncode == 0, habits.stderr
    [a], [b] = (list(map(json.loads, p.stdout.splitlines())) for p in (plain, habits))
    assert a["service"] == b["service"]


def test_the_progress_display_keeps_moving_on_a_terminal(tmp_path: Path) -> None:
    """In a real terminal (tmux): the display changes every second while a slow port runs
    (its elapsed time), and names it as the slowest port in flight."""
    tmux = shutil.which("tmux")
    if tmux is None:
        pytest.skip("tmux is not installed")
    banner = b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n"
    silent = socket.socket()  # accepts (the kernel's backlog) and never says a word
    silent.bind(("127.0.0.1", 0))
    silent.listen(8)
    slow = silent.getsockname()[1]
    server_name = f"vscan-progress-{os.getpid()}"
    base = [tmux, "-L", server_name]
    with silent, BannerServer(banner) as server:
        command = f"{VSCAN} scan 127.0.0.1 -p {server.port},{slow}"
        env_args = [f"VSCAND_CACHE_DIR={os.environ.get('VSCAND_CACHE_DIR', '')}"]
        subprocess.run(
            [*base, "new-session", "-d", "-x", "160", "-y", "12", "env", *env_args,
             "sh", "-c", command + "; sleep 30"],
            check=True, timeout=30,
        )  # fmt: skip
        try:
            screens = []
            deadline = time.monotonic() + 60
            while len(screens) < 4 and time.monotonic() < deadline:
                time.sleep(1.0)
                screen = subprocess.run(
                    [*base, "capture-pane", "-p"], capture_output=True, text=True, check=True
                ).stdout
                if f"slowest 127.0.0.1:{slow}" in screen:
                    screens.append(screen)
            assert len(screens) == 4, screens
            # one port done, one in flight, and the display changed at every look
            assert all("1/2" in s and "1 in flight" in s for s in screens), screens
            assert len(set(screens)) == 4, screens
            # the worst case left by the probe plan (a silent port: every probe's whole
            # wait), counting down
            left = [re.search(r"worst case (?:(\d+)m)?(\d+)s left", s) for s in screens]
            assert all(left), screens
            seconds = [int(m.group(1) or 0) * 60 + int(m.group(2)) for m in left if m]
            assert seconds == sorted(seconds, reverse=True) and seconds[0] > seconds[-1], seconds
        finally:
            subprocess.run([*base, "kill-server"], check=False, timeout=30)
