"""The architecture stays true: ARCHITECTURE.md's transition table is the domain's, the
import contracts of pyproject.toml hold (and catch a broken rule), no two modules import
each other round a cycle."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

import grimp

from ledger.domain import TRANSITIONS

ROOT = Path(__file__).parents[2]
DOC = ROOT / "ARCHITECTURE.md"
PACKAGES = ("ledger", "projections")
LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")


def documented_transitions() -> dict[str, tuple[set[str], str]]:
    lines = DOC.read_text().split("### Transition table", 1)[1].splitlines()
    rows = [line for line in lines if line.startswith("| Slot")]
    table = {}
    for row in rows:
        event, sources, target = (cell.strip() for cell in row.strip("|").split("|"))
        table[event] = ({s.strip() for s in sources.split(",")}, target)
    return table


def test_transition_table_matches_the_domain() -> None:
    documented = documented_transitions()
    assert documented.pop("SlotProvisioned") == ({"(new)"}, "idle")
    assert set(documented) == set(TRANSITIONS)
    for name, rule in TRANSITIONS.items():
        sources, target = documented[name]
        assert sources == {s.value for s in rule.sources}, name
        if rule.retires:
            assert target.startswith("retired"), name
        elif rule.target is None:
            assert target == "(unchanged)", name
        else:
            assert target == rule.target.value, name


def lint_imports(tree: Path, *contracts: str) -> subprocess.CompletedProcess[str]:
    """``lint-imports`` over the packages in ``tree`` with ``tree``'s pyproject.toml;
    the packages are found there first (PYTHONPATH), not in the editable install."""
    env = {**os.environ, "PYTHONPATH": str(tree), "COLUMNS": "200"}
    selected = [arg for contract in contracts for arg in ("--contract", contract)]
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo", *selected],
        cwd=tree,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_import_contracts_hold() -> None:
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr


def test_a_broken_import_rule_fails_the_contracts(tmp_path: Path) -> None:
    for package in PACKAGES:
        shutil.copytree(
            ROOT / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__")
        )
    shutil.copy(ROOT / "pyproject.toml", tmp_path)
    victim = tmp_path / "ledger" / "domain" / "invariants.py"
    victim.write_text(victim.read_text() + "\nimport ledger.entrypoints.web.app\n")

    result = lint_imports(tmp_path, "domain")

    assert result.returncode != 0
    assert "The domain imports nothing of ours but ledger.errors BROKEN" in result.stdout
    assert "ledger.domain.invariants -> ledger.entrypoints.web.app" in result.stdout


def strongly_connected(graph: Mapping[str, Iterable[str]]) -> list[set[str]]:
    """Tarjan's strongly connected components, iteratively (no recursion limit)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    for root in graph:
        if root in index:
            continue
        work = [(root, iter(graph[root]))]
        index[root] = low[root] = len(index)
        stack.append(root)
        on_stack.add(root)
        while work:
            node, successors = work[-1]
            for successor in successors:
                if successor not in index:
                    index[successor] = low[successor] = len(index)
                    stack.append(successor)
                    on_stack.add(successor)
                    work.append((successor, iter(graph[successor])))
                    break
                if successor in on_stack:
                    low[node] = min(low[node], index[successor])
            else:
                work.pop()
                if work:
                    parent = work[-1][0]
                    low[parent] = min(low[parent], low[node])
                if low[node] == index[node]:
                    component = set()
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.add(member)
                        if member == node:
                            break
                    components.append(component)
    return components


def test_strongly_connected_finds_a_cycle_and_only_it() -> None:
    graph = {"a": ["b"], "b": ["c"], "c": ["a", "d"], "d": []}
    assert sorted(map(sorted, strongly_connected(graph))) == [["a", "b", "c"], ["d"]]


def test_no_import_cycles_between_modules() -> None:
    """Every module of ours, each package's ``__init__`` as one more module, and every
    import between them (those under ``TYPE_CHECKING`` too: a cycle there is a design
    cycle all the same). Module-level, not package-level: a package-level view merges a
    package's modules into one node, so it hides the cycles inside a package (a module
    and the ``__init__`` that re-exports it, ``application`` and ``group_commit`` held
    by a lazy import) and it reports a package that merely contains both ends of a
    legal chain; Python imports modules, and two modules that need each other are what
    makes import order matter. Lazy imports inside functions count: they only defer it."""
    graph = grimp.build_graph(*PACKAGES, cache_dir=None)
    imports = {m: graph.find_modules_directly_imported_by(m) for m in graph.modules}
    cycles = [sorted(c) for c in strongly_connected(imports) if len(c) > 1]
    assert cycles == [], "modules that import each other round a cycle: " + "; ".join(
        " <-> ".join(c) for c in cycles
    )
