"""Aggregates this process last saved or loaded, reused when still current.

A decision reads the aggregate's inline index row first (slots and queue entries have
one), and the row is written in the same transaction as the aggregate's events, so a
cached aggregate at the row's version is exactly the stored one: the decision then needs
no snapshot or event read. A cached aggregate behind the row (another process wrote it
since) is brought forward with only the events after its version: one read of a few
events instead of a snapshot read and an event read. Without a cached copy, or ahead of
the row, the aggregate is loaded from the store. A stale copy can only cost a lost race
at save time, never a wrong decision: the save's version check refuses it as it refuses
any concurrent writer. Callers get their own deep copy, so a decision that is refused or
loses its race leaves the cache as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from typing import Generic, TypeVar
from uuid import UUID

from eventsourcing.application import LRUCache, project_aggregate
from eventsourcing.domain import Aggregate, DomainEventProtocol

__all__ = ["VersionedCache"]

A = TypeVar("A", bound=Aggregate)


class VersionedCache(Generic[A]):
    """Aggregates of one type by id, at the version they were last saved or loaded at
    (thread-safe: the library's LRU cache locks)."""

    MAXSIZE = 4096
    """Aggregates kept: a pool's worth, for pools of up to this many slots."""

    def __init__(
        self,
        kind: type[A],
        load: Callable[[UUID], A],
        events_after: Callable[[UUID, int], Iterable[DomainEventProtocol[UUID]]],
        maxsize: int = MAXSIZE,
    ) -> None:
        self._kind = kind
        self._load = load
        self._events_after = events_after
        self._kept: LRUCache[UUID, A] = LRUCache(maxsize=maxsize)

    def at(self, aggregate_id: UUID, version: int) -> A:
        """The aggregate, a copy of the cached one when it is at ``version`` (the index
        row's), else loaded from the store (its version may then differ: the caller
        decides what a moved-on row means)."""
        try:
            cached = self._kept.get(aggregate_id)
        except KeyError:
            cached = None
        if cached is not None and cached.version == version:
            return copy.deepcopy(cached)
        aggregate = None
        if cached is not None and cached.version < version:
            events = self._events_after(aggregate_id, cached.version)
            aggregate = project_aggregate(copy.deepcopy(cached), events)
        if aggregate is None or aggregate.version < version:
            aggregate = self._load(aggregate_id)
        self._keep(aggregate)
        return aggregate

    def saved(self, aggregates: Iterable[object]) -> None:
        """The aggregates of this type among ``aggregates`` were just committed at their
        current version."""
        for aggregate in aggregates:
            if isinstance(aggregate, self._kind):
                self._keep(aggregate)

    def _keep(self, aggregate: A) -> None:
        if not aggregate.pending_events:
            self._kept.put(aggregate.id, copy.deepcopy(aggregate))
