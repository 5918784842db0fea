"""SQLite read models: a file of their own beside the ledger's (the library's SQLite tables
have fixed names), WAL mode, a swap by rename inside one write transaction, a polling
follower (SQLite has no notifications), and a file lock for one writer per model set."""

from __future__ import annotations

import fcntl
import json
import os
import sqlite3
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID, uuid4

from eventsourcing.persistence import ApplicationRecorder
from eventsourcing.sqlite import SQLiteApplicationRecorder

from ledger.ddl import sqlite_execute
from ledger.errors import BadInput, ConfigurationError
from projections.engine.eventlog import EventLog
from projections.engine.follower import Follower
from projections.engine.readmodels import DEFAULT_PREFIX, Cursor, ReadModels
from projections.errors import RebuildInProgress
from projections.models.schema import MODELS, TRACKING, Column, Convert, Dialect, Kind, ModelSet

__all__ = ["SQLiteDialect", "SQLiteFollower", "SQLiteReadModels", "restore_positions"]


def _timestamp(value: datetime) -> str:
    """Fixed-width UTC text, so comparing the text compares the instants."""
    return value.astimezone(UTC).isoformat(timespec="microseconds")


class SQLiteDialect(Dialect):
    placeholder = "?"
    types: dict[Kind, str] = {
        "uuid": "TEXT",
        "text": "TEXT",
        "int": "INTEGER",
        "ts": "TEXT",
        "bool": "INTEGER",
        "json": "TEXT",
    }
    false = "0"

    def qualify(self, schema: str, name: str) -> str:
        return f'"{name}"'

    def member_of(self, column: str) -> str:
        return f"{column} IN (SELECT value FROM json_each(?))"

    def list_param(self, values: Sequence[Any]) -> Any:
        return json.dumps(list(values))

    def seconds_between(self, start: str, end: str) -> str:
        return f"((julianday({end}) - julianday({start})) * 86400.0)"

    def encoder(self, column: Column) -> Convert | None:
        if column.enum is not None:
            return lambda v: v.value
        encoders: dict[Kind, Convert] = {"uuid": str, "ts": _timestamp, "bool": int}
        return encoders.get(column.kind)

    def decoder(self, column: Column) -> Convert | None:
        if column.enum is not None:
            return column.enum
        decoders: dict[Kind, Convert] = {"uuid": UUID, "ts": datetime.fromisoformat, "bool": bool}
        return decoders.get(column.kind)


class _Connections:
    """One connection per thread to one file (sqlite3 connections are not thread-safe)."""

    def __init__(self, path: str) -> None:
        memory = path == ":memory:"
        self.path = path
        self.target = f"file:rm-{uuid4().hex}?mode=memory&cache=shared" if memory else path
        self.uri = memory
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._lock = threading.Lock()
        self._keepalive = self.get() if memory else None  # a shared memory db lives while open

    def get(self) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            conn = sqlite3.connect(
                self.target, uri=self.uri, isolation_level=None, check_same_thread=False, timeout=30
            )
            conn.execute("PRAGMA journal_mode=WAL")
            # Each commit holds a batch and its tracking row: a crash loses whole batches
            # or nothing, so NORMAL keeps exactly-once while saving an fsync per batch.
            conn.execute("PRAGMA synchronous=NORMAL")
            self._local.conn = conn
            with self._lock:
                self._all.append(conn)
        return conn

    def release(self) -> None:
        """Close the calling thread's connection, if it has one (the thread is ending)."""
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            return
        del self._local.conn
        with self._lock:
            self._all.remove(conn)
        conn.close()

    def close(self) -> None:
        with self._lock:
            for conn in self._all:
                conn.close()
            self._all.clear()
        self._local = threading.local()


class SQLiteReadModels(ReadModels):
    """Read models in their own SQLite file (``SQLiteStore.views_path``)."""

    dialect = SQLiteDialect()

    def __init__(
        self,
        ledger: EventLog,
        path: str,
        *,
        prefix: str = DEFAULT_PREFIX,
        suffix: str = "",
        batch_size: int = 5000,
        connections: _Connections | None = None,
        create: bool = True,
    ) -> None:
        recorder = ledger.recorder
        if not isinstance(recorder, SQLiteApplicationRecorder):
            raise ConfigurationError("SQLiteReadModels needs a ledger stored in SQLite")
        self.ledger_path = recorder.datastore.pool.db_name
        self.path = path
        self._owns_connections = connections is None
        self._connections = connections or _Connections(path)
        super().__init__(
            ledger, ModelSet("main", prefix, suffix), batch_size=batch_size, create=create
        )

    @contextmanager
    def _transaction(self) -> Iterator[Cursor]:
        conn = self._connections.get()
        conn.execute("BEGIN IMMEDIATE")  # take the write lock now, not on the first write
        try:
            yield conn.cursor()
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")

    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        return self._connections.get().execute(statement, params).fetchall()

    def _add_column(self, curs: Cursor, statement: str) -> None:
        sqlite_execute(curs, statement)

    def try_lock(self) -> int | None:
        """Take the set's writer lock (a file lock); the descriptor to release, or None
        when another process holds it. In-memory models have no other process."""
        if self.path == ":memory:":
            return -1
        name = f"{self.path}.{self.model_set.prefix}{self.model_set.suffix}lock"
        fd = os.open(name, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return None
        return fd

    @staticmethod
    def unlock(fd: int) -> None:
        if fd >= 0:
            os.close(fd)  # closing the descriptor releases the flock

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        fd = self.try_lock()
        if fd is None:
            raise RebuildInProgress(f"another process is building the read models in {self.path}")
        try:
            yield
        finally:
            self.unlock(fd)

    def _reader_done(self) -> None:
        """The read-ahead thread's connections: to these models' file, and to the one
        whose parked events it read (a replay's target has its own)."""
        for models in (self, self._parking):
            if isinstance(models, SQLiteReadModels):
                models._connections.release()

    def _before_swap(self) -> None:
        """Nothing: SQLite cannot rename indexes, so the swap builds them."""

    def _lock_for_swap(self, curs: Cursor) -> None:
        """BEGIN IMMEDIATE already excludes other writers; WAL readers keep reading."""

    def _swap_in(self, curs: Cursor, side: ReadModels) -> None:
        for table in MODELS:
            curs.execute(f"DROP TABLE {self.sql.names[table.name]}")
            curs.execute(
                f"ALTER TABLE {side.sql.names[table.name]} RENAME TO {self.model_set.table(table)}"
            )
        self._create_indexes(curs)  # SQLite cannot rename indexes: build them under live names

    def _sibling(self, models: ModelSet) -> SQLiteReadModels:
        return SQLiteReadModels(
            self.ledger,
            self.path,
            prefix=models.prefix,
            suffix=models.suffix,
            batch_size=self.batch_size,
            connections=self._connections,
            create=False,
        )

    def _exists(self) -> bool:
        if self.path != ":memory:" and not os.path.exists(self.path):
            return False  # checked first: connecting would create the file
        table = self.model_set.table(TRACKING)
        found = self._query("SELECT 1 FROM sqlite_master WHERE name = ?", (table,))
        return bool(found)

    def _replay_target(self, into: str) -> SQLiteReadModels:
        taken = {os.path.abspath(p) for p in (self.path, self.ledger_path)}
        if os.path.abspath(into) in taken:
            raise BadInput(f"replay target {into!r} is the ledger's or the live models' file")
        return SQLiteReadModels(
            self.ledger,
            into,
            prefix=self.model_set.prefix,
            batch_size=self.batch_size,
            create=False,
        )

    def close(self) -> None:
        if self._owns_connections:
            self._connections.close()


class SQLiteFollower(Follower):
    """Woken by this process's own commits (:meth:`~projections.engine.follower.
    LogFollower.wake`), and polls the ledger's file for other processes' (SQLite cannot
    notify); leads through a file lock."""

    def __init__(
        self, models: SQLiteReadModels, *, poll_interval: float = 0.05, max_backoff: float = 2.0
    ) -> None:
        super().__init__(models, poll_interval=poll_interval, max_backoff=max_backoff)
        self.sqlite_models = models
        self._fd: int | None = None

    def _connect(self) -> None:
        """Nothing to open: the models' own connections read the ledger's file."""

    def _try_lead(self) -> bool:
        self._fd = self.sqlite_models.try_lock()
        return self._fd is not None

    def _wait_for_news(self, timeout: float) -> bool:
        return self._wait_for_wake(timeout)

    def _disconnect(self) -> None:
        if self._fd is not None:
            self.sqlite_models.unlock(self._fd)
            self._fd = None


def restore_positions(recorder: ApplicationRecorder, moves: list[tuple[int, int]]) -> None:
    """Give imported events their original log positions (``moves``: new id, original).
    Both sequences ascend and an original is never below its new id, so moving the
    highest first never collides."""
    if not isinstance(recorder, SQLiteApplicationRecorder):
        raise ConfigurationError("an incident bundle is imported into a SQLite ledger only")
    statement = f"UPDATE {recorder.events_table_name} SET rowid = ? WHERE rowid = ?"
    with recorder.datastore.transaction(commit=True) as c:
        for new, original in reversed(moves):
            if new != original:
                c.execute(statement, (original, new))
