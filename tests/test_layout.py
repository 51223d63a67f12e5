"""The layout DESIGN.md describes ("Layout: two applications over shared floors"), checked.

* Module-level imports have no cycle: a module never needs, to be imported, a module
  that needs it (imports inside functions, there to keep a command light, are left out).
* The two applications sit on top: nothing outside ``vscand/cli/`` imports it, and
  nothing outside ``vscand/daemon/`` imports the daemon.
* The pure floors import no Twisted: ``output/``, ``probes/``, ``rpc/``,
  ``scripts/proto/``, ``targets/parse.py`` and ``targets/policy.py``.
* Each floor imports only itself and the floors below it: the list is DESIGN.md's, top to bottom
  (``FLOORS``; imports for type checking only are left out).
* Every Redis command is sent from ``vscand/queue/``.
* No module is over 400 lines unless DESIGN.md names it, with its reason, in "Longer
  modules"; and every module named there still is.
"""

from __future__ import annotations

import ast
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGE = REPO / "vscand"
LIMIT = 400


def _modules() -> dict[str, Path]:
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(REPO).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


MODULES = _modules()


def _resolve(module: str, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    package = module.split(".")
    if MODULES[module].name != "__init__.py":
        package = package[:-1]
    base = package[: len(package) - node.level + 1]
    return ".".join(base + ([node.module] if node.module else []))


def _type_checking(node: ast.AST) -> bool:
    test = getattr(node, "test", None)
    return isinstance(node, ast.If) and (
        (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING")
        or (isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")
    )


def _import_nodes(tree: ast.Module, *, top_level_only: bool) -> Iterator[ast.AST]:
    """Import statements, leaving out ``if TYPE_CHECKING:`` blocks (not imports at run
    time) and, with *top_level_only*, whatever runs only when a function is called."""
    pending: list[ast.AST] = list(tree.body)
    while pending:
        node = pending.pop()
        if _type_checking(node):
            continue
        if isinstance(node, ast.Import | ast.ImportFrom):
            yield node
        elif top_level_only and isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            continue
        pending.extend(ast.iter_child_nodes(node))


def _imports(module: str, *, top_level_only: bool) -> Iterator[str]:
    """The modules *module* imports (each ``from X import name`` as X.name when that is a
    vscand module, else X)."""
    tree = ast.parse(MODULES[module].read_text(encoding="utf-8"))
    for node in _import_nodes(tree, top_level_only=top_level_only):
        if isinstance(node, ast.Import):
            for alias in node.names:
                yield alias.name
        elif isinstance(node, ast.ImportFrom):
            base = _resolve(module, node)
            for alias in node.names:
                yield f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base


def _vscand_imports(module: str, *, top_level_only: bool) -> set[str]:
    return {
        name
        for name in _imports(module, top_level_only=top_level_only)
        if name in MODULES and name != module
    }


def test_module_imports_have_no_cycle() -> None:
    graph = {m: _vscand_imports(m, top_level_only=True) for m in MODULES}
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(module: str) -> None:
        state[module] = 1
        path.append(module)
        for name in sorted(graph[module]):
            if state.get(name) == 1:
                cycle = [*path[path.index(name) :], name]
                pytest.fail("import cycle: " + " -> ".join(cycle))
            if name not in state:
                visit(name)
        path.pop()
        state[module] = 2

    for module in MODULES:
        if module not in state:
            visit(module)


@pytest.mark.parametrize("application", ["vscand.cli", "vscand.daemon"])
def test_nothing_below_imports_an_application(application: str) -> None:
    offenders = sorted(
        f"{module} imports {name}"
        for module in MODULES
        if not (module == application or module.startswith(application + "."))
        for name in _vscand_imports(module, top_level_only=False)
        if name == application or name.startswith(application + ".")
    )
    assert offenders == []


#: DESIGN.md's floors, top to bottom: a module may import its own floor and the floors
#: below it (a top-level module such as ``config.py`` is its own package)
FLOORS: tuple[frozenset[str], ...] = tuple(
    frozenset(floor.split())
    for floor in (
        "cli daemon producer",
        "config config_values",
        "scripts",
        "queue",
        "jobs",
        "targets",
        "output",
        "scan",
        "service",
        "probes rpc",
        "ports cachedir",
    )
)


def _package(module: str) -> str:
    return module.split(".")[1] if module.count(".") else module


def _floor(module: str) -> int:
    package = _package(module)
    found = [i for i, floor in enumerate(FLOORS) if package in floor]
    assert found, f"{module}: package {package!r} is on no floor of DESIGN.md's layout"
    return found[0]


def test_floors_import_only_below() -> None:
    upward = sorted(
        f"{module} imports {name}"
        for module in MODULES
        if module != "vscand"
        for name in _vscand_imports(module, top_level_only=False)
        if name != "vscand" and _package(name) != _package(module) and _floor(name) < _floor(module)
    )
    assert upward == []


PURE = (
    "vscand.output",
    "vscand.probes",
    "vscand.rpc",
    "vscand.scripts.proto",
    "vscand.targets.parse",
    "vscand.targets.policy",
)


def test_pure_floors_import_no_twisted() -> None:
    offenders = sorted(
        f"{module} imports {name}"
        for module in MODULES
        if any(module == p or module.startswith(p + ".") for p in PURE)
        for name in _imports(module, top_level_only=False)
        if name == "twisted" or name.startswith("twisted.")
    )
    assert offenders == []


def _longer_modules_in_design() -> dict[str, str]:
    text = (REPO / "DESIGN.md").read_text(encoding="utf-8")
    section = text.split("### Longer modules", 1)[1].split("\n## ", 1)[0].split("\n### ", 1)[0]
    return dict(re.findall(r"^\| `(vscand/[\w/]+\.py)` \| (.+?) \|$", section, re.M))


def test_modules_over_400_lines_are_named_with_a_reason() -> None:
    named = _longer_modules_in_design()
    longer = {
        str(path.relative_to(REPO)): sum(1 for _ in path.open(encoding="utf-8"))
        for path in MODULES.values()
    }
    unexplained = sorted(
        f"{p} ({n} lines)" for p, n in longer.items() if n > LIMIT and p not in named
    )
    stale = sorted(p for p in named if longer.get(p, 0) <= LIMIT)
    assert (unexplained, stale) == ([], [])
    assert all(len(reason) > 20 for reason in named.values())


def test_redis_commands_live_in_queue() -> None:
    """Every Redis command is sent from ``vscand/queue/`` behind a named operation (the
    producer, a synchronous client library for other services, runs queue/lua.py's
    scripts through its own redis-py client)."""
    offenders = sorted(
        f"{module}:{node.lineno} calls .{node.func.attr}()"
        for module, path in MODULES.items()
        if not module.startswith("vscand.queue") and module != "vscand.producer"
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8")))
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr in ("execute", "eval", "blocking")
    )
    assert offenders == []
