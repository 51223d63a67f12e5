"""``vscan scan`` against ``nmap -sV`` on the same loopback services, in the same run.

    .venv/bin/python benchmarks/scan_vs_nmap.py [--silent N] [--no-redis] [--runs N]

Starts ~55 services on 127.0.0.1 (``benchmarks/_targets.py`` in a subprocess,
plus the machine's own ``redis-server`` on a free port when installed): banner
services that hard-match on the NULL probe, HTTP servers that answer GET with a
Server header, banners that only soft-match, services that answer one probe
only, unknown protocols that answer anything and close, tcpwrapped ports, a few
silent ports (``--silent``, default 3) and closed ports. Then runs, one after
the other so they do not compete for the CPU::

    nmap -sV -T4 -Pn -n -p PORTS 127.0.0.1 -oX nmap.xml --datadir TMP   # empty script.db
    vscan scan 127.0.0.1 -p PORTS -oX vscan.xml --no-progress

measures each process's wall-clock time and CPU seconds (user + system, from
``os.wait4``), and compares the answers port by port: state, service name,
product, version, extrainfo, hostname, ostype, devicetype, CPE, tunnel, method
and conf. NSE is off for nmap (its ``--datadir`` holds an empty
``scripts/script.db``, so no version script rewrites the engine's answer).
Prints a markdown table; JSON goes to ``benchmarks/results/scan_vs_nmap.json``.

All traffic goes to 127.0.0.1; every child process is bounded in time.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from _common import REPO, cache_dir, machine, md_table, write_json

LOOPBACK = "127.0.0.1"
FIELDS = (
    "name",
    "product",
    "version",
    "extrainfo",
    "hostname",
    "ostype",
    "devicetype",
    "tunnel",
    "method",
    "conf",
)
TARGET_RATIO = 0.5
#: a bound on every child process (nmap, vscan, the target server)
CHILD_TIMEOUT = float(os.environ.get("VSCAND_BENCH_CHILD_TIMEOUT", "1200"))  # s per tool


# --------------------------------------------------------------------------
# the services


def _mysql_handshake(version: bytes, thread: int) -> bytes:
    salt = b"\x21\x3a\x5c\x6b\x1f\x7e\x40\x33"
    payload = (
        b"\x0a"
        + version
        + b"\0"
        + thread.to_bytes(4, "little")
        + salt
        + b"\0\xff\xf7\xff\x02\x00\xff\xdf\x15"
        + b"\0" * 10
        + b"\x5d\x2e\x11\x6c\x48\x0a\x3f\x57\x64\x29\x3b\x71\0"
        + b"caching_sha2_password\0"
    )
    return len(payload).to_bytes(3, "little") + b"\0" + payload


DATE = b"Date: Tue, 02 Jan 2024 10:00:00 GMT\r\n"
HTML = b"<!DOCTYPE html>\n<html><head><title>Welcome</title></head><body>ok</body></html>\n"


def _http(server: bytes, status: bytes = b"200 OK", extra: bytes = b"") -> dict[str, bytes]:
    body = HTML if status.startswith(b"200") else b"<html><body>error</body></html>\n"
    head = (
        b"HTTP/1.1 " + status + b"\r\n" + DATE + b"Server: " + server + b"\r\n" + extra
        + b"Content-Type: text/html\r\nContent-Length: " + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
    )  # fmt: skip
    bad_body = b"<html><body>bad request</body></html>\n"
    bad = (
        b"HTTP/1.1 400 Bad Request\r\n" + DATE + b"Server: " + server + b"\r\n"
        b"Content-Type: text/html\r\nContent-Length: " + str(len(bad_body)).encode()
        + b"\r\nConnection: close\r\n\r\n" + bad_body
    )  # fmt: skip
    return {"response": head + body, "bad": bad}


def service_mix(silent: int) -> list[dict[str, Any]]:
    """(kind, label, payloads) of every listening service, in port order."""
    mix: list[dict[str, Any]] = []

    def add(kind: str, label: str, **payload: bytes) -> None:
        mix.append({"kind": kind, "label": label, **payload})

    # banners that hard-match on the NULL probe
    add("banner", "ssh-openssh-ubuntu", banner=b"SSH-2.0-OpenSSH_8.9p1 Ubuntu-3ubuntu0.6\r\n")
    add("banner", "ssh-openssh-debian", banner=b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n")
    add("banner", "ssh-dropbear", banner=b"SSH-2.0-dropbear_2022.83\r\n")
    add("banner", "ftp-vsftpd", banner=b"220 (vsFTPd 3.0.5)\r\n")
    add(
        "banner",
        "ftp-proftpd",
        banner=b"220 ProFTPD 1.3.8 Server (Debian) [::ffff:127.0.0.1]\r\n",
    )
    add(
        "banner",
        "ftp-pureftpd",
        banner=b"220---------- Welcome to Pure-FTPd [privsep] ----------\r\n"
        b"220-You are user number 1 of 50 allowed.\r\n",
    )
    add("banner", "smtp-postfix", banner=b"220 mail.example.org ESMTP Postfix (Ubuntu)\r\n")
    add(
        "banner",
        "smtp-exim",
        banner=b"220 mx.example.net ESMTP Exim 4.96 Tue, 02 Jan 2024 10:00:00 +0000\r\n",
    )
    add("banner", "pop3-dovecot", banner=b"+OK Dovecot (Ubuntu) ready.\r\n")
    add(
        "banner",
        "imap-dovecot",
        banner=b"* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE IDLE LITERAL+ "
        b"STARTTLS AUTH=PLAIN] Dovecot (Ubuntu) ready.\r\n",
    )
    add("banner", "mysql-8", banner=_mysql_handshake(b"8.0.36-0ubuntu0.22.04.1", 11))
    add("banner", "mariadb-10", banner=_mysql_handshake(b"5.5.5-10.11.6-MariaDB-0+deb12u1", 42))
    add("banner", "vnc-rfb", banner=b"RFB 003.008\n")
    add("banner", "pop3-mailmax", banner=b"+OK POP3 server ready <1234.5678@example>\r\n")
    # HTTP servers: silent until a request, then a Server header
    add("http", "http-nginx", **_http(b"nginx/1.24.0"))
    add("http", "http-nginx-ubuntu", **_http(b"nginx/1.18.0 (Ubuntu)"))
    add("http", "http-apache", **_http(b"Apache/2.4.57 (Debian)"))
    add("http", "http-apache-ubuntu", **_http(b"Apache/2.4.52 (Ubuntu)", b"403 Forbidden"))
    add("http", "http-iis", **_http(b"Microsoft-IIS/10.0", extra=b"X-Powered-By: ASP.NET\r\n"))
    add("http", "http-lighttpd", **_http(b"lighttpd/1.4.69", b"404 Not Found"))
    add("http", "http-caddy", **_http(b"Caddy"))
    add("http", "http-gunicorn", **_http(b"gunicorn"))
    add("http", "http-jetty", **_http(b"Jetty(9.4.51.v20230217)"))
    add("http", "http-werkzeug", **_http(b"Werkzeug/2.3.7 Python/3.11.6"))
    # banners that only soft-match: the port goes on through that service's probes
    add(
        "softbanner",
        "soft-smtp",
        banner=b"220 relay.example.org ESMTP ready\r\n",
        reply=b"502 5.5.2 Error: command not recognized\r\n",
    )
    add(
        "softbanner",
        "soft-imap",
        banner=b"* OK IMAP4rev1 Service Ready\r\n",
        reply=b"* BAD invalid command\r\n",
    )
    add(
        "softbanner",
        "soft-ssh",
        banner=b"SSH-2.0-Go\r\n",
        reply=b"Invalid SSH identification string.\r\n",
    )
    add(
        "softbanner",
        "soft-nntp",
        banner=b"200 example NNTP Service Ready\r\n",
        reply=b"500 What?\r\n",
    )
    add(
        "softbanner",
        "soft-smtp-2",
        banner=b"220 mail.example.com ESMTP MailServer 1.0\r\n",
        reply=b"500 unrecognized command\r\n",
    )
    # services that answer one probe only (and close on anything else)
    add(
        "probeonly",
        "rtsp-gstreamer",
        trigger=b"OPTIONS / RTSP/1.0",
        reply=b"RTSP/1.0 200 OK\r\nCSeq: 0\r\nServer: GStreamer RTSP server\r\n"
        b"Public: OPTIONS, DESCRIBE, ANNOUNCE, GET_PARAMETER, PAUSE, PLAY, RECORD, "
        b"SETUP, SET_PARAMETER, TEARDOWN\r\n\r\n",
    )
    add(
        "probeonly",
        "redis-like-get",
        trigger=b"GET / HTTP/1.0",
        reply=b"-ERR wrong number of arguments for 'get' command\r\n",
    )
    add(
        "probeonly",
        "ssh-on-get",
        trigger=b"GET / HTTP/1.0",
        reply=b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u2\r\nInvalid SSH identification string.\r\n",
    )
    add(
        "probeonly",
        "http-options-only",
        trigger=b"OPTIONS / HTTP/1.0",
        reply=b"HTTP/1.1 200 OK\r\n" + DATE + b"Server: Apache/2.4.57 (Debian)\r\n"
        b"Allow: GET,POST,OPTIONS,HEAD\r\nContent-Length: 0\r\nConnection: close\r\n"
        b"Content-Type: text/html\r\n\r\n",
    )
    # unknown protocols: answer anything, then close
    for i, reply in enumerate(
        [
            b"\x00\x00\x00\x05\x01\x02\x03\x04\x05",
            b"ERR unknown request\n",
            b'{"error":"bad frame","code":17}\n',
            b"\xde\xad\xbe\xef" * 8,
            b"HELLO there; protocol 7 expected\r\n",
        ]
    ):
        add("unknown", f"unknown-{i}", reply=reply)
    for i, banner in enumerate(
        [
            b"WELCOME TO FOOBAR 3.1 - GO AWAY\r\n",
            b"\x17\x2a\x00\x10nothing to see\x00",
            b"ready.\n",
            b"# greeting 42 frobnicator\n",
        ]
    ):
        add("unknownbanner", f"unknown-banner-{i}", banner=banner)
    # tcpwrapped: accept, close
    for i in range(4):
        add("tcpwrapped", f"tcpwrapped-{i}")
    for i in range(silent):
        add("silent", f"silent-{i}")
    return mix


#: slow greeters' delays (s): inside the NULL probe's 6 s wait (1, 3, 5.9: the NULL probe
#: matches the banner), just after it (6.1, 7: the banner lands on the probe Nmap sends next
#: on the same connection, GenericLines, whose 5 s wait it falls in) and after both (12: no
#: probe of Nmap's waits that long, so Nmap never sees it)
SLOW_DELAYS = (1.0, 3.0, 5.9, 6.1, 7.0, 12.0)
#: a realistic greeting per protocol (each hard-matches on the NULL probe when on time)
SLOW_BANNERS = {
    "ssh": b"SSH-2.0-OpenSSH_9.2p1 Debian-2+deb12u3\r\n",
    "smtp": b"220 mail.example.com ESMTP Postfix (Debian/GNU)\r\n",
    "ftp": b"220 ProFTPD Server (Debian) [::ffff:127.0.0.1]\r\n",
}


def slow_label(protocol: str, delay: float) -> str:
    return f"slow-{protocol}-{delay:g}s"


def slow_mix(delays: Sequence[float] = SLOW_DELAYS) -> list[dict[str, Any]]:
    """Slow greeters (``_targets.py`` kind ``slowbanner``): every protocol of
    ``SLOW_BANNERS`` at every delay, labelled ``slow-PROTOCOL-DELAYs``."""
    return [
        {"kind": "slowbanner", "label": slow_label(protocol, delay), "banner": banner,
         "delay": delay}
        for protocol, banner in SLOW_BANNERS.items()
        for delay in delays
    ]  # fmt: skip


def _bindable(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        try:
            probe.bind((LOOPBACK, port))
        except OSError:
            return False
    return True


def pick_ports(count: int, start: int, avoid: Collection[int] = ()) -> list[int]:
    """``count`` bindable 127.0.0.1 ports from ``start`` up (below the ephemeral range),
    none of ``avoid``."""
    ports: list[int] = []
    port = start
    while len(ports) < count and port < 32700:
        if port not in avoid and _bindable(port):
            ports.append(port)
        port += 1
    if len(ports) < count:
        raise SystemExit(f"could not find {count} free ports from {start}")
    return ports


class Targets:
    """The target server subprocess (and redis-server, and ``openssl s_server``s), torn
    down on exit.

    ``mix``: the services to serve instead of ``service_mix(silent)`` (``slow_mix()``...);
    ``s_servers``: that many ``openssl s_server -www`` (``tests/e2e/tls_servers.py``, one
    connection at a time; ports ``s_server_ports``, labels ``s_server-www-N``); ``avoid``:
    port numbers not to use (e.g. those ``nmap-services`` names)."""

    def __init__(
        self,
        silent: int,
        closed: int,
        redis: bool,
        workdir: Path,
        copies: int = 1,
        port_start: int = 21000,
        *,
        mix: Sequence[dict[str, Any]] | None = None,
        s_servers: int = 0,
        avoid: Collection[int] = (),
    ) -> None:
        base = service_mix(silent) if mix is None else [dict(s) for s in mix]
        # extra copies of the mix repeat every service but the silent ones
        self.mix = [dict(s) for s in base] + [
            dict(s, label=f"{s['label']}#{n}")
            for n in range(2, copies + 1)
            for s in base
            if s["kind"] != "silent"
        ]
        ports = pick_ports(len(self.mix) + closed + s_servers + 1, port_start, avoid)
        for spec, port in zip(self.mix, ports, strict=False):
            spec["port"] = port
        served = len(self.mix)
        self.closed = ports[served : served + closed]
        self.s_server_ports = ports[served + closed : served + closed + s_servers]
        self.labels: dict[int, str] = {spec["port"]: spec["label"] for spec in self.mix}
        for port in self.closed:
            self.labels[port] = "closed"
        for n, port in enumerate(self.s_server_ports, 1):
            self.labels[port] = f"s_server-www-{n}"
        self.redis_port: int | None = None
        self.redis: subprocess.Popen[bytes] | None = None
        self.s_servers: list[Any] = []  # tests/e2e/daemons.Daemon
        redis_server = shutil.which("redis-server")
        if redis and redis_server:
            self.redis_port = ports[-1]
            self.labels[self.redis_port] = "redis-server"
            self.redis = subprocess.Popen(
                [
                    redis_server, "--port", str(self.redis_port), "--bind", LOOPBACK,
                    "--save", "", "--appendonly", "no", "--daemonize", "no",
                    "--dir", str(workdir), "--loglevel", "warning",
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )  # fmt: skip
        spec_path = workdir / "targets.json"
        wire = []
        for spec in self.mix:
            item = {"port": spec["port"], "kind": spec["kind"]}
            for key, value in spec.items():
                if isinstance(value, bytes):
                    item[key] = base64.b64encode(value).decode()
                elif key == "delay":
                    item[key] = float(value)
            wire.append(item)
        spec_path.write_text(json.dumps(wire), encoding="utf-8")
        self.server = subprocess.Popen(
            [sys.executable, str(Path(__file__).with_name("_targets.py")), str(spec_path),
             str(CHILD_TIMEOUT * 3)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )  # fmt: skip
        assert self.server.stdout is not None
        line = self.server.stdout.readline()
        if line.strip() != b"READY":
            self.close()
            raise SystemExit("target server did not start")
        try:
            if self.s_server_ports:
                # the e2e suite's launcher (one instance per port, each its own log directory;
                # one certificate, so instances differ only by port, as twins must)
                sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
                from tests.e2e.tls_servers import make_certificate, start_s_server

                cert = make_certificate(workdir / "s_server")
                for port in self.s_server_ports:
                    where = workdir / f"s_server-{port}"
                    where.mkdir(parents=True, exist_ok=True)
                    self.s_servers.append(
                        start_s_server(
                            where, cert, www=True, port=port, max_seconds=CHILD_TIMEOUT * 3
                        )
                    )
        except BaseException:
            self.close()
            raise
        if self.redis_port is not None:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                try:
                    socket.create_connection((LOOPBACK, self.redis_port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)

    @property
    def ports(self) -> list[int]:
        return sorted(self.labels)

    def spec(self, port: int) -> dict[str, Any] | None:
        """The ``_targets.py`` spec served on ``port`` (None: closed, redis, s_server)."""
        for spec in self.mix:
            if spec["port"] == port:
                return spec
        return None

    def close(self) -> None:
        for s_server in self.s_servers:
            s_server.stop()
        for proc in (self.server, self.redis):
            if proc is None or proc.poll() is not None:
                continue
            if proc is self.server and proc.stdin is not None:
                proc.stdin.close()
            else:
                proc.terminate()
            try:
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


# --------------------------------------------------------------------------
# running and comparing


def timed(cmd: list[str], env: dict[str, str] | None = None) -> dict[str, Any]:
    """Run *cmd*; wall seconds and the CPU seconds of that process (and its children)."""
    started = time.monotonic()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env)
    deadline = started + CHILD_TIMEOUT
    while True:
        pid, status, usage = os.wait4(proc.pid, os.WNOHANG)
        if pid:
            break
        if time.monotonic() > deadline:
            proc.kill()
            pid, status, usage = os.wait4(proc.pid, 0)
            break
        time.sleep(0.02)
    wall = time.monotonic() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    out = proc.stdout.read() if proc.stdout else b""
    err = proc.stderr.read() if proc.stderr else b""
    return {
        "cmd": cmd,
        "wall_s": wall,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "user_s": usage.ru_utime,
        "sys_s": usage.ru_stime,
        "maxrss_mib": usage.ru_maxrss / 1024,
        "exit": proc.returncode,
        "stderr_tail": err.decode(errors="replace")[-2000:],
        "stdout_bytes": len(out),
    }


def parse_xml(path: Path) -> dict[int, dict[str, Any]]:
    root = ET.parse(path).getroot()
    ports: dict[int, dict[str, Any]] = {}
    extra_state = None
    for extra in root.iter("extraports"):
        extra_state = extra.get("state")
    for port in root.iter("port"):
        num = int(port.get("portid", "0"))
        state = port.find("state")
        svc = port.find("service")
        rec: dict[str, Any] = {"state": state.get("state") if state is not None else None}
        for key in FIELDS:
            value = svc.get(key) if svc is not None else None
            rec[key] = int(value) if key == "conf" and value is not None else value
        rec["cpe"] = [c.text or "" for c in svc.findall("cpe")] if svc is not None else []
        rec["servicefp"] = svc is not None and svc.get("servicefp") is not None
        ports[num] = rec
    if extra_state is not None:
        ports[-1] = {"extraports": extra_state}
    return ports


def compare(
    ports: list[int], nmap: dict[int, dict[str, Any]], vscan: dict[int, dict[str, Any]]
) -> list[dict[str, Any]]:
    def rec(side: dict[int, dict[str, Any]], port: int) -> dict[str, Any]:
        if port in side:
            return side[port]
        # not listed: nmap folds many same-state ports into <extraports>
        state = side.get(-1, {}).get("extraports")
        return {"state": state, **{k: None for k in FIELDS}, "cpe": []}

    diffs = []
    for port in ports:
        a, b = rec(nmap, port), rec(vscan, port)
        for key in ("state", *FIELDS, "cpe"):
            if a.get(key) != b.get(key):
                diffs.append({"port": port, "field": key, "nmap": a.get(key), "vscan": b.get(key)})
    return diffs


def run_once(args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    targets = Targets(args.silent, args.closed, not args.no_redis, workdir, args.copies)
    try:
        ports = targets.ports
        portspec = ",".join(str(p) for p in ports)
        datadir = workdir / "datadir"
        (datadir / "scripts").mkdir(parents=True, exist_ok=True)
        (datadir / "scripts" / "script.db").write_text("")
        nmap_xml, vscan_xml = workdir / "nmap.xml", workdir / "vscan.xml"
        nmap_cmd = [
            args.nmap, "-sV", "-T4", "-Pn", "-n", "-p", portspec, LOOPBACK,
            "-oX", str(nmap_xml), "--datadir", str(datadir),
        ]  # fmt: skip
        vscan_cmd = [
            str(REPO / ".venv" / "bin" / "vscan"), "scan", LOOPBACK, "-p", portspec,
            "-oX", str(vscan_xml), "--no-progress",
        ]  # fmt: skip
        env = dict(os.environ, VSCAND_CACHE_DIR=str(cache_dir()))
        order = [("vscan", vscan_cmd), ("nmap", nmap_cmd)]
        if args.nmap_first:
            order.reverse()
        runs: dict[str, Any] = {}
        for name, cmd in order:
            print(f"  running {name} ...", file=sys.stderr, flush=True)
            runs[name] = timed(cmd, env)
            print(
                f"  {name}: {runs[name]['wall_s']:.1f} s wall, {runs[name]['cpu_s']:.2f} s CPU,"
                f" exit {runs[name]['exit']}",
                file=sys.stderr,
                flush=True,
            )
        nmap_ports, vscan_ports = parse_xml(nmap_xml), parse_xml(vscan_xml)
        diffs = compare(ports, nmap_ports, vscan_ports)
        bad_ports = sorted({d["port"] for d in diffs})
        return {
            "ports": len(ports),
            "kinds": {
                kind: sum(1 for s in targets.mix if s["kind"] == kind)
                for kind in dict.fromkeys(s["kind"] for s in targets.mix)
            }
            | {"closed": len(targets.closed), "redis-server": int(targets.redis_port is not None)},
            "nmap": runs["nmap"],
            "vscan": runs["vscan"],
            "wall_ratio": runs["vscan"]["wall_s"] / runs["nmap"]["wall_s"],
            "cpu_ratio": runs["vscan"]["cpu_s"] / max(runs["nmap"]["cpu_s"], 1e-9),
            "agree": len(ports) - len(bad_ports),
            "disagreements": [dict(d, label=targets.labels.get(d["port"])) for d in diffs],
            "answers": {
                str(p): {
                    "label": targets.labels[p],
                    "nmap": nmap_ports.get(p),
                    "vscan": vscan_ports.get(p),
                }
                for p in ports
            },
        }
    finally:
        targets.close()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--silent", type=int, default=3, help="silent ports (~156 s each tool)")
    parser.add_argument("--closed", type=int, default=5)
    parser.add_argument("--no-redis", action="store_true")
    parser.add_argument("--runs", type=int, default=1)
    parser.add_argument(
        "--copies", type=int, default=1, help="repeat the mix (but the silent ports) N times"
    )
    parser.add_argument("--nmap-first", action="store_true", help="run nmap before vscan")
    parser.add_argument("--nmap", default=shutil.which("nmap") or "nmap")
    parser.add_argument("--output", default="scan_vs_nmap.json")
    args = parser.parse_args()
    nmap_version = subprocess.run(
        [args.nmap, "--version"], capture_output=True, text=True, check=False
    ).stdout
    runs = []
    for i in range(args.runs):
        print(f"run {i + 1}/{args.runs}", file=sys.stderr, flush=True)
        with tempfile.TemporaryDirectory(prefix="vscand-bench-") as tmp:
            runs.append(run_once(args, Path(tmp)))
    rows = []
    for i, run in enumerate(runs, 1):
        n, v = run["nmap"], run["vscan"]
        rows.append(
            [
                i,
                run["ports"],
                f"{n['wall_s']:.1f}",
                f"{v['wall_s']:.1f}",
                f"**{run['wall_ratio']:.2f}x**",
                f"{n['cpu_s']:.2f}",
                f"{v['cpu_s']:.2f}",
                f"{run['cpu_ratio']:.2f}x",
                f"{n['maxrss_mib']:.0f} / {v['maxrss_mib']:.0f}",
                f"{run['agree']}/{run['ports']}",
            ]
        )
    print(
        md_table(
            [
                "run",
                "ports",
                "wall nmap (s)",
                "wall vscan (s)",
                "vscan/nmap wall",
                "CPU nmap (s)",
                "CPU vscan (s)",
                "vscan/nmap CPU",
                "max RSS MiB nmap / vscan",
                "agreement",
            ],
            rows,
        )
    )
    for i, run in enumerate(runs, 1):
        for d in run["disagreements"]:
            print(
                f"run {i}: port {d['port']} ({d['label']}): {d['field']}: "
                f"nmap={d['nmap']!r} vscan={d['vscan']!r}"
            )
        for name in ("nmap", "vscan"):
            if run[name]["exit"] != 0:
                print(f"run {i}: {name} exit {run[name]['exit']}: {run[name]['stderr_tail']}")
    if len(runs) > 1:
        print(
            f"median wall ratio {statistics.median(r['wall_ratio'] for r in runs):.2f}x, "
            f"median CPU ratio {statistics.median(r['cpu_ratio'] for r in runs):.2f}x"
        )
    payload = {
        "machine": machine(),
        "nmap_version": nmap_version.splitlines()[0] if nmap_version else "?",
        "args": vars(args),
        "target_wall_ratio": TARGET_RATIO,
        "runs": runs,
    }
    path = write_json(args.output, payload)
    print(f"wrote {path.relative_to(REPO)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main())
