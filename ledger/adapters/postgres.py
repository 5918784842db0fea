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
from enum import StrEnum
from typing import Any, TypeVar

import psycopg
from eventsourcing.persistence import (
    AggregateRecorder,
    ApplicationRecorder,
    IntegrityError,
    StoredEvent,
)
from eventsourcing.postgres import (
    PostgresApplicationRecorder,
    PostgresDatastore,
    PostgresFactory,
    PostgresRecorder,
    PostgresTrackingRecorder,
)
from psycopg import Cursor
from psycopg.rows import DictRow
from psycopg.sql import SQL, Identifier

from ledger.adapters.sql import DDL, SQL_TEMPLATES, SQLIndexes, enum_fields, first_versions
from ledger.application.deploy import DeployFailed, DeployPermits
from ledger.application.ports import QueueRow, SlotRow, index_rows
from ledger.application.worker import LeaderElection
from ledger.errors import StoreUnavailable, store_unavailable
from ledger.pglocks import (
    RECONNECT_S,
    connect_session,
    ddl_lock,
    ddl_missing,
    lock_key,
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


class PostgresLedgerRecorder(PostgresApplicationRecorder, SQLIndexes):
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
        self.sql_create_statements.extend(SQL(ddl).format(**names, **types) for ddl in DDL)
        self._sql = {k: SQL(q).format(**names) for k, q in SQL_TEMPLATES.items()}

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
        first = first_versions(stored_events)
        locks = (
            ("lock_slots", [r.slot_id for r in index_rows(kwargs, SlotRow)]),
            ("lock_queue", [r.entry_id for r in index_rows(kwargs, QueueRow)]),
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
