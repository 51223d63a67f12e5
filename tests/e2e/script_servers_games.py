"""Lookalike game servers for the games version-script end-to-end test (a child process).

``python -m tests.e2e.script_servers_games`` (inside the test's network namespace)
starts the servers on their standard ports, prints one JSON line ``{"case": port,
...}`` and serves until its stdin closes. Each answers only the requests its
protocol knows (the script's, and the probe file's probe where that is the same
request), so nmap's other probes meet silence; every value is fixed (no clock, no
randomness), so no output needs masking.

* ``quake1`` (26000/udp): NetQuake control packets: server info (4 players), and
  per player: a full entry, one with an invalid shirt colour, one with a wrong
  length field, one whose address string is unterminated (Lua 5.3 and 5.4 differ).
* ``quake3`` (27960/udp): ``getstatus`` (with or without the newline) → an
  OpenArena-like statusResponse with four players (one with a space in its name);
  ``quake3-short`` (27961/udp): a version option of two words (the script dies).
* ``ase`` (27138/udp): ``s`` → an All-Seeing Eye ``EYE1`` answer (settings, players), its
  strings laid out as the script reads them (Lua's ``s1``: the length byte alone);
  ``ase-counted`` (27244/udp): the same with the length bytes counting themselves, as
  All-Seeing Eye servers send them (the probe file's pattern says so): the script
  misreads it and dies (``ERROR: Script execution failed``), the probe's match stays.
* ``freelancer`` (2302/udp): the status query → a status answer (UTF-16 name).
* ``teamspeak2`` (8767/udp): the login request → a login reply (2.0.23.19, Win32).
* ``ventrilo`` (3784/udp): any status request → the status text in two packets, out
  of order, encrypted with the published algorithm and the tables of the installed
  ``ventrilo-info.nse`` (parsed at run time); ``ventrilo-tcp`` (3784/tcp) accepts and
  closes at once (tcpwrapped: the script runs on it and queries the UDP port).

Hostile variants of each (truncated, oversized, lying lengths, garbage) are fake peers
in ``tests/test_scripts_games.py``.
"""

from __future__ import annotations

import json
import socket
import struct
import sys
import threading
from collections.abc import Callable

from vscand.scripts.builtin.ventrilo_crypt import Tables, decode_header, load_tables

# -- Quake 1 --------------------------------------------------------------------------

QUAKE1_SERVER_REQUEST = b"\x80\x00\x00\x0c\x02QUAKE\x00\x03"


def _control(body: bytes) -> bytes:
    return struct.pack(">HH", 0x8000, 4 + len(body)) + body


def quake1_server_info(players: int = 4) -> bytes:
    body = (b"\x83" + b"127.0.0.1:26000\x00" + b"Lookalike Quake\x00" + b"e1m1\x00"
            + bytes([players, 8, 3]))  # fmt: skip
    return _control(body)


def quake1_player(number: int) -> bytes:
    """The reply for player ``number`` (0-based, as on the wire)."""
    if number == 0:
        body = (b"\x84\x00fragmeister\x00\x36\x00\x00\x00" + struct.pack("<iI", -1, 55587)
                + b"192.0.2.10:40430\x00")  # fmt: skip
        return _control(body)
    if number == 1:
        body = b"\x84\x01bot\x00\xe1\x00\x00\x00" + struct.pack("<iI", 12, 3) + b"local\x00"
        return _control(body)
    if number == 2:
        return struct.pack(">HH", 0x8000, 99) + b"\x84\x02x\x00"
    # unterminated address: Lua 5.3 reads to the end, Lua 5.4 refuses
    return _control(b"\x84\x03cut\x00\x11\x00\x00\x00" + struct.pack("<iI", 0, 1) + b"10.0.0")


def quake1_answer(data: bytes) -> bytes | None:
    if data == QUAKE1_SERVER_REQUEST:
        return quake1_server_info()
    if len(data) == 6 and data[:5] == b"\x80\x00\x00\x06\x03":
        return quake1_player(data[5])
    return None


# -- Quake 3 --------------------------------------------------------------------------

QUAKE3_STATUS = (
    b"\xff\xff\xff\xffstatusResponse\n"
    b"\\sv_hostname\\noname\\version\\ioq3 1.36+svn1933-1/Ubuntu linux-x86_64 Apr  4 2011"
    b"\\gamename\\baseoa\\mapname\\oa_dm1\\fraglimit\\20\\protocol\\71\\g_needpass\\0"
    b"\\timelimit\\0\n"
    b'0 4 "cyberix"\n3 50 "zed"\n3 50 "alice"\n1 20 "two words"\n12 999 "Ace"\n'
)


#: a version option of two words: quake3-info's Lua dies (no third word to search), after
#: the probe file's OpenArena line matched (so nmap's probes end at once)
QUAKE3_SHORT_VERSION = (
    b"\xff\xff\xff\xffstatusResponse\n\\version\\ioq3 linux-x86_64\\gamename\\baseoa"
    b'\\mapname\\q3dm1\n5 10 "solo"\n'
)


def quake3_answer(data: bytes) -> bytes | None:
    return QUAKE3_STATUS if data.rstrip(b"\n") == b"\xff\xff\xff\xffgetstatus" else None


def quake3_short_answer(data: bytes) -> bytes | None:
    getstatus = data.rstrip(b"\n") == b"\xff\xff\xff\xffgetstatus"
    return QUAKE3_SHORT_VERSION if getstatus else None


# -- All-Seeing Eye -------------------------------------------------------------------


def _s1(*texts: str, counted: bool = False) -> bytes:
    """1-byte-length strings: the length alone (what the script reads, Lua's ``s1``), or
    ``counted`` (the length byte counting itself, as All-Seeing Eye servers send them)."""
    return b"".join(bytes([len(t.encode()) + counted]) + t.encode() for t in texts)


def ase_status(counted: bool = False) -> bytes:
    head = _s1("chrome", "27015", "ChromeNet Server", "Team Death Match",
               "Data/LevelsNet/Narrow/Narrow.map", "1.2.0.0ww", "0", "2", "16",
               counted=counted)  # fmt: skip
    settings = _s1("Dedicated", "No", "Time Limit", "30", "Friendly Fire", "On", counted=counted)
    players = (b"\x3f" + _s1("NoVoDondo", "BLUE", "", "71", "0", "", counted=counted)
               + b"\x05" + _s1("HeroX", "skin1", counted=counted))  # fmt: skip
    return b"EYE1" + head + settings + b"\x01" + players


def ase_answer(data: bytes) -> bytes | None:
    return ase_status() if data == b"s" else None


def ase_counted_answer(data: bytes) -> bytes | None:
    return ase_status(counted=True) if data == b"s" else None


# -- Freelancer -----------------------------------------------------------------------

FREELANCER_QUERY = bytes.fromhex("0002f1260126f090a6f026574eaca0ecf868e48d21")


def freelancer_status(password: int = 0x00) -> bytes:
    head = bytearray(b"\x00\x03\xf1\x26" + b"\x11" * 88)
    head[16], head[20], head[24] = password, 225 + 1, 152 + 1
    name = "Lookalike RP 24/7".encode("utf-16-le")
    description = "A lookalike server, see example.org".encode("utf-16-le")
    return bytes(head) + name + b"\x00\x00" + b"1:0:x:y:z:" + description + b"\x00\x00"


def freelancer_answer(data: bytes) -> bytes | None:
    return freelancer_status() if data == FREELANCER_QUERY else None


# -- TeamSpeak 2 ----------------------------------------------------------------------


def teamspeak2_reply(name: bytes = b"COWCLANS", platform: bytes = b"Win32") -> bytes:
    out = bytearray(436)
    out[0:8] = b"\xf4\xbe\x04\x00\x00\x00\x00\x00"
    out[8:12] = b"\x01\x02\x03\x04"
    out[12:16] = struct.pack("<I", 2)
    out[16:20] = b"\xaa\xbb\xcc\xdd"
    out[20] = len(name)
    out[21 : 21 + len(name)] = name
    out[50] = len(platform)
    out[51 : 51 + len(platform)] = platform
    out[80:88] = struct.pack("<HHHH", 2, 0, 23, 19)
    welcome = b"Welcome to the lookalike"
    out[180] = len(welcome)
    out[181 : 181 + len(welcome)] = welcome
    return bytes(out)


def teamspeak2_answer(data: bytes) -> bytes | None:
    return teamspeak2_reply() if data.startswith(b"\xf4\xbe\x03\x00") else None


# -- Ventrilo -------------------------------------------------------------------------

VENTRILO_TEXT = (
    b"NAME: Lookalike Vent\nPHONETIC: Look a like\nCOMMENT: http://example.org/\nAUTH: 1\n"
    b"MAXCLIENTS: 100\nVOICECODEC: 3,Speex\nVOICEFORMAT: 32,32 KHz%2C 16 bit%2C 10 Qlty\n"
    b"UPTIME: 551533\nPLATFORM: WIN32\nVERSION: 3.0.3.C\nCHANNELCOUNT: 2\n"
    b"CHANNELFIELDS: CID,PID,PROT,NAME,COMM\n"
    b"CHANNEL: CID=719,PID=0,PROT=0,NAME=Group 1,COMM=\n"
    b"CHANNEL: CID=720,PID=0,PROT=1,NAME=Officers,COMM=secret\n"
    b"CLIENTCOUNT: 3\nCLIENTFIELDS: ADMIN,CID,PHAN,PING,SEC,NAME,COMM\n"
    b"CLIENT: ADMIN=0,CID=719,PHAN=0,PING=47,SEC=206304,NAME=stabya,COMM=\n"
    b"CLIENT: ADMIN=1,CID=0,PHAN=0,PING=12,SEC=100,NAME=boss,COMM=afk\n"
    b"CLIENT: ADMIN=0,CID=999,PHAN=0,PING=5,SEC=7,NAME=ghost,COMM=\n"
)


def ventrilo_crc(data: bytes, tables: Tables) -> int:
    total = 0
    for byte in data:
        total = (tables.crc[total >> 8] ^ byte ^ (total << 8)) & 0xFFFF
    return total


def encode_header(fields: list[int], key: tuple[int, int], tables: Tables) -> bytes:
    """The 20-byte header of 9 little-endian words (the first is the key's place),
    encrypted with header key ``(step, index)``: the inverse of the decryption."""
    plain = b"".join(struct.pack("<H", f) for f in fields)  # 18 bytes: words 1..9
    swapped = bytearray(plain)
    for i in range(0, len(swapped), 2):
        swapped[i], swapped[i + 1] = swapped[i + 1], swapped[i]
    step, index = key
    out = bytearray([index, step])
    for i, byte in enumerate(swapped):
        out.append((byte + tables.head[index] + i % 5) & 0xFF)
        index = (index + step) & 0xFF
    return bytes(out)


def encode_data(data: bytes, key: int, tables: Tables) -> bytes:
    step, index = key & 0xFF, key >> 8
    out = bytearray()
    for i, byte in enumerate(data):
        out.append((byte + tables.data[index] + i % 72) & 0xFF)
        index = (index + step) & 0xFF
    return bytes(out)


def ventrilo_packets(
    request_id: int, text: bytes, tables: Tables, sizes: tuple[int, ...] = (400,)
) -> list[bytes]:
    """The status answer: ``text`` cut into parts of ``sizes`` (the rest last), sent in
    reverse order."""
    parts, rest = [], text
    for size in sizes:
        parts.append(rest[:size])
        rest = rest[size:]
    if rest:
        parts.append(rest)
    checksum = ventrilo_crc(text, tables)
    out = []
    for number, part in enumerate(parts):
        key = 0x2100 + 0x31 + number
        header = encode_header(
            [0, 3, request_id, len(text), len(part), len(parts), number, key, checksum],
            (0x5B + number, 0x17 * (number + 1)),
            tables,
        )
        out.append(header + encode_data(part, key, tables))
    return list(reversed(out))


def ventrilo_answerer(tables: Tables) -> Callable[[bytes], list[bytes]]:
    def answer(data: bytes) -> list[bytes]:
        header = decode_header(data, tables)
        if header is None or len(data) < 20:
            return []
        return ventrilo_packets(header.id, VENTRILO_TEXT, tables)

    return answer


# -- serving --------------------------------------------------------------------------


def serve_udp(port: int, answer: Callable[[bytes], list[bytes]]) -> int:
    sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    sock.bind(("127.0.0.1", port))

    def loop() -> None:
        while True:
            data, peer = sock.recvfrom(65535)
            for reply in answer(data):
                sock.sendto(reply, peer)

    threading.Thread(target=loop, daemon=True).start()
    return int(sock.getsockname()[1])


def serve_tcp_closing(port: int) -> int:
    """Accepts and closes at once (Nmap: tcpwrapped)."""
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", port))
    sock.listen(64)

    def loop() -> None:
        while True:
            conn, _ = sock.accept()
            conn.close()

    threading.Thread(target=loop, daemon=True).start()
    return int(sock.getsockname()[1])


def one(answer: Callable[[bytes], bytes | None]) -> Callable[[bytes], list[bytes]]:
    def many(data: bytes) -> list[bytes]:
        reply = answer(data)
        return [] if reply is None else [reply]

    return many


def main() -> None:
    tables = load_tables()
    if tables is None:
        raise SystemExit("ventrilo-info.nse is not installed: no tables to encrypt with")
    ports = {
        "quake1": serve_udp(26000, one(quake1_answer)),
        "quake3": serve_udp(27960, one(quake3_answer)),
        "quake3-short": serve_udp(27961, one(quake3_short_answer)),
        "ase": serve_udp(27138, one(ase_answer)),
        "ase-counted": serve_udp(27244, one(ase_counted_answer)),
        "freelancer": serve_udp(2302, one(freelancer_answer)),
        "teamspeak2": serve_udp(8767, one(teamspeak2_answer)),
        "ventrilo": serve_udp(3784, ventrilo_answerer(tables)),
        "ventrilo-tcp": serve_tcp_closing(3784),
    }
    print(json.dumps(ports), flush=True)
    sys.stdin.read()


if __name__ == "__main__":
    main()
