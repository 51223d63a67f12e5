"""Hostile loopback servers (127.0.0.1 only), and the catalogue of cases built on them.

Each server misbehaves in one way a real peer can: a 64 MiB banner, one byte every
5 s, random binary, responses that bait slow regular expressions (the Payara trap
and the crafted FRITZ!Box / MailEnable baits of ``benchmarks/hostile.py``), a peer
that accepts and never reads, TLS handshakes that never finish or carry a 1 MiB
certificate chain, ONC RPC replies whose lengths lie (TCP record marks, and UDP
replies), and a UDP flood aimed at the scanner's socket.

TCP servers are :class:`tests.daemon_harness.Listener` threads; UDP servers are
:class:`UDPServer` threads. Every handler gives up when :class:`HostilePool` is
closed, so nothing outlives the test or the benchmark that started it.
"""

from __future__ import annotations

import contextlib
import random
import socket
import struct
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from tests.daemon_harness import Listener
from tests.e2e.tls_servers import huge_chain_server, make_certificate, never_finishes_handshake
from vscand.rpc.messages import (
    ACCEPT_PROG_MISMATCH,
    ACCEPT_PROG_UNAVAIL,
    RecordReader,
    RpcError,
    build_accepted_reply,
    parse_call,
    record,
)

LOOPBACK = "127.0.0.1"
MIB = 1 << 20
#: the size of the flood banner
BIG_BANNER_BYTES = 64 * MIB
#: seconds between two bytes of the drip server
DRIP_INTERVAL = 5.0
#: seconds a UDP flood lasts after the last datagram that triggered it
FLOOD_SECONDS = 3.0

PAYARA_BAIT = b"HTTP/1.1 200 OK\r\nServer: Payara Server" + b" " * 32768
FRITZ_BAIT = b"220 FRITZ!Box" + b"0" * 32768 + b"! FTP server ready.\r\n"
MAILENABLE_BAIT = b"220 " + b"A" * 32768 + b"\r\n250-x [y], this server offers 9 extensions\r\nX"

TCPHandler = Callable[[socket.socket], None]
#: (socket, datagram, sender) -> None; replies with socket.sendto
UDPHandler = Callable[[socket.socket, bytes, tuple[str, int]], None]


class UDPServer:
    """A UDP socket on 127.0.0.1 whose datagrams are handled, one by one, in a thread."""

    def __init__(self, handler: UDPHandler, host: str = LOOPBACK) -> None:
        assert host.startswith("127."), "loopback only"
        self.host = host
        self.handler = handler
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, 0))
        self.port: int = self.sock.getsockname()[1]
        self.received = 0
        self._closed = threading.Event()
        threading.Thread(target=self._loop, daemon=True).start()

    @property
    def endpoint(self) -> str:
        return f"{self.host}:{self.port}/udp"

    def _loop(self) -> None:
        while not self._closed.is_set():
            try:
                data, sender = self.sock.recvfrom(65536)
            except OSError:
                return
            self.received += 1
            with contextlib.suppress(OSError):
                self.handler(self.sock, data, sender)

    def close(self) -> None:
        self._closed.set()
        with contextlib.suppress(OSError):
            self.sock.close()


class HostilePool:
    """Starts the hostile servers; ``close()`` stops every one of them."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.stopping = threading.Event()
        self.tcp: list[Listener] = []
        self.udp: list[UDPServer] = []
        self._big: bytes | None = None
        self._cert_der: bytes | None = None

    # -- plumbing -------------------------------------------------------------

    def listen(self, handler: TCPHandler) -> str:
        listener = Listener(handler, LOOPBACK)
        self.tcp.append(listener)
        return listener.endpoint

    def listen_udp(self, handler: UDPHandler) -> str:
        server = UDPServer(handler)
        self.udp.append(server)
        return server.endpoint

    def close(self) -> None:
        self.stopping.set()
        for listener in self.tcp:
            listener.close()
        for server in self.udp:
            server.close()

    def _idle(self, conn: socket.socket) -> None:
        """Hold the connection without reading it until the peer closes or we stop."""
        while not self.stopping.wait(0.5):
            try:
                conn.settimeout(0)
                if conn.recv(1, socket.MSG_PEEK) == b"":
                    return  # the peer closed (a peeked byte is left unread)
            except BlockingIOError:
                continue
            except OSError:
                return

    def _drain(self, conn: socket.socket) -> None:
        conn.settimeout(0.5)
        while not self.stopping.is_set():
            try:
                if not conn.recv(65536):
                    return
            except TimeoutError:
                continue
            except OSError:
                return

    # -- TCP servers ----------------------------------------------------------

    def big_banner(self) -> str:
        """A 64 MiB banner on every connection (``220 `` then ``A`` bytes)."""
        if self._big is None:
            self._big = b"220 " + b"A" * (BIG_BANNER_BYTES - 4)
        view = memoryview(self._big)

        def handle(conn: socket.socket) -> None:
            for start in range(0, len(view), MIB):
                if self.stopping.is_set():
                    return
                conn.sendall(view[start : start + MIB])
            self._drain(conn)

        return self.listen(handle)

    def drip(self, interval: float = DRIP_INTERVAL) -> str:
        """One byte every ``interval`` seconds, for as long as the peer stays."""
        text = b"HTTP/1.1 200 OK\r\nServer: drip\r\n"

        def handle(conn: socket.socket) -> None:
            index = 0
            while True:
                conn.sendall(text[index % len(text) : index % len(text) + 1])
                index += 1
                if self.stopping.wait(interval):
                    return

        return self.listen(handle)

    def random_binary(self, seed: int = 7) -> str:
        """1 KiB of random bytes on connect and after every read (seeded: reproducible)."""
        counter = iter(range(1 << 30))

        def handle(conn: socket.socket) -> None:
            rng = random.Random(seed * 1_000_003 + next(counter))
            conn.sendall(rng.randbytes(1024))
            conn.settimeout(0.5)
            while not self.stopping.is_set():
                try:
                    if not conn.recv(65536):
                        return
                except TimeoutError:
                    continue
                conn.sendall(rng.randbytes(1024))

        return self.listen(handle)

    def bait_on_request(self, bait: bytes) -> str:
        """Silent until the client speaks, then ``bait`` (the Payara trap answers a GET)."""

        def handle(conn: socket.socket) -> None:
            conn.settimeout(0.5)
            while not self.stopping.is_set():
                try:
                    if not conn.recv(65536):
                        return
                except TimeoutError:
                    continue
                conn.sendall(bait)
                self._drain(conn)
                return

        return self.listen(handle)

    def bait_banner(self, bait: bytes) -> str:
        """``bait`` as the greeting, then silence."""

        def handle(conn: socket.socket) -> None:
            conn.sendall(bait)
            self._drain(conn)

        return self.listen(handle)

    def never_reads(self) -> str:
        """Accepts, then neither reads nor writes (the probes pile up in its buffer)."""
        return self.listen(self._idle)

    def _certificate(self) -> bytes:
        if self._cert_der is None:
            self._cert_der = make_certificate(self.workdir / "hostile-cert").der
        return self._cert_der

    def tls_never_finishes(self) -> str:
        """Plain text gets a TLS alert (so scanners restart through TLS); a ClientHello
        gets nothing, ever."""
        return self.listen(never_finishes_handshake())

    def tls_huge_chain(self) -> str:
        """Plain text gets a TLS alert; a ClientHello gets a ~1 MiB certificate chain."""
        return self.listen(huge_chain_server(self._certificate()))

    def rpc_liar_tcp(self) -> str:
        """ONC RPC over TCP: the first call of each connection gets an honest
        PROG_UNAVAIL; every later one a reply whose record mark lies, in turn: a 2 GiB
        record, a record 1000 bytes longer than what follows (then silence), and 500
        empty fragments that are never the last. Anything but an RPC call: close."""
        lies = iter(range(1 << 30))

        def handle(conn: socket.socket) -> None:
            calls = 0
            conn.settimeout(0.5)
            while not self.stopping.is_set():
                try:
                    data = conn.recv(65536)
                except TimeoutError:
                    continue
                if not data:
                    return
                try:
                    message = RecordReader().feed(data)
                    if message is None:
                        return
                    xid = parse_call(message)[0]
                except RpcError:
                    return  # not an RPC call (a text probe): close
                calls += 1
                if calls == 1:
                    conn.sendall(record(build_accepted_reply(xid, ACCEPT_PROG_UNAVAIL)))
                    continue
                reply = build_accepted_reply(xid, ACCEPT_PROG_MISMATCH, struct.pack(">II", 1, 3))
                lie = next(lies) % 3
                if lie == 0:
                    conn.sendall(struct.pack(">I", 0x80000000 | 0x7FFFFFF0) + reply)
                elif lie == 1:
                    conn.sendall(struct.pack(">I", 0x80000000 | (len(reply) + 1000)) + reply)
                else:
                    conn.sendall(b"\0\0\0\0" * 500)
                self._idle(conn)
                return

        return self.listen(handle)

    # -- UDP servers ----------------------------------------------------------

    def rpc_liar_udp(self) -> str:
        """ONC RPC over UDP: the first call from each socket gets an honest PROG_UNAVAIL,
        later ones lie, in turn: PROG_MISMATCH without its versions, a 60,000-byte reply
        (zeros after the header), a TCP record mark announcing 2 GiB in front of the
        reply. Anything but an RPC call gets an empty datagram (an EOF for the probe)."""
        calls: dict[tuple[str, int], int] = {}
        lies = iter(range(1 << 30))

        def handle(sock: socket.socket, data: bytes, sender: tuple[str, int]) -> None:
            try:
                xid = parse_call(data)[0]
            except RpcError:
                sock.sendto(b"", sender)
                return
            calls[sender] = calls.get(sender, 0) + 1
            if calls[sender] == 1:
                sock.sendto(build_accepted_reply(xid, ACCEPT_PROG_UNAVAIL), sender)
                return
            reply = build_accepted_reply(xid, ACCEPT_PROG_MISMATCH, struct.pack(">II", 1, 3))
            lie = next(lies) % 3
            if lie == 0:
                sock.sendto(reply[:-8], sender)
            elif lie == 1:
                sock.sendto(reply[:-8] + b"\0" * (60000 - len(reply) + 8), sender)
            else:
                sock.sendto(struct.pack(">I", 0x80000000 | 0x7FFFFFF0) + reply, sender)

        return self.listen_udp(handle)

    def udp_flood(self, seconds: float = FLOOD_SECONDS) -> str:
        """Every datagram received starts (or extends) a flood of small datagrams at its
        sender, as fast as one thread can send them, for ``seconds``; one in a hundred is
        empty (an EOF to nsock and to us). One flood thread per sender."""
        until: dict[tuple[str, int], float] = {}
        lock = threading.Lock()
        payloads = [b""] + [bytes([0x41 + i % 26]) * 32 for i in range(99)]

        def flood(sock: socket.socket, sender: tuple[str, int]) -> None:
            sent = 0
            while not self.stopping.is_set():
                with lock:
                    if time.monotonic() > until[sender]:
                        del until[sender]
                        return
                for payload in payloads:
                    try:
                        sock.sendto(payload, sender)
                    except BlockingIOError:
                        continue
                    except OSError:
                        with lock:
                            until.pop(sender, None)
                        return
                    sent += 1

        def handle(sock: socket.socket, data: bytes, sender: tuple[str, int]) -> None:
            with lock:
                running = sender in until
                until[sender] = time.monotonic() + seconds
            if not running:
                threading.Thread(target=flood, args=(sock, sender), daemon=True).start()

        return self.listen_udp(handle)


@dataclass(frozen=True)
class Case:
    """One hostile target: how to start it, and what the faithful bound depends on."""

    name: str
    protocol: str  # "tcp" or "udp"
    start: Callable[[HostilePool], str]  # -> endpoint
    #: a TLS alert makes both scanners restart through TLS: the SSL phase adds its time
    tls_restart: bool = False
    #: version scripts (the RPC grinder) may run on the port after the probes
    scripts: bool = False
    what: str = ""


CASES: tuple[Case, ...] = (
    Case("banner-64mib", "tcp", HostilePool.big_banner, what="64 MiB banner"),
    Case("drip-5s", "tcp", HostilePool.drip, what="one byte every 5 s"),
    Case("random-binary", "tcp", HostilePool.random_binary, what="random bytes"),
    Case(
        "payara-bait",
        "tcp",
        lambda pool: pool.bait_on_request(PAYARA_BAIT),
        what="Payara trap: Server: Payara Server + 32 KiB of spaces",
    ),
    Case(
        "fritz-bait",
        "tcp",
        lambda pool: pool.bait_banner(FRITZ_BAIT),
        what="crafted FRITZ!Box ftp bait, 32 KiB (quadratic line 1250)",
    ),
    Case(
        "mailenable-bait",
        "tcp",
        lambda pool: pool.bait_banner(MAILENABLE_BAIT),
        what="crafted MailEnable smtp bait, 32 KiB (quadratic line 13021)",
    ),
    Case("never-reads", "tcp", HostilePool.never_reads, what="accepts, never reads"),
    Case(
        "tls-never-finishes",
        "tcp",
        HostilePool.tls_never_finishes,
        tls_restart=True,
        what="TLS handshake never finishes",
    ),
    Case(
        "tls-1mib-chain",
        "tcp",
        HostilePool.tls_huge_chain,
        tls_restart=True,
        what="1 MiB certificate chain",
    ),
    Case(
        "rpc-liar-tcp",
        "tcp",
        HostilePool.rpc_liar_tcp,
        scripts=True,
        what="RPC record marks that lie",
    ),
    Case(
        "rpc-liar-udp",
        "udp",
        HostilePool.rpc_liar_udp,
        scripts=True,
        what="RPC UDP replies that lie",
    ),
    Case("udp-flood", "udp", HostilePool.udp_flood, what="flood of datagrams at the scanner"),
)
