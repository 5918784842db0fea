"""The commands of the slot lifecycle as small typed objects, and the context they run in.

A command says what is asked; :class:`Context` says who asks, under which correlation id
and since when. The context is made once where a request enters (an HTTP handler, a CLI
command, a policy decision, the deploy flow) and passed down unchanged, so every event a
request causes carries the same actor and correlation id.
"""

from __future__ import annotations

import re
from abc import abstractmethod
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from datetime import datetime
from typing import ClassVar, Generic, TypeVar
from uuid import UUID, uuid4

from ledger.domain import Pool, QueueEntry, Slot
from ledger.domain.slot import DrainScope
from ledger.errors import StaleLease

__all__ = [
    "CANCELLED",
    "Acquire",
    "AppCreated",
    "CancelQueued",
    "Clock",
    "Command",
    "CompleteRelease",
    "Context",
    "DispatchWaiting",
    "Drain",
    "DrainPool",
    "Enqueue",
    "EnsurePool",
    "ExpireDue",
    "Fail",
    "FailRelease",
    "Heartbeat",
    "MarkDeploying",
    "MarkStarted",
    "Outcome",
    "Provision",
    "Recover",
    "RecoveryFailed",
    "Release",
    "ReleaseOrCancel",
    "Retire",
    "SlotUpdate",
    "new_correlation_id",
]

Clock = Callable[[], datetime]
R = TypeVar("R")
CANCELLED = "cancelled by the requester"


def new_correlation_id() -> str:
    return uuid4().hex


@dataclass(frozen=True)
class Context:
    """Who asks (``actor``), the request's ``correlation_id``, and when it was made
    (``at``): no event of the request is stamped earlier."""

    actor: str
    correlation_id: str
    at: datetime

    @classmethod
    def new(cls, actor: str, clock: Clock) -> Context:
        """The context of a request that starts here: a fresh correlation id, now."""
        return cls(actor, new_correlation_id(), clock())

    def under(self, correlation_id: str) -> Context:
        """The same request under the correlation id it names itself (an idempotency
        key, a queued request's own id)."""
        return replace(self, correlation_id=correlation_id)

    def acting_as(self, actor: str) -> Context:
        """The same request carried on by another actor (the deploy worker)."""
        return replace(self, actor=actor)


@dataclass(frozen=True)
class Outcome:
    """What a command did: the slot as it now is, and the log position of its last event,
    which a caller can wait on to read its own write from the projections."""

    slot: Slot
    position: int


class Command(Generic[R]):
    """A request to the ledger whose answer is an ``R``. ``actor`` is who asks when the
    caller gives no context (tests, scripts)."""

    actor: ClassVar[str] = "api"

    def __str__(self) -> str:
        """What an error names: the command and its target."""
        name = re.sub(r"(?<!^)(?=[A-Z])", " ", type(self).__name__).lower()
        bot_id = getattr(self, "bot_id", None)
        if bot_id is not None:
            return f"{name} for bot {bot_id!r}"
        slot_id = getattr(self, "slot_id", None)
        return name if slot_id is None else f"{name} of slot {slot_id}"


@dataclass(frozen=True)
class EnsurePool(Command[Pool]):
    """Create the pool, or record a new maximum size: the setting's when it changed (at
    start), or ``max_size`` (an operator's resize). A dry run decides and writes nothing."""

    max_size: int | None = None
    reason: str = "the LEDGER_MAX_POOL_SIZE setting changed"
    dry_run: bool = False

    actor: ClassVar[str] = "operator"


@dataclass(frozen=True)
class Provision(Command[Outcome]):
    """A new slot under the pool's next name; with ``acquire_for``, acquired for that bot
    in the same transaction."""

    platform: str
    coolify_uuid: str | None = None
    acquire_for: str | None = None


@dataclass(frozen=True)
class Acquire(Command[Outcome]):
    """The least recently used idle slot (of ``platform``, or any) for a bot."""

    bot_id: str
    platform: str | None = None


@dataclass(frozen=True)
class Release(Command[Outcome]):
    """Give back the slot a bot holds: in one step (``SlotReleased``), or ``staged``:
    the lease ends now (``SlotReleasing``) and :class:`CompleteRelease` follows once
    the container is gone."""

    bot_id: str
    staged: bool = False


@dataclass(frozen=True)
class ReleaseOrCancel(Command[Outcome | QueueEntry]):
    """End whatever the bot holds: cancel its queue entry, or release its slot
    (``staged`` as in :class:`Release`)."""

    bot_id: str
    staged: bool = False


@dataclass(frozen=True)
class Heartbeat(Command[Outcome | None]):
    """A bot reports in on a slot; ``None`` when nothing changed."""

    slot_id: UUID
    bot_id: str


class SlotUpdate(Command[Outcome]):
    """A change of one slot, fenced by ``lease`` when given."""

    actor: ClassVar[str] = "worker"
    slot_id: UUID
    lease: int | None

    @abstractmethod
    def apply(self, slot: Slot, at: datetime, ctx: Context) -> None:
        """Trigger the slot's event (its guards raise)."""


@dataclass(frozen=True)
class MarkDeploying(SlotUpdate):
    slot_id: UUID
    deployment_uuid: str | None
    lease: int | None = None

    def apply(self, slot: Slot, at: datetime, ctx: Context) -> None:
        slot.mark_deploying(
            self.deployment_uuid, at=at, actor=ctx.actor, correlation_id=ctx.correlation_id
        )


@dataclass(frozen=True)
class MarkStarted(SlotUpdate):
    slot_id: UUID
    lease: int | None = None

    def apply(self, slot: Slot, at: datetime, ctx: Context) -> None:
        slot.mark_started(at=at, actor=ctx.actor, correlation_id=ctx.correlation_id)


@dataclass(frozen=True)
class Fail(SlotUpdate):
    """``holder``: only while that bot holds the slot (a deploy fails its own lease, never
    the container of a lease that is releasing)."""

    slot_id: UUID
    reason: str
    reason_code: str = "unspecified"
    lease: int | None = None
    holder: str | None = None

    def apply(self, slot: Slot, at: datetime, ctx: Context) -> None:
        if self.holder is not None and slot.bot_id != self.holder:
            msg = f"slot {slot.name} is no longer held by bot {self.holder!r}"
            raise StaleLease(msg)
        slot.fail(
            self.reason,
            reason_code=self.reason_code,
            at=at,
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
        )


@dataclass(frozen=True)
class CompleteRelease(SlotUpdate):
    """The container of a releasing slot's ended lease (of ``bot_id``) is gone."""

    slot_id: UUID
    bot_id: str
    lease: int | None = None

    def apply(self, slot: Slot, at: datetime, ctx: Context) -> None:
        slot.complete_release(
            self.bot_id, at=at, actor=ctx.actor, correlation_id=ctx.correlation_id
        )


@dataclass(frozen=True)
class FailRelease(SlotUpdate):
    """The container of a releasing slot's ended lease did not go away."""

    slot_id: UUID
    reason: str
    reason_code: str
    lease: int | None = None

    def apply(self, slot: Slot, at: datetime, ctx: Context) -> None:
        slot.fail_release(
            self.reason,
            reason_code=self.reason_code,
            at=at,
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
        )


@dataclass(frozen=True)
class RecoveryFailed(SlotUpdate):
    slot_id: UUID
    reason: str
    lease: int | None = None

    def apply(self, slot: Slot, at: datetime, ctx: Context) -> None:
        slot.recovery_failed(self.reason, at=at, actor=ctx.actor, correlation_id=ctx.correlation_id)


@dataclass(frozen=True)
class Recover(SlotUpdate):
    slot_id: UUID
    lease: int | None = None

    def apply(self, slot: Slot, at: datetime, ctx: Context) -> None:
        slot.recover(at=at, actor=ctx.actor, correlation_id=ctx.correlation_id)


@dataclass(frozen=True)
class AppCreated(SlotUpdate):
    slot_id: UUID
    coolify_uuid: str
    lease: int | None = None

    def apply(self, slot: Slot, at: datetime, ctx: Context) -> None:
        slot.app_created(
            self.coolify_uuid, at=at, actor=ctx.actor, correlation_id=ctx.correlation_id
        )


@dataclass(frozen=True)
class Retire(Command[Outcome]):
    """Take a slot out of the pool for good; the pool makes room for a fresh one."""

    actor: ClassVar[str] = "operator"
    slot_id: UUID
    reason: str


@dataclass(frozen=True)
class Drain(Command[Outcome]):
    """Take a slot out of acquisition (``undrain``: put it back); its lease, if any, runs
    on. ``scope`` says whether the operator named the slot or drained its pool."""

    actor: ClassVar[str] = "operator"
    slot_id: UUID
    reason: str
    undrain: bool = False
    scope: DrainScope = "slot"


@dataclass(frozen=True)
class DrainPool(Command[Pool]):
    """Stop (``undrain``: resume) admitting new slots to the pool; its slots are drained
    one by one beside it (:class:`Drain` with scope ``pool``)."""

    actor: ClassVar[str] = "operator"
    reason: str
    undrain: bool = False


@dataclass(frozen=True)
class Enqueue(Command[QueueEntry]):
    """Put a request in the queue. ``config`` stays out of the command's text: it may
    hold the bot's secrets."""

    bot_id: str
    platform: str | None = None
    priority: int = 0
    timeout_s: float = QueueEntry.DEFAULT_TIMEOUT_S
    config: Mapping[str, str] = field(default_factory=dict, repr=False)


@dataclass(frozen=True)
class CancelQueued(Command[QueueEntry]):
    bot_id: str
    reason: str = CANCELLED


@dataclass(frozen=True)
class ExpireDue(Command[list[QueueEntry]]):
    """Expire every waiting entry past its timeout."""

    actor: ClassVar[str] = "policy:queue-expiry"


@dataclass(frozen=True)
class DispatchWaiting(Command[list[tuple[QueueEntry, Outcome]]]):
    """Drain the queue while slots are free; each dispatch carries its entry's own
    correlation id, the context gives the actor."""

    actor: ClassVar[str] = "worker"
