"""The acquire and release rules, decided once whoever asks: a single command against the
inline index, or a batch of group commit against its one read of the pool.

Each rule reads through a :class:`SlotView` and decides on the slot aggregate; the view
says how rows are read and how a slot is loaded (a loaded slot whose row moved on is a
:class:`~ledger.application.unit_of_work.LostRace`). The refusals are worded here only.
"""

from __future__ import annotations

import random
from collections.abc import Callable
from datetime import datetime
from typing import Protocol

from ledger.application.commands import Acquire, Context, Release
from ledger.application.ports import AcquireReads, LedgerRecorder, SlotRow
from ledger.application.unit_of_work import LostRace
from ledger.domain import Slot, check_bot_id, check_platform
from ledger.errors import BotAlreadyHoldsSlot, BotAlreadyQueued, BotNotFound, NoIdleSlot

__all__ = [
    "IndexView",
    "SlotView",
    "already_holds",
    "already_queued",
    "decide_acquire",
    "decide_release",
    "holds_no_slot",
    "no_idle_slot",
    "not_queued",
    "refuse_if_holding",
]


def holds_no_slot(bot_id: str) -> BotNotFound:
    return BotNotFound(f"bot {bot_id!r} holds no slot")


def not_queued(bot_id: str) -> BotNotFound:
    return BotNotFound(f"bot {bot_id!r} is not waiting in the queue")


def already_holds(bot_id: str, slot_name: str) -> BotAlreadyHoldsSlot:
    return BotAlreadyHoldsSlot(f"bot {bot_id!r} already holds slot {slot_name}")


def already_queued(bot_id: str) -> BotAlreadyQueued:
    return BotAlreadyQueued(f"bot {bot_id!r} already waits in the queue")


def no_idle_slot(pool: str, platform: str | None) -> NoIdleSlot:
    where = f" for platform {platform}" if platform else ""
    return NoIdleSlot(f"no idle slot in pool {pool}{where}")


class SlotView(Protocol):
    """The slots of one pool as a decision reads them."""

    @property
    def pool_name(self) -> str: ...

    def holder_row(self, bot_id: str) -> SlotRow | None:
        """The slot the bot holds, if any."""

    def acquire_reads(self, bot_id: str, platform: str | None, limit: int) -> AcquireReads:
        """What an acquire for the bot decides on: its queue entry (a view that checks the
        queue elsewhere answers None), its slot, and up to ``limit`` idle slots (of one
        platform, or any), least recently used first."""

    def load(self, row: SlotRow) -> Slot:
        """The slot of a row; :class:`LostRace` when it moved on since the row was read."""


class IndexView:
    """A single command's view: the inline index, read now."""

    def __init__(self, index: LedgerRecorder, pool_name: str, slot_of: Callable[[SlotRow], Slot]):
        self.index = index
        self._pool_name = pool_name
        self._slot_of = slot_of

    @property
    def pool_name(self) -> str:
        return self._pool_name

    def holder_row(self, bot_id: str) -> SlotRow | None:
        return self.index.slot_for_bot(check_bot_id(bot_id))

    def acquire_reads(self, bot_id: str, platform: str | None, limit: int) -> AcquireReads:
        return self.index.acquire_reads(check_bot_id(bot_id), self._pool_name, platform, limit)

    def load(self, row: SlotRow) -> Slot:
        slot = self._slot_of(row)
        if (slot.retired, slot.status, slot.drain_scope) != (
            row.retired,
            row.status,
            row.drain_scope,
        ):
            raise LostRace(f"slot {row.name} moved on since its row was read")
        return slot


ACQUIRE_CANDIDATES = 32
"""How many idle slots an acquire reads to choose from after a lost race: about as many
as there are concurrent acquirers, so that their random draws rarely collide (with 16
processes on 32 slots, 8 candidates lost 0.59 races per cycle and 32 lost 0.18).
A first choice reads only the least recently used one."""


def refuse_if_holding(view: SlotView, bot_id: str) -> None:
    held = view.holder_row(bot_id)
    if held is not None:
        raise already_holds(bot_id, held.name)


def decide_acquire(
    view: SlotView,
    command: Acquire,
    ctx: Context,
    at: datetime,
    *,
    first: bool = True,
    queue_checked: bool = False,
) -> Slot:
    """Take the least recently used idle slot for a bot that holds none and does not
    wait in the queue (unless the caller checked that already). After a lost race, or
    while races are being lost (``first`` false), one of the candidates is drawn at
    random, so that racing callers spread out instead of queueing on the same slot."""
    check_bot_id(command.bot_id)
    if command.platform is not None:
        check_platform(command.platform)
    # The first choice is the least recently used slot: only it is read.
    limit = 1 if first else ACQUIRE_CANDIDATES
    reads = view.acquire_reads(command.bot_id, command.platform, limit)
    if reads.waiting is not None and not queue_checked:
        raise already_queued(command.bot_id)
    if reads.held is not None:
        raise already_holds(command.bot_id, reads.held.name)
    candidates = reads.idle
    if not candidates:
        raise no_idle_slot(view.pool_name, command.platform)
    row = candidates[0] if first else random.choice(candidates)
    slot = view.load(row)
    slot.acquire(command.bot_id, at=at, actor=ctx.actor, correlation_id=ctx.correlation_id)
    return slot


def decide_release(view: SlotView, command: Release, ctx: Context, at: datetime) -> Slot:
    """Give back the slot the bot holds (its guards refuse a slot that cannot be): at
    once, or ``staged`` (the lease ends now, the slot waits for its container to go)."""
    row = view.holder_row(command.bot_id)
    if row is None:
        raise holds_no_slot(command.bot_id)
    slot = view.load(row)
    release = slot.begin_release if command.staged else slot.release
    release(command.bot_id, at=at, actor=ctx.actor, correlation_id=ctx.correlation_id)
    return slot
