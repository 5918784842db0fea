"""Persistence layer: event recorders that keep inline indexes in the same transaction.

The library's application recorder writes the events; ours also upserts one row per saved
slot and per saved queue entry into two small index tables, inside the same database
transaction, the way Marten's inline projections do. The command side reads them to pick
candidates (least recently used idle slot, next queued request), and their unique
constraints are a safety net under the aggregates' optimistic concurrency: one slot per
bot, one waiting entry per bot, one slot per name.

One abstract base, one implementation per backend (``POPO``, ``SQLite``, ``Postgres``);
the SQL is written once for both SQL backends and built once per recorder.
"""

from __future__ import annotations

import os
import re
import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, fields
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    ConnectionUnavailableError,
    IntegrityError,
    InterfaceError,
    OperationalError,
    StoredEvent,
)
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
    PostgresRecorder,
    PostgresTrackingRecorder,
)
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
)
from psycopg import Cursor
from psycopg.rows import DictRow, tuple_row
from psycopg.sql import SQL, Identifier

from ledger.domain import QueueStatus, SlotStatus
from ledger.errors import StoreUnavailable

__all__ = [
    "INDEX_ROWS",
    "RECONNECT_S",
    "STORE_ERRORS",
    "LedgerRecorder",
    "POPOLedgerFactory",
    "POPOLedgerRecorder",
    "PostgresLedgerFactory",
    "PostgresLedgerRecorder",
    "QueueRow",
    "SQLiteLedgerFactory",
    "SQLiteLedgerRecorder",
    "SlotRow",
    "connect_session",
    "ddl_lock",
    "ddl_missing",
    "lru_order",
    "postgres_ddl_lock",
    "store_unavailable",
]

INDEX_ROWS = "index_rows"
"""Keyword under which the application passes index rows through ``save()``."""


@dataclass(frozen=True)
class SlotRow:
    """A slot's current state as the inline index keeps it."""

    slot_id: UUID
    pool: str
    name: str
    platform: str
    coolify_uuid: str | None
    status: SlotStatus
    bot_id: str | None
    status_since: datetime
    last_used: datetime | None
    retired: bool
    version: int


@dataclass(frozen=True)
class QueueRow:
    """A queue entry's current state as the inline index keeps it."""

    entry_id: UUID
    pool: str
    bot_id: str
    platform: str | None
    priority: int
    queued_at: datetime
    timeout_at: datetime
    status: QueueStatus
    version: int


IndexRow = SlotRow | QueueRow
TTracking = TypeVar("TTracking", bound=PostgresTrackingRecorder)
R_PG = TypeVar("R_PG", bound=PostgresRecorder)
R = TypeVar("R", SlotRow, QueueRow)


class LedgerRecorder(ApplicationRecorder, ABC):
    """An application recorder that also answers the command side's queries."""

    @abstractmethod
    def idle_candidates(self, pool: str, platform: str | None, limit: int) -> list[SlotRow]:
        """Idle slots (of one platform, or any), least recently used first."""

    @abstractmethod
    def slot_for_bot(self, bot_id: str) -> SlotRow | None:
        """The slot a bot holds, if any."""

    @abstractmethod
    def slot_row(self, slot_id: UUID) -> SlotRow | None:
        """One slot's row, retired ones included."""

    @abstractmethod
    def slot_rows(self, pool: str, *, include_retired: bool = False) -> list[SlotRow]:
        """Every slot of a pool, by name."""

    @abstractmethod
    def waiting_entries(self, pool: str) -> list[QueueRow]:
        """Waiting queue entries in dispatch order: priority (lower first), then FIFO."""

    @abstractmethod
    def waiting_entry_for_bot(self, bot_id: str) -> QueueRow | None:
        """The entry a bot waits in, if any."""


def _rows(kwargs: Mapping[str, Any], kind: type[R]) -> list[R]:
    rows: Sequence[IndexRow] = kwargs.get(INDEX_ROWS, ())
    # A fixed order of row locks keeps concurrent writers from deadlocking.
    return sorted((r for r in rows if isinstance(r, kind)), key=lambda r: str(_key(r)))


def _key(row: IndexRow) -> UUID:
    return row.slot_id if isinstance(row, SlotRow) else row.entry_id


def _first_versions(stored_events: Sequence[StoredEvent]) -> dict[UUID, int]:
    """Each aggregate's first new version in a save: its index row must be one below."""
    first: dict[UUID, int] = {}
    for e in stored_events:
        key = e.originator_id if isinstance(e.originator_id, UUID) else UUID(e.originator_id)
        first[key] = min(first.get(key, e.originator_version), e.originator_version)
    return first


def _dispatch_order(row: QueueRow) -> tuple[int, datetime, str]:
    return (row.priority, row.queued_at, row.bot_id)


def lru_order(row: SlotRow) -> tuple[bool, datetime, str]:
    return (row.last_used is not None, row.last_used or row.status_since, row.name)


class POPOLedgerRecorder(POPOApplicationRecorder, LedgerRecorder):
    """In-memory recorder for unit tests; the indexes are dicts under the store lock."""

    def __init__(self) -> None:
        super().__init__()
        self._index: dict[UUID, IndexRow] = {}

    def _insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._database_lock:
            rows: list[IndexRow] = [*_rows(kwargs, SlotRow), *_rows(kwargs, QueueRow)]
            for row in rows:
                self._assert_unique(row)
            ids = super()._insert_events(stored_events, **kwargs)
            for row in rows:
                current = self._index.get(_key(row))
                if current is None or current.version < row.version:
                    self._index[_key(row)] = row
            return ids

    def _assert_unique(self, row: IndexRow) -> None:
        """The same unique constraints as the SQL tables."""
        for other in self._index.values():
            if type(other) is not type(row) or _key(other) == _key(row):
                continue
            if isinstance(row, SlotRow) and isinstance(other, SlotRow):
                if row.bot_id is not None and other.bot_id == row.bot_id:
                    raise IntegrityError(f"bot {row.bot_id} already holds slot {other.name}")
                if (other.pool, other.name) == (row.pool, row.name):
                    raise IntegrityError(f"slot name {row.name} exists in pool {row.pool}")
            if (
                isinstance(row, QueueRow)
                and isinstance(other, QueueRow)
                and row.status is other.status is QueueStatus.WAITING
                and row.bot_id == other.bot_id
            ):
                raise IntegrityError(f"bot {row.bot_id} already waits in the queue")

    def _select(self, kind: type[R], keep: Callable[[R], bool]) -> list[R]:
        with self._database_lock:
            return [r for r in self._index.values() if isinstance(r, kind) and keep(r)]

    def idle_candidates(self, pool: str, platform: str | None, limit: int) -> list[SlotRow]:
        idle = self._select(
            SlotRow,
            lambda r: (
                r.pool == pool
                and r.status is SlotStatus.IDLE
                and not r.retired
                and platform in (None, r.platform)
            ),
        )
        return sorted(idle, key=lru_order)[:limit]

    def slot_for_bot(self, bot_id: str) -> SlotRow | None:
        return next(iter(self._select(SlotRow, lambda r: r.bot_id == bot_id)), None)

    def slot_row(self, slot_id: UUID) -> SlotRow | None:
        return next(iter(self._select(SlotRow, lambda r: r.slot_id == slot_id)), None)

    def slot_rows(self, pool: str, *, include_retired: bool = False) -> list[SlotRow]:
        rows = self._select(
            SlotRow, lambda r: r.pool == pool and (include_retired or not r.retired)
        )
        return sorted(rows, key=lambda r: r.name)

    def waiting_entries(self, pool: str) -> list[QueueRow]:
        rows = self._select(QueueRow, lambda r: r.pool == pool and r.status is QueueStatus.WAITING)
        return sorted(rows, key=_dispatch_order)

    def waiting_entry_for_bot(self, bot_id: str) -> QueueRow | None:
        rows = self._select(
            QueueRow, lambda r: r.bot_id == bot_id and r.status is QueueStatus.WAITING
        )
        return next(iter(rows), None)


class POPOLedgerFactory(POPOFactory):
    """The library's in-memory factory ignores APPLICATION_RECORDER_TOPIC; this one
    builds the ledger's recorder."""

    def application_recorder(self) -> ApplicationRecorder:
        return POPOLedgerRecorder()


# --- SQL backends ----------------------------------------------------------------------

_DDL = (
    "CREATE TABLE IF NOT EXISTS {slots} ("
    "slot_id {uuid} PRIMARY KEY, pool TEXT NOT NULL, name TEXT NOT NULL, "
    "platform TEXT NOT NULL, coolify_uuid TEXT, status TEXT NOT NULL, bot_id TEXT UNIQUE, "
    "status_since {ts} NOT NULL, last_used {ts}, retired {bool} NOT NULL, "
    "version BIGINT NOT NULL, UNIQUE (pool, name))",
    "CREATE INDEX IF NOT EXISTS {slots_idle} ON {slots} (pool, last_used) WHERE status = 'idle'",
    "CREATE TABLE IF NOT EXISTS {queue} ("
    "entry_id {uuid} PRIMARY KEY, pool TEXT NOT NULL, bot_id TEXT NOT NULL, platform TEXT, "
    "priority INTEGER NOT NULL, queued_at {ts} NOT NULL, timeout_at {ts} NOT NULL, "
    "status TEXT NOT NULL, version BIGINT NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS {queue_bot} ON {queue} (bot_id) WHERE status = 'waiting'",
    "CREATE INDEX IF NOT EXISTS {queue_order} ON {queue} (pool, priority, queued_at) "
    "WHERE status = 'waiting'",
)


def _upsert_sql(table: str, row_type: type[IndexRow]) -> str:
    """An upsert that never moves a row back to an older version."""
    columns = [f.name for f in fields(row_type)]
    return (
        f"INSERT INTO {{{table}}} AS t ({','.join(columns)}) "
        f"VALUES ({','.join('%s' for _ in columns)}) "
        f"ON CONFLICT ({columns[0]}) DO UPDATE SET "
        + ",".join(f"{c}=EXCLUDED.{c}" for c in columns[1:])
        + " WHERE t.version < EXCLUDED.version"
    )


def _select_sql(table: str, row_type: type[IndexRow], where: str) -> str:
    columns = ",".join(f.name for f in fields(row_type))
    return f"SELECT {columns} FROM {{{table}}} WHERE {where}"


_SQL: dict[str, str] = {
    "upsert_slot": _upsert_sql("slots", SlotRow),
    "upsert_queue": _upsert_sql("queue", QueueRow),
    "idle": _select_sql(
        "slots",
        SlotRow,
        "pool=%s AND status='idle' AND NOT retired AND %s IN (platform, '') "
        "ORDER BY last_used NULLS FIRST, status_since, name LIMIT %s",
    ),
    "slot_by_bot": _select_sql("slots", SlotRow, "bot_id=%s"),
    "slot_by_id": _select_sql("slots", SlotRow, "slot_id=%s"),
    "slots_of_pool": _select_sql("slots", SlotRow, "pool=%s AND (%s OR NOT retired) ORDER BY name"),
    "waiting": _select_sql(
        "queue", QueueRow, "pool=%s AND status='waiting' ORDER BY priority, queued_at, bot_id"
    ),
    "waiting_by_bot": _select_sql("queue", QueueRow, "bot_id=%s AND status='waiting'"),
    # Row locks in key order, so that writers never wait on each other in a cycle.
    "lock_slots": "SELECT slot_id AS id, version FROM {slots} WHERE slot_id = ANY(%s) "
    "ORDER BY slot_id FOR UPDATE",
    "lock_queue": "SELECT entry_id AS id, version FROM {queue} WHERE entry_id = ANY(%s) "
    "ORDER BY entry_id FOR UPDATE",
}


class _SQLIndexes(LedgerRecorder, ABC):
    """The index queries, written once; backends bind tables and convert values."""

    @abstractmethod
    def _fetch(self, query: str, params: Sequence[Any]) -> list[Mapping[str, Any]]:
        """Run one prepared query and return its rows."""

    @abstractmethod
    def _to_db(self, value: Any) -> Any:
        """A Python value as the backend stores it."""

    @abstractmethod
    def _from_db(self, row: Mapping[str, Any], row_type: type[R]) -> R:
        """A row as the dataclass the command side reads."""

    def _params(self, row: IndexRow) -> tuple[Any, ...]:
        return tuple(self._to_db(getattr(row, f.name)) for f in fields(row))

    def _query(self, query: str, row_type: type[R], *params: Any) -> list[R]:
        return [
            self._from_db(r, row_type) for r in self._fetch(query, [self._to_db(p) for p in params])
        ]

    def _index_writes(self, kwargs: Mapping[str, Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        for slot in _rows(kwargs, SlotRow):
            yield "upsert_slot", self._params(slot)
        for entry in _rows(kwargs, QueueRow):
            yield "upsert_queue", self._params(entry)

    def idle_candidates(self, pool: str, platform: str | None, limit: int) -> list[SlotRow]:
        return self._query("idle", SlotRow, pool, platform or "", limit)

    def slot_for_bot(self, bot_id: str) -> SlotRow | None:
        return next(iter(self._query("slot_by_bot", SlotRow, bot_id)), None)

    def slot_row(self, slot_id: UUID) -> SlotRow | None:
        return next(iter(self._query("slot_by_id", SlotRow, slot_id)), None)

    def slot_rows(self, pool: str, *, include_retired: bool = False) -> list[SlotRow]:
        return self._query("slots_of_pool", SlotRow, pool, include_retired)

    def waiting_entries(self, pool: str) -> list[QueueRow]:
        return self._query("waiting", QueueRow, pool)

    def waiting_entry_for_bot(self, bot_id: str) -> QueueRow | None:
        return next(iter(self._query("waiting_by_bot", QueueRow, bot_id)), None)


_PARSERS: dict[str, Callable[[Any], Any]] = {
    "slot_id": UUID,
    "entry_id": UUID,
    "status_since": datetime.fromisoformat,
    "last_used": datetime.fromisoformat,
    "queued_at": datetime.fromisoformat,
    "timeout_at": datetime.fromisoformat,
    "retired": bool,
}


def _enum_fields(row_type: type[IndexRow]) -> Mapping[str, Callable[[Any], Any]]:
    return {"status": SlotStatus if row_type is SlotRow else QueueStatus}


class SQLiteLedgerRecorder(SQLiteApplicationRecorder, _SQLIndexes):
    """SQLite recorder: the indexes are tables ``slot_index`` and ``queue_index`` in the
    ledger's own file (the library's SQLite table names are fixed per file)."""

    _TABLES: Mapping[str, str] = {
        "slots": "slot_index",
        "slots_idle": "slot_index_idle",
        "queue": "queue_index",
        "queue_bot": "queue_index_bot",
        "queue_order": "queue_index_order",
    }

    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        self._sql = {k: q.format(**self._TABLES).replace("%s", "?") for k, q in _SQL.items()}

    def construct_create_table_statements(self) -> list[str]:
        types = {"uuid": "TEXT", "ts": "TEXT", "bool": "INTEGER"}
        return [
            *super().construct_create_table_statements(),
            *(ddl.format(**self._TABLES, **types) for ddl in _DDL),
        ]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        for query, params in self._index_writes(kwargs):
            c.execute(self._sql[query], params)
        return ids

    def _fetch(self, query: str, params: Sequence[Any]) -> list[Mapping[str, Any]]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(self._sql[query], params)
            rows: list[sqlite3.Row] = c.fetchall()
            return [dict(r) for r in rows]

    def _to_db(self, value: Any) -> Any:
        if isinstance(value, UUID):
            return value.hex
        if isinstance(value, datetime):
            return value.isoformat()
        if isinstance(value, StrEnum):
            return value.value
        if isinstance(value, bool):
            return int(value)
        return value

    def _from_db(self, row: Mapping[str, Any], row_type: type[R]) -> R:
        parsers = {**_PARSERS, **_enum_fields(row_type)}
        return row_type(
            **{k: (parsers[k](v) if k in parsers and v is not None else v) for k, v in row.items()}
        )


RECONNECT_S = 2.0
"""How long a connection pool keeps one reconnection attempt going (see above)."""

DDL_LOCK_KEY = 0x51071ED6E4
"""The one advisory lock key under which every component creates its tables."""

SESSION_CONNECT_TIMEOUT_S = 5
SESSION_KEEPALIVE_S = (5, 2, 3)
"""TCP keepalive idle, interval and count of a dedicated session: the server closes the
session of a vanished host (no FIN), and frees its advisory locks, after about 11 s
instead of the kernel's two hours."""


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
        conn.execute("SELECT pg_advisory_unlock(%s)", (DDL_LOCK_KEY,))


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


def ddl_missing(conn: psycopg.Connection[Any], schema: str, statements: Sequence[str]) -> bool:
    """Whether any table, index, type or function that ``statements`` create is missing
    from ``schema``: one catalog query, no lock. A start against a schema already in
    place must run no DDL at all, because even ``CREATE INDEX IF NOT EXISTS`` on an
    existing index takes a SHARE lock on its table, which waits for (and blocks, and
    can deadlock with) the writers of the processes already running there."""
    names = {n for s in statements for m in _CREATED.finditer(s) for n in m.groups() if n}
    if not names:
        return True
    with conn.cursor(row_factory=tuple_row) as curs:
        rows = curs.execute(_EXISTING, {"schema": schema, "names": sorted(names)}).fetchall()
    return {r[0] for r in rows} != names


@contextmanager
def postgres_ddl_lock(datastore: PostgresDatastore) -> Iterator[None]:
    """:func:`ddl_lock` on a connection of the library's pool."""
    with datastore.get_connection() as conn, ddl_lock(conn):
        yield


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


STORE_ERRORS: tuple[type[Exception], ...] = (
    OperationalError,
    InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlite3.OperationalError,
)
"""What the stores raise when they do not answer; :func:`store_unavailable` decides."""


def store_unavailable(error: BaseException) -> StoreUnavailable | None:
    """The :class:`StoreUnavailable` behind ``error`` (or what it was raised from), if
    the store failed to answer: psycopg's operational and interface errors (refused or
    lost connections, pool timeouts, terminated backends, lock and statement timeouts),
    the library's own pool timing out, a locked SQLite file. Anything else, such as the
    library's errors that no such cause raised, is not an outage: ``None``."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, StoreUnavailable):
            return cause
        if isinstance(
            cause, psycopg.OperationalError | psycopg.InterfaceError | ConnectionUnavailableError
        ) or (isinstance(cause, sqlite3.OperationalError) and _is_busy(cause)):
            reason = " ".join(str(cause).split())[:300] or type(cause).__name__
            return StoreUnavailable(f"the database did not answer: {reason}")
        cause = cause.__cause__
    return None


def _is_busy(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


class PostgresLedgerRecorder(PostgresApplicationRecorder, _SQLIndexes):
    """PostgreSQL recorder: the indexes are ``<app>_slot_index`` and ``<app>_queue_index``
    beside ``<app>_events``, in the same schema."""

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        prefix = events_table_name.removesuffix("_events")
        schema = datastore.schema
        names = {
            "slots": Identifier(schema, f"{prefix}_slot_index"),
            "slots_idle": Identifier(f"{prefix}_slot_index_idle"),
            "queue": Identifier(schema, f"{prefix}_queue_index"),
            "queue_bot": Identifier(f"{prefix}_queue_index_bot"),
            "queue_order": Identifier(f"{prefix}_queue_index_order"),
        }
        types = {"uuid": SQL("uuid"), "ts": SQL("timestamptz"), "bool": SQL("boolean")}
        self.sql_create_statements.extend(SQL(ddl).format(**names, **types) for ddl in _DDL)
        self._sql = {k: SQL(q).format(**names) for k, q in _SQL.items()}

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        """Check versions under row locks, then take the events table lock, then write
        the index rows (the library inserts the events after this method).

        A lost race fails here, before the table lock every writer queues for: the loser
        waits only for the winner of its own row, then gives up without costing the
        others a serialised transaction. No index row is written before the table lock,
        and row locks are taken in one order, so writers cannot deadlock."""
        super()._insert_events(curs, stored_events, **kwargs)
        writes = list(self._index_writes(kwargs))
        if not writes:
            return
        first = _first_versions(stored_events)
        locks = (
            ("lock_slots", [r.slot_id for r in _rows(kwargs, SlotRow)]),
            ("lock_queue", [r.entry_id for r in _rows(kwargs, QueueRow)]),
        )
        for query, keys in locks:
            if not keys:
                continue
            curs.execute(self._sql[query], (keys,))
            found = {r["id"]: r["version"] for r in curs.fetchall()}
            for key in keys:
                if found.get(key, 0) != first.get(key, 1) - 1:
                    raise IntegrityError(f"{key} was changed concurrently")
        self._lock_table(curs)
        for query, params in writes:
            curs.execute(self._sql[query], params)

    def _fetch(self, query: str, params: Sequence[Any]) -> list[Mapping[str, Any]]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._sql[query], params)
            return list(curs.fetchall())

    def _to_db(self, value: Any) -> Any:
        return value.value if isinstance(value, StrEnum) else value

    def _from_db(self, row: Mapping[str, Any], row_type: type[R]) -> R:
        enums = _enum_fields(row_type)
        return row_type(**{k: enums[k](v) if k in enums else v for k, v in row.items()})


class SQLiteLedgerFactory(SQLiteFactory):
    """The library's SQLite factory, building the ledger's recorder."""

    application_recorder_class = SQLiteLedgerRecorder


class PostgresLedgerFactory(PostgresFactory):
    """The library's Postgres factory, building the ledger's recorder, with table creation
    serialised across processes by :func:`postgres_ddl_lock`."""

    application_recorder_class = PostgresLedgerRecorder

    def __init__(self, env: Any) -> None:
        super().__init__(env)
        # No server-side prepared statements: psycopg 3.3 marks a statement prepared
        # when it auto-prepares it inside a transaction that already failed, and then
        # every later use on that connection fails with "prepared statement does not
        # exist" (reproduced with concurrent saves). The pool opens lazily, so this
        # reaches every connection it will make.
        connect_kwargs = self.datastore.pool.kwargs
        assert isinstance(connect_kwargs, dict)
        connect_kwargs["prepare_threshold"] = None
        # The pool's reconnection delay doubles without bound while the server is down;
        # giving up an attempt after RECONNECT_S lets the next request start a fresh one,
        # so service resumes within seconds of the server's return, whatever the outage.
        self.datastore.pool.reconnect_timeout = RECONNECT_S

    def env_create_table(self) -> bool:
        """False to the library's recorder methods: :meth:`_created` creates the tables
        itself, only when some are missing, and then under the DDL lock."""
        return False

    def _created(self, recorder: R_PG) -> R_PG:
        """``recorder`` with its tables in place: nothing is run (and no lock taken)
        when the catalog has them all; else its DDL runs under :func:`postgres_ddl_lock`."""
        if not super().env_create_table():
            return recorder
        statements = [s.as_string() for s in recorder.sql_create_statements]
        with self.datastore.get_connection() as conn:
            missing = ddl_missing(conn, self.datastore.schema, statements)
        if missing:
            with postgres_ddl_lock(self.datastore):
                recorder.create_table()
        else:
            self.datastore.register_type_adapters()
        return recorder

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        recorder = super().aggregate_recorder(purpose)
        assert isinstance(recorder, PostgresRecorder)
        return self._created(recorder)

    def application_recorder(self) -> ApplicationRecorder:
        recorder = super().application_recorder()
        assert isinstance(recorder, PostgresApplicationRecorder)
        return self._created(recorder)

    def tracking_recorder(
        self, tracking_recorder_class: type[TTracking] | None = None
    ) -> TTracking:
        return self._created(super().tracking_recorder(tracking_recorder_class))
