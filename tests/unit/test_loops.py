"""The shared pieces of every background loop: the backoff bound and the parking rule."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from eventsourcing import persistence as es
from psycopg import errors as pg
from psycopg_pool import PoolTimeout

from ledger.adapters.coolify import CoolifyError
from ledger.errors import is_outage
from ledger.loops import Backoff, Health, describe_error


def test_the_backoff_doubles_with_jitter_and_stays_under_its_cap() -> None:
    backoff = Backoff(min_s=0.05, max_s=2.0)
    pauses = [backoff.next() for _ in range(30)]
    assert all(0.025 <= p <= 2.0 for p in pauses)
    assert max(pauses[-10:]) > 1.0  # it reached the cap's range
    backoff.reset()
    assert backoff.next() <= 0.05


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("server closed the connection"),
        PoolTimeout("couldn't get a connection after 5.00 sec"),
        pg.UndefinedTable("relation does not exist"),
        pg.DeadlockDetected("deadlock detected"),
        es.OperationalError("connection lost"),
        es.InterfaceError("connection already closed"),
        sqlite3.OperationalError("database is locked"),
        ConnectionRefusedError("refused"),
        TimeoutError("timed out"),
    ],
)
def test_store_and_network_failures_are_outages_never_parked(error: Exception) -> None:
    assert is_outage(error)


@pytest.mark.parametrize(
    "error",
    [
        pg.CharacterNotInRepertoire("invalid byte sequence for encoding UTF8: 0x00"),
        psycopg.IntegrityError("duplicate key"),
        es.DataError("value too long"),
        sqlite3.IntegrityError("UNIQUE constraint failed"),
        AttributeError("'str' object has no attribute 'value'"),
        ValueError("bad event"),
        CoolifyError("refused", status=422, method="PATCH", path="/applications/x"),
    ],
)
def test_data_errors_and_bugs_may_park_an_event(error: Exception) -> None:
    assert not is_outage(error)


def test_health_counts_failures_in_a_row_and_keeps_the_last_error() -> None:
    health = Health("loop")
    assert health.snapshot().state == "running"
    health.failed(ValueError("first line\nsecond line"))
    assert health.failed(ValueError("x" * 1000)) == 2
    failing = health.snapshot()
    assert (failing.state, failing.failures_total, failing.consecutive_failures) == (
        "failing",
        2,
        2,
    )
    assert failing.last_error is not None and len(failing.last_error) == 300
    health.succeeded(standby=True)
    standby = health.snapshot()
    assert (standby.state, standby.consecutive_failures, standby.failures_total) == (
        "standby",
        0,
        2,
    )
    assert standby.last_success_age_s is not None and standby.up
    assert health.snapshot(alive=False).state == "stopped"
    assert describe_error(ValueError("first line\nsecond line")) == "ValueError: first line"
