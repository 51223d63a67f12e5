"""Lookalike servers for the second version-script end-to-end test (a child process).

``python -m tests.e2e.script_servers_brokers_vpn`` (inside the test's network namespace)
starts the servers on their standard ports, prints one JSON line
``{"case": port, ...}`` and serves until its stdin closes.

* ``amqp`` (5672/tcp): answers the protocol header with a real AMQP 0-9-1
  Connection.Start frame (RabbitMQ's server properties: a capabilities table
  of booleans, strings; version-major 0, minor 9).
* ``pptp`` (1723/tcp): a Start-Control-Connection-Reply (RFC 2637 layout)
  with firmware revision 0x0102, host name ``pptp-gw`` and vendor ``Linux``.
* ``ike`` (500/udp): an ISAKMP answer (the request's exchange type) with three
  vendor IDs: strongSwan 4.3.6's, Dead Peer Detection v1.0, RFC 3947 NAT-T.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from collections.abc import Callable


def amqp_table(items: list[tuple[str, bytes, bytes]]) -> bytes:
    body = b"".join(bytes([len(k)]) + k.encode() + kind + value for k, kind, value in items)
    return struct.pack(">I", len(body)) + body


def long_string(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">I", len(raw)) + raw


def connection_start() -> bytes:
    capabilities = amqp_table(
        [("publisher_confirms", b"t", b"\x01"), ("exchange_exchange_bindings", b"t", b"\x01"),
         ("basic.nack", b"t", b"\x01"), ("authentication_failure_close", b"t", b"\x00")]
    )  # fmt: skip
    properties = amqp_table(
        [("capabilities", b"F", capabilities), ("cluster_name", b"S", long_string("rabbit@ns")),
         ("copyright", b"S", long_string("Copyright (c) 2007-2023 VMware, Inc.")),
         ("information", b"S", long_string("Licensed under the MPL 2.0.")),
         ("platform", b"S", long_string("Erlang/OTP 25.2.3")),
         ("product", b"S", long_string("RabbitMQ")), ("version", b"S", long_string("3.10.8"))]
    )  # fmt: skip
    args = b"\x00\x09" + properties + long_string("AMQPLAIN PLAIN") + long_string("en_US")
    payload = struct.pack(">HH", 10, 10) + args
    return struct.pack(">BHI", 1, 0, len(payload)) + payload + b"\xce"


def amqp(conn: socket.socket) -> None:
    header = b""
    while len(header) < 8:
        chunk = conn.recv(8 - len(header))
        if not chunk:
            return
        header += chunk
    if header != b"AMQP\x00\x00\x09\x01":
        conn.sendall(b"AMQP\x00\x00\x09\x01")
        return
    conn.sendall(connection_start())
    conn.recv(4096)


def pptp_reply() -> bytes:
    return (
        struct.pack(">HHIHHHBBIIHH", 156, 1, 0x1A2B3C4D, 2, 0, 0x0100, 1, 0, 1, 1, 0, 0x0102)
        + b"pptp-gw".ljust(64, b"\x00")
        + b"Linux".ljust(64, b"\x00")
    )


def pptp(conn: socket.socket) -> None:
    data = b""
    while len(data) < 156:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
    if data[2:8] == b"\x00\x01\x1a\x2b\x3c\x4d":
        conn.sendall(pptp_reply())
    conn.recv(4096)


DPD_V1 = bytes.fromhex("afcad71368a1f1c96b8696fc77570100")
RFC3947 = bytes.fromhex("4a131c81070358455c5728f20e95452f")
STRONGSWAN_436 = bytes.fromhex("882fe56d6fd20dbc2251613b2ebe5beb")


def ike_answer(request: bytes) -> bytes | None:
    if len(request) < 28 or request[17] != 0x10:
        return None
    vids = [STRONGSWAN_436, DPD_V1, RFC3947]
    payloads = b""
    for i, vid in enumerate(vids):
        following = 0x0D if i + 1 < len(vids) else 0x00
        payloads += struct.pack(">BxH", following, len(vid) + 4) + vid
    header = (
        request[:8]
        + b"\x11" * 8
        + struct.pack(">BBBBII", 0x0D, 0x10, request[18], 0, 0, 28 + len(payloads))
    )
    return header + payloads


def serve_tcp(port: int, handler: Callable[[socket.socket], None]) -> int:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)

    def guarded(conn: socket.socket) -> None:
        try:
            conn.settimeout(30)
            handler(conn)
        except OSError:
            pass
        finally:
            conn.close()

    def loop() -> None:
        while True:
            conn, _ = sock.accept()
            threading.Thread(target=guarded, args=(conn,), daemon=True).start()

    threading.Thread(target=loop, daemon=True).start()
    return int(sock.getsockname()[1])


def serve_udp(port: int, answer: Callable[[bytes], bytes | None]) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))

    def loop() -> None:
        while True:
            data, peer = sock.recvfrom(65535)
            reply = answer(data)
            if reply is not None:
                sock.sendto(reply, peer)

    threading.Thread(target=loop, daemon=True).start()
    return int(sock.getsockname()[1])


def main() -> None:
    ports = {
        "amqp": serve_tcp(5672, amqp),
        "pptp": serve_tcp(1723, pptp),
        "ike": serve_udp(500, ike_answer),
    }
    print(json.dumps(ports), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
