"""The worker loop on the in-memory store: leadership, health and error handling."""

from __future__ import annotations

import logging
import threading
import time

import pytest

from ledger.application import SlotLedger
from ledger.application.worker import LeaderElection, LocalLeaderElection, Worker
from ledger.domain import SlotStatus
from tests.contracts.ledger import FakeClock
from tests.unit.policies.support import (
    RecordingRuntime,
    deploying_slot,
    log_length,
    make_config,
)


class ScriptedElection(LeaderElection):
    """Leads when told to; raises the given errors first, one per try."""

    def __init__(self, leading: bool, *errors: Exception) -> None:
        self.leading = leading
        self.errors = list(errors)
        self.released = 0
        self._leader = False

    @property
    def is_leader(self) -> bool:
        return self._leader

    def try_lead(self) -> bool:
        if self.errors:
            raise self.errors.pop(0)
        self._leader = self.leading
        return self._leader

    def release(self) -> None:
        self.released += 1
        self._leader = False


def _worker(ledger: SlotLedger, election: LeaderElection, tick_s: float = 0.005) -> Worker:
    return Worker(make_config(), ledger, RecordingRuntime(), election, tick_s=tick_s)


def test_local_leader_ticks_and_reports_health(ledger: SlotLedger, clock: FakeClock) -> None:
    slot_id = deploying_slot(ledger, "bot-1")
    clock.advance(301)
    worker = _worker(ledger, LocalLeaderElection())

    assert worker.is_leader
    assert [d.rule for d in worker.step()] == ["stale-deploying", "error-recovery"]
    assert worker.last_tick_at == clock()
    assert ledger.get_slot(slot_id).status is SlotStatus.IDLE


def test_standby_takes_no_decision(ledger: SlotLedger, clock: FakeClock) -> None:
    deploying_slot(ledger, "bot-1")
    clock.advance(301)
    before = log_length(ledger)
    worker = _worker(ledger, ScriptedElection(leading=False))

    assert worker.step() == []
    assert (worker.is_leader, worker.last_tick_at, log_length(ledger)) == (False, None, before)


def test_errors_are_logged_and_the_loop_goes_on(
    ledger: SlotLedger, clock: FakeClock, caplog: pytest.LogCaptureFixture
) -> None:
    slot_id = deploying_slot(ledger, "bot-1")
    clock.advance(301)
    election = ScriptedElection(True, OSError("database unreachable"), OSError("still down"))
    worker = _worker(ledger, election)
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))

    with caplog.at_level(logging.INFO):
        thread.start()
        deadline = time.monotonic() + 60
        while worker.last_tick_at is None and time.monotonic() < deadline:
            time.sleep(0.005)
        stop.set()
        thread.join(60)

    assert not thread.is_alive()
    assert ledger.get_slot(slot_id).status is SlotStatus.IDLE
    failures = [r for r in caplog.records if r.name == "ledger.worker" and r.exc_info]
    assert [r.getMessage().split(";")[0] for r in failures] == [
        "policy worker (not leading, 1 time(s) in a row) failed",
        "policy worker (not leading, 2 time(s) in a row) failed",
    ]
    assert any("is now leader for pool default" in r.getMessage() for r in caplog.records)
    assert (worker.failures, election.released) == (0, 1)  # released on the way out


def test_a_leader_that_keeps_failing_resigns(ledger: SlotLedger) -> None:
    election = ScriptedElection(True)
    worker = _worker(ledger, election)
    worker.step()

    def broken_tick(*, dry_run: bool = False) -> list[object]:
        raise OSError("ledger store unreachable")

    worker.engine.tick = broken_tick  # type: ignore[method-assign,assignment]
    stop = threading.Event()
    thread = threading.Thread(target=worker.run, args=(stop,))
    thread.start()
    deadline = time.monotonic() + 60
    while election.released == 0 and time.monotonic() < deadline:
        time.sleep(0.001)
    failures_at_resignation = worker.failures
    stop.set()
    thread.join(60)

    assert failures_at_resignation == Worker.RESIGN_AFTER


def test_a_failing_worker_retries_within_the_backoff_cap_and_reports_it(
    ledger: SlotLedger,
) -> None:
    worker = _worker(ledger, LocalLeaderElection(), tick_s=30.0)

    def broken_tick(*, dry_run: bool = False) -> list[object]:
        raise RuntimeError("ledger store unreachable")

    real_tick = worker.engine.tick
    worker.engine.tick = broken_tick  # type: ignore[method-assign,assignment]
    delays = [worker._turn() for _ in range(20)]
    assert all(0 < d <= Worker.MAX_BACKOFF_S for d in delays)  # not the 30 s tick
    health = worker.health()
    assert (health.state, health.consecutive_failures) == ("failing", 20)
    assert health.last_error == "RuntimeError: ledger store unreachable"

    worker.engine.tick = real_tick  # type: ignore[method-assign]
    assert worker._turn() == 30.0
    assert worker.health().state == "running" and worker.health().failures_total == 20
