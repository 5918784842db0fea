"""Aggregates this process last saved or loaded, reused when still current.

A decision reads the aggregate's inline index row first (slots and queue entries have
one), and the row is written in the same transaction as the aggregate's events, so a
cached aggregate at the row's version is exactly the stored one: the decision then needs
no snapshot or event read. A cached aggregate behind the row (another process wrote it
since) is brought forward with only the events after its version: one read of a few
events instead of a snapshot read and an event read. Without a cached copy, or ahead of
the row, the aggregate is loaded from the store. The pool, which has no index row, is
always brought forward: its copy is current once no event follows it. A stale copy can
only cost a lost race at save time, never a wrong decision: the save's version check
refuses it as it refuses any concurrent writer. Callers get their own copy, so a
decision that is refused or loses its race leaves the cache as it was.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterable
from datetime import date, datetime, timedelta
from enum import Enum
from typing import Any, Generic, TypeVar
from uuid import UUID

from eventsourcing.application import LRUCache, project_aggregate
from eventsourcing.domain import Aggregate, DomainEventProtocol

__all__ = ["VersionedCache", "own_copy"]

A = TypeVar("A", bound=Aggregate)

IMMUTABLE = (str, bytes, int, float, bool, type(None), date, datetime, timedelta, UUID, Enum)
"""Values a copy can share: nothing can change them in place."""


def own_copy(aggregate: A) -> A:
    """A copy that nothing done to ``aggregate`` can change, and the reverse: its
    immutable values are shared and only the others (pending events, a bot's
    configuration) copied deeply, which makes it several times cheaper than
    ``copy.deepcopy`` on every decision."""
    clone = copy.copy(aggregate)
    state: dict[str, Any] = clone.__dict__
    for name, value in state.items():
        if not isinstance(value, IMMUTABLE):
            state[name] = copy.deepcopy(value)
    return clone


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
        row's), brought forward when behind it, else loaded from the store (its version
        may then differ: the caller decides what a moved-on row means)."""
        cached = self._cached(aggregate_id)
        if cached is not None and cached.version == version:
            return own_copy(cached)
        if cached is not None and cached.version > version:
            cached = None  # the row read is older than this copy: trust neither
        return self._current(aggregate_id, cached, at_least=version)

    def latest(self, aggregate_id: UUID) -> A:
        """The aggregate as stored now, for one without an index row (the pool): the
        cached copy brought forward, which is one read that usually returns no event."""
        return self._current(aggregate_id, self._cached(aggregate_id), at_least=0)

    def _cached(self, aggregate_id: UUID) -> A | None:
        try:
            return self._kept.get(aggregate_id)
        except KeyError:
            return None

    def _current(self, aggregate_id: UUID, cached: A | None, *, at_least: int) -> A:
        """``cached`` brought forward, or the aggregate loaded when there is no copy or
        the copy brought forward is still below version ``at_least``."""
        aggregate = None
        if cached is not None:
            events = self._events_after(aggregate_id, cached.version)
            aggregate = project_aggregate(own_copy(cached), events)
        if aggregate is None or aggregate.version < at_least:
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
            self._kept.put(aggregate.id, own_copy(aggregate))
