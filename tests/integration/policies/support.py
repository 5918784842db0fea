"""Helpers for the PostgreSQL policy tests."""

from __future__ import annotations

import psycopg

from ledger.settings import PostgresStore, load_settings


def store_of(url: str) -> PostgresStore:
    store = load_settings(database_url=url).store
    assert isinstance(store, PostgresStore)
    return store


def lock_holder(conn: psycopg.Connection[tuple[object, ...]], key: int) -> str | None:
    """The ``application_name`` of the session holding advisory lock ``key``, if any.
    A bigint key shows in ``pg_locks`` as its high and low 32 bits."""
    row = conn.execute(
        "SELECT a.application_name FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 1"
        " AND l.classid::bigint = %s AND l.objid::bigint = %s"
        " AND l.database = (SELECT oid FROM pg_database WHERE datname = current_database())",
        ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
    ).fetchone()
    return None if row is None else str(row[0])


def terminate_holder(conn: psycopg.Connection[tuple[object, ...]], key: int) -> None:
    """Kill the holder's session from the server side, as a failover or a DBA would."""
    conn.execute(
        "SELECT pg_terminate_backend(l.pid) FROM pg_locks l WHERE l.locktype = 'advisory'"
        " AND l.granted AND l.objsubid = 1 AND l.classid::bigint = %s AND l.objid::bigint = %s",
        ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF),
    )
