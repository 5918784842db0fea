"""Application layer: ``SlotLedger``, the commands of the slot lifecycle.

Each command loads the aggregate(s), lets the domain decide, and saves the new events in
one transaction. Conflicts (another process wrote first) surface as the library's
``IntegrityError``: the command re-reads and decides again, a bounded number of times.
"""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import datetime_now_with_tzinfo
from eventsourcing.persistence import IntegrityError, Recording
from eventsourcing.utils import EnvType

from ledger.domain import Pool, QueueEntry, QueueStatus, Slot, check_bot_id, check_platform, pool_id
from ledger.errors import (
    BotAlreadyHoldsSlot,
    BotAlreadyQueued,
    BotNotFound,
    ConcurrencyExhausted,
    Conflict,
    IllegalTransition,
    NoIdleSlot,
    SlotNotFound,
    WrongBot,
)

if TYPE_CHECKING:
    from ledger.application.group_commit import GroupCommit

from ledger.adapters.persistence import INDEX_ROWS, IndexRow, LedgerRecorder, QueueRow, SlotRow

__all__ = [
    "Clock",
    "Outcome",
    "SlotLedger",
    "already_holds",
    "holds_no_slot",
    "new_correlation_id",
    "no_idle_slot",
    "not_queued",
    "slot_row",
]

Clock = Callable[[], datetime]
T = TypeVar("T")
CANCELLED = "cancelled by the requester"


def new_correlation_id() -> str:
    return uuid4().hex


# The refusals that group commit decides too: one wording, wherever they are decided.


def holds_no_slot(bot_id: str) -> BotNotFound:
    return BotNotFound(f"bot {bot_id!r} holds no slot")


def not_queued(bot_id: str) -> BotNotFound:
    return BotNotFound(f"bot {bot_id!r} is not waiting in the queue")


def already_holds(bot_id: str, slot_name: str) -> BotAlreadyHoldsSlot:
    return BotAlreadyHoldsSlot(f"bot {bot_id!r} already holds slot {slot_name}")


def no_idle_slot(pool: str, platform: str | None) -> NoIdleSlot:
    where = f" for platform {platform}" if platform else ""
    return NoIdleSlot(f"no idle slot in pool {pool}{where}")


@dataclass(frozen=True)
class Outcome:
    """What a command did: the slot as it now is, and the log position of its last event,
    which a caller can wait on to read its own write from the projections."""

    slot: Slot
    position: int


def index_row(aggregate: object) -> IndexRow | None:
    """The inline index row for an aggregate's current state (pools have none)."""
    if isinstance(aggregate, QueueEntry):
        return QueueRow(
            entry_id=aggregate.id,
            pool=aggregate.pool,
            bot_id=aggregate.bot_id,
            platform=aggregate.platform,
            priority=aggregate.priority,
            queued_at=aggregate.queued_at,
            timeout_at=aggregate.timeout_at,
            status=aggregate.status,
            version=aggregate.version,
        )
    if isinstance(aggregate, Slot):
        return slot_row(aggregate)
    return None


def slot_row(slot: Slot) -> SlotRow:
    """The inline index row for a slot's current state."""
    return SlotRow(
        slot_id=slot.id,
        pool=slot.pool,
        name=slot.name,
        platform=slot.platform,
        coolify_uuid=slot.coolify_uuid,
        status=slot.status,
        bot_id=slot.bot_id,
        status_since=slot.status_since,
        last_used=slot.last_used,
        retired=slot.retired,
        version=slot.version,
    )


class SlotLedger(Application[UUID]):
    """The write side of the ledger: every slot transition is a command here."""

    name = "SlotLedger"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Slot: 50, Pool: 50}
    ACQUIRE_CANDIDATES: ClassVar[int] = 8
    LEASE_PAGE: ClassVar[int] = 50

    def __init__(
        self,
        env: EnvType | None = None,
        *,
        pool_name: str = "default",
        slot_prefix: str = "pool",
        max_pool_size: int = 100,
        max_attempts: int = 32,
        default_platform: str = "bot",
        clock: Clock = datetime_now_with_tzinfo,
    ) -> None:
        super().__init__(env)
        if not isinstance(self.recorder, LedgerRecorder):
            msg = "SlotLedger needs a LedgerRecorder: use a factory from ledger.persistence"
            raise TypeError(msg)
        self.index: LedgerRecorder = self.recorder
        self.pool_name = pool_name
        self.slot_prefix = slot_prefix
        self.max_pool_size = max_pool_size
        self.max_attempts = max_attempts
        self.default_platform = check_platform(default_platform)
        self._group: GroupCommit | None = None
        self.clock = clock

    def _take_snapshots(self, processing_event: ProcessingEvent[UUID]) -> None:
        """With group commit, snapshots are taken beside the writer, not by it."""
        if self._group is None:
            super()._take_snapshots(processing_event)
        else:
            take = super()._take_snapshots
            self._group.defer_snapshots(lambda: take(processing_event))

    def _record(self, processing_event: ProcessingEvent[UUID]) -> list[Recording[UUID]]:
        """Hand the index rows of the saved aggregates to the recorder: same transaction."""
        rows = [index_row(a) for a in processing_event.aggregates.values()]
        processing_event.saved_kwargs[INDEX_ROWS] = [r for r in rows if r is not None]
        return super()._record(processing_event)

    # --- queries -----------------------------------------------------------------------

    def get_slot(self, slot_id: UUID) -> Slot:
        try:
            slot: Slot = self.repository.get(slot_id)
        except AggregateNotFoundError:
            raise SlotNotFound(f"no slot with id {slot_id}") from None
        return slot

    def get_pool(self) -> Pool | None:
        try:
            pool: Pool = self.repository.get(pool_id(self.pool_name))
        except AggregateNotFoundError:
            return None
        return pool

    def resolve_slot(self, ref: str | UUID) -> UUID:
        """A slot id from its UUID or its name, for CLI and API callers."""
        if isinstance(ref, UUID):
            return ref
        try:
            return UUID(ref)
        except ValueError:
            pass
        for row in self.index.slot_rows(self.pool_name, include_retired=True):
            if row.name == ref:
                return row.slot_id
        raise SlotNotFound(f"no slot named {ref!r} in pool {self.pool_name}")

    def slot_of_bot(self, bot_id: str) -> SlotRow:
        row = self.index.slot_for_bot(check_bot_id(bot_id))
        if row is None:
            raise holds_no_slot(bot_id)
        return row

    def holding(self, bot_id: str) -> QueueRow | SlotRow | None:
        """What a bot holds at this moment: its waiting queue entry, else its slot.

        The entry is read first: a dispatch ends the entry and acquires the slot in one
        transaction, so a bot seen without a waiting entry is then seen with the slot it
        was given, unless it gave that slot back since. Read the other way round, a
        dispatch between the two reads would show a bot that holds nothing."""
        check_bot_id(bot_id)
        return self.index.waiting_entry_for_bot(bot_id) or self.index.slot_for_bot(bot_id)

    def lease_correlation_id(self, slot_id: UUID) -> str | None:
        """The correlation id of the request that began the slot's current lease (its
        latest ``SlotAcquired``), read from the slot's newest events backwards."""
        lte: int | None = None
        while True:
            page = list(self.events.get(slot_id, lte=lte, desc=True, limit=self.LEASE_PAGE))
            for event in page:
                if isinstance(event, Slot.SlotAcquired):
                    return event.correlation_id
            if len(page) < self.LEASE_PAGE:
                return None
            lte = page[-1].originator_version - 1

    def slots(self, *, include_retired: bool = False) -> list[SlotRow]:
        return self.index.slot_rows(self.pool_name, include_retired=include_retired)

    # --- commands ----------------------------------------------------------------------

    def ensure_pool(self, *, correlation_id: str | None = None) -> Pool:
        """Create the pool, or record a new maximum size when the setting changed."""
        cid = correlation_id or new_correlation_id()

        def attempt() -> Pool:
            pool = self._load_or_create_pool(cid)
            pool.resize(self.max_pool_size, at=self.clock(), actor="operator", correlation_id=cid)
            self.save(pool)
            return pool

        return self._retrying(attempt)

    def provision(
        self,
        platform: str,
        *,
        coolify_uuid: str | None = None,
        acquire_for: str | None = None,
        actor: str = "api",
        correlation_id: str | None = None,
    ) -> Outcome:
        """Add a slot to the pool under the next free name; with ``acquire_for``, the new
        slot is acquired for that bot in the same transaction (the seed's
        ``createAndAcquireNewSlot``). Concurrent callers conflict on the pool's version, so
        names never repeat and the maximum size is never exceeded."""
        check_platform(platform)
        if acquire_for is not None:
            self._refuse_if_holding(acquire_for)
            self._refuse_if_queued(acquire_for)
        cid = correlation_id or new_correlation_id()

        def attempt() -> Outcome:
            at = self.clock()
            pool = self._load_or_create_pool(cid)
            slot = self._admit(pool, platform, coolify_uuid, at, actor, cid)
            if acquire_for is not None:
                slot.acquire(acquire_for, at=at, actor=actor, correlation_id=cid)
            return self._save(slot, pool, bot_id=acquire_for)

        return self._retrying(attempt)

    def enable_group_commit(self, max_batch: int = 64) -> None:
        """Let concurrent acquire and release calls of this process share transactions
        (see :mod:`ledger.group_commit`); for services with many callers."""
        from ledger.application.group_commit import GroupCommit

        if self._group is None:
            self._group = GroupCommit(self, max_batch=max_batch)

    def close(self) -> None:
        if self._group is not None:
            self._group.close()
        super().close()

    def acquire(
        self,
        bot_id: str,
        *,
        platform: str | None = None,
        actor: str = "api",
        correlation_id: str | None = None,
    ) -> Outcome:
        """Take the least recently used idle slot for a bot: idle -> deploying. A bot
        waiting in the queue is refused: it holds at most one slot or one entry."""
        self._refuse_if_queued(bot_id)
        cid = correlation_id or new_correlation_id()
        if self._group is not None:
            return self._group.submit(
                "acquire", bot_id, platform=platform, actor=actor, correlation_id=cid
            )
        return self.acquire_now(bot_id, platform=platform, actor=actor, correlation_id=cid)

    def acquire_now(
        self,
        bot_id: str,
        *,
        platform: str | None = None,
        actor: str = "api",
        correlation_id: str | None = None,
    ) -> Outcome:
        """Acquire in a transaction of its own.

        Candidates come from the inline index; the slot aggregate's version check makes
        the take atomic. Uncontended, the least recently used slot is taken; after a lost
        race the candidates are read again and one of them is drawn at random, so that
        racing callers spread out instead of queueing on the same slot. Bounded; the
        bot's uniqueness in the index refuses a second slot for one bot."""
        self._refuse_if_holding(bot_id)
        if platform is not None:
            check_platform(platform)
        cid = correlation_id or new_correlation_id()
        for attempt in range(self.max_attempts):
            candidates = self.index.idle_candidates(
                self.pool_name, platform, self.ACQUIRE_CANDIDATES
            )
            if not candidates:
                raise no_idle_slot(self.pool_name, platform)
            row = candidates[0] if attempt == 0 else random.choice(candidates)
            slot = self.get_slot(row.slot_id)
            if slot.retired or slot.status != row.status:
                continue  # the index moved on since it was read
            slot.acquire(bot_id, at=self.clock(), actor=actor, correlation_id=cid)
            try:
                return self._save(slot, bot_id=bot_id)
            except IntegrityError:
                continue
        raise ConcurrencyExhausted(
            f"acquire for bot {bot_id!r} lost {self.max_attempts} races in a row; try again"
        )

    def mark_deploying(
        self,
        slot_id: UUID,
        deployment_uuid: str | None,
        *,
        lease: int | None = None,
        actor: str = "worker",
        correlation_id: str | None = None,
    ) -> Outcome:
        """Record the Coolify deployment started for the slot's lease (``lease`` fences
        out a worker still acting for an earlier one)."""
        cid = correlation_id or new_correlation_id()
        return self._update(
            slot_id,
            lambda s: s.mark_deploying(
                deployment_uuid, at=self.clock(), actor=actor, correlation_id=cid
            ),
            lease,
        )

    def mark_started(
        self,
        slot_id: UUID,
        *,
        lease: int | None = None,
        actor: str = "worker",
        correlation_id: str | None = None,
    ) -> Outcome:
        cid = correlation_id or new_correlation_id()
        return self._update(
            slot_id,
            lambda s: s.mark_started(at=self.clock(), actor=actor, correlation_id=cid),
            lease,
        )

    def release(
        self, bot_id: str, *, actor: str = "api", correlation_id: str | None = None
    ) -> Outcome:
        """Give back the slot a bot holds: deploying|busy -> idle."""
        cid = correlation_id or new_correlation_id()
        if self._group is not None:
            return self._group.submit(
                "release", bot_id, platform=None, actor=actor, correlation_id=cid
            )
        return self.release_now(bot_id, actor=actor, correlation_id=cid)

    def release_or_cancel(
        self,
        bot_id: str,
        *,
        before_release: Callable[[SlotRow], Outcome | None] | None = None,
        actor: str = "api",
        correlation_id: str | None = None,
    ) -> Outcome | QueueEntry:
        """End whatever the bot holds at this moment: cancel its waiting queue entry,
        release its slot (both, should it hold both).

        Each decision is taken against the state just read; one that loses a race (the
        entry was dispatched meanwhile, the slot released or moved on) is taken again
        against the new state, so a release never answers "already dispatched" while
        the bot keeps the slot it was dispatched. A bot that holds nothing is
        :class:`BotNotFound`, so repeating a release changes nothing.
        ``before_release`` runs before a slot is released (the deployer stops the
        container there); an outcome from it (the slot failed instead) is the answer."""
        cid = correlation_id or new_correlation_id()
        cancelled: QueueEntry | None = None
        for _ in range(self.max_attempts):
            held = self.holding(bot_id)
            if held is None:
                if cancelled is not None:
                    return cancelled
                raise BotNotFound(f"bot {bot_id!r} holds no slot and waits in no queue")
            if isinstance(held, QueueRow):
                with contextlib.suppress(IllegalTransition):  # dispatched or expired since
                    cancelled = self._cancel(held.entry_id, CANCELLED, actor, cid)
                continue  # decide again: the bot may also hold a slot, or hold one now
            answer = before_release(held) if before_release is not None else None
            if answer is not None:
                return answer
            try:
                return self.release(bot_id, actor=actor, correlation_id=cid)
            except (BotNotFound, Conflict):
                if self.index.slot_for_bot(bot_id) == held:
                    raise  # refused by the slot's current state, not by a lost race
        raise ConcurrencyExhausted(
            f"release of bot {bot_id!r} lost {self.max_attempts} races in a row; try again"
        )

    def release_now(
        self, bot_id: str, *, actor: str = "api", correlation_id: str | None = None
    ) -> Outcome:
        """Release in a transaction of its own."""
        cid = correlation_id or new_correlation_id()
        row = self.slot_of_bot(bot_id)
        return self._update(
            row.slot_id,
            lambda s: s.release(bot_id, at=self.clock(), actor=actor, correlation_id=cid),
        )

    def heartbeat(
        self,
        slot_id: UUID,
        bot_id: str,
        *,
        actor: str = "api",
        correlation_id: str | None = None,
    ) -> Outcome | None:
        """Apply a bot's heartbeat: a ``deploying`` slot whose bot reports in is started.
        A heartbeat from a bot that does not hold the slot is recorded on the slot as
        ``SlotHeartbeatRefused`` and then refused with :class:`WrongBot`."""
        cid = correlation_id or new_correlation_id()
        check_bot_id(bot_id)
        for _ in range(self.max_attempts):
            slot = self.get_slot(slot_id)
            at = self.clock()
            try:
                if not slot.heartbeat(bot_id, at=at, actor=actor, correlation_id=cid):
                    return None
                return self._save(slot)
            except WrongBot as refused:
                if not slot.retired:
                    slot.refuse_heartbeat(
                        bot_id, refused.detail, at=at, actor=actor, correlation_id=cid
                    )
                    try:
                        self._save(slot)
                    except IntegrityError:
                        continue
                raise
            except IntegrityError:
                continue
        raise ConcurrencyExhausted(f"heartbeat for slot {slot_id} lost too many races")

    def fail(
        self,
        slot_id: UUID,
        reason: str,
        *,
        reason_code: str = "unspecified",
        lease: int | None = None,
        actor: str = "worker",
        correlation_id: str | None = None,
    ) -> Outcome:
        cid = correlation_id or new_correlation_id()
        return self._update(
            slot_id,
            lambda s: s.fail(
                reason, reason_code=reason_code, at=self.clock(), actor=actor, correlation_id=cid
            ),
            lease,
        )

    def recovery_failed(
        self,
        slot_id: UUID,
        reason: str,
        *,
        actor: str = "worker",
        correlation_id: str | None = None,
    ) -> Outcome:
        cid = correlation_id or new_correlation_id()
        return self._update(
            slot_id,
            lambda s: s.recovery_failed(reason, at=self.clock(), actor=actor, correlation_id=cid),
        )

    def recover(
        self, slot_id: UUID, *, actor: str = "worker", correlation_id: str | None = None
    ) -> Outcome:
        cid = correlation_id or new_correlation_id()
        return self._update(
            slot_id, lambda s: s.recover(at=self.clock(), actor=actor, correlation_id=cid)
        )

    def app_created(
        self,
        slot_id: UUID,
        coolify_uuid: str,
        *,
        lease: int | None = None,
        actor: str = "worker",
        correlation_id: str | None = None,
    ) -> Outcome:
        cid = correlation_id or new_correlation_id()
        return self._update(
            slot_id,
            lambda s: s.app_created(coolify_uuid, at=self.clock(), actor=actor, correlation_id=cid),
            lease,
        )

    def retire(
        self,
        slot_id: UUID,
        reason: str,
        *,
        actor: str = "operator",
        correlation_id: str | None = None,
    ) -> Outcome:
        """Take a slot out of the pool for good; the pool makes room for a fresh one."""
        cid = correlation_id or new_correlation_id()

        def attempt() -> Outcome:
            at = self.clock()
            slot = self.get_slot(slot_id)
            slot.retire(reason, at=at, actor=actor, correlation_id=cid)
            pool = self._load_or_create_pool(cid)
            pool.remove(slot.id, at=at, actor=actor, correlation_id=cid)
            return self._save(slot, pool)

        return self._retrying(attempt)

    # --- queue -------------------------------------------------------------------------

    def enqueue(
        self,
        bot_id: str,
        *,
        platform: str | None = None,
        priority: int = 0,
        timeout_s: float = QueueEntry.DEFAULT_TIMEOUT_S,
        config: dict[str, str] | None = None,
        actor: str = "api",
        correlation_id: str | None = None,
    ) -> QueueEntry:
        """Put a request in the queue; a bot holds at most one slot or one entry."""
        self._refuse_if_holding(bot_id)
        self._refuse_if_queued(bot_id)
        entry = QueueEntry.enqueue(
            bot_id=bot_id,
            pool=self.pool_name,
            platform=platform,
            priority=priority,
            timeout_s=timeout_s,
            config=config or {},
            at=self.clock(),
            actor=actor,
            correlation_id=correlation_id or new_correlation_id(),
        )
        try:
            self.save(entry)
        except IntegrityError:
            self._refuse_if_queued(bot_id)
            raise
        return entry

    def waiting(self) -> list[QueueRow]:
        """Waiting entries in dispatch order."""
        return self.index.waiting_entries(self.pool_name)

    def queue_entry_of_bot(self, bot_id: str) -> QueueRow:
        row = self.index.waiting_entry_for_bot(check_bot_id(bot_id))
        if row is None:
            raise not_queued(bot_id)
        return row

    def queue_position(self, bot_id: str) -> int:
        """1-based place among the waiting entries that compete for the same slots.

        One read of the queue: the entry and those ahead of it come from the same
        moment, so an entry dispatched meanwhile is :class:`BotNotFound`, never a
        place that cannot be found."""
        waiting = self.waiting()
        for place, mine in enumerate(waiting):
            if mine.bot_id == bot_id:
                ahead = waiting[:place]
                return 1 + sum(
                    1 for r in ahead if mine.platform is None or r.platform in (None, mine.platform)
                )
        raise not_queued(bot_id)

    def cancel_queued(
        self,
        bot_id: str,
        reason: str = CANCELLED,
        *,
        actor: str = "api",
        correlation_id: str | None = None,
    ) -> QueueEntry:
        cid = correlation_id or new_correlation_id()
        return self._cancel(self.queue_entry_of_bot(bot_id).entry_id, reason, actor, cid)

    def _cancel(self, entry_id: UUID, reason: str, actor: str, cid: str) -> QueueEntry:
        """IllegalTransition once the entry no longer waits."""

        def attempt() -> QueueEntry:
            entry: QueueEntry = self.repository.get(entry_id)
            entry.cancel(reason, at=self.clock(), actor=actor, correlation_id=cid)
            self.save(entry)
            return entry

        return self._retrying(attempt)

    def expire_due(
        self, *, actor: str = "policy:queue-expiry", correlation_id: str | None = None
    ) -> list[QueueEntry]:
        """Expire every waiting entry past its timeout; the requester sees the reason."""
        now = self.clock()
        expired = []
        for row in self.waiting():
            if row.timeout_at > now:
                continue
            entry: QueueEntry = self.repository.get(row.entry_id)
            try:
                entry.expire(
                    entry.expiry_reason(now),
                    at=now,
                    actor=actor,
                    correlation_id=correlation_id or new_correlation_id(),
                )
                self.save(entry)
            except (IllegalTransition, IntegrityError):
                continue  # dispatched or cancelled meanwhile
            expired.append(entry)
        return expired

    def dispatch_waiting(self, *, actor: str = "worker") -> list[tuple[QueueEntry, Outcome]]:
        """Drain the queue while idle slots exist: each waiting entry, in order, takes the
        least recently used idle slot of its platform. Slot and entry change together,
        under the correlation id of the request that queued the entry."""
        dispatched = []
        now = self.clock()
        for row in self.waiting():
            if row.timeout_at <= now:
                continue  # expiry, not dispatch, ends this one
            outcome = self._dispatch_one(row, actor)
            if outcome is not None:
                dispatched.append(outcome)
        return dispatched

    def _dispatch_one(self, row: QueueRow, actor: str) -> tuple[QueueEntry, Outcome] | None:
        """An idle slot for the entry, or a new one while the pool has room (a retired
        slot's place must not stay empty while requests wait)."""
        for _ in range(self.max_attempts):
            at = self.clock()
            entry: QueueEntry = self.repository.get(row.entry_id)
            cid = entry.correlation_id
            candidates = self.index.idle_candidates(self.pool_name, row.platform, 1)
            others: list[Pool | QueueEntry] = [entry]
            if candidates:
                slot = self.get_slot(candidates[0].slot_id)
            else:
                pool = self._load_or_create_pool(cid)
                if pool.size >= pool.max_size:
                    return None
                platform = row.platform or self.default_platform
                slot = self._admit(pool, platform, None, at, actor, cid)
                others.append(pool)
            try:
                slot.acquire(entry.bot_id, at=at, actor=actor, correlation_id=cid)
                entry.dispatch(slot.id, at=at, actor=actor, correlation_id=cid)
                return entry, self._save(slot, *others)
            except IllegalTransition:
                if entry.status is not QueueStatus.WAITING:
                    return None  # another dispatcher, expiry or cancel ended it
            except IntegrityError:
                held = self.index.slot_for_bot(entry.bot_id)
                if held is not None:
                    self._end_entry_of_holder(entry, held, actor)
                    return None
        return None

    def _end_entry_of_holder(self, entry: QueueEntry, held: SlotRow, actor: str) -> None:
        """Cancel the waiting entry of a bot that holds a slot: it could never be
        dispatched (a bot holds one slot), and retrying it on every drain would cost a
        refused transaction each time until it expired. The checks before acquiring and
        before enqueueing refuse such a pair, but two first requests of one bot can still
        pass them at once."""
        reason = f"bot {entry.bot_id!r} already holds slot {held.name}"
        with contextlib.suppress(IllegalTransition):  # ended meanwhile: nothing to do
            self._cancel(entry.id, reason, actor, entry.correlation_id)

    # --- internals ---------------------------------------------------------------------

    def _refuse_if_queued(self, bot_id: str) -> None:
        if self.index.waiting_entry_for_bot(check_bot_id(bot_id)) is not None:
            raise BotAlreadyQueued(f"bot {bot_id!r} already waits in the queue")

    def _refuse_if_holding(self, bot_id: str) -> None:
        held = self.index.slot_for_bot(check_bot_id(bot_id))
        if held is not None:
            raise already_holds(bot_id, held.name)

    def _admit(
        self,
        pool: Pool,
        platform: str,
        coolify_uuid: str | None,
        at: datetime,
        actor: str,
        cid: str,
    ) -> Slot:
        """A new slot under the pool's next name (the pool refuses when full)."""
        slot_id = uuid4()
        name = pool.admit(slot_id, platform, at=at, actor=actor, correlation_id=cid)
        return Slot.provision(
            slot_id=slot_id,
            pool=self.pool_name,
            name=name,
            platform=platform,
            coolify_uuid=coolify_uuid,
            at=at,
            actor=actor,
            correlation_id=cid,
        )

    def _load_or_create_pool(self, correlation_id: str) -> Pool:
        return self.get_pool() or Pool.create(
            name=self.pool_name,
            prefix=self.slot_prefix,
            max_size=self.max_pool_size,
            at=self.clock(),
            correlation_id=correlation_id,
        )

    def _save(self, slot: Slot, *others: Pool | QueueEntry, bot_id: str | None = None) -> Outcome:
        try:
            recordings = self.save(slot, *others)
        except IntegrityError:
            # The bot's uniqueness in the index, not the slot's version, may have refused it.
            if bot_id is not None:
                self._refuse_if_holding(bot_id)
            raise
        return Outcome(slot=slot, position=recordings[-1].notification.id)

    def _update(
        self, slot_id: UUID, decide: Callable[[Slot], None], lease: int | None = None
    ) -> Outcome:
        def attempt() -> Outcome:
            slot = self.get_slot(slot_id)
            slot.check_lease(lease)
            decide(slot)
            return self._save(slot)

        return self._retrying(attempt)

    def _retrying(self, attempt: Callable[[], T]) -> T:
        """Run a read-decide-save attempt again after a lost race, with a short jittered
        pause; domain errors from a fresh decision propagate unchanged."""
        for n in range(self.max_attempts):
            try:
                return attempt()
            except IntegrityError:
                time.sleep(random.uniform(0, 0.002 * min(n + 1, 10)))
        raise ConcurrencyExhausted(
            f"gave up after {self.max_attempts} concurrent modifications; try again"
        )
