"""Script output in every report: -oN and the table (``|``/``|_`` rows), -oX (``<script>``).

The expected bytes come from Nmap 7.93 itself (``nmap -sV --script=version`` against the
lookalike of ``tests/test_e2e_script_writers.py``, which compares the same end to end);
hostile inputs (huge, non-printable, deeply nested, malformed stored results) stay bounded
and give XML valid against Nmap's DTD.
"""

from __future__ import annotations

import subprocess
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.test_output import DTD, rich_results, with_service, xmllint_or_skip
from tests.test_output import result as port_result
from vscand.output.hosts import ScanMeta, group_hosts
from vscand.output.nmapxml import format_xml, script_element
from vscand.output.normal import format_host, format_hosts, format_normal, format_table
from vscand.output.script_output import (
    MAX_DEPTH,
    MAX_ELEMENTS,
    MAX_OUTPUT_CHARS,
    ScriptOutput,
    Table,
    protect_xml,
    script_items,
    script_result,
)
from vscand.output.table import script_row, script_rows

#: what the lookalike's Host-header answer carries (control, Latin-1, XML specials, "--", TAB, CR)
ODD = "Odd\x01\xe9--x<&>\"'\t\rB/2"
HEADER_OUTPUT = ScriptOutput(table=Table(array=["", ODD]), text="\n  <empty>\n  " + ODD)


def scripted(port: int = 42793, *outputs: tuple[str, ScriptOutput | str]) -> dict[str, Any]:
    results = [
        (out if isinstance(out, ScriptOutput) else ScriptOutput(text=out)).to_json(name)
        for name, out in outputs
    ]
    r = with_service(
        port_result(port), name="http", product="Xitami httpd", method="probed", conf=10
    )
    r["service"]["script_results"] = sorted(results, key=lambda i: str(i["id"]))
    return r


def test_script_row_is_nmaps_format_script_output() -> None:
    assert script_row("x", "one") == "|_x: one"
    assert script_row("x", "a\nb\nc") == "| x: a\n| b\n|_c"
    assert script_row("x", "a\n") == "|_x: a"  # a final newline starts no line
    assert script_row("x", "\n") == "|_x: "
    assert script_row("x", "a\n\nb") == "| x: a\n| \n|_b"
    assert script_row("x", "") == ""  # no row at all
    assert script_row("x", "\r\x00\x7f\xff\t") == "|_x: \\x0D\\x00\\x7F\\xFF\t"
    assert script_row("x", "\u20ac") == "|_x: \\xE2\\x82\\xAC"  # UTF-8 bytes, as Lua holds them


def test_normal_output_is_byte_for_byte_nmaps() -> None:
    """The port table of ``nmap -sV --script=version`` (7.93) on the lookalike."""
    host = group_hosts([scripted(42793, ("http-server-header", HEADER_OUTPUT))])[0]
    lines = format_host(host, script_output=True)
    assert lines[3:] == [
        "PORT      STATE SERVICE VERSION",
        "42793/tcp open  http    Xitami httpd",
        "| http-server-header: ",
        "|   <empty>",
        "|_  Odd\\x01\\xE9--x<&>\"'\t\\x0DB/2",
        "",
    ]
    # `nmap -sV` alone prints no script output: neither do we by default
    assert "| http-server-header: " not in format_host(host)


def test_script_rows_are_full_rows_that_widen_no_column() -> None:
    long_output = "x" * 300
    r = scripted(80, ("b-script", "two\nlines"), ("a-script", long_output))
    host = group_hosts([r, port_result(8080, "closed", name="http-proxy")])[0]
    lines = format_host(host, script_output=True)
    table = lines[lines.index("PORT     STATE  SERVICE    VERSION") :]
    assert table[:5] == [
        "PORT     STATE  SERVICE    VERSION",
        "80/tcp   open   http       Xitami httpd",
        "|_a-script: " + long_output,  # by id, as stored
        "| b-script: two",
        "|_lines",
    ]
    assert table[5].startswith("8080/tcp closed http-proxy")


def test_format_table_pads_only_before_a_cell_with_text_and_keeps_a_cells_own_blanks() -> None:
    rows: list[list[str] | str] = [
        ["PORT", "STATE", "SERVICE", "VERSION"],
        ["1/tcp", "open", "x", "p "],
    ]
    rows += ["", "| full row longer than any column", ["22/tcp", "open", "", ""]]
    assert format_table(rows) == [
        "PORT   STATE SERVICE VERSION",
        "1/tcp  open  x       p ",
        "| full row longer than any column",
        "22/tcp open",
    ]


def test_empty_output_is_no_row_but_an_empty_script_element() -> None:
    r = scripted(80, ("quiet", ""), ("table-only", ScriptOutput(table=Table())))
    assert script_rows(r["service"]) == []
    xml = format_xml([r], ScanMeta(args="vscan", start=0, end=0, script_output=True))
    assert '<script id="quiet" output=""/>' in xml
    assert '<script id="table-only" output=""></script>' in xml


def test_xml_script_element_is_byte_for_byte_nmaps() -> None:
    """``ScriptResult::write_xml`` and ``format_xml`` of 7.93 on the lookalike."""
    item = HEADER_OUTPUT.to_json("http-server-header")
    odd = "Odd\\x01\\xE9-&#45;x&lt;&amp;&gt;&quot;&apos;&#x9;&#xd;B/2"
    assert script_element(item) == (
        f'<script id="http-server-header" output="&#xa;  &lt;empty&gt;&#xa;  {odd}">'
        f"<elem></elem>\n<elem>{odd}</elem>\n</script>"
    )


def test_xml_nested_tables_and_keys() -> None:
    inner = Table.of({"k-k": "v\n"}, ["a"])
    out = ScriptOutput(table=Table.of({"Platform": inner, "empty": Table(), "n": "1"}, ["x"]))
    assert script_element(out.to_json("s")) == (
        f'<script id="s" output="{protect_xml(out.output).replace(chr(10), "&#xa;")}">'
        "<elem>x</elem>\n"
        '<table key="Platform">\n<elem>a</elem>\n<elem key="k-k">v&#xa;</elem>\n</table>\n'
        '<table key="empty">\n</table>\n'
        '<elem key="n">1</elem>\n'
        "</script>"
    )


def test_reports_carry_script_output_only_when_asked() -> None:
    r = scripted(80, ("http-server-header", HEADER_OUTPUT))
    meta = ScanMeta(args="vscan scan", start=0, end=0)
    assert "<script" not in format_xml([r], meta)
    assert "http-server-header" not in format_normal([r], meta)
    assert "http-server-header" not in format_hosts([r])
    shown = ScanMeta(args="vscan scan", start=0, end=0, script_output=True)
    assert '<script id="http-server-header"' in format_xml([r], shown)
    assert "| http-server-header: " in format_normal([r], shown)
    assert "|_  Odd" in format_hosts([r], script_output=True)


# --- hostile and malformed ---------------------------------------------------------


def deep(levels: int) -> list[dict[str, Any]]:
    elements: list[dict[str, Any]] = [{"key": "leaf", "value": "v"}]
    for _ in range(levels):
        elements = [{"key": "t", "table": elements}]
    return elements


def depth_of(elements: list[dict[str, Any]]) -> int:
    tables = [e["table"] for e in elements if "table" in e]
    return 1 + max((depth_of(t) for t in tables), default=0)


def count_of(elements: list[dict[str, Any]]) -> int:
    return sum(1 + (count_of(e["table"]) if "table" in e else 0) for e in elements)


def test_huge_output_and_many_elements_are_cut_and_flagged() -> None:
    item = script_result(
        {
            "id": "big",
            "output": "x" * (10 * MAX_OUTPUT_CHARS),
            "elements": [{"key": None, "value": "y" * (2 * MAX_OUTPUT_CHARS)}] * (3 * MAX_ELEMENTS),
        }
    )
    assert item is not None and item["truncated"] is True
    assert len(item["output"]) == MAX_OUTPUT_CHARS
    assert count_of(item["elements"]) == MAX_ELEMENTS
    assert all(len(e["value"]) == MAX_OUTPUT_CHARS for e in item["elements"])
    small = script_result(ScriptOutput(text="ok").to_json("s"))
    assert small == {"id": "s", "output": "ok", "elements": None}  # no flag when nothing was cut


def test_deep_nesting_is_cut_at_max_depth() -> None:
    item = script_result({"id": "deep", "output": "o", "elements": deep(5 * MAX_DEPTH)})
    assert item is not None and item["truncated"] is True
    assert depth_of(item["elements"]) == MAX_DEPTH
    assert depth_of(deep(MAX_DEPTH - 1)) == MAX_DEPTH  # the bound itself is kept whole
    kept = script_result({"id": "d", "output": "o", "elements": deep(MAX_DEPTH - 1)})
    assert kept is not None and "truncated" not in kept


def test_malformed_stored_results_are_skipped_not_fatal() -> None:
    service = {
        "script_results": [
            "not a mapping",
            {"output": "no id"},
            {"id": 5, "output": "id not a string"},
            {"id": "odd", "output": 7, "elements": "not a list"},
            {"id": "mixed", "output": "o", "elements": [3, {"key": 1, "value": 2}, {"x": 1}]},
        ]
    }
    assert script_items(service) == [
        {"id": "odd", "output": "", "elements": [], "truncated": True},
        {"id": "mixed", "output": "o", "elements": [{"key": "1", "value": "2"}], "truncated": True},
    ]
    assert script_items({"script_results": {"a": 1}}) == [] == script_items(None)


def xml_valid(tmp_path: Path, text: str) -> None:
    xmllint = xmllint_or_skip()
    path = tmp_path / "out.xml"
    path.write_text(text, encoding="utf-8")
    proc = subprocess.run(
        [xmllint, "--noout", "--dtdvalid", str(DTD), str(path)],
        capture_output=True,
        text=True,
        check=False,
    )
    assert proc.returncode == 0, proc.stderr


def test_hostile_outputs_give_valid_bounded_xml(tmp_path: Path) -> None:
    every_byte = "".join(chr(b) for b in range(256)) + "\u20ac\U0001f600--->]]>"
    r = scripted(
        80,
        ("bytes", ScriptOutput(table=Table.of({every_byte: every_byte}, [every_byte]))),
        ("huge", "z" * (3 * MAX_OUTPUT_CHARS)),
    )
    r["service"]["script_results"].append({"id": "nested", "output": "n", "elements": deep(1000)})
    r["service"]["script_results"] = [script_result(i) for i in r["service"]["script_results"]]
    rest = [x for x in rich_results() if x["port"] != 80]
    meta = ScanMeta(args="vscan scan", start=0, end=0, script_output=True)
    text = format_xml([r, *rest], meta)
    xml_valid(tmp_path, text)
    assert len(text) < 10 * MAX_OUTPUT_CHARS
    normal = format_normal([r], meta)
    assert all(0x20 <= ord(c) <= 0x7E or c in "\t\n" for c in normal)


# --- any table: valid -oX that reads back as the same structure ---------------------

keys = st.text(min_size=1, max_size=6)
values = st.recursive(
    st.text(max_size=8),
    lambda children: st.builds(
        Table,
        st.lists(children, max_size=3),
        st.lists(st.tuples(keys, children), max_size=3),
    ),
    max_leaves=12,
)


def expected(table: Table) -> list[Any]:
    """What -oX holds of a table (Nmap's protect_xml applied), as ``parsed`` reads it."""
    items: list[Any] = []
    for raw_key, value in [(None, v) for v in table.array] + list(table.fields):
        key = None if raw_key is None else protect_xml(raw_key)
        if isinstance(value, Table):
            items.append(("table", key, expected(value)))
        else:
            items.append(("elem", key, protect_xml(value)))
    return items


def parsed(node: ET.Element) -> list[Any]:
    return [
        ("table", c.get("key"), parsed(c))
        if c.tag == "table"
        else ("elem", c.get("key"), c.text or "")
        for c in node
    ]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    st.builds(Table, st.lists(values, max_size=3), st.lists(st.tuples(keys, values), max_size=3)),
    st.one_of(st.none(), st.text(max_size=10)),
)
def test_any_table_gives_valid_xml_that_reads_back_the_same(
    tmp_path: Path, table: Table, text: str | None
) -> None:
    out = ScriptOutput(table=table, text=text)
    r = scripted(80, ("prop", out))
    meta = ScanMeta(args="vscan scan", start=0, end=0, script_output=True)
    document = format_xml([r], meta)
    xml_valid(tmp_path, document)
    script = ET.fromstring(document.encode()).find(".//script")
    assert script is not None
    assert script.get("output") == protect_xml(out.output)
    assert parsed(script) == expected(table)


@pytest.mark.parametrize("output", ["", "one", "a\nb", "\n  x\n  y\n"])
def test_rows_reassemble_to_the_escaped_output(output: str) -> None:
    row = script_row("id", output)
    if not output:
        assert row == ""
        return
    body = "\n".join(line[2:] for line in row.split("\n"))
    assert body.removeprefix("id: ") == output.removesuffix("\n")


def test_an_empty_string_falls_back_to_the_table_in_793_only() -> None:
    """7.93's get_output_str tests the string for emptiness; 7.95's for a Lua string."""
    out = ScriptOutput(table=Table.of({"k": "v"}), text="")
    assert out.printed("7.93") == out.output == "\n  k: v"
    assert out.printed("7.95") == ""
    assert out.to_json("s", "7.95")["output"] == ""
    assert ScriptOutput(text="").printed("7.95") == "" == ScriptOutput(text="").output
