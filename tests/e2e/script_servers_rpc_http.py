"""Target servers for the version-script end-to-end test, run as a child process.

``python -m tests.e2e.script_servers_rpc_http`` (started inside the test's network
namespace) starts the servers, registers the RPC ones it is told to with the
namespace's rpcbind (PMAPPROC_SET, portmapper v2 over UDP), prints one JSON
line ``{"case": port, ...}`` and serves until its stdin closes.

* ``rpc-registered``: an ONC RPC server (TCP) for program 100005 (mountd)
  versions 1-3, registered with rpcbind: rpcinfo names it.
* ``rpc-unregistered``: program 100024 (status) version 1, not registered:
  rpc-grind must find it.
* ``rpc-registered-udp``: program 100021 (nlockmgr) versions 1, 3 and 4 over
  UDP, registered (versions 1, 3, 4 with rpcbind: rpcinfo names it ``1-4``).
* ``rpc-unregistered-udp``: program 100008 (walld) version 1 over UDP, not
  registered: rpc-grind finds it.
* ``rpc-registered-silent-udp``: a UDP port registered for program 100011
  (rquotad) versions 1-2 that never answers anything, on a number
  nmap-services has no UDP entry for: the scans leave it ``open|filtered``
  with no service, and only rpcinfo can name it.
* ``rpc-pmap2-only-udp``: a UDP port (unregistered, not named by nmap-services)
  that answers only NULL calls to program 100000 version 2 and ignores
  everything else: silent to the scans, it answers rpc-grind's confirmation
  call, which makes it ``open`` (NSE's set_port_state); nothing is found.
* ``http-server-header``: HTTP with a Server header no probe matches (8080).
* ``docker``: a Docker Engine API lookalike (``GET /version`` JSON, port 2375).
* ``skype``: a Skype v2 lookalike on port 80: ``HTTP/1.0 404 Not Found`` to a
  GET, binary garbage to anything else.
"""

from __future__ import annotations

import json
import os
import random
import socket
import struct
import sys
import threading
from collections.abc import Callable

from tests.e2e.servers import bind_unlisted
from vscand.rpc.messages import (
    ACCEPT_PROC_UNAVAIL,
    ACCEPT_PROG_MISMATCH,
    ACCEPT_PROG_UNAVAIL,
    ACCEPT_SUCCESS,
    RecordReader,
    RpcError,
    build_accepted_reply,
    build_call,
    parse_call,
    parse_reply,
    record,
)

Handler = Callable[[socket.socket], None]


def serve(port: int, handler: Handler) -> int:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)

    def accept_loop() -> None:
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=_guarded, args=(handler, conn), daemon=True).start()

    threading.Thread(target=accept_loop, daemon=True).start()
    return int(sock.getsockname()[1])


def _guarded(handler: Handler, conn: socket.socket) -> None:
    try:
        conn.settimeout(30)
        handler(conn)
    except OSError:
        pass
    finally:
        conn.close()


def rpc_reply(program: int, low: int, high: int, message: bytes) -> bytes:
    """The reply of an ONC RPC server for ``program`` versions low..high (NULL procedure only)."""
    xid, prog, vers, proc = parse_call(message)
    if prog != program:
        return build_accepted_reply(xid, ACCEPT_PROG_UNAVAIL)
    if not low <= vers <= high:
        return build_accepted_reply(xid, ACCEPT_PROG_MISMATCH, struct.pack(">II", low, high))
    if proc != 0:
        return build_accepted_reply(xid, ACCEPT_PROC_UNAVAIL)
    return build_accepted_reply(xid, ACCEPT_SUCCESS)


def rpc_tcp(program: int, low: int, high: int) -> Handler:
    def handle(conn: socket.socket) -> None:
        reader = RecordReader()
        while True:
            data = conn.recv(65536)
            if not data:
                return
            try:
                message = reader.feed(data)
            except RpcError:
                return
            while message is not None:
                try:
                    conn.sendall(record(rpc_reply(program, low, high, message)))
                except RpcError:
                    return
                rest, reader = reader.rest, RecordReader()
                message = reader.feed(rest) if rest else None

    return handle


def serve_udp(port: int, program: int, low: int, high: int) -> int:
    """An ONC RPC server over UDP: one reply datagram per call; anything else is ignored."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))

    def loop() -> None:
        while True:
            message, peer = sock.recvfrom(65536)
            try:
                reply = rpc_reply(program, low, high, message)
            except RpcError:
                continue  # not an RPC call (another UDP probe): silence, as a real server
            sock.sendto(reply, peer)

    threading.Thread(target=loop, daemon=True).start()
    return int(sock.getsockname()[1])


def silent_udp(answer: Callable[[bytes], bytes | None] = lambda _: None) -> int:
    """A UDP port, on a number nmap-services does not name, that drops every
    datagram ``answer`` returns None for (no reply, no ICMP)."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    number = bind_unlisted(sock, "udp")

    def loop() -> None:
        while True:
            message, peer = sock.recvfrom(65536)
            reply = answer(message)
            if reply is not None:
                sock.sendto(reply, peer)

    threading.Thread(target=loop, daemon=True).start()
    return number


def pmap2_null_only(message: bytes) -> bytes | None:
    """The reply to a NULL call to program 100000 version 2; None to anything else."""
    try:
        xid, program, version, procedure = parse_call(message)
    except RpcError:
        return None
    if (program, version, procedure) != (100000, 2, 0):
        return None
    return build_accepted_reply(xid, ACCEPT_SUCCESS)


def pmap_set(program: int, version: int, port: int, protocol: int = 6) -> bool:
    """PMAPPROC_SET (v2, procedure 1) over UDP to 127.0.0.1:111: register a port
    (``protocol`` 6: TCP, 17: UDP)."""
    xid = random.randint(1, 0xFFFFFFF)
    args = struct.pack(">IIII", program, version, protocol, port)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(5)
        sock.sendto(build_call(xid, 100000, 2, 1, args), ("127.0.0.1", 111))
        reply = sock.recv(4096)
    header = parse_reply(reply)
    return (
        header.accept_state == ACCEPT_SUCCESS
        and reply[header.body : header.body + 4] == b"\0\0\0\1"
    )


def http_server_header(conn: socket.socket) -> None:
    data = conn.recv(4096)
    if data.startswith(b"GET"):
        conn.sendall(b"HTTP/1.0 200 OK\r\nServer: ZzzServer/1.2\r\nContent-Length: 2\r\n\r\nok")


DOCKER_VERSION = {
    "Platform": {"Name": "Docker Engine - Community"},
    "Version": "20.10.24",
    "ApiVersion": "1.41",
    "MinAPIVersion": "1.12",
    "GitCommit": "5d6db84",
    "GoVersion": "go1.19.7",
    "Os": "linux",
    "Arch": "amd64",
    "KernelVersion": "6.1.0-18-amd64",
}


def docker(conn: socket.socket) -> None:
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    if data.startswith(b"GET /version "):
        body = json.dumps(DOCKER_VERSION).encode()
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nApi-Version: 1.41\r\nContent-Type: application/json\r\n"
            b"Docker-Experimental: false\r\nOstype: linux\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )
    else:
        body = b'{"message":"page not found"}\n'
        conn.sendall(
            b"HTTP/1.1 404 Not Found\r\nContent-Type: application/json\r\n"
            b"Content-Length: %d\r\n\r\n" % len(body) + body
        )


def skype(conn: socket.socket) -> None:
    data = conn.recv(4096)
    if not data:
        return
    if data.startswith(b"GET "):
        conn.sendall(b"HTTP/1.0 404 Not Found\r\n\r\n")
    else:
        conn.sendall(bytes(random.Random(len(data)).getrandbits(8) | 0x80 for _ in range(15)))


def main() -> None:
    ports = {
        "rpc-registered": serve(0, rpc_tcp(100005, 1, 3)),
        "rpc-unregistered": serve(0, rpc_tcp(100024, 1, 1)),
        "http-server-header": serve(8080, http_server_header),
        "docker": serve(2375, docker),
        "skype": serve(80, skype),
        "rpc-registered-udp": serve_udp(0, 100021, 1, 4),
        "rpc-unregistered-udp": serve_udp(0, 100008, 1, 1),
        "rpc-registered-silent-udp": silent_udp(),
        "rpc-pmap2-only-udp": silent_udp(pmap2_null_only),
    }
    for version in (1, 2, 3):
        if not pmap_set(100005, version, ports["rpc-registered"]):
            sys.exit(f"rpcbind refused PMAPPROC_SET for 100005 v{version}")
    for version in (1, 3, 4):
        if not pmap_set(100021, version, ports["rpc-registered-udp"], protocol=17):
            sys.exit(f"rpcbind refused PMAPPROC_SET for 100021 v{version} over UDP")
    for version in (1, 2):
        if not pmap_set(100011, version, ports["rpc-registered-silent-udp"], protocol=17):
            sys.exit(f"rpcbind refused PMAPPROC_SET for 100011 v{version} over UDP")
    print(json.dumps(ports), flush=True)
    sys.stdin.read()
    os._exit(0)


if __name__ == "__main__":
    main()
