"""Every transition of the slot lifecycle, legal and illegal, on the aggregate alone."""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import UTC, datetime
from uuid import uuid4

import pytest
from eventsourcing.persistence import StoredEvent

from ledger.application import SlotLedger
from ledger.bootstrap import memory_env
from ledger.domain import TRANSITIONS, Pool, QueueEntry, Slot, SlotStatus, check_actor
from ledger.domain.invariants import check_events, iter_log
from ledger.errors import BadInput, IllegalTransition, PoolFull, StaleLease, WrongBot

AT = datetime(2025, 12, 17, 22, 30, tzinfo=UTC)
META = {"at": AT, "actor": "worker", "correlation_id": "c-1"}


def new_slot() -> Slot:
    return Slot.provision(
        slot_id=uuid4(),
        pool="default",
        name="pool-meet-001",
        platform="meet",
        coolify_uuid="app-1",
        at=AT,
        actor="operator",
        correlation_id="c-0",
    )


def slot_in(status: SlotStatus) -> Slot:
    """A slot brought to a status through legal commands only."""
    slot = new_slot()
    if status is SlotStatus.IDLE:
        return slot
    slot.acquire("bot-1", **META)
    if status is SlotStatus.BUSY:
        slot.mark_started(**META)
    elif status is SlotStatus.ERROR:
        slot.fail("boom", **META)
    return slot


COMMANDS: dict[str, Callable[[Slot], None]] = {
    "SlotAcquired": lambda s: s.acquire("bot-2", **META),
    "SlotDeploying": lambda s: s.mark_deploying("dep-1", **META),
    "SlotStarted": lambda s: s.mark_started(**META),
    "SlotReleasing": lambda s: s.begin_release(s.bot_id or "bot-1", **META),
    "SlotReleased": lambda s: s.release(s.bot_id or "bot-1", **META),
    "SlotFailed": lambda s: s.fail("Container crashed", **META),
    "SlotRecoveryFailed": lambda s: s.recovery_failed("stop failed", **META),
    "SlotRecovered": lambda s: s.recover(**META),
    "SlotAppCreated": lambda s: s.app_created("app-2", **META),
    "SlotHeartbeatRefused": lambda s: s.refuse_heartbeat("bot-9", "not the holder", **META),
    "SlotRetired": lambda s: s.retire("worn out", **META),
    "SlotDrained": lambda s: s.drain("disk failing", **META),
    "SlotUndrained": lambda s: undrain_drained(s),
}


def undrain_drained(slot: Slot) -> None:
    """Undrain a slot as if drained before (its drain is another row of the table)."""
    slot.drained = True
    slot.undrain("disk replaced", **META)


CASES = [(event, status) for event in COMMANDS for status in SlotStatus]


def test_commands_cover_the_transition_table() -> None:
    assert set(COMMANDS) == set(TRANSITIONS)


@pytest.mark.parametrize(("event", "status"), CASES, ids=[f"{e}-from-{s}" for e, s in CASES])
def test_transition(event: str, status: SlotStatus) -> None:
    slot = slot_in(status)
    rule = TRANSITIONS[event]
    version = slot.version
    if status in rule.sources:
        COMMANDS[event](slot)
        assert type(slot.pending_events[-1]).__name__ == event
        assert slot.status is (rule.target or status)
        assert slot.retired is rule.retires
        assert slot.version == version + 1
    else:
        with pytest.raises(IllegalTransition, match=event):
            COMMANDS[event](slot)
        assert (slot.status, slot.version) == (status, version)


def test_retired_slot_refuses_everything() -> None:
    slot = slot_in(SlotStatus.IDLE)
    slot.retire("gone", **META)
    for event, command in COMMANDS.items():
        with pytest.raises(IllegalTransition, match="retired"):
            command(slot)
        assert slot.version == 2, event


def test_seed_lifecycle_and_bot_bookkeeping() -> None:
    slot = new_slot()
    slot.acquire("bot-123", **META)
    assert (slot.status, slot.bot_id, slot.lease) == (SlotStatus.DEPLOYING, "bot-123", 1)
    slot.mark_deploying("dep-9", **META)
    assert slot.deployment_uuid == "dep-9"
    slot.mark_started(**META)
    assert slot.status is SlotStatus.BUSY
    with pytest.raises(WrongBot):
        slot.release("bot-999", **META)
    slot.release("bot-123", **META)
    assert (slot.status, slot.bot_id, slot.last_used) == (SlotStatus.IDLE, None, AT)


def test_every_event_carries_audit_fields() -> None:
    slot = slot_in(SlotStatus.BUSY)
    for e in slot.pending_events:
        assert e.timestamp == AT
        assert e.actor in ("operator", "worker")
        assert e.correlation_id.startswith("c-")
    assert slot.pending_events[-1].bot_id == "bot-1"


@pytest.mark.parametrize("actor", ["api", "worker", "operator", "policy:stale-deploying"])
def test_known_actors(actor: str) -> None:
    assert check_actor(actor) == actor


@pytest.mark.parametrize("actor", ["", "root", "policy:", "policy:Bad Name", "API"])
def test_unknown_actors_are_refused(actor: str) -> None:
    with pytest.raises(BadInput):
        check_actor(actor)


def test_pool_admits_until_full_and_reuses_no_number() -> None:
    pool = Pool.create(name="default", prefix="pool", max_size=2, at=AT, correlation_id="c")
    first = uuid4()
    assert pool.admit(first, "meet", **META) == "pool-meet-001"
    assert pool.admit(uuid4(), "meet", **META) == "pool-meet-002"
    with pytest.raises(PoolFull):
        pool.admit(uuid4(), "meet", **META)
    pool.remove(first, **META)
    assert pool.admit(uuid4(), "meet", **META) == "pool-meet-003"


@pytest.mark.parametrize("size", [0, -1, 10_001])
def test_pool_refuses_absurd_sizes(size: int) -> None:
    with pytest.raises(BadInput):
        Pool.create(name="default", prefix="pool", max_size=size, at=AT, correlation_id="c")


def enqueue(**changes: object) -> QueueEntry:
    fields: dict[str, object] = {
        "bot_id": "b1",
        "pool": "default",
        "platform": None,
        "priority": 0,
        "timeout_s": 300,
        "config": {"MEETING_URL": "https://meet.example/abc"},
        "at": AT,
        "actor": "api",
        "correlation_id": "c",
    }
    return QueueEntry.enqueue(**{**fields, **changes})  # type: ignore[arg-type]


def test_queue_entry_ends_once() -> None:
    entry = enqueue()
    assert entry.config == {"MEETING_URL": "https://meet.example/abc"}
    entry.cancel("user left", **META)
    with pytest.raises(IllegalTransition, match="already cancelled"):
        entry.dispatch(uuid4(), **META)


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"timeout_s": 601}, "timeout"),
        ({"timeout_s": 0}, "timeout"),
        ({"priority": 10_000}, "priority"),
        ({"config": {"bad key": "x"}}, "config key"),
        ({"config": {"KEY": 5}}, "config.KEY"),
    ],
)
def test_queue_entry_refuses_bad_requests(changes: dict[str, object], message: str) -> None:
    with pytest.raises(BadInput, match=message):
        enqueue(**changes)


def test_a_v1_slot_failed_event_is_upcast_on_load() -> None:
    """SlotFailed v1 (before reason_code) still loads: events are stored forever."""
    ledger = SlotLedger(memory_env())
    slot_id = ledger.provision("meet").slot.id
    ledger.acquire("bot-1")
    v1_state = {
        "originator_id": str(slot_id),
        "originator_version": 3,
        "timestamp": {"_type_": "datetime_iso", "_data_": AT.isoformat()},
        "actor": "worker",
        "correlation_id": "old",
        "bot_id": "bot-1",
        "reason": "written by slotledger 0.0",
    }
    stored = ledger.mapper.to_stored_event(
        Slot.SlotFailed(
            originator_id=slot_id,
            originator_version=3,
            timestamp=AT,
            actor="worker",
            correlation_id="x",
            bot_id="bot-1",
            reason="r",
            reason_code="c",
        )
    )
    ledger.recorder.insert_events(
        [
            StoredEvent(
                originator_id=stored.originator_id,
                originator_version=3,
                topic=stored.topic,
                state=json.dumps(v1_state).encode(),
            )
        ]
    )
    slot = ledger.get_slot(slot_id)
    failed = ledger.repository.event_store.get(slot_id, gt=2)
    assert slot.status is SlotStatus.ERROR
    assert slot.last_error == "written by slotledger 0.0"
    assert [(e.reason_code, e.reason) for e in failed] == [
        ("unspecified", "written by slotledger 0.0")
    ]


def test_heartbeat_starts_a_deploying_slot_and_refuses_strangers() -> None:
    slot = slot_in(SlotStatus.DEPLOYING)
    assert slot.heartbeat("bot-1", **META) is True
    assert slot.status is SlotStatus.BUSY
    assert slot.heartbeat("bot-1", **META) is False
    with pytest.raises(WrongBot):
        slot.heartbeat("bot-2", **META)


def releasing(status: SlotStatus) -> Slot:
    """A slot whose bot let go while its container may still run (``deploying`` or
    ``busy`` with no bot)."""
    slot = slot_in(status)
    slot.begin_release("bot-1", **META)
    assert (slot.status, slot.bot_id, slot.releasing) == (status, None, True)
    return slot


RELEASING = [SlotStatus.DEPLOYING, SlotStatus.BUSY]


@pytest.mark.parametrize("status", RELEASING)
def test_a_releasing_slot_takes_no_deploy_step_and_no_second_release(status: SlotStatus) -> None:
    slot = releasing(status)
    version = slot.version
    for event in ("SlotDeploying", "SlotStarted", "SlotReleasing", "SlotAcquired"):
        if status in TRANSITIONS[event].sources:
            with pytest.raises(IllegalTransition, match="releasing"):
                COMMANDS[event](slot)
        else:
            with pytest.raises(IllegalTransition):
                COMMANDS[event](slot)
    with pytest.raises(WrongBot):  # the bot let go: neither its heartbeat nor a release
        slot.heartbeat("bot-1", **META)
    with pytest.raises(WrongBot):
        slot.release("bot-1", **META)
    assert (slot.status, slot.version) == (status, version)


@pytest.mark.parametrize("status", RELEASING)
def test_a_releasing_slot_ends_idle_or_in_error(status: SlotStatus) -> None:
    done = releasing(status)
    done.complete_release("bot-1", **META)
    assert (done.status, done.bot_id, done.last_used, done.releasing) == (
        SlotStatus.IDLE,
        None,
        AT,
        False,
    )
    assert type(done.pending_events[-1]).__name__ == "SlotReleased"
    assert done.pending_events[-1].bot_id == "bot-1"  # the audit trail names the lease
    failed = releasing(status)
    failed.fail_release("container still running", reason_code="stop_timeout", **META)
    assert (failed.status, failed.last_error) == (SlotStatus.ERROR, "container still running")


@pytest.mark.parametrize("status", list(SlotStatus))
def test_only_a_releasing_slot_completes_or_fails_a_release(status: SlotStatus) -> None:
    slot = slot_in(status)
    with pytest.raises(IllegalTransition, match="not releasing"):
        slot.complete_release("bot-1", **META)
    with pytest.raises(IllegalTransition, match="not releasing"):
        slot.fail_release("late", reason_code="stop_timeout", **META)
    assert slot.releasing is False


def test_a_staged_release_frees_the_bot_at_once_and_the_slot_later() -> None:
    """Through the ledger: the bot holds nothing as soon as its lease ends, and may take
    another slot; the released slot is not idle until its release completes."""
    ledger = SlotLedger(memory_env(), max_pool_size=2)
    first = ledger.provision("meet", acquire_for="bot-1").slot
    outcome = ledger.release("bot-1", staged=True)
    assert (outcome.slot.status, outcome.slot.bot_id) == (SlotStatus.DEPLOYING, None)
    assert ledger.holding("bot-1") is None
    assert ledger.index.idle_candidates("default", None, 8) == []
    again = ledger.provision("meet", acquire_for="bot-1").slot
    assert again.id != first.id
    with pytest.raises(StaleLease):
        ledger.complete_release(first.id, "bot-1", lease=first.lease + 1)
    done = ledger.complete_release(first.id, "bot-1", lease=first.lease)
    assert done.slot.status is SlotStatus.IDLE
    assert [r.slot_id for r in ledger.index.idle_candidates("default", None, 8)] == [first.id]


def test_a_one_step_release_of_an_old_log_still_replays() -> None:
    """Logs written before the two-step release have SlotReleased straight from busy:
    the aggregate rebuilt from them, and the invariant checker, accept them."""
    ledger = SlotLedger(memory_env())
    slot_id = ledger.provision("meet", acquire_for="bot-1").slot.id
    ledger.mark_started(slot_id)
    ledger.release("bot-1")
    events = [e for _, e in iter_log(ledger) if e.originator_id == slot_id]
    assert [type(e).__name__ for e in events][-2:] == ["SlotStarted", "SlotReleased"]
    replayed: Slot = ledger.repository.get(slot_id)  # from the stored events
    assert (replayed.status, replayed.bot_id, replayed.lease) == (SlotStatus.IDLE, None, 1)
    assert check_events(iter_log(ledger)).ok
