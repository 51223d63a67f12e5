"""Lookalike servers for the VoIP-and-devices script end-to-end test (a child process).

``python -m tests.e2e.script_servers_voip`` (inside the test's network namespace)
starts the servers on their standard ports, prints one JSON line ``{"case": port, ...}``
and serves until its stdin closes.

An open UDP port that no probe of Nmap's matches costs ``nmap -sV`` about 100 s (every
UDP probe waits for its turn); so the IAX2 and WDB lookalikes *echo* every datagram
that is not their script's request: Nmap's ``Help`` probe then hard-matches ``echo``
at once, and the script (whose rule is the port number) renames the port.

* ``iax2`` (4569/udp): an IAX2 PONG (full frame, type 6 "IAX control", subclass 3)
  to a POKE (subclass 0x1e), as Asterisk answers it.
* ``ubiquiti`` (10001/udp): a v1 discovery answer (TLVs: MAC+IPv4, MAC, uptime,
  hostname, product ``NBE-5AC-Gen2``, firmware ``XM.ar7240.v5.6.3...``, ESSID) to the
  v1 request; nothing to anything else (Nmap's v1 probe matches it).
* ``wdb`` (17185/udp): a WDB_TARGET_CONNECT reply (RPC accepted, agent 2.0, VxWorks
  5.5.1, BSP, boot line, memory and regions) to a CONNECT call of program 0x55555555.
* ``tftp`` (69/udp): like tftpd-hpa, a read or write request is answered from a *new*
  port (the transfer id), 0.4 s later (``TRANSFER_DELAY``): ERROR 1 ``File not found``;
  any other datagram is refused from port 69 itself (ERROR 4 ``Unknown request.``,
  Nmap's tftp softmatch).

``--hostile`` answers instead with what breaks parsers (``murmur_hostile``, an
oversized ping answer, is used by the unit tests only): a truncated WDB reply (the
script dies, as NSE's Lua does), a Ubiquiti answer whose TLV length overruns the
packet, an IAX2 frame of the wrong length, a TFTP error without its NUL.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from collections.abc import Callable

# -- Murmur (hostile only: the e2e target is the real mumble-server) -------------------


def murmur_hostile(data: bytes) -> bytes | None:
    """An oversized answer to the ping that starts like Murmur's (not 24 bytes: not Murmur)."""
    if data != b"\x00\x00\x00\x00abcdefgh":
        return None
    return b"\x00\x01\x03\x04abcdefgh" + b"\xff" * 9000


# -- IAX2 -------------------------------------------------------------------------


def iax2_answer(data: bytes) -> bytes | None:
    if len(data) != 12 or data[10] != 6 or data[11] != 0x1E:
        return data  # echo: see the module's docstring
    source_call = struct.unpack(">H", data[:2])[0] & 0x7FFF
    return struct.pack(">HHIBBBB", 0x8001, source_call, 3, 0, 1, 6, 3)


def iax2_hostile(data: bytes) -> bytes | None:
    answer = iax2_answer(data)
    return None if answer is None else answer + b"\x00"


# -- Ubiquiti ---------------------------------------------------------------------

MAC = bytes.fromhex("24a43c0a0b0c")


def tlv(kind: int, value: bytes) -> bytes:
    return struct.pack(">BH", kind, len(value)) + value


def ubiquiti_v1() -> bytes:
    body = b"".join([
        tlv(0x02, MAC + bytes([192, 168, 1, 20])),
        tlv(0x01, MAC),
        tlv(0x0A, struct.pack(">I", 98765)),
        tlv(0x0B, b"ap-roof"),
        tlv(0x0C, b"NBE-5AC-Gen2"),
        tlv(0x03, b"XM.ar7240.v5.6.3.28591.151130.1749"),
        tlv(0x0D, b"backhaul"),
        tlv(0x0E, b"\x02"),
    ])  # fmt: skip
    return struct.pack(">BBH", 1, 0, len(body)) + body


def ubiquiti_answer(data: bytes) -> bytes | None:
    return ubiquiti_v1() if data == b"\x01\x00\x00\x00" else None


def ubiquiti_hostile(data: bytes) -> bytes | None:
    if data != b"\x01\x00\x00\x00":
        return None
    body = tlv(0x0B, b"x") + struct.pack(">BH", 0x0C, 60000) + b"short"
    return struct.pack(">BBH", 1, 0, len(body)) + body


# -- WDB --------------------------------------------------------------------------

WDB_PROGRAM = 0x55555555


def xdr_string(raw: bytes) -> bytes:
    return struct.pack(">I", len(raw)) + raw + b"\x00" * ((4 - len(raw) % 4) % 4)


def wdb_reply(xid: int) -> bytes:
    header = struct.pack(">IIIIII", xid, 1, 0, 0, 0, 0)
    body = (
        struct.pack(">III", 0xFFFF1234, 0, 0)
        + xdr_string(b"2.0\x00")
        + struct.pack(">III", 1500, 2, 5)
        + xdr_string(b"5.5.1")
        + struct.pack(">IIIII", 61, 1, 1, 4096, 4321)
        + xdr_string(b"PowerPC 604\x00\x00")
        + xdr_string(b"ata=0,0(0,0)host:/ata0a/vxWorks h=10.0.0.2 e=10.0.0.9 u=target")
        + struct.pack(">IIII", 0x100000, 0x4000000, 1, 2)
        + struct.pack(">II", 0x200000, 0x300000)
        + struct.pack(">II", 0, 0)
    )
    return header + body


def wdb_call(data: bytes) -> int | None:
    if len(data) < 40:
        return None
    xid, kind, _rpc, program, version, procedure = struct.unpack_from(">6I", data)
    if kind != 0 or program != WDB_PROGRAM or version != 1 or procedure != 1:
        return None
    return int(xid)


def wdb_answer(data: bytes) -> bytes | None:
    xid = wdb_call(data)
    return data if xid is None else wdb_reply(xid)


def wdb_hostile(data: bytes) -> bytes | None:
    xid = wdb_call(data)
    return None if xid is None else wdb_reply(xid)[:60]


# -- TFTP -------------------------------------------------------------------------

NOT_FOUND = b"\x00\x05\x00\x01File not found\x00"
REFUSED = b"\x00\x05\x00\x04Unknown request.\x00"


def tftp_request(data: bytes) -> bool:
    return len(data) > 4 and data[:2] in (b"\x00\x01", b"\x00\x02") and data.endswith(b"\x00")


def tftp_answer(data: bytes) -> bytes | None:
    return REFUSED if not tftp_request(data) else None


def tftp_transfer(data: bytes) -> bytes | None:
    return NOT_FOUND if tftp_request(data) else None


def tftp_transfer_hostile(data: bytes) -> bytes | None:
    return NOT_FOUND[:-1] if tftp_request(data) else None


# -- serving ----------------------------------------------------------------------

Answer = Callable[[bytes], bytes | None]
SERVERS: dict[str, tuple[int, Answer, Answer]] = {
    "iax2": (4569, iax2_answer, iax2_hostile),
    "ubiquiti": (10001, ubiquiti_answer, ubiquiti_hostile),
    "wdb": (17185, wdb_answer, wdb_hostile),
    "tftp": (69, tftp_answer, tftp_answer),
}
#: NSE's tftp-version closes its socket, then starts listening (pcap, or a new socket
#: on the same port): an answer quicker than that is lost to Nmap. A server across a
#: network answers later than that; so does this one
TRANSFER_DELAY = 0.4
#: answered from a new socket (a TFTP transfer id), not the listening one
FROM_NEW_PORT: dict[str, tuple[Answer, Answer]] = {
    "tftp": (tftp_transfer, tftp_transfer_hostile),
}


def serve_udp(
    port: int, answer: Answer, address: str = "127.0.0.1", new_port: Answer | None = None
) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind((address, port))

    def loop() -> None:
        while True:
            data, peer = sock.recvfrom(65535)
            try:
                reply = answer(data)
                transfer = new_port(data) if new_port is not None else None
            except Exception:  # a lookalike never dies of an odd datagram
                reply = transfer = None
            if reply is not None:
                sock.sendto(reply, peer)
            if transfer is not None:
                threading.Timer(TRANSFER_DELAY, send_from_new_port, (transfer, peer)).start()

    def send_from_new_port(datagram: bytes, peer: tuple[str, int]) -> None:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as fresh:
            fresh.bind((address, 0))
            fresh.sendto(datagram, peer)

    threading.Thread(target=loop, daemon=True).start()
    return int(sock.getsockname()[1])


def main(argv: list[str]) -> None:
    hostile = "--hostile" in argv
    ports = {}
    for case, (port, answer, bad) in SERVERS.items():
        good_new, bad_new = FROM_NEW_PORT.get(case, (None, None))
        ports[case] = serve_udp(
            port, bad if hostile else answer, new_port=bad_new if hostile else good_new
        )
    print(json.dumps(ports), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main(sys.argv[1:])
