"""The :class:`QueueEntry` aggregate: a bot's request waiting for a slot."""

from __future__ import annotations

from collections.abc import Mapping
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.domain.snapshots import TypedState
from ledger.domain.text import (
    POOL_NAME_RULE,
    check_bot_id,
    check_config,
    check_origin,
    check_platform,
    check_reason,
    check_text,
)
from ledger.errors import BadInput, IllegalTransition

__all__ = ["QueueEntry", "QueueStatus"]


class QueueStatus(StrEnum):
    WAITING = "waiting"
    DISPATCHED = "dispatched"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class QueueEntry(TypedState, Aggregate):
    """A bot's request waiting for a slot while the pool is full. Entries are never
    deleted: dispatch, expiry and cancellation are events, so queue time is auditable."""

    state_types: ClassVar[Mapping[str, type[Any]]] = {
        **TypedState.state_types,
        "status": QueueStatus,
        "timeout_at": datetime,
        "slot_id": UUID,
        "ended_at": datetime,
    }

    DEFAULT_TIMEOUT_S: ClassVar[float] = 300.0
    MAX_TIMEOUT_S: ClassVar[float] = 600.0

    class QueueEvent(Aggregate.Event):
        actor: str
        correlation_id: str
        bot_id: str

    class QueueEntryEnqueued(Aggregate.Created, QueueEvent):
        """``config`` is the bot's configuration, applied when a slot is dispatched; it is
        stored forever, so it must hold settings, never secrets."""

        pool: str
        platform: str | None
        priority: int
        timeout_at: datetime
        config: dict[str, str]

    class QueueEntryDispatched(QueueEvent):
        slot_id: UUID

        def apply(self, aggregate: Any) -> None:
            aggregate.status = QueueStatus.DISPATCHED
            aggregate.slot_id = self.slot_id
            aggregate.ended_at = self.timestamp

    class QueueEntryExpired(QueueEvent):
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = QueueStatus.EXPIRED
            aggregate.reason = self.reason
            aggregate.ended_at = self.timestamp

    class QueueEntryCancelled(QueueEvent):
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.status = QueueStatus.CANCELLED
            aggregate.reason = self.reason
            aggregate.ended_at = self.timestamp

    def __init__(
        self,
        *,
        pool: str,
        platform: str | None,
        priority: int,
        timeout_at: datetime,
        config: dict[str, str],
        actor: str,
        correlation_id: str,
        bot_id: str,
    ) -> None:
        self.pool = pool
        self.config = config
        self.correlation_id = correlation_id
        self.platform = platform
        self.priority = priority
        self.timeout_at = timeout_at
        self.bot_id = bot_id
        self.status = QueueStatus.WAITING
        self.slot_id: UUID | None = None
        self.reason: str | None = None
        self.ended_at: datetime | None = None

    @classmethod
    def enqueue(
        cls,
        *,
        bot_id: str,
        pool: str,
        platform: str | None,
        priority: int,
        timeout_s: float,
        config: dict[str, str],
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> QueueEntry:
        check_bot_id(bot_id)
        check_origin(actor, correlation_id)
        check_text(pool, POOL_NAME_RULE, field="pool")
        if platform is not None:
            check_platform(platform)
        if type(priority) is not int or not -1000 <= priority <= 1000:  # bool is no priority
            msg = f"priority must be an integer from -1000 to 1000, got {priority!r}"
            raise BadInput(msg, field="priority")
        if not 0 < timeout_s <= cls.MAX_TIMEOUT_S:
            msg = f"queue timeout must be in (0, {cls.MAX_TIMEOUT_S:g}] seconds, got {timeout_s!r}"
            raise BadInput(msg, field="queue_timeout_s")
        return cls._create(
            cls.QueueEntryEnqueued,
            timestamp=at,
            pool=pool,
            platform=platform,
            priority=priority,
            timeout_at=at + timedelta(seconds=timeout_s),
            config=check_config(config),
            actor=actor,
            correlation_id=correlation_id,
            bot_id=bot_id,
        )

    @property
    def queued_at(self) -> datetime:
        return self.created_on

    def expiry_reason(self, at: datetime) -> str:
        """What the requester reads when its entry expires."""
        return f"no slot became available within {(at - self.queued_at).total_seconds():.0f}s"

    def dispatch(self, slot_id: UUID, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._end(self.QueueEntryDispatched, at, actor, correlation_id, slot_id=slot_id)

    def expire(self, reason: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._end(self.QueueEntryExpired, at, actor, correlation_id, reason=check_reason(reason))

    def cancel(self, reason: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._end(self.QueueEntryCancelled, at, actor, correlation_id, reason=check_reason(reason))

    def _end(
        self,
        event_class: type[QueueEvent],
        at: datetime,
        actor: str,
        correlation_id: str,
        **fields: Any,
    ) -> None:
        check_origin(actor, correlation_id)
        if self.status is not QueueStatus.WAITING:
            msg = (
                f"queue entry of bot {self.bot_id!r} is already {self.status.value}: "
                f"{event_class.__name__} is not allowed"
            )
            raise IllegalTransition(msg)
        self.trigger_event(
            event_class,
            timestamp=at,
            actor=actor,
            correlation_id=correlation_id,
            bot_id=self.bot_id,
            **fields,
        )
