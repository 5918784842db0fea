"""The PostgreSQL backend: the ledger's recorder and factory over the library's, and the
two process-coordination services built on advisory locks (:mod:`ledger.pglocks`): the
deploy permits and the policy worker's leader election."""

from __future__ import annotations

import contextlib
import logging
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar, get_args, get_type_hints
from uuid import UUID

import psycopg
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    InterfaceError,
    Notification,
    OperationalError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
    PostgresRecorder,
    PostgresTrackingRecorder,
)
from eventsourcing.utils import retry
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier, Literal

from ledger.adapters.sql import DDL, SQL_TEMPLATES, SQLIndexes, enum_fields, upsert_sql
from ledger.application.deploy import DeployFailed, DeployPermits
from ledger.application.ports import IndexRow, QueueRow, SlotRow, index_rows, row_key
from ledger.application.worker import LeaderElection
from ledger.errors import StoreUnavailable, store_unavailable
from ledger.pglocks import (
    RECONNECT_S,
    connect_session,
    ddl_lock,
    ddl_missing,
    lock_key,
    log_keys,
    try_lock,
    try_lock_first,
    unlock,
)

__all__ = [
    "PostgresDeployPermits",
    "PostgresLeaderElection",
    "PostgresLedgerFactory",
    "PostgresLedgerRecorder",
    "advisory_key",
    "postgres_ddl_lock",
]

R = TypeVar("R", SlotRow, QueueRow)
R_PG = TypeVar("R_PG", bound=PostgresRecorder)
TTracking = TypeVar("TTracking", bound=PostgresTrackingRecorder)


LOG_FUNCTIONS = ("slotledger_log_allocate_v1", "slotledger_log_horizon_v1")
"""The event log's server-side functions, shared by every events table of a schema (each
call names its table's sequence and keys). A change of body gets a new version suffix,
so processes of two versions never run each other's."""

_ALLOCATE_FUNCTION = """
CREATE OR REPLACE FUNCTION {allocate}(
    seq regclass, allocation_key bigint, register integer, n integer)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    head bigint;
BEGIN
    -- Blocks of positions are handed out one at a time, so a transaction's events are
    -- contiguous; the lock is held for these three steps only, never to the commit.
    PERFORM pg_advisory_lock(allocation_key);
    BEGIN
        head := coalesce(pg_sequence_last_value(seq), 0);
        -- Registered before the positions exist: held to the end of the transaction,
        -- it tells readers that positions after head may still appear.
        PERFORM pg_advisory_xact_lock_shared(register, head::bit(32)::integer);
        PERFORM setval(seq, head + n);
    EXCEPTION WHEN OTHERS OR query_canceled THEN
        PERFORM pg_advisory_unlock(allocation_key);
        RAISE;
    END;
    PERFORM pg_advisory_unlock(allocation_key);
    RETURN head + 1;
END
$fn$"""

_HORIZON_FUNCTION = """
CREATE OR REPLACE FUNCTION {horizon}(seq regclass, register integer)
RETURNS bigint LANGUAGE plpgsql VOLATILE AS $fn$
DECLARE
    head bigint;
    oldest bigint;
BEGIN
    -- The head first, the register second: a writer missing from the register
    -- allocates after both reads, so past the head.
    head := coalesce(pg_sequence_last_value(seq), 0);
    -- A registered position is kept modulo 2^32: rebuilt as the one nearest the head.
    SELECT min(head + ((l.objid::bigint - head) % 4294967296 + 6442450944) % 4294967296
                    - 2147483648)
      INTO oldest
      FROM pg_catalog.pg_locks l
     WHERE l.locktype = 'advisory' AND l.objsubid = 2 AND l.classid = register::oid
       AND l.database = (SELECT oid FROM pg_catalog.pg_database
                          WHERE datname = current_database());
    RETURN least(head, oldest);
END
$fn$"""

_PG_TYPES: Mapping[type, str] = {
    UUID: "uuid",
    str: "text",
    datetime: "timestamptz",
    bool: "boolean",
    int: "bigint",
}


def _pg_array(hint: Any) -> str:
    """The PostgreSQL array type of a row field's annotation (enums are stored as text)."""
    kinds = [k for k in get_args(hint) if k is not type(None)] or [hint]
    kind = next(t for t in _PG_TYPES if isinstance(kinds[0], type) and issubclass(kinds[0], t))
    return f"{_PG_TYPES[kind]}[]"


def _unnest_upsert(table: str, row_type: type[IndexRow], order: str) -> str:
    """One statement for all rows of a kind: a column array each, in ``order``."""
    hints = get_type_hints(row_type)
    names = [f.name for f in fields(row_type)]
    arrays = ", ".join(f"%s::{_pg_array(hints[n])}" for n in names)
    source = f"SELECT * FROM unnest({arrays}) AS v({', '.join(names)}) ORDER BY {order}"
    return upsert_sql(table, row_type, source)


log = logging.getLogger("ledger.store")

transient = retry((InterfaceError, OperationalError), max_attempts=10, wait=0.2)
"""The library's own retry of its reads and writes, for ours too: a connection not
handed out within ``POSTGRES_CONNECT_TIMEOUT`` (a pool busy under load) or found
closed is tried again, so a brief queue is not an outage."""


def committed(commit: psycopg.Cursor[Any] | None) -> bool:
    """Whether the server confirmed a save's ``COMMIT`` before what followed it (the
    notification) failed: the events are saved, and a retry would be refused as a
    conflict. Followers still find them on their next look."""
    return commit is not None and commit.statusmessage == "COMMIT"


class PostgresLedgerRecorder(PostgresApplicationRecorder, SQLIndexes):
    """PostgreSQL recorder: the indexes are ``<app>_slot_index`` and ``<app>_queue_index``
    beside ``<app>_events``, in the same schema.

    Appends take no table lock. A save is one transaction sent in one round trip (the
    index rows, the events, the commit, then the notification), and concurrent saves
    commit side by side. What keeps readers from passing an event that commits later
    under a lower position is the in-flight register: a writer allocates its block of
    positions only after registering, with a shared transaction advisory lock, the
    position it allocates after; readers read only up to the lowest registered position
    (or the sequence's head when none is), which :meth:`max_notification_id` answers.
    """

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
        self.sql_create_statements.extend(SQL(ddl).format(**names, **types) for ddl in DDL)
        # Statements are rendered once: a composed one is rendered again on every execute.
        self._sql = {k: SQL(q).format(**names).as_bytes() for k, q in SQL_TEMPLATES.items()}
        self._table = Identifier(schema, events_table_name)
        self._log_sql(schema, events_table_name)
        # Slot rows in bot order, queue rows too: writers that wait on each other's bot
        # (the unique indexes) wait in one order, so they cannot wait in a cycle. A row
        # locked by another save is not waited for (NOWAIT): that save writes the same
        # aggregate from a read at least as new as this one's, so this save could only
        # fail on the events' unique key once it commits; it fails now instead, and the
        # decision is taken again at once.
        self._row_locks: dict[type[IndexRow], bytes] = {
            kind: SQL(
                f"SELECT 1 FROM {{{table}}} WHERE {key} = ANY(%s) ORDER BY {key} FOR UPDATE NOWAIT"
            )
            .format(**names)
            .as_bytes()
            for kind, table, key in ((SlotRow, "slots", "slot_id"), (QueueRow, "queue", "entry_id"))
        }
        self._upserts: dict[type[IndexRow], bytes] = {
            kind: SQL(_unnest_upsert(table, kind, f"v.bot_id, v.{key}")).format(**names).as_bytes()
            for kind, table, key in ((SlotRow, "slots", "slot_id"), (QueueRow, "queue", "entry_id"))
        }

    def _log_sql(self, schema: str, table: str) -> None:
        """The statements of the lock-free log: its functions, the migration of a table
        made by the library (whose writers took the table lock), the append, the reads."""
        allocation_key, register = log_keys(schema, table)
        allocate, horizon = (Identifier(schema, f) for f in LOG_FUNCTIONS)
        self.sql_create_statements += [
            SQL(_ALLOCATE_FUNCTION).format(allocate=allocate),
            SQL(_HORIZON_FUNCTION).format(horizon=horizon),
            # A writer that allocates no block (the library's insert, an older ledger)
            # would break readers: without a default its inserts fail instead.
            SQL("ALTER TABLE {} ALTER COLUMN notification_id DROP DEFAULT").format(self._table),
        ]
        qualified = Literal(self._table.as_string())
        seq = SQL("pg_catalog.pg_get_serial_sequence({}, 'notification_id')::regclass").format(
            qualified
        )
        self._has_default = SQL(
            "SELECT count(*) AS n FROM pg_catalog.pg_attrdef d JOIN pg_catalog.pg_attribute a "
            "ON a.attrelid = d.adrelid AND a.attnum = d.adnum "
            "WHERE d.adrelid = to_regclass({}) AND a.attname = 'notification_id'"
        ).format(qualified)
        self._horizon = SQL("{}({}, {})").format(horizon, seq, Literal(register))
        self._append = (
            SQL(
                "INSERT INTO {table} (originator_id, originator_version, topic, state, "
                "notification_id) "
                "SELECT e.originator_id, e.originator_version, e.topic, e.state, "
                "a.first + e.ord - 1 "
                "FROM unnest(%s::{schema}.{event}[]) WITH ORDINALITY "
                "AS e(originator_id, originator_version, topic, state, ord), "
                "{allocate}({seq}, {key}, {register}, %s) AS a(first) "
                # Rows are inserted in key order (their positions stay in the save's order), so
                # writers that wait on each other's events wait in one order.
                "ORDER BY e.originator_id, e.originator_version RETURNING notification_id"
            )
            .format(
                table=self._table,
                schema=Identifier(schema),
                event=Identifier(self.stored_event_type_name),
                allocate=allocate,
                seq=seq,
                key=Literal(allocation_key),
                register=Literal(register),
            )
            .as_bytes()
        )
        self._lock_timeout = (
            SQL("SET LOCAL lock_timeout = {}")
            .format(Literal(f"{self.datastore.lock_timeout}s"))
            .as_bytes()
        )
        self._notify = SQL("NOTIFY {}").format(Identifier(self.channel_name)).as_bytes()
        self._abandon = SQL("ROLLBACK; NOTIFY {}").format(Identifier(self.channel_name)).as_bytes()
        self._select_horizon = SQL("SELECT {} AS horizon").format(self._horizon).as_bytes()
        self._max_position = (
            SQL("SELECT max(notification_id) AS max FROM {} WHERE notification_id <= (SELECT {})")
            .format(self._table, self._horizon)
            .as_bytes()
        )

    def needs_migration(self, conn: psycopg.Connection[DictRow]) -> bool:
        """Whether the events table still has the library's default (no lock taken)."""
        row = conn.execute(self._has_default).fetchone()
        return bool(row and row["n"])

    @transient
    def insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        """The events and their index rows in one transaction, sent in one round trip
        with the commit and, after it, the notification; the positions, in order.

        Positions are allocated last, after every wait that can end well: a save that
        waited for another one to commit (a bot's slot released, then acquired here)
        must come after it in the log, as it does in fact. The waits left after the
        allocation (another writer's events, with the same keys) only end in failure."""
        if not stored_events:
            return []
        events = [
            self.construct_pg_stored_event(e.originator_id, e.originator_version, e.topic, e.state)
            for e in stored_events
        ]
        commit: psycopg.Cursor[Any] | None = None
        with self.datastore.get_connection() as conn:
            try:
                with conn.pipeline():
                    conn.execute("BEGIN")
                    conn.execute(self._lock_timeout)
                    for query, params in self._index_writes(kwargs):
                        conn.execute(query, params)
                    appended = conn.execute(self._append, (events, len(events)))
                    commit = conn.execute("COMMIT")
                    conn.execute(self._notify)
            except psycopg.Error as e:
                if committed(commit):
                    log.warning("saved, but readers were not notified: %s", e)
                else:
                    # Readers may have waited for this writer: wake them to look again.
                    with contextlib.suppress(psycopg.Error):
                        conn.execute(self._abandon)
                    if isinstance(e, psycopg.errors.LockNotAvailable):
                        # Another save holds a row (NOWAIT), or held it past the lock
                        # timeout: a lost race, decided again, never retried as is.
                        raise IntegrityError(str(e)) from e
                    raise
            return sorted(row["notification_id"] for row in appended.fetchall())

    def _index_writes(self, kwargs: Mapping[str, Any]) -> Iterator[tuple[Any, tuple[Any, ...]]]:
        """The existing rows locked first, each kind in key order, so writers of the
        same rows queue in one order; then one upsert per kind, its columns as arrays."""
        kinds = [
            rows for rows in (index_rows(kwargs, SlotRow), index_rows(kwargs, QueueRow)) if rows
        ]
        for rows in kinds:
            yield self._row_locks[type(rows[0])], ([row_key(r) for r in rows],)
        for rows in kinds:
            columns = zip(*(self._params(r) for r in rows), strict=True)
            yield self._upserts[type(rows[0])], tuple(list(c) for c in columns)

    @transient
    def max_notification_id(self) -> int | None:
        """The last position readers may read up to: every event at or before it has
        committed (or never will), whatever is still in flight after it."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            row = curs.execute(self._max_position).fetchone()
            return None if row is None else row["max"]

    @transient
    def select_notifications(
        self,
        start: int | None,
        limit: int,
        stop: int | None = None,
        topics: Sequence[str] = (),
        *,
        inclusive_of_start: bool = True,
    ) -> Sequence[Notification]:
        """The library's selection, never past the in-flight horizon: it is read by a
        statement of its own, so the rows' snapshot is taken after it."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            row = curs.execute(self._select_horizon).fetchone()
            horizon = row["horizon"] if row else 0
            where = [SQL("notification_id <= %s")]
            params: list[Any] = [horizon if stop is None else min(stop, horizon)]
            if start is not None:
                where.append(
                    SQL("notification_id >= %s" if inclusive_of_start else "notification_id > %s")
                )
                params.append(start)
            if topics:
                where.append(SQL("topic = ANY(%s)"))
                params.append(list(topics))
            curs.execute(
                SQL("SELECT * FROM {} WHERE {} ORDER BY notification_id LIMIT %s").format(
                    self._table, SQL(" AND ").join(where)
                ),
                [*params, limit],
            )
            return [
                Notification(
                    id=r["notification_id"],
                    originator_id=r["originator_id"],
                    originator_version=r["originator_version"],
                    topic=r["topic"],
                    state=bytes(r["state"]),
                )
                for r in curs.fetchall()
            ]

    @transient
    def _fetch(self, query: str, params: Sequence[Any]) -> list[Mapping[str, Any]]:
        """Without a pipeline: a lone query is one round trip, not two."""
        with self.datastore.get_connection() as conn, conn.cursor() as curs:
            curs.execute(self._sql[query], params)
            return list(curs.fetchall())

    @transient
    def _fetch_all(
        self, queries: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[Mapping[str, Any]]]:
        with self.datastore.get_connection() as conn, conn.pipeline() as pipeline:
            cursors = [conn.cursor() for _ in queries]
            for curs, (query, params) in zip(cursors, queries, strict=True):
                curs.execute(self._sql[query], params)
            pipeline.sync()  # one round trip: a fetch before the sync would wait twice
            return [list(curs.fetchall()) for curs in cursors]

    def _to_db(self, value: Any) -> Any:
        return value.value if isinstance(value, StrEnum) else value

    def _from_db(self, row: Mapping[str, Any], row_type: type[R]) -> R:
        enums = enum_fields(row_type)
        return row_type(**{k: enums[k](v) if k in enums else v for k, v in row.items()})


@contextmanager
def postgres_ddl_lock(datastore: PostgresDatastore) -> Iterator[None]:
    """:func:`~ledger.pglocks.ddl_lock` on a connection of the library's pool."""
    with datastore.get_connection() as conn, ddl_lock(conn):
        yield


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
        self.datastore.pool.reconnect_timeout = RECONNECT_S

    def env_create_table(self) -> bool:
        """False to the library's recorder methods: :meth:`_created` creates the tables
        itself, only when some are missing, and then under the DDL lock."""
        return False

    def _created(self, recorder: R_PG) -> R_PG:
        """``recorder`` with its tables in place: nothing is run (and no lock taken)
        when the catalog has them all and the events table is migrated; else its DDL
        (idempotent, migration included) runs under :func:`postgres_ddl_lock`."""
        if not super().env_create_table():
            return recorder
        statements = [s.as_string() for s in recorder.sql_create_statements]
        with self.datastore.get_connection() as conn:
            missing = ddl_missing(conn, self.datastore.schema, statements) or (
                isinstance(recorder, PostgresLedgerRecorder) and recorder.needs_migration(conn)
            )
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


# --- Deploy permits --------------------------------------------------------------------

deploy_log = logging.getLogger("ledger.deploy")


class PostgresDeployPermits(DeployPermits):
    """Permits as PostgreSQL session advisory locks, shared by every process: a crashed
    holder's session closes and its permits free themselves.

    One session per process holds all of this process's permits, so a process never
    uses more than one connection for them however many deploys run or wait; a waiter
    sleeps between tries without holding any connection. Advisory locks are re-entrant
    within a session, so which keys this process holds is kept here too. A session
    that dies takes its locks with it: the next try opens a new one and takes back the
    keys still held here (a key another process took meanwhile stays shared until
    released, and the cap is briefly exceeded, which is logged).

    ``scope`` names what the cap is shared by (the pool): permit ``i`` is the lock
    ``lock_key("deploy", scope, i)``."""

    def __init__(self, conninfo: str, limit: int, scope: str, poll_s: float = 0.1) -> None:
        self._conninfo = conninfo
        self._keys = [lock_key("deploy", scope, i) for i in range(limit)]
        self._poll_s = poll_s
        self._local = threading.BoundedSemaphore(limit)
        self._lock = threading.Lock()
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._held: set[int] = set()

    @contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
        deadline = time.monotonic() + timeout
        if not self._local.acquire(timeout=timeout):
            raise DeployFailed("no deployment permit within the timeout", "deploy_capacity")
        try:
            key = self._wait_for_key(deadline)
            try:
                yield
            finally:
                self._give_back(key)
        finally:
            self._local.release()

    def _wait_for_key(self, deadline: float) -> int:
        """Try, then sleep without a connection; the store failing counts as "not yet"
        until the deadline, since it usually answers again within seconds."""
        failure: StoreUnavailable | None = None
        while True:
            try:
                key = self._try_take()
            except psycopg.Error as e:
                if failure is None:
                    deploy_log.warning("deploy permits: %s; retrying", " ".join(str(e).split()))
                failure = store_unavailable(e) or StoreUnavailable(f"deploy permits: {e}")
            else:
                if key is not None:
                    return key
                failure = None
            if time.monotonic() > deadline:
                if failure is not None:
                    raise failure
                raise DeployFailed("no deployment permit within the timeout", "deploy_capacity")
            time.sleep(self._poll_s)

    def _try_take(self) -> int | None:
        """One statement on the shared session: the first free key, locked, or None."""
        with self._lock:
            try:
                conn = self._session()
                key = try_lock_first(conn, [k for k in self._keys if k not in self._held])
            except psycopg.Error:
                self._drop_session()
                raise
            if key is not None:
                self._held.add(key)
            return key

    def _give_back(self, key: int) -> None:
        with self._lock:
            self._held.discard(key)
            if self._conn is None or self._conn.closed:
                return  # the session died: the lock went with it
            try:
                unlock(self._conn, key)
            except psycopg.Error as e:
                reason = " ".join(str(e).split())
                deploy_log.warning(
                    "deploy permits: unlock failed (%s); the session is dropped", reason
                )
                self._drop_session()

    def _session(self) -> psycopg.Connection[tuple[Any, ...]]:
        """The live session; a new one takes back the keys this process still holds."""
        if self._conn is not None and not self._conn.closed:
            return self._conn
        self._conn = connect_session(self._conninfo, "deploy permits")
        for key in sorted(self._held):
            if not try_lock(self._conn, key):
                deploy_log.warning("deploy permits: permit %d was taken while disconnected", key)
        return self._conn

    def _drop_session(self) -> None:
        conn, self._conn = self._conn, None
        if conn is not None:
            with contextlib.suppress(psycopg.Error):
                conn.close()


# --- Leader election -------------------------------------------------------------------


def advisory_key(schema: str, pool_name: str) -> int:
    """The policy worker's leadership lock per ledger schema and pool: two ledgers
    sharing a database never block each other."""
    return lock_key("policies", schema, pool_name)


class PostgresLeaderElection(LeaderElection):
    """``pg_try_advisory_lock`` on a session of its own (:func:`connect_session`: short
    keepalives, so a vanished leader's lock frees within seconds), checked every tick.

    A session that died while idle (server restart, terminated backends) fails on its
    first use; the same call then tries once more on a fresh session, so a tick is lost
    only while the store itself does not answer."""

    def __init__(self, conninfo: str, schema: str, pool_name: str) -> None:
        self.conninfo = conninfo
        self.key = advisory_key(schema, pool_name)
        self._conn: psycopg.Connection[tuple[Any, ...]] | None = None
        self._leader = False

    @property
    def is_leader(self) -> bool:
        return self._leader

    def try_lead(self) -> bool:
        reused = self._conn is not None and not self._conn.closed
        try:
            return self._check_or_take()
        except psycopg.Error:
            self.release()
            if not reused:
                raise
        try:
            return self._check_or_take()
        except psycopg.Error:
            self.release()
            raise

    def _check_or_take(self) -> bool:
        conn = self._connection()
        if self._leader:
            conn.execute("SELECT 1")  # the session, and so the lock, is still there
        else:
            self._leader = try_lock(conn, self.key)
        return self._leader

    def release(self) -> None:
        """Unlock, so a standby can take over at once, then close the session (which
        frees the lock anyway, only after the server notices)."""
        was_leader, self._leader = self._leader, False
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(psycopg.Error), conn:
            if was_leader and not conn.closed:
                unlock(conn, self.key)

    def _connection(self) -> psycopg.Connection[tuple[Any, ...]]:
        if self._conn is None or self._conn.closed:
            self._leader = False
            self._conn = connect_session(self.conninfo, "worker")
        return self._conn
