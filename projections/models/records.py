"""Rows of the read models and the results of their queries.

The row types double as the table definitions (:mod:`projections.schema` reads their
fields), so a column exists in exactly one place. ``SlotState`` and ``QueueState`` carry
the aggregates' attribute names because the projector folds them with the domain events'
own ``apply()``; they use ``slots=True`` so a new aggregate attribute fails loudly here
instead of silently going unprojected.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from datetime import datetime
from enum import StrEnum
from typing import Any, NamedTuple, NewType
from uuid import UUID

from ledger.domain import QueueStatus, SlotStatus

__all__ = [
    "AuditRecord",
    "BotLease",
    "Failure",
    "Interval",
    "JSONText",
    "Lag",
    "ParkedEvent",
    "ParkedStatus",
    "PoolSize",
    "PoolSnapshot",
    "PoolStats",
    "Progress",
    "QueueState",
    "QueueStats",
    "SlotAt",
    "SlotChange",
    "SlotHistory",
    "SlotState",
    "Tracking",
]

JSONText = NewType("JSONText", str)
"""A JSON document kept as text (``json`` on PostgreSQL, ``TEXT`` on SQLite)."""


@dataclass(slots=True)
class SlotState:
    """One row of ``slot_status``: a slot as its events left it."""

    slot_id: UUID
    pool: str
    name: str
    platform: str
    coolify_uuid: str | None
    status: SlotStatus
    status_since: datetime
    since_position: int
    """Log position of the event that set the status: the key of the open interval."""
    bot_id: str | None
    lease: int
    deployment_uuid: str | None
    last_used: datetime | None
    last_error: str | None
    recovery_attempts: int
    retired: bool
    drained: bool
    """Out of acquisition (an operator's drain); the status is unchanged by it."""
    drain_scope: str | None
    version: int


@dataclass(slots=True)
class QueueState:
    """One row of ``queue_entries``: a bot's wait for a slot."""

    entry_id: UUID
    pool: str
    bot_id: str
    platform: str | None
    priority: int
    status: QueueStatus
    queued_at: datetime
    timeout_at: datetime
    ended_at: datetime | None
    slot_id: UUID | None
    reason: str | None
    version: int


class Interval(NamedTuple):
    """A stretch of time a slot spent in one status; ``to_ts`` is ``None`` while open.
    The bot cannot change within an interval: every event that changes it changes
    the status too."""

    slot_id: UUID
    from_position: int
    status: SlotStatus
    from_ts: datetime
    to_ts: datetime | None
    to_position: int | None
    bot_id: str | None

    def seconds(self, now: datetime) -> float:
        """How long the slot spent in the status (an open interval counts up to ``now``)."""
        return max(((self.to_ts or now) - self.from_ts).total_seconds(), 0.0)


class PoolSize(NamedTuple):
    """The maximum size a pool had from a position on."""

    pool_id: UUID
    from_position: int
    from_ts: datetime
    max_size: int


class AuditRecord(NamedTuple):
    """One event of the log, indexed by slot, bot, type and time; ``data`` holds the
    event's fields that have no column of their own."""

    position: int
    originator_id: UUID
    originator_version: int
    slot_id: UUID | None
    bot_id: str | None
    type: str
    occurred_at: datetime
    actor: str | None
    correlation_id: str | None
    reason: str | None
    data: JSONText

    @property
    def fields(self) -> dict[str, Any]:
        """The event's other fields, decoded."""
        decoded: dict[str, Any] = json.loads(self.data)
        return decoded


class ParkedStatus(StrEnum):
    PARKED = "parked"
    """The consumer went on past it; it waits for an operator."""
    SKIPPED = "skipped"
    """An operator accepted that the consumer never takes it."""
    RETRIED = "retried"
    """An operator had it reprocessed, and it was taken."""


class ParkedEvent(NamedTuple):
    """An event a consumer could not take, recorded so the consumer goes on past it;
    one row per consumer and position, in the read models' store."""

    consumer: str
    position: int
    topic: str
    originator_id: UUID
    error: str
    attempts: int
    parked_at: datetime
    status: ParkedStatus
    resolved_at: datetime | None


class Tracking(NamedTuple):
    """How far a model set has projected the log, written with every batch."""

    name: str
    position: int
    event_at: datetime | None
    updated_at: datetime | None


@dataclass(frozen=True)
class PoolStats:
    """The dashboard's pool counters; retired slots are not counted."""

    total: int = 0
    idle: int = 0
    deploying: int = 0
    busy: int = 0
    error: int = 0
    max_size: int = 0

    @classmethod
    def count(cls, statuses: list[SlotStatus], max_size: int) -> PoolStats:
        return cls(
            total=len(statuses),
            idle=statuses.count(SlotStatus.IDLE),
            deploying=statuses.count(SlotStatus.DEPLOYING),
            busy=statuses.count(SlotStatus.BUSY),
            error=statuses.count(SlotStatus.ERROR),
            max_size=max_size,
        )

    def as_dict(self) -> dict[str, int]:
        """Exactly the seed's ``{total, idle, deploying, busy, error, maxSize}``."""
        return {
            "total": self.total,
            "idle": self.idle,
            "deploying": self.deploying,
            "busy": self.busy,
            "error": self.error,
            "maxSize": self.max_size,
        }


@dataclass(frozen=True)
class QueueStats:
    length: int
    oldest_queued_at: datetime | None
    average_wait_s: float | None
    """Mean time from enqueue to dispatch over every dispatched entry, to the ms."""


@dataclass(frozen=True)
class Lag:
    """How far behind the log a model set is. ``seconds`` is the age of the last
    projected event (None before the first); ``heartbeat_s`` is how long ago a follower
    last looked at the log (None when asked of the models directly), so a dead follower
    cannot look healthy just because nothing new was written."""

    head: int
    position: int
    seconds: float | None
    heartbeat_s: float | None = None

    @property
    def behind(self) -> int:
        """Upper bound of events not yet projected (positions can have gaps)."""
        return max(self.head - self.position, 0)


@dataclass(frozen=True)
class Progress:
    """Reported after each batch of a rebuild or replay."""

    events: int
    total: int
    seconds: float

    @property
    def rate(self) -> float:
        return self.events / self.seconds if self.seconds > 0 else 0.0


@dataclass(frozen=True)
class SlotHistory:
    """A slot's timeline: its status intervals, the time spent in each status, and its
    events. Empty (``slot`` is None) for an unknown slot."""

    slot: SlotState | None
    intervals: list[Interval] = field(default_factory=list)
    time_in_status: dict[SlotStatus, float] = field(default_factory=dict)
    events: list[AuditRecord] = field(default_factory=list)


@dataclass(frozen=True)
class BotLease:
    """One time a bot held a slot: from ``SlotAcquired`` to the release or failure."""

    slot_id: UUID
    slot_name: str | None
    acquired_at: datetime
    acquired_position: int
    ended_at: datetime | None
    ended_by: str | None


@dataclass(frozen=True)
class Failure:
    position: int
    occurred_at: datetime
    slot_id: UUID | None
    slot_name: str | None
    type: str
    reason: str | None
    reason_code: str | None
    bot_id: str | None
    actor: str | None


@dataclass(frozen=True)
class SlotAt:
    """A slot's state at an instant, as the status intervals have it."""

    slot_id: UUID
    name: str
    platform: str
    status: SlotStatus
    since: datetime
    bot_id: str | None


@dataclass(frozen=True)
class PoolSnapshot:
    at: datetime
    pool: str
    slots: list[SlotAt]
    stats: PoolStats


@dataclass(frozen=True)
class SlotChange:
    """What happened to one slot between two instants (None = not in the pool)."""

    slot_id: UUID
    name: str
    before: SlotStatus | None
    after: SlotStatus | None
    bot_before: str | None
    bot_after: str | None
    events: int
