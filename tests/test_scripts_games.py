"""quake1-info, quake3-info, allseeingeye-info: fake peers (the e2e lookalikes' answers and
hostile variants), Lua's ``string.unpack`` and the parsers, property-tested."""

from __future__ import annotations

import re
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.e2e import script_servers_games as games
from tests.test_scripts_brokers import port_result, scan
from vscand.output.script_output import SCRIPT_ERROR_OUTPUT, Table
from vscand.scripts.api import PortView, RuleContext
from vscand.scripts.builtin.allseeingeye_info import AllSeeingEyeInfo
from vscand.scripts.builtin.allseeingeye_info import parse_status as ase_parse
from vscand.scripts.builtin.game_query import (
    LuaUnpackError,
    lua_tonumber,
    lua_unpack,
    nse_location,
    request_timeout,
)
from vscand.scripts.builtin.quake1_info import (
    Quake1Info,
    format_results,
    parse_player,
    player_request,
    server_request,
)
from vscand.scripts.builtin.quake3_info import GETSTATUS, Quake3Info, parse_status
from vscand.scripts.testing import FakeConnection, FakeExchange, Reply


class Recording(FakeExchange):
    """A FakeExchange that records every receive's timeout (the script's bounds)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.timeouts: list[float] = []

    async def connect(self, **kwargs: Any) -> Any:
        conn = await super().connect(**kwargs)
        timeouts = self.timeouts
        receive = conn.receive

        async def recorded(timeout: float, max_bytes: int | None = None) -> bytes:
            timeouts.append(timeout)
            return await receive(timeout, max_bytes)

        conn.receive = recorded  # type: ignore[method-assign]
        return conn


def peer(answer: Any) -> Any:
    def respond(conn: FakeConnection, data: bytes) -> Reply | bytes | None:
        reply = answer(data)
        if isinstance(reply, list):
            return Reply(reply)
        return reply

    return respond


def udp(port: int, name: str | None = None, state: str = "open|filtered", **svc: Any) -> Any:
    return port_result(port, name, "udp", state=state, **svc)


def output(service: dict[str, Any], script: str) -> dict[str, Any] | None:
    for item in service.get("script_results") or []:
        if item["id"] == script:
            return dict(item)
    return None


# -- Lua's string.unpack and tonumber --------------------------------------------------


def test_unpack_options() -> None:
    data = b"\x84\x01ab\x00\x11\x00\x00\x00" + b"\xff\xff\xff\xff" + b"\x01\x00\x00\x00" + b"z\x00"
    values, pos = lua_unpack(">BBzBxxx<i4I4>z", data, 0)
    assert values == [0x84, 1, b"ab", 0x11, -1, 1, b"z"] and pos == len(data)
    assert lua_unpack("s1s1", b"\x02ab\x00", 0) == ([b"ab", b""], 4)


def test_unpack_errors_follow_the_release() -> None:
    cut = b"\x84\x01abc"
    with pytest.raises(LuaUnpackError, match=r"data string too short"):
        lua_unpack(">BBzB", cut, 0, "7.93")
    with pytest.raises(LuaUnpackError, match=r"unfinished string for format 'z'"):
        lua_unpack(">BBzB", cut, 0, "7.95")
    # Lua 5.3 reads a final unterminated z to the end (and one past it)
    assert lua_unpack(">z", b"abc", 0, "7.93") == ([b"abc"], 4)
    with pytest.raises(LuaUnpackError, match="data string too short"):
        lua_unpack("s1", b"\x05ab", 0)


@given(
    st.lists(st.sampled_from(["B", "z", "x", "<i4", ">I2", "I4", "s1"]), max_size=8),
    st.binary(max_size=40),
    st.sampled_from(["7.93", "7.95"]),
)
def test_unpack_never_raises_anything_else(options: list[str], data: bytes, release: str) -> None:
    try:
        values, pos = lua_unpack("".join(options), data, 0, release)
    except LuaUnpackError:
        return
    assert len(values) == sum(o != "x" for o in options) and pos <= len(data) + 1


def test_lua_tonumber() -> None:
    assert lua_tonumber(" 42 ") == 42 and lua_tonumber("0x10") == 16
    assert lua_tonumber("1.5e3") == 1500.0 and lua_tonumber("abc") is None
    assert lua_tonumber("") is None and lua_tonumber("-7") == -7


def test_timeouts_of_comm_exchange() -> None:
    assert request_timeout(3000) == 6.0 and request_timeout(None) == 8.0


def test_error_location_is_where_nmap_loads_the_script() -> None:
    old = nse_location("quake1-info", "string.unpack('>BBzBxxx<i4I4>z'", 155, "7.93")
    new = nse_location("quake1-info", "string.unpack('>BBzBxxx<i4I4>z'", 155, "7.95")
    assert old.endswith("share/nmap/scripts/quake1-info.nse:155: ")
    assert new == "/usr/bin/../" + old[len("/usr/") :]


# -- quake1-info ------------------------------------------------------------------------


def test_quake1_rule() -> None:
    script, ctx = Quake1Info(), RuleContext()
    view = PortView("127.0.0.1", 26000, "udp", "open|filtered")
    assert script.portrule(view, ctx)
    assert script.portrule(PortView("127.0.0.1", 26004, "udp", "open"), ctx)
    assert not script.portrule(PortView("127.0.0.1", 26005, "udp", "open"), ctx)
    assert script.portrule(PortView("127.0.0.1", 9, "udp", "open", name="quake"), ctx)
    assert not script.portrule(PortView("127.0.0.1", 26000, "tcp", "open"), ctx)
    assert not script.portrule(view, RuleContext(intensity=6))
    # a function rule, not shortport: Exclude does not apply
    assert script.portrule(view, RuleContext(excluded=lambda _p, _q: True))


def test_quake1_server_and_players() -> None:
    assert server_request() == games.QUAKE1_SERVER_REQUEST
    result = udp(26000, "quake", extrainfo="address: 127.0.0.1:26000, name: Lookalike Quake")
    exchange = Recording(peer(games.quake1_answer), protocol="udp", port=26000)
    service = scan(result, Quake1Info(), exchange)
    assert result["state"] == "open"
    assert (service["name"], service["product"], service["version"]) == (
        "quake", "Quake 1 server", "released")  # fmt: skip
    assert service["extrainfo"] == "address: 127.0.0.1:26000, name: Lookalike Quake"
    assert exchange.timeouts == [8.0] * 5
    sent = [c.sent[0] for c in exchange.connections]
    assert sent == [server_request(), *(player_request(n) for n in range(1, 5))]
    out = output(service, "quake1-info")
    assert out is not None
    text = out["output"]
    assert text.startswith("\n  server info exchange payload amplification: 45/12=3.750000\n")
    assert "\n    player 1: fragmeister\n      player info exchange payload amplification" in text
    assert "      shirt: INVALID\n      pants: brown1\n" in text
    assert "    player 3\n      player info exchange payload amplification: 8/6=1.333333\n" in text
    assert "ERROR: Incorrect reply packet length: 99 received, 8 bytes in packet" in text
    # 7.93 (Lua 5.3): a final unterminated string is read to the end, the position check fails
    assert "    player 4\n" in text and "Error parsing reply (packet type/ length)" in text
    assert text.endswith("\n  protocol version: released (0x3)")


def test_quake1_player_errors_by_release() -> None:
    cut = games.quake1_player(3)
    entry = parse_player(cut, 6, "7.95")
    assert isinstance(entry, str)
    assert entry.startswith("/usr/bin/../share/nmap/scripts/quake1-info.nse:155: ")
    assert entry.endswith("bad argument #2 to 'unpack' (unfinished string for format 'z')")
    short = parse_player(b"\x80\x00\x00\x08\x84\x00ab", 6, "7.93")
    assert isinstance(short, str) and short.endswith("(data string too short)")
    tiny = parse_player(b"\x80\x00", 6)
    assert isinstance(tiny, Table) and tiny["ERROR"] == "Response too small for packet header"


def test_quake1_format_matches_the_scripts_formatter() -> None:
    table = Table.of(
        {"server_ratio": "1/2=0.500000", "player_table": Table.of(
            {"player 1": Table.of({"player_ratio": "x", "name": "n", "frags": "1"}),
             "player 2": "boom"})}
    )  # fmt: skip
    assert format_results(table) == (
        "\n  server info exchange payload amplification: 1/2=0.500000\n  player table"
        "\n    player 1: n\n      player info exchange payload amplification: x"
        "\n      frags: 1\n    player 2: boom"
    )


def test_quake1_silent_players_each_wait_the_timeout() -> None:
    def answer(data: bytes) -> bytes | None:
        return games.quake1_server_info(players=255) if data == server_request() else None

    exchange = Recording(peer(answer), protocol="udp", port=26000)
    service = scan(udp(26000), Quake1Info(), exchange)
    assert exchange.timeouts == [8.0] * 256  # NSE's bound: one request timeout per player
    out = output(service, "quake1-info")
    assert out is not None and out["output"].count("No response to request for player info") == 255


@pytest.mark.parametrize(
    "reply",
    [
        b"\x80\x00\x00",  # under 4 bytes: nothing, not even the state
        b"\x80\x00\x00\x04",  # no opcode (Lua error, swallowed)
        b"\x80\x00\x00\x99\x83a\x00b\x00c\x00\x01\x02\x03",  # lying length
        b"\x81\x00\x00\x0e\x83a\x00b\x00c\x00\x01\x02\x03",  # not a control packet
        b"\x80\x00\x00\x0c\x83a\x00b\x00c\x00\x01",  # cut short
        b"\x80\x00\x00\x0f\x83a\x00b\x00c\x00\x01\x02\x03\x04",  # one byte too many
        b"\x80\x00\xff\xff" + b"\x83" * 65531,  # oversized, no strings
    ],
)
def test_quake1_hostile_server_info(reply: bytes) -> None:
    result = udp(26000)
    exchange = Recording(peer(lambda d: reply if d == server_request() else None), protocol="udp")
    service = scan(result, Quake1Info(), exchange)
    assert service["method"] == "table" and service["product"] is None
    assert result["state"] == ("open" if len(reply) >= 4 else "open|filtered")
    assert output(service, "quake1-info") is None and exchange.timeouts == [8.0]


@given(st.binary(max_size=64), st.sampled_from(["7.93", "7.95"]))
def test_quake1_player_parser_total(reply: bytes, release: str) -> None:
    entry = parse_player(reply, 6, release)
    assert isinstance(entry, (str, Table))


# -- quake3-info ------------------------------------------------------------------------


def test_quake3_rule_is_27960_to_27970() -> None:
    script, ctx = Quake3Info(), RuleContext()
    assert script.portrule(PortView("127.0.0.1", 27970, "udp", "open|filtered"), ctx)
    assert not script.portrule(PortView("127.0.0.1", 27971, "udp", "open"), ctx)
    assert not script.portrule(PortView("127.0.0.1", 27960, "tcp", "open"), ctx)


def test_quake3_status() -> None:
    result = udp(27960, "quake3", product="OpenArena game server", ostype="Linux",
                 cpe=["cpe:/o:linux:linux_kernel"])  # fmt: skip
    exchange = Recording(peer(games.quake3_answer), protocol="udp")
    service = scan(result, Quake3Info(), exchange)
    assert exchange.connections[0].sent == [GETSTATUS] and exchange.timeouts == [8.0]
    assert (service["product"], service["version"], service["ostype"]) == (
        "ioq3", "1.36+svn1933-1/Ubuntu", "Linux")  # fmt: skip
    assert service["cpe"] == ["cpe:/o:linux:linux_kernel"]
    out = output(service, "quake3-info")
    assert out is not None and out["elements"] is None
    # frags compare as strings ("3" > "12"), then names, descending
    assert out["output"] == (
        "\n  PLAYERS:\n    1. zed (frags: 3/20, ping: 50)\n    2. alice (frags: 3/20, ping: 50)"
        "\n    3. Ace (frags: 12/20, ping: 999)\n    4. cyberix (frags: 0/20, ping: 4)"
        "\n  BASIC OPTIONS:\n    fraglimit: 20\n    gamename: baseoa\n    mapname: oa_dm1"
        "\n    protocol: 71\n    timelimit: 0"
        "\n    version: ioq3 1.36+svn1933-1/Ubuntu linux-x86_64 Apr  4 2011\n"
    )


def test_quake3_short_version_line_kills_the_script() -> None:
    status = b"\xff\xff\xff\xffstatusResponse\n\\version\\ioq3 1.36\n\n"
    result = udp(27960)
    service = scan(result, Quake3Info(), FakeExchange(peer(lambda d: status), protocol="udp"))
    assert service["method"] == "table"
    out = output(service, "quake3-info")
    assert out is not None and out["output"] == SCRIPT_ERROR_OUTPUT


@pytest.mark.parametrize(
    "data",
    [
        b"\xff\xff\xff\xffstatusResponse",  # no lines
        b"\xff\xff\xff\xffstatusResponse\n\\a\\b",  # no terminating newline
        b"\xff\xff\xff\xffstatusRespons\n\\a\\b\n\n",
        b"\x00" * 70000,
    ],
)
def test_quake3_hostile(data: bytes) -> None:
    result = udp(27960)
    service = scan(result, Quake3Info(), FakeExchange(peer(lambda d: data), protocol="udp"))
    assert output(service, "quake3-info") is None and service["method"] == "table"
    assert result["state"] == "open|filtered"  # quake3-info never sets the state


def test_quake3_fields_without_leading_backslash_and_odd_keys() -> None:
    parsed = parse_status(b"\xff\xff\xff\xffstatusResponse\nx\\a\\b\n\n")
    assert parsed == ({}, [])
    parsed = parse_status(b'\xff\xff\xff\xffstatusResponse\n\\a\\1\\b\\2\\a\n1 2 "n"\n')
    assert parsed == ({b"b": b"2"}, [(b"1", b"2", b"n")])


@given(st.binary(max_size=200))
def test_quake3_parser_total(tail: bytes) -> None:
    parsed = parse_status(b"\xff\xff\xff\xffstatusResponse\n" + tail)
    assert parsed is None or isinstance(parsed[0], dict)


# -- allseeingeye-info ------------------------------------------------------------------


def test_ase_status() -> None:
    result = udp(27138, "allseeingeye", product="All-Seeing Eye")
    exchange = Recording(peer(games.ase_answer), protocol="udp")
    service = scan(result, AllSeeingEyeInfo(), exchange)
    assert exchange.connections[0].sent == [b"s"] and exchange.timeouts == [6.0]
    assert result["state"] == "open" and service["name"] == "ase"
    assert service["extrainfo"] == "game: chrome 1.2.0.0ww; port: 27015; no password"
    out = output(service, "allseeingeye-info")
    assert out is not None
    keys = [e["key"] for e in out["elements"]]
    assert keys[:9] == ["max players", "num players", "passworded", "version", "map",
                        "game type", "server name", "port", "game"]  # fmt: skip
    assert keys[9:] == ["settings", "players"]
    assert out["output"].endswith("\n    player 1: \n      name: HeroX\n      skin: skin1")


def test_ase_counted_lengths_kill_the_script() -> None:
    result = udp(27244)
    exchange = FakeExchange(peer(games.ase_counted_answer), protocol="udp")
    service = scan(result, AllSeeingEyeInfo(), exchange)
    assert result["state"] == "open" and service["method"] == "table"
    out = output(service, "allseeingeye-info")
    assert out is not None and out["output"] == SCRIPT_ERROR_OUTPUT


@pytest.mark.parametrize(
    ("data", "state", "failed"),
    [
        (b"NOPE", "open", False),  # not EYE1: open, nothing else
        (b"EYE1\x05ab", "open", True),  # lying length
        (b"EYE1" + b"\x00" * 9, "open", True),  # no \x01 after the settings
        (b"EYE1" + b"\x00" * 9 + b"\x01\x3f\x01a", "open", True),  # a player cut short
        (b"EYE1" + b"\x00" * 9 + b"\x01" + b"\x00" * 60000, "open", False),  # 60000 players
    ],
)
def test_ase_hostile(data: bytes, state: str, failed: bool) -> None:
    result = udp(27138)
    service = scan(result, AllSeeingEyeInfo(), FakeExchange(peer(lambda d: data), protocol="udp"))
    assert result["state"] == state
    out = output(service, "allseeingeye-info")
    if failed:
        assert out is not None and out["output"] == SCRIPT_ERROR_OUTPUT
        assert service["method"] == "table"
    elif data.startswith(b"EYE1"):
        assert out is not None and service["name"] == "ase"
    else:
        assert out is None


def test_ase_silent_port_changes_nothing() -> None:
    result = udp(26000, "quake", method="probed", conf=10)
    exchange = Recording(lambda c, d: None, protocol="udp")
    service = scan(result, AllSeeingEyeInfo(), exchange)
    assert result["state"] == "open|filtered" and service["name"] == "quake"
    assert exchange.timeouts == [6.0]


@settings(max_examples=200)
@given(st.binary(max_size=120))
def test_ase_parser_total(tail: bytes) -> None:
    try:
        table = ase_parse(b"EYE1" + tail)
    except LuaUnpackError:
        return
    assert re.fullmatch(r"player \d+", table["players"].fields[-1][0]) if isinstance(
        table["players"], Table) and table["players"].fields else True  # fmt: skip
