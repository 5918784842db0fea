"""Model-based test of the ledger (issue 10): hypothesis drives random sequences of every
``SlotLedger`` command against the real application on memory, SQLite and PostgreSQL,
beside a plain-Python model of what each command must do, including which domain error
it must raise.

Snapshots are taken every 3 events of a slot or pool and every 2 of a queue entry, so
most loads cross a snapshot boundary. After every step:

- the step wrote exactly the events the model expects (each changed aggregate up to its
  new version, no other); each changed aggregate, loaded fresh (the ledger has no
  aggregate cache), equals the model and its own replay without snapshots, value by
  value and type by type;
- the inline index (the command side's queries) agrees with the model;
- the read models, caught up, agree with the model (SQL stores; they need one);
- the invariant checker finds nothing in the whole log.

The clock is a fake one: each command runs 1 ms after the previous one, so timestamps
never tie, and a rule moves it further for queue timeouts.
"""

from __future__ import annotations

import math
import shutil
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, fields
from datetime import datetime, timedelta
from pathlib import Path
from statistics import fmean
from typing import Any, ClassVar, TypeVar
from unittest import TestCase
from uuid import UUID, uuid4

import psycopg
import pytest
from hypothesis import HealthCheck, event, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    rule,
)

from ledger.application import Outcome, SlotLedger
from ledger.application.capacity import capacity_plan
from ledger.bootstrap import build_ledger, build_read_models, memory_env
from ledger.domain import Pool, QueueEntry, QueueStatus, Slot, SlotStatus, pool_id
from ledger.domain.invariants import check_events, iter_log
from ledger.domain.pool import PoolDrainedError
from ledger.errors import (
    BadInput,
    BotAlreadyHoldsSlot,
    BotAlreadyQueued,
    BotNotFound,
    IllegalTransition,
    NoIdleSlot,
    PoolFull,
    SlotLedgerError,
    SlotNotFound,
    StaleLease,
    WrongBot,
)
from ledger.settings import load_settings
from projections import PoolStats, QueueStats, ReadModels
from tests.contracts.ledger import FakeClock
from tests.integration.aggregates import assert_same_state, replay, typed

T = TypeVar("T")

# A failing example is shrunk for up to hypothesis's own limit of 300 s; a pytest timeout
# at the same moment would cut that short and report a misleading "flaky" failure.
pytestmark = pytest.mark.timeout(900)

BOTS = ("b0", "b1", "b2", "b3")
PLATFORMS = ("meet", "zoom")
DEFAULT_PLATFORM = "meet"
FIRST_MAX_SIZE = 3
SNAPSHOT_EVERY = {Slot: 3, Pool: 3, QueueEntry: 2}
REASON = "model says so"
CANCEL_REASON = "cancelled by the requester"

# --- the model ---------------------------------------------------------------------------


@dataclass
class ModelSlot:
    slot_id: UUID
    name: str
    platform: str
    status_since: datetime
    pool: str = "default"
    coolify_uuid: str | None = None
    status: SlotStatus = SlotStatus.IDLE
    bot_id: str | None = None
    lease: int = 0
    deployment_uuid: str | None = None
    last_used: datetime | None = None
    last_error: str | None = None
    recovery_attempts: int = 0
    retired: bool = False
    drain_scope: str | None = None
    version: int = 1

    @property
    def drained(self) -> bool:
        return self.drain_scope is not None

    def move(self, status: SlotStatus, at: datetime) -> None:
        self.status, self.status_since, self.version = status, at, self.version + 1

    def lru_key(self) -> tuple[bool, datetime, str]:
        return (self.last_used is not None, self.last_used or self.status_since, self.name)


@dataclass
class ModelEntry:
    entry_id: UUID
    bot_id: str
    platform: str | None
    priority: int
    queued_at: datetime
    timeout_at: datetime
    config: dict[str, str]
    pool: str = "default"
    status: QueueStatus = QueueStatus.WAITING
    slot_id: UUID | None = None
    reason: str | None = None
    ended_at: datetime | None = None
    version: int = 1

    def end(self, status: QueueStatus, at: datetime, **fields: Any) -> None:
        self.status, self.ended_at, self.version = status, at, 2
        for name, value in fields.items():
            setattr(self, name, value)


@dataclass
class ModelPool:
    max_size: int
    members: dict[str, str] = field(default_factory=dict)
    next_number: dict[str, int] = field(default_factory=dict)
    drained: bool = False
    version: int = 1


@dataclass
class Model:
    """What the ledger must hold: slots, queue entries and the pool, nothing else."""

    max_size_setting: int = FIRST_MAX_SIZE
    slots: dict[UUID, ModelSlot] = field(default_factory=dict)
    entries: dict[UUID, ModelEntry] = field(default_factory=dict)
    pool: ModelPool | None = None

    def aggregates(self, pool: UUID) -> dict[UUID, ModelSlot | ModelEntry | ModelPool]:
        """Every aggregate the ledger must hold, by id (``pool``: the pool's)."""
        found: dict[UUID, ModelSlot | ModelEntry | ModelPool] = {**self.slots, **self.entries}
        if self.pool is not None:
            found[pool] = self.pool
        return found

    def ordered_slots(self) -> list[ModelSlot]:
        return sorted(self.slots.values(), key=lambda s: s.name)

    def holder(self, bot: str) -> ModelSlot | None:
        return next((s for s in self.slots.values() if s.bot_id == bot), None)

    def waiting(self) -> list[ModelEntry]:
        waiting = [e for e in self.entries.values() if e.status is QueueStatus.WAITING]
        return sorted(waiting, key=lambda e: (e.priority, e.queued_at, e.bot_id))

    def waiting_entry(self, bot: str) -> ModelEntry | None:
        return next((e for e in self.waiting() if e.bot_id == bot), None)

    def idle(self, platform: str | None) -> list[ModelSlot]:
        idle = [
            s
            for s in self.slots.values()
            if s.status is SlotStatus.IDLE
            and not s.retired
            and not s.drained
            and platform in (None, s.platform)
        ]
        return sorted(idle, key=ModelSlot.lru_key)

    def is_full(self) -> bool:
        pool = self.pool
        return pool is not None and len(pool.members) >= pool.max_size

    def admits(self) -> type[SlotLedgerError] | None:
        """Why the pool takes no new slot, if it takes none."""
        if self.pool is not None and self.pool.drained:
            return PoolDrainedError
        return PoolFull if self.is_full() else None

    def fit(self) -> None:
        """The ledger keeps the pool within its maximum by draining (``SlotLedger``'s
        ``fit_capacity``); the plan is the one function, its effect is modelled here."""
        if self.pool is None:
            return
        drain, undrain = capacity_plan(list(self.slots.values()), self.pool.max_size)
        if self.pool.drained:
            undrain = []
        for slot in drain:
            slot.drain_scope, slot.version = "size", slot.version + 1
        for slot in undrain:
            slot.drain_scope, slot.version = None, slot.version + 1

    def next_name(self, platform: str) -> str:
        number = (self.pool.next_number.get(platform, 0) if self.pool else 0) + 1
        return f"pool-{platform}-{number:03d}"

    def admit(self, slot_id: UUID, platform: str, at: datetime) -> ModelSlot:
        if self.pool is None:
            self.pool = ModelPool(self.max_size_setting)
        slot = ModelSlot(slot_id, self.next_name(platform), platform, status_since=at)
        self.pool.members[str(slot_id)] = platform
        self.pool.next_number[platform] = self.pool.next_number.get(platform, 0) + 1
        self.pool.version += 1
        self.slots[slot_id] = slot
        return slot

    @staticmethod
    def acquire(slot: ModelSlot, bot: str, at: datetime) -> None:
        slot.move(SlotStatus.DEPLOYING, at)
        slot.bot_id, slot.lease, slot.deployment_uuid = bot, slot.lease + 1, None


# --- the stores ------------------------------------------------------------------------

Opened = tuple[SlotLedger, ReadModels | None]


def _sql_store(database_url: str, clock: FakeClock) -> Iterator[Opened]:
    """The ledger as ``slotledger serve`` builds it, and its read models."""
    config = load_settings(
        database_url=database_url, max_pool_size=FIRST_MAX_SIZE, default_platform=DEFAULT_PLATFORM
    )
    ledger = build_ledger(config, clock=clock)
    models = build_read_models(config, ledger)
    try:
        yield ledger, models
    finally:
        models.close()
        ledger.close()


def memory_store(clock: FakeClock) -> Iterator[Opened]:
    """The in-memory ledger has no read models (they are SQL tables)."""
    ledger = SlotLedger(
        memory_env(), max_pool_size=FIRST_MAX_SIZE, default_platform=DEFAULT_PLATFORM, clock=clock
    )
    try:
        yield ledger, None
    finally:
        ledger.close()


def sqlite_store(clock: FakeClock) -> Iterator[Opened]:
    directory = Path(tempfile.mkdtemp(prefix="slotledger-model-"))
    try:
        yield from _sql_store(f"sqlite:///{directory / 'ledger.db'}", clock)
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def postgres_store(base_url: str, clock: FakeClock) -> Iterator[Opened]:
    """A schema of its own per example, dropped afterwards."""
    schema = f"m_{uuid4().hex[:12]}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield from _sql_store(f"{base_url}?schema={schema}", clock)
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


# --- the machine -------------------------------------------------------------------------

picks = st.integers(min_value=0, max_value=11)
bots = st.sampled_from(BOTS)
leases = st.sampled_from(["none", "current", "current", "stale"])


class LedgerMachine(RuleBasedStateMachine):
    """One example: a fresh store, the ledger and the model, step by step."""

    @classmethod
    def open(cls, clock: FakeClock) -> Iterator[Opened]:
        """A fresh, empty ledger (and its read models) for one example."""
        raise NotImplementedError

    def __init__(self) -> None:
        super().__init__()
        self.clock = FakeClock()
        self._opened = contextmanager(type(self).open)(self.clock)
        self.ledger, self.models = self._opened.__enter__()
        self.ledger.refusals.window_s = 0.0  # the model records every refused heartbeat
        assert self.ledger.repository.cache is None, "loads must not come from a cache"
        # A small interval, so that loads cross snapshots (the class default is 50).
        self.ledger.snapshotting_intervals = SNAPSHOT_EVERY
        self.model = Model()
        self.position = 0
        self.checked: dict[UUID, int] = {}
        """The version of each aggregate when it was last checked."""

    def teardown(self) -> None:
        self._opened.__exit__(None, None, None)

    # --- helpers -------------------------------------------------------------------------

    def tick(self) -> datetime:
        return self.clock.advance(0.001)

    def pick(self, index: int) -> ModelSlot:
        """One of the slots; before the first, one the ledger does not know."""
        slots = self.model.ordered_slots()
        if not slots:
            return ModelSlot(uuid4(), "unknown", DEFAULT_PLATFORM, self.clock.now)
        return slots[index % len(slots)]

    @staticmethod
    def choose(index: int, preferred: list[str]) -> str:
        """Mostly one of ``preferred`` (the bots a command applies to), else any bot."""
        bots = preferred if preferred and index % 4 else BOTS
        return bots[index % len(bots)]

    def unknown(self, slot: ModelSlot) -> type[SlotLedgerError] | None:
        return None if slot.slot_id in self.model.slots else SlotNotFound

    @staticmethod
    def run(
        what: str, expected: type[SlotLedgerError] | None, command: Callable[[], T]
    ) -> T | None:
        """Run a command; it must raise exactly the error the model expects, or none.
        The outcome is a hypothesis event, so the statistics show what was covered."""
        event(f"{what}: {expected.__name__ if expected else 'done'}")
        try:
            result = command()
        except SlotLedgerError as e:
            assert type(e) is expected, f"raised {e!r}, the model expected {expected}"
            return None
        assert expected is None, f"the model expected {expected.__name__}, got {result!r}"
        return result

    @staticmethod
    def lease_of(slot: ModelSlot, lease: str) -> int | None:
        return {"none": None, "current": slot.lease, "stale": slot.lease - 1}[lease]

    # --- slot commands -------------------------------------------------------------------

    @initialize(platforms=st.lists(st.sampled_from(PLATFORMS), max_size=FIRST_MAX_SIZE))
    def some_slots(self, platforms: list[str]) -> None:
        """Most examples start with a few slots, so the steps reach past provisioning."""
        for platform in platforms:
            self.provision(platform, None)

    @rule(platform=st.sampled_from(PLATFORMS), bot=st.none() | bots)
    def provision(self, platform: str, bot: str | None) -> None:
        at, model = self.tick(), self.model
        expected: type[SlotLedgerError] | None = None
        if bot is not None and model.holder(bot):
            expected = BotAlreadyHoldsSlot
        elif bot is not None and model.waiting_entry(bot):
            expected = BotAlreadyQueued
        else:
            expected = model.admits()
        outcome = self.run(
            "provision", expected, lambda: self.ledger.provision(platform, acquire_for=bot)
        )
        if outcome is not None:
            name = model.next_name(platform)
            slot = model.admit(outcome.slot.id, platform, at)
            assert outcome.slot.name == name
            if bot is not None:
                model.acquire(slot, bot, at)

    @rule(bot=bots, platform=st.none() | st.sampled_from(PLATFORMS))
    def acquire(self, bot: str, platform: str | None) -> None:
        """A bot holds at most one slot or one queue entry: one that waits is refused."""
        expected = BotAlreadyQueued if self.model.waiting_entry(bot) else None
        self._acquire("acquire", bot, platform, expected, self.ledger.acquire)

    @rule(index=picks, platform=st.none() | st.sampled_from(PLATFORMS))
    def acquire_racing_enqueue(self, index: int, platform: str | None) -> None:
        """What two first requests of one bot can do at once: both pass the checks
        before either saves, so one acquires while the other enqueues. ``acquire_now``
        skips the queue check, as the request that lost that race did; the entry left
        waiting is ended by the next dispatch (see ``dispatch_waiting``)."""
        bot = self.choose(index, [e.bot_id for e in self.model.waiting()])
        self._acquire("acquire_racing_enqueue", bot, platform, None, self.ledger.acquire_now)

    def _acquire(
        self,
        what: str,
        bot: str,
        platform: str | None,
        refused: type[SlotLedgerError] | None,
        command: Callable[..., Outcome],
    ) -> None:
        """Take the least recently used idle slot of ``platform`` for ``bot``, unless the
        bot is ``refused`` first, holds a slot, or no slot is idle."""
        at, model = self.tick(), self.model
        idle = model.idle(platform)
        expected = refused
        if expected is None and model.holder(bot):
            expected = BotAlreadyHoldsSlot
        elif expected is None and not idle:
            expected = NoIdleSlot
        outcome = self.run(what, expected, lambda: command(bot, platform=platform))
        if outcome is not None:
            assert outcome.slot.id == idle[0].slot_id, "not the least recently used idle slot"
            model.acquire(idle[0], bot, at)

    @rule(index=picks)
    def release(self, index: int) -> None:
        bot = self.choose(index, [s.bot_id for s in self.model.ordered_slots() if s.bot_id])
        at, slot = self.tick(), self.model.holder(bot)
        outcome = self.run(
            "release", None if slot else BotNotFound, lambda: self.ledger.release(bot)
        )
        if outcome is not None and slot is not None:
            slot.move(SlotStatus.IDLE, at)
            slot.bot_id, slot.last_used, slot.recovery_attempts = None, at, 0

    @rule(index=picks, stranger=st.booleans(), bot=bots)
    def heartbeat(self, index: int, stranger: bool, bot: str) -> None:
        at, slot = self.tick(), self.pick(index)
        who = bot if stranger or slot.bot_id is None else slot.bot_id
        expected = self.unknown(slot) or (None if who == slot.bot_id else WrongBot)
        outcome = self.run("heartbeat", expected, lambda: self.ledger.heartbeat(slot.slot_id, who))
        if expected is WrongBot:
            slot.version += 0 if slot.retired else 1  # the refusal is recorded
        elif expected is None and slot.status is SlotStatus.DEPLOYING:
            assert outcome is not None
            slot.move(SlotStatus.BUSY, at)
        elif expected is None:
            assert outcome is None, "a busy slot's heartbeat changes nothing"

    @rule(index=picks, lease=leases)
    def fail(self, index: int, lease: str) -> None:
        at, slot = self.tick(), self.pick(index)
        expected = self._leased(slot, lease)
        given = self.lease_of(slot, lease)
        if self.run("fail", expected, lambda: self.ledger.fail(slot.slot_id, REASON, lease=given)):
            if slot.bot_id is not None:
                slot.last_used = at
            slot.move(SlotStatus.ERROR, at)
            slot.bot_id, slot.last_error = None, REASON

    def _refused(self, slot: ModelSlot, *allowed: SlotStatus) -> type[SlotLedgerError] | None:
        """An unknown slot first, then a retired one or a status the event may not follow."""
        if self.unknown(slot):
            return SlotNotFound
        return IllegalTransition if slot.retired or slot.status not in allowed else None

    @rule(index=picks)
    def recovery_failed(self, index: int) -> None:
        self.tick()
        slot = self.pick(index)
        expected = self._refused(slot, SlotStatus.ERROR)
        if self.run(
            "recovery_failed", expected, lambda: self.ledger.recovery_failed(slot.slot_id, REASON)
        ):
            slot.recovery_attempts += 1
            slot.last_error, slot.version = REASON, slot.version + 1

    @rule(index=picks)
    def recover(self, index: int) -> None:
        at, slot = self.tick(), self.pick(index)
        expected = self._refused(slot, SlotStatus.ERROR)
        if self.run("recover", expected, lambda: self.ledger.recover(slot.slot_id)):
            slot.move(SlotStatus.IDLE, at)
            slot.recovery_attempts = 0

    @rule(index=picks)
    def retire(self, index: int) -> None:
        self.tick()
        model = self.model
        slot, pool = self.pick(index), model.pool
        expected = self._refused(slot, SlotStatus.IDLE, SlotStatus.ERROR)
        if self.run("retire", expected, lambda: self.ledger.retire(slot.slot_id, REASON)):
            assert pool is not None
            slot.retired, slot.version = True, slot.version + 1
            del pool.members[str(slot.slot_id)]
            pool.version += 1
            model.fit()

    @rule(index=picks, undrain=st.booleans())
    def drain(self, index: int, undrain: bool) -> None:
        """Drain or undrain a slot by name; the ledger then keeps the pool within its
        maximum (undraining a slot drained for size may drain another, or it again)."""
        self.tick()
        slot, model = self.pick(index), self.model
        expected = self.unknown(slot) or (
            IllegalTransition if slot.retired or slot.drained is not undrain else None
        )
        command = lambda: self.ledger.drain(slot.slot_id, REASON, undrain=undrain)  # noqa: E731
        if self.run("undrain" if undrain else "drain", expected, command):
            slot.drain_scope, slot.version = None if undrain else "slot", slot.version + 1
            model.fit()

    @rule(undrain=st.booleans())
    def drain_pool(self, undrain: bool) -> None:
        """The pool's own drain: no new slot while it holds (its slots are the operator's)."""
        self.tick()
        model = self.model
        self.ledger.drain_pool(REASON, undrain=undrain)
        if model.pool is None:
            model.pool = ModelPool(model.max_size_setting)
            if undrain:  # nothing changed: a pool made only to be undrained is not saved
                model.pool = None
                return
        if model.pool.drained is undrain:
            model.pool.drained, model.pool.version = not undrain, model.pool.version + 1
        model.fit()

    def _leased(
        self, slot: ModelSlot, lease: str, *allowed: SlotStatus
    ) -> type[SlotLedgerError] | None:
        """Commands that carry a lease check it once the slot is loaded, before the
        transition."""
        if lease == "stale" and not self.unknown(slot):
            return StaleLease
        return self._refused(slot, *(allowed or SlotStatus))

    @rule(index=picks, lease=leases)
    def mark_deploying(self, index: int, lease: str) -> None:
        self.tick()
        slot = self.pick(index)
        deployment = f"dep-{slot.version}"
        given = self.lease_of(slot, lease)
        expected = self._leased(slot, lease, SlotStatus.DEPLOYING)
        if self.run(
            "mark_deploying",
            expected,
            lambda: self.ledger.mark_deploying(slot.slot_id, deployment, lease=given),
        ):
            slot.deployment_uuid, slot.version = deployment, slot.version + 1

    @rule(index=picks, lease=leases)
    def mark_started(self, index: int, lease: str) -> None:
        at, slot = self.tick(), self.pick(index)
        given = self.lease_of(slot, lease)
        expected = self._leased(slot, lease, SlotStatus.DEPLOYING)
        if self.run(
            "mark_started", expected, lambda: self.ledger.mark_started(slot.slot_id, lease=given)
        ):
            slot.move(SlotStatus.BUSY, at)

    @rule(index=picks, lease=leases)
    def app_created(self, index: int, lease: str) -> None:
        self.tick()
        slot = self.pick(index)
        app = f"app-{slot.version}"
        given = self.lease_of(slot, lease)
        expected = self._leased(slot, lease)
        if self.run(
            "app_created", expected, lambda: self.ledger.app_created(slot.slot_id, app, lease=given)
        ):
            slot.coolify_uuid, slot.version = app, slot.version + 1

    # --- queue commands ------------------------------------------------------------------

    @rule(
        bot=bots,
        platform=st.none() | st.sampled_from(PLATFORMS),
        priority=st.integers(-1, 1),
        timeout_s=st.sampled_from([1, 5, 30]),
        config=st.dictionaries(st.sampled_from(["URL", "MODE"]), st.sampled_from(["", "x"])),
    )
    def enqueue(
        self, bot: str, platform: str | None, priority: int, timeout_s: int, config: dict[str, str]
    ) -> None:
        at, model = self.tick(), self.model
        expected: type[SlotLedgerError] | None = None
        if model.holder(bot):
            expected = BotAlreadyHoldsSlot
        elif model.waiting_entry(bot):
            expected = BotAlreadyQueued
        entry = self.run(
            "enqueue",
            expected,
            lambda: self.ledger.enqueue(
                bot, platform=platform, priority=priority, timeout_s=timeout_s, config=config
            ),
        )
        if entry is not None:
            model.entries[entry.id] = ModelEntry(
                entry.id, bot, platform, priority, at, at + timedelta(seconds=timeout_s), config
            )

    @rule(index=picks)
    def cancel_queued(self, index: int) -> None:
        bot = self.choose(index, [e.bot_id for e in self.model.waiting()])
        at, entry = self.tick(), self.model.waiting_entry(bot)
        cancelled = self.run(
            "cancel_queued", None if entry else BotNotFound, lambda: self.ledger.cancel_queued(bot)
        )
        if cancelled is not None and entry is not None:
            assert cancelled.id == entry.entry_id
            entry.end(QueueStatus.CANCELLED, at, reason=CANCEL_REASON)

    @rule()
    def expire_due(self) -> None:
        at = self.tick()
        due = [e for e in self.model.waiting() if e.timeout_at <= at]
        expired = self.ledger.expire_due()
        event(f"expire_due: {'some' if due else 'none'} due")
        assert [e.id for e in expired] == [e.entry_id for e in due]
        for entry in due:
            waited = (at - entry.queued_at).total_seconds()
            entry.end(
                QueueStatus.EXPIRED,
                at,
                reason=f"no slot became available within {waited:.0f}s",
            )

    @rule()
    def dispatch_waiting(self) -> None:
        """Each waiting entry in order takes the least recently used idle slot of its
        platform, else a new slot while the pool has room. An entry whose bot already
        holds a slot (``acquire_racing_enqueue``) is cancelled once a slot could be taken
        for it, since it can never be dispatched (the index refuses a second slot for a
        bot); while there is none, it waits like any other."""
        at, model = self.tick(), self.model
        dispatched = iter(self.ledger.dispatch_waiting())
        for entry in model.waiting():
            idle = model.idle(entry.platform)
            if entry.timeout_at <= at:
                continue
            if not idle and model.admits():
                event("dispatch_waiting: pool full or drained")
                continue
            held = model.holder(entry.bot_id)
            if held is not None:
                event("dispatch_waiting: cancelled the entry of a bot that holds a slot")
                reason = f"bot {entry.bot_id!r} already holds slot {held.name}"
                entry.end(QueueStatus.CANCELLED, at, reason=reason)
                continue
            got = next(dispatched, None)
            assert got is not None, f"the entry of {entry.bot_id} was not dispatched"
            got_entry, outcome = got
            assert got_entry.id == entry.entry_id
            event(f"dispatch_waiting: {'to an idle slot' if idle else 'to a new slot'}")
            if idle:
                slot = idle[0]
                assert outcome.slot.id == slot.slot_id
            else:
                platform = entry.platform or DEFAULT_PLATFORM
                assert outcome.slot.name == model.next_name(platform)
                slot = model.admit(outcome.slot.id, platform, at)
            model.acquire(slot, entry.bot_id, at)
            entry.end(QueueStatus.DISPATCHED, at, slot_id=slot.slot_id)
        assert next(dispatched, None) is None, "dispatched more than the model"

    # --- pool and clock ------------------------------------------------------------------

    @rule(size=st.integers(0, 5))
    def resize(self, size: int) -> None:
        self.tick()
        model, before = self.model, self.ledger.max_pool_size
        self.ledger.max_pool_size = size
        if self.run("resize", BadInput if size == 0 else None, self.ledger.ensure_pool) is None:
            self.ledger.max_pool_size = before  # the setting is ours, not the ledger's
            return
        model.max_size_setting = size
        if model.pool is None:
            model.pool = ModelPool(size)
        elif model.pool.max_size != size:
            model.pool.max_size, model.pool.version = size, model.pool.version + 1
        model.fit()

    @rule(seconds=st.sampled_from([1, 10, 40]))
    def advance_clock(self, seconds: int) -> None:
        self.clock.advance(seconds)

    # --- checks after every step ---------------------------------------------------------

    @invariant()
    def agrees_with_the_model(self) -> None:
        changed = self.check_the_new_events()
        self.check_the_index()
        self.check_the_read_models(entries_changed=any(a in self.model.entries for a in changed))
        # Starvation is a liveness rule that needs a dispatcher running; here dispatch is
        # a step the machine may never take, so only the safety rules apply. A shrink
        # below the slots in use drains the excess, so none is acquired past the maximum.
        report = check_events(iter_log(self.ledger), queue_grace_s=math.inf)
        assert report.ok, report.violations

    def check_the_new_events(self) -> set[UUID]:
        """The events written since the last step are exactly the ones the model expects
        (each changed aggregate up to its version, no other); each changed aggregate,
        loaded fresh, equals the model and its own replay. Returns their ids."""
        written: dict[UUID, int] = {}
        for n in self.ledger.recorder.select_notifications(
            self.position, 1000, inclusive_of_start=False
        ):
            written[UUID(str(n.originator_id))] = n.originator_version
            self.position = n.id
        expected = self.model.aggregates(pool_id(self.ledger.pool_name))
        assert written == {
            a: m.version for a, m in expected.items() if self.checked.get(a) != m.version
        }
        for aggregate_id in written:
            loaded = self.ledger.repository.get(aggregate_id)
            assert_same_state(loaded, replay(self.ledger, aggregate_id))
            assert_matches(loaded, expected[aggregate_id], skip=("slot_id", "entry_id"))
        self.checked.update(written)
        return set(written)

    def check_the_index(self) -> None:
        model = self.model
        rows = self.ledger.slots(include_retired=True)
        assert [r.slot_id for r in rows] == [s.slot_id for s in model.ordered_slots()]
        for row in rows:
            assert_matches(model.slots[row.slot_id], row)
        waiting = self.ledger.waiting()
        assert [r.entry_id for r in waiting] == [e.entry_id for e in model.waiting()]
        for queued in waiting:
            assert_matches(model.entries[queued.entry_id], queued)

    def check_the_read_models(self, *, entries_changed: bool) -> None:
        models, model = self.models, self.model
        if models is None:
            return
        models.catch_up()
        states = models.slots()
        assert [s.slot_id for s in states] == [s.slot_id for s in model.ordered_slots()]
        for state in states:
            assert_matches(model.slots[state.slot_id], state, skip=("since_position",))
        statuses = [s.status for s in model.slots.values() if not s.retired]
        max_size = model.pool.max_size if model.pool else 0
        assert models.pool_stats() == PoolStats.count(statuses, max_size)
        assert_queue_stats(models.queue_stats(), model)
        if entries_changed:  # all rows of every model: only when there is news
            rows = {row.entry_id: row for row in models.dump()["queue_entries"]}
            assert rows.keys() == model.entries.keys()
            for row in rows.values():
                assert_matches(model.entries[row.entry_id], row)


def assert_matches(actual: Any, expected: Any, *, skip: tuple[str, ...] = ()) -> None:
    """Every field of ``expected`` (a model object or a row) equals, with its type, the
    same-named attribute of ``actual``."""
    for f in fields(expected):
        if f.name not in skip:
            got, want = getattr(actual, f.name), getattr(expected, f.name)
            assert typed(got) == typed(want), f"{type(actual).__name__}.{f.name}"


def assert_queue_stats(stats: QueueStats, model: Model) -> None:
    waiting = model.waiting()
    assert stats.length == len(waiting)
    assert stats.oldest_queued_at == min((e.queued_at for e in waiting), default=None)
    waits = [
        (e.ended_at - e.queued_at).total_seconds()
        for e in model.entries.values()
        if e.status is QueueStatus.DISPATCHED and e.ended_at is not None
    ]
    if not waits:
        assert stats.average_wait_s is None
    else:
        assert stats.average_wait_s == pytest.approx(fmean(waits), abs=0.0011)


class MemoryMachine(LedgerMachine):
    @classmethod
    def open(cls, clock: FakeClock) -> Iterator[Opened]:
        return memory_store(clock)


class SQLiteMachine(LedgerMachine):
    @classmethod
    def open(cls, clock: FakeClock) -> Iterator[Opened]:
        return sqlite_store(clock)


class PostgresMachine(LedgerMachine):
    base_url: ClassVar[str] = ""
    """Set by :class:`TestOnPostgres` from the ``postgres_base_url`` fixture."""

    @classmethod
    def open(cls, clock: FakeClock) -> Iterator[Opened]:
        return postgres_store(cls.base_url, clock)


def as_test_case(machine: type[LedgerMachine], examples: int, steps: int) -> type[TestCase]:
    """The machine as a test, sized so each store's run stays well under a minute on a
    loaded 2-core machine (the SQL stores pay a round trip per query)."""
    case: type[TestCase] = machine.TestCase
    case.settings = settings(  # type: ignore[attr-defined]
        max_examples=examples,
        stateful_step_count=steps,
        deadline=None,
        database=None,
        suppress_health_check=[HealthCheck.too_slow],
    )
    return case


TestInMemory = as_test_case(MemoryMachine, examples=200, steps=50)
TestOnSQLite = as_test_case(SQLiteMachine, examples=60, steps=40)


@pytest.mark.postgres
class TestOnPostgres(as_test_case(PostgresMachine, examples=30, steps=40)):  # type: ignore[misc]
    @pytest.fixture(autouse=True)
    def _server(self, postgres_base_url: str) -> None:
        PostgresMachine.base_url = postgres_base_url
