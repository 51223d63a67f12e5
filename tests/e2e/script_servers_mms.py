"""Lookalike IEC 61850 MMS servers for the iec61850-mms oracle test.

``python -m tests.e2e.script_servers_mms`` (inside the test's network namespace)
starts one server per case on port 102 of its own loopback address
(127.0.0.2, 127.0.0.3, ...), prints one JSON line ``{"case": "address", ...}``
and serves until its stdin closes. Written from the published layouts (RFC 1006
TPKT, ISO 8073 COTP, ISO 8327 session, ISO 8823 presentation, ISO 9506 MMS):
a COTP Connection Confirm, an Accept SPDU for the Initiate request, and an MMS
Identify answer, varied per case:

* ``identify``: vendor ``ACME Grid``, model ``IED-7``, revision ``2.4.1``;
* ``segmented``: the same answer split over two COTP data TPDUs (EOT on the last);
* ``empty``: an empty vendor name;
* ``oversized``: a vendor name of 60000 bytes (long-form lengths);
* ``not-mms``: the Identify answered by a session PDU with no presentation data;
* ``truncated``: the answer cut inside the MMS PDU (the TPKT length says more);
* ``silent``: the Connection Confirm, then nothing.

A server hangs up on a client silent for 3.5 s.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading

SILENT_CLIENT = 3.5
CASES = ("identify", "segmented", "empty", "oversized", "not-mms", "truncated", "silent")

CONNECT_CONFIRM = bytes.fromhex("0300001611d00001000100c1020000c2020001c0010a")
#: COTP data TPDU header, last unit (EOT) or not
DT_LAST = b"\x02\xf0\x80"
DT_MORE = b"\x02\xf0\x00"
#: ISO 8327: Give Tokens (empty) then Data Transfer (empty parameters)
SESSION_DATA = b"\x01\x00\x01\x00"


def ber_length(size: int) -> bytes:
    if size < 0x80:
        return bytes([size])
    raw = size.to_bytes((size.bit_length() + 7) // 8, "big")
    return bytes([0x80 | len(raw)]) + raw


def tlv(tag: int, value: bytes) -> bytes:
    return bytes([tag]) + ber_length(len(value)) + value


def tpkt(payload: bytes) -> bytes:
    return struct.pack(">BBH", 3, 0, len(payload) + 4) + payload


def presentation(mms: bytes) -> bytes:
    """Session data carrying fully-encoded presentation data (context 3) around ``mms``."""
    return SESSION_DATA + tlv(0x61, tlv(0x30, tlv(0x02, b"\x03") + tlv(0xA0, mms)))


def identify_pdu(vendor: bytes, model: bytes, revision: bytes, invoke_id: int = 1) -> bytes:
    """A confirmed-ResponsePDU holding an Identify-Response."""
    body = tlv(0x80, vendor) + tlv(0x81, model) + tlv(0x82, revision)
    return tlv(0xA1, tlv(0x02, bytes([invoke_id])) + tlv(0xA2, body))


def identify_answer(vendor: bytes = b"ACME Grid", model: bytes = b"IED-7",
                    revision: bytes = b"2.4.1") -> bytes:  # fmt: skip
    return tpkt(DT_LAST + presentation(identify_pdu(vendor, model, revision)))


def accept_answer() -> bytes:
    """An Accept SPDU (ISO 8327 AC) whose user data is a presentation CPA with an MMS
    Initiate-ResponsePDU (max PDU size 65000, 5 outstanding, nesting 10, version 1)."""
    initiate = tlv(0xA9, tlv(0x80, b"\x00\xfd\xe8") + tlv(0x81, b"\x05") + tlv(0x82, b"\x05")
                   + tlv(0x83, b"\x0a") + tlv(0xA4, tlv(0x80, b"\x01")))  # fmt: skip
    cpa = tlv(0x31, tlv(0xA0, tlv(0x80, b"\x00\x01")) + tlv(0x61, tlv(0x30, tlv(0x02, b"\x03")
              + tlv(0xA0, initiate))))  # fmt: skip
    return tpkt(DT_LAST + b"\x0e" + ber_length(len(cpa) + 2) + tlv(0xC1, cpa))


def case_answer(case: str) -> bytes | None:
    """The answer to the Identify request in ``case`` (None: none)."""
    if case == "identify":
        return identify_answer()
    if case == "segmented":
        payload = presentation(identify_pdu(b"ACME Grid", b"IED-7", b"2.4.1"))
        return tpkt(DT_MORE + payload[:20]) + tpkt(DT_LAST + payload[20:])
    if case == "empty":
        return identify_answer(vendor=b"")
    if case == "oversized":
        return identify_answer(vendor=b"V" * 60000)
    if case == "not-mms":
        return tpkt(DT_LAST + b"\x01\x00\x01\x00\x62\x00")
    if case == "truncated":
        whole = identify_answer()
        return whole[:30]
    return None


def _serve(conn: socket.socket, case: str) -> None:
    conn.settimeout(SILENT_CLIENT)
    count = 0
    try:
        while True:
            data = conn.recv(65536)
            if not data:
                return
            count += 1
            if count == 1 and data[5:6] == b"\xe0":
                conn.sendall(CONNECT_CONFIRM)
            elif count == 2 and case != "silent":
                conn.sendall(accept_answer())
            elif count == 3:
                answer = case_answer(case)
                if answer is not None:
                    conn.sendall(answer)
    except OSError:
        pass
    finally:
        conn.close()


def _listen(address: str, case: str) -> None:
    server = socket.socket()
    server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    server.bind((address, 102))
    server.listen(16)

    def accept() -> None:
        while True:
            conn, _ = server.accept()
            threading.Thread(target=_serve, args=(conn, case), daemon=True).start()

    threading.Thread(target=accept, daemon=True).start()


def main() -> None:
    addresses = {case: f"127.0.0.{i + 2}" for i, case in enumerate(CASES)}
    for case, address in addresses.items():
        _listen(address, case)
    print(json.dumps(addresses), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
