"""The engine: dry runs, replayability and the decision log."""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

import pytest

from ledger.application import SlotLedger, index_row
from ledger.application.policies import PolicyEngine
from ledger.application.ports import INDEX_ROWS
from ledger.bootstrap import memory_env
from ledger.domain.invariants import iter_log
from tests.contracts.ledger import FakeClock
from tests.unit.policies.support import (
    RecordingRuntime,
    deploying_slot,
    error_slot,
    log_length,
    make_config,
)


def _history(ledger: SlotLedger, clock: FakeClock) -> None:
    """One of each: a stale deploying slot, an error slot with a failed attempt behind it,
    a slow deploy its heartbeat saved, an expired queue entry and a waiting one."""
    PolicyEngine(ledger, RecordingRuntime("stop"), make_config()).tick()  # nothing yet
    error_slot(ledger, "app-err")
    PolicyEngine(ledger, RecordingRuntime("stop"), make_config()).tick()  # attempt 1 fails
    deploying_slot(ledger, "bot-stale", "app-stale")
    saved = deploying_slot(ledger, "bot-slow", "app-slow")
    ledger.enqueue("bot-q1", timeout_s=60)
    clock.advance(200)
    ledger.heartbeat(saved, "bot-slow")
    ledger.enqueue("bot-q2", timeout_s=600)
    clock.advance(101)


def _replayed(source: SlotLedger, clock: FakeClock) -> SlotLedger:
    """A second store holding the same events, its index rebuilt from them."""
    copy = SlotLedger(memory_env(), clock=clock)
    notifications = source.recorder.select_notifications(0, 10_000, inclusive_of_start=False)
    copy.recorder.insert_events(notifications)
    ids = {UUID(str(n.originator_id)) for n in notifications}
    rows = [r for r in (index_row(copy.repository.get(i)) for i in ids) if r is not None]
    copy.recorder.insert_events([], **{INDEX_ROWS: rows})
    return copy


def _new_events(ledger: SlotLedger, after: int) -> list[tuple[Any, ...]]:
    return [
        (
            type(e).__name__,
            e.originator_id,
            e.originator_version,
            e.timestamp,
            e.actor,
            e.correlation_id,
            getattr(e, "reason", None),
        )
        for position, e in iter_log(ledger)
        if position > after
    ]


def test_dry_run_writes_nothing_and_calls_no_runtime(
    ledger: SlotLedger, clock: FakeClock, engine: PolicyEngine, runtime: RecordingRuntime
) -> None:
    _history(ledger, clock)
    before = log_length(ledger)

    planned = engine.tick(dry_run=True)

    assert [(d.rule, d.target, d.event) for d in planned] == [
        ("stale-deploying", "pool-meet-002", "SlotFailed"),
        ("error-recovery", "pool-meet-001", "SlotRecovered"),
        ("queue-expiry", "bot-q1", "QueueEntryExpired"),
    ]
    assert log_length(ledger) == before
    assert runtime.calls == []
    assert engine.last_recovery_at is None
    assert engine.tick(dry_run=True) == planned

    done = engine.tick()

    assert [d.target for d in done] == [
        "pool-meet-002",
        "pool-meet-001",
        "pool-meet-002",  # failed, then recovered in the same tick
        "bot-q1",
    ]
    assert [d for d in done if d in planned] == planned


def test_same_history_and_same_clock_give_the_same_decisions_and_events(
    ledger: SlotLedger, clock: FakeClock
) -> None:
    _history(ledger, clock)
    replay_clock = FakeClock(clock())
    copy = _replayed(ledger, replay_clock)
    before = log_length(ledger)
    assert log_length(copy) == before
    engines = [PolicyEngine(app, RecordingRuntime(), make_config()) for app in (ledger, copy)]

    decided = [e.tick(dry_run=True) for e in engines]
    taken = [e.tick() for e in engines]

    assert decided[0] == decided[1] and decided[0]
    assert taken[0] == taken[1]
    assert _new_events(ledger, before) == _new_events(copy, before) != []
    copy.close()


def test_one_log_line_per_decision_without_secrets(
    ledger: SlotLedger, clock: FakeClock, engine: PolicyEngine, caplog: pytest.LogCaptureFixture
) -> None:
    _history(ledger, clock)
    with caplog.at_level(logging.INFO, logger="ledger.policies"):
        done = engine.tick()

    lines = [r.getMessage() for r in caplog.records if r.name == "ledger.policies"]
    assert lines == [str(d) for d in done]
    assert lines[0] == ("stale-deploying: fail pool-meet-002 -> SlotFailed (deploying timeout)")


def test_a_refused_decision_is_logged_and_the_others_still_run(
    ledger: SlotLedger,
    clock: FakeClock,
    engine: PolicyEngine,
    caplog: pytest.LogCaptureFixture,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _history(ledger, clock)
    monkeypatch.setattr(ledger, "max_attempts", 0)  # every apply gives up at once

    with caplog.at_level(logging.WARNING, logger="ledger.policies"):
        assert engine.tick() == []

    assert len(caplog.records) == 3
    assert "lost 0 races in a row" in caplog.records[0].getMessage()
