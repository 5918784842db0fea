"""The :class:`Pool` aggregate: the membership of a pool.

It hands out unique slot names and enforces the maximum size. Saving a new slot together
with its pool makes concurrent provisioning conflict on the pool's version instead of
creating duplicates.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any, ClassVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.domain.snapshots import TypedState
from ledger.domain.text import (
    POOL_NAME_RULE,
    SLOT_PREFIX_RULE,
    check_origin,
    check_platform,
    check_reason,
    check_text,
)
from ledger.errors import BadInput, Conflict, PoolFull

__all__ = ["Pool", "PoolDrainedError", "PoolTooSmall", "pool_id"]


class PoolTooSmall(Conflict):
    """A resize below the number of slots the pool has."""

    code = "pool_too_small"


class PoolDrainedError(PoolFull):
    """No new slot while the pool is drained: a request waits in the queue, as when the
    pool is full, until the pool is undrained or the entry times out."""

    code = "pool_drained"


def pool_id(pool_name: str) -> UUID:
    """Pools are found by name, so their id is derived from it."""
    return uuid5(NAMESPACE_URL, f"slotledger:pool:{pool_name}")


class Pool(TypedState, Aggregate):
    """Pool membership: unique names, the maximum size and whether the pool takes new
    slots (not while drained), decided in one place.

    State version 3 added ``drained``: snapshots of version 2 are upcast undrained."""

    class_version: ClassVar[int] = 3

    class PoolEvent(Aggregate.Event):
        actor: str
        correlation_id: str

    class PoolCreated(Aggregate.Created, PoolEvent):
        name: str
        prefix: str
        max_size: int

    class PoolResized(PoolEvent):
        """v2 names the size it replaced and why; v1 (a setting changed at start) had
        only the new size. ``old_max_size`` is ``None`` in upcast v1 events."""

        class_version = 2
        old_max_size: int | None
        new_max_size: int
        reason: str

        @staticmethod
        def upcast_v1_v2(state: dict[str, Any]) -> None:
            state["new_max_size"] = state.pop("max_size")
            state["old_max_size"] = None
            state["reason"] = "unspecified"

        @property
        def max_size(self) -> int:
            """The size in force from this event on, as ``PoolCreated`` names it."""
            return self.new_max_size

        def apply(self, aggregate: Any) -> None:
            aggregate.max_size = self.new_max_size

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

    class PoolDrained(PoolEvent):
        """No new acquisition in the pool; each slot records its own ``SlotDrained``."""

        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.drained = True

    class PoolUndrained(PoolEvent):
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.drained = False

    MAX_SIZE_LIMIT: ClassVar[int] = 10_000

    @classmethod
    def upcast_v2_v3(cls, state: dict[str, Any]) -> None:
        state["drained"] = False

    def __init__(
        self, *, name: str, prefix: str, max_size: int, actor: str, correlation_id: str
    ) -> None:
        self.name = name
        self.prefix = prefix
        self.max_size = max_size
        self.members: dict[str, str] = {}
        self.next_number: dict[str, int] = {}
        self.drained = False

    @classmethod
    def create(
        cls, *, name: str, prefix: str, max_size: int, at: datetime, correlation_id: str
    ) -> Pool:
        cls._check_max_size(max_size)
        check_text(name, POOL_NAME_RULE, field="pool")
        check_text(prefix, SLOT_PREFIX_RULE, field="prefix")
        check_origin("operator", correlation_id)
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

    def check_resize(self, max_size: int, reason: str) -> bool:
        """Whether resizing to ``max_size`` changes anything (refusing bad input)."""
        self._check_max_size(max_size)
        check_reason(reason)
        return max_size != self.max_size

    def check_holds(self, max_size: int) -> None:
        """An operator's resize below the slots the pool has is refused: retire first.
        (A smaller setting at start is recorded anyway: then no slot is added until
        retirements bring the pool under it.)"""
        self._check_max_size(max_size)
        if max_size < self.size:
            msg = (
                f"pool {self.name} has {self.size} slots: retire "
                f"{self.size - max_size} before shrinking it to {max_size}"
            )
            raise PoolTooSmall(msg)

    def resize(
        self, max_size: int, reason: str, *, at: datetime, actor: str, correlation_id: str
    ) -> bool:
        """Record a new maximum (once: the same size again changes nothing)."""
        check_origin(actor, correlation_id)
        if not self.check_resize(max_size, reason):
            return False
        self.trigger_event(
            self.PoolResized,
            timestamp=at,
            old_max_size=self.max_size,
            new_max_size=max_size,
            reason=reason,
            actor=actor,
            correlation_id=correlation_id,
        )
        return True

    def admit(
        self, slot_id: UUID, platform: str, *, at: datetime, actor: str, correlation_id: str
    ) -> str:
        """Reserve the next name for a new slot; refuse when the pool is full."""
        check_platform(platform)
        check_origin(actor, correlation_id)
        if self.drained:
            raise PoolDrainedError(f"pool {self.name} is drained: no new slot until undrained")
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

    def drain(self, reason: str, *, at: datetime, actor: str, correlation_id: str) -> bool:
        """Stop taking new slots (once: draining a drained pool changes nothing)."""
        return self._set_drained(self.PoolDrained, True, reason, at, actor, correlation_id)

    def undrain(self, reason: str, *, at: datetime, actor: str, correlation_id: str) -> bool:
        return self._set_drained(self.PoolUndrained, False, reason, at, actor, correlation_id)

    def _set_drained(
        self,
        event: type[PoolEvent],
        drained: bool,
        reason: str,
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> bool:
        check_origin(actor, correlation_id)
        check_reason(reason)
        if self.drained is drained:
            return False
        self.trigger_event(
            event, timestamp=at, reason=reason, actor=actor, correlation_id=correlation_id
        )
        return True

    def remove(self, slot_id: UUID, *, at: datetime, actor: str, correlation_id: str) -> None:
        check_origin(actor, correlation_id)
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
            raise BadInput(msg, field="max_size")
