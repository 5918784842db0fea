"""PostgreSQL read models: tables beside the ledger's events, bulk writes with COPY and
``unnest``, a table swap by rename, and a follower woken by LISTEN/NOTIFY."""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from operator import itemgetter
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
_ID = 4
"""The notification id's place in the log's rows."""
_INDEX_MEMORY = "256MB"
"""``maintenance_work_mem`` for building an index after a bulk load: the sort of a
million rows fits in memory instead of spilling to disk (the server's default is 64MB)."""
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
            "WHERE notification_id > %s ORDER BY notification_id LIMIT %s"
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
            "to_position = v.to_position FROM unnest(%b::timestamptz[], %b::bigint[], "
            "%b::uuid[], %b::bigint[]) AS v(to_ts, to_position, slot_id, from_position) "
            "WHERE t.slot_id = v.slot_id AND t.from_position = v.from_position"
        )
        self._lock_tables = (
            "LOCK TABLE "
            + ", ".join(names[t.name] for t in reversed(MODELS))  # tracking first
            + " IN ACCESS EXCLUSIVE MODE"
        )

    def _unnest_upsert(self, table: Table) -> str:
        """Binary array parameters (``%b``): psycopg dumps a text array element by
        element in Python, three times the CPU for a batch's rows."""
        arrays = ", ".join(f"%b::{self.dialect.types[c.kind]}[]" for c in table.columns)
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
            if self._scratch:
                conn.execute("SET LOCAL synchronous_commit TO OFF")
            yield conn.cursor()

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        with self._pool.connection() as conn:
            return conn.execute(statement, params).fetchall()

    def _notifications(self, start: int, stop: int | None, limit: int) -> Sequence[Notification]:
        """The recorder's query, with binary tuple rows: its dict rows cost as much CPU
        as decoding the events, and reading is most of a rebuild. The query has a lower
        bound only, so the planner always walks the notification-id index: given a range
        over a log without statistics yet (one just written), it sorted every row after
        ``start`` for each batch. Rows past ``stop`` are cut here, and ``stop`` is never past
        the recorder's horizon: appends commit out of position order, so a read beyond it
        could pass an event still in flight and skip it for good."""
        bound = self.ledger.recorder.max_notification_id() or 0
        stop = bound if stop is None else min(stop, bound)
        with self._pool.connection() as conn, conn.cursor(binary=True) as curs:
            rows = curs.execute(self._select_log, (start, limit)).fetchall()
        if rows and rows[-1][_ID] > stop:
            rows = rows[: bisect_right(rows, stop, key=itemgetter(_ID))]
        return [Notification(*row) for row in rows]

    def create_tables(self, *, indexes: bool = True) -> None:
        """Nothing to do (and no lock taken) when the catalog has every table and index
        already, as at every start but the first; else under the ledger's DDL lock, held
        until the tables' transaction committed."""
        sql = self.sql
        statements = [
            *sql.create_tables,
            *sql.add_columns,
            *sql.create_indexes,
            *sql.create_parked,
        ]
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
            with self._pool.connection() as conn, conn.transaction():
                conn.execute(f"SET LOCAL maintenance_work_mem TO '{_INDEX_MEMORY}'")
                conn.execute(statement)

        with ThreadPoolExecutor(max_workers=3) as builders:
            list(builders.map(build, self.sql.create_indexes))

    def _reader_done(self) -> None:
        """Nothing: the read-ahead thread borrowed its connections from the pool."""

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
    on every write; PostgreSQL delivers it at commit) with a slow safety poll, since a
    notification sent while the connection was down is never delivered. The LISTEN
    connection also holds the model set's advisory lock, so leadership ends exactly when
    that connection dies.

    Only the leader can take new events, so only the leader LISTENs to the log. It
    NOTIFYs the model set's own channel (:attr:`models_channel`) with each position it
    committed, and standbys LISTEN to that: a process that does not lead serves
    read-your-writes (:meth:`wait`) as soon as the leader's commit is visible, and is
    not woken by every write to the log."""

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
        self.models_channel = f"slotledger_rm_{models.lock_key % 2**64:016x}"
        """One channel per model set (its lock key), so positions of other sets, such
        as a rebuild's side tables, are never taken for this one's."""
        self._conn: psycopg.Connection[Any] | None = None
        self._announced = -1

    def _connect(self) -> None:
        self._conn = psycopg.connect(
            self.pg_models.conninfo,
            autocommit=True,
            connect_timeout=5,
            application_name=self.application_name,
        )
        self._conn.execute(f'LISTEN "{self.models_channel}"')

    def _try_lead(self) -> bool:
        """Leading, LISTEN to the log before the first read (so no write falls between
        the read and the LISTEN), and no longer to our own announcements."""
        assert self._conn is not None
        if not try_lock(self._conn, self.pg_models.lock_key):
            return False
        self._conn.execute(f'LISTEN "{self.pg_models.channel}"')
        self._conn.execute(f'UNLISTEN "{self.models_channel}"')
        self._announced = -1
        return True

    def _wait_for_news(self, timeout: float) -> bool:
        assert self._conn is not None
        news = False
        for notify in self._conn.notifies(timeout=timeout, stop_after=1):
            if notify.channel != self.models_channel:
                news = True  # the log moved (only a leader listens to it)
            elif notify.payload.isdigit():
                self._publish(int(notify.payload))  # the leader committed this far
        return news

    def _announce(self) -> None:
        """Also tell the standbys of other processes how far the models are."""
        super()._announce()
        position = self._position
        if self.is_leader and self._conn is not None and position > self._announced:
            self._conn.execute("SELECT pg_notify(%s, %s)", (self.models_channel, str(position)))
            self._announced = position

    def _disconnect(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None
