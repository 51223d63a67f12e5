"""Script output's pure parts: NSE's format_table, Lua's tostring, Nmap's escapes."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from vscand.output.script_output import (
    ScriptOutput,
    Table,
    format_table,
    from_json,
    lua_str,
    protect_xml,
    screen_text,
)


def test_format_table_puts_integer_keys_first_then_fields_in_order_nested_by_two() -> None:
    inner = Table.of({"Version": "1.2"}, ["a"])
    table = Table.of({"zeta": "z", "alpha": inner}, ["first", "second"])
    assert format_table(table) == (
        "\n  first\n  second\n  zeta: z\n  alpha: \n    a\n    Version: 1.2"
    )


def test_output_table_assignment_keeps_the_first_place_and_none_removes() -> None:
    table = Table()
    table["a"] = "1"
    table["b"] = "2"
    table["a"] = "3"
    table["b"] = None
    assert table.fields == [("a", "3")]
    assert not Table()


def test_text_wins_over_the_table_as_nmap_prints_it() -> None:
    out = ScriptOutput(table=Table.of({"k": "v"}), text="shown")
    assert out.output == "shown"
    assert ScriptOutput(table=Table.of({"k": "v"})).output == "\n  k: v"


def test_lua_tostring() -> None:
    assert [lua_str(v) for v in (True, False, None, 3, 3.0, 0.5, "x")] == [
        "true",
        "false",
        "nil",
        "3",
        "3.0",
        "0.5",
        "x",
    ]


def test_escapes_follow_nmap() -> None:
    assert screen_text("a\tb\r\x00\xff\n") == "a\tb\\x0D\\x00\\xFF\n"
    assert protect_xml("a\r\x01") == "a\r\\x01"


values = st.recursive(
    st.text(max_size=5),
    lambda children: st.builds(
        Table,
        st.lists(children, max_size=3),
        st.lists(st.tuples(st.text(min_size=1, max_size=4), children), max_size=3),
    ),
    max_leaves=10,
)


@given(st.builds(Table, st.lists(values, max_size=3)), st.one_of(st.none(), st.text(max_size=8)))
def test_json_round_trip(table: Table, text: str | None) -> None:
    out = ScriptOutput(table=table, text=text)
    back = from_json(out.to_json("x"))
    assert back.output == out.output
    assert back.table == table


def test_many_keys_are_set_in_linear_time_and_lookups_follow_outside_changes() -> None:
    table = Table()
    for n in range(60_000):
        table[f"k{n}"] = str(n)
    assert table["k59999"] == "59999" and len(table.fields) == 60_000
    table.fields.insert(0, ("front", "x"))  # a writer that appends to fields directly
    assert table["k0"] == "0" and table["front"] == "x"
    table["k1"] = None
    assert "k1" not in table and table["k2"] == "2"
