"""The projector: folds a batch of decoded events into row changes, free of I/O.

A batch is folded in memory and written in one transaction, so the per-event cost is
Python, not a database round trip. The slot and queue rows are folded with the domain
events' own ``apply()`` (and creation events with ``mutate(None)``), so the read models
cannot drift from what the aggregates do; status intervals follow the transition table.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field, fields
from datetime import datetime
from functools import singledispatch
from typing import Any, Literal, TypeVar
from uuid import UUID

import orjson
from eventsourcing.domain import DomainEventProtocol

from ledger.domain import Pool, QueueEntry, Slot
from ledger.domain.drift import Drift
from ledger.domain.violations import Violations
from projections.errors import ProjectionError
from projections.jsonable import encode
from projections.models.records import (
    AuditRecord,
    Interval,
    JSONText,
    PoolSize,
    QueueState,
    SlotState,
)

__all__ = ["EVENT_TYPES", "Batch", "Changes", "Event", "Positioned", "Projector"]

Event = DomainEventProtocol[UUID]
Positioned = tuple[int, Event]


@dataclass(frozen=True)
class Batch:
    """What a consumer of the log reads in one go: the events to take, and how far the
    batch reaches (``last``), which is further when parked events were left out."""

    events: list[Positioned]
    last: int
    """The position the consumer's tracking moves to once the batch is taken."""
    read: int
    """How many log positions the batch covers, taken or left out (0: caught up)."""


def _leaf_event_types() -> frozenset[str]:
    """Names of the concrete event classes of the ledger's aggregates: the values an
    audit query may filter on. Bases (``SlotEvent``, ``Created`` ...) have subclasses."""
    classes = {
        v
        for aggregate in (Slot, Pool, QueueEntry, Violations, Drift)
        for v in vars(aggregate).values()
        if isinstance(v, type)
        and issubclass(v, aggregate.Event)
        and v not in (aggregate.Event, aggregate.Created)  # the library's generated bases
    }
    return frozenset(
        c.__name__ for c in classes if not any(o is not c and issubclass(o, c) for o in classes)
    )


EVENT_TYPES = _leaf_event_types()

_SLOT_ATTRIBUTES = tuple(
    f.name for f in fields(SlotState) if f.name not in ("slot_id", "since_position")
)
_QUEUE_ATTRIBUTES = tuple(f.name for f in fields(QueueState) if f.name != "entry_id")
_IN_COLUMNS = frozenset(
    {
        "originator_id",
        "originator_version",
        "timestamp",
        "bot_id",
        "actor",
        "correlation_id",
        "reason",
    }
)
_NO_DATA = JSONText("{}")
_TO_TS = Interval._fields.index("to_ts")


@dataclass
class Changes:
    """Everything one batch changes, ready for bulk writes."""

    position: int = 0
    event_at: datetime | None = None
    slots: dict[UUID, SlotState] = field(default_factory=dict)
    """Prior rows of the batch's slots on the way in, their new rows on the way out."""
    queue: dict[UUID, QueueState] = field(default_factory=dict)
    opened: dict[int, Interval] = field(default_factory=dict)
    """Intervals that start in this batch (some also end in it), by starting position."""
    closed: dict[int, tuple[UUID, datetime, int]] = field(default_factory=dict)
    """Intervals opened by an earlier batch and ended by this one, by starting position:
    (slot_id, to_ts, to_position)."""
    pool_sizes: list[PoolSize] = field(default_factory=list)
    audit: list[AuditRecord] = field(default_factory=list)

    def close_interval(self, slot_id: UUID, since: int, at: datetime, position: int) -> None:
        opened = self.opened.get(since)
        if opened is None:
            self.closed[since] = (slot_id, at, position)
        else:
            self.opened[since] = _row(Interval, (*opened[:_TO_TS], at, position, opened.bot_id))

    def open_interval(self, interval: Interval) -> None:
        self.opened[interval.from_position] = interval


@dataclass(frozen=True)
class _Kind:
    """What the projector needs about one event class, worked out on its first event."""

    name: str
    handler: Callable[[Event, int, Changes], None]
    updates: Literal["slot", "queue"] | None
    """Whose current row the event changes (and the batch must load first)."""
    slot_is_originator: bool
    extras: tuple[str, ...]
    """The fields without a column of their own: the audit record's ``data``."""


class Projector:
    """Stateless between batches: everything it needs comes in with the batch."""

    def __init__(self) -> None:
        self._kinds: dict[type, _Kind] = {}

    def prior_ids(self, events: Iterable[Positioned]) -> tuple[set[UUID], set[UUID]]:
        """Ids of the slots and queue entries whose current rows the batch updates."""
        ids: dict[str | None, set[UUID]] = {"slot": set(), "queue": set(), None: set()}
        kinds = self._kinds
        for _, event in events:
            ids[(kinds.get(type(event)) or self._kind(event)).updates].add(event.originator_id)
        return ids["slot"], ids["queue"]

    def fold(
        self,
        events: Sequence[Positioned],
        slots: dict[UUID, SlotState],
        queue: dict[UUID, QueueState],
    ) -> Changes:
        """Fold events (in log order) onto the prior rows of the slots and entries they
        touch; the dicts are updated in place and returned inside the changes."""
        changes = Changes(slots=slots, queue=queue)
        audit, kinds, record = changes.audit.append, self._kinds, self._audit
        for position, event in events:
            kind = kinds.get(type(event)) or self._kind(event)
            audit(record(position, event, kind))
            kind.handler(event, position, changes)
        last_position, last_event = events[-1]
        changes.position = last_position
        changes.event_at = getattr(last_event, "timestamp", None)
        return changes

    def _kind(self, event: Event) -> _Kind:
        """Work out (once per class) what the projector needs about an event's class."""
        cls = type(event)
        kind = self._kinds.get(cls)
        if kind is None:
            creates = issubclass(cls, Slot.SlotProvisioned | QueueEntry.QueueEntryEnqueued)
            updates: Literal["slot", "queue"] | None = (
                None
                if creates
                else "slot"
                if issubclass(cls, Slot.SlotEvent)
                else "queue"
                if issubclass(cls, QueueEntry.QueueEvent)
                else None
            )
            kind = self._kinds[cls] = _Kind(
                name=cls.__name__,
                handler=_fold.dispatch(cls),
                updates=updates,
                slot_is_originator=issubclass(cls, Slot.SlotEvent),
                extras=tuple(k for k in vars(event) if k not in _IN_COLUMNS),
            )
        return kind

    @staticmethod
    def _audit(position: int, event: Event, kind: _Kind) -> AuditRecord:
        state = vars(event)
        get = state.get
        originator = state["originator_id"]
        extras = kind.extras
        data = (
            JSONText(orjson.dumps({k: state[k] for k in extras}, default=encode).decode())
            if extras
            else _NO_DATA
        )
        return _row(
            AuditRecord,
            (
                position,
                originator,
                state["originator_version"],
                originator if kind.slot_is_originator else get("slot_id"),
                get("bot_id"),
                kind.name,
                state["timestamp"],
                get("actor"),
                get("correlation_id"),
                get("reason"),
                data,
            ),
        )


@singledispatch
def _fold(event: Event, position: int, changes: Changes) -> None:
    """Events without a model of their own (pool membership ...) are only audited."""


@_fold.register
def _(event: Slot.SlotProvisioned, position: int, changes: Changes) -> None:
    slot = event.mutate(None)
    assert slot is not None
    state = SlotState(
        slot_id=slot.id,
        since_position=position,
        **{name: getattr(slot, name) for name in _SLOT_ATTRIBUTES},
    )
    changes.slots[state.slot_id] = state
    changes.open_interval(_interval(state, event.timestamp))


@_fold.register
def _(event: Slot.SlotEvent, position: int, changes: Changes) -> None:
    state = _prior(changes.slots, event, position)
    event.apply(state)
    state.version = event.originator_version
    transition = event.transition()
    if transition is None or (transition.target is None and not transition.retires):
        return
    changes.close_interval(state.slot_id, state.since_position, event.timestamp, position)
    if transition.target is not None:
        state.since_position = position
        changes.open_interval(_interval(state, event.timestamp))


@_fold.register
def _(event: Pool.PoolCreated | Pool.PoolResized, position: int, changes: Changes) -> None:
    changes.pool_sizes.append(
        PoolSize(event.originator_id, position, event.timestamp, event.max_size)
    )


@_fold.register
def _(event: QueueEntry.QueueEntryEnqueued, position: int, changes: Changes) -> None:
    entry = event.mutate(None)
    assert entry is not None
    changes.queue[entry.id] = QueueState(
        entry_id=entry.id, **{name: getattr(entry, name) for name in _QUEUE_ATTRIBUTES}
    )


@_fold.register
def _(event: QueueEntry.QueueEvent, position: int, changes: Changes) -> None:
    state = _prior(changes.queue, event, position)
    event.apply(state)
    state.version = event.originator_version


def _interval(state: SlotState, at: datetime) -> Interval:
    return _row(
        Interval, (state.slot_id, state.since_position, state.status, at, None, None, state.bot_id)
    )


R = TypeVar("R", bound=tuple[Any, ...])


def _row(record: type[R], values: tuple[Any, ...]) -> R:
    """A named-tuple record made from its values at C speed (its generated ``__new__``
    is Python: a row per event adds up)."""
    return tuple.__new__(record, values)


def _prior(rows: dict[UUID, Any], event: Event, position: int) -> Any:
    try:
        return rows[event.originator_id]
    except KeyError:
        msg = (
            f"{type(event).__name__} at position {position} is for "
            f"{event.originator_id}, which the read models have never seen: rebuild them"
        )
        raise ProjectionError(msg) from None
