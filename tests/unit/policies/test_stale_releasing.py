"""The stale-releasing rule: a release whose process stopped between its two steps
(``SlotReleasing`` written, the container never confirmed gone) is failed, and error
recovery clears the container; a slot that deployed long before its release, or whose
release completes meanwhile, is left alone."""

from __future__ import annotations

from ledger.application import SlotLedger
from ledger.application.policies import PolicyEngine
from ledger.domain import Slot, SlotStatus
from tests.contracts.ledger import FakeClock
from tests.unit.policies.support import (
    RecordingRuntime,
    deploying_slot,
    make_config,
    slot_events,
)

TIMEOUT_S = make_config().releasing_timeout_s


def test_the_timeout_is_twice_the_stop_timeout() -> None:
    assert make_config(stop_timeout_s=50).releasing_timeout_s == 100


def test_a_release_left_unfinished_fails_past_the_timeout_then_recovers(
    ledger: SlotLedger, clock: FakeClock, runtime: RecordingRuntime
) -> None:
    engine = PolicyEngine(ledger, runtime, make_config())
    slot_id = deploying_slot(ledger, "bot-1")
    clock.advance(250)  # deploying long enough for its own rule, had it not been released
    ledger.release("bot-1", staged=True)
    clock.advance(TIMEOUT_S)
    assert engine.releasing.decide(ledger, clock()) == []
    assert engine.stale.decide(ledger, clock()) == []  # nor stale deploying: releasing

    clock.advance(1)
    taken = engine.tick()

    assert [(d.rule, d.event) for d in taken] == [
        ("stale-releasing", "SlotFailed"),
        ("error-recovery", "SlotRecovered"),
    ]
    failed = next(e for e in slot_events(ledger, slot_id) if isinstance(e, Slot.SlotFailed))
    assert failed.reason_code == "releasing_timeout"
    assert failed.reason.startswith(f"release not finished after {TIMEOUT_S + 1:.0f}s")
    assert runtime.calls == [("stop", "app-1")]  # recovery cleared the container
    assert ledger.get_slot(slot_id).status is SlotStatus.IDLE


def test_a_release_that_completes_first_is_left_alone(
    ledger: SlotLedger, clock: FakeClock, engine: PolicyEngine
) -> None:
    slot_id = deploying_slot(ledger, "bot-1")
    lease = ledger.release("bot-1", staged=True).slot.lease
    clock.advance(TIMEOUT_S + 1)
    [decision] = engine.releasing.decide(ledger, clock())
    ledger.complete_release(slot_id, "bot-1", lease=lease)

    assert engine.releasing.apply(ledger, decision) is None
    assert ledger.get_slot(slot_id).status is SlotStatus.IDLE


def test_a_held_slot_is_never_stale_releasing(
    ledger: SlotLedger, clock: FakeClock, engine: PolicyEngine
) -> None:
    slot_id = deploying_slot(ledger, "bot-1")
    ledger.mark_started(slot_id)
    clock.advance(10 * TIMEOUT_S)
    assert engine.releasing.decide(ledger, clock()) == []
