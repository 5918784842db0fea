"""Comparing aggregates value by value and type by type: state from a snapshot must
equal state by replay (issue 10, defect 2)."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from eventsourcing.application import project_aggregate

from ledger.application import SlotLedger


def typed(value: Any) -> Any:
    """A value with the type of every part spelled out, so ``==`` also compares types."""
    if isinstance(value, dict):
        return dict, {typed(k): typed(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return type(value), [typed(v) for v in value]
    return type(value), value


def assert_same_state(restored: Any, replayed: Any) -> None:
    """Every attribute equal, and of the same type, nested values included."""
    assert type(restored) is type(replayed)
    assert vars(restored).keys() == vars(replayed).keys()
    for name, value in vars(replayed).items():
        assert typed(vars(restored)[name]) == typed(value), name


def replay(ledger: SlotLedger, aggregate_id: UUID) -> Any:
    """The aggregate from its events alone, no snapshot."""
    return project_aggregate(None, ledger.events.get(aggregate_id))
