"""The slot aggregates this process last saved or loaded, reused when still current.

A decision reads the slot's inline index row first, and the row is written in the same
transaction as the slot's events, so a cached slot at the row's version is exactly the
stored slot: the decision then needs no snapshot or event read. At any other version the
slot is loaded from the store. A stale copy can only cost a lost race at save time, never a
wrong decision: the save's version check refuses it as it refuses any concurrent writer.
Callers get their own deep copy, so a decision that is refused or loses its race leaves
the cache as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from uuid import UUID

from eventsourcing.application import LRUCache

from ledger.application.ports import SlotRow
from ledger.domain import Slot

__all__ = ["SlotCache"]


class SlotCache:
    """Slots by id, at the version they were last saved or loaded at (thread-safe: the
    library's LRU cache locks)."""

    MAXSIZE = 4096
    """Slots kept: a pool's worth, for pools of up to this many slots."""

    def __init__(self, load: Callable[[UUID], Slot], maxsize: int = MAXSIZE) -> None:
        self._load = load
        self._slots: LRUCache[UUID, Slot] = LRUCache(maxsize=maxsize)

    def at(self, row: SlotRow) -> Slot:
        """The slot of ``row``, a copy of the cached one when it is at the row's version,
        else loaded from the store (its version may then differ from the row's: the
        caller decides what a moved-on row means)."""
        try:
            cached = self._slots.get(row.slot_id)
        except KeyError:
            cached = None
        if cached is not None and cached.version == row.version:
            return copy.deepcopy(cached)
        slot = self._load(row.slot_id)
        self._keep(slot)
        return slot

    def saved(self, aggregates: Iterable[object]) -> None:
        """The slots among ``aggregates`` were just committed at their current version."""
        for aggregate in aggregates:
            if isinstance(aggregate, Slot):
                self._keep(aggregate)

    def _keep(self, slot: Slot) -> None:
        if not slot.pending_events:
            self._slots.put(slot.id, copy.deepcopy(slot))
