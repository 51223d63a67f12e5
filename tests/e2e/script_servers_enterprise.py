"""Lookalike servers for the enterprise-middleware script end-to-end test (a child process).

``python -m tests.e2e.script_servers_enterprise`` (inside the test's network namespace)
starts the servers on their standard ports, prints one JSON line ``{"case": port, ...}``
and serves until its stdin closes. Every TCP server is silent while the client is
(so the NULL probe ends without data, never ``tcpwrapped``) and hangs up on anything
that is not its protocol. Written from the protocols' published layouts:

* ``oracle`` (1521): a TNS REFUSE (type 4) to a CONNECT carrying
  ``(CONNECT_DATA=(COMMAND=version))``: ``(DESCRIPTION=(TMP=)(VSNNUM=318767104)(ERR=1189)...``
  (19.0.0.0.0, unauthorized), which a probe matches without a version;
* ``oracle-soft`` (1522): the same with ``VSNNUM=185599488`` and ``ERR=12514``: only
  the oracle-tns softmatch applies, so the script reads the answer back from the
  service fingerprint;
* ``weblogic`` (7001): a T3 ``HELO:12.2.1.3.0.false`` to a ``t3`` handshake;
  ``weblogic-vers`` (7002): ``VERS:Incompatible versions - this server:10.3.6.0``;
* ``db2-das`` (523/tcp) and ``db2-das-udp`` (523/udp): DB2 Administration Server
  packets (``\\0\\0\\0\\0DB2DAS``, 41-byte header, little-endian length); the
  profile export (the second request of magic 6) answered with a profile; over UDP
  also ``DB2RETADDR`` to ``DB2GETADDR``;
* ``drda`` (50000): an EXCSATRD in EBCDIC (DB2/LINUXX8664, SQL11055);
* ``maxdb`` (7210): MaxDB packets (little-endian length first): the connect,
  ``dbm_version`` and ``db_enum`` answers with ``OK``;
* hostile variants: ``oracle-huge-vsnnum`` (1523: a VSNNUM over 2^63, which NSE's Lua
  cannot shift), ``weblogic-echo`` (7003: ``HELO:12.1.2.false``, no version),
  ``drda-no-excsatrd`` (60000: an ACCSECRD instead), ``drda-short-parameter`` (1527: a
  parameter length under its own 4-byte header), ``drda-negative-length`` (1526: a DDM
  header saying 5 bytes);
* ``ndmp`` (10000): NDMPv4 NOTIFY_CONNECTION_STATUS on connect, then host info and
  server info replies (vendor ``VERITAS Software, Corp.``).
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from collections.abc import Callable

from tests.e2e.script_servers_brokers_vpn import serve_tcp, serve_udp


class Stream:
    """Reads a client's messages. A message arrives in one go: once part of one is in,
    half a second without the rest ends the connection (a scanner's probe that is not
    this protocol then ends at once instead of waiting out its wait); between messages
    the client may be silent as long as it likes."""

    def __init__(self, conn: socket.socket) -> None:
        self.conn, self.buffer = conn, b""

    def read(self, count: int) -> bytes | None:
        while len(self.buffer) < count:
            self.conn.settimeout(0.5 if self.buffer else 30)
            try:
                chunk = self.conn.recv(65536)
            except TimeoutError:
                return None
            if not chunk:
                return None
            self.buffer += chunk
        data, self.buffer = self.buffer[:count], self.buffer[count:]
        return data


# -- Oracle TNS ----------------------------------------------------------------


def tns_refuse(text: bytes) -> bytes:
    body = b"\x22\x00" + struct.pack(">H", len(text)) + text
    return struct.pack(">HHBBH", 8 + len(body), 0, 4, 0, 0) + body


def tns(vsnnum: int, err: int) -> Callable[[socket.socket], None]:
    text = (
        f"(DESCRIPTION=(TMP=)(VSNNUM={vsnnum})(ERR={err})"
        f"(ERROR_STACK=(ERROR=(CODE={err})(EMFI=4))))"
    ).encode()

    def handler(conn: socket.socket) -> None:
        data = conn.recv(4096)
        if len(data) > 8 and data[4] == 1 and b"(CONNECT_DATA=(COMMAND=version))" in data:
            conn.sendall(tns_refuse(text))
            conn.recv(4096)

    return handler


# -- WebLogic T3 ---------------------------------------------------------------


def t3(answer: bytes) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        data = conn.recv(4096)
        if data.startswith(b"t3 "):
            conn.sendall(answer)
            conn.recv(4096)

    return handler


# -- DB2 DAS -------------------------------------------------------------------

DAS_MAGIC = b"\x00\x00\x00\x00DB2DAS"
DB2_PROFILE = (
    b";DB2 Server Database Access Profile\r\n;Use BINARY file transfer\r\n\r\n"
    b"[File_Description]\r\nApplication=DB2/LINUXX8664 9.7.0\r\nPlatform=18\r\n"
    b"DB2System=DBHOST\r\nServerType=DB2LINUX\r\n\r\n[inst>db2inst1]\r\nNodeType=1\r\n"
    b"DB2Comm=TCPIP\r\nHostName=dbhost\r\nPortNumber=50000\r\nQuietMode=No\r\n"
)


def das_header(magic: int, data_len: int) -> bytes:
    return (
        DAS_MAGIC
        + b"      \x01\x04\x00\x00\x00\x10\x39\x7a\x00\x05"
        + b"\x00" * 10
        + struct.pack("<BH", magic, data_len)
        + b"\x00\x00"
    )


def das_reply(request: bytes) -> bytes | None:
    """The answer to one DAS request (None: stay silent)."""
    if len(request) < 41 or not request.startswith(DAS_MAGIC):
        return None
    magic = request[36]
    data = request[41:]
    if magic == 0x01:  # nmap's ibm-db2-das probe: the level answer its match wants
        body = (
            b"\x00\x00\x00\x9b\x00\x00\x00\x0c\x00\x00\x00Z\x00\x00\x00\x10\x00\x00\x00\x0c"
            b"\x00\x00\x00L\x00\x00\x00\x00\x00\x00\x00$\x00\x00\x00\x0c\x00\x00\x00O"
            + b"\x00" * 24
            + b"\x00\x00\x00\x10\x00\x00\x00\x0c\x00\x00\x00L\x00\x00\x00\x00"
            + b"\x00\x00\x00\x19\x00\x00\x00\x0c\x00\x00\x00\x04\x00\x00\x04\xb8SQL09070\x00"
        )
        return das_header(0x01, len(body)) + body
    if magic == 0x06 and data.startswith(b"\x00\x00\x00\x0d"):
        return None  # the first of the export pair is answered with the second
    if magic == 0x06:
        info = b"\x00" * 36 + DB2_PROFILE + b"\x00"
        body = b"\x00" * 96 + b"SQL09070\x00"
        body += b"\x00" * (157 - len(body)) + struct.pack(">H", len(info) + 4) + info
        return das_header(0x06, len(body)) + body
    body = b"\x00\x00\x00\x0c\x00\x00\x00\x0c\x00\x00\x00\x4c\x00\x00\x00\x00"
    return das_header(magic, len(body)) + body


def das_tcp(conn: socket.socket) -> None:
    stream = Stream(conn)
    while True:
        header = stream.read(41)
        if header is None or not header.startswith(DAS_MAGIC):
            return
        (length,) = struct.unpack_from("<H", header, 37)
        data = stream.read(length) if length else b""
        if data is None:
            return
        reply = das_reply(header + data)
        if reply is not None:
            conn.sendall(reply)


def das_udp(request: bytes) -> bytes | None:
    if request.startswith(b"DB2GETADDR\x00"):
        return b"DB2RETADDR\x00SQL09070\x00dbhost\x00"
    return das_reply(request)


# -- DRDA ----------------------------------------------------------------------


def ebcdic(text: str) -> bytes:
    """EBCDIC code page 37 (what DB2 on z and the DRDA examples use)."""
    return text.encode("cp037")


def drda_param(codepoint: int, value: bytes) -> bytes:
    return struct.pack(">HH", len(value) + 4, codepoint) + value


def excsatrd() -> bytes:
    params = (
        drda_param(0x115E, ebcdic("db2inst1db2agent00002B430"))
        + drda_param(0x1404, bytes.fromhex("14030007240700082474000514400009"))
        + drda_param(0x1147, ebcdic("DB2/LINUXX8664"))
        + drda_param(0x116D, ebcdic("db2inst1"))
        + drda_param(0x115A, ebcdic("SQL11055"))
    )
    return struct.pack(">HBBHHH", 10 + len(params), 0xD0, 0x02, 1, 4 + len(params), 0x1443) + params


def drda(answer: bytes) -> Callable[[socket.socket], None]:
    def handler(conn: socket.socket) -> None:
        stream = Stream(conn)
        header = stream.read(10)
        if header is None or header[2] != 0xD0 or header[8:10] != b"\x10\x41":
            return
        (length,) = struct.unpack_from(">H", header)
        if length < 10 or stream.read(length - 10) is None:
            return
        conn.sendall(answer)
        conn.recv(4096)

    return handler


#: hostile DRDA answers: a reply without EXCSATRD (ACCSECRD's code point), and an
#: EXCSATRD whose first parameter says it is 2 bytes long (under its own header)
DRDA_NO_EXCSATRD = struct.pack(">HBBHHH", 14, 0xD0, 0x02, 1, 8, 0x14AC) + b"\x00\x04\x11\xa2"
DRDA_NEGATIVE_LENGTH = struct.pack(">HBBHHH", 5, 0xD0, 0x02, 1, 0, 0x1443)
DRDA_SHORT_PARAMETER = struct.pack(">HBBHHH", 14, 0xD0, 0x02, 1, 8, 0x1443) + b"\x00\x02\x11\x47"


# -- MaxDB ---------------------------------------------------------------------

MAXDB_VERSION = (
    "VERSION    = 7.9.10\nBUILD      = DBMServer 7.9.10   Build 004-123-265-969\n"
    "OS         = UNIX\nINSTROOT   = /opt/sdb/MaxDB\nLOGON      = True\nCODE       = UTF8\n"
    "SWAP       = 2\nUNICODE    = YES\nINSTANCE   = (unknown)\nSYSNAME    = Linux\n"
    "MASKING    = YES\nREPLYTREATMENT = none,zip,lzop\n"
)
MAXDB_DATABASES = (
    "MAXDB\t/opt/sdb/MaxDB\t7.9.10.04\tfast\trunning\n"
    "MAXDB\t/opt/sdb/MaxDB\t7.9.10.04\tquick\toffline\n"
)


def maxdb_packet(request: bytes, text: str) -> bytes:
    body = request[4:24] + b"OK\n" + text.encode()
    return struct.pack("<I", 4 + len(body)) + body


def maxdb(conn: socket.socket) -> None:
    stream = Stream(conn)
    while True:
        head = stream.read(4)
        if head is None:
            return
        (length,) = struct.unpack("<I", head)
        if not 24 <= length <= 1024:
            return
        rest = stream.read(length - 4)
        if rest is None:
            return
        request = head + rest
        if b"pdbmsrv" in request:
            conn.sendall(maxdb_packet(request, ""))
        elif b"dbm_version" in request:
            conn.sendall(maxdb_packet(request, MAXDB_VERSION))
        elif b"db_enum" in request:
            conn.sendall(maxdb_packet(request, MAXDB_DATABASES))
        else:
            return


# -- NDMP ----------------------------------------------------------------------


def xdr(text: str) -> bytes:
    raw = text.encode()
    return struct.pack(">I", len(raw)) + raw + b"\x00" * (-len(raw) % 4)


def ndmp_message(seq: int, message: int, reply_seq: int, body: bytes, kind: int = 1) -> bytes:
    header = struct.pack(">IIIIII", seq, 0x5F000000, kind, message, reply_seq, 0)
    return struct.pack(">I", 0x80000000 | (24 + len(body))) + header + body


def ndmp(conn: socket.socket) -> None:
    # NOTIFY_CONNECTION_STATUS: reason 0, protocol version 4, no text
    conn.sendall(ndmp_message(1, 0x502, 0, struct.pack(">II", 0, 4) + xdr(""), kind=0))
    seq = 1
    stream = Stream(conn)
    while True:
        fragment = stream.read(28)
        if fragment is None or not fragment[0] & 0x80:
            return
        request_seq, _time, _kind, message = struct.unpack_from(">IIII", fragment, 4)
        seq += 1
        if message == 0x100:
            body = (
                b"\x00" * 4
                + xdr("backup01")
                + xdr("Linux")
                + xdr(
                    "Major Version=5 Minor Version=2 Build Number=3790 "
                    "ServicePack Major=2 ServicePack Minor=0"
                )
                + xdr("0a1b2c3d")
            )
        elif message == 0x108:
            body = b"\x00" * 4 + xdr("VERITAS Software, Corp.") + xdr("Remote Agent") + xdr("5.0")
        else:
            return
        conn.sendall(ndmp_message(seq, message, request_seq, body))


# -- a Java class for the JDWP target ------------------------------------------


def idle_class(name: str = "Idle") -> bytes:
    """A class file (Java 8 format) whose ``main`` joins its own thread: the JVM
    idles forever, so its JDWP agent is the target (no compiler needed, a JRE runs it)."""

    def utf8(text: str) -> bytes:
        raw = text.encode()
        return b"\x01" + struct.pack(">H", len(raw)) + raw

    pool = [
        utf8(name),  # 1
        b"\x07\x00\x01",  # 2 class Idle
        utf8("java/lang/Object"),  # 3
        b"\x07\x00\x03",  # 4 class Object
        utf8("main"),  # 5
        utf8("([Ljava/lang/String;)V"),  # 6
        utf8("Code"),  # 7
        utf8("java/lang/Thread"),  # 8
        b"\x07\x00\x08",  # 9 class Thread
        utf8("currentThread"),  # 10
        utf8("()Ljava/lang/Thread;"),  # 11
        b"\x0c\x00\x0a\x00\x0b",  # 12 name and type
        b"\x0a\x00\x09\x00\x0c",  # 13 Thread.currentThread
        utf8("join"),  # 14
        utf8("()V"),  # 15
        b"\x0c\x00\x0e\x00\x0f",  # 16 name and type
        b"\x0a\x00\x09\x00\x10",  # 17 Thread.join
    ]
    code = b"\xb8\x00\x0d\xb6\x00\x11\xb1"  # invokestatic, invokevirtual, return
    code_attr = struct.pack(">HHI", 1, 1, len(code)) + code + struct.pack(">HH", 0, 0)
    method = struct.pack(">HHHH", 0x0009, 5, 6, 1) + struct.pack(">HI", 7, len(code_attr))
    return (
        struct.pack(">IHHH", 0xCAFEBABE, 0, 52, len(pool) + 1)
        + b"".join(pool)
        + struct.pack(">HHHHHH", 0x0021, 2, 4, 0, 0, 1)
        + method
        + code_attr
        + struct.pack(">H", 0)
    )


def main() -> None:
    ports = {
        "oracle": serve_tcp(1521, tns(318767104, 1189)),
        "oracle-soft": serve_tcp(1522, tns(185599488, 12514)),
        "weblogic": serve_tcp(7001, t3(b"HELO:12.2.1.3.0.false\nAS:2048\nHL:19\nMS:10000000\n\n")),
        "weblogic-vers": serve_tcp(
            7002, t3(b"VERS:Incompatible versions - this server:10.3.6.0\n\n")
        ),
        "db2-das": serve_tcp(523, das_tcp),
        "drda": serve_tcp(50000, drda(excsatrd())),
        # hostile variants
        "oracle-huge-vsnnum": serve_tcp(1523, tns(10**20, 1189)),
        "weblogic-echo": serve_tcp(7003, t3(b"HELO:12.1.2.false\nAS:2048\nHL:19\n\n")),
        "drda-no-excsatrd": serve_tcp(60000, drda(DRDA_NO_EXCSATRD)),
        "drda-short-parameter": serve_tcp(1527, drda(DRDA_SHORT_PARAMETER)),
        "drda-negative-length": serve_tcp(1526, drda(DRDA_NEGATIVE_LENGTH)),
        "maxdb": serve_tcp(7210, maxdb),
        "ndmp": serve_tcp(10000, ndmp),
        "db2-das-udp": serve_udp(523, das_udp),
    }
    print(json.dumps(ports), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    threading.current_thread().name = "script-servers-enterprise"
    main()
