"""ARCHITECTURE.md stays true: its transition table is the domain's."""

from __future__ import annotations

from pathlib import Path

from ledger.domain import TRANSITIONS

DOC = Path(__file__).parents[2] / "ARCHITECTURE.md"


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
