"""UDP target services for the end-to-end tests (127.0.0.1 only).

Plain-Python UDP servers (each on its own free port, answering whoever asks,
nmap and vscan at the same time) and two real daemons started from generated
configurations: ``dnsmasq`` (dnsmasq-base) and ``snmpd`` (Net-SNMP).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import subprocess
import threading
import time
from collections.abc import Callable
from pathlib import Path

from tests.e2e.daemons import DaemonFailed, Unavailable
from tests.e2e.servers import bind_named, bind_unlisted
from tests.loopback import free_port

LOOPBACK = "127.0.0.1"

#: datagram in → datagrams out (in order)
Responder = Callable[[bytes], list[bytes]]


#: the ports nmap-payloads' ONC RPC CALL goes to (7.93's UDP scan), which are the ``ports``
#: of 7.94+'s ONCRPC_CALL probe: a version probe even at intensity 0 (port-listed probes
#: ignore rarity). A server bound to port 0 gets one (Linux's ephemeral ports: 32768-60999)
RPC_PORTS_LOWEST = 32768


class UDPServer:
    """A UDP socket on 127.0.0.1 whose datagrams are answered by ``respond``."""

    def __init__(
        self, respond: Responder, *, unlisted: bool = False, named: str | None = None
    ) -> None:
        """``unlisted``: on a port number nmap-services has no UDP entry for; ``named``: on
        one it gives that name. Either way from ``RPC_PORTS_LOWEST`` up, as port 0's."""
        self.respond = respond
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        if unlisted:
            bind_unlisted(self.sock, "udp", lowest=RPC_PORTS_LOWEST)
        elif named is not None:
            bind_named(self.sock, "udp", named, lowest=RPC_PORTS_LOWEST)
        else:
            self.sock.bind((LOOPBACK, 0))
        self.port: int = self.sock.getsockname()[1]
        self._closed = threading.Event()
        self.thread = threading.Thread(target=self._loop, daemon=True)
        self.thread.start()

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                data, peer = self.sock.recvfrom(65535)
            except OSError:
                return
            for reply in self.respond(data):
                with contextlib.suppress(OSError):
                    self.sock.sendto(reply, peer)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.close()


class ClosedUDPPort:
    """A UDP port number nothing listens on: datagrams to it get ICMP port-unreachable.

    (A bound socket would swallow datagrams silently, so the number is only
    reserved for the instant of the bind; the scans start right after.)
    """

    def __init__(self) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.bind((LOOPBACK, 0))
            self.port: int = sock.getsockname()[1]

    def close(self) -> None:
        pass


# -- responders --------------------------------------------------------------

SIP_OPTIONS = b"OPTIONS sip:nm SIP/2.0\r\n"
SIP_REPLY = (
    b"SIP/2.0 200 OK\r\n"
    b"Via: SIP/2.0/UDP nm;branch=foo;rport\r\n"
    b"Server: Asterisk PBX 18.2.0\r\n"
    b"Content-Length: 0\r\n\r\n"
)


def sip_asterisk(data: bytes) -> list[bytes]:
    """Answers only the SIPOptions probe, as an Asterisk PBX."""
    return [SIP_REPLY] if data.startswith(SIP_OPTIONS) else []


def garbage(data: bytes) -> list[bytes]:
    """Answers anything (also the port scan's datagram) with bytes no probe knows."""
    return [b"zqzq garbage \x01\x02 %d" % len(data)]


def silent(data: bytes) -> list[bytes]:
    return []


def empty_then_hello(data: bytes) -> list[bytes]:
    """Answers anything non-empty with an empty datagram, then ``hello zz``.

    The empty datagram ends the current probe (EOF); the ``hello zz`` is then read
    by the *next* probe: every fingerprint entry is the previous probe's answer.
    """
    return [b"", b"hello zz"] if data else []


#: the ONC RPC CALL that nmap-payloads gives Nmap's UDP scan for ports 32768-65535 (7.94+:
#: the ONCRPC_CALL probe, sent by the UDP scan and, for those ports, by version detection)
RPC_PORTSCAN_PREFIX = b"\x3e\xec\xe3\xca"


def portscan_payload_only(data: bytes) -> list[bytes]:
    """Answers only the port scan's datagram: open, but no version probe is answered."""
    return [b"pong"] if data.startswith(RPC_PORTSCAN_PREFIX) else []


# -- real daemons ----------------------------------------------------------------


def _udp_answers(port: int, query: bytes, timeout: float) -> bool:
    """Whether something on ``port`` answers ``query`` within ``timeout`` seconds."""
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(0.2)
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(OSError):
                sock.sendto(query, (LOOPBACK, port))
                if sock.recvfrom(65535)[0]:
                    return True
            time.sleep(0.1)
    return False


class UDPDaemon:
    def __init__(self, name: str, proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
        self.name = name
        self.proc = proc
        self.port = port
        self.log = log

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()


def _start(
    name: str, cmd: list[str], port: int, workdir: Path, query: bytes, **env: str
) -> UDPDaemon:
    log = workdir / f"{name}.log"
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
        )
    daemon = UDPDaemon(name, proc, port, log)
    if not _udp_answers(port, query, timeout=10.0):
        daemon.stop()
        tail = log.read_text(errors="replace")[-2000:]
        raise DaemonFailed(f"{name} did not answer on 127.0.0.1:{port}/udp:\n{tail}")
    return daemon


#: a DNS query for version.bind TXT CH (what dnsmasq answers with its version)
VERSION_BIND = (
    b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x07version\x04bind\x00\x00\x10\x00\x03"
)
#: SNMPv1 get-request, community public, sysDescr.0
SNMP_GET = (
    b"0&\x02\x01\x00\x04\x06public\xa0\x19\x02\x01\x01\x02\x01\x00\x02\x01\x000\x0e0\x0c"
    b"\x06\x08+\x06\x01\x02\x01\x01\x01\x00\x05\x00"
)


def start_dnsmasq(workdir: Path) -> UDPDaemon:
    exe = shutil.which("dnsmasq") or "/usr/sbin/dnsmasq"
    if not Path(exe).exists():
        raise Unavailable("dnsmasq is not installed (Debian package dnsmasq-base)")
    port = free_port()  # free for TCP too: dnsmasq also serves DNS over TCP on the port
    user = ["--user=root", "--group=root"] if os.geteuid() == 0 else []
    cmd = [
        exe,
        "--keep-in-foreground",
        f"--port={port}",
        "--listen-address=127.0.0.1",
        "--bind-interfaces",
        "--no-resolv",
        "--no-hosts",
        "--conf-file=/dev/null",
        "--pid-file=",
        "--log-facility=-",
        *user,
    ]
    return _start("dnsmasq", cmd, port, workdir, VERSION_BIND)


def start_snmpd(workdir: Path) -> UDPDaemon:
    exe = shutil.which("snmpd") or "/usr/sbin/snmpd"
    if not Path(exe).exists():
        raise Unavailable("snmpd is not installed (Debian package snmpd)")
    port = free_port()
    state = workdir / "snmp"
    state.mkdir(exist_ok=True)
    conf = state / "snmpd.conf"
    conf.write_text(
        "rocommunity public 127.0.0.1\nsysLocation zz-lab\nsysContact zz@example.test\n"
    )
    cmd = [exe, "-f", "-Lo", "-C", "-c", str(conf), "-p", str(state / "snmpd.pid")]
    cmd.append(f"udp:127.0.0.1:{port}")
    # MIBS= keeps snmpd from loading (and complaining about) MIB files it does not need
    return _start("snmpd", cmd, port, workdir, SNMP_GET, SNMP_PERSISTENT_DIR=str(state), MIBS="")
