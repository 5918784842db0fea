"""``SlotLedger``: the write side, every slot transition a command here.

Every command takes one path: :meth:`SlotLedger.handle` gives it its handler and its
context (the caller's, set once where the request entered); the handler loads the
aggregates, decides, and the :class:`~ledger.application.unit_of_work.UnitOfWork` saves
the decision in one transaction, deciding again after a lost race. The public methods
are one-line wrappers that build the command.
"""

from __future__ import annotations

import contextlib
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Any, ClassVar, TypeVar, cast
from uuid import UUID, uuid4

from eventsourcing.application import AggregateNotFoundError, Application, ProcessingEvent
from eventsourcing.domain import DomainEventProtocol, datetime_now_with_tzinfo
from eventsourcing.persistence import Recording
from eventsourcing.utils import EnvType

from ledger.application.cache import VersionedCache
from ledger.application.capacity import capacity_plan
from ledger.application.commands import (
    CANCELLED,
    Acquire,
    AppCreated,
    CancelQueued,
    Clock,
    Command,
    CompleteRelease,
    Context,
    DispatchWaiting,
    Drain,
    DrainPool,
    Enqueue,
    EnsurePool,
    ExpireDue,
    Fail,
    FailRelease,
    Heartbeat,
    MarkDeploying,
    MarkStarted,
    Outcome,
    Provision,
    Recover,
    RecoveryFailed,
    Release,
    ReleaseOrCancel,
    Retire,
    SlotUpdate,
)
from ledger.application.decisions import (
    IndexView,
    already_holds,
    already_queued,
    decide_acquire,
    decide_release,
    holds_no_slot,
    not_queued,
    refuse_if_holding,
)
from ledger.application.group_commit import GroupCommit
from ledger.application.ports import INDEX_ROWS, IndexRow, LedgerRecorder, QueueRow, SlotRow
from ledger.application.unit_of_work import Attempt, Change, Done, LostRace, UnitOfWork
from ledger.domain import (
    Pool,
    QueueEntry,
    QueueStatus,
    Slot,
    check_bot_id,
    check_platform,
    pool_id,
)
from ledger.domain.slot import DrainScope
from ledger.errors import (
    BotNotFound,
    ConcurrencyExhausted,
    Conflict,
    IllegalTransition,
    SlotNotFound,
    WrongBot,
)

__all__ = ["SlotLedger", "index_row", "slot_row"]

R = TypeVar("R")
Handler = Callable[[Any, Context], object]


CAPACITY_ACTOR = "policy:capacity"
"""Who drains and undrains slots to keep the pool within its maximum."""


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
        drain_scope=slot.drain_scope,
    )


def _outcome(done: Done[Slot]) -> Outcome:
    return Outcome(slot=done.answer, position=done.position)


class RefusalBound:
    """At most one ``SlotHeartbeatRefused`` per slot and bot per window from this
    process; the refusals in between are answered the same (409) and only counted. The
    first is the evidence; a stranger repeating it cannot grow the log faster than one
    event a minute per slot it names (per process)."""

    def __init__(
        self,
        window_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
        max_keys: int = 10_000,
    ) -> None:
        self.window_s = window_s
        self.clock = clock
        self.max_keys = max_keys
        self.unrecorded = 0
        """Refusals answered without an event, for ``/metrics``."""
        self._last: dict[tuple[UUID, str], float] = {}
        self._lock = threading.Lock()

    def due(self, slot_id: UUID, bot_id: str) -> bool:
        """Whether this refusal is recorded; one that is not is counted."""
        with self._lock:
            last = self._last.get((slot_id, bot_id))
            if last is not None and self.clock() - last < self.window_s:
                self.unrecorded += 1
                return False
            return True

    def recorded(self, slot_id: UUID, bot_id: str) -> None:
        now = self.clock()
        with self._lock:
            self._last[(slot_id, bot_id)] = now
            if len(self._last) > self.max_keys:  # bounded memory: forget the expired
                self._last = {k: t for k, t in self._last.items() if now - t < self.window_s}


class _NoRoom(Exception):
    """A dispatch found no available slot for the entry and no room for a new one."""


class SlotLedger(Application[UUID]):
    """The write side of the ledger: every slot transition is a command here."""

    name = "SlotLedger"
    snapshotting_intervals: ClassVar[dict[type[Any], int]] = {Slot: 50, Pool: 50}
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
            msg = "SlotLedger needs a LedgerRecorder: use a factory from ledger.adapters"
            raise TypeError(msg)
        self.index: LedgerRecorder = self.recorder
        self.pool_name = pool_name
        self.slot_prefix = slot_prefix
        self.max_pool_size = max_pool_size
        self.max_attempts = max_attempts
        self.default_platform = check_platform(default_platform)
        self._group: GroupCommit | None = None
        self.clock = clock
        self.refusals = RefusalBound()
        self.slot_cache = VersionedCache(Slot, self.get_slot, self._events_after)
        self.entry_cache = VersionedCache(QueueEntry, self.repository.get, self._events_after)
        self.pool_cache = VersionedCache(Pool, self.repository.get, self._events_after, maxsize=8)
        self.uow = UnitOfWork(self)
        self._handlers: dict[type[Any], Handler] = {
            EnsurePool: self._ensure_pool,
            Provision: self._provision,
            Acquire: self._acquire,
            Release: self._release,
            ReleaseOrCancel: self._release_or_cancel,
            Heartbeat: self._heartbeat,
            Retire: self._retire,
            Drain: self._drain,
            DrainPool: self._drain_pool,
            Enqueue: self._enqueue,
            CancelQueued: self._cancel_queued,
            ExpireDue: self._expire_due,
            DispatchWaiting: self._dispatch_waiting,
            **dict.fromkeys(
                (
                    MarkDeploying,
                    MarkStarted,
                    Fail,
                    RecoveryFailed,
                    Recover,
                    AppCreated,
                    CompleteRelease,
                    FailRelease,
                ),
                self._update,
            ),
        }

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
        recordings = super()._record(processing_event)
        for cache in (self.slot_cache, self.entry_cache, self.pool_cache):
            cache.saved(processing_event.aggregates.values())
        return recordings

    # --- the command path --------------------------------------------------------------

    def context(self, actor: str) -> Context:
        """The context of a request that enters here, on this ledger's clock."""
        return Context.new(actor, self.clock)

    def handle(self, command: Command[R], ctx: Context | None = None) -> R:
        """Run a command under the caller's context; a caller without one (a test, a
        script) gets a new one for the command's usual actor."""
        return cast(R, self._handlers[type(command)](command, self._context(ctx, command)))

    def ensure_context(self, ctx: Context | None, actor: str) -> Context:
        """The caller's context, or a new one for ``actor`` when it has none."""
        return ctx if ctx is not None else self.context(actor)

    def _context(self, ctx: Context | None, command: Command[Any]) -> Context:
        return self.ensure_context(ctx, command.actor)

    def now(self, ctx: Context) -> datetime:
        """The time a decision of the request is stamped with: the clock's, never before
        the request was made."""
        return max(ctx.at, self.clock())

    # --- queries -----------------------------------------------------------------------

    def get_slot(self, slot_id: UUID) -> Slot:
        """The slot, loaded from the store (snapshot and events)."""
        try:
            slot: Slot = self.repository.get(slot_id)
        except AggregateNotFoundError:
            raise SlotNotFound(f"no slot with id {slot_id}") from None
        return slot

    def current_slot(self, slot_id: UUID) -> Slot:
        """The slot as stored now: its index row is read (one small query), and the slot
        comes from the versioned cache when it is at the row's version."""
        row = self.index.slot_row(slot_id)
        return self.get_slot(slot_id) if row is None else self.slot_of(row)

    def slot_of(self, row: SlotRow) -> Slot:
        """The slot of an index row just read (cached at the row's version, else loaded)."""
        return self.slot_cache.at(row.slot_id, row.version)

    def entry_of(self, row: QueueRow) -> QueueEntry:
        """The queue entry of an index row just read (as :meth:`slot_of`)."""
        return self.entry_cache.at(row.entry_id, row.version)

    def get_pool(self) -> Pool | None:
        """The pool as stored now (a cached copy brought forward); None before any."""
        try:
            return self.pool_cache.latest(pool_id(self.pool_name))
        except AggregateNotFoundError:
            return None

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

    # --- commands: one-line wrappers ---------------------------------------------------

    def ensure_pool(self, *, ctx: Context | None = None) -> Pool:
        return self.handle(EnsurePool(), ctx)

    def resize_pool(
        self, max_size: int, reason: str, *, dry_run: bool = False, ctx: Context | None = None
    ) -> Pool:
        return self.handle(EnsurePool(max_size, reason, dry_run), ctx)

    def provision(
        self,
        platform: str,
        *,
        coolify_uuid: str | None = None,
        acquire_for: str | None = None,
        ctx: Context | None = None,
    ) -> Outcome:
        return self.handle(Provision(platform, coolify_uuid, acquire_for), ctx)

    def acquire(
        self, bot_id: str, *, platform: str | None = None, ctx: Context | None = None
    ) -> Outcome:
        return self.handle(Acquire(bot_id, platform), ctx)

    def acquire_now(
        self, bot_id: str, *, platform: str | None = None, ctx: Context | None = None
    ) -> Outcome:
        """Acquire in a transaction of its own, without the queue check (group commit's
        fallback, which checked before it batched)."""
        command = Acquire(bot_id, platform)
        return self._acquire_alone(command, self._context(ctx, command), queue_checked=True)

    def release(self, bot_id: str, *, staged: bool = False, ctx: Context | None = None) -> Outcome:
        return self.handle(Release(bot_id, staged), ctx)

    def release_now(self, bot_id: str, *, ctx: Context | None = None) -> Outcome:
        """Release in a transaction of its own (group commit's fallback)."""
        command = Release(bot_id)
        return self._release_alone(command, self._context(ctx, command))

    def release_or_cancel(
        self, bot_id: str, *, staged: bool = False, ctx: Context | None = None
    ) -> Outcome | QueueEntry:
        return self.handle(ReleaseOrCancel(bot_id, staged), ctx)

    def heartbeat(
        self, slot_id: UUID, bot_id: str, *, ctx: Context | None = None
    ) -> Outcome | None:
        return self.handle(Heartbeat(slot_id, bot_id), ctx)

    def mark_deploying(
        self,
        slot_id: UUID,
        deployment_uuid: str | None,
        *,
        lease: int | None = None,
        ctx: Context | None = None,
    ) -> Outcome:
        return self.handle(MarkDeploying(slot_id, deployment_uuid, lease), ctx)

    def mark_started(
        self, slot_id: UUID, *, lease: int | None = None, ctx: Context | None = None
    ) -> Outcome:
        return self.handle(MarkStarted(slot_id, lease), ctx)

    def fail(
        self,
        slot_id: UUID,
        reason: str,
        *,
        reason_code: str = "unspecified",
        lease: int | None = None,
        holder: str | None = None,
        ctx: Context | None = None,
    ) -> Outcome:
        return self.handle(Fail(slot_id, reason, reason_code, lease, holder), ctx)

    def complete_release(
        self, slot_id: UUID, bot_id: str, *, lease: int | None = None, ctx: Context | None = None
    ) -> Outcome:
        return self.handle(CompleteRelease(slot_id, bot_id, lease), ctx)

    def fail_release(
        self,
        slot_id: UUID,
        reason: str,
        *,
        reason_code: str,
        lease: int | None = None,
        ctx: Context | None = None,
    ) -> Outcome:
        return self.handle(FailRelease(slot_id, reason, reason_code, lease), ctx)

    def recovery_failed(self, slot_id: UUID, reason: str, *, ctx: Context | None = None) -> Outcome:
        return self.handle(RecoveryFailed(slot_id, reason), ctx)

    def recover(self, slot_id: UUID, *, ctx: Context | None = None) -> Outcome:
        return self.handle(Recover(slot_id), ctx)

    def app_created(
        self,
        slot_id: UUID,
        coolify_uuid: str,
        *,
        lease: int | None = None,
        ctx: Context | None = None,
    ) -> Outcome:
        return self.handle(AppCreated(slot_id, coolify_uuid, lease), ctx)

    def retire(self, slot_id: UUID, reason: str, *, ctx: Context | None = None) -> Outcome:
        return self.handle(Retire(slot_id, reason), ctx)

    def drain(
        self,
        slot_id: UUID,
        reason: str,
        *,
        undrain: bool = False,
        scope: DrainScope = "slot",
        ctx: Context | None = None,
    ) -> Outcome:
        return self.handle(Drain(slot_id, reason, undrain, scope), ctx)

    def drain_pool(self, reason: str, *, undrain: bool = False, ctx: Context | None = None) -> Pool:
        return self.handle(DrainPool(reason, undrain), ctx)

    def enqueue(
        self,
        bot_id: str,
        *,
        platform: str | None = None,
        priority: int = 0,
        timeout_s: float = QueueEntry.DEFAULT_TIMEOUT_S,
        config: dict[str, str] | None = None,
        ctx: Context | None = None,
    ) -> QueueEntry:
        return self.handle(Enqueue(bot_id, platform, priority, timeout_s, config or {}), ctx)

    def cancel_queued(
        self, bot_id: str, reason: str = CANCELLED, *, ctx: Context | None = None
    ) -> QueueEntry:
        return self.handle(CancelQueued(bot_id, reason), ctx)

    def expire_due(self, *, ctx: Context | None = None) -> list[QueueEntry]:
        return self.handle(ExpireDue(), ctx)

    def dispatch_waiting(self, *, ctx: Context | None = None) -> list[tuple[QueueEntry, Outcome]]:
        return self.handle(DispatchWaiting(), ctx)

    def enable_group_commit(self, max_batch: int = 64) -> None:
        """Let concurrent acquire and release calls of this process share transactions
        (see :mod:`ledger.application.group_commit`); for services with many callers."""
        if self._group is None:
            self._group = GroupCommit(self, max_batch=max_batch)

    def disable_group_commit(self) -> None:
        """Stop the writer thread (a stopped service leaves no thread behind); calls go
        one transaction each again."""
        group, self._group = self._group, None
        if group is not None:
            group.close()

    def close(self) -> None:
        self.disable_group_commit()
        super().close()

    # --- handlers ----------------------------------------------------------------------

    def _ensure_pool(self, command: EnsurePool, ctx: Context) -> Pool:
        """Processes starting at once with a new setting conflict on the pool's version;
        the losers decide again and find it resized: one ``PoolResized``."""
        max_size = self.max_pool_size if command.max_size is None else command.max_size

        def decide(_: Attempt) -> Change[Pool]:
            pool = self._pool(ctx)
            if command.max_size is not None:
                pool.check_holds(max_size)
            if command.dry_run:
                pool.check_resize(max_size, command.reason)
                return Change(pool)
            pool.resize(
                max_size,
                command.reason,
                at=self.now(ctx),
                actor=ctx.actor,
                correlation_id=ctx.correlation_id,
            )
            return Change(pool, [pool])

        pool = self.uow.run(str(command), decide).answer
        if not command.dry_run:
            self.fit_capacity(ctx=ctx)
        return pool

    def _provision(self, command: Provision, ctx: Context) -> Outcome:
        """Concurrent callers conflict on the pool's version, so names never repeat and
        the maximum size is never exceeded."""
        check_platform(command.platform)
        bot_id = command.acquire_for

        def decide(_: Attempt) -> Change[Slot]:
            if bot_id is not None:
                refuse_if_holding(self._view(), bot_id)
                self._refuse_if_queued(bot_id)
            at = self.now(ctx)
            pool = self._pool(ctx)
            slot = self._admit(pool, command.platform, command.coolify_uuid, at, ctx)
            if bot_id is not None:
                slot.acquire(bot_id, at=at, actor=ctx.actor, correlation_id=ctx.correlation_id)
            return Change(slot, [slot, pool])

        return _outcome(self.uow.run(str(command), decide))

    def _acquire(self, command: Acquire, ctx: Context) -> Outcome:
        """A bot waiting in the queue is refused: it holds at most one slot or one entry
        (the single path reads the queue with the slots, in one round trip)."""
        if self._group is not None:
            self._refuse_if_queued(command.bot_id)
            return self._group.submit(command, ctx)
        return self._acquire_alone(command, ctx)

    def _acquire_alone(
        self, command: Acquire, ctx: Context, *, queue_checked: bool = False
    ) -> Outcome:
        """Candidates come from the inline index; the slot aggregate's version check
        makes the take atomic, and the bot's uniqueness in the index refuses a second
        slot for one bot (the decision taken again sees the slot it holds)."""

        def decide(attempt: Attempt) -> Change[Slot]:
            at = self.now(ctx)
            first = attempt.first and not self.uow.contended()
            slot = decide_acquire(
                self._view(), command, ctx, at, first=first, queue_checked=queue_checked
            )
            return Change(slot, [slot])

        return _outcome(self.uow.run(str(command), decide))

    def _release(self, command: Release, ctx: Context) -> Outcome:
        """A staged release takes its own transaction: group commit's fallback to single
        commands releases in one step."""
        if self._group is not None and not command.staged:
            return self._group.submit(command, ctx)
        return self._release_alone(command, ctx)

    def _release_alone(self, command: Release, ctx: Context) -> Outcome:
        def decide(_: Attempt) -> Change[Slot]:
            slot = decide_release(self._view(), command, ctx, self.now(ctx))
            return Change(slot, [slot])

        return _outcome(self.uow.run(str(command), decide))

    def _release_or_cancel(self, command: ReleaseOrCancel, ctx: Context) -> Outcome | QueueEntry:
        """Each decision is taken against the state just read; one that loses a race (the
        entry was dispatched meanwhile, the slot released or moved on) is taken again
        against the new state, so a release never answers "already dispatched" while
        the bot keeps the slot it was dispatched. A bot that holds nothing is
        :class:`BotNotFound`, so repeating a release changes nothing."""
        bot_id = command.bot_id
        cancelled: list[QueueEntry] = []

        def attempt(_: Attempt) -> Outcome | QueueEntry:
            held = self.holding(bot_id)
            if held is None:
                if cancelled:
                    return cancelled[-1]
                raise BotNotFound(f"bot {bot_id!r} holds no slot and waits in no queue")
            if isinstance(held, QueueRow):
                with contextlib.suppress(IllegalTransition):  # dispatched or expired since
                    cancelled.append(self._cancel(held.entry_id, CANCELLED, ctx, str(command)))
                raise LostRace("decide again: the bot may also hold a slot, or hold one now")
            try:
                return self.release(bot_id, staged=command.staged, ctx=ctx)
            except (BotNotFound, Conflict):
                if self.index.slot_for_bot(bot_id) == held:
                    raise  # refused by the slot's current state, not by a lost race
                raise LostRace(f"the slot of bot {bot_id!r} moved on") from None

        return self.uow.retrying(str(command), attempt)

    def _heartbeat(self, command: Heartbeat, ctx: Context) -> Outcome | None:
        """A ``deploying`` slot whose bot reports in is started. A heartbeat from a bot
        that does not hold the slot is recorded on the slot as ``SlotHeartbeatRefused``
        (once a minute per slot and bot: :class:`RefusalBound`) and then refused with
        :class:`WrongBot`."""
        check_bot_id(command.bot_id)
        cid = ctx.correlation_id
        recording = False

        def decide(_: Attempt) -> Change[Slot | None]:
            nonlocal recording
            recording = False
            slot = self.current_slot(command.slot_id)
            at = self.now(ctx)
            try:
                started = slot.heartbeat(command.bot_id, at=at, actor=ctx.actor, correlation_id=cid)
            except WrongBot as refused:
                if slot.retired or not self.refusals.due(slot.id, command.bot_id):
                    return Change(None, refusal=refused)
                slot.refuse_heartbeat(
                    command.bot_id, refused.detail, at=at, actor=ctx.actor, correlation_id=cid
                )
                recording = True
                return Change(None, [slot], refusal=refused)
            return Change(slot, [slot]) if started else Change(None)

        try:
            done = self.uow.run(str(command), decide)
        except WrongBot:
            if recording:  # committed: the refusal is raised after its event is saved
                self.refusals.recorded(command.slot_id, command.bot_id)
            raise
        return None if done.answer is None else Outcome(done.answer, done.position)

    def _update(self, command: SlotUpdate, ctx: Context) -> Outcome:
        """``lease`` fences out a worker still acting for an earlier lease."""

        def decide(_: Attempt) -> Change[Slot]:
            slot = self.current_slot(command.slot_id)
            slot.check_lease(command.lease)
            command.apply(slot, self.now(ctx), ctx)
            return Change(slot, [slot])

        return _outcome(self.uow.run(str(command), decide))

    def _retire(self, command: Retire, ctx: Context) -> Outcome:
        def decide(_: Attempt) -> Change[Slot]:
            at, cid = self.now(ctx), ctx.correlation_id
            slot = self.current_slot(command.slot_id)
            slot.retire(command.reason, at=at, actor=ctx.actor, correlation_id=cid)
            pool = self._pool(ctx)
            pool.remove(slot.id, at=at, actor=ctx.actor, correlation_id=cid)
            return Change(slot, [slot, pool])

        outcome = _outcome(self.uow.run(str(command), decide))
        self.fit_capacity(ctx=ctx)
        return outcome

    def _drain(self, command: Drain, ctx: Context) -> Outcome:
        outcome = self._set_drained(command, ctx)
        self.fit_capacity(ctx=ctx)
        return outcome

    def _set_drained(self, command: Drain, ctx: Context) -> Outcome:
        def decide(_: Attempt) -> Change[Slot]:
            at, cid = self.now(ctx), ctx.correlation_id
            slot = self.current_slot(command.slot_id)
            if command.undrain:
                slot.undrain(command.reason, at=at, actor=ctx.actor, correlation_id=cid)
            else:
                slot.drain(
                    command.reason,
                    scope=command.scope,
                    at=at,
                    actor=ctx.actor,
                    correlation_id=cid,
                )
            return Change(slot, [slot])

        return _outcome(self.uow.run(str(command), decide))

    def fit_capacity(
        self, *, dry_run: bool = False, ctx: Context | None = None
    ) -> list[tuple[SlotRow, Drain]]:
        """Drain or undrain slots (scope ``size``) so that no more slots than the pool's
        maximum can be in use at once (:mod:`ledger.application.capacity`); the changes,
        made or (``dry_run``) planned. Run after every change of the maximum, the slots or
        their drains, and on each policy tick (as slots come to rest). Processes deciding
        at once plan alike; a slot another one changed first is left as it is."""
        pool = self.get_pool()
        if pool is None:
            return []
        ctx = self.ensure_context(ctx, CAPACITY_ACTOR).acting_as(CAPACITY_ACTOR)
        rows = self.index.slot_rows(self.pool_name)
        drain, undrain = capacity_plan(rows, pool.max_size)
        if pool.drained:
            undrain = []  # no room to give back while the pool takes no acquisition
        over = f"pool {pool.name} may have {pool.max_size} of its {len(rows)} slots in use"
        room = f"room within pool {pool.name}'s maximum of {pool.max_size}"
        changes = [(r, Drain(r.slot_id, over, scope="size")) for r in drain]
        changes += [(r, Drain(r.slot_id, room, undrain=True)) for r in undrain]
        if not dry_run:
            for _, change in changes:
                with contextlib.suppress(IllegalTransition):
                    self._set_drained(change, ctx)
        return changes

    def _drain_pool(self, command: DrainPool, ctx: Context) -> Pool:
        """Saved with the pool's version, so a slot admitted at the same time is either
        in the pool before the drain (and drained with it) or refused."""

        def decide(_: Attempt) -> Change[Pool]:
            at, cid = self.now(ctx), ctx.correlation_id
            pool = self._pool(ctx)
            change = pool.undrain if command.undrain else pool.drain
            if not change(command.reason, at=at, actor=ctx.actor, correlation_id=cid):
                return Change(pool)
            return Change(pool, [pool])

        pool = self.uow.run(str(command), decide).answer
        self.fit_capacity(ctx=ctx)
        return pool

    # --- queue -------------------------------------------------------------------------

    def _enqueue(self, command: Enqueue, ctx: Context) -> QueueEntry:
        """A bot holds at most one slot or one entry; a lost race is decided again, so a
        concurrent second entry of the bot is refused as such."""

        def decide(_: Attempt) -> Change[QueueEntry]:
            refuse_if_holding(self._view(), command.bot_id)
            self._refuse_if_queued(command.bot_id)
            entry = QueueEntry.enqueue(
                bot_id=command.bot_id,
                pool=self.pool_name,
                platform=command.platform,
                priority=command.priority,
                timeout_s=command.timeout_s,
                config=dict(command.config),
                at=self.now(ctx),
                actor=ctx.actor,
                correlation_id=ctx.correlation_id,
            )
            return Change(entry, [entry])

        return self.uow.run(str(command), decide).answer

    def _cancel_queued(self, command: CancelQueued, ctx: Context) -> QueueEntry:
        entry_id = self.queue_entry_of_bot(command.bot_id).entry_id
        return self._cancel(entry_id, command.reason, ctx, str(command))

    def _cancel(self, entry_id: UUID, reason: str, ctx: Context, what: str) -> QueueEntry:
        """IllegalTransition once the entry no longer waits."""

        def decide(_: Attempt) -> Change[QueueEntry]:
            entry: QueueEntry = self.repository.get(entry_id)
            entry.cancel(
                reason, at=self.now(ctx), actor=ctx.actor, correlation_id=ctx.correlation_id
            )
            return Change(entry, [entry])

        return self.uow.run(what, decide).answer

    def _expire_due(self, command: ExpireDue, ctx: Context) -> list[QueueEntry]:
        """Expire every waiting entry past its timeout; the requester sees the reason."""
        now = self.now(ctx)
        expired = (self._expire(row, now, ctx) for row in self.waiting() if row.timeout_at <= now)
        return [entry for entry in expired if entry is not None]

    def _expire(self, row: QueueRow, now: datetime, ctx: Context) -> QueueEntry | None:
        def decide(_: Attempt) -> Change[QueueEntry | None]:
            entry = self.entry_of(row)
            if entry.status is not QueueStatus.WAITING:
                return Change(None)  # dispatched or cancelled meanwhile
            reason = entry.expiry_reason(now)
            entry.expire(reason, at=now, actor=ctx.actor, correlation_id=ctx.correlation_id)
            return Change(entry, [entry])

        return self.uow.run(f"expiry of the entry of bot {row.bot_id!r}", decide).answer

    def _dispatch_waiting(
        self, command: DispatchWaiting, ctx: Context
    ) -> list[tuple[QueueEntry, Outcome]]:
        """Each waiting entry, in order, takes the least recently used idle slot of its
        platform. Slot and entry change together, under the correlation id of the
        request that queued the entry; an entry that keeps losing races is left for the
        next drain. Once an entry finds no slot and no room, the entries after it of the
        same platform (of any, for an entry of any platform) are not tried: they would
        find none either, and a drain runs after every release and every queued request."""
        dispatched = []
        now = self.now(ctx)
        rows = [row for row in self.waiting() if row.timeout_at > now]  # expiry ends the rest
        if rows and self._no_capacity():
            return []
        full: set[str] = set()
        for row in rows:
            if row.platform in full:
                continue
            try:
                outcome = self._dispatch_one(row, ctx)
            except ConcurrencyExhausted:
                continue
            except _NoRoom:
                if row.platform is None:
                    break
                full.add(row.platform)
                continue
            if outcome is not None:
                dispatched.append(outcome)
        return dispatched

    def _no_capacity(self) -> bool:
        """No slot of any platform is available and the pool has no room for a new one:
        no entry can be dispatched, which one index read and one pool read tell (a drain
        runs after every release and every queued request, often with many waiting)."""
        if self.index.idle_candidates(self.pool_name, None, 1):
            return False
        pool = self.get_pool()
        return pool is not None and (pool.drained or pool.size >= pool.max_size)

    def _dispatch_one(self, row: QueueRow, ctx: Context) -> tuple[QueueEntry, Outcome] | None:
        """An idle slot for the entry, or a new one while the pool has room (a retired
        slot's place must not stay empty while requests wait).

        After a lost race the bot's slot is looked for: the checks before acquiring and
        before enqueueing refuse a bot that holds a slot and waits, but two first
        requests of one bot can still pass them at once. Such an entry could never be
        dispatched, and retrying it on every drain would cost a refused transaction
        each time until it expired: it is cancelled."""

        def decide(attempt: Attempt) -> Change[tuple[QueueEntry, Slot] | None]:
            at = self.now(ctx)
            entry = self.entry_of(row)
            if entry.status is not QueueStatus.WAITING:
                return Change(None)  # another dispatcher, expiry or cancel ended it
            mine = ctx.under(entry.correlation_id)
            cid = mine.correlation_id
            held = None if attempt.first else self.index.slot_for_bot(entry.bot_id)
            if held is not None:
                reason = already_holds(entry.bot_id, held.name).detail
                entry.cancel(reason, at=at, actor=mine.actor, correlation_id=cid)
                return Change(None, [entry])
            candidates = self.index.idle_candidates(self.pool_name, row.platform, 1)
            others: list[Pool | QueueEntry] = [entry]
            if candidates:
                slot = self._view().load(candidates[0])
            else:
                pool = self._pool(mine)
                if pool.drained or pool.size >= pool.max_size:
                    raise _NoRoom
                platform = row.platform or self.default_platform
                slot = self._admit(pool, platform, None, at, mine)
                others.append(pool)
            slot.acquire(entry.bot_id, at=at, actor=mine.actor, correlation_id=cid)
            entry.dispatch(slot.id, at=at, actor=mine.actor, correlation_id=cid)
            return Change((entry, slot), [slot, *others])

        done = self.uow.run(f"dispatch for bot {row.bot_id!r}", decide)
        if done.answer is None:
            return None
        entry, slot = done.answer
        return entry, Outcome(slot, done.position)

    # --- internals ---------------------------------------------------------------------

    def _view(self) -> IndexView:
        return IndexView(self.index, self.pool_name, self.slot_of)

    def _events_after(
        self, aggregate_id: UUID, version: int
    ) -> Iterable[DomainEventProtocol[UUID]]:
        """An aggregate's events after ``version``, for the versioned caches."""
        return self.repository.event_store.get(aggregate_id, gt=version)

    def _refuse_if_queued(self, bot_id: str) -> None:
        if self.index.waiting_entry_for_bot(check_bot_id(bot_id)) is not None:
            raise already_queued(bot_id)

    def _admit(
        self, pool: Pool, platform: str, coolify_uuid: str | None, at: datetime, ctx: Context
    ) -> Slot:
        """A new slot under the pool's next name (the pool refuses when full)."""
        slot_id = uuid4()
        cid = ctx.correlation_id
        name = pool.admit(slot_id, platform, at=at, actor=ctx.actor, correlation_id=cid)
        return Slot.provision(
            slot_id=slot_id,
            pool=self.pool_name,
            name=name,
            platform=platform,
            coolify_uuid=coolify_uuid,
            at=at,
            actor=ctx.actor,
            correlation_id=cid,
        )

    def _pool(self, ctx: Context) -> Pool:
        """The pool, created on first use."""
        return self.get_pool() or Pool.create(
            name=self.pool_name,
            prefix=self.slot_prefix,
            max_size=self.max_pool_size,
            at=self.now(ctx),
            correlation_id=ctx.correlation_id,
        )
