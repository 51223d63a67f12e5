"""ONC RPC pure code: calls, record marking, reply and DUMP parsing, nmap-rpc."""

from __future__ import annotations

import contextlib
import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vscand.rpc.messages import (
    ACCEPT_PROG_MISMATCH,
    MAX_RECORD,
    PortmapEntry,
    RecordReader,
    RpcError,
    build_accepted_reply,
    build_call,
    build_dump_reply,
    mismatch_versions,
    parse_call,
    parse_dump,
    parse_reply,
    record,
)
from vscand.rpc.programs import RpcPrograms, load_rpc_programs

u32 = st.integers(0, 0xFFFFFFFF)


def test_call_layout_is_nmaps_rpccheck_probe() -> None:
    # nmap-service-probes' TCP RPCCheck: record mark 0x80000028, xid 0x72FE1D13,
    # RPC v2, program 100000, version 0x1977C, procedure 0, AUTH_NULL twice
    probe = (
        b"\x80\0\0\x28\x72\xfe\x1d\x13\0\0\0\0\0\0\0\x02\0\x01\x86\xa0"
        b"\0\x01\x97\x7c\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0\0"
    )
    assert record(build_call(0x72FE1D13, 100000, 0x1977C)) == probe


@given(xid=u32, program=u32, version=u32, procedure=u32)
def test_call_round_trip(xid: int, program: int, version: int, procedure: int) -> None:
    assert parse_call(build_call(xid, program, version, procedure)) == (
        xid,
        program,
        version,
        procedure,
    )


@given(
    message=st.binary(max_size=3000),
    cuts=st.lists(st.integers(1, 64), max_size=40),
    fragments=st.integers(1, 5),
)
def test_record_reassembly_any_chunking(message: bytes, cuts: list[int], fragments: int) -> None:
    size = max(1, len(message) // fragments)
    parts = [message[i : i + size] for i in range(0, len(message), size)] or [b""]
    wire = (
        b"".join(
            struct.pack(">I", len(p) | (0x80000000 if i == len(parts) - 1 else 0)) + p
            for i, p in enumerate(parts)
        )
        + b"trailing"
    )
    reader, got, pos = RecordReader(), None, 0
    for cut in [*cuts, len(wire)]:
        if got is not None or pos >= len(wire):
            break
        got = reader.feed(wire[pos : pos + cut])
        pos += cut
    assert got == message
    assert reader.rest + wire[pos:] == b"trailing"


def test_a_lying_record_mark_is_refused_at_once() -> None:
    reader = RecordReader()
    with pytest.raises(RpcError, match="record over"):
        reader.feed(struct.pack(">I", 0x80000000 | (1 << 30)) + b"\0" * 12)
    reader = RecordReader()
    assert reader.feed(struct.pack(">I", MAX_RECORD) + b"x" * 100) is None  # fits: wait
    many = RecordReader(max_fragments=3)
    with pytest.raises(RpcError, match="fragments"):
        many.feed(
            struct.pack(">I", 1)
            + b"a" * 1
            + struct.pack(">I", 1)
            + b"b" * 1
            + struct.pack(">I", 1)
            + b"c"
            + struct.pack(">I", 1)
            + b"d"
        )


@given(xid=u32, low=u32, high=u32)
def test_prog_mismatch_reply(xid: int, low: int, high: int) -> None:
    reply = build_accepted_reply(xid, ACCEPT_PROG_MISMATCH, struct.pack(">II", low, high))
    header = parse_reply(reply)
    assert (header.xid, header.msg_type, header.accept_state) == (xid, 1, ACCEPT_PROG_MISMATCH)
    assert mismatch_versions(reply) == (low, high)


@given(data=st.binary(max_size=64))
def test_parse_reply_never_fails_otherwise_than_rpc_error(data: bytes) -> None:
    with contextlib.suppress(RpcError):
        parse_reply(data)


entries = st.lists(
    st.builds(
        PortmapEntry,
        program=u32,
        version=u32,
        protocol=st.sampled_from(["tcp", "udp"]),
        port=st.integers(0, 65535),
    ),
    max_size=20,
)


@given(entries=entries, version=st.sampled_from([2, 3, 4]), xid=u32)
def test_dump_round_trip(entries: list[PortmapEntry], version: int, xid: int) -> None:
    reply = build_dump_reply(xid, entries, version)
    header = parse_reply(reply)
    parsed = parse_dump(reply, header.body, version)
    assert [(e.program, e.version, e.protocol, e.port) for e in parsed] == [
        (e.program, e.version, e.protocol, e.port) for e in entries
    ]


@given(data=st.binary(max_size=200), version=st.sampled_from([2, 3, 4]))
def test_parse_dump_on_garbage_only_raises_rpc_error(data: bytes, version: int) -> None:
    with contextlib.suppress(RpcError):
        parse_dump(data, 0, version)


def test_dump_v4_universal_addresses_and_local_transports() -> None:
    local = PortmapEntry(100000, 4, "local", None, "/run/rpcbind.sock", "superuser")
    tcp6 = PortmapEntry(100000, 4, "tcp6", 111, "::", "superuser")
    reply = build_dump_reply(1, [local, tcp6], 4)
    parsed = parse_dump(reply, parse_reply(reply).body, 4)
    assert [(e.protocol, e.port) for e in parsed] == [("local", None), ("tcp6", 111)]


def test_nmap_rpc_file_order_and_last_name_wins() -> None:
    programs = RpcPrograms.parse(
        ["# comment", "rpcbind\t100000\tportmap", "  first 7 # x", "second 7", "bad line", "x"]
    )
    assert programs.in_file_order() == (("rpcbind", 100000), ("first", 7), ("second", 7))
    assert programs.name(7) == "second" and programs.name(8) is None
    shipped = load_rpc_programs()
    assert len(shipped.in_file_order()) == 1695  # nmap 7.93's nmap-rpc
    assert shipped.name(100000) == "rpcbind" and shipped.name(100024) == "status"
