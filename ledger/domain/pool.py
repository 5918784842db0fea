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
    check_text,
)
from ledger.errors import BadInput, PoolFull

__all__ = ["Pool", "pool_id"]


def pool_id(pool_name: str) -> UUID:
    """Pools are found by name, so their id is derived from it."""
    return uuid5(NAMESPACE_URL, f"slotledger:pool:{pool_name}")


class Pool(TypedState, Aggregate):
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

    def resize(self, max_size: int, *, at: datetime, actor: str, correlation_id: str) -> None:
        self._check_max_size(max_size)
        check_origin(actor, correlation_id)
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
        check_origin(actor, correlation_id)
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
