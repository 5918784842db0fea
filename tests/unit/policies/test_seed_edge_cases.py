"""The seed's four edge cases of the deploying status, on a fake clock."""

from __future__ import annotations

import pytest

from ledger.application import SlotLedger
from ledger.application.policies import PolicyEngine
from ledger.bootstrap import memory_env
from ledger.domain import SlotStatus
from ledger.errors import NoIdleSlot
from tests.contracts.ledger import FakeClock
from tests.unit.policies.support import (
    RecordingRuntime,
    deploying_slot,
    make_config,
    slot_events,
)


def test_1_creation_fails_mid_deploy_stays_deploying_then_caught_after_5_minutes(
    ledger: SlotLedger, clock: FakeClock, engine: PolicyEngine, runtime: RecordingRuntime
) -> None:
    slot_id = deploying_slot(ledger, "bot-1", coolify_uuid=None)  # the app was never created
    clock.advance(299)
    assert engine.tick() == []
    assert ledger.get_slot(slot_id).status is SlotStatus.DEPLOYING

    clock.advance(2)
    assert [(d.rule, d.event) for d in engine.tick()] == [
        ("stale-deploying", "SlotFailed"),
    ]  # recovery ran on the first tick: its next run is one interval later

    clock.advance(298)
    [recovered] = engine.tick()

    assert (recovered.rule, recovered.event) == ("error-recovery", "SlotRecovered")
    assert "no application to stop" in recovered.reason
    assert runtime.calls == []  # nothing to stop: the next deploy creates the application
    slot = ledger.get_slot(slot_id)
    assert (slot.status, slot.bot_id, slot.coolify_uuid) == (SlotStatus.IDLE, None, None)


def test_2_container_fails_to_start_error_then_recovered(
    ledger: SlotLedger, clock: FakeClock, engine: PolicyEngine, runtime: RecordingRuntime
) -> None:
    slot_id = deploying_slot(ledger, "bot-1")
    ledger.fail(slot_id, "container exited with code 1", reason_code="start_failed")

    taken = engine.tick()

    assert [d.event for d in taken] == ["SlotRecovered"]
    assert runtime.calls == [("stop", "app-1")]
    recovered = slot_events(ledger, slot_id)[-1]
    assert type(recovered).__name__ == "SlotRecovered"
    assert recovered.actor == "policy:error-recovery"
    assert ledger.get_slot(slot_id).status is SlotStatus.IDLE


def test_3_deploying_slots_are_not_available_for_dispatch(
    clock: FakeClock, runtime: RecordingRuntime
) -> None:
    ledger = SlotLedger(memory_env(), clock=clock, max_pool_size=1)  # no room for a new slot
    engine = PolicyEngine(ledger, runtime, make_config())
    slot_id = deploying_slot(ledger, "bot-1")
    ledger.enqueue("bot-2", timeout_s=600)
    assert ledger.dispatch_waiting() == []
    with pytest.raises(NoIdleSlot):
        ledger.acquire("bot-3")

    clock.advance(301)
    engine.tick()  # failed as stale, then recovered: idle again

    [(entry, outcome)] = ledger.dispatch_waiting()
    assert (entry.bot_id, outcome.slot.id, outcome.slot.status) == (
        "bot-2",
        slot_id,
        SlotStatus.DEPLOYING,
    )


def test_4_recovery_treats_stale_deploying_slots_as_error_candidates(
    ledger: SlotLedger, clock: FakeClock, engine: PolicyEngine, runtime: RecordingRuntime
) -> None:
    stale = deploying_slot(ledger, "bot-1")
    clock.advance(200)
    fresh = ledger.provision("meet", coolify_uuid="app-2", acquire_for="bot-2").slot.id
    clock.advance(101)

    taken = engine.tick()

    assert [(d.target_id, d.action) for d in taken] == [(stale, "fail"), (stale, "recover")]
    assert runtime.calls == [("stop", "app-1")]
    assert ledger.get_slot(fresh).status is SlotStatus.DEPLOYING
    failed = next(e for e in slot_events(ledger, stale) if type(e).__name__ == "SlotFailed")
    assert (failed.reason, failed.reason_code, failed.actor, failed.bot_id) == (
        "deploying timeout",
        "deploying_timeout",
        "policy:stale-deploying",
        "bot-1",
    )
