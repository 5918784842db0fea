"""PostgreSQL read models: tables beside the ledger's events, bulk writes with COPY and
``unnest``, a table swap by rename, and a follower woken by LISTEN/NOTIFY."""

from __future__ import annotations

import re
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any

import psycopg
from eventsourcing.persistence import Notification
from eventsourcing.postgres import PostgresApplicationRecorder
from psycopg.types.string import TextLoader
from psycopg_pool import ConnectionPool

from ledger.errors import BadInput, ConfigurationError
from ledger.pglocks import RECONNECT_S, ddl_lock, ddl_missing, try_lock, unlock
from ledger.pglocks import lock_key as pg_lock_key
from projections.engine.eventlog import EventLog
from projections.engine.fold import Changes
from projections.engine.follower import Follower
from projections.engine.readmodels import DEFAULT_PREFIX, REBUILD_SUFFIX, Cursor, ReadModels
from projections.errors import RebuildInProgress
from projections.models.schema import (
    AUDIT,
    MODELS,
    POOL_SIZES,
    QUEUE_ENTRIES,
    SLOT_STATUS,
    STATUS_INTERVALS,
    Column,
    Convert,
    Dialect,
    Kind,
    ModelSet,
    Table,
)

__all__ = ["PostgresDialect", "PostgresFollower", "PostgresReadModels"]

_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,40}$")
_BINARY_TYPES: dict[Kind, str] = {
    "uuid": "uuid",
    "text": "text",
    "int": "int8",
    "ts": "timestamptz",
    "bool": "bool",
    "json": "text",  # our JSON is text already: its binary form is the text itself
}
"""Type names for binary COPY, which needs every column's type up front."""
_MAX_POSITION = 2**63 - 1
_MAX_IDENTIFIER = 63


class PostgresDialect(Dialect):
    placeholder = "%s"
    types: dict[Kind, str] = {
        "uuid": "uuid",
        "text": "text",
        "int": "bigint",
        "ts": "timestamptz",
        "bool": "boolean",
        "json": "json",
    }
    lock_row = " FOR UPDATE"

    def qualify(self, schema: str, name: str) -> str:
        return f'"{schema}"."{name}"'

    def member_of(self, column: str) -> str:
        return f"{column} = ANY(?)"

    def list_param(self, values: Sequence[Any]) -> Any:
        return list(values)

    def seconds_between(self, start: str, end: str) -> str:
        return f"EXTRACT(EPOCH FROM ({end} - {start}))"

    def encoder(self, column: Column) -> Convert | None:
        return None  # psycopg adapts UUID, datetime, bool and str enums itself

    def decoder(self, column: Column) -> Convert | None:
        return column.enum


def _configure(conn: psycopg.Connection[Any]) -> None:
    """``json`` columns hold the audit's text as written: read it back as text. No
    prepared statements, for the psycopg bug the ledger's factory explains."""
    conn.adapters.register_loader("json", TextLoader)
    conn.prepare_threshold = None


def _check_prefix(prefix: str) -> None:
    """PostgreSQL cuts names at 63 characters, which would merge a rebuild's side tables
    or indexes with the live ones: refuse prefixes that get there."""
    if not _NAME.match(prefix):
        raise BadInput(f"read model prefix {prefix!r} must be lowercase letters, digits, _")
    longest = max(ModelSet("", prefix, REBUILD_SUFFIX).identifiers(), key=len)
    if len(longest) > _MAX_IDENTIFIER:
        raise BadInput(f"read model prefix {prefix!r} is too long: {longest!r} > 63 characters")


def _columns(rows: Sequence[Sequence[Any]]) -> list[list[Any]]:
    """Rows to one list per column: the arrays ``unnest`` turns back into rows."""
    return [list(column) for column in zip(*rows, strict=True)]


def lock_key(models: ModelSet) -> int:
    """The advisory lock key of one model set: one writer (or rebuild) per set."""
    return pg_lock_key("readmodels", models.schema, f"{models.prefix}{models.suffix}")


class PostgresReadModels(ReadModels):
    """Read models in the ledger's database, schema and events' neighbourhood."""

    dialect = PostgresDialect()

    def __init__(
        self,
        ledger: EventLog,
        conninfo: str,
        *,
        schema: str | None = None,
        prefix: str = DEFAULT_PREFIX,
        suffix: str = "",
        batch_size: int = 5000,
        pool: ConnectionPool[psycopg.Connection[Any]] | None = None,
        create: bool = True,
    ) -> None:
        recorder = ledger.recorder
        if not isinstance(recorder, PostgresApplicationRecorder):
            raise ConfigurationError("PostgresReadModels needs a ledger stored in PostgreSQL")
        _check_prefix(prefix)
        self.conninfo = conninfo
        self.channel = recorder.channel_name
        self._owns_pool = pool is None
        self._pool = pool or ConnectionPool(
            conninfo,
            min_size=1,
            max_size=6,
            kwargs={"autocommit": True},
            configure=_configure,
            name="slotledger-read-models",
            timeout=5.0,
            reconnect_timeout=RECONNECT_S,
            check=ConnectionPool.check_connection,  # a dead session is replaced, not used
            open=True,
        )
        super().__init__(
            ledger,
            ModelSet(schema or recorder.datastore.schema, prefix, suffix),
            batch_size=batch_size,
            create=create,
        )
        self.lock_key = lock_key(self.model_set)
        self._select_log = (
            "SELECT originator_id, originator_version, topic, state, notification_id "
            f'FROM "{recorder.datastore.schema}"."{recorder.events_table_name}" '
            "WHERE notification_id > %s AND notification_id <= %s "
            "ORDER BY notification_id LIMIT %s"
        )
        names = self.sql.names
        self._copy = {
            t.name: (
                f"COPY {names[t.name]} ({t.column_list}) FROM STDIN (FORMAT BINARY)",
                [_BINARY_TYPES[c.kind] for c in t.columns],
            )
            for t in (AUDIT, STATUS_INTERVALS, POOL_SIZES)
        }
        self._upsert = {t.name: self._unnest_upsert(t) for t in (SLOT_STATUS, QUEUE_ENTRIES)}
        self._close = (
            f"UPDATE {names['status_intervals']} t SET to_ts = v.to_ts, "
            "to_position = v.to_position FROM unnest(%s::timestamptz[], %s::bigint[], "
            "%s::uuid[], %s::bigint[]) AS v(to_ts, to_position, slot_id, from_position) "
            "WHERE t.slot_id = v.slot_id AND t.from_position = v.from_position"
        )
        self._lock_tables = (
            "LOCK TABLE "
            + ", ".join(names[t.name] for t in reversed(MODELS))  # tracking first
            + " IN ACCESS EXCLUSIVE MODE"
        )

    def _unnest_upsert(self, table: Table) -> str:
        arrays = ", ".join(f"%s::{self.dialect.types[c.kind]}[]" for c in table.columns)
        updates = ", ".join(
            f"{c.name} = excluded.{c.name}" for c in table.columns if c.name not in table.key
        )
        return (
            f"INSERT INTO {self.sql.names[table.name]} ({table.column_list}) "
            f"SELECT * FROM unnest({arrays}) "
            f"ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}"
        )

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        with self._pool.connection() as conn, conn.transaction():
            yield conn.cursor()

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._pool.connection() as conn:
            return conn.execute(statement, params).fetchall()

    def _notifications(self, start: int, stop: int | None, limit: int) -> Sequence[Notification]:
        """The recorder's query, with binary tuple rows: its dict rows cost as much CPU
        as decoding the events, and reading is most of a rebuild."""
        with self._pool.connection() as conn, conn.cursor(binary=True) as curs:
            params = (start, _MAX_POSITION if stop is None else stop, limit)
            return [Notification(*row) for row in curs.execute(self._select_log, params)]

    def create_tables(self, *, indexes: bool = True) -> None:
        """Nothing to do (and no lock taken) when the catalog has every table and index
        already, as at every start but the first; else under the ledger's DDL lock, held
        until the tables' transaction committed."""
        sql = self.sql
        statements = [*sql.create_tables, *sql.create_indexes, *sql.create_parked]
        with self._pool.connection() as conn:
            if indexes and not ddl_missing(conn, self.model_set.schema, statements):
                return
        with self._pool.connection() as conn, ddl_lock(conn):
            conn.execute(f'CREATE SCHEMA IF NOT EXISTS "{self.model_set.schema}"')
            super().create_tables(indexes=indexes)

    def _write(self, curs: Cursor, changes: Changes) -> None:
        """COPY for the append-only models, one ``unnest`` upsert per mutable model."""
        assert isinstance(curs, psycopg.Cursor)
        for table, rows in (
            (AUDIT, changes.audit),
            (STATUS_INTERVALS, changes.opened.values()),
            (POOL_SIZES, changes.pool_sizes),
        ):
            if rows:
                statement, types = self._copy[table.name]
                with curs.copy(statement) as copy:
                    copy.set_types(types)
                    for row in rows:
                        copy.write_row(row)
        if changes.closed:
            curs.execute(self._close, _columns(self._encode_closed(changes)))
        for table, states in ((SLOT_STATUS, changes.slots), (QUEUE_ENTRIES, changes.queue)):
            if states:
                curs.execute(self._upsert[table.name], _columns(self._rows(table, states.values())))

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        with self._pool.connection() as conn:
            if not try_lock(conn, self.lock_key):
                where = f"{self.model_set.schema}.{self.model_set.prefix}*{self.model_set.suffix}"
                raise RebuildInProgress(f"another process is building the read models {where}")
            try:
                yield
            finally:
                unlock(conn, self.lock_key)

    def create_indexes(self) -> None:
        """One connection per index, so the server builds them in parallel."""

        def build(statement: str) -> None:
            with self._pool.connection() as conn:
                conn.execute(statement)

        with ThreadPoolExecutor(max_workers=3) as builders:
            list(builders.map(build, self.sql.create_indexes))

    def _lock_for_swap(self, curs: Cursor) -> None:
        curs.execute(self._lock_tables)

    def _before_swap(self) -> None:
        self.create_indexes()

    def _swap_in(self, curs: Cursor, side: ReadModels) -> None:
        schema = f'"{self.model_set.schema}"'
        for table in MODELS:
            curs.execute(f"DROP TABLE {self.sql.names[table.name]}")
            curs.execute(
                f"ALTER TABLE {side.sql.names[table.name]} RENAME TO {self.model_set.table(table)}"
            )
            renames = [(side.model_set.key_index(table), self.model_set.key_index(table))]
            renames += [
                (side.model_set.index(table, c), self.model_set.index(table, c))
                for c in table.indexes
            ]
            for old, new in renames:
                curs.execute(f"ALTER INDEX {schema}.{old} RENAME TO {new}")

    def _sibling(self, models: ModelSet) -> PostgresReadModels:
        return PostgresReadModels(
            self.ledger,
            self.conninfo,
            schema=models.schema,
            prefix=models.prefix,
            suffix=models.suffix,
            batch_size=self.batch_size,
            pool=self._pool,
            create=False,
        )

    def _replay_target(self, into: str) -> PostgresReadModels:
        if not _NAME.match(into):
            raise BadInput(f"replay target {into!r} must be a schema name (lowercase, digits, _)")
        if into == self.model_set.schema:
            raise BadInput(f"replay target {into!r} is the live models' schema: pick another")
        return self._sibling(ModelSet(into, self.model_set.prefix))

    def _exists(self) -> bool:
        row = self._query("SELECT to_regclass(%s)", (self.sql.names["tracking"],))[0]
        return row[0] is not None

    def close(self) -> None:
        if self._owns_pool:
            self._pool.close()


class PostgresFollower(Follower):
    """Follows the log on LISTEN/NOTIFY (the ledger NOTIFYs its events table's channel
    on every write) with a slow safety poll, since a notification sent while the
    connection was down is never delivered. The LISTEN connection also holds the model
    set's advisory lock, so leadership ends exactly when that connection dies."""

    def __init__(
        self,
        models: PostgresReadModels,
        *,
        safety_poll: float = 1.0,
        max_backoff: float = 2.0,
    ) -> None:
        super().__init__(models, poll_interval=safety_poll, max_backoff=max_backoff)
        self.pg_models = models
        set_ = models.model_set
        self.application_name = f"slotledger follower {set_.schema}.{set_.prefix}"[:63]
        """How the LISTEN connection shows in ``pg_stat_activity``."""
        self._conn: psycopg.Connection[Any] | None = None

    def _connect(self) -> None:
        self._conn = psycopg.connect(
            self.pg_models.conninfo,
            autocommit=True,
            connect_timeout=5,
            application_name=self.application_name,
        )
        self._conn.execute(f'LISTEN "{self.pg_models.channel}"')

    def _try_lead(self) -> bool:
        assert self._conn is not None
        return try_lock(self._conn, self.pg_models.lock_key)

    def _wait_for_news(self, timeout: float) -> bool:
        assert self._conn is not None
        return any(True for _ in self._conn.notifies(timeout=timeout, stop_after=1))

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
