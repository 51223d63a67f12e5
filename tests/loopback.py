"""Loopback test servers and the nmap oracle switch (127.0.0.1 only)."""

from __future__ import annotations

import errno
import itertools
import os
import random
import shutil
import socket
import threading
from collections.abc import Iterator

import pytest

#: Ports handed to servers that a test starts in another process (redis-server, nginx,
#: s_server, the daemon's metrics endpoint): below the kernel's ephemeral range (32768 and
#: up), so no outgoing connection of any process (a scanner's, a Redis client's) is given
#: one as its source port between our check and the server's bind; and a slice of its own
#: for each pytest-xdist worker, so two workers never pick the same port.
PORT_BASE = 20000
PORTS_PER_WORKER = 1500


def _worker_index() -> int:
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    digits = worker.removeprefix("gw")
    return int(digits) if digits.isdigit() else 0


def _port_cycle() -> Iterator[int]:
    first = PORT_BASE + (_worker_index() % 8) * PORTS_PER_WORKER
    # a random start, so two test runs at once (a developer's and CI's) rarely meet
    start = random.randrange(PORTS_PER_WORKER)
    for offset in itertools.count(start):
        yield first + offset % PORTS_PER_WORKER


_ports = _port_cycle()
_ports_lock = threading.Lock()


def free_port(host: str = "127.0.0.1") -> int:
    """A port of this worker's slice that nothing on ``host`` holds now (TCP and UDP)."""
    for _ in range(PORTS_PER_WORKER):
        with _ports_lock:
            port = next(_ports)
        try:
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, kind) as s:
                    s.bind((host, port))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return port
    raise RuntimeError(f"no free port on {host} in this worker's slice")


class BannerServer:
    """Sends a banner, answers the first data with ``REPLY to N bytes``, closes."""

    def __init__(self, banner: bytes, reply: bool = True) -> None:
        self.banner = banner
        self.reply = reply
        self.sock = socket.socket()
        self.sock.bind(("127.0.0.1", 0))
        self.sock.listen(64)
        self.port = self.sock.getsockname()[1]
        self.thread = threading.Thread(target=self._run, daemon=True)
        self.thread.start()

    def _run(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        with conn:
            try:
                conn.sendall(self.banner)
                data = conn.recv(65536)
                if data and self.reply:
                    conn.sendall(b"REPLY to %d bytes\r\n" % len(data))
            except OSError:
                pass

    def close(self) -> None:
        self.sock.close()

    def __enter__(self) -> BannerServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def nmap_or_skip() -> str:
    found = shutil.which("nmap")
    if found is None:
        if os.environ.get("CI") == "true":
            pytest.fail("nmap is not installed (required in CI for the oracle tests)")
        pytest.skip("nmap is not installed")
    return found
