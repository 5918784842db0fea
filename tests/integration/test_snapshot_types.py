"""State restored from a snapshot equals state by replay, value by value and type by type,
for every aggregate on every store (issue 10, defect 2: the JSON transcoder gave a
snapshotted slot a plain ``str`` status, so ``is SlotStatus.X`` tests failed)."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Snapshot
from eventsourcing.utils import get_topic

from ledger.application import SlotLedger
from ledger.bootstrap import build_ledger, memory_env
from ledger.domain import Pool, QueueEntry, QueueStatus, Slot, SlotStatus, TypedSnapshot, pool_id
from ledger.settings import load_settings
from tests.contracts.ledger import FakeClock
from tests.integration.aggregates import assert_same_state, replay, typed


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest) -> Iterator[SlotLedger]:
    clock = FakeClock()
    if request.param == "memory":
        made = SlotLedger(memory_env(), max_pool_size=6, clock=clock)
    else:
        url = str(request.getfixturevalue(f"{request.param}_url"))
        made = build_ledger(load_settings(database_url=url, max_pool_size=6), clock=clock)
    yield made
    made.close()


def every_kind_of_state(ledger: SlotLedger) -> list[UUID]:
    """Slots in every status (and retired), the pool, and queue entries in every status;
    every optional field set somewhere. Returns every aggregate id."""
    clock = ledger.clock
    assert isinstance(clock, FakeClock)
    ledger.ensure_pool()
    ids = [ledger.provision("meet", coolify_uuid=f"app-{n}").slot.id for n in range(6)]
    _, deploying, busy, error, retired, _ = ids
    ledger.acquire("b-idle")
    ledger.release("b-idle")  # last_used set
    ledger.acquire("b-deploying")
    ledger.mark_deploying(deploying, "dep-1")
    ledger.acquire("b-busy")
    ledger.mark_started(busy)
    ledger.fail(error, "exit 1", reason_code="crash")
    ledger.recovery_failed(error, "still down")
    ledger.retire(retired, "replaced")
    ledger.max_pool_size = 5
    ledger.ensure_pool()
    expired = ledger.enqueue("q-expired", timeout_s=1).id
    cancelled = ledger.enqueue("q-cancelled").id
    ledger.cancel_queued("q-cancelled")
    dispatched = ledger.enqueue("q-dispatched", platform="meet", config={"URL": "x"}).id
    clock.advance(2)
    ledger.expire_due()
    ledger.dispatch_waiting()  # takes one of the two idle slots
    waiting = ledger.enqueue("q-waiting", priority=3, timeout_s=60).id
    entries = {
        e: ledger.repository.get(e).status for e in (waiting, expired, cancelled, dispatched)
    }
    assert set(entries.values()) == set(QueueStatus), entries
    statuses = {ledger.get_slot(s).status for s in ids}
    assert statuses == {SlotStatus.IDLE, SlotStatus.BUSY, SlotStatus.ERROR, SlotStatus.DEPLOYING}
    return [*ids, pool_id(ledger.pool_name), *entries]


def test_a_snapshot_restores_every_aggregate_as_replay_builds_it(ledger: SlotLedger) -> None:
    ids = every_kind_of_state(ledger)
    assert ledger.snapshots is not None
    for aggregate_id in ids:
        ledger.take_snapshot(aggregate_id)
        replayed = replay(ledger, aggregate_id)
        [snapshot] = ledger.snapshots.get(aggregate_id, desc=True, limit=1)
        assert isinstance(snapshot, TypedSnapshot)
        assert snapshot.originator_version == replayed.version
        assert_same_state(ledger.repository.get(aggregate_id), replayed)


def test_snapshots_stored_before_the_fix_are_restored_with_types(ledger: SlotLedger) -> None:
    """Earlier snapshots have the library's own topic and no ``class_version``."""
    ids = every_kind_of_state(ledger)
    assert ledger.snapshots is not None
    for aggregate_id in ids:
        replayed = replay(ledger, aggregate_id)
        state = {k: v for k, v in vars(replayed).items() if k not in ("_id", "_version")}
        state.pop("_pending_events")
        legacy = Snapshot(
            originator_id=aggregate_id,
            originator_version=replayed.version,
            timestamp=Snapshot.create_timestamp(),
            topic=get_topic(type(replayed)),
            state=state,
        )
        ledger.snapshots.put([legacy])
        [stored] = ledger.snapshots.get(aggregate_id, desc=True, limit=1)
        assert type(stored) is Snapshot
        assert_same_state(ledger.repository.get(aggregate_id), replayed)


def test_a_slot_snapshotted_at_version_50_still_starts_on_the_holders_heartbeat(
    ledger: SlotLedger,
) -> None:
    """The issue's reproduction: one slot, 24 acquire/release pairs, one more acquire."""
    slot_id = ledger.provision("meet").slot.id
    for n in range(24):
        ledger.acquire(f"b{n}")
        ledger.release(f"b{n}")
    ledger.acquire("holder")
    assert ledger.snapshots is not None
    assert [s.originator_version for s in ledger.snapshots.get(slot_id)] == [50]
    assert ledger.get_slot(slot_id).status is SlotStatus.DEPLOYING
    outcome = ledger.heartbeat(slot_id, "holder")
    assert outcome is not None and outcome.slot.status is SlotStatus.BUSY


@pytest.mark.parametrize("aggregate", [Slot, Pool, QueueEntry])
def test_state_written_as_plain_text_gets_its_declared_types_back(aggregate: type[Any]) -> None:
    """A transcoder that keeps neither enums, datetimes nor UUIDs: every declared field
    comes back typed, other fields stay as stored."""
    at = datetime(2025, 1, 2, 3, 4, 5, tzinfo=UTC)
    values: dict[type[Any], Any] = {
        datetime: at,
        UUID: uuid4(),
        SlotStatus: SlotStatus.BUSY,
        QueueStatus: QueueStatus.DISPATCHED,
    }
    expected = {name: values[kind] for name, kind in aggregate.state_types.items()}
    as_text = {k: v.isoformat() if isinstance(v, datetime) else str(v) for k, v in expected.items()}
    snapshot = TypedSnapshot(
        originator_id=uuid4(),
        originator_version=7,
        timestamp=at,
        topic=get_topic(aggregate),
        state={**as_text, "name": "kept", "class_version": 2},
    )
    restored = vars(snapshot.mutate(None))
    for name, value in expected.items():
        assert typed(restored[name]) == typed(value), name
    assert restored["name"] == "kept"
