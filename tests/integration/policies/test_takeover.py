"""Two worker processes on PostgreSQL: the leader is killed with SIGKILL, the standby
takes over within seconds, and the event log shows no decision taken twice."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar
from uuid import UUID

import psycopg

from ledger.adapters.postgres import advisory_key
from ledger.application import SlotLedger
from ledger.bootstrap import build_ledger
from ledger.domain import TRANSITIONS, SlotStatus
from ledger.domain.invariants import check_events, iter_log
from ledger.errors import ConcurrencyExhausted, NoIdleSlot
from ledger.settings import load_settings
from tests.integration.policies.support import lock_holder, store_of

ROOT = Path(__file__).resolve().parents[3]
TICK_S = 0.2
SLOTS = 6
DEADLINE_S = 120.0
ENOUGH_DECISIONS = 2 * SLOTS
T = TypeVar("T")


@contextmanager
def _workers(
    url: str, log: Path, *options: str, count: int = 2
) -> Iterator[list[subprocess.Popen[bytes]]]:
    command = [sys.executable, "-m", "tests.integration.policies.worker_main", url]
    command += ["--clock-offset", "3600", *options]
    with log.open("wb") as out:
        procs = [
            subprocess.Popen(command, cwd=ROOT, stdout=out, stderr=subprocess.STDOUT)
            for _ in range(count)
        ]
        try:
            yield procs
        finally:
            for p in procs:
                if p.poll() is None:
                    p.send_signal(signal.SIGTERM)
            for p in procs:
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


def _poll(probe: Callable[[], T | None], timeout_s: float, every_s: float = 0.01) -> T:
    deadline = time.monotonic() + timeout_s
    while (found := probe()) is None:
        assert time.monotonic() < deadline, "timed out"
        time.sleep(every_s)
    return found


def _policy_decisions(ledger: SlotLedger, after: int = 0) -> int:
    """How many policy events the log holds past position ``after``."""
    return sum(1 for p, e in iter_log(ledger) if p > after and e.actor.startswith("policy:"))


def _feed_until(
    ledger: SlotLedger, bots: Iterator[str], enough: Callable[[], bool], at_least_s: float
) -> None:
    """Keep acquiring idle slots, so the workers keep finding stale deploying ones, for at
    least ``at_least_s`` and then until ``enough()``: a loaded machine makes the test
    slower, not red (the deadline is only there to end a hung run)."""
    started = time.monotonic()
    next_check = started + at_least_s
    while True:
        now = time.monotonic()
        if now >= next_check:
            if enough():
                return
            assert now - started < DEADLINE_S, f"not enough decisions after {DEADLINE_S:.0f}s"
            next_check = now + 0.25
        try:
            ledger.acquire(next(bots))
        except (NoIdleSlot, ConcurrencyExhausted):
            time.sleep(0.02)


def _pid(application_name: str) -> int:
    return int(application_name.rsplit("pid=", 1)[1])


def _decisions_taken_twice(events: list[tuple[int, Any]]) -> list[str]:
    """Replays each slot's status and names every policy event its status did not call
    for: a second timeout failure, or a recovery of a slot no longer in error."""
    status: dict[UUID, SlotStatus] = {}
    problems = []
    for position, e in events:
        name = type(e).__name__
        before = status.get(e.originator_id, SlotStatus.IDLE)
        if (
            name == "SlotFailed"
            and e.reason == "deploying timeout"
            and before is not (SlotStatus.DEPLOYING)
        ):
            problems.append(f"{position}: timeout failure of a slot in {before}")
        if name in ("SlotRecovered", "SlotRecoveryFailed") and before is not SlotStatus.ERROR:
            problems.append(f"{position}: {name} of a slot in {before}")
        transition = TRANSITIONS.get(name)
        if transition is not None and transition.target is not None:
            status[e.originator_id] = transition.target
    return problems


def _assert_each_decision_once(events: list[tuple[int, Any]]) -> None:
    policy = [e for _, e in events if e.actor.startswith("policy:")]
    correlation_ids = [e.correlation_id for e in policy]
    assert policy, "no decision was taken"
    assert len(correlation_ids) == len(set(correlation_ids)), "a decision was taken twice"
    assert _decisions_taken_twice(events) == []
    assert check_events(events).violations == []


def _ledger_with_slots(url: str) -> SlotLedger:
    ledger = build_ledger(load_settings(database_url=url))
    for n in range(SLOTS):
        ledger.provision("meet", coolify_uuid=f"app-{n}")
    return ledger


def test_standby_takes_over_when_the_leader_is_killed(postgres_url: str, tmp_path: Path) -> None:
    settings = load_settings(database_url=postgres_url)
    store = store_of(postgres_url)
    key = advisory_key(store.schema, settings.pool_name)
    ledger = _ledger_with_slots(postgres_url)
    bots = (f"bot-{n}" for n in range(1_000_000))
    log = tmp_path / "workers.log"
    try:
        with (
            _workers(postgres_url, log, "--tick", str(TICK_S)) as procs,
            psycopg.connect(store.conninfo(), autocommit=True) as conn,
        ):
            leader = _pid(_poll(lambda: lock_holder(conn, key), timeout_s=DEADLINE_S))
            assert leader in {p.pid for p in procs}
            _feed_until(ledger, bots, lambda: _policy_decisions(ledger) > 0, at_least_s=1.5)
            killed_at_position = ledger.recorder.max_notification_id() or 0

            def successor_holds() -> str | None:
                holder = lock_holder(conn, key)
                return holder if holder is not None and _pid(holder) != leader else None

            os.kill(leader, signal.SIGKILL)
            killed_at = time.monotonic()
            successor = _pid(_poll(successor_holds, timeout_s=DEADLINE_S))
            takeover_s = time.monotonic() - killed_at

            _feed_until(
                ledger,
                bots,
                lambda: _policy_decisions(ledger, after=killed_at_position) > 0,
                at_least_s=1.5,
            )
            assert all(p.poll() is None for p in procs if p.pid != leader), "standby died"
        events = list(iter_log(ledger))
    except AssertionError:
        print(log.read_text())
        raise
    finally:
        ledger.close()

    policy = [(p, e) for p, e in events if e.actor.startswith("policy:")]
    before = sum(1 for p, _ in policy if p <= killed_at_position)
    after = len(policy) - before
    print(
        f"\ntakeover after SIGKILL of the leader: {takeover_s:.3f}s (tick {TICK_S}s); "
        f"policy decisions: {before} before the kill, {after} after it (successor pid "
        f"{successor})"
    )
    assert takeover_s < 5
    assert before > 0 and after > 0
    _assert_each_decision_once(events)


def test_two_leaders_at_once_still_take_each_decision_once(
    postgres_url: str, tmp_path: Path
) -> None:
    """Without the lock (a leader that lost its session but has not noticed yet), the
    aggregates' versions still let one of two racing decisions through."""
    ledger = _ledger_with_slots(postgres_url)
    log = tmp_path / "workers.log"
    try:
        with _workers(postgres_url, log, "--tick", "0.01", "--always-lead"):
            _feed_until(
                ledger,
                (f"bot-{n}" for n in range(1_000_000)),
                lambda: _policy_decisions(ledger) >= ENOUGH_DECISIONS,
                at_least_s=2.0,
            )
        events = list(iter_log(ledger))
    finally:
        ledger.close()
    races = log.read_text().count("left alone")
    print(f"\ntwo leaders: {races} decisions left alone after losing a race")

    _assert_each_decision_once(events)
