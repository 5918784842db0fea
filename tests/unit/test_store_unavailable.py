"""Which store errors are outages (503 ``store_unavailable``) and which are bugs."""

from __future__ import annotations

import sqlite3

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError, OperationalError
from psycopg_pool import PoolTimeout

from ledger.errors import SlotLedgerError, StoreUnavailable, store_unavailable


def _raised_from(error: Exception, cause: BaseException) -> Exception:
    try:
        raise error from cause
    except Exception as e:
        return e


@pytest.mark.parametrize(
    "error",
    [
        psycopg.OperationalError("connection failed: Connection refused\n\tIs the server running?"),
        PoolTimeout("couldn't get a connection after 1.00 sec"),
        psycopg.InterfaceError("the connection is closed"),
        _raised_from(OperationalError("x"), psycopg.errors.AdminShutdown("terminating")),
        _raised_from(OperationalError("x"), sqlite3.OperationalError("database is locked")),
    ],
    ids=["refused", "pool-timeout", "closed", "library-wrapped", "sqlite-locked"],
)
def test_a_store_that_does_not_answer_is_unavailable(error: Exception) -> None:
    outage = store_unavailable(error)
    assert isinstance(outage, StoreUnavailable) and isinstance(outage, SlotLedgerError)
    assert (outage.code, outage.http_status) == ("store_unavailable", 503)
    assert "\n" not in outage.detail  # one log line, one CLI line


@pytest.mark.parametrize(
    "error",
    [
        OperationalError("Can't do multi-row tracking with single-row tracking table"),
        _raised_from(OperationalError("x"), sqlite3.OperationalError("no such table: x")),
        _raised_from(IntegrityError("x"), psycopg.errors.UniqueViolation("duplicate")),
        RuntimeError("a bug"),
    ],
    ids=["library-own", "sqlite-schema", "integrity", "bug"],
)
def test_other_errors_are_not_outages(error: Exception) -> None:
    assert store_unavailable(error) is None
