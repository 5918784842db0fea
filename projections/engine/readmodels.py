"""The read side's abstract base: batched exactly-once projection, rebuild, replay, queries.

A batch of events is read from the ledger's notification log, decoded with the ledger's
mapper, folded in memory (:mod:`projections.fold`) and written with bulk statements
together with ONE tracking row, in ONE transaction: the models and their position commit
together, so every event is applied exactly once and a restart resumes where the last
commit left off. Public methods own transactions; the private ones take a cursor so a
rebuild can catch up and swap its tables in a single transaction.

Backends (:mod:`projections.postgres`, :mod:`projections.sqlite`) supply connections,
the bulk writes, the table swap and the lock that keeps one writer per model set.
"""

from __future__ import annotations

import gc
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar, NoReturn, Protocol, Self
from uuid import UUID

from eventsourcing.persistence import Notification

from ledger.domain import SlotStatus, pool_id
from ledger.errors import BadInput
from projections.engine.eventlog import EventLog
from projections.engine.fold import Batch, Changes, Positioned, Projector
from projections.errors import ReadModelTimeout
from projections.inputs import check_event_type, check_window, utc
from projections.models.records import (
    AuditRecord,
    BotLease,
    Failure,
    Interval,
    Lag,
    ParkedEvent,
    ParkedStatus,
    PoolSnapshot,
    PoolStats,
    Progress,
    QueueState,
    QueueStats,
    SlotAt,
    SlotChange,
    SlotHistory,
    SlotState,
    Tracking,
)
from projections.models.schema import (
    AUDIT,
    MODELS,
    PARKED,
    POOL_SIZES,
    QUEUE_ENTRIES,
    SLOT_STATUS,
    STATUS_INTERVALS,
    TRACKING,
    Convert,
    Dialect,
    ModelSet,
    Statements,
    Table,
)

__all__ = ["DEFAULT_PREFIX", "REBUILD_SUFFIX", "Cursor", "ProgressCallback", "ReadModels"]

DEFAULT_PREFIX = "rm_"
REBUILD_SUFFIX = "_rebuild"
FAILURE_TYPES = ("SlotFailed", "SlotRecoveryFailed")
LEASE_TYPES = ("SlotAcquired", "SlotReleasing", "SlotReleased", "SlotFailed")

ProgressCallback = Callable[[Progress], None]


class Cursor(Protocol):
    """What the shared code needs of a DB-API cursor (psycopg's and sqlite3's both fit)."""

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def executemany(self, query: Any, params_seq: Any, /) -> Any: ...

    def fetchall(self) -> list[Any]: ...

    def fetchone(self) -> Any: ...

    @property
    def rowcount(self) -> int: ...


def _none_safe(convert: Convert | None) -> Convert | None:
    return None if convert is None else (lambda v: None if v is None else convert(v))


@contextmanager
def _collector_paused() -> Iterator[None]:
    """Pause Python's cyclic garbage collector over a bulk catch-up (a rebuild, a replay,
    a one-off run). A batch's objects (thousands of events, their dicts and rows, none
    in a reference cycle) live through many young-generation collections, so the
    collector traverses them again and again, promotes them, and runs a full collection
    every few batches: a third of a rebuild's CPU, measured. Reference counting frees
    them as always; a cycle made meanwhile waits for the collector's next run."""
    if not gc.isenabled():
        yield
        return
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


class ReadModels(ABC):
    """Every read model of one ledger, in one model set, on one backend."""

    dialect: ClassVar[Dialect]
    CONSUMER: ClassVar[str] = "read-models"
    """The read models' name as a consumer of the log (parked events, loop health)."""
    SCRATCH_BATCH_SIZE: ClassVar[int] = 20_000
    """The least batch of a rebuild or a replay (see ``_make_scratch``)."""

    def __init__(
        self,
        ledger: EventLog,
        model_set: ModelSet,
        *,
        batch_size: int = 5000,
        create: bool = True,
    ) -> None:
        if not 1 <= batch_size <= 100_000:
            raise BadInput(f"batch size must be 1..100000, got {batch_size}")
        self.ledger = ledger
        self.model_set = model_set
        self.batch_size = batch_size
        self.projector = Projector()
        self.sql = Statements(self.dialect, model_set)
        tables = (*MODELS, PARKED)
        self._encoders = {t.name: self._converters(t, self.dialect.encoder) for t in tables}
        self._decoders = {t.name: self._converters(t, self.dialect.decoder) for t in tables}
        self._index = {t.name: {c.name: i for i, c in enumerate(t.columns)} for t in tables}
        self._parking: ReadModels = self
        """Whose parked events this set leaves out: its own, or the live set's for a
        rebuild's side tables and a replay target."""
        self._retrying: frozenset[int] = frozenset()
        """Parked positions this set takes after all (an operator's retry)."""
        self._scratch = False
        """A rebuild's side tables or a replay's target, which nothing reads before they
        are complete: a backend may commit their batches without waiting for the disk
        (a crash means building them again; the swap's own commit waits)."""
        if create:
            self.create_tables()

    @staticmethod
    def _converters(
        table: Table, make: Callable[[Any], Convert | None]
    ) -> list[Convert | None] | None:
        converters = [_none_safe(make(c)) for c in table.columns]
        return converters if any(converters) else None

    # --- backend -------------------------------------------------------------------------

    @abstractmethod
    def _transaction(self) -> AbstractContextManager[Cursor]:
        """A cursor inside a write transaction, committed on success."""

    @abstractmethod
    def _query(self, statement: str, params: Sequence[Any] = ()) -> list[Any]:
        """Rows of one read-only statement, outside any long transaction."""

    @abstractmethod
    def _exclusive(self) -> AbstractContextManager[None]:
        """Hold this model set's writer lock; RebuildInProgress when someone else has it."""

    @abstractmethod
    def _before_swap(self) -> None:
        """Work on the side tables that should not hold the swap's locks (indexes)."""

    @abstractmethod
    def _lock_for_swap(self, curs: Cursor) -> None:
        """Stop this set's other writers until the transaction ends."""

    @abstractmethod
    def _swap_in(self, curs: Cursor, side: ReadModels) -> None:
        """Replace this set's tables with ``side``'s, inside the caller's transaction."""

    @abstractmethod
    def _sibling(self, models: ModelSet) -> Self:
        """The same kind of models over another set of tables, sharing connections."""

    @abstractmethod
    def _replay_target(self, into: str) -> Self:
        """The models a replay ``into`` a schema (PostgreSQL) or file (SQLite) builds."""

    @abstractmethod
    def _exists(self) -> bool:
        """Whether this set's tables exist (a replay target may not)."""

    @abstractmethod
    def close(self) -> None:
        """Release connections."""

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # --- tables --------------------------------------------------------------------------

    def create_tables(self, *, indexes: bool = True) -> None:
        with self._transaction() as curs:
            for statement in self.sql.create_tables:
                curs.execute(statement)
            for statement in self.sql.add_columns:
                self._add_column(curs, statement)
            if indexes:
                self._create_indexes(curs)
            curs.execute(self.sql.init_tracking, (self.ledger.name,))
            if not self.model_set.suffix:
                for statement in self.sql.create_parked:
                    curs.execute(statement)

    def _add_column(self, curs: Cursor, statement: str) -> None:
        """Run one of :attr:`Statements.add_columns` (as written, where the backend
        knows ``ADD COLUMN IF NOT EXISTS``)."""
        curs.execute(statement)

    def create_indexes(self) -> None:
        with self._transaction() as curs:
            self._create_indexes(curs)

    def _create_indexes(self, curs: Cursor) -> None:
        for statement in self.sql.create_indexes:
            curs.execute(statement)

    def _reset(self) -> None:
        """Empty tables without secondary indexes: bulk loads are faster without them."""
        with self._transaction() as curs:
            for statement in self.sql.drop_tables:
                curs.execute(statement)
        self.create_tables(indexes=False)

    def dump(self) -> dict[str, list[Any]]:
        """Every row of every model (tracking aside), in key order: for comparing sets."""
        return {
            t.name: [self._decode(t, r) for r in self._query(self.sql.all_rows[t.name])]
            for t in MODELS
            if t is not TRACKING
        }

    # --- conversions ---------------------------------------------------------------------

    def _encode(self, table: Table, rows: Iterable[Sequence[Any]]) -> list[Sequence[Any]]:
        encoders = self._encoders[table.name]
        if encoders is None:
            return list(rows)
        return [tuple(e(v) if e else v for e, v in zip(encoders, row, strict=True)) for row in rows]

    def _decode(self, table: Table, row: Sequence[Any]) -> Any:
        decoders = self._decoders[table.name]
        if decoders is None:
            return table.record(*row)
        return table.record(*(d(v) if d else v for d, v in zip(decoders, row, strict=True)))

    def _param(self, table: Table, column: str, value: Any) -> Any:
        """One value as a parameter for ``column`` of ``table``."""
        encoders = self._encoders[table.name]
        encode = encoders[self._index[table.name][column]] if encoders else None
        return encode(value) if encode else value

    def _value(self, table: Table, column: str, value: Any) -> Any:
        """One value of ``column`` of ``table`` as read from the database."""
        decoders = self._decoders[table.name]
        decode = decoders[self._index[table.name][column]] if decoders else None
        return decode(value) if decode else value

    # --- projecting ----------------------------------------------------------------------

    def tracking(self) -> Tracking:
        rows = self._query(self.sql.select_tracking, (self.ledger.name,))
        record: Tracking = self._decode(TRACKING, rows[0])
        return record

    def position(self) -> int:
        """The log position these models have projected up to."""
        return self.tracking().position

    def head(self) -> int:
        """The log's last position."""
        return self.ledger.recorder.max_notification_id() or 0

    def lag(self) -> Lag:
        tracking = self.tracking()
        seconds = (
            None
            if tracking.event_at is None
            else max((datetime.now(UTC) - tracking.event_at).total_seconds(), 0.0)
        )
        return Lag(head=self.head(), position=tracking.position, seconds=seconds)

    def project(self, *, stop: int | None = None, until: datetime | None = None) -> int:
        """Project the next batch in one transaction; returns how many log positions it
        moved over (0: caught up, or another writer applied this batch first)."""
        start = self.position()
        batch = self._next_batch(start, stop, until)
        return batch.read if batch.read and self._commit(start, batch) else 0

    def catch_up(
        self,
        *,
        stop: int | None = None,
        until: datetime | None = None,
        progress: ProgressCallback | None = None,
    ) -> int:
        """Project batches until the log's head as it is now (or ``stop``/``until``)."""
        target = self.head() if stop is None else stop
        started, position, done = time.monotonic(), self.position(), 0
        total = target - position
        with _collector_paused():
            for batch in self._read_ahead(position, target, until):
                if not self._commit(position, batch):
                    break
                position, done = batch.last, done + len(batch.events)
                if progress is not None:
                    progress(Progress(done, max(total, done), time.monotonic() - started))
        return done

    def _read_ahead(self, start: int, stop: int, until: datetime | None) -> Iterator[Batch]:
        """The batches after ``start``, each read and decoded in a thread of its own while
        the caller takes the one before, so the database's work (the select, the writes,
        the commit) overlaps ours. A batch read past one the caller then could not take
        is dropped with the generator."""
        with ThreadPoolExecutor(1, thread_name_prefix=f"{self.CONSUMER}-read-ahead") as reader:
            try:
                future = reader.submit(self._next_batch, start, stop, until)
                while (batch := future.result()).read:
                    future = reader.submit(self._next_batch, batch.last, stop, until)
                    yield batch
            finally:
                reader.submit(self._reader_done)

    @abstractmethod
    def _reader_done(self) -> None:
        """Run in a read-ahead thread as its last work: release what the thread opened."""

    def _commit(self, start: int, batch: Batch) -> bool:
        """Apply a batch and its tracking row in one transaction, unless another writer
        has moved the position since ``start`` was read (then nothing is written)."""
        with self._transaction() as curs:
            if self._locked_position(curs) != start:
                return False
            self._process(curs, batch)
        return True

    def skip(self, start: int, position: int) -> bool:
        """Move the position from ``start`` to ``position`` without projecting anything
        (past a parked event); False when another writer moved it first."""
        return self._commit(start, Batch([], position, 1))

    def wait(self, position: int, timeout: float = 5.0) -> None:
        """Return once the models include ``position`` (read-your-writes), polling with
        backoff; ReadModelTimeout when ``timeout`` seconds pass first."""
        deadline = time.monotonic() + timeout
        pause = 0.002
        while (reached := self.position()) < position:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                self._timed_out(position, reached, timeout)
            time.sleep(min(pause, remaining))
            pause = min(pause * 2, 0.05)

    def _timed_out(self, position: int, reached: int, timeout: float) -> NoReturn:
        head = self.head()
        if position > head:
            raise BadInput(f"position {position} is beyond the log end ({head})")
        msg = (
            f"read models reached position {reached}, not {position}, within {timeout:g}s "
            "(is a follower running?)"
        )
        raise ReadModelTimeout(msg, position=position, reached=reached)

    def _next_batch(
        self, start: int, stop: int | None, until: datetime | None, *, limit: int | None = None
    ) -> Batch:
        """The next events after ``start`` (at most ``limit``, default the batch size),
        less the parked ones (which the batch still moves over), up to ``stop`` or the
        last event at or before ``until``."""
        notifications = self._notifications(start, stop, limit or self.batch_size)
        if not notifications:
            return Batch([], start, 0)
        excluded = self._excluded(start, notifications[-1].id)
        to_event = self.ledger.mapper.to_domain_event
        events: list[Positioned] = []
        last, read = start, 0
        for n in notifications:
            if n.id not in excluded:
                event = to_event(n)
                if until is not None and getattr(event, "timestamp", until) > until:
                    break
                events.append((n.id, event))
            last, read = n.id, read + 1
        return Batch(events, last, read)

    def _excluded(self, start: int, last: int) -> set[int]:
        """Positions in (start, last] parked or skipped for the read models: the live
        models went on past them, so a rebuild or replay leaves them out too."""
        home = self._parking
        rows = home._query(home.sql.excluded, (self.CONSUMER, start, last))
        return {int(r[0]) for r in rows} - self._retrying

    def _notifications(self, start: int, stop: int | None, limit: int) -> Sequence[Notification]:
        """The log after ``start`` (up to ``stop``), at most ``limit`` events."""
        return self.ledger.recorder.select_notifications(
            start, limit, stop=stop, inclusive_of_start=False
        )

    def _locked_position(self, curs: Cursor) -> int:
        curs.execute(self.sql.lock_tracking, (self.ledger.name,))
        position: int = curs.fetchone()[0]
        return position

    def _process(self, curs: Cursor, batch: Batch) -> None:
        now = self._param(TRACKING, "updated_at", datetime.now(UTC))
        if not batch.events:  # only parked events: move over them
            curs.execute(self.sql.advance_tracking, (batch.last, now, self.ledger.name))
            return
        slot_ids, entry_ids = self.projector.prior_ids(batch.events)
        changes = self.projector.fold(
            batch.events,
            self._prior(curs, SLOT_STATUS, slot_ids),
            self._prior(curs, QUEUE_ENTRIES, entry_ids),
        )
        self._write(curs, changes)
        event_at = self._param(TRACKING, "event_at", changes.event_at)
        curs.execute(self.sql.update_tracking, (batch.last, event_at, now, self.ledger.name))

    def _write(self, curs: Cursor, changes: Changes) -> None:
        """Write a batch's changes (not the tracking row) with one ``executemany`` per
        statement; backends with faster bulk paths override it."""
        inserts = (
            (AUDIT, changes.audit),
            (STATUS_INTERVALS, changes.opened.values()),
            (POOL_SIZES, changes.pool_sizes),
        )
        for table, records in inserts:
            curs.executemany(self.sql.insert[table.name], self._encode(table, records))
        curs.executemany(self.sql.close_intervals, self._encode_closed(changes))
        for table, states in ((SLOT_STATUS, changes.slots), (QUEUE_ENTRIES, changes.queue)):
            rows = self._encode(table, self._rows(table, states.values()))
            curs.executemany(self.sql.upsert[table.name], rows)

    def _encode_closed(self, changes: Changes) -> list[tuple[Any, ...]]:
        """(to_ts, to_position, slot_id, from_position) of each interval the batch ended."""
        return [
            (
                self._param(STATUS_INTERVALS, "to_ts", to_ts),
                to_position,
                self._param(STATUS_INTERVALS, "slot_id", slot_id),
                from_position,
            )
            for from_position, (slot_id, to_ts, to_position) in changes.closed.items()
        ]

    @staticmethod
    def _rows(table: Table, states: Iterable[Any]) -> list[tuple[Any, ...]]:
        """Dataclass rows as tuples in column order."""
        names = [c.name for c in table.columns]
        return [tuple(getattr(s, n) for n in names) for s in states]

    def _prior(self, curs: Cursor, table: Table, ids: set[UUID]) -> dict[UUID, Any]:
        if not ids:
            return {}
        key = [self._param(table, table.key[0], i) for i in ids]
        curs.execute(self.sql.prior[table.name], (self.dialect.list_param(key),))
        rows = (self._decode(table, r) for r in curs.fetchall())
        return {getattr(r, table.key[0]): r for r in rows}

    # --- rebuild and replay --------------------------------------------------------------

    def rebuild(
        self, progress: ProgressCallback | None = None, *, retry: Collection[int] = ()
    ) -> int:
        """Build every model afresh from the log into side tables while these keep
        serving, then swap them in atomically; returns the number of events projected.
        Parked events are left out, but those at the ``retry`` positions."""
        side = self._sibling(
            ModelSet(
                self.model_set.schema, self.model_set.prefix, self.model_set.suffix + REBUILD_SUFFIX
            )
        )
        side._parking, side._retrying = self._parking, frozenset(retry)
        side._make_scratch()
        with side._exclusive():
            side._reset()
            done = side.catch_up(progress=progress)
            side._before_swap()
            with self._transaction() as curs:
                self._lock_for_swap(curs)
                done += side._catch_up_in(curs)
                self._swap_in(curs, side)
        return done

    def _make_scratch(self) -> None:
        """Mark these models as a rebuild's side tables or a replay's target: batches of
        at least ``SCRATCH_BATCH_SIZE`` (nothing reads the tables before they are
        complete, and each batch's fixed costs, the prior rows, the upserts and the
        commit, are then paid a quarter as often), committed without waiting for the
        disk (see ``_scratch``)."""
        self._scratch = True
        self.batch_size = max(self.batch_size, self.SCRATCH_BATCH_SIZE)

    def _catch_up_in(self, curs: Cursor) -> int:
        position, done = self._locked_position(curs), 0
        while (batch := self._next_batch(position, None, None)).read:
            self._process(curs, batch)
            position, done = batch.last, done + len(batch.events)
        return done

    def replay(
        self,
        until: datetime | int | None,
        into: str,
        progress: ProgressCallback | None = None,
    ) -> Self:
        """Build every model as of a past moment (a log position, or the last event at or
        before an instant) into another schema or file; returns those models."""
        head = self.head()
        if isinstance(until, int) and not 0 <= until <= head:
            raise BadInput(f"position {until} is beyond the log end ({head})")
        target = self._replay_target(into)
        target._parking = self._parking
        target._make_scratch()
        with target._exclusive():
            target._reset()
            target.catch_up(
                stop=until if isinstance(until, int) else head,
                until=None if until is None or isinstance(until, int) else utc(until),
                progress=progress,
            )
            target.create_indexes()
        return target

    def replayed(self, into: str) -> Self:
        """The models an earlier replay built ``into`` a schema or file, to query them."""
        target = self._replay_target(into)
        if not target._exists():
            target.close()
            raise BadInput(f"no replayed read models in {into!r}")
        return target

    # --- parked events -------------------------------------------------------------------

    def park(self, entry: ParkedEvent) -> None:
        """Record (again) an event a consumer could not take."""
        with self._transaction() as curs:
            curs.execute(self.sql.park, self._encode(PARKED, [entry])[0])

    def parked(self, position: int | None = None) -> list[ParkedEvent]:
        """The unresolved parked events of every consumer (at one position), in log order."""
        if position is None:
            rows = self._query(self.sql.parked)
        else:
            rows = self._query(self.sql.parked_at, (position,))
        return [self._decode(PARKED, r) for r in rows]

    def parked_counts(self) -> dict[str, int]:
        """Unresolved parked events per consumer."""
        return {str(c): int(n) for c, n in self._query(self.sql.parked_counts)}

    def resolve_parked(self, entry: ParkedEvent, status: ParkedStatus) -> bool:
        """Mark a parked event skipped or retried; False when it was resolved already."""
        at = self._param(PARKED, "resolved_at", datetime.now(UTC))
        with self._transaction() as curs:
            curs.execute(
                self.sql.resolve_parked, (status.value, at, entry.consumer, entry.position)
            )
            return curs.rowcount > 0

    # --- queries -------------------------------------------------------------------------

    @property
    def pool_name(self) -> str:
        return self.ledger.pool_name

    def slot(self, ref: UUID | str) -> SlotState | None:
        """A slot by id or name (the ledger's pool first); None when unknown."""
        try:
            slot_id = ref if isinstance(ref, UUID) else UUID(ref)
        except ValueError:
            rows = [
                self._decode(SLOT_STATUS, r) for r in self._query(self.sql.slot_by_name, (ref,))
            ]
            ours = [r for r in rows if r.pool == self.pool_name]
            found: SlotState | None = (ours or rows or [None])[0]
            return found
        rows = self._query(self.sql.slot_by_id, (self._param(SLOT_STATUS, "slot_id", slot_id),))
        return self._decode(SLOT_STATUS, rows[0]) if rows else None

    def slots(self, pool: str | None = None) -> list[SlotState]:
        rows = self._query(self.sql.slots_of_pool, (pool or self.pool_name,))
        return [self._decode(SLOT_STATUS, r) for r in rows]

    def pool_stats(self, pool: str | None = None) -> PoolStats:
        pool = pool or self.pool_name
        statuses = [SlotStatus(r[0]) for r in self._query(self.sql.statuses, (pool,))]
        return PoolStats.count(statuses, self._max_size(self.sql.max_size, pool))

    def _max_size(self, statement: str, pool: str, *params: Any) -> int:
        key = self._param(POOL_SIZES, "pool_id", pool_id(pool))
        rows = self._query(statement, (key, *params))
        return int(rows[0][0]) if rows else 0

    def queue_stats(self, pool: str | None = None) -> QueueStats:
        pool = pool or self.pool_name
        length, oldest = self._query(self.sql.queue_waiting, (pool,))[0]
        wait = self._query(self.sql.queue_wait, (pool,))[0][0]
        return QueueStats(
            length=int(length),
            oldest_queued_at=self._value(QUEUE_ENTRIES, "queued_at", oldest),
            average_wait_s=None if wait is None else round(float(wait), 3),
        )

    def history(self, slot: UUID | str, *, now: datetime | None = None) -> SlotHistory:
        """A slot's timeline: status intervals, time in each status (an open interval
        counts up to ``now``) and every event; empty for an unknown slot."""
        state = self.slot(slot)
        if state is None:
            return SlotHistory(slot=None)
        now = utc(now or datetime.now(UTC))
        key = self._param(SLOT_STATUS, "slot_id", state.slot_id)
        intervals: list[Interval] = [
            self._decode(STATUS_INTERVALS, r)
            for r in self._query(self.sql.intervals_of_slot, (key,))
        ]
        spent: dict[SlotStatus, float] = {}
        for i in intervals:
            spent[i.status] = spent.get(i.status, 0.0) + i.seconds(now)
        return SlotHistory(
            slot=state,
            intervals=intervals,
            time_in_status=spent,
            events=self._audit({"slot": key}, None),
        )

    def audit(
        self,
        *,
        slot: UUID | str | None = None,
        bot: str | None = None,
        type: str | None = None,
        since: datetime | None = None,
        until: datetime | None = None,
        limit: int | None = 1000,
    ) -> list[AuditRecord]:
        """Events by slot, bot, type and time window, in log order."""
        filters = self._window(since, until)
        if type is not None:
            filters["type"] = check_event_type(type)
        if limit is not None and limit < 1:
            raise BadInput(f"limit must be at least 1, got {limit}")
        if slot is not None:
            state = self.slot(slot)
            if state is None:
                return []
            filters["slot"] = self._param(AUDIT, "slot_id", state.slot_id)
        if bot is not None:
            filters["bot"] = bot
        return self._audit(filters, limit)

    def _window(self, since: datetime | None, until: datetime | None) -> dict[str, Any]:
        """Audit filters for a time window (either end optional)."""
        ends = zip(("since", "until"), check_window(since, until), strict=True)
        return {k: self._param(AUDIT, "occurred_at", t) for k, t in ends if t is not None}

    def _audit(self, filters: dict[str, Any], limit: int | None) -> list[AuditRecord]:
        conditions = [self.sql.audit_filters[k] for k in filters]
        statement = self.sql.audit + (" WHERE " + " AND ".join(conditions) if conditions else "")
        params = list(filters.values())
        statement += self.sql.audit_order
        if limit is not None:
            statement += self.sql.limit
            params.append(limit)
        return [self._decode(AUDIT, r) for r in self._query(statement, params)]

    def slots_of_bot(self, bot: str) -> list[BotLease]:
        """Every time the bot held a slot, oldest first; empty for an unknown bot."""
        records = self._audit({"bot": bot, "types": self.dialect.list_param(LEASE_TYPES)}, None)
        names = self._slot_names({r.slot_id for r in records if r.slot_id})
        leases: list[BotLease] = []
        open_leases: dict[UUID, int] = {}
        for r in records:
            assert r.slot_id is not None
            if r.type == "SlotAcquired":
                open_leases[r.slot_id] = len(leases)
                leases.append(
                    BotLease(r.slot_id, names.get(r.slot_id), r.occurred_at, r.position, None, None)
                )
            elif (index := open_leases.pop(r.slot_id, None)) is not None:
                leases[index] = replace(leases[index], ended_at=r.occurred_at, ended_by=r.type)
        return leases

    def failures(
        self,
        since: datetime | None = None,
        until: datetime | None = None,
        *,
        limit: int | None = None,
    ) -> list[Failure]:
        """Every failure (and failed recovery) in the window, with its reason."""
        filters = self._window(since, until)
        filters["types"] = self.dialect.list_param(FAILURE_TYPES)
        records = self._audit(filters, limit)
        names = self._slot_names({r.slot_id for r in records if r.slot_id})
        return [
            Failure(
                position=r.position,
                occurred_at=r.occurred_at,
                slot_id=r.slot_id,
                slot_name=names.get(r.slot_id) if r.slot_id else None,
                type=r.type,
                reason=r.reason,
                reason_code=r.fields.get("reason_code"),
                bot_id=r.bot_id,
                actor=r.actor,
            )
            for r in records
        ]

    def _slot_names(self, ids: set[UUID]) -> dict[UUID, str]:
        if not ids:
            return {}
        keys = [self._param(SLOT_STATUS, "slot_id", i) for i in ids]
        rows = self._query(self.sql.slot_names, (self.dialect.list_param(keys),))
        return {self._value(SLOT_STATUS, "slot_id", r[0]): r[1] for r in rows}

    def pool_at(self, at: datetime, pool: str | None = None) -> PoolSnapshot:
        """Every slot's status, and the pool's stats, at an instant."""
        pool, at = pool or self.pool_name, utc(at)
        ts = self._param(STATUS_INTERVALS, "from_ts", at)
        slots = [
            SlotAt(
                slot_id=self._value(SLOT_STATUS, "slot_id", r[0]),
                name=r[1],
                platform=r[2],
                status=SlotStatus(r[3]),
                since=self._value(STATUS_INTERVALS, "from_ts", r[4]),
                bot_id=r[5],
            )
            for r in self._query(self.sql.pool_at, (ts, pool, ts))
        ]
        max_size = self._max_size(self.sql.max_size_at, pool, ts)
        return PoolSnapshot(
            at=at,
            pool=pool,
            slots=slots,
            stats=PoolStats.count([s.status for s in slots], max_size),
        )

    def diff(self, t1: datetime, t2: datetime, pool: str | None = None) -> list[SlotChange]:
        """What changed per slot between two instants: status, holder, event count."""
        start, end = check_window(t1, t2)
        assert start is not None and end is not None
        pool = pool or self.pool_name
        before = {s.slot_id: s for s in self.pool_at(start, pool).slots}
        after = {s.slot_id: s for s in self.pool_at(end, pool).slots}
        window = (self._param(AUDIT, "occurred_at", start), self._param(AUDIT, "occurred_at", end))
        counts, names = {}, {}
        for slot_id, name, count in self._query(self.sql.events_between, (*window, pool)):
            key = self._value(AUDIT, "slot_id", slot_id)
            counts[key], names[key] = int(count), name
        changes = []
        for slot_id in set(before) | set(after) | set(counts):
            b, a = before.get(slot_id), after.get(slot_id)
            seen = b or a
            change = SlotChange(
                slot_id=slot_id,
                name=seen.name if seen else names[slot_id],
                before=b.status if b else None,
                after=a.status if a else None,
                bot_before=b.bot_id if b else None,
                bot_after=a.bot_id if a else None,
                events=counts.get(slot_id, 0),
            )
            if change.events or (change.before, change.bot_before) != (
                change.after,
                change.bot_after,
            ):
                changes.append(change)
        return sorted(changes, key=lambda c: c.name)

    def audit_rows(self, originators: Sequence[UUID], through: int) -> Iterator[AuditRecord]:
        """Every event of the given aggregates up to a position, in log order."""
        keys = [self._param(AUDIT, "originator_id", o) for o in originators]
        yield from self._audit(
            {"originators": self.dialect.list_param(keys), "through": through}, None
        )

    # --- charts: the rows the dashboard's charts aggregate over a window ----------------

    _INTERVAL_COLUMNS: ClassVar[str] = ", ".join(f"i.{c.name}" for c in STATUS_INTERVALS.columns)
    _INTERVALS_OVERLAPPING: ClassVar[str] = (
        # Those starting inside the window, then the one per slot open at its start (the
        # indexed probe of pool_at): both use (slot_id, from_ts), however long the history.
        f"SELECT {_INTERVAL_COLUMNS} FROM {{slot_status}} s "
        "JOIN {status_intervals} i ON i.slot_id = s.slot_id "
        "WHERE s.pool = ? AND i.from_ts >= ? AND i.from_ts < ? "
        f"UNION ALL SELECT {_INTERVAL_COLUMNS} FROM {{slot_status}} s "
        "JOIN {status_intervals} i ON i.slot_id = s.slot_id AND i.from_position = ("
        "  SELECT j.from_position FROM {status_intervals} j "
        "  WHERE j.slot_id = s.slot_id AND j.from_ts < ? "
        "  ORDER BY j.from_ts DESC, j.from_position DESC LIMIT 1) "
        "WHERE s.pool = ? AND (i.to_ts IS NULL OR i.to_ts > ?)"
    )
    _DEPLOYS_ENDED: ClassVar[str] = (
        # A busy interval and the one before it (one seek on the primary key), when
        # that one was deploying: intervals of a slot are contiguous.
        f"SELECT {_INTERVAL_COLUMNS} FROM {{slot_status}} s "
        "JOIN {status_intervals} b ON b.slot_id = s.slot_id "
        "JOIN {status_intervals} i ON i.slot_id = b.slot_id AND i.to_position = b.from_position "
        "AND i.from_position = (SELECT max(j.from_position) FROM {status_intervals} j "
        "  WHERE j.slot_id = b.slot_id AND j.from_position < b.from_position) "
        "WHERE s.pool = ? AND b.status = 'busy' AND i.status = 'deploying' "
        "AND b.from_ts >= ? AND b.from_ts <= ? ORDER BY b.from_ts, b.slot_id"
    )
    _QUEUE_OVERLAPPING: ClassVar[str] = (
        f"SELECT {QUEUE_ENTRIES.column_list} FROM {{queue_entries}} "
        "WHERE pool = ? AND queued_at < ? AND (ended_at IS NULL OR ended_at > ?) "
        "ORDER BY queued_at, entry_id"
    )

    def intervals_overlapping(
        self, since: datetime, until: datetime, pool: str | None = None
    ) -> list[Interval]:
        """The pool's status intervals that overlap ``[since, until)`` (open ones too),
        ordered by start: what the pool's timeline integrates."""
        start, end = self._chart_window(since, until, STATUS_INTERVALS, "from_ts")
        pool = pool or self.pool_name
        rows = self._query(
            self.sql.sql(self._INTERVALS_OVERLAPPING), (pool, start, end, start, pool, start)
        )
        intervals = [self._decode(STATUS_INTERVALS, r) for r in rows]
        return sorted(intervals, key=lambda i: (i.from_ts, i.from_position))

    def deploys_ended(
        self, since: datetime, until: datetime, pool: str | None = None
    ) -> list[Interval]:
        """The deploying intervals that ended in busy within ``[since, until]`` (by the
        instant the slot became busy), oldest first: each one deploy's duration."""
        start, end = self._chart_window(since, until, STATUS_INTERVALS, "from_ts")
        rows = self._query(self.sql.sql(self._DEPLOYS_ENDED), (pool or self.pool_name, start, end))
        return [self._decode(STATUS_INTERVALS, r) for r in rows]

    def queue_overlapping(
        self, since: datetime, until: datetime, pool: str | None = None
    ) -> list[QueueState]:
        """The pool's queue entries that waited at some time in ``[since, until)``."""
        start, end = self._chart_window(since, until, QUEUE_ENTRIES, "queued_at")
        rows = self._query(
            self.sql.sql(self._QUEUE_OVERLAPPING), (pool or self.pool_name, end, start)
        )
        return [self._decode(QUEUE_ENTRIES, r) for r in rows]

    def _chart_window(
        self, since: datetime, until: datetime, table: Table, column: str
    ) -> tuple[Any, Any]:
        """Both ends of a chart's window, checked, as parameters for ``column``."""
        start, end = check_window(since, until)
        return self._param(table, column, start), self._param(table, column, end)
