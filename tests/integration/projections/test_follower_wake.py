"""Read-your-writes without polling: followers whose own poll is an hour away still take
a write at once (woken by this process's commit on SQLite, which cannot notify; by the
log's NOTIFY on PostgreSQL), ``wait`` wakes the follower and never polls the models, and
a standby hears the leader's commits (NOTIFY on the model set's channel).

Nothing is timed: each wait has a generous deadline, which only a missing wake-up reaches.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from projections import Follower, PostgresFollower, PostgresReadModels, ReadModels
from projections.stores.sqlite import SQLiteFollower, SQLiteReadModels
from tests.integration.projections.contract import WAIT_S, Store

HOUR = 3600.0


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    made = Store(database_url)
    try:
        yield made
    finally:
        made.close()


def follower_polling_hourly(store: Store, models: ReadModels) -> Follower:
    follower: Follower
    if isinstance(models, PostgresReadModels):
        follower = PostgresFollower(models, safety_poll=HOUR)
    else:
        assert isinstance(models, SQLiteReadModels)
        follower = SQLiteFollower(models, poll_interval=HOUR)
    store.made.append(follower)
    return follower.start()


def polls_of(models: ReadModels, monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """The timeouts of every ``models.wait`` call from now on: the polling path."""
    polls: list[float] = []
    real = models.wait

    def wait(position: int, timeout: float = 5.0) -> None:
        polls.append(timeout)
        real(position, timeout)

    monkeypatch.setattr(models, "wait", wait)
    return polls


def until(condition: Callable[[], Any], what: str) -> None:
    deadline = time.monotonic() + WAIT_S
    while not condition():
        assert time.monotonic() < deadline, f"not within {WAIT_S:.0f}s: {what}"
        time.sleep(0.01)


def test_a_write_is_taken_at_once_with_the_next_poll_an_hour_away(store: Store) -> None:
    ledger = store.ledger()
    models = store.models(ledger)
    follower = follower_polling_hourly(store, models)
    follower.wait(ledger.recorder.max_notification_id() or 0, timeout=WAIT_S)  # idle now
    for _ in range(3):
        position = ledger.provision("meet").position
        follower.wake(position)  # what the service does after each command commits
        models.wait(position, timeout=WAIT_S)  # the test polls; the follower was woken
    assert follower.is_leader


def test_wait_wakes_the_follower_and_never_polls_the_models(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    ledger = store.ledger()
    models = store.models(ledger)
    follower = follower_polling_hourly(store, models)
    polls = polls_of(models, monkeypatch)
    for _ in range(5):
        follower.wait(ledger.provision("meet").position, timeout=WAIT_S)
    follower.wait(ledger.recorder.max_notification_id() or 0, timeout=WAIT_S)  # no wait
    assert polls == []


@pytest.mark.postgres
def test_a_standby_hears_the_leaders_commits(
    postgres_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = Store(postgres_url)
    try:
        ledger = store.ledger()
        leader = follower_polling_hourly(store, store.models(ledger))
        until(lambda: leader.is_leader, "the first follower leads")
        standby_models = store.models(ledger)
        standby = follower_polling_hourly(store, standby_models)
        until(lambda: standby.health().state == "standby", "the second one stands by")
        polls = polls_of(standby_models, monkeypatch)
        for _ in range(5):
            standby.wait(ledger.provision("meet").position, timeout=WAIT_S)
        assert polls == [] and not standby.is_leader
    finally:
        store.close()
