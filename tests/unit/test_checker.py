"""The always-on invariant checker in process, on the in-memory store.

Bad logs are written past the domain's guards (``HandCraftedLog``, as the integration
tests of ``slotledger check`` write them); the domain's :class:`Checker` is fed them,
then the application's :class:`InvariantChecker` records what it finds on the pool's
``Violations``, once, also across restarts, and goes on from its checkpoint.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from datetime import datetime, timedelta
from typing import Any
from uuid import uuid4

import pytest

from ledger.application import SlotLedger
from ledger.application.checker import CheckerConfig, InvariantChecker, ViolationBoard
from ledger.application.worker import LocalLeaderElection, Worker
from ledger.bootstrap import memory_env
from ledger.domain import Pool, Slot
from ledger.domain.invariants import Checker, Finding, Resolution, Violation, iter_log
from ledger.domain.violations import Violations, violations_id
from tests.integration.test_invariants import T0, HandCraftedLog
from tests.unit.policies.support import RecordingRuntime, make_config

CONFIG = CheckerConfig(
    pool_name="default",
    queue_wait_s=30.0,
    deploying_timeout_s=300.0,
    deploying_grace_s=10.0,
    checkpoint_events=5,
    batch=3,
)


class Clock:
    def __init__(self) -> None:
        self.now = T0

    def __call__(self) -> datetime:
        return self.now

    def at(self, seconds: float) -> None:
        self.now = T0 + timedelta(seconds=seconds)


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def ledger(clock: Clock) -> Iterator[SlotLedger]:
    ledger = SlotLedger(memory_env(), clock=clock)
    yield ledger
    ledger.close()


@pytest.fixture
def log(ledger: SlotLedger) -> HandCraftedLog:
    return HandCraftedLog(ledger)


def fed(ledger: SlotLedger, until: float | None = None, **settings: Any) -> list[Finding]:
    """Everything a checker finds in the log (then at ``until`` seconds, with no event)."""
    checker = Checker(pool="default", **settings)
    for position, event in iter_log(ledger):
        checker.feed(position, event)
    if until is not None:
        checker.tick(T0 + timedelta(seconds=until))
    return checker.drain()


def summary(findings: list[Finding]) -> list[tuple[str, str]]:
    return [("violated" if isinstance(f, Violation) else "resolved", f.kind) for f in findings]


def create_pool(log: HandCraftedLog, max_size: int) -> Pool:
    pool = Pool.create(name="default", prefix="pool", max_size=max_size, at=T0, correlation_id="c")
    log.write(*pool.collect_events())
    return pool


def test_a_releasing_slot_has_no_bot(log: HandCraftedLog) -> None:
    slot, other = log.provision(0), log.provision(0)
    log.slot(slot, Slot.SlotAcquired, 1, "bot-a")
    log.slot(slot, Slot.SlotReleasing, 2, "bot-a")
    log.slot(other, Slot.SlotAcquired, 3, "bot-a")  # its lease ended: it may ask again
    log.slot(slot, Slot.SlotStarted, 4, "bot-a")  # needs a held slot
    log.slot(slot, Slot.SlotReleased, 5, "bot-a")  # the container is gone: legal

    found = fed(log.ledger)

    assert summary(found) == [
        ("violated", "illegal_transition"),
        ("resolved", "illegal_transition"),
    ]
    violation, resolution = found
    assert isinstance(violation, Violation)
    assert violation.detail == "SlotStarted from releasing"
    assert violation.positions == (log.positions[2], log.positions[5])  # acquired, started
    assert resolution.key == violation.key
    assert resolution.position == log.positions[6]


def test_two_bots_on_a_slot_stay_open_until_the_slot_is_back_at_rest(log: HandCraftedLog) -> None:
    slot = log.provision(0)
    log.slot(slot, Slot.SlotAcquired, 1, "bot-a")
    log.slot(slot, Slot.SlotAcquired, 2, "bot-b")
    log.slot(slot, Slot.SlotStarted, 3, "bot-b")
    log.slot(slot, Slot.SlotReleased, 4, "bot-b")
    log.slot(slot, Slot.SlotAcquired, 5, "bot-a")  # bot-a's stale claim is gone

    found = fed(log.ledger)

    assert summary(found) == [
        ("violated", "illegal_transition"),
        ("violated", "slot_two_bots"),
        ("resolved", "illegal_transition"),
        ("resolved", "slot_two_bots"),
    ]
    two_bots = found[1]
    assert isinstance(two_bots, Violation)
    assert two_bots.positions == (log.positions[1], log.positions[2])
    assert {f.position for f in found[2:]} == {log.positions[4]}


def test_more_non_idle_slots_than_the_pools_maximum(log: HandCraftedLog, clock: Clock) -> None:
    pool = create_pool(log, max_size=2)
    a, b, c = (log.provision(1) for _ in range(3))  # crafted: the pool admitted none
    log.slot(a, Slot.SlotAcquired, 2, "bot-a")
    log.slot(b, Slot.SlotAcquired, 3, "bot-b")
    pool.resize(1, "smaller", at=T0 + timedelta(seconds=4), actor="operator", correlation_id="c")
    log.write(*pool.collect_events())  # a resize below the slots in use is no violation
    log.slot(a, Slot.SlotReleased, 5, "bot-a")
    log.slot(c, Slot.SlotAcquired, 6, "bot-c")  # 2 in use, at most 1
    log.slot(b, Slot.SlotReleased, 7, "bot-b")

    found = fed(log.ledger)

    assert summary(found) == [("violated", "pool_over_max"), ("resolved", "pool_over_max")]
    violation = found[0]
    assert isinstance(violation, Violation)
    assert violation.slot_id == c
    assert violation.detail == "2 slots of pool default are in use, more than its maximum of 1"
    assert found[1].position == log.positions[-1]


def test_a_queue_starving_in_a_quiet_log_shows_at_the_next_tick(log: HandCraftedLog) -> None:
    log.provision(0)
    log.enqueue("bot-q", 1)

    assert fed(log.ledger, until=30.5) == []
    found = fed(log.ledger, until=31.5)
    assert summary(found) == [("violated", "queue_starved")]
    (violation,) = found
    assert isinstance(violation, Violation)
    assert violation.bot_id == "bot-q"
    assert violation.position == log.positions[-1]
    assert "waited 30.5s while a slot was idle" in violation.detail


def test_a_slot_deploying_past_the_timeout_and_the_grace(log: HandCraftedLog) -> None:
    slot, releasing = log.provision(0), log.provision(0)
    log.slot(slot, Slot.SlotAcquired, 10, "bot-a")
    log.slot(releasing, Slot.SlotAcquired, 10, "bot-r")
    log.slot(releasing, Slot.SlotReleasing, 11, "bot-r")  # its own rule, its own clock
    settings = {"deploying_timeout_s": 300.0, "deploying_grace_s": 10.0}

    assert fed(log.ledger, until=320, **settings) == []  # within the grace
    (violation,) = fed(log.ledger, until=321, **settings)
    assert isinstance(violation, Violation)
    assert (violation.kind, violation.slot_id, violation.bot_id) == (
        "deploying_stuck",
        slot,
        "bot-a",
    )
    assert violation.key == f"deploying_stuck:{slot}:{log.positions[2]}"
    assert fed(log.ledger, until=321) == []  # ``slotledger check`` leaves it out by default

    log.slot(slot, Slot.SlotFailed, 400, None, reason="late", reason_code="deploying_timeout")
    found = fed(log.ledger, **settings)  # the failure's time shows the overdue slot
    assert summary(found) == [("violated", "deploying_stuck"), ("resolved", "deploying_stuck")]
    assert found[0].key == violation.key


def test_a_policy_decision_in_time_is_no_violation(log: HandCraftedLog) -> None:
    slot = log.provision(0)
    log.slot(slot, Slot.SlotAcquired, 0, "bot-a")
    log.slot(slot, Slot.SlotFailed, 305, "bot-a", reason="late", reason_code="deploying_timeout")

    assert fed(log.ledger, until=10_000, deploying_timeout_s=300.0, deploying_grace_s=10.0) == []


def test_a_restored_state_finds_what_the_whole_log_finds(log: HandCraftedLog) -> None:
    create_pool(log, max_size=1)
    a, b = log.provision(0), log.provision(0)
    log.enqueue("bot-q", 1)
    log.slot(a, Slot.SlotAcquired, 2, "bot-a")
    events = list(iter_log(log.ledger))
    log.slot(b, Slot.SlotAcquired, 3, "bot-a")
    log.slot(b, Slot.SlotReleased, 50, "bot-a")
    rest = [pair for pair in iter_log(log.ledger) if pair[0] > events[-1][0]]

    whole = Checker(pool="default")
    for position, event in events + rest:
        whole.feed(position, event)
    first = Checker(pool="default")
    for position, event in events:
        first.feed(position, event)
    before = first.drain()
    restored = Checker(pool="default")
    assert restored.restore(first.dump())
    for position, event in rest:
        restored.feed(position, event)

    assert before + restored.drain() == whole.drain()
    assert restored.dump() == whole.dump()
    assert not Checker().restore({"format": 0})


def test_the_worker_records_each_violation_once_across_restarts(
    log: HandCraftedLog, ledger: SlotLedger, clock: Clock
) -> None:
    slot = log.provision(0)
    log.slot(slot, Slot.SlotAcquired, 1, "bot-a")
    log.slot(slot, Slot.SlotAcquired, 2, "bot-b")
    for t in range(3, 9):
        log.provision(t)  # more events than a checkpoint's worth
    clock.at(10)

    first = InvariantChecker(ledger, CONFIG)
    first.run()  # reads its own events too, written while it ran
    assert first.position == ledger.recorder.max_notification_id()
    assert first.run() == 0
    board = ViolationBoard(ledger, "default")
    assert sorted(v.kind for v in board.open()) == ["illegal_transition", "slot_two_bots"]
    assert board.totals() == {"illegal_transition": 1, "slot_two_bots": 1}

    log.slot(slot, Slot.SlotReleased, 11, "bot-b")  # back at rest: both resolved
    restarted = InvariantChecker(ledger, CONFIG)
    restarted.run()
    violations: Violations = ledger.repository.get(violations_id("default"))
    assert violations.open == {}
    assert restarted.position == log.positions[-1]
    assert board.open() == []
    assert board.totals() == {"illegal_transition": 1, "slot_two_bots": 1}
    kinds = [
        type(e).__name__ for _, e in iter_log(ledger) if isinstance(e, Violations.ViolationsEvent)
    ]
    assert kinds == [
        "ViolationsOpened",
        "InvariantViolated",
        "InvariantViolated",
        "InvariantResolved",
        "InvariantResolved",
    ]


def test_a_restart_goes_on_from_the_checkpoint(log: HandCraftedLog, ledger: SlotLedger) -> None:
    for t in range(12):
        log.provision(t)
    first = InvariantChecker(ledger, CONFIG)
    first.run()
    log.provision(13)

    restarted = InvariantChecker(ledger, CONFIG)

    assert restarted.run() == 1  # what followed the checkpoint, not the whole log
    assert restarted.position == log.positions[-1]


def test_an_event_it_cannot_read_is_recorded_and_passed(
    log: HandCraftedLog, ledger: SlotLedger
) -> None:
    log.provision(0)
    slot = Slot.provision(
        slot_id=uuid4(),
        pool="default",
        name="pool-x-001",
        platform="x",
        coolify_uuid=None,
        at=T0,
        actor="api",
        correlation_id="c",
    )
    stored = ledger.mapper.to_stored_event(slot.collect_events()[0])
    ledger.recorder.insert_events([replace(stored, topic="ledger.domain:Gone")])
    log.provision(2)

    checker = InvariantChecker(ledger, CONFIG)
    checker.run()

    (open_,) = ViolationBoard(ledger, "default").open()
    assert open_.kind == "unchecked_event"
    assert "ledger.domain:Gone could not be checked" in open_.detail
    assert open_.position == log.positions[-1] - 1
    assert checker.position == ledger.recorder.max_notification_id()


def test_findings_wait_for_a_store_that_refuses_them(
    log: HandCraftedLog, ledger: SlotLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot = log.provision(0)
    log.slot(slot, Slot.SlotStarted, 1, None)
    checker = InvariantChecker(ledger, CONFIG)
    save = ledger.save

    def down(*args: Any, **kwargs: Any) -> Any:
        raise ConnectionError("store down")

    monkeypatch.setattr(ledger, "save", down)
    with pytest.raises(ConnectionError):
        checker.run()
    monkeypatch.setattr(ledger, "save", save)
    checker.run()

    assert [v.kind for v in ViolationBoard(ledger, "default").open()] == ["illegal_transition"]


def test_resolutions_name_their_violation(log: HandCraftedLog) -> None:
    slot = log.provision(0)
    log.slot(slot, Slot.SlotReleased, 1, "bot-a")
    log.slot(slot, Slot.SlotAcquired, 2, "bot-b")
    log.slot(slot, Slot.SlotReleased, 3, "bot-b")

    violation, resolution = fed(log.ledger)

    assert isinstance(resolution, Resolution)
    assert (resolution.key, resolution.kind) == (violation.key, "illegal_transition")


def test_the_checker_loop_survives_its_failures_and_those_of_the_policies(
    log: HandCraftedLog, ledger: SlotLedger, monkeypatch: pytest.MonkeyPatch
) -> None:
    slot = log.provision(0)
    log.slot(slot, Slot.SlotStarted, 1, None)
    checker = InvariantChecker(ledger, CONFIG)
    worker = Worker(
        make_config(), ledger, RecordingRuntime(), LocalLeaderElection(), duties=[checker]
    )

    def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(worker.engine, "tick", broken)
    monkeypatch.setattr(checker, "run", broken)
    worker._turn()  # never raises
    policies, checking = worker.loops()
    assert (policies.state, checking.state) == ("failing", "failing")
    assert checking.name == "invariant-checker" and checking.last_error == "RuntimeError: a bug"

    monkeypatch.undo()
    monkeypatch.setattr(worker.engine, "tick", broken)  # the policies still fail
    worker._turn()
    policies, checking = worker.loops()
    assert (policies.state, checking.state) == ("failing", "running")
    assert [v.kind for v in ViolationBoard(ledger, "default").open()] == ["illegal_transition"]
