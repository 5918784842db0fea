"""Persistence layer: event recorders that keep an inline slot index in the same transaction.

The library's application recorder writes the events; ours also upserts one row per saved
slot into a small index (status, holder, last use) inside the same database transaction,
the way Marten's inline projections do. The index is what ``acquire`` reads to pick a
candidate, and its unique constraints are a safety net under the aggregates' optimistic
concurrency: one holder per bot, one slot per name.

One abstract base, one implementation per backend (``POPO``, ``SQLite``, ``Postgres``),
private cursor-taking methods that compose inside the library's own transaction.
"""

from __future__ import annotations

import sqlite3
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    StoredEvent,
)
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory
from eventsourcing.postgres import PostgresApplicationRecorder, PostgresDatastore, PostgresFactory
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
)
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Composed, Identifier

from ledger.domain import SlotStatus

__all__ = [
    "LedgerRecorder",
    "POPOLedgerFactory",
    "POPOLedgerRecorder",
    "PostgresLedgerFactory",
    "PostgresLedgerRecorder",
    "SQLiteLedgerFactory",
    "SQLiteLedgerRecorder",
    "SlotRow",
    "postgres_ddl_lock",
]

SLOT_ROWS = "slot_rows"
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


_COLUMNS = (
    "slot_id",
    "pool",
    "name",
    "platform",
    "coolify_uuid",
    "status",
    "bot_id",
    "status_since",
    "last_used",
    "retired",
    "version",
)


class LedgerRecorder(ApplicationRecorder, ABC):
    """An application recorder that also answers the command side's slot queries."""

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


def _rows(kwargs: Mapping[str, Any]) -> list[SlotRow]:
    rows: Sequence[SlotRow] = kwargs.get(SLOT_ROWS, ())
    return sorted(rows, key=lambda r: r.slot_id)  # a fixed lock order avoids deadlocks


class POPOLedgerRecorder(POPOApplicationRecorder, LedgerRecorder):
    """In-memory recorder for unit tests; the index is a dict guarded by the store lock."""

    def __init__(self) -> None:
        super().__init__()
        self._index: dict[UUID, SlotRow] = {}

    def _insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._database_lock:
            rows = _rows(kwargs)
            self._assert_index_uniqueness(rows)
            ids = super()._insert_events(stored_events, **kwargs)
            for row in rows:
                current = self._index.get(row.slot_id)
                if current is None or current.version < row.version:
                    self._index[row.slot_id] = row
            return ids

    def _assert_index_uniqueness(self, rows: Sequence[SlotRow]) -> None:
        for row in rows:
            for other in self._index.values():
                if other.slot_id == row.slot_id:
                    continue
                if row.bot_id is not None and other.bot_id == row.bot_id:
                    msg = f"bot {row.bot_id} already holds slot {other.name}"
                    raise IntegrityError(msg)
                if (other.pool, other.name) == (row.pool, row.name):
                    msg = f"slot name {row.name} already exists in pool {row.pool}"
                    raise IntegrityError(msg)

    def idle_candidates(self, pool: str, platform: str | None, limit: int) -> list[SlotRow]:
        with self._database_lock:
            idle = [
                r
                for r in self._index.values()
                if r.pool == pool
                and r.status is SlotStatus.IDLE
                and not r.retired
                and platform in (None, r.platform)
            ]
        idle.sort(key=lambda r: (r.last_used is not None, r.last_used or r.status_since, r.name))
        return idle[:limit]

    def slot_for_bot(self, bot_id: str) -> SlotRow | None:
        with self._database_lock:
            return next((r for r in self._index.values() if r.bot_id == bot_id), None)

    def slot_row(self, slot_id: UUID) -> SlotRow | None:
        with self._database_lock:
            return self._index.get(slot_id)

    def slot_rows(self, pool: str, *, include_retired: bool = False) -> list[SlotRow]:
        with self._database_lock:
            rows = [
                r
                for r in self._index.values()
                if r.pool == pool and (include_retired or not r.retired)
            ]
        return sorted(rows, key=lambda r: r.name)


class POPOLedgerFactory(POPOFactory):
    """The library's in-memory factory ignores APPLICATION_RECORDER_TOPIC; this one
    builds the ledger's recorder."""

    def application_recorder(self) -> ApplicationRecorder:
        return POPOLedgerRecorder()


class SQLiteLedgerRecorder(SQLiteApplicationRecorder, LedgerRecorder):
    """SQLite recorder: the index lives in table ``slot_index`` of the ledger's file."""

    def __init__(self, datastore: SQLiteDatastore, events_table_name: str = "stored_events"):
        super().__init__(datastore, events_table_name)
        placeholders = ",".join("?" for _ in _COLUMNS)
        updates = ",".join(f"{c}=excluded.{c}" for c in _COLUMNS[1:])
        self._upsert = (
            f"INSERT INTO slot_index ({','.join(_COLUMNS)}) VALUES ({placeholders}) "
            f"ON CONFLICT (slot_id) DO UPDATE SET {updates} "
            "WHERE slot_index.version < excluded.version"
        )
        select = f"SELECT {','.join(_COLUMNS)} FROM slot_index "
        self._select_idle = (
            select + "WHERE pool=? AND status='idle' AND NOT retired AND ? IN (platform, '') "
            "ORDER BY last_used IS NOT NULL, last_used, status_since, name LIMIT ?"
        )
        self._select_by_bot = select + "WHERE bot_id=?"
        self._select_by_id = select + "WHERE slot_id=?"
        self._select_pool = select + "WHERE pool=? AND (? OR NOT retired) ORDER BY name"

    def construct_create_table_statements(self) -> list[str]:
        return [
            *super().construct_create_table_statements(),
            "CREATE TABLE IF NOT EXISTS slot_index ("
            "slot_id TEXT PRIMARY KEY, pool TEXT NOT NULL, name TEXT NOT NULL, "
            "platform TEXT NOT NULL, coolify_uuid TEXT, status TEXT NOT NULL, "
            "bot_id TEXT UNIQUE, status_since TEXT NOT NULL, last_used TEXT, "
            "retired INTEGER NOT NULL, version INTEGER NOT NULL, UNIQUE (pool, name))",
            "CREATE INDEX IF NOT EXISTS slot_index_idle ON slot_index (pool, status, last_used)",
        ]

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        for row in _rows(kwargs):
            c.execute(
                self._upsert,
                (
                    row.slot_id.hex,
                    row.pool,
                    row.name,
                    row.platform,
                    row.coolify_uuid,
                    row.status.value,
                    row.bot_id,
                    row.status_since.isoformat(),
                    row.last_used.isoformat() if row.last_used else None,
                    int(row.retired),
                    row.version,
                ),
            )
        return ids

    def _select(self, statement: str, params: Sequence[Any]) -> list[SlotRow]:
        with self.datastore.transaction(commit=False) as c:
            c.execute(statement, params)
            return [self._from_sqlite(r) for r in c.fetchall()]

    @staticmethod
    def _from_sqlite(r: sqlite3.Row) -> SlotRow:
        return SlotRow(
            slot_id=UUID(r["slot_id"]),
            pool=r["pool"],
            name=r["name"],
            platform=r["platform"],
            coolify_uuid=r["coolify_uuid"],
            status=SlotStatus(r["status"]),
            bot_id=r["bot_id"],
            status_since=datetime.fromisoformat(r["status_since"]),
            last_used=datetime.fromisoformat(r["last_used"]) if r["last_used"] else None,
            retired=bool(r["retired"]),
            version=r["version"],
        )

    def idle_candidates(self, pool: str, platform: str | None, limit: int) -> list[SlotRow]:
        return self._select(self._select_idle, (pool, platform or "", limit))

    def slot_for_bot(self, bot_id: str) -> SlotRow | None:
        return next(iter(self._select(self._select_by_bot, (bot_id,))), None)

    def slot_row(self, slot_id: UUID) -> SlotRow | None:
        return next(iter(self._select(self._select_by_id, (slot_id.hex,))), None)

    def slot_rows(self, pool: str, *, include_retired: bool = False) -> list[SlotRow]:
        return self._select(self._select_pool, (pool, int(include_retired)))


DDL_LOCK_KEY = 0x51071ED6E4
"""Advisory lock key that serialises schema creation across processes."""


@contextmanager
def postgres_ddl_lock(datastore: PostgresDatastore) -> Iterator[None]:
    """Hold a session advisory lock while creating tables: processes starting together
    on an empty database otherwise collide in the catalog ("tuple concurrently updated")."""
    with datastore.get_connection() as conn:
        conn.execute("SELECT pg_advisory_lock(%s)", (DDL_LOCK_KEY,))
        try:
            yield
        finally:
            conn.execute("SELECT pg_advisory_unlock(%s)", (DDL_LOCK_KEY,))


class PostgresLedgerRecorder(PostgresApplicationRecorder, LedgerRecorder):
    """PostgreSQL recorder: the index is ``<app>_slot_index`` beside ``<app>_events``."""

    def __init__(
        self, datastore: PostgresDatastore, *, events_table_name: str = "stored_events"
    ) -> None:
        super().__init__(datastore, events_table_name=events_table_name)
        self.index_table_name = events_table_name.removesuffix("_events") + "_slot_index"
        schema, table = Identifier(datastore.schema), Identifier(self.index_table_name)
        self.sql_create_statements.extend(
            [
                SQL(
                    "CREATE TABLE IF NOT EXISTS {}.{} ("
                    "slot_id uuid PRIMARY KEY, pool text NOT NULL, name text NOT NULL, "
                    "platform text NOT NULL, coolify_uuid text, "
                    "status text NOT NULL, bot_id text UNIQUE, "
                    "status_since timestamptz NOT NULL, last_used timestamptz, "
                    "retired boolean NOT NULL, version bigint NOT NULL, UNIQUE (pool, name))"
                ).format(schema, table),
                SQL(
                    "CREATE INDEX IF NOT EXISTS {} ON {}.{} (pool, last_used NULLS FIRST) "
                    "WHERE status = 'idle' AND NOT retired"
                ).format(Identifier(self.index_table_name + "_idle"), schema, table),
            ]
        )
        columns = SQL(",").join(Identifier(c) for c in _COLUMNS)
        self._upsert = SQL(
            "INSERT INTO {}.{} AS t ({}) VALUES ({}) ON CONFLICT (slot_id) DO UPDATE SET {} "
            "WHERE t.version < EXCLUDED.version"
        ).format(
            schema,
            table,
            columns,
            SQL(",").join(SQL("%s") for _ in _COLUMNS),
            SQL(",").join(SQL("{0}=EXCLUDED.{0}").format(Identifier(c)) for c in _COLUMNS[1:]),
        )
        select = SQL("SELECT {} FROM {}.{} ").format(columns, schema, table)
        self._select_idle: Composed = select + SQL(
            "WHERE pool=%s AND status='idle' AND NOT retired AND %s IN (platform, '') "
            "ORDER BY last_used NULLS FIRST, status_since, name LIMIT %s"
        )
        self._select_by_bot: Composed = select + SQL("WHERE bot_id=%s")
        self._select_by_id: Composed = select + SQL("WHERE slot_id=%s")
        self._select_pool: Composed = select + SQL(
            "WHERE pool=%s AND (%s OR NOT retired) ORDER BY name"
        )

    def _insert_events(
        self, curs: Cursor[DictRow], stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> None:
        super()._insert_events(curs, stored_events, **kwargs)
        for row in _rows(kwargs):
            curs.execute(
                self._upsert,
                (
                    row.slot_id,
                    row.pool,
                    row.name,
                    row.platform,
                    row.coolify_uuid,
                    row.status.value,
                    row.bot_id,
                    row.status_since,
                    row.last_used,
                    row.retired,
                    row.version,
                ),
                prepare=True,
            )

    def _select(self, statement: Composed, params: Sequence[Any]) -> list[SlotRow]:
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(statement, params, prepare=True)
            return [
                replace(
                    SlotRow(**{c: r[c] for c in _COLUMNS}),
                    status=SlotStatus(r["status"]),
                )
                for r in curs.fetchall()
            ]

    def idle_candidates(self, pool: str, platform: str | None, limit: int) -> list[SlotRow]:
        return self._select(self._select_idle, (pool, platform or "", limit))

    def slot_for_bot(self, bot_id: str) -> SlotRow | None:
        return next(iter(self._select(self._select_by_bot, (bot_id,))), None)

    def slot_row(self, slot_id: UUID) -> SlotRow | None:
        return next(iter(self._select(self._select_by_id, (slot_id,))), None)

    def slot_rows(self, pool: str, *, include_retired: bool = False) -> list[SlotRow]:
        return self._select(self._select_pool, (pool, include_retired))


class SQLiteLedgerFactory(SQLiteFactory):
    """The library's SQLite factory, building the ledger's recorder."""

    application_recorder_class = SQLiteLedgerRecorder


class PostgresLedgerFactory(PostgresFactory):
    """The library's Postgres factory, building the ledger's recorder, with table creation
    serialised across processes by :func:`postgres_ddl_lock`."""

    application_recorder_class = PostgresLedgerRecorder

    def aggregate_recorder(self, purpose: str = "events") -> AggregateRecorder:
        with postgres_ddl_lock(self.datastore):
            return super().aggregate_recorder(purpose)

    def application_recorder(self) -> ApplicationRecorder:
        with postgres_ddl_lock(self.datastore):
            return super().application_recorder()
