"""iec61850-mms: the action under a rule made to hold (fake peers, a Clock), the
``iec61850mms`` decoder's Lua behaviour, hostile answers, property tests."""

from __future__ import annotations

import contextlib
import struct
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from twisted.internet import task

from tests.e2e import script_servers_mms as mms_server
from tests.test_scripts_brokers import port_result, scan
from tests.test_scripts_industrial import ClockExchange, run_on_clock, script_output, silent
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT, ScriptFailed
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin.iec61850_mms import (
    CR_TPDU,
    IDENTIFY,
    INITIATE,
    Iec61850Mms,
    identify_output,
    identify_table,
)
from vscand.scripts.proto import mms
from vscand.scripts.proto.luastring import LuaError
from vscand.scripts.proto.mms import EndlessLoop, decode, decode_length, unwrap
from vscand.scripts.testing import FakeConnection, FakeExchange, Reply

tlv, tpkt = mms_server.tlv, mms_server.tpkt


class Held(Iec61850Mms):
    """The action under a rule that holds on 102/tcp (as the e2e oracle's copy)."""

    def portrule(self, port: PortView, ctx: RuleContext) -> bool:
        return port.number == 102 and port.protocol == "tcp"


def peer(case: str) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> Reply | None:
        if data == CR_TPDU:
            return Reply([mms_server.CONNECT_CONFIRM])
        if data == INITIATE:
            return Reply([mms_server.accept_answer()])
        answer = mms_server.case_answer(case) if data == IDENTIFY else None
        return Reply([answer]) if answer else None

    return respond


def run(case: str) -> tuple[dict[str, Any], FakeExchange]:
    exchange = FakeExchange(peer(case), port=102)
    service = scan(port_result(102, "iso-tsap"), Held(), exchange)
    return service, exchange


def response(mms: bytes) -> bytes:
    return tpkt(mms_server.DT_LAST + mms_server.presentation(mms))


# -- the action ---------------------------------------------------------------------------


def test_sends_cr_initiate_identify_then_dies_in_packmms_intpkt() -> None:
    service, exchange = run("identify")
    assert exchange.connections[0].sent == [CR_TPDU, INITIATE, IDENTIFY]
    assert script_output(service, "iec61850-mms") == {
        "id": "iec61850-mms", "output": SCRIPT_ERROR_OUTPUT, "elements": None}  # fmt: skip
    assert service["method"] == "table" and service["product"] is None


def test_a_non_presentation_answer_gives_the_empty_output_table() -> None:
    service, _ = run("not-mms")
    assert script_output(service, "iec61850-mms") == {
        "id": "iec61850-mms", "output": "", "elements": []}  # fmt: skip


@pytest.mark.parametrize("case", ["segmented", "empty", "oversized", "truncated"])
def test_other_answers_end_in_the_lua_error(case: str) -> None:
    service, _ = run(case)
    found = script_output(service, "iec61850-mms")
    assert found is not None and found["output"] == SCRIPT_ERROR_OUTPUT


def test_no_identify_answer_is_nil_and_a_refused_connect_too() -> None:
    service, _ = run("silent")
    assert script_output(service, "iec61850-mms") is None
    refused = FakeExchange(peer("identify"), port=102, refuse=True)
    assert (
        script_output(scan(port_result(102, "iso-tsap"), Held(), refused), "iec61850-mms") is None
    )


def test_a_peer_closing_early_ends_at_the_failed_send() -> None:
    exchange = FakeExchange(lambda conn, data: Reply([b"\x03\x00"], close=True), port=102)
    service = scan(port_result(102, "iso-tsap"), Held(), exchange)
    assert script_output(service, "iec61850-mms") is None
    assert exchange.connections[0].sent == [CR_TPDU]


def test_silent_peer_ends_after_three_reads_of_500_ms() -> None:
    exchange = ClockExchange(task.Clock(), 102, "tcp", silent)
    result = port_result(102, "iso-tsap")
    assert 1.5 <= run_on_clock(Held(), result, exchange) <= 2.0
    assert exchange.connections[0].waits == [0.5, 0.5, 0.5]
    assert script_output(result["service"], "iec61850-mms") is None


def test_the_faithful_rule_never_holds_on_102() -> None:
    port = PortView("127.0.0.1", 102, "tcp", "open", name="iso-tsap")
    assert not Iec61850Mms().portrule(port, RuleContext(release="7.95"))
    assert Held().portrule(port, RuleContext(release="7.95"))


# -- the decoder --------------------------------------------------------------------------


def test_identify_fields_and_the_table_nse_builds() -> None:
    decoded = decode(mms_server.identify_answer(vendor=b""))
    assert decoded is not None and decoded.service == "identify"
    assert decoded.identify == {"vendorName": b"", "modelName": b"IED-7", "revision": b"2.4.1"}
    table = identify_table(decoded.identify)
    assert table.fields == [("modelName_identify", "IED-7"),
                            ("vendorName_identify", "<EMPTY_STRING>"),
                            ("modelNumber_identify", "2.4.1")]  # fmt: skip
    with pytest.raises(ScriptFailed, match="seqData"):
        identify_output(mms_server.identify_answer())


def test_segments_are_joined_until_the_eot_bit() -> None:
    decoded = decode(mms_server.case_answer("segmented") or b"")
    assert decoded is not None and decoded.identify["vendorName"] == b"ACME Grid"


@pytest.mark.parametrize(
    ("answer", "outcome"),
    [
        # TPKT length 0 on a unit that is not the last: the chain stays where it is
        (b"\x03\x00\x00\x00\x02\xf0\x00" + b"\x00" * 8, EndlessLoop),
        # a Read answer holding an integer of 17 bytes: decodeInt does not move on
        (response(tlv(0xA1, b"\x02\x01\x01" + tlv(0xA4, tlv(0xA1, tlv(0x85, b"\x00" * 17))))),
         EndlessLoop),
        (response(tlv(0xA1, b"\x02\x01\x01" + tlv(0xA4, tlv(0xA1, tlv(0x85, b"\x00" * 16))))),
         None),
        # a service tag that is not in the decoder's table: a nil table key
        (response(tlv(0xA1, b"\x02\x01\x01" + tlv(0xA7, b""))), LuaError),
        (response(tlv(0xA1, b"\x02\x00" + tlv(0xA2, b""))), LuaError),  # ">i0"
        (b"\x03\x00\x00\x07\x02\xf0\x80", LuaError),  # no session bytes: too short
    ],
)  # fmt: skip
def test_lua_outcomes(answer: bytes, outcome: type[Exception] | None) -> None:
    if outcome is None:
        assert decode(answer) is not None
    else:
        with pytest.raises(outcome):
            decode(answer)


def test_an_endless_loop_ends_the_script_with_nothing() -> None:
    assert identify_output(b"\x03\x00\x00\x00\x02\xf0\x00" + b"\x00" * 8) is None


def test_negative_tpkt_lengths_count_from_the_end_as_lua_does() -> None:
    last = b"\x03\x00\x00\x10\x02\xf0\x80" + b"\x01\x00\x01\x00\x62\x00" + b"\x00" * 3
    first = b"\x03\x00" + struct.pack(">h", -len(last) - 1) + b"\x02\xf0\x00"
    # the first unit points from position 1 to -16, the last 16 bytes: the second unit
    assert unwrap(first + last) is None


def test_long_form_lengths_wrap_around_64_bits() -> None:
    assert decode_length(b"\x89" + b"\xff" * 9, 1) == (-1, 11)
    assert decode_length(b"\x80", 1) == (128, 2)


# -- hostile answers and property tests ---------------------------------------------------

GOOD = mms_server.identify_answer()
OUTCOMES = (LuaError, EndlessLoop)


def _decode(data: bytes) -> None:
    with contextlib.suppress(*OUTCOMES):
        decode(data)


@settings(max_examples=300, deadline=1000)
@given(st.binary(max_size=300))
def test_arbitrary_bytes_only_raise_lua_errors_or_loops(data: bytes) -> None:
    _decode(data)
    _decode(GOOD[:7] + data)


@settings(max_examples=200, deadline=1000)
@given(st.integers(0, len(GOOD)), st.data())
def test_truncated_and_lying_answers(cut: int, data: st.DataObject) -> None:
    _decode(GOOD[:cut])
    at = data.draw(st.integers(0, len(GOOD) - 1))
    value = data.draw(st.integers(0, 255))
    _decode(GOOD[:at] + bytes([value]) + GOOD[at + 1 :])


@settings(max_examples=50, deadline=2000)
@given(st.integers(-(1 << 15), (1 << 15) - 1), st.integers(1, 60000))
def test_lying_tpkt_lengths_and_oversized_answers_stay_bounded(length: int, size: int) -> None:
    answer = b"\x03\x00" + struct.pack(">h", length) + b"\x02\xf0\x00" + b"\x03" * size
    _decode(answer)


def test_the_reassembled_session_is_bounded(monkeypatch: pytest.MonkeyPatch) -> None:
    """A chain may revisit the same bytes (Lua's memory would run out): capped."""
    monkeypatch.setattr(mms, "MAX_SESSION", 10)
    with pytest.raises(LuaError, match="not enough memory"):
        unwrap(mms_server.identify_answer())
