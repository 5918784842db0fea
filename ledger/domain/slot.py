"""The :class:`Slot` aggregate and its lifecycle as data (:data:`TRANSITIONS`).

A slot is one pre-provisioned Coolify application. Its events are the ledger's audit
trail: every one carries the actor, a correlation id and the bot involved. Guards and clock
reads live in the public command methods; each event's ``apply`` only mutates state,
because it also runs on replay (eventsourcing notes, section 2).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Any, ClassVar, Literal
from uuid import UUID

from eventsourcing.domain import Aggregate

from ledger.domain.snapshots import TypedState
from ledger.domain.text import (
    COOLIFY_UUID_RULE,
    POOL_NAME_RULE,
    REASON_CODE_RULE,
    SLOT_NAME_RULE,
    check_bot_id,
    check_origin,
    check_platform,
    check_reason,
    check_text,
)
from ledger.errors import IllegalTransition, StaleLease, WrongBot

__all__ = [
    "ALL_STATUSES",
    "DRAIN_SCOPES",
    "OCCUPIED",
    "TRANSITIONS",
    "DrainScope",
    "Slot",
    "SlotStatus",
    "Transition",
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
    it leads (``None`` = the status is unchanged; ``retires`` = the slot leaves the pool).
    ``held``: only while a bot holds the slot, never while it is releasing (its lease
    ended, its container not gone yet: ``deploying`` or ``busy`` with no bot)."""

    event: str
    sources: frozenset[SlotStatus]
    target: SlotStatus | None
    retires: bool = False
    held: bool = False


OCCUPIED = frozenset({SlotStatus.DEPLOYING, SlotStatus.BUSY})
"""The statuses in which a container may run: held by a bot, or releasing."""


TRANSITIONS: Mapping[str, Transition] = {
    t.event: t
    for t in (
        Transition("SlotAcquired", frozenset({SlotStatus.IDLE}), SlotStatus.DEPLOYING),
        Transition("SlotDeploying", frozenset({SlotStatus.DEPLOYING}), None, held=True),
        Transition("SlotStarted", frozenset({SlotStatus.DEPLOYING}), SlotStatus.BUSY, held=True),
        Transition("SlotReleasing", OCCUPIED, None, held=True),
        Transition("SlotReleased", OCCUPIED, SlotStatus.IDLE),
        Transition("SlotFailed", ALL_STATUSES, SlotStatus.ERROR),
        Transition("SlotRecoveryFailed", frozenset({SlotStatus.ERROR}), None),
        Transition("SlotRecovered", frozenset({SlotStatus.ERROR}), SlotStatus.IDLE),
        Transition("SlotAppCreated", ALL_STATUSES, None),
        Transition("SlotHeartbeatRefused", ALL_STATUSES, None),
        Transition("SlotDrained", ALL_STATUSES, None),
        Transition("SlotUndrained", ALL_STATUSES, None),
        Transition(
            "SlotRetired", frozenset({SlotStatus.IDLE, SlotStatus.ERROR}), None, retires=True
        ),
    )
}
"""The lifecycle as data: the aggregate's guards and the invariant checker both read it.
``SlotProvisioned`` creates a slot in ``idle`` and is not listed (it has no source).

A release takes two steps when a container may still run: ``SlotReleasing`` ends the
bot's lease at once (the bot holds nothing and may ask again) while the status stays
what it was, since the container still occupies the slot; ``SlotReleased`` makes the
slot idle once Coolify reports the container gone. ``SlotReleased`` straight from a held
slot (one step) is what logs written before the two steps hold, and what a release
without Coolify does.

Draining takes a slot out of acquisition without touching its status: a held slot's lease
runs on, and after its release the slot stays idle, unused, until it is undrained."""

DrainScope = Literal["slot", "pool", "size"]
"""Why a slot is drained: an operator named it (``slot``); its pool was drained (``pool``,
which the pool's undrain reverses, leaving slots drained by name drained); or the pool has
more slots than its maximum, lowered below its size (``size``: the ledger drains the excess
and undrains it as room comes back)."""

DRAIN_SCOPES: Mapping[str, str] = {
    "slot": "by name",
    "pool": "with its pool",
    "size": "to keep the pool within its maximum",
}
"""Each scope as a refusal names it."""


class Slot(TypedState, Aggregate):
    """A warm Coolify application that bots lease one at a time.

    State version 3 added ``drained`` and ``drain_scope``: snapshots of version 2 are
    upcast to a slot that is not drained (no slot could be before)."""

    class_version: ClassVar[int] = 3
    state_types: ClassVar[Mapping[str, type[Any]]] = {
        **TypedState.state_types,
        "status": SlotStatus,
        "status_since": datetime,
        "last_used": datetime,
    }

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

    class SlotReleasing(SlotEvent):
        """The bot's lease ended; the slot waits for its container to be gone."""

        def apply_fields(self, slot: Slot) -> None:
            slot.bot_id = None

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

    class SlotDrained(SlotEvent):
        """No new lease on the slot until it is undrained; the current one runs on."""

        reason: str
        scope: str

        def apply_fields(self, slot: Slot) -> None:
            slot.drained = True
            slot.drain_scope = self.scope

    class SlotUndrained(SlotEvent):
        reason: str

        def apply_fields(self, slot: Slot) -> None:
            slot.drained = False
            slot.drain_scope = None

    @classmethod
    def upcast_v2_v3(cls, state: dict[str, Any]) -> None:
        state["drained"] = False
        state["drain_scope"] = None

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
        self.drained = False
        self.drain_scope: str | None = None

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
        check_origin(actor, correlation_id)
        check_text(pool, POOL_NAME_RULE, field="pool")
        check_text(name, SLOT_NAME_RULE, field="name")
        check_platform(platform)
        if coolify_uuid is not None:
            check_text(coolify_uuid, COOLIFY_UUID_RULE, field="coolify_uuid")
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
        if self.drained:
            msg = f"slot {self.name} is drained: SlotAcquired is not allowed until it is undrained"
            raise IllegalTransition(msg)
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
            deployment_uuid=None
            if deployment_uuid is None
            else check_text(deployment_uuid, COOLIFY_UUID_RULE, field="deployment_uuid"),
        )

    def check_lease(self, lease: int | None) -> None:
        """Fencing: work done for an earlier lease of this slot (a deploy that outlived
        its bot's release) must not change the current lease."""
        if lease is not None and lease != self.lease:
            msg = f"slot {self.name} is on lease {self.lease}, not {lease}: the request is stale"
            raise StaleLease(msg)

    def mark_started(self, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._emit(self.SlotStarted, at, actor, correlation_id, self.bot_id)

    @property
    def releasing(self) -> bool:
        """The lease ended and the container may still run: the slot is no one's, and
        not available either."""
        return self.bot_id is None and self.status in OCCUPIED

    def release(self, bot_id: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        """In one step: for a slot whose container is known to be gone (or never ran)."""
        self._check_allowed(self.SlotReleased)
        self._check_holder(bot_id)
        self._emit(self.SlotReleased, at, actor, correlation_id, bot_id)

    def begin_release(self, bot_id: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        """End the bot's lease now; :meth:`complete_release` once the container is gone."""
        self._check_allowed(self.SlotReleasing)
        self._check_holder(bot_id)
        self._emit(self.SlotReleasing, at, actor, correlation_id, bot_id)

    def complete_release(
        self, bot_id: str, *, at: datetime, actor: str, correlation_id: str
    ) -> None:
        """The container of the ended lease is gone: the slot is idle. ``bot_id`` names
        the bot whose lease it was, for the audit trail (the caller fences by lease)."""
        self._check_releasing(self.SlotReleased)
        self._emit(self.SlotReleased, at, actor, correlation_id, check_bot_id(bot_id))

    def fail_release(
        self,
        reason: str,
        *,
        reason_code: str,
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> None:
        """The container of the ended lease did not go away in time."""
        self._check_releasing(self.SlotFailed)
        self.fail(
            reason, reason_code=reason_code, at=at, actor=actor, correlation_id=correlation_id
        )

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
            reason=check_reason(reason),
            reason_code=check_text(reason_code, REASON_CODE_RULE, field="reason_code"),
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
            reason=check_reason(reason),
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
            coolify_uuid=check_text(coolify_uuid, COOLIFY_UUID_RULE, field="coolify_uuid"),
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
            reason=check_reason(reason),
        )

    def retire(self, reason: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._emit(self.SlotRetired, at, actor, correlation_id, None, reason=check_reason(reason))

    def drain(
        self,
        reason: str,
        *,
        scope: DrainScope = "slot",
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> None:
        self._check_allowed(self.SlotDrained)
        if self.drained:
            msg = f"slot {self.name} is drained already ({DRAIN_SCOPES[self.drain_scope or '']})"
            raise IllegalTransition(msg)
        self._emit(
            self.SlotDrained,
            at,
            actor,
            correlation_id,
            self.bot_id,
            reason=check_reason(reason),
            scope=scope,
        )

    def undrain(self, reason: str, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._check_allowed(self.SlotUndrained)
        if not self.drained:
            raise IllegalTransition(f"slot {self.name} is not drained")
        self._emit(self.SlotUndrained, at, actor, correlation_id, None, reason=check_reason(reason))

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
        check_origin(actor, correlation_id)
        self._check_allowed(event_class)
        self.trigger_event(
            event_class,
            timestamp=at,
            actor=actor,
            correlation_id=correlation_id,
            bot_id=bot_id,
            **fields,
        )

    def _check_releasing(self, event_class: type[SlotEvent]) -> None:
        if not self.releasing:
            msg = f"slot {self.name} is not releasing: {event_class.__name__} is not allowed"
            raise IllegalTransition(msg)

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
        if transition.held and self.releasing:
            msg = f"slot {self.name} is releasing: {event_class.__name__} is not allowed"
            raise IllegalTransition(msg)
