"""Each rule on its own, on the in-memory store and a fake clock."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any
from uuid import UUID

import pytest

from ledger.application import SlotLedger
from ledger.application.policies import PolicyEngine
from ledger.bootstrap import memory_env
from ledger.domain import QueueStatus, Slot, SlotStatus
from ledger.errors import BotNotFound, WrongBot
from tests.contracts.ledger import FakeClock
from tests.unit.policies.support import (
    RecordingRuntime,
    deploying_slot,
    error_slot,
    make_config,
    slot_events,
)

# --- stale deploying -------------------------------------------------------------------


def test_stale_deploying_fails_only_past_the_timeout(
    ledger: SlotLedger, clock: FakeClock, engine: PolicyEngine
) -> None:
    slot_id = deploying_slot(ledger, "bot-1")
    clock.advance(300)
    assert engine.stale.decide(ledger, clock()) == []

    clock.advance(1)
    [decision] = engine.stale.decide(ledger, clock())
    done = engine.stale.apply(ledger, decision)

    assert done == decision
    assert (decision.rule, decision.action, decision.event, decision.reason) == (
        "stale-deploying",
        "fail",
        "SlotFailed",
        "deploying timeout",
    )
    failed = slot_events(ledger, slot_id)[-1]
    assert isinstance(failed, Slot.SlotFailed)
    assert (failed.reason_code, failed.actor, failed.timestamp) == (
        "deploying_timeout",
        "policy:stale-deploying",
        clock(),
    )
    assert failed.correlation_id == decision.correlation_id
    assert ledger.get_slot(slot_id).status is SlotStatus.ERROR


def test_heartbeat_from_the_holder_saves_a_slow_deploy(
    ledger: SlotLedger, clock: FakeClock, engine: PolicyEngine
) -> None:
    slow = deploying_slot(ledger, "bot-slow")
    spoofed = ledger.provision("meet", coolify_uuid="app-2", acquire_for="bot-2").slot.id
    clock.advance(250)
    ledger.heartbeat(slow, "bot-slow")
    with pytest.raises(WrongBot):
        ledger.heartbeat(spoofed, "bot-stranger")  # recorded as refused, never applied
    clock.advance(51)

    taken = engine.tick()

    assert [(d.target_id, d.event) for d in taken if d.rule == "stale-deploying"] == [
        (spoofed, "SlotFailed")
    ]
    assert ledger.get_slot(slow).status is SlotStatus.BUSY


def test_slot_started_between_decide_and_apply_is_left_alone(
    ledger: SlotLedger, clock: FakeClock, engine: PolicyEngine
) -> None:
    slot_id = deploying_slot(ledger, "bot-1")
    clock.advance(301)
    [decision] = engine.stale.decide(ledger, clock())
    ledger.mark_started(slot_id)

    assert engine.stale.apply(ledger, decision) is None
    assert ledger.get_slot(slot_id).status is SlotStatus.BUSY
    assert not any(isinstance(e, Slot.SlotFailed) for e in slot_events(ledger, slot_id))


def _stranger_heartbeat(ledger: SlotLedger, slot_id: UUID) -> None:
    with pytest.raises(WrongBot):
        ledger.heartbeat(slot_id, "bot-stranger")


def _started(ledger: SlotLedger, slot_id: UUID) -> None:
    ledger.mark_started(slot_id)


@pytest.mark.parametrize(
    ("interleave", "expected"),
    [(_stranger_heartbeat, SlotStatus.ERROR), (_started, SlotStatus.BUSY)],
    ids=["still-stale", "started"],
)
def test_lost_race_rereads_and_decides_again(
    ledger: SlotLedger,
    clock: FakeClock,
    engine: PolicyEngine,
    monkeypatch: pytest.MonkeyPatch,
    interleave: Callable[[SlotLedger, UUID], None],
    expected: SlotStatus,
) -> None:
    """Another write lands between apply's read and its save: the save conflicts, and the
    rule decides again on the fresh aggregate."""
    slot_id = deploying_slot(ledger, "bot-1")
    clock.advance(301)
    [decision] = engine.stale.decide(ledger, clock())
    get_slot = ledger.get_slot
    reads: list[int] = []

    def get_slot_then_interleave(target: UUID) -> Slot:
        slot = get_slot(target)
        reads.append(slot.version)
        if len(reads) == 1:
            monkeypatch.setattr(ledger, "get_slot", get_slot)  # the other writer reads plainly
            interleave(ledger, target)
            monkeypatch.setattr(ledger, "get_slot", get_slot_then_interleave)
        return slot

    monkeypatch.setattr(ledger, "get_slot", get_slot_then_interleave)
    done = engine.stale.apply(ledger, decision)

    assert reads == [decision.version, decision.version + 1]  # the first save lost the race
    assert (done is not None) == (expected is SlotStatus.ERROR)
    assert get_slot(slot_id).status is expected


# --- error recovery --------------------------------------------------------------------


def test_failed_stop_is_counted_and_not_retried_within_the_interval(
    ledger: SlotLedger, clock: FakeClock
) -> None:
    runtime = RecordingRuntime("stop")
    engine = PolicyEngine(ledger, runtime, make_config())
    slot_id = error_slot(ledger)

    [decision] = engine.tick()

    assert (decision.action, decision.event) == ("recover", "SlotRecoveryFailed")
    assert decision.reason.startswith("stopping application app-1 failed: Coolify POST")
    slot = ledger.get_slot(slot_id)
    assert (slot.status, slot.recovery_attempts) == (SlotStatus.ERROR, 1)

    clock.advance(299)
    assert engine.tick() == []
    # A new leader runs recovery at once; the events keep it from retrying early.
    assert PolicyEngine(ledger, runtime, make_config()).tick() == []
    assert runtime.calls == [("stop", "app-1")]

    clock.advance(1)
    [retry] = engine.tick()
    assert retry.reason.startswith("stopping") and "attempt" not in retry.reason
    assert ledger.get_slot(slot_id).recovery_attempts == 2


def _fail_recovery(ledger: SlotLedger, clock: FakeClock, engine: PolicyEngine, times: int) -> None:
    for _ in range(times):
        assert [d.event for d in engine.tick()] == ["SlotRecoveryFailed"]
        clock.advance(300)


@pytest.mark.parametrize(
    ("mode", "calls", "reason"),
    [
        ("delete", [("delete", "app-1")], "application app-1 deleted"),
        ("quarantine", [], "application app-1 kept for inspection (quarantine)"),
    ],
)
def test_retired_after_three_failed_attempts_so_the_pool_makes_room(
    clock: FakeClock, mode: str, calls: list[tuple[str, str]], reason: str
) -> None:
    ledger = SlotLedger(memory_env(), clock=clock, max_pool_size=1)
    runtime = RecordingRuntime("stop")
    engine = PolicyEngine(ledger, runtime, make_config(retire_mode=mode))
    slot_id = error_slot(ledger)
    _fail_recovery(ledger, clock, engine, 3)
    runtime.calls.clear()

    [retired] = engine.tick()

    assert (retired.action, retired.event) == ("retire", "SlotRetired")
    assert retired.reason == f"retired after 3 failed recovery attempts; {reason}"
    assert runtime.calls == calls
    assert ledger.get_slot(slot_id).retired
    assert ledger.slots() == []
    assert ledger.provision("meet").slot.name == "pool-meet-002"
    assert engine.tick() == []


def test_failed_delete_still_retires_and_says_the_application_was_kept(
    ledger: SlotLedger, clock: FakeClock
) -> None:
    engine = PolicyEngine(ledger, RecordingRuntime("stop", "delete"), make_config())
    slot_id = error_slot(ledger)
    _fail_recovery(ledger, clock, engine, 3)

    [retired] = engine.tick()

    assert "deleting application app-1 failed (Coolify POST" in retired.reason
    assert retired.reason.endswith("application kept")
    assert slot_events(ledger, slot_id)[-1].reason == retired.reason


def test_recovery_attempts_reset_when_a_recovery_succeeds(
    ledger: SlotLedger, clock: FakeClock
) -> None:
    runtime = RecordingRuntime("stop")
    engine = PolicyEngine(ledger, runtime, make_config())
    slot_id = error_slot(ledger)
    _fail_recovery(ledger, clock, engine, 2)
    runtime.failing.clear()

    [recovered] = engine.tick()

    assert recovered.reason == "stop application app-1, then idle (attempt 3 of 3)"
    assert ledger.get_slot(slot_id).recovery_attempts == 0


# --- queue expiry ----------------------------------------------------------------------


def test_expired_entry_gets_an_event_with_a_reason_the_requester_can_read(
    clock: FakeClock, engine: PolicyEngine
) -> None:
    ledger = engine.ledger
    entry = ledger.enqueue("bot-2", timeout_s=60)
    clock.advance(59)
    assert engine.tick() == []
    clock.advance(1)

    [expired] = engine.tick()

    assert (expired.rule, expired.target, expired.event) == (
        "queue-expiry",
        "bot-2",
        "QueueEntryExpired",
    )
    seen: Any = ledger.repository.get(entry.id)
    assert (seen.status, seen.reason) == (
        QueueStatus.EXPIRED,
        "no slot became available within 60s",
    )
    with pytest.raises(BotNotFound):
        ledger.queue_entry_of_bot("bot-2")
