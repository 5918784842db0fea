"""The index tables' SQL, written once for both SQL backends.

Statements are templates: ``{slots}``, ``{queue}`` (and the index names) are bound to each
backend's table names, ``{uuid}``, ``{ts}``, ``{bool}`` to its column types, and ``%s`` is
the parameter marker (SQLite's recorder turns it into ``?``). Each recorder formats them
once, when it is built.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import fields
from typing import Any, TypeVar
from uuid import UUID

from ledger.application.ports import (
    AcquireReads,
    IndexRow,
    LedgerRecorder,
    QueueRow,
    SlotRow,
    index_rows,
)
from ledger.domain import QueueStatus, SlotStatus

__all__ = ["DDL", "SQL_TEMPLATES", "SQLIndexes", "enum_fields", "upsert_sql"]

R = TypeVar("R", SlotRow, QueueRow)

DDL = (
    "CREATE TABLE IF NOT EXISTS {slots} ("
    "slot_id {uuid} PRIMARY KEY, pool TEXT NOT NULL, name TEXT NOT NULL, "
    "platform TEXT NOT NULL, coolify_uuid TEXT, status TEXT NOT NULL, bot_id TEXT UNIQUE, "
    "status_since {ts} NOT NULL, last_used {ts}, retired {bool} NOT NULL, "
    "version BIGINT NOT NULL, UNIQUE (pool, name))",
    # Added after the first release (ledger.ddl): earlier stores gain them at start.
    "ALTER TABLE {slots} ADD COLUMN IF NOT EXISTS drain_scope TEXT",
    "CREATE INDEX IF NOT EXISTS {slots_idle} ON {slots} (pool, last_used) WHERE status = 'idle'",
    "CREATE TABLE IF NOT EXISTS {queue} ("
    "entry_id {uuid} PRIMARY KEY, pool TEXT NOT NULL, bot_id TEXT NOT NULL, platform TEXT, "
    "priority INTEGER NOT NULL, queued_at {ts} NOT NULL, timeout_at {ts} NOT NULL, "
    "status TEXT NOT NULL, version BIGINT NOT NULL)",
    "CREATE UNIQUE INDEX IF NOT EXISTS {queue_bot} ON {queue} (bot_id) WHERE status = 'waiting'",
    "CREATE INDEX IF NOT EXISTS {queue_order} ON {queue} (pool, priority, queued_at) "
    "WHERE status = 'waiting'",
)


def upsert_sql(table: str, row_type: type[IndexRow], source: str | None = None) -> str:
    """An upsert of ``row_type`` rows that never moves a row back to an older version.

    The rows come from ``source`` (a query giving the columns in field order), or else
    from one ``VALUES`` row of parameters."""
    columns = [f.name for f in fields(row_type)]
    rows = source or f"VALUES ({','.join('%s' for _ in columns)})"
    return (
        f"INSERT INTO {{{table}}} AS t ({','.join(columns)}) {rows} "
        f"ON CONFLICT ({columns[0]}) DO UPDATE SET "
        + ",".join(f"{c}=EXCLUDED.{c}" for c in columns[1:])
        + " WHERE t.version < EXCLUDED.version"
    )


def _select_sql(table: str, row_type: type[IndexRow], where: str) -> str:
    columns = ",".join(f.name for f in fields(row_type))
    return f"SELECT {columns} FROM {{{table}}} WHERE {where}"


SQL_TEMPLATES: Mapping[str, str] = {
    "upsert_slot": upsert_sql("slots", SlotRow),
    "upsert_queue": upsert_sql("queue", QueueRow),
    "idle": _select_sql(
        "slots",
        SlotRow,
        "pool=%s AND status='idle' AND NOT retired AND drain_scope IS NULL "
        "AND %s IN (platform, '') ORDER BY last_used NULLS FIRST, status_since, name LIMIT %s",
    ),
    "slot_by_bot": _select_sql("slots", SlotRow, "bot_id=%s"),
    "slot_by_id": _select_sql("slots", SlotRow, "slot_id=%s"),
    "slots_of_pool": _select_sql("slots", SlotRow, "pool=%s AND (%s OR NOT retired) ORDER BY name"),
    "waiting": _select_sql(
        "queue", QueueRow, "pool=%s AND status='waiting' ORDER BY priority, queued_at, bot_id"
    ),
    "waiting_by_bot": _select_sql("queue", QueueRow, "bot_id=%s AND status='waiting'"),
}


def enum_fields(row_type: type[IndexRow]) -> Mapping[str, Callable[[Any], Any]]:
    """The columns stored as an enum's value, with the enum that reads them back."""
    return {"status": SlotStatus if row_type is SlotRow else QueueStatus}


class SQLIndexes(LedgerRecorder, ABC):
    """The index queries, written once; backends bind tables and convert values."""

    def _fetch(self, query: str, params: Sequence[Any]) -> list[Mapping[str, Any]]:
        """Run one prepared query and return its rows (a backend with round trips may
        send a lone query more cheaply than :meth:`_fetch_all` does)."""
        return self._fetch_all([(query, params)])[0]

    @abstractmethod
    def _fetch_all(
        self, queries: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[Mapping[str, Any]]]:
        """Run several queries together (one round trip, one connection) and return the
        rows of each."""

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

    def acquire_reads(
        self, bot_id: str, pool: str, platform: str | None, limit: int
    ) -> AcquireReads:
        waiting, held, idle = self._fetch_all(
            [
                ("waiting_by_bot", [bot_id]),
                ("slot_by_bot", [bot_id]),
                ("idle", [pool, platform or "", limit]),
            ]
        )
        return AcquireReads(
            next((self._from_db(r, QueueRow) for r in waiting), None),
            next((self._from_db(r, SlotRow) for r in held), None),
            [self._from_db(r, SlotRow) for r in idle],
        )

    def _index_writes(self, kwargs: Mapping[str, Any]) -> Iterator[tuple[str, tuple[Any, ...]]]:
        for slot in index_rows(kwargs, SlotRow):
            yield "upsert_slot", self._params(slot)
        for entry in index_rows(kwargs, QueueRow):
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
