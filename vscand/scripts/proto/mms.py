"""Nmap 7.95's ``iec61850mms`` decoder (``MMSDecoder:unpackAndDecode``) on a peer's bytes.

The decoder is reproduced as the Lua (5.4, the only Lua 7.95 runs) executes
it, because its outcome is what the script prints: where it returns nil the
script returns its (empty) output table, where Lua raises a runtime error the
script dies (:class:`~vscand.scripts.proto.luastring.LuaError`), and where it
loops forever Nmap never ends (:class:`EndlessLoop`). Lua's quirks kept:
``string.unpack`` positions (negative ones count from the end), 64-bit
wrap-around of BER long-form lengths, ``decodeInt`` returning nil without
moving on a length over 16, and a table key that is nil being an error.

The values decoded are kept only where the script reads them (the Identify
answer's vendor, model and revision); elsewhere the walk only decides nil,
error or endless loop. Pure code: nothing here imports Twisted.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from vscand.scripts.proto.luastring import LuaError

__all__ = ["MAX_SESSION", "Decoded", "EndlessLoop", "decode", "decode_length", "unwrap"]

#: the reassembled session bytes the walk builds at most (Lua would go on to exhaust memory)
MAX_SESSION = 4 << 20

_IDENTIFY = {0x80: "vendorName", 0x81: "modelName", 0x82: "revision"}
_SCALARS = frozenset({0x83, 0x84, 0x85, 0x86, 0x89, 0x8A, 0x8C, 0x91})
_ACCESS_ERRORS = frozenset(range(0x0C))
_PDUS = {0xA0: "confirmed_RequestPDU", 0xA8: "initiate_RequestPDU"}


class EndlessLoop(Exception):
    """Where the Lua decoder loops forever (Nmap hangs on this answer)."""


@dataclass
class Decoded:
    """``unpackAndDecode``'s result as the script uses it."""

    #: the PDU choice (``confirmed_ResponsePDU`` ...); None: an unknown tag (Lua returns a string)
    pdu: str | None
    #: the confirmed response's service (``identify`` ...); None when absent
    service: str | None = None
    #: the Identify answer's strings by field name (``vendorName``, ``modelName``, ``revision``)
    identify: dict[str, bytes] = field(default_factory=dict)


def _wrap(value: int) -> int:
    """Lua 5.4 integer arithmetic: two's complement 64 bits."""
    value &= (1 << 64) - 1
    return value - (1 << 64) if value >> 63 else value


def _at(data: bytes, pos: int, size: int) -> int:
    """``str_unpack``'s position (``posrelat``, then the checks): the 0-based offset of
    ``size`` bytes at Lua position ``pos``, or LuaError."""
    if pos < 0:
        pos = 0 if -pos > len(data) else len(data) + pos + 1
    if pos < 1 or pos - 1 > len(data):
        raise LuaError("bad argument #3 to 'unpack' (initial position out of string)")
    if size < 0:
        raise LuaError("missing size for format option 'c'")
    if size > len(data) - (pos - 1):
        raise LuaError("bad argument #2 to 'unpack' (data string too short)")
    return pos - 1


def _byte(data: bytes, pos: int) -> int:
    return data[_at(data, pos, 1)]


def _sub(data: bytes, start: int, end: int) -> bytes:
    """Lua 5.4's ``string.sub(data, start, end)``."""
    size = len(data)
    if start < 0:
        start = 1 if start < -size else size + start + 1
    elif start == 0:
        start = 1
    if end > size:
        end = size
    elif end < 0:
        end = 0 if end < -size else size + end + 1
    return data[start - 1 : end] if start <= end else b""


def decode_length(data: bytes, pos: int) -> tuple[int, int]:
    """``asn1.ASN1Decoder.decodeLength``: (length, next position); 0x80 is 128 itself."""
    length = _byte(data, pos)
    pos += 1
    if length > 128:
        value = 0
        for _ in range(length - 128):
            value = _wrap(value * 256 + _byte(data, pos))
            pos += 1
        length = value
    return length, pos


def _decode_int(data: bytes, size: int, pos: int) -> tuple[int | None, int]:
    """``asn1.ASN1Decoder.decodeInt``: ``string.unpack(">i<size>")``; over 16, nil and
    the position unchanged."""
    if size > 16:
        return None, pos
    if size < 1:
        raise LuaError(f"integral size ({size}) out of limits [1,16]")
    at = _at(data, pos, size)
    raw = data[at : at + size]
    value = int.from_bytes(raw[-8:], "big", signed=True)
    mask = 0 if value >= 0 else 0xFF
    if any(b != mask for b in raw[:-8]):
        raise LuaError(f"{size}-byte integer does not fit into Lua Integer")
    return value, pos + size


def _string(data: bytes, size: int, pos: int) -> tuple[bytes, int]:
    """``string.unpack("c" .. size)``."""
    at = _at(data, pos, size)
    return data[at : at + size], pos + size


def unwrap(data: bytes) -> bytes | None:
    """``unpackmmsFromTPKT``: the MMS bytes inside TPKT/COTP/session/presentation, or
    None where the decoder gives up; LuaError, or EndlessLoop on a TPKT chain that
    comes back to a position it has been at."""
    tpkt_pos, cotp_pos = 1, 5
    seen: set[int] = set()
    pieces: list[bytes] = []
    total = 0
    while True:
        at = _at(data, tpkt_pos, 4)
        tpkt_len = int.from_bytes(data[at + 2 : at + 4], "big", signed=True)
        at = _at(data, cotp_pos, 3)
        last = data[at + 2] == 0x80
        piece = _sub(data, tpkt_pos + 7, tpkt_pos + tpkt_len - 1)
        total += len(piece)
        if total > MAX_SESSION:
            raise LuaError("not enough memory")
        pieces.append(piece)
        if last:
            break
        seen.add(tpkt_pos)
        tpkt_pos += tpkt_len
        cotp_pos = tpkt_pos + 4
        if tpkt_pos in seen:
            raise EndlessLoop("the TPKT chain loops")
    session = b"".join(pieces)
    pos = 5
    for tag in (0x61, 0x30, 0x02, 0xA0):
        found = _byte(session, pos)
        if found != tag:
            return None
        length, pos = decode_length(session, pos + 1)
        if tag == 0x02:
            _, pos = _decode_int(session, length, pos)
    return _sub(session, pos, -1)


def _identify(data: bytes, size: int, pos: int) -> dict[str, bytes]:
    seq: dict[str, bytes] = {}
    end = _wrap(pos + size)
    while pos < end:
        tag = _byte(data, pos)
        length, pos = decode_length(data, pos + 1)
        value, pos = _string(data, length, pos)
        name = _IDENTIFY.get(tag)
        if name is None:
            raise LuaError("index is nil")
        seq[name] = value
    return seq


def _structure(data: bytes, size: int, pos: int) -> None:
    """``structure`` (nested structures walked with a stack, not recursion)."""
    frames = [[_wrap(pos + size), pos]]
    while frames:
        end, pos = frames[-1]
        if not pos < end:
            frames.pop()
            if frames:
                frames[-1][1] = end
            continue
        tag = _byte(data, pos)
        length, pos = decode_length(data, pos + 1)
        if tag == 0xA2:
            frames[-1][1] = pos  # updated to the child's end when it is done
            frames.append([_wrap(pos + length), pos])
            continue
        frames[-1][1] = _scalar(data, tag, length, pos)


def _scalar(data: bytes, tag: int, size: int, pos: int) -> int:
    """One non-structure value of a structure or access result: the next position."""
    if tag not in _SCALARS:
        raise LuaError("attempt to call a nil value")
    if tag == 0x84:
        _decode_int(data, 1, pos)
    elif tag == 0x85:
        return _decode_int(data, size, pos)[1]
    elif tag == 0x8A:
        return _string(data, size, pos)[1]
    return _wrap(pos + size)


def _access_results(data: bytes, size: int, pos: int) -> None:
    end = _wrap(pos + size)
    while pos < end:
        tag = _byte(data, pos)
        length, pos = decode_length(data, pos + 1)
        result_end = _wrap(pos + length)
        inner = pos
        while inner < result_end:
            if tag == 0xA2:
                _structure(data, length, inner)
                inner = _wrap(inner + length)
            elif tag == 0x80:
                raw, inner = _string(data, length, inner)
                if len(raw) != 1 or raw[0] not in _ACCESS_ERRORS:
                    raise LuaError("attempt to concatenate a nil value")
            elif tag == 0x85 and length > 16:
                raise EndlessLoop("decodeInt returns without moving on")
            else:
                inner = _scalar(data, tag, length, inner)
        pos = result_end


def _read_response(data: bytes, size: int, pos: int) -> None:
    tag = _byte(data, pos)
    length, pos = decode_length(data, pos + 1)
    if tag == 0xA1:
        _access_results(data, length, pos)


def _confirmed_response(data: bytes, size: int, pos: int) -> Decoded:
    decoded = Decoded("confirmed_ResponsePDU")
    tag = _byte(data, pos)
    length, pos = decode_length(data, pos + 1)
    if tag != 0x02:
        return decoded
    _, pos = _decode_int(data, length, pos)
    tag = _byte(data, pos)
    length, pos = decode_length(data, pos + 1)
    if tag == 0xA1:
        decoded.service = "getNameList"
    elif tag == 0xA2:
        decoded.service = "identify"
        decoded.identify = _identify(data, length, pos)
    elif tag == 0xA4:
        decoded.service = "Read_Response"
        _read_response(data, length, pos)
    else:
        raise LuaError("table index is nil")
    return decoded


def decode(data: bytes) -> Decoded | None:
    """``unpackAndDecode``: None where the decoder returns nil; LuaError, EndlessLoop.

    Only a confirmed response is walked: any other PDU (request, initiate, unknown
    tag, whose Lua result is a string) ends in a Lua error, in the decoder or in the
    script's field access after it, and none of their loops can be endless. In a
    response, only a Read answer's values are walked (the one endless loop is there)
    and an Identify answer's strings are kept; a GetNameList answer leaves the
    script without its ``identify`` field (an error) whatever it holds."""
    mms = unwrap(data)
    if mms is None:
        return None
    tag = _byte(mms, 1)
    length, pos = decode_length(mms, 2)
    if tag == 0xA1:
        return _confirmed_response(mms, length, pos)
    return Decoded(_PDUS.get(tag))
