"""The pool's capacity when its maximum is below its size (a smaller setting at start).

A pool may not have more slots in use at once than its maximum. Slots in use are the
occupied ones (deploying or busy); an acquire can add any idle slot that is not drained,
and an error slot once recovered. So the slots that can be in use are all the pool's
slots but the drained ones at rest (idle or error), and the ledger keeps enough of those
drained (scope ``size``) to stay within the maximum: error slots first, then idle ones,
by name, keeping the ones already drained. When too few slots are at rest, every slot it
may drain is drained until enough come to rest. Slots an operator drained count too, and
as room comes back the ledger's own drains are undone.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Protocol, TypeVar
from uuid import UUID

from ledger.domain import SlotStatus

__all__ = ["CapacityRow", "capacity_plan"]

AT_REST = frozenset({SlotStatus.IDLE, SlotStatus.ERROR})


class CapacityRow(Protocol):
    """What the plan reads of a slot (an index row, or a test's model of one)."""

    @property
    def slot_id(self) -> UUID: ...
    @property
    def name(self) -> str: ...
    @property
    def status(self) -> SlotStatus: ...
    @property
    def retired(self) -> bool: ...
    @property
    def drain_scope(self) -> str | None: ...


R = TypeVar("R", bound=CapacityRow)


def capacity_plan(rows: Sequence[R], max_size: int) -> tuple[list[R], list[R]]:
    """The slots to drain and to undrain (scope ``size``), by name, so that no more than
    ``max_size`` slots can ever be in use at once."""
    live = sorted((r for r in rows if not r.retired), key=lambda r: r.name)
    mine = [r for r in live if r.drain_scope in (None, "size")]
    theirs = sum(1 for r in live if r.drain_scope not in (None, "size") and r.status in AT_REST)
    wanted = max(0, len(live) - max_size - theirs)
    at_rest = sorted(
        (r for r in mine if r.status in AT_REST),
        key=lambda r: (r.drain_scope != "size", r.status is not SlotStatus.ERROR, r.name),
    )
    if wanted == 0:
        target: set[UUID] = set()
    elif len(at_rest) >= wanted:
        target = {r.slot_id for r in at_rest[:wanted]}
    else:
        target = {r.slot_id for r in mine}
    drain = [r for r in mine if r.slot_id in target and r.drain_scope is None]
    undrain = [r for r in mine if r.drain_scope == "size" and r.slot_id not in target]
    return drain, undrain
