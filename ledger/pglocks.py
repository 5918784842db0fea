"""PostgreSQL advisory locks: one key scheme and one set of helpers for every lock.

Every component that coordinates processes through the database takes its locks here:
schema creation (:func:`ddl_lock`), the policy worker's leadership, the deploy permits,
the read models' writer and rebuild locks, and the event log's position allocation and
in-flight register (:func:`log_keys`). Keys come from :func:`lock_key` only, so two locks
can never collide by accident and ``pg_locks`` reads the same way for all.
A base module: it imports only :mod:`ledger.ddl`.
"""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import psycopg
from psycopg.rows import tuple_row

from ledger.ddl import added_columns

__all__ = [
    "RECONNECT_S",
    "connect_session",
    "ddl_lock",
    "ddl_missing",
    "lock_key",
    "log_keys",
    "try_lock",
    "try_lock_first",
    "unlock",
]

RECONNECT_S = 2.0
"""How long a connection pool keeps one reconnection attempt going: the pools' delay
doubles without bound while the server is down, and giving an attempt up after this lets
the next request start a fresh one, so service resumes within seconds of the return."""

SESSION_CONNECT_TIMEOUT_S = 5
SESSION_KEEPALIVE_S = (5, 2, 3)
"""TCP keepalive idle, interval and count of a dedicated session: the server closes the
session of a vanished host (no FIN), and frees its advisory locks, after about 11 s
instead of the kernel's two hours."""


def lock_key(*parts: str | int) -> int:
    """The signed 64-bit advisory lock key of ``slotledger:<part>:<part>...``: name the
    lock's purpose first, then what it is scoped to (schema, pool, model set)."""
    name = ":".join(["slotledger", *map(str, parts)]).encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)


DDL_LOCK_KEY = lock_key("ddl")
"""The one lock under which every component creates its tables."""


def log_keys(schema: str, table: str) -> tuple[int, int]:
    """The two keys of an events table's lock-free appends (``ledger.adapters.postgres``):
    the bigint key of the short lock under which a writer allocates its block of log
    positions, and the int4 class of the shared transaction locks ``(class, position)``
    by which in-flight writers register the position they allocate after.

    The class lives in the two-int4 key space (``objsubid = 2`` in ``pg_locks``), apart
    from every :func:`lock_key` (``objsubid = 1``); it is positive and never 0. Two tables
    that share a class only make each other's readers wait for each other's writers."""
    allocate = lock_key("log-allocate", schema, table)
    register = lock_key("log-register", schema, table) & 0x7FFFFFFF or 1
    return allocate, register


def try_lock(conn: psycopg.Connection[Any], key: int) -> bool:
    """Take the session lock ``key`` on ``conn`` if it is free; True when held."""
    row = conn.execute("SELECT pg_try_advisory_lock(%s)", (key,)).fetchone()
    return bool(row and row[0])


def try_lock_first(conn: psycopg.Connection[Any], keys: Sequence[int]) -> int | None:
    """Take the first free one of ``keys`` in one statement; None when all are taken."""
    row = conn.execute(
        "SELECT k FROM unnest(%s::bigint[]) AS k WHERE pg_try_advisory_lock(k) LIMIT 1",
        (list(keys),),
    ).fetchone()
    return None if row is None else int(row[0])


def unlock(conn: psycopg.Connection[Any], key: int) -> None:
    conn.execute("SELECT pg_advisory_unlock(%s)", (key,))


@contextmanager
def ddl_lock(conn: psycopg.Connection[Any]) -> Iterator[None]:
    """Hold the schema-creation lock on ``conn``'s session while the caller runs DDL on
    any connection. Every component (ledger, indexes, tracking tables, read models)
    takes this same lock, so processes starting together on an empty database create
    each object once instead of colliding in the catalog (``UniqueViolation`` on
    ``pg_type``, "tuple concurrently updated"). A session lock, not a transaction lock:
    the library creates types and tables in several transactions, and all of them must
    have committed before the next process looks."""
    conn.execute("SELECT pg_advisory_lock(%s)", (DDL_LOCK_KEY,))
    try:
        yield
    finally:
        unlock(conn, DDL_LOCK_KEY)


_CREATED = re.compile(
    r'CREATE (?:UNIQUE )?(?:TABLE|INDEX) IF NOT EXISTS (?:"?\w+"?\.)?"?(\w+)"?'
    r'|CREATE TYPE (?:"?\w+"?\.)?"?(\w+)"?'
    r'|CREATE OR REPLACE FUNCTION (?:"?\w+"?\.)?"?(\w+)"?'
)
_EXISTING = (
    "SELECT c.relname AS name FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
    "WHERE n.nspname = %(schema)s AND c.relname = ANY(%(names)s) "
    "UNION SELECT t.typname FROM pg_type t JOIN pg_namespace n ON n.oid = t.typnamespace "
    "WHERE n.nspname = %(schema)s AND t.typname = ANY(%(names)s) "
    "UNION SELECT p.proname FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace "
    "WHERE n.nspname = %(schema)s AND p.proname = ANY(%(names)s)"
)

_COLUMNS = (
    "SELECT table_name, column_name FROM information_schema.columns "
    "WHERE table_schema = %(schema)s AND table_name = ANY(%(tables)s)"
)


def ddl_missing(conn: psycopg.Connection[Any], schema: str, statements: Sequence[str]) -> bool:
    """Whether any table, index, type or function that ``statements`` create, or any
    column they add (:mod:`ledger.ddl`), is missing from ``schema``: catalog queries, no
    lock. A start against a schema already in
    place must run no DDL at all (nor take :func:`ddl_lock`), because even ``CREATE INDEX
    IF NOT EXISTS`` on an existing index takes a SHARE lock on its table, which waits for
    (and blocks, and can deadlock with) the writers of the processes already running."""
    names = {n for s in statements for m in _CREATED.finditer(s) for n in m.groups() if n}
    if not names:
        return True
    columns = added_columns(statements)
    with conn.cursor(row_factory=tuple_row) as curs:
        rows = curs.execute(_EXISTING, {"schema": schema, "names": sorted(names)}).fetchall()
        if {r[0] for r in rows} != names:
            return True
        if not columns:
            return False
        tables = sorted({t for t, _ in columns})
        found = curs.execute(_COLUMNS, {"schema": schema, "tables": tables}).fetchall()
    return not columns <= {(r[0], r[1]) for r in found}


def connect_session(conninfo: str, purpose: str) -> psycopg.Connection[tuple[Any, ...]]:
    """A dedicated autocommit session for advisory locks that must live exactly as long
    as it does (leadership, deploy permits): short TCP keepalives both ways, and a
    statement timeout so that a query on a half-dead link fails instead of hanging.
    Connect directly, never through a transaction-pooling proxy: session locks need
    the session."""
    idle, interval, count = SESSION_KEEPALIVE_S
    return psycopg.connect(
        conninfo,
        autocommit=True,
        connect_timeout=SESSION_CONNECT_TIMEOUT_S,
        application_name=f"slotledger {purpose} pid={os.getpid()}",
        keepalives=1,
        keepalives_idle=idle,
        keepalives_interval=interval,
        keepalives_count=count,
        options=(
            f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval}"
            f" -c tcp_keepalives_count={count} -c statement_timeout=5000"
        ),
    )
