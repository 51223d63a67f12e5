"""vscand/scripts/proto: Lua's string functions, tables read from .nse files, ipOps."""

from __future__ import annotations

import contextlib
import ipaddress
import re
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from vscand.scripts.proto.ipops import ip_to_str_accepts
from vscand.scripts.proto.luastring import (
    LuaError,
    byte,
    c_hex,
    unpack_c,
    unpack_int,
    unpack_s1,
    unpack_z,
    utf16be_to_utf8,
)
from vscand.scripts.proto.luatable import LuaTableError, nse_table, parse_table


def test_unpack_like_lua() -> None:
    data = b"ab\x00cd\x00\x03xyz"
    assert unpack_z(data, 1) == (b"ab", 4)
    assert unpack_z(data, 4) == (b"cd", 7)
    assert unpack_s1(data, 7) == (b"xyz", 11)
    assert unpack_int(data, 7, 1) == (3, 8)
    assert unpack_int(b"\x01\x02", 1, 2) == (0x0201, 3)
    assert unpack_int(b"\x01\x02", 1, 2, big=True) == (0x0102, 3)
    assert unpack_c(data, 11, 0) == (b"", 11)  # one past the end is a valid position
    with pytest.raises(LuaError, match="initial position"):
        unpack_c(data, 12, 0)
    with pytest.raises(LuaError, match="unfinished string"):
        unpack_z(data, 8)
    with pytest.raises(LuaError, match="too short"):
        unpack_int(data, 10, 2)
    assert (byte(data, 1), byte(data, 10), byte(data, 11), byte(data, 0)) == (97, 122, None, None)


@given(st.binary(max_size=40), st.integers(-3, 45), st.integers(0, 9))
def test_unpack_raises_only_lua_errors(data: bytes, pos: int, size: int) -> None:
    for unpack in (
        lambda: unpack_z(data, pos),
        lambda: unpack_c(data, pos, size),
        lambda: unpack_s1(data, pos),
        lambda: unpack_int(data, pos, size or 1, big=True),
    ):
        with contextlib.suppress(LuaError):
            unpack()


def test_c_hex_is_printf_alternate_form() -> None:
    assert (c_hex(0x30, 4), c_hex(0, 4), c_hex(0, 8), c_hex(3, 2)) == (
        "0x0030",
        "0000",
        "00000000",
        "0x03",
    )
    assert c_hex(0x123456789, 8) == "0x123456789"


@given(st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=30))
def test_utf16_of_real_text_is_its_utf8(text: str) -> None:
    raw = text.encode("utf-16-be")
    for release in ("7.93", "7.95"):
        assert utf16be_to_utf8(raw, release) == text.encode("utf-8")


@given(st.binary(max_size=64), st.sampled_from(["7.93", "7.95"]))
def test_utf16_any_bytes(raw: bytes, release: str) -> None:
    try:
        out = utf16be_to_utf8(raw, release)
    except LuaError:
        return
    assert len(out) <= 3 * len(raw)


SAMPLE = r"""
local other = { [1] = "no" }
local vendor_id = {
  [0] = "Reserved", -- a comment
  [1] = 'Single "quoted"',
  --[[ a long
  comment ]] [2] = "tab\there\065\x42\z
       joined",
  [0x10] = [==[long ]] string]==];
  [2] = "later wins"
}
"""


def test_parse_table_reads_lua_constructors() -> None:
    assert parse_table(SAMPLE, "vendor_id") == {
        0: "Reserved",
        1: 'Single "quoted"',
        2: "later wins",
        16: "long ]] string",
    }
    assert parse_table(SAMPLE, "other") == {1: "no"}
    with pytest.raises(LuaTableError):
        parse_table(SAMPLE, "missing")
    with pytest.raises(LuaTableError):
        parse_table('local t = { [1] = "a" [2] = "b" }', "t")


@given(st.text(max_size=80))
def test_parse_table_any_text(body: str) -> None:
    with contextlib.suppress(LuaTableError):
        parse_table("local t = {" + body, "t")


@pytest.mark.skipif(
    not Path("/usr/share/nmap/scripts/enip-info.nse").exists(), reason="Nmap is not installed"
)
def test_installed_tables() -> None:
    enip = nse_table("enip-info.nse", "vendor_id")
    assert enip[1] == "Rockwell Automation/Allen-Bradley"
    assert enip[100] == "Bosch Rexroth Corporation] = Pneumatics"  # Nmap's text as it is
    assert nse_table("enip-info.nse", "device_type")[14] == "Programmable Logic Controller"
    bacnet = nse_table("bacnet-info.nse", "vendor_id")
    assert (bacnet[0], bacnet[260]) == ("ASHRAE", "BACnet Stack at SourceForge")
    source = Path("/usr/share/nmap/scripts/bacnet-info.nse").read_text(encoding="latin-1")
    assert len(bacnet) == len(re.findall(r"(?m)^\s*\[\d+\]\s*=", source))  # every row
    assert nse_table("no-such-script.nse", "vendor_id") == {}


@pytest.mark.parametrize(
    ("text", "accepted"),
    [("192.168.1.20", True), ("1.2", True), ("...", True), ("256.1.1.1", False),
     ("1.2.3.4.5", False), ("bas-jace-01", False), ("10.0.0.1\r", False),
     ("fe80::1", True), ("::", True), ("::ffff:1.2.3.4", True), ("1::2::3", False),
     ("1:2:3:4:5:6:7:8:9", False), ("12345::", False), ("::1.2.3.x", False),
     ("g::1", False), ("10000000000000000::", True), ("99999999999999999999", False)],
)  # fmt: skip
def test_ip_to_str_like_ipops(text: str, accepted: bool) -> None:
    assert ip_to_str_accepts(text) is accepted


@pytest.mark.parametrize("text", [":", "18446744073709551616", "8000000000000000::"])
def test_ip_to_str_where_ipops_dies(text: str) -> None:
    with pytest.raises(LuaError):
        ip_to_str_accepts(text)


@given(st.ip_addresses())
def test_every_real_address_is_accepted(
    address: ipaddress.IPv4Address | ipaddress.IPv6Address,
) -> None:
    assert ip_to_str_accepts(str(address))
    if address.version == 6:
        assert ip_to_str_accepts(address.exploded)


@given(st.text(alphabet="0123456789abcdefABCDEF.:zg \r", max_size=45))
def test_ip_to_str_any_text(text: str) -> None:
    with contextlib.suppress(LuaError):
        assert isinstance(ip_to_str_accepts(text), bool)
