"""The projector on the in-memory ledger: no database, just the fold."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from itertools import pairwise
from typing import Any
from uuid import UUID, uuid4

import pytest

from ledger.application import SlotLedger
from ledger.bootstrap import memory_env
from ledger.domain import QueueStatus, SlotStatus
from ledger.domain.invariants import iter_log
from ledger.errors import IllegalTransition, NoIdleSlot
from projections.engine.fold import EVENT_TYPES, Changes, Positioned, Projector
from projections.errors import ProjectionError
from projections.models.records import Interval, QueueState, SlotState
from tests.contracts.ledger import FakeClock

T0 = datetime(2025, 12, 17, 22, 0, tzinfo=UTC)


def fold_in_batches(
    events: list[Positioned], size: int
) -> tuple[dict[UUID, SlotState], dict[UUID, QueueState], dict[int, Interval]]:
    """Fold batch by batch, carrying rows forward the way the database does."""
    projector = Projector()
    slots: dict[UUID, SlotState] = {}
    queue: dict[UUID, QueueState] = {}
    intervals: dict[int, Interval] = {}
    for i in range(0, len(events), size):
        batch = events[i : i + size]
        slot_ids, entry_ids = projector.prior_ids(batch)
        changes = projector.fold(
            batch,
            {k: slots[k] for k in slot_ids if k in slots},
            {k: queue[k] for k in entry_ids if k in queue},
        )
        slots |= changes.slots
        queue |= changes.queue
        for since, (_, to_ts, to_position) in changes.closed.items():
            intervals[since] = intervals[since]._replace(to_ts=to_ts, to_position=to_position)
        intervals |= changes.opened
    return slots, queue, intervals


def random_history(seed: int) -> SlotLedger:
    rng = random.Random(seed)
    clock = FakeClock(T0)
    ledger = SlotLedger(memory_env(), clock=clock, max_pool_size=6)
    slots = [ledger.provision("meet").slot.id for _ in range(4)]
    for n in range(300):
        clock.advance(rng.uniform(0.5, 30))
        slot_id = rng.choice(slots)
        action = rng.choice(
            ["acquire", "deploying", "started", "release", "fail", "recover", "queue", "dispatch"]
        )
        try:
            if action == "acquire":
                ledger.acquire(f"bot-{n}")
            elif action == "deploying":
                ledger.mark_deploying(slot_id, f"dep-{n}")
            elif action == "started":
                ledger.mark_started(slot_id)
            elif action == "release":
                bot = ledger.get_slot(slot_id).bot_id
                if bot:
                    ledger.release(bot)
            elif action == "fail":
                ledger.fail(slot_id, "boom", reason_code="exited")
            elif action == "recover":
                ledger.recover(slot_id)
            elif action == "queue":
                ledger.enqueue(f"queued-{n}")
            else:
                ledger.dispatch_waiting()
        except (IllegalTransition, NoIdleSlot):
            continue
    return ledger


@pytest.mark.parametrize("batch_size", [1, 7, 10_000])
def test_slot_rows_match_the_aggregates_whatever_the_batches(batch_size: int) -> None:
    ledger = random_history(seed=batch_size)
    events = list(iter_log(ledger))
    slots, queue, _ = fold_in_batches(events, batch_size)
    for slot_id, row in slots.items():
        slot = ledger.get_slot(slot_id)
        for name in ("status", "status_since", "bot_id", "lease", "last_used", "last_error"):
            assert getattr(row, name) == getattr(slot, name), name
        assert (row.recovery_attempts, row.retired, row.version) == (
            slot.recovery_attempts,
            slot.retired,
            slot.version,
        )
    for entry_id, state in queue.items():
        entry: Any = ledger.repository.get(entry_id)
        assert (state.status, state.slot_id, state.ended_at) == (
            entry.status,
            entry.slot_id,
            entry.ended_at,
        )


def test_intervals_tile_each_slots_life_without_gaps() -> None:
    ledger = random_history(seed=3)
    events = list(iter_log(ledger))
    slots, _, intervals = fold_in_batches(events, 5)
    for slot_id, row in slots.items():
        mine = sorted(
            (i for i in intervals.values() if i.slot_id == slot_id), key=lambda i: i.from_position
        )
        assert all(a.to_position == b.from_position for a, b in pairwise(mine))
        assert all(a.to_ts == b.from_ts for a, b in pairwise(mine))
        assert mine[-1].to_ts is None and mine[-1].status == row.status
        assert mine[-1].from_position == row.since_position


def test_retirement_closes_the_last_interval() -> None:
    clock = FakeClock(T0)
    ledger = SlotLedger(memory_env(), clock=clock)
    slot_id = ledger.provision("meet").slot.id
    clock.advance(10)
    ledger.retire(slot_id, "rotated")
    slots, _, intervals = fold_in_batches(list(iter_log(ledger)), 100)
    [interval] = intervals.values()
    assert (interval.status, interval.to_ts) == (SlotStatus.IDLE, T0 + timedelta(seconds=10))
    assert slots[slot_id].retired


def test_queue_entries_and_pool_sizes() -> None:
    clock = FakeClock(T0)
    ledger = SlotLedger(memory_env(), clock=clock, max_pool_size=3)
    ledger.provision("meet", acquire_for="busy-bot")
    entry = ledger.enqueue("waiting-bot", config={"LANG": "en"})
    clock.advance(5)
    ledger.cancel_queued("waiting-bot", "gave up")
    changes = Projector().fold(list(iter_log(ledger)), {}, {})
    state = changes.queue[entry.id]
    assert (state.status, state.reason, state.ended_at) == (
        QueueStatus.CANCELLED,
        "gave up",
        T0 + timedelta(seconds=5),
    )
    [size] = changes.pool_sizes
    assert size.max_size == 3


def test_audit_records_every_event_with_its_other_fields() -> None:
    ledger = SlotLedger(memory_env())
    slot_id = ledger.provision("meet").slot.id
    ledger.fail(slot_id, "boom", reason_code="exited", ctx=ledger.context("worker").under("req-9"))
    changes = Projector().fold(list(iter_log(ledger)), {}, {})
    types = [r.type for r in changes.audit]
    assert types == ["SlotProvisioned", "PoolCreated", "SlotAdmitted", "SlotFailed"]
    failed = changes.audit[-1]
    assert (failed.slot_id, failed.reason, failed.correlation_id) == (slot_id, "boom", "req-9")
    assert failed.fields == {"reason_code": "exited"}
    admitted = changes.audit[2]
    assert admitted.slot_id == slot_id and admitted.fields["slot_name"] == "pool-meet-001"
    assert changes.audit[0].fields["pool"] == "default"
    assert changes.position == changes.audit[-1].position


def test_an_event_for_an_unknown_slot_needs_a_rebuild() -> None:
    ledger = SlotLedger(memory_env())
    ledger.provision("meet")
    ledger.acquire("b1")
    events = list(iter_log(ledger))
    with pytest.raises(ProjectionError, match="rebuild"):
        Projector().fold(events[-1:], {}, {})


def test_changes_merge_intervals_opened_and_closed_in_one_batch() -> None:
    changes = Changes()
    slot_id = uuid4()
    changes.open_interval(Interval(slot_id, 5, SlotStatus.IDLE, T0, None, None, None))
    changes.close_interval(slot_id, 5, T0 + timedelta(seconds=1), 6)
    changes.close_interval(slot_id, 2, T0, 5)
    assert changes.opened[5].to_position == 6
    assert changes.closed == {2: (slot_id, T0, 5)}


def test_event_types_are_the_concrete_domain_events() -> None:
    assert {"SlotFailed", "SlotProvisioned", "PoolResized", "QueueEntryExpired"} <= EVENT_TYPES
    assert not {"SlotEvent", "Event", "Created", "QueueEvent"} & EVENT_TYPES
