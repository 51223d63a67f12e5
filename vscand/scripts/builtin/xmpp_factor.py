"""xmpp-info's ``factor``: the plain stream's and the TLS stream's findings, split.

What both showed, what only the plain stream showed, what only the TLS one
showed, as NSE's xmpp-info computes them for its output. Pure code.
"""

from __future__ import annotations

from typing import Any, Protocol

from vscand.output.script_output import Table, Value

__all__ = ["Stream", "factor"]


class Stream(Protocol):
    """What one stream showed (``StreamScan``)."""

    info: Table
    capabilities: Table

    def lists(self) -> dict[str, list[Any]]: ...


def _entries(table: Table) -> list[tuple[int | str, Value]]:
    """An output table's pairs in NSE's order (integer keys first)."""
    return [*((i + 1, v) for i, v in enumerate(table.array)), *table.fields]


def _lookup(table: Table, key: int | str) -> Value | None:
    if isinstance(key, int):
        return table.array[key - 1] if key <= len(table.array) else None
    return table[key] if key in table else None  # noqa: SIM401 (Table has no get)


def _put(table: Table, key: int | str, value: Value) -> None:
    if isinstance(key, int):
        table.append(value)
    else:
        table[key] = value


def factor(plain: Stream, tls: Stream) -> tuple[Table, Table, Table]:
    """NSE's ``factor``: what both streams showed, what only the plain one, only the TLS one.

    Lists are compared by value (error texts never compare equal: Lua tables);
    NSE walks its value set in hash order, so the order of ``both`` and of the
    plain-only lists differs from run to run in Nmap (ours: first seen)."""
    both, first_only, second_only = Table(), Table(), Table()
    for cat, t1c, t2c in (
        ("xmpp", plain.info, tls.info),
        ("capabilities", plain.capabilities, tls.capabilities),
    ):
        both_c, t1_c, t2_c = Table(), Table(), Table()
        for key, value in _entries(t1c):
            other = _lookup(t2c, key)
            if other is not None:
                if other == value:
                    _put(both_c, key, value)
                else:
                    _put(t1_c, key, value)
                    _put(t2_c, key, other)
            else:
                _put(t1_c, key, value)
        for key, value in _entries(t2c):
            if _lookup(t1c, key) is None:
                _put(t2_c, key, value)
        both[cat], first_only[cat], second_only[cat] = both_c, t1_c, t2_c
    first_lists, second_lists = plain.lists(), tls.lists()
    for cat, t1l in first_lists.items():
        union: dict[Any, int] = {}
        for value in t1l:
            union[_identity(value)] = 1
        t2_only: list[Value] = []
        for value in second_lists[cat]:
            ident = _identity(value)
            if ident in union:
                union[ident] = 2
            else:
                t2_only.append(value)
        values = {_identity(v): v for v in t1l}
        t1_only = [values[i] for i, n in union.items() if n == 1]
        both_l = [values[i] for i, n in union.items() if n == 2]
        both[cat] = Table(both_l) if both_l else None
        first_only[cat] = Table(t1_only) if t1_only else None
        second_only[cat] = Table(t2_only) if t2_only else None
    return both, first_only, second_only


def _identity(value: Any) -> Any:
    """A Lua table key: strings by value, tables by identity."""
    return value if isinstance(value, str) else id(value)
