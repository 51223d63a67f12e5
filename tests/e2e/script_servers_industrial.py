"""Lookalike industrial devices for the industrial version scripts' end-to-end test.

``python -m tests.e2e.script_servers_industrial`` (inside the test's network
namespace) starts the servers on their standard ports, prints one JSON line
``{"case": port, ...}`` and serves until its stdin closes. Written from the
protocols' published layouts (ISO 8073/RFC 1006, S7comm, CIP/EtherNet/IP,
BACnet/IP Annex J, Niagara Fox, FINS):

* ``s7`` (102/tcp): COTP Connection Confirm for a request to TSAP 0x0102 or
  0x0200, an S7comm Setup Communication ack, SZL 0x0011 (module
  ``6ES7 315-2EH14-0AB0``, version 3.2.6) and SZL 0x001c answers (serial
  number and plant identification empty: NSE's removal quirk keeps the second).
* ``enip`` (44818/tcp and udp): a List Identity answer (Rockwell, a PLC).
* ``bacnet`` (47808/tcp and udp): ReadProperty Complex-ACKs for the device
  object; the description is refused (an Error PDU); the location is UCS-2.
* ``fox`` (1911/tcp): a Niagara station's Fox hello answer.
* ``omron`` (9600/tcp and udp): FINS node address and Controller Data Read
  answers (a CJ2M CPU).

TCP servers hang up on a client silent for 3.5 s (past Nmap's 3 s tcpwrapped
bound, before its 6 s NULL-probe wait ends) and on any request not of their
protocol, so neither scanner waits on them. UDP servers answer anything not of
their protocol with a DTLS fatal alert, which Nmap's first UDP probe (RPCCheck)
takes for ``dtls`` (7.93 a soft match, 7.95 a hard one): without an early match
Nmap's UDP service scan waits 5 s on each of 19 probes. The scripts then name
the port. The UDP sockets do not set SO_REUSEADDR, so the source port 47808
bacnet-info asks for cannot be taken from them.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from collections.abc import Callable

SILENT_CLIENT = 3.5
DTLS_ALERT = b"\x15\xfe\xfd" + b"\x00" * 8 + b"\x00\x02\x02\x28" + b"\x00" * 5


# --- S7 (TPKT + COTP + S7comm) ---------------------------------------------------------


def _place(size: int, fields: dict[int, bytes], head: bytes) -> bytes:
    """``size`` bytes: ``head`` first, then each field at its 1-based offset."""
    out = bytearray(size)
    out[: len(head)] = head
    for at, raw in fields.items():
        out[at - 1 : at - 1 + len(raw)] = raw
    return bytes(out)


def s7_connect_confirm() -> bytes:
    return bytes.fromhex("0300001611d00001000500c1020100c2020102c0010a")


def s7_setup_ack() -> bytes:
    return bytes.fromhex("0300001b02f080320300000000000800000000f0000001000100f0")


def _szl_head(size: int, szl_id: int) -> bytes:
    # TPKT, COTP DT, S7 userdata response header and parameters, SZL data header
    return (
        struct.pack(">BBH", 3, 0, size)
        + bytes.fromhex("02f080320700000000000c00")
        + struct.pack(">H", size - 29)
        + bytes.fromhex("000112081284010100000000ff09")
        + struct.pack(">H", size - 33)
        + struct.pack(">HH", szl_id, 0x0001)
    )


def s7_szl_0011() -> bytes:
    size = 153
    return _place(
        size,
        {44: b"6ES7 315-2EH14-0AB0\x00", 72: b"6ES7 315-2EH14-0AB0\x00", 123: bytes([3, 2, 6])},
        _szl_head(size, 0x0011),
    )


def s7_szl_001c() -> bytes:
    size = 214
    # byte 31 is not 0x1c: the strings sit 4 bytes further (as on most PLCs)
    return _place(
        size,
        {44: b"SIMATIC 300(Line 4)\x00", 78: b"CPU 315-2 PN/DP\x00", 180: b"\x00",
         112: b"\x00", 146: b"Original Siemens Equipment\x00"},
        _szl_head(size, 0x001C)[:30] + b"\x00",
    )  # fmt: skip


def s7(conn: socket.socket) -> None:
    buffer = b""
    while True:
        while len(buffer) < 4 or len(buffer) < struct.unpack(">H", buffer[2:4])[0]:
            if buffer[:2] not in (b"", b"\x03", b"\x03\x00"):
                return  # not TPKT
            chunk = conn.recv(4096)
            if not chunk:
                return
            buffer += chunk
        size = struct.unpack(">H", buffer[2:4])[0]
        frame, buffer = buffer[:size], buffer[size:]
        if frame[5] == 0xE0 and b"\xc2\x02" in frame[7:]:
            conn.sendall(s7_connect_confirm())
        elif frame[7:8] == b"\x32" and frame[8] == 0x01:
            conn.sendall(s7_setup_ack())
        elif frame[7:8] == b"\x32" and frame[8] == 0x07 and len(frame) >= 33:
            szl = struct.unpack(">H", frame[29:31])[0]
            conn.sendall(s7_szl_0011() if szl == 0x0011 else s7_szl_001c())
        else:
            return


# --- EtherNet/IP -----------------------------------------------------------------------


def enip_identity(request: bytes) -> bytes | None:
    if len(request) < 24 or request[0] != 0x63 or request[1] != 0:
        return None
    name = b"1756-L61/B LOGIX5561"
    item = (
        struct.pack("<H", 1)  # encapsulation protocol version
        + struct.pack(">HH4s8x", 2, 44818, bytes([192, 168, 1, 50]))
        + struct.pack("<HHHBBHI", 1, 14, 89, 20, 11, 0x0060, 0x00C0FFEE)
        + bytes([len(name)]) + name + b"\x03"
    )  # fmt: skip
    data = struct.pack("<HHH", 1, 0x0C, len(item)) + item
    return struct.pack("<HHII8sI", 0x63, len(data), 0, 0, request[12:20], 0) + data


def enip_tcp(conn: socket.socket) -> None:
    while True:
        request = conn.recv(4096)
        answer = enip_identity(request) if request else None
        if answer is None:
            return
        conn.sendall(answer)


# --- BACnet/IP -------------------------------------------------------------------------

INSTANCE = 260001


def _character_string(text: str, charset: int = 0) -> bytes:
    raw = text.encode("utf-16-be") if charset == 4 else text.encode()
    length = len(raw) + 1
    tag = bytes([0x70 | length]) if length < 5 else bytes([0x75, length])
    return tag + bytes([charset]) + raw


BACNET_VALUES = {
    0x4B: b"\xc4" + struct.pack(">I", (8 << 22) | INSTANCE),  # object identifier
    0x78: b"\x22" + struct.pack(">H", 260),  # vendor identifier
    0x79: _character_string("BACnet Stack at SourceForge"),
    0x2C: _character_string("0.8.6"),
    0x0C: _character_string("1.0"),
    0x4D: _character_string("SimpleServer"),
    0x46: _character_string("GNU"),
    0x3A: _character_string("Zürich", charset=4),
}


def bacnet_answer(request: bytes) -> bytes | None:
    if len(request) < 17 or request[:2] != b"\x81\x0a" or request[6] != 0 or request[9] != 0x0C:
        return None
    property_id, invoke = request[16], request[8]
    value = BACNET_VALUES.get(property_id)
    if value is None:  # an Error PDU: unknown property
        apdu = bytes([0x50, invoke, 0x0C, 0x91, 0x02, 0x91, 0x20])
    else:
        apdu = (
            bytes([0x30, invoke, 0x0C, 0x0C])
            + struct.pack(">I", (8 << 22) | INSTANCE)
            + bytes([0x19, property_id, 0x3E])
            + value
            + b"\x3f"
        )
    npdu = b"\x01\x00" + apdu
    return struct.pack(">BBH", 0x81, 0x0A, 4 + len(npdu)) + npdu


def bacnet_tcp(conn: socket.socket) -> None:
    while True:
        request = conn.recv(4096)
        answer = bacnet_answer(request) if request else None
        if answer is None:
            return
        conn.sendall(answer)


# --- Niagara Fox -----------------------------------------------------------------------

FOX_HELLO = (
    b"fox a 0 -1 fox hello\n{\nfox.version=s:1.0.1\nid=i:171\nhostName=s:bas-jace-01\n"
    b"hostAddress=s:192.168.1.20\napp.name=s:Station\napp.version=s:3.8.311\n"
    b"vm.name=s:Java HotSpot(TM) Embedded Client VM\nvm.version=s:25.141-b06\n"
    b"os.name=s:QNX\nos.arch=s:ppc\nos.version=s:6.5.0\nstation.name=s:Plant_A\nlang=s:en\n"
    b"timeZone=s:America/New_York;-18000000;3600000;02:00:00.000,wall,march,8\n"
    b"hostId=s:Qnx-JACE-1A2B-3C4D-5E6F-7A8B\nvmUuid=s:8b1c7f2e-3d4a-4b5c-9d6e-7f8091a2b3c4\n"
    b'brandId=s:vykon\nsysInfo=o:bog 61[<bog version="1.0"/>]\n};;\n'
)


def fox(conn: socket.socket) -> None:
    prefix, data = b"fox a 1 -1 fox hello", b""
    while b"};;\n" not in data:
        chunk = conn.recv(4096)
        if not chunk:
            return
        data += chunk
        if data[: len(prefix)] != prefix[: len(data)]:
            return
    conn.sendall(FOX_HELLO)
    conn.recv(4096)


# --- Omron FINS ------------------------------------------------------------------------


def fins_controller_data(request_header: bytes) -> bytes:
    """A FINS Controller Data Read response frame (header, 05 01, code 0, the data)."""
    header = bytes([0xC0, 0x00, 0x02]) + request_header[6:9] + request_header[3:6]
    header += request_header[9:10]
    data = (
        b"CJ2M-CPU31".ljust(20, b"\x00") + b"02.01".ljust(20, b"\x00") + b"\x00" * 40
        + struct.pack(">HBHBBHBH", 20, 0x17, 32768, 8, 0, 12, 0, 0)
    )  # fmt: skip
    return header + b"\x05\x01\x00\x00" + data


def omron_udp(request: bytes) -> bytes | None:
    if len(request) < 12 or request[0] != 0x80 or request[10:12] != b"\x05\x01":
        return None
    return fins_controller_data(request)


def omron_tcp(conn: socket.socket) -> None:
    while True:
        request = conn.recv(4096)
        if len(request) < 16 or request[:4] != b"FINS":
            return
        command = struct.unpack(">I", request[8:12])[0]
        if command == 0:  # node address data send: client 0x22, server 0x01
            conn.sendall(b"FINS" + struct.pack(">IIIII", 16, 1, 0, 0x22, 0x01))
        elif command == 2 and request[26:28] == b"\x05\x01":
            frame = fins_controller_data(request[16:26])
            conn.sendall(b"FINS" + struct.pack(">III", 8 + len(frame), 2, 0) + frame)
        else:
            return


# --- serving ---------------------------------------------------------------------------


def serve_tcp(port: int, handler: Callable[[socket.socket], None]) -> int:
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)

    def guarded(conn: socket.socket) -> None:
        try:
            conn.settimeout(SILENT_CLIENT)
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
    return port


def serve_udp(port: int, answer: Callable[[bytes], bytes | None]) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))

    def loop() -> None:
        while True:
            data, peer = sock.recvfrom(65535)
            reply = answer(data)
            sock.sendto(DTLS_ALERT if reply is None else reply, peer)

    threading.Thread(target=loop, daemon=True).start()
    return port


TCP = {"s7": (102, s7), "enip": (44818, enip_tcp), "bacnet": (47808, bacnet_tcp),
       "fox": (1911, fox), "omron": (9600, omron_tcp)}  # fmt: skip
UDP = {"enip": (44818, enip_identity), "bacnet": (47808, bacnet_answer),
       "omron": (9600, omron_udp)}  # fmt: skip


def main() -> None:
    ports = {f"{case}-tcp": serve_tcp(port, handler) for case, (port, handler) in TCP.items()}
    ports.update({f"{case}-udp": serve_udp(port, answer) for case, (port, answer) in UDP.items()})
    print(json.dumps(ports), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
