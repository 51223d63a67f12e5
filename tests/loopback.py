"""Loopback test servers and the nmap oracle switch (127.0.0.1 only)."""

from __future__ import annotations

import os
import shutil
import socket
import threading

import pytest


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
