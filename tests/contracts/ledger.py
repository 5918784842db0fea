"""Contract for SlotLedger, run against every store (memory, SQLite, PostgreSQL).

A backend's test module subclasses :class:`LedgerContract` and provides the
``make_ledger`` fixture; the tests here are the behaviour every store must give.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from uuid import uuid4

import pytest

from ledger.application import SlotLedger
from ledger.domain import QueueStatus, SlotStatus
from ledger.domain.invariants import check_events, iter_log
from ledger.errors import (
    BadInput,
    BotAlreadyHoldsSlot,
    BotAlreadyQueued,
    BotNotFound,
    IllegalTransition,
    NoIdleSlot,
    PoolFull,
    SlotNotFound,
    StaleLease,
    WrongBot,
)

MakeLedger = Callable[..., SlotLedger]


class FakeClock:
    """A clock tests move by hand."""

    def __init__(self, start: datetime | None = None) -> None:
        self.now = start or datetime(2025, 12, 17, 22, 0, tzinfo=UTC)

    def __call__(self) -> datetime:
        return self.now

    def advance(self, seconds: float) -> datetime:
        self.now += timedelta(seconds=seconds)
        return self.now


def event_types(ledger: SlotLedger) -> list[str]:
    return [type(e).__name__ for _, e in iter_log(ledger)]


class LedgerContract:
    @pytest.fixture
    def make_ledger(self) -> MakeLedger:
        raise NotImplementedError

    def test_provision_names_slots_in_sequence_per_platform(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        names = [ledger.provision(p).slot.name for p in ("meet", "meet", "zoom", "meet")]
        assert names == ["pool-meet-001", "pool-meet-002", "pool-zoom-001", "pool-meet-003"]
        assert all(r.status is SlotStatus.IDLE for r in ledger.slots())

    def test_full_cycle_records_every_transition_with_metadata(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger()
        slot_id = ledger.provision("meet", ctx=ledger.context("operator")).slot.id
        ledger.acquire("bot-123", ctx=ledger.context("api").under("req-1"))
        ledger.mark_deploying(slot_id, "dep-1", ctx=ledger.context("worker").under("req-1"))
        ledger.mark_started(slot_id, ctx=ledger.context("worker").under("req-1"))
        released = ledger.release("bot-123", ctx=ledger.context("api").under("req-2"))
        assert released.slot.status is SlotStatus.IDLE
        events = [e for _, e in iter_log(ledger) if getattr(e, "originator_id", None) == slot_id]
        assert [type(e).__name__ for e in events] == [
            "SlotProvisioned",
            "SlotAcquired",
            "SlotDeploying",
            "SlotStarted",
            "SlotReleased",
        ]
        assert [e.actor for e in events] == ["operator", "api", "worker", "worker", "api"]
        assert [e.correlation_id for e in events][1:] == ["req-1", "req-1", "req-1", "req-2"]
        assert all(e.bot_id == "bot-123" for e in events[1:])
        assert events[2].deployment_uuid == "dep-1"
        assert all(e.timestamp.tzinfo is not None for e in events)

    def test_acquire_takes_least_recently_used_idle_slot(self, make_ledger: MakeLedger) -> None:
        clock = FakeClock()
        ledger = make_ledger(clock=clock)
        a, b, c = (ledger.provision("meet").slot.id for _ in range(3))
        # never used slots first, by provisioning order; then by oldest release
        for bot in ("b1", "b2", "b3"):
            clock.advance(1)
            ledger.acquire(bot)
        for bot in ("b2", "b3", "b1"):
            clock.advance(1)
            ledger.release(bot)
        assert ledger.acquire("b4").slot.id == b
        assert ledger.acquire("b5").slot.id == c
        assert ledger.acquire("b6").slot.id == a

    def test_acquire_filters_by_platform(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        ledger.provision("meet")
        zoom = ledger.provision("zoom").slot.id
        assert ledger.acquire("b1", platform="zoom").slot.id == zoom
        with pytest.raises(NoIdleSlot, match="zoom"):
            ledger.acquire("b2", platform="zoom")

    def test_no_idle_slot_and_full_pool_are_typed(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger(max_pool_size=2)
        with pytest.raises(NoIdleSlot):
            ledger.acquire("b1")
        ledger.provision("meet", acquire_for="b1")
        ledger.provision("meet", acquire_for="b2")
        with pytest.raises(PoolFull, match="maximum size of 2"):
            ledger.provision("meet")
        with pytest.raises(NoIdleSlot):
            ledger.acquire("b3")

    def test_one_bot_never_holds_two_slots(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        ledger.provision("meet")
        ledger.provision("meet")
        held = ledger.acquire("b1").slot.name
        before = event_types(ledger)
        with pytest.raises(BotAlreadyHoldsSlot, match=held):
            ledger.acquire("b1")
        with pytest.raises(BotAlreadyHoldsSlot):
            ledger.provision("meet", acquire_for="b1")
        assert event_types(ledger) == before

    def test_bad_input_is_typed_and_changes_nothing(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        slot_id = ledger.provision("meet").slot.id
        before = event_types(ledger)
        with pytest.raises(SlotNotFound, match="no slot with id"):
            ledger.mark_started(uuid4())
        with pytest.raises(BotNotFound, match="ghost"):
            ledger.release("ghost")
        with pytest.raises(IllegalTransition, match="SlotStarted is not allowed"):
            ledger.mark_started(slot_id)
        with pytest.raises(IllegalTransition):
            ledger.recover(slot_id)
        with pytest.raises(BadInput, match="bot id"):
            ledger.acquire("")
        with pytest.raises(BadInput, match="platform"):
            ledger.provision("Not A Platform")
        with pytest.raises(BadInput, match="actor"):
            ledger.acquire("b1", ctx=ledger.context("somebody"))
        with pytest.raises(BadInput, match="reason"):
            ledger.fail(slot_id, "   ")
        assert event_types(ledger) == before

    def test_release_by_another_bot_is_refused(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        slot_id = ledger.provision("meet").slot.id
        ledger.acquire("b1")
        slot = ledger.get_slot(slot_id)
        with pytest.raises(WrongBot, match="held by bot 'b1'"):
            slot.release("b2", at=ledger.clock(), actor="api", correlation_id="x")

    def test_failure_recovery_and_retirement(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger(max_pool_size=1)
        slot_id = ledger.provision("meet").slot.id
        ledger.acquire("b1")
        failed = ledger.fail(slot_id, "Container crashed", reason_code="container_exited")
        assert failed.slot.status is SlotStatus.ERROR
        assert failed.slot.last_error == "Container crashed"
        with pytest.raises(BotNotFound):
            ledger.release("b1")  # a failed slot is no longer held
        ledger.recovery_failed(slot_id, "stop failed")
        assert ledger.get_slot(slot_id).recovery_attempts == 1
        assert ledger.recover(slot_id).slot.status is SlotStatus.IDLE
        ledger.retire(slot_id, "replaced")
        assert ledger.slots() == []
        assert [r.retired for r in ledger.slots(include_retired=True)] == [True]
        with pytest.raises(IllegalTransition, match="retired"):
            ledger.fail(slot_id, "x")
        # the retired slot made room: the pool of one admits a new slot
        assert ledger.provision("meet").slot.name == "pool-meet-002"

    def test_app_recreated_is_in_history(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        slot_id = ledger.provision("meet", coolify_uuid="app-1").slot.id
        ledger.app_created(slot_id, "app-2")
        slot = ledger.get_slot(slot_id)
        assert slot.coolify_uuid == "app-2"
        recreated = [e for _, e in iter_log(ledger) if type(e).__name__ == "SlotAppCreated"]
        assert recreated[0].previous_uuid == "app-1"

    def test_resolve_slot_by_name_or_id(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        slot_id = ledger.provision("meet").slot.id
        assert ledger.resolve_slot("pool-meet-001") == slot_id
        assert ledger.resolve_slot(str(slot_id)) == slot_id
        with pytest.raises(SlotNotFound):
            ledger.resolve_slot("pool-meet-404")

    def test_snapshots_bound_the_events_read_to_load_a_slot(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        slot_id = ledger.provision("meet").slot.id
        for i in range(30):
            ledger.acquire(f"b{i}")
            ledger.release(f"b{i}")
        assert ledger.snapshots is not None
        snapshots = ledger.snapshots.get(slot_id)
        assert [s.originator_version for s in snapshots] == [50]
        assert ledger.get_slot(slot_id).version == 61
        assert ledger.get_slot(slot_id) == ledger.repository.get(slot_id, version=61)

    def test_ensure_pool_records_a_resize(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger(max_pool_size=5)
        assert ledger.ensure_pool().max_size == 5
        ledger.max_pool_size = 7
        assert ledger.ensure_pool().max_size == 7
        assert event_types(ledger).count("PoolResized") == 1

    def test_event_log_passes_the_invariant_checker(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        for _ in range(3):
            ledger.provision("meet")
        for i in range(10):
            ledger.acquire(f"b{i}")
            ledger.release(f"b{i}")
        report = check_events(iter_log(ledger))
        assert report.ok, report.violations
        assert report.acquisitions == 10

    def test_queue_dispatches_by_priority_then_fifo_and_drains(
        self, make_ledger: MakeLedger
    ) -> None:
        clock = FakeClock()
        ledger = make_ledger(clock=clock, max_pool_size=3)
        for i in range(3):
            ledger.provision("meet", acquire_for=f"holder-{i}")
        for bot, priority in (("q-low", 5), ("q-first", 0), ("q-second", 0), ("q-urgent", -1)):
            clock.advance(1)
            ledger.enqueue(bot, priority=priority)
        assert [r.bot_id for r in ledger.waiting()] == ["q-urgent", "q-first", "q-second", "q-low"]
        assert ledger.queue_position("q-second") == 3
        assert ledger.dispatch_waiting() == []  # nothing idle yet
        ledger.release("holder-0")
        ledger.release("holder-1")
        dispatched = ledger.dispatch_waiting()
        assert [entry.bot_id for entry, _ in dispatched] == ["q-urgent", "q-first"]
        assert all(o.slot.bot_id == e.bot_id for e, o in dispatched)
        assert [r.bot_id for r in ledger.waiting()] == ["q-second", "q-low"]
        assert ledger.slot_of_bot("q-urgent").status is SlotStatus.DEPLOYING

    def test_queue_refuses_duplicates_and_cancels_and_expires(
        self, make_ledger: MakeLedger
    ) -> None:
        clock = FakeClock()
        ledger = make_ledger(clock=clock, max_pool_size=1)
        ledger.provision("meet", acquire_for="holder")
        with pytest.raises(BotAlreadyHoldsSlot):
            ledger.enqueue("holder")
        ledger.enqueue("b1", timeout_s=60)
        ledger.enqueue("b2", timeout_s=300)
        with pytest.raises(BotAlreadyQueued):
            ledger.enqueue("b1")
        with pytest.raises(BadInput, match="timeout"):
            ledger.enqueue("b3", timeout_s=3600)
        cancelled = ledger.cancel_queued("b2", "user left")
        assert cancelled.status is QueueStatus.CANCELLED
        with pytest.raises(BotNotFound):
            ledger.cancel_queued("b2")
        clock.advance(61)
        expired = ledger.expire_due()
        assert [(e.bot_id, e.status) for e in expired] == [("b1", QueueStatus.EXPIRED)]
        assert "61s" in (expired[0].reason or "")
        assert ledger.waiting() == []
        types = event_types(ledger)
        assert types.count("QueueEntryEnqueued") == 2
        assert {"QueueEntryCancelled", "QueueEntryExpired"} <= set(types)

    def test_heartbeats_start_deploying_slots_and_refusals_are_recorded(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger()
        slot_id = ledger.provision("meet").slot.id
        ledger.acquire("b1")
        started = ledger.heartbeat(slot_id, "b1")
        assert started is not None and started.slot.status is SlotStatus.BUSY
        assert ledger.heartbeat(slot_id, "b1") is None
        with pytest.raises(WrongBot):
            ledger.heartbeat(slot_id, "intruder")
        with pytest.raises(SlotNotFound):
            ledger.heartbeat(uuid4(), "b1")
        refused = [e for _, e in iter_log(ledger) if type(e).__name__ == "SlotHeartbeatRefused"]
        assert [(e.bot_id, ledger.get_slot(slot_id).status) for e in refused] == [
            ("intruder", SlotStatus.BUSY)
        ]

    def test_repeated_refusals_write_one_event_a_minute_and_are_counted(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger()
        now = [1000.0]
        ledger.refusals.clock = lambda: now[0]
        slot_id = ledger.provision("meet").slot.id
        ledger.acquire("b1")
        for _ in range(100):
            with pytest.raises(WrongBot):
                ledger.heartbeat(slot_id, "intruder")
        with pytest.raises(WrongBot):
            ledger.heartbeat(slot_id, "other-intruder")  # another bot: its own evidence
        now[0] += ledger.refusals.window_s
        with pytest.raises(WrongBot):
            ledger.heartbeat(slot_id, "intruder")  # a minute later: recorded again
        refused = [
            e.bot_id for _, e in iter_log(ledger) if type(e).__name__ == "SlotHeartbeatRefused"
        ]
        assert refused == ["intruder", "other-intruder", "intruder"]
        assert ledger.refusals.unrecorded == 99

    def test_stale_lease_is_fenced_out(self, make_ledger: MakeLedger) -> None:
        ledger = make_ledger()
        slot_id = ledger.provision("meet").slot.id
        first = ledger.acquire("b1").slot.lease
        ledger.release("b1")
        second = ledger.acquire("b2").slot.lease
        assert second == first + 1
        with pytest.raises(StaleLease, match="stale"):
            ledger.mark_started(slot_id, lease=first)
        with pytest.raises(StaleLease):
            ledger.fail(slot_id, "late failure of the old deploy", lease=first)
        assert ledger.mark_started(slot_id, lease=second).slot.status is SlotStatus.BUSY

    def test_queue_gets_a_new_slot_when_a_retired_one_made_room(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger(max_pool_size=1)
        slot_id = ledger.provision("meet", acquire_for="holder").slot.id
        ledger.enqueue("waiter", platform="meet")
        ledger.fail(slot_id, "crashed")
        ledger.retire(slot_id, "crashed three times")
        [(entry, outcome)] = ledger.dispatch_waiting()
        assert (entry.bot_id, outcome.slot.name, outcome.slot.status) == (
            "waiter",
            "pool-meet-002",
            SlotStatus.DEPLOYING,
        )
        assert outcome.slot.coolify_uuid is None  # the deploy flow creates the app

    def test_a_drained_slot_is_never_acquired_and_keeps_its_lease(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger(max_pool_size=2)
        held = ledger.provision("meet", acquire_for="holder").slot.id
        spare = ledger.provision("meet").slot.id
        ledger.drain(spare, "disk failing")
        ledger.drain(held, "disk failing")
        with pytest.raises(NoIdleSlot):
            ledger.acquire("other", platform="meet")  # the only idle slot is drained
        assert ledger.get_slot(held).bot_id == "holder"  # its lease runs on
        ledger.release("holder")
        with pytest.raises(NoIdleSlot):
            ledger.acquire("other")
        with pytest.raises(IllegalTransition, match="drained already"):
            ledger.drain(spare, "again")
        ledger.drain(spare, "disk replaced", undrain=True)
        assert ledger.acquire("other").slot.id == spare
        with pytest.raises(IllegalTransition, match="not drained"):
            ledger.drain(spare, "again", undrain=True)
        assert event_types(ledger).count("SlotDrained") == 2
        report = check_events(iter_log(ledger))
        assert report.ok, report.violations

    def test_a_drained_pool_admits_no_slot_and_its_queue_waits(
        self, make_ledger: MakeLedger
    ) -> None:
        ledger = make_ledger(max_pool_size=3)
        pool = ledger.drain_pool("maintenance")
        assert pool.drained
        with pytest.raises(PoolFull, match="drained"):
            ledger.provision("meet")
        ledger.enqueue("waiter", platform="meet")
        assert ledger.dispatch_waiting() == []  # room in the pool, but drained
        assert ledger.drain_pool("maintenance").drained  # a second drain writes nothing
        ledger.drain_pool("done", undrain=True)
        [(entry, outcome)] = ledger.dispatch_waiting()
        assert (entry.bot_id, outcome.slot.name) == ("waiter", "pool-meet-001")
        types = event_types(ledger)
        assert (types.count("PoolDrained"), types.count("PoolUndrained")) == (1, 1)

    def test_group_commit_serves_concurrent_callers_correctly(
        self, make_ledger: MakeLedger
    ) -> None:
        """Many threads through one writer: each gets its own outcome or typed error,
        and the log shows no double assignment."""
        ledger = make_ledger()
        for _ in range(4):
            ledger.provision("meet")
        ledger.enable_group_commit()
        errors: list[Exception] = []
        cycles = [0] * 12

        def client(i: int) -> None:
            bot = f"bot-{i % 6}"  # two threads per bot: the second must be refused
            while cycles[i] < 15:
                try:
                    outcome = ledger.acquire(bot)
                except (NoIdleSlot, BotAlreadyHoldsSlot):
                    continue
                except Exception as e:  # collected for the assertion
                    errors.append(e)
                    return
                assert outcome.slot.bot_id == bot and outcome.position > 0
                with contextlib.suppress(BotNotFound):  # the sibling may have released it
                    ledger.release(bot)
                cycles[i] += 1

        threads = [threading.Thread(target=client, args=(i,)) for i in range(12)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=120)
        assert errors == []
        with pytest.raises(BotNotFound):
            ledger.release("nobody")
        report = check_events(iter_log(ledger))
        assert report.ok, report.violations
        assert report.acquisitions >= 12 * 15 // 2
        assert all(r.bot_id is None for r in ledger.slots())
