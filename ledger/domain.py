"""Domain layer: the slot lifecycle as event-sourced aggregates, free of I/O.

Two aggregates:

- :class:`Slot` is one pre-provisioned Coolify application. Its events are the ledger's
  audit trail: every one carries the actor, a correlation id and the bot involved.
- :class:`Pool` is the membership of a pool: it hands out unique slot names and enforces
  the maximum size. Saving a new slot together with its pool makes concurrent
  provisioning conflict on the pool's version instead of creating duplicates.

Guards and clock reads live in the public command methods; each event's ``apply`` only
mutates state, because it also runs on replay (eventsourcing notes, section 2).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.errors import BadInput, IllegalTransition, PoolFull, StaleLease, WrongBot

__all__ = [
    "ACTOR_PATTERN",
    "BOT_ID_PATTERN",
    "CONFIG_KEY_PATTERN",
    "PLATFORM_PATTERN",
    "TRANSITIONS",
    "Pool",
    "QueueEntry",
    "QueueStatus",
    "Slot",
    "SlotStatus",
    "Transition",
    "check_actor",
    "check_bot_id",
    "check_config",
    "check_platform",
    "pool_id",
]


class SlotStatus(StrEnum):
    """The one status type, exactly the seed's ``idle | deploying | busy | error``."""

    IDLE = "idle"
    DEPLOYING = "deploying"
    BUSY = "busy"
    ERROR = "error"


ALL_STATUSES = frozenset(SlotStatus)


@dataclass(frozen=True)
class Transition:
    """One row of the transition table: which statuses an event may follow, and where
    it leads (``None`` = the status is unchanged; ``retires`` = the slot leaves the pool)."""

    event: str
    sources: frozenset[SlotStatus]
    target: SlotStatus | None
    retires: bool = False


TRANSITIONS: Mapping[str, Transition] = {
    t.event: t
    for t in (
        Transition("SlotAcquired", frozenset({SlotStatus.IDLE}), SlotStatus.DEPLOYING),
        Transition("SlotDeploying", frozenset({SlotStatus.DEPLOYING}), None),
        Transition("SlotStarted", frozenset({SlotStatus.DEPLOYING}), SlotStatus.BUSY),
        Transition(
            "SlotReleased", frozenset({SlotStatus.DEPLOYING, SlotStatus.BUSY}), SlotStatus.IDLE
        ),
        Transition("SlotFailed", ALL_STATUSES, SlotStatus.ERROR),
        Transition("SlotRecoveryFailed", frozenset({SlotStatus.ERROR}), None),
        Transition("SlotRecovered", frozenset({SlotStatus.ERROR}), SlotStatus.IDLE),
        Transition("SlotAppCreated", ALL_STATUSES, None),
        Transition("SlotHeartbeatRefused", ALL_STATUSES, None),
        Transition(
            "SlotRetired", frozenset({SlotStatus.IDLE, SlotStatus.ERROR}), None, retires=True
        ),
    )
}
"""The lifecycle as data: the aggregate's guards and the invariant checker both read it.
``SlotProvisioned`` creates a slot in ``idle`` and is not listed (it has no source)."""

ACTOR_PATTERN = re.compile(r"^(api|worker|operator|policy:[a-z0-9][a-z0-9_.-]{0,62})$")
BOT_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.:@-]{0,127}$")
PLATFORM_PATTERN = re.compile(r"^[a-z0-9][a-z0-9-]{0,39}$")


def check_actor(actor: str) -> str:
    """Actors are a closed vocabulary so audit queries can group by them."""
    if not ACTOR_PATTERN.match(actor):
        msg = f"actor {actor!r} must be 'api', 'worker', 'operator' or 'policy:<name>'"
        raise BadInput(msg)
    return actor


def check_bot_id(bot_id: str) -> str:
    if not isinstance(bot_id, str) or not BOT_ID_PATTERN.match(bot_id):
        msg = f"bot id {bot_id!r} must be 1-128 characters of letters, digits and _.:@-"
        raise BadInput(msg)
    return bot_id


def check_platform(platform: str) -> str:
    if not isinstance(platform, str) or not PLATFORM_PATTERN.match(platform):
        msg = f"platform {platform!r} must be 1-40 lowercase letters, digits or dashes"
        raise BadInput(msg)
    return platform


CONFIG_KEY_PATTERN = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,127}$")


def check_config(config: dict[str, str]) -> dict[str, str]:
    """A bot's configuration becomes container environment variables: keys must be valid
    variable names and values strings (Coolify rejects anything else with a 422)."""
    if not isinstance(config, dict) or len(config) > 100:
        raise BadInput("config must be an object of at most 100 string values")
    for key, value in config.items():
        if not isinstance(key, str) or not CONFIG_KEY_PATTERN.match(key):
            raise BadInput(f"config key {key!r} must be a variable name like MEETING_URL")
        if not isinstance(value, str) or len(value) > 4096:
            raise BadInput(f"config value of {key} must be a string of at most 4096 characters")
    return dict(config)


def pool_id(pool_name: str) -> UUID:
    """Pools are found by name, so their id is derived from it."""
    return uuid5(NAMESPACE_URL, f"slotledger:pool:{pool_name}")


class Slot(Aggregate):
    """A warm Coolify application that bots lease one at a time."""

    class SlotEvent(Aggregate.Event):
        """Fields every slot event carries, for the audit trail."""

        actor: str
        correlation_id: str
        bot_id: str | None

        def transition(self) -> Transition | None:
            return TRANSITIONS.get(type(self).__name__)

        def apply(self, aggregate: Any) -> None:
            slot: Slot = aggregate
            transition = self.transition()
            if transition is not None and transition.target is not None:
                slot.status = transition.target
                slot.status_since = self.timestamp
            self.apply_fields(slot)

        def apply_fields(self, slot: Slot) -> None:
            """Event-specific state changes beyond the status."""

    class SlotProvisioned(Aggregate.Created, SlotEvent):
        pool: str
        name: str
        platform: str
        coolify_uuid: str | None

    class SlotAcquired(SlotEvent):
        def apply_fields(self, slot: Slot) -> None:
            slot.bot_id = self.bot_id
            slot.lease += 1
            slot.deployment_uuid = None

    class SlotDeploying(SlotEvent):
        deployment_uuid: str | None

        def apply_fields(self, slot: Slot) -> None:
            slot.deployment_uuid = self.deployment_uuid

    class SlotStarted(SlotEvent):
        pass

    class SlotReleased(SlotEvent):
        def apply_fields(self, slot: Slot) -> None:
            slot.bot_id = None
            slot.last_used = self.timestamp
            slot.recovery_attempts = 0

    class SlotFailed(SlotEvent):
        """``reason_code`` arrived in v2 so failures can be grouped; v1 had only text."""

        class_version = 2
        reason: str
        reason_code: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["reason_code"] = "unspecified"

        def apply_fields(self, slot: Slot) -> None:
            if slot.bot_id is not None:
                slot.last_used = self.timestamp
            slot.bot_id = None
            slot.last_error = self.reason

    class SlotRecoveryFailed(SlotEvent):
        reason: str

        def apply_fields(self, slot: Slot) -> None:
            slot.recovery_attempts += 1
            slot.last_error = self.reason

    class SlotRecovered(SlotEvent):
        def apply_fields(self, slot: Slot) -> None:
            slot.recovery_attempts = 0

    class SlotAppCreated(SlotEvent):
        """The slot got its Coolify application: the first one (``previous_uuid`` is
        ``None``), or a new one after the old one vanished outside the ledger."""

        previous_uuid: str | None
        coolify_uuid: str

        def apply_fields(self, slot: Slot) -> None:
            slot.coolify_uuid = self.coolify_uuid

    class SlotHeartbeatRefused(SlotEvent):
        """A heartbeat from a bot that does not hold the slot: kept as evidence, never
        applied (the origin system's post-release confusion had no such trail)."""

        reason: str

    class SlotRetired(SlotEvent):
        reason: str

        def apply_fields(self, slot: Slot) -> None:
            slot.retired = True

    def __init__(
        self,
        *,
        pool: str,
        name: str,
        platform: str,
        coolify_uuid: str | None,
        actor: str,
        correlation_id: str,
        bot_id: str | None,
    ) -> None:
        self.pool = pool
        self.name = name
        self.platform = platform
        self.coolify_uuid = coolify_uuid
        self.status = SlotStatus.IDLE
        self.status_since: datetime = self.created_on
        self.bot_id: str | None = bot_id
        self.lease = 0
        self.deployment_uuid: str | None = None
        self.last_used: datetime | None = None
        self.last_error: str | None = None
        self.recovery_attempts = 0
        self.retired = False

    # Commands: guards first, then one event. Nothing changes when a guard raises.

    @classmethod
    def provision(
        cls,
        *,
        slot_id: UUID,
        pool: str,
        name: str,
        platform: str,
        coolify_uuid: str | None,
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> Slot:
        check_actor(actor)
        check_platform(platform)
        return cls._create(
            cls.SlotProvisioned,
            id=slot_id,
            timestamp=at,
            pool=pool,
            name=name,
            platform=platform,
            coolify_uuid=coolify_uuid,
            actor=actor,
            correlation_id=correlation_id,
            bot_id=None,
        )

    def acquire(self, bot_id: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        check_bot_id(bot_id)
        self._emit(self.SlotAcquired, at, actor, correlation_id, bot_id)

    def mark_deploying(
        self,
        deployment_uuid: str | None,
        *,
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> None:
        self._emit(
            self.SlotDeploying,
            at,
            actor,
            correlation_id,
            self.bot_id,
            deployment_uuid=deployment_uuid,
        )

    def check_lease(self, lease: int | None) -> None:
        """Fencing: work done for an earlier lease of this slot (a deploy that outlived
        its bot's release) must not change the current lease."""
        if lease is not None and lease != self.lease:
            msg = f"slot {self.name} is on lease {self.lease}, not {lease}: the request is stale"
            raise StaleLease(msg)

    def mark_started(self, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._emit(self.SlotStarted, at, actor, correlation_id, self.bot_id)

    def release(self, bot_id: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._check_allowed(self.SlotReleased)
        self._check_holder(bot_id)
        self._emit(self.SlotReleased, at, actor, correlation_id, bot_id)

    def fail(
        self,
        reason: str,
        *,
        reason_code: str = "unspecified",
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> None:
        self._emit(
            self.SlotFailed,
            at,
            actor,
            correlation_id,
            self.bot_id,
            reason=_check_reason(reason),
            reason_code=reason_code,
        )

    def recovery_failed(
        self, reason: str, *, at: datetime, actor: str, correlation_id: str
    ) -> None:
        self._emit(
            self.SlotRecoveryFailed,
            at,
            actor,
            correlation_id,
            None,
            reason=_check_reason(reason),
        )

    def recover(self, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._emit(self.SlotRecovered, at, actor, correlation_id, None)

    def app_created(
        self, coolify_uuid: str, *, at: datetime, actor: str, correlation_id: str
    ) -> None:
        self._emit(
            self.SlotAppCreated,
            at,
            actor,
            correlation_id,
            self.bot_id,
            previous_uuid=self.coolify_uuid,
            coolify_uuid=coolify_uuid,
        )

    def heartbeat(self, bot_id: str, *, at: datetime, actor: str, correlation_id: str) -> bool:
        """A heartbeat from the holder proves its container runs: while ``deploying`` it
        starts the slot (True); while ``busy`` it changes nothing. Anyone else is refused."""
        self._check_holder(bot_id)
        if self.status is SlotStatus.DEPLOYING:
            self.mark_started(at=at, actor=actor, correlation_id=correlation_id)
            return True
        return False

    def refuse_heartbeat(
        self, bot_id: str, reason: str, *, at: datetime, actor: str, correlation_id: str
    ) -> None:
        self._emit(
            self.SlotHeartbeatRefused,
            at,
            actor,
            correlation_id,
            check_bot_id(bot_id),
            reason=_check_reason(reason),
        )

    def retire(self, reason: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._emit(self.SlotRetired, at, actor, correlation_id, None, reason=_check_reason(reason))

    def _check_holder(self, bot_id: str) -> None:
        check_bot_id(bot_id)
        if self.bot_id != bot_id:
            holder = f"bot {self.bot_id!r}" if self.bot_id else "no bot"
            msg = f"slot {self.name} is held by {holder}, not by bot {bot_id!r}"
            raise WrongBot(msg)

    def _emit(
        self,
        event_class: type[SlotEvent],
        at: datetime,
        actor: str,
        correlation_id: str,
        bot_id: str | None,
        **fields: Any,
    ) -> None:
        check_actor(actor)
        self._check_allowed(event_class)
        self.trigger_event(
            event_class,
            timestamp=at,
            actor=actor,
            correlation_id=correlation_id,
            bot_id=bot_id,
            **fields,
        )

    def _check_allowed(self, event_class: type[SlotEvent]) -> None:
        transition = TRANSITIONS[event_class.__name__]
        if self.retired:
            msg = f"slot {self.name} is retired: {event_class.__name__} is not allowed"
            raise IllegalTransition(msg)
        if self.status not in transition.sources:
            allowed = ", ".join(sorted(transition.sources))
            msg = (
                f"{event_class.__name__} is not allowed for slot {self.name} in status "
                f"{self.status.value!r} (allowed from: {allowed})"
            )
            raise IllegalTransition(msg)


def _check_reason(reason: str) -> str:
    reason = reason.strip() if isinstance(reason, str) else ""
    if not reason:
        msg = "a reason is required"
        raise BadInput(msg)
    return reason[:1000]


class Pool(Aggregate):
    """Pool membership: unique names and the maximum size, decided in one place."""

    class PoolEvent(Aggregate.Event):
        actor: str
        correlation_id: str

    class PoolCreated(Aggregate.Created, PoolEvent):
        name: str
        prefix: str
        max_size: int

    class PoolResized(PoolEvent):
        max_size: int

        def apply(self, aggregate: Any) -> None:
            aggregate.max_size = self.max_size

    class SlotAdmitted(PoolEvent):
        slot_id: UUID
        platform: str
        slot_name: str

        def apply(self, aggregate: Any) -> None:
            pool: Pool = aggregate
            pool.members[str(self.slot_id)] = self.platform
            pool.next_number[self.platform] = pool.next_number.get(self.platform, 0) + 1

    class SlotRemoved(PoolEvent):
        slot_id: UUID

        def apply(self, aggregate: Any) -> None:
            aggregate.members.pop(str(self.slot_id), None)

    MAX_SIZE_LIMIT: ClassVar[int] = 10_000

    def __init__(
        self, *, name: str, prefix: str, max_size: int, actor: str, correlation_id: str
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.max_size = max_size
        self.members: dict[str, str] = {}
        self.next_number: dict[str, int] = {}

    @classmethod
    def create(
        cls, *, name: str, prefix: str, max_size: int, at: datetime, correlation_id: str
    ) -> Pool:
        cls._check_max_size(max_size)
        return cls._create(
            cls.PoolCreated,
            id=pool_id(name),
            timestamp=at,
            name=name,
            prefix=prefix,
            max_size=max_size,
            actor="operator",
            correlation_id=correlation_id,
        )

    @property
    def size(self) -> int:
        return len(self.members)

    def resize(self, max_size: int, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._check_max_size(max_size)
        check_actor(actor)
        if max_size != self.max_size:
            self.trigger_event(
                self.PoolResized,
                timestamp=at,
                max_size=max_size,
                actor=actor,
                correlation_id=correlation_id,
            )

    def admit(
        self, slot_id: UUID, platform: str, *, at: datetime, actor: str, correlation_id: str
    ) -> str:
        """Reserve the next name for a new slot; refuse when the pool is full."""
        check_platform(platform)
        check_actor(actor)
        if self.size >= self.max_size:
            msg = f"pool {self.name} is at its maximum size of {self.max_size} slots"
            raise PoolFull(msg)
        number = self.next_number.get(platform, 0) + 1
        name = f"{self.prefix}-{platform}-{number:03d}"
        self.trigger_event(
            self.SlotAdmitted,
            timestamp=at,
            slot_id=slot_id,
            platform=platform,
            slot_name=name,
            actor=actor,
            correlation_id=correlation_id,
        )
        return name

    def remove(self, slot_id: UUID, *, at: datetime, actor: str, correlation_id: str) -> None:
        if str(slot_id) in self.members:
            self.trigger_event(
                self.SlotRemoved,
                timestamp=at,
                slot_id=slot_id,
                actor=actor,
                correlation_id=correlation_id,
            )

    @classmethod
    def _check_max_size(cls, max_size: int) -> None:
        if not isinstance(max_size, int) or not 1 <= max_size <= cls.MAX_SIZE_LIMIT:
            msg = f"max pool size must be between 1 and {cls.MAX_SIZE_LIMIT}, got {max_size!r}"
            raise BadInput(msg)


class QueueStatus(StrEnum):
    WAITING = "waiting"
    DISPATCHED = "dispatched"
    EXPIRED = "expired"
    CANCELLED = "cancelled"


class QueueEntry(Aggregate):
    """A bot's request waiting for a slot while the pool is full. Entries are never
    deleted: dispatch, expiry and cancellation are events, so queue time is auditable."""

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
        check_actor(actor)
        if platform is not None:
            check_platform(platform)
        if not isinstance(priority, int) or not -1000 <= priority <= 1000:
            msg = f"priority must be an integer from -1000 to 1000, got {priority!r}"
            raise BadInput(msg)
        if not 0 < timeout_s <= cls.MAX_TIMEOUT_S:
            msg = f"queue timeout must be in (0, {cls.MAX_TIMEOUT_S:g}] seconds, got {timeout_s!r}"
            raise BadInput(msg)
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
        self._end(self.QueueEntryExpired, at, actor, correlation_id, reason=_check_reason(reason))

    def cancel(self, reason: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._end(self.QueueEntryCancelled, at, actor, correlation_id, reason=_check_reason(reason))

    def _end(
        self,
        event_class: type[QueueEvent],
        at: datetime,
        actor: str,
        correlation_id: str,
        **fields: Any,
    ) -> None:
        check_actor(actor)
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
