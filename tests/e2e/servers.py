"""Plain-Python target services for the end-to-end tests (127.0.0.1 only).

Every server listens on its own free port, serves each connection in its own
thread (nmap and vscan scan them at the same time) and behaves the same on
every connection, whoever the client is.
"""

from __future__ import annotations

import contextlib
import errno
import random
import shutil
import socket
import struct
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from tests import releases

LOOPBACK = "127.0.0.1"

Handler = Callable[[socket.socket], None]


def nmap_services_file() -> Path:
    """The ``nmap-services`` nmap reads: the oracle's data directory's copy (the e2e
    tests' ``--datadir`` holds only ``scripts/script.db``, so nmap falls back to it): the
    installed nmap's, or the Debian 13 root's with ``VSCAND_ORACLE=debian13``."""
    release = releases.oracle()
    if isinstance(release, releases.NmapRelease):
        oracle_file = release.data_dir / "nmap-services"
        if oracle_file.is_file():
            return oracle_file
    candidates = []
    exe = shutil.which("nmap")
    if exe is not None:
        candidates.append(Path(exe).resolve().parent.parent / "share" / "nmap" / "nmap-services")
    candidates += [Path(d) / "nmap-services" for d in ("/usr/share/nmap", "/usr/local/share/nmap")]
    for path in candidates:
        if path.is_file():
            return path
    raise FileNotFoundError("nmap-services not found next to nmap")


def service_names(protocol: str, path: Path | None = None) -> dict[int, str]:
    """Port number → the name ``nmap-services`` gives it for ``protocol`` (the first line
    for a port wins, as in Nmap; read here, not with vscand's parser: the premise must
    not depend on the code under test)."""
    names: dict[int, str] = {}
    for line in (path or nmap_services_file()).read_text(errors="replace").splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) >= 2 and "/" in fields[1]:
            number, _, proto = fields[1].partition("/")
            if proto == protocol and number.isdigit():
                names.setdefault(int(number), fields[0])
    return names


def listed_ports(protocol: str, path: Path | None = None) -> frozenset[int]:
    """Every port number ``nmap-services`` names for ``protocol``."""
    return frozenset(service_names(protocol, path))


def _bind_among(sock: socket.socket, numbers: list[int], tries: int, what: str) -> int:
    for number in random.sample(numbers, min(tries, len(numbers))):
        try:
            sock.bind((LOOPBACK, number))
        except OSError as exc:
            if exc.errno != errno.EADDRINUSE:
                raise
            continue
        return number
    raise RuntimeError(f"no free port {what} in {tries} tries")


def bind_unlisted(sock: socket.socket, protocol: str, tries: int = 200, lowest: int = 10000) -> int:
    """Bind ``sock`` on 127.0.0.1 to a free port from ``lowest`` up that ``nmap-services``
    has no ``protocol`` entry for (so nmap has no table name to report for it)."""
    listed = listed_ports(protocol)
    free = [n for n in range(lowest, 65536) if n not in listed]
    return _bind_among(sock, free, tries, f"without an nmap-services {protocol} entry")


def bind_named(
    sock: socket.socket, protocol: str, name: str, tries: int = 200, lowest: int = 10000
) -> int:
    """Bind ``sock`` on 127.0.0.1 to a free port from ``lowest`` up that ``nmap-services``
    names ``name`` for ``protocol``."""
    named = [n for n, s in service_names(protocol).items() if s == name and n >= lowest]
    return _bind_among(sock, named, tries, f"named {name!r} for {protocol} in nmap-services")


def _drain(conn: socket.socket, limit: float = 600.0) -> None:
    """Read and drop whatever comes until the peer closes (or ``limit`` seconds)."""
    conn.settimeout(limit)
    try:
        while conn.recv(65536):
            pass
    except OSError:
        pass


class ThreadedServer:
    """A listening socket on loopback whose connections each run ``handler`` in a thread;
    it records when each connection was accepted, and from where."""

    def __init__(
        self,
        handler: Handler,
        *,
        unlisted: bool = False,
        host: str = LOOPBACK,
        port: int = 0,
        backlog: int = 128,
    ) -> None:
        """``unlisted``: on a port number nmap-services has no TCP entry for. ``port``: a
        given number (taken again right after another listener closed it)."""
        assert host.startswith("127.") or host == "::1", "loopback only"
        self.host = host
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
        if unlisted:
            bind_unlisted(self.sock, "tcp")
        else:
            self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            self.sock.bind((host, port))
        self.sock.listen(backlog)
        self.port: int = self.sock.getsockname()[1]
        self.accepted: list[tuple[float, Any]] = []  # (monotonic time, peer)
        self._closed = threading.Event()
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.thread = threading.Thread(target=self._accept_loop, daemon=True)
        self.thread.start()

    @property
    def endpoint(self) -> str:
        return f"[{self.host}]:{self.port}" if ":" in self.host else f"{self.host}:{self.port}"

    @property
    def connections(self) -> int:
        with self._lock:
            return len(self.accepted)

    def _accept_loop(self) -> None:
        while not self._closed.is_set():
            try:
                conn, peer = self.sock.accept()
            except OSError:
                return
            with self._lock:
                self.accepted.append((time.monotonic(), peer))
                self._conns.add(conn)
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        try:
            self.handler(conn)
        except OSError:
            pass
        finally:
            with self._lock:
                self._conns.discard(conn)
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        """Stop listening now: the port refuses connections once this returns."""
        self._closed.set()
        # shutdown first: a thread blocked in accept() holds the socket open (and still
        # listening) past a bare close() until its accept returns
        with contextlib.suppress(OSError):
            self.sock.shutdown(socket.SHUT_RDWR)
        with contextlib.suppress(OSError):
            self.sock.close()
        with self._lock:
            conns = list(self._conns)
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.shutdown(socket.SHUT_RDWR)


# -- per-connection behaviours -------------------------------------------------------


def banner_then_silence(banner: bytes) -> Handler:
    """Greets, then reads and ignores everything until the peer closes."""

    def handle(conn: socket.socket) -> None:
        conn.sendall(banner)
        _drain(conn)

    return handle


def banner_then_reply(banner: bytes, reply: bytes) -> Handler:
    """Greets; answers the first data once with ``reply``, then stays silent until closed."""

    def handle(conn: socket.socket) -> None:
        conn.sendall(banner)
        conn.settimeout(600)
        if conn.recv(65536):
            conn.sendall(reply)
        _drain(conn)

    return handle


def banner_in_parts(parts: list[tuple[float, bytes]]) -> Handler:
    """Sends each part after its delay (seconds since connect), then ignores input."""

    def handle(conn: socket.socket) -> None:
        start = time.monotonic()
        for at, data in parts:
            pause = start + at - time.monotonic()
            if pause > 0:
                time.sleep(pause)
            conn.sendall(data)
        _drain(conn)

    return handle


def silent(conn: socket.socket) -> None:
    """Accepts and never says anything; closes when the peer does."""
    _drain(conn)


def reply_and_close(banner: bytes, idle: float = 600.0) -> Handler:
    """Greets, answers anything with ``REPLY to N bytes`` and closes (SPEC §14.1, 7001);
    hangs up on a client that says nothing for ``idle`` seconds."""

    def handle(conn: socket.socket) -> None:
        conn.sendall(banner)
        conn.settimeout(idle)
        try:
            data = conn.recv(65536)
        except TimeoutError:
            return
        if data:
            conn.sendall(b"REPLY to %d bytes\r\n" % len(data))

    return handle


def close_after(seconds: float) -> Handler:
    """Accepts, says nothing, closes after ``seconds`` (0: at once)."""

    def handle(conn: socket.socket) -> None:
        if seconds > 0:
            time.sleep(seconds)

    return handle


def reset_on_accept(conn: socket.socket) -> None:
    """Accepts and resets the connection (SO_LINGER 0 then close: an RST)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


HTTP_SERVER_HEADER = b"Apache/2.4.57 (Debian)"


def _http_response(status: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status}\r\n"
        "Date: Mon, 06 Jan 2025 10:00:00 GMT\r\n"
        f"Server: {HTTP_SERVER_HEADER.decode()}\r\n"
        "Content-Type: text/html; charset=iso-8859-1\r\n"
        f"Content-Length: {len(body)}\r\n"
        "Connection: close\r\n"
        "\r\n"
    )
    return head.encode() + body


def http_silent_until_data(conn: socket.socket) -> None:
    """Says nothing until a request comes; GET/HEAD get 200, anything else 400; then closes."""
    conn.settimeout(600)
    data = b""
    while b"\r\n\r\n" not in data and b"\n\n" not in data:
        chunk = conn.recv(65536)
        if not chunk:
            break
        data += chunk
        if len(data) > 65536:
            break
    if not data:
        return
    method = data.split(b" ", 1)[0]
    if method in (b"GET", b"HEAD"):
        body = b"<html><body><h1>It works!</h1></body></html>\n"
        response = _http_response("200 OK", body)
        if method == b"HEAD":
            response = response[: len(response) - len(body)]
    else:
        body = (
            b'<!DOCTYPE HTML PUBLIC "-//IETF//DTD HTML 2.0//EN">\n<html><head>\n'
            b"<title>400 Bad Request</title>\n</head><body>\n<h1>Bad Request</h1>\n"
            b"<p>Your browser sent a request that this server could not understand.<br />\n"
            b"</p>\n</body></html>\n"
        )
        response = _http_response("400 Bad Request", body)
    conn.sendall(response)


def mysql_greeting(version: bytes = b"5.7.33-0ubuntu0.18.04.1") -> bytes:
    """A MySQL protocol-10 handshake packet (what a MySQL server sends on connect)."""
    payload = (
        b"\x0a"
        + version
        + b"\x00"
        + struct.pack("<I", 42)  # connection id
        + b"abcdefgh\x00"  # auth-plugin-data part 1 + filler
        + struct.pack("<H", 0xFFFF)  # capability flags (lower)
        + b"\x08"  # character set latin1
        + struct.pack("<H", 0x0002)  # status: autocommit
        + struct.pack("<H", 0xC1FF)  # capability flags (upper)
        + b"\x15"  # auth-plugin-data length
        + b"\x00" * 10
        + b"ijklmnopqrst\x00"
        + b"mysql_native_password\x00"
    )
    return struct.pack("<I", len(payload))[:3] + b"\x00" + payload


class ClosedPort:
    """A port number nothing listens on: a bound, never-listening socket holds it.

    Connecting to it is refused (RST), and keeping the socket bound means no other
    program can take the number while the scans run.
    """

    def __init__(self) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.bind((LOOPBACK, 0))
        self.port: int = self.sock.getsockname()[1]

    def close(self) -> None:
        self.sock.close()
