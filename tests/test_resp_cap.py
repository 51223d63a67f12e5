"""The reply filter (``vscand/queue/resp.py``): what the RESP parser sees of an untrusted
reply is the reply with its oversized values replaced by cut markers, whatever the sizes,
the nesting and the way the bytes are chunked; and it holds no more than a header line.

A reference RESP2 encoder and parser live here (a few lines each) so the filter is checked
against the structure, not against itself; the end-to-end check with txredisapi's own
parser and a real redis-server is ``tests/test_intake_hostile.py``.
"""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vscand.queue.resp import ReplyCap, ReplyCapError, ReplyLimits, cut_size, marker, new_token

TOKEN = new_token()

Value = Any  # bytes | int | str (status) | None | list[Value] | Error


class Error(str):
    """An error reply (``-...``)."""


def encode(value: Value) -> bytes:
    if value is None:
        return b"$-1\r\n"
    if isinstance(value, Error):
        return b"-" + value.encode() + b"\r\n"
    if isinstance(value, str):
        return b"+" + value.encode() + b"\r\n"
    if isinstance(value, int):
        return b":" + str(value).encode() + b"\r\n"
    if isinstance(value, bytes):
        return b"$" + str(len(value)).encode() + b"\r\n" + value + b"\r\n"
    return b"*" + str(len(value)).encode() + b"\r\n" + b"".join(encode(v) for v in value)


def parse(data: bytes) -> list[Value]:
    """Every top-level reply in *data* (complete replies only)."""
    out: list[Value] = []
    pos = 0

    def one() -> Value:
        nonlocal pos
        end = data.index(b"\r\n", pos)
        line, pos = data[pos:end], end + 2
        kind, rest = line[:1], line[1:]
        if kind == b"+":
            return rest.decode()
        if kind == b"-":
            return Error(rest.decode())
        if kind == b":":
            return int(rest)
        if kind == b"$":
            n = int(rest)
            if n < 0:
                return None
            body, pos = data[pos : pos + n], pos + n + 2
            return body
        n = int(rest)
        return [one() for _ in range(n)]

    while pos < len(data):
        out.append(one())
    return out


def expected(value: Value, limits: ReplyLimits, spent: list[int]) -> Value:
    """*value* as the filter should pass it: the reference semantics, in reading order."""
    if isinstance(value, bytes):
        if len(value) > limits.max_bulk:
            return marker(TOKEN, "bulk", len(value))
        if spent[0] + len(value) > limits.max_reply:
            return marker(TOKEN, "reply", len(value))
        spent[0] += len(value)
        return value
    if isinstance(value, list):
        if len(value) > limits.max_items:
            return marker(TOKEN, "array", len(value))
        return [expected(v, limits, spent) for v in value]
    return value


leaves = st.one_of(
    st.binary(max_size=80),
    st.integers(-(2**63), 2**63 - 1),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20),
    st.text(st.characters(min_codepoint=32, max_codepoint=126), max_size=20).map(Error),
    st.none(),
)
values = st.recursive(leaves, lambda inner: st.lists(inner, max_size=8), max_leaves=40)


def chunked(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts})
    pieces, last = [], 0
    for p in points:
        pieces.append(data[last:p])
        last = p
    pieces.append(data[last:])
    return pieces


@settings(max_examples=400, deadline=None)
@given(
    replies=st.lists(values, min_size=1, max_size=4),
    max_bulk=st.integers(0, 60),
    max_items=st.integers(0, 6),
    max_reply=st.integers(0, 200),
    cuts=st.lists(st.integers(0, 10_000), max_size=12),
)
def test_the_parser_sees_the_reply_with_oversized_values_cut(
    replies: list[Value], max_bulk: int, max_items: int, max_reply: int, cuts: list[int]
) -> None:
    limits = ReplyLimits(max_bulk=max_bulk, max_items=max_items, max_reply=max_reply)
    cap = ReplyCap(limits, TOKEN)
    wire = b"".join(encode(r) for r in replies)
    seen = b"".join(cap.feed(piece) for piece in chunked(wire, cuts))
    want = [expected(r, limits, [0]) for r in replies]  # the budget is per top-level reply
    assert parse(seen) == want
    assert cap._line == b"" and cap._pass == 0 and cap._drop == 0  # nothing left over
    assert cap._open == [] and cap._skip == []


def test_a_huge_bulk_is_dropped_as_it_arrives_not_buffered() -> None:
    cap = ReplyCap(ReplyLimits(max_bulk=65536), TOKEN)
    size = 80 * 1024 * 1024
    head = cap.feed(b"*2\r\n$4\r\njob1\r\n$" + str(size).encode() + b"\r\n")
    chunk = b"[{}," * 16384  # 64 KiB, as a socket read brings it
    passed = sum(len(cap.feed(chunk)) for _ in range(size // len(chunk)))
    tail = cap.feed(b"\r\n+OK\r\n")
    assert passed == 0
    assert cap._drop == 0
    assert parse(head + tail) == [[b"job1", marker(TOKEN, "bulk", size)], "OK"]
    assert cut_size(TOKEN, marker(TOKEN, "bulk", size)) == ("bulk", size)


def test_a_marker_cannot_be_forged_without_the_token() -> None:
    other = new_token()
    assert cut_size(TOKEN, marker(other, "bulk", 5)) is None
    assert cut_size(TOKEN, b"\x00vscand-cut:" + b"0" * 32 + b":bulk:5") is None
    assert cut_size(TOKEN, TOKEN + b":bulk:x") is None
    assert cut_size(TOKEN, 7) is None


@pytest.mark.parametrize(
    "wire",
    [b"%2\r\n", b"$abc\r\n", b"*x\r\n", b"+" + b"a" * 70_000],
    ids=["resp3-map", "bad-bulk-length", "bad-array-length", "endless-line"],
)
def test_what_is_not_resp2_is_a_protocol_error(wire: bytes) -> None:
    with pytest.raises(ReplyCapError):
        ReplyCap(ReplyLimits(max_bulk=10), TOKEN).feed(wire)
