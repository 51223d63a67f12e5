"""ONC RPC messages (RFC 5531), TCP record marking, and portmapper DUMP replies.

Pure code: nothing here imports Twisted. Every parser raises :class:`RpcError`
on input it cannot read; none trusts a length field beyond its limits.
"""

from __future__ import annotations

import re
import struct
from dataclasses import dataclass

__all__ = [
    "ACCEPT_GARBAGE_ARGS",
    "ACCEPT_PROC_UNAVAIL",
    "ACCEPT_PROG_MISMATCH",
    "ACCEPT_PROG_UNAVAIL",
    "ACCEPT_SUCCESS",
    "MSG_ACCEPTED",
    "MSG_DENIED",
    "PMAP_PROGRAM",
    "PortmapEntry",
    "RecordReader",
    "ReplyHeader",
    "RpcError",
    "build_call",
    "dump_call",
    "mismatch_versions",
    "parse_dump",
    "parse_reply",
    "record",
]

CALL, REPLY = 0, 1
MSG_ACCEPTED, MSG_DENIED = 0, 1
ACCEPT_SUCCESS = 0
ACCEPT_PROG_UNAVAIL = 1
ACCEPT_PROG_MISMATCH = 2
ACCEPT_PROC_UNAVAIL = 3
ACCEPT_GARBAGE_ARGS = 4
RPC_VERSION = 2
AUTH_NULL = 0
PMAP_PROGRAM = 100000
#: the DUMP procedure number of portmapper v2 and rpcbind v3/v4
PMAP_DUMP = 4
#: record-mark bit: last fragment of the record
LAST_FRAGMENT = 0x80000000
#: the largest record we accept (a real DUMP reply is a few KiB)
MAX_RECORD = 1 << 20
#: at most this many fragments per record (NSE gives up after 400 too)
MAX_FRAGMENTS = 400

_U32 = struct.Struct(">I")


class RpcError(Exception):
    """Not a readable RPC message (short, malformed, or too large)."""


def build_call(
    xid: int, program: int, version: int, procedure: int = 0, body: bytes = b""
) -> bytes:
    """A CALL message with AUTH_NULL credentials and verifier."""
    for name, value in (("xid", xid), ("program", program), ("version", version)):
        if not 0 <= value <= 0xFFFFFFFF:
            raise ValueError(f"{name} {value} is not an unsigned 32-bit number")
    header = struct.pack(
        ">IIIIIIIIII",
        xid,
        CALL,
        RPC_VERSION,
        program,
        version,
        procedure,
        AUTH_NULL,
        0,
        AUTH_NULL,
        0,
    )
    return header + body


def record(message: bytes) -> bytes:
    """``message`` as one TCP record: one fragment, last-fragment bit set."""
    if len(message) > 0x7FFFFFFF:
        raise ValueError("message too long for one fragment")
    return _U32.pack(LAST_FRAGMENT | len(message)) + message


def dump_call(xid: int, version: int) -> bytes:
    """The portmapper/rpcbind DUMP call of ``version`` (2, 3 or 4)."""
    return build_call(xid, PMAP_PROGRAM, version, PMAP_DUMP)


class RecordReader:
    """Reassembles one record from TCP bytes fed in any chunking.

    ``feed(data)`` returns the complete message once its last fragment is in
    (bytes after it are kept in ``rest``), or None while more is needed.
    Raises :class:`RpcError` as soon as a fragment header announces more than
    ``max_record`` bytes in all, or the record has more than ``max_fragments``
    fragments: a peer cannot make us wait for (or buffer) a lie.
    """

    def __init__(self, max_record: int = MAX_RECORD, max_fragments: int = MAX_FRAGMENTS) -> None:
        self._max_record = max_record
        self._max_fragments = max_fragments
        self._pending = bytearray()
        self._message = bytearray()
        self._fragments = 0
        self.rest = b""

    def feed(self, data: bytes) -> bytes | None:
        self._pending += data
        while True:
            if len(self._pending) < 4:
                return None
            (mark,) = _U32.unpack_from(self._pending)
            length = mark & 0x7FFFFFFF
            if len(self._message) + length > self._max_record:
                raise RpcError(
                    f"record over {self._max_record} bytes announced ({length} in a fragment)"
                )
            if len(self._pending) < 4 + length:
                return None
            self._fragments += 1
            if self._fragments > self._max_fragments:
                raise RpcError(f"more than {self._max_fragments} fragments")
            self._message += self._pending[4 : 4 + length]
            del self._pending[: 4 + length]
            if mark & LAST_FRAGMENT:
                self.rest = bytes(self._pending)
                return bytes(self._message)


@dataclass(frozen=True)
class ReplyHeader:
    xid: int
    msg_type: int
    reply_state: int
    #: for an accepted reply; None when denied
    accept_state: int | None
    #: for a denied reply; None when accepted
    denied_state: int | None
    #: offset of the procedure's results (accepted replies)
    body: int


def parse_reply(data: bytes) -> ReplyHeader:
    """The header of a REPLY (or whatever message type the peer claims)."""
    if len(data) < 12:
        raise RpcError(f"{len(data)} bytes is too short for an RPC reply")
    xid, msg_type, state = struct.unpack_from(">III", data)
    if msg_type != REPLY:
        return ReplyHeader(xid, msg_type, state, None, None, 12)
    if state == MSG_DENIED:
        if len(data) < 16:
            raise RpcError("denied reply without its reason")
        (denied,) = _U32.unpack_from(data, 12)
        return ReplyHeader(xid, msg_type, state, None, denied, 16)
    if len(data) < 20:
        raise RpcError("accepted reply without its verifier")
    _flavor, verf_len = struct.unpack_from(">II", data, 12)
    pos = 20 + _padded(verf_len)
    if len(data) < pos + 4:
        raise RpcError("accepted reply without its accept state")
    (accept,) = _U32.unpack_from(data, pos)
    return ReplyHeader(xid, msg_type, state, accept, None, pos + 4)


def mismatch_versions(data: bytes) -> tuple[int, int]:
    """PROG_MISMATCH's (low, high): the last 8 bytes of the reply, as NSE reads them."""
    if len(data) < 8:
        raise RpcError("PROG_MISMATCH reply without versions")
    low, high = struct.unpack_from(">II", data, len(data) - 8)
    return low, high


def _padded(length: int) -> int:
    return (length + 3) & ~3


@dataclass(frozen=True)
class PortmapEntry:
    program: int
    version: int
    #: ``tcp``/``udp`` (v2: from the protocol number; v3/4: the netid), or the raw netid
    protocol: str
    #: None when the address carries no port (v3/4 ``local`` transports)
    port: int | None
    address: str | None = None
    owner: str | None = None


_UADDR = re.compile(r"^(.*?)\.(\d+)\.(\d+)$", re.DOTALL)


def _opaque(data: bytes, pos: int) -> tuple[bytes, int]:
    if len(data) < pos + 4:
        raise RpcError("truncated string length")
    (length,) = _U32.unpack_from(data, pos)
    pos += 4
    if length > len(data) - pos:
        raise RpcError(f"string of {length} bytes in a reply of {len(data)}")
    return data[pos : pos + length], pos + _padded(length)


def parse_dump(data: bytes, pos: int, version: int) -> list[PortmapEntry]:
    """The entries of a DUMP reply's results, starting at ``pos``.

    Version 2: ``(program, version, protocol number, port)``; 17/6 become
    ``udp``/``tcp``. Versions 3/4: ``(program, version, netid, universal address,
    owner)``; for netids ``tcp``, ``udp``, ``tcp6``, ``udp6`` the port comes from
    the address's last two numbers (RFC 5665), and trailing NULs of the netid are
    trimmed (NetApp).
    """
    entries: list[PortmapEntry] = []
    while True:
        if len(data) < pos + 4:
            raise RpcError("truncated DUMP list")
        (follows,) = _U32.unpack_from(data, pos)
        pos += 4
        if follows == 0:
            return entries
        if version == 2:
            if len(data) < pos + 16:
                raise RpcError("truncated DUMP v2 entry")
            program, vers, proto, v2_port = struct.unpack_from(">IIII", data, pos)
            pos += 16
            name = {6: "tcp", 17: "udp"}.get(proto, str(proto))
            entries.append(PortmapEntry(program, vers, name, v2_port))
            continue
        if len(data) < pos + 8:
            raise RpcError("truncated DUMP entry")
        program, vers = struct.unpack_from(">II", data, pos)
        pos += 8
        raw_netid, pos = _opaque(data, pos)
        raw_addr, pos = _opaque(data, pos)
        raw_owner, pos = _opaque(data, pos)
        netid = raw_netid.split(b"\0", 1)[0].decode("latin-1")
        address = raw_addr.decode("latin-1")
        port: int | None = None
        if re.fullmatch(r"[tu][cd]p6?", netid):
            found = _UADDR.match(address)
            if found:
                address = found.group(1)
                port = int(found.group(2)) * 256 + int(found.group(3))
        entries.append(
            PortmapEntry(program, vers, netid, port, address, raw_owner.decode("latin-1"))
        )


def build_dump_reply(xid: int, entries: list[PortmapEntry], version: int) -> bytes:
    """A successful DUMP reply (for tests and the test servers)."""
    out = bytearray(struct.pack(">IIIIII", xid, REPLY, MSG_ACCEPTED, AUTH_NULL, 0, ACCEPT_SUCCESS))
    for entry in entries:
        out += _U32.pack(1)
        if version == 2:
            proto = {"tcp": 6, "udp": 17}[entry.protocol]
            out += struct.pack(">IIII", entry.program, entry.version, proto, entry.port or 0)
            continue
        out += struct.pack(">II", entry.program, entry.version)
        address = entry.address or "0.0.0.0"
        if entry.port is not None:
            address = f"{address}.{entry.port >> 8}.{entry.port & 0xFF}"
        for text in (entry.protocol, address, entry.owner or ""):
            raw = text.encode("latin-1")
            out += _U32.pack(len(raw)) + raw + b"\0" * (_padded(len(raw)) - len(raw))
    out += _U32.pack(0)
    return bytes(out)


def build_accepted_reply(xid: int, accept_state: int, body: bytes = b"") -> bytes:
    """An accepted REPLY with AUTH_NULL verifier (for tests and test servers)."""
    return struct.pack(">IIIIII", xid, REPLY, MSG_ACCEPTED, AUTH_NULL, 0, accept_state) + body


def parse_call(data: bytes) -> tuple[int, int, int, int]:
    """(xid, program, version, procedure) of a CALL (for test servers)."""
    if len(data) < 24:
        raise RpcError("short call")
    xid, msg_type, rpcvers, program, version, procedure = struct.unpack_from(">IIIIII", data)
    if msg_type != CALL or rpcvers != RPC_VERSION:
        raise RpcError("not an RPC v2 call")
    return xid, program, version, procedure
