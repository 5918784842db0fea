"""The SQLite backend: the ledger's recorder and factory over the library's SQLite ones.

The index tables live in the ledger's own file, beside the library's events table, and
are written in the same transaction as the events.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from enum import StrEnum
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import StoredEvent
from eventsourcing.sqlite import (
    SQLiteApplicationRecorder,
    SQLiteCursor,
    SQLiteDatastore,
    SQLiteFactory,
)

from ledger.adapters.sql import DDL, SQL_TEMPLATES, SQLIndexes, enum_fields
from ledger.application.ports import QueueRow, SlotRow
from ledger.ddl import sqlite_execute

__all__ = ["SQLiteLedgerFactory", "SQLiteLedgerRecorder"]

R = TypeVar("R", SlotRow, QueueRow)

_PARSERS: Mapping[str, Callable[[Any], Any]] = {
    "slot_id": UUID,
    "entry_id": UUID,
    "status_since": datetime.fromisoformat,
    "last_used": datetime.fromisoformat,
    "queued_at": datetime.fromisoformat,
    "timeout_at": datetime.fromisoformat,
    "retired": bool,
}


class SQLiteLedgerRecorder(SQLiteApplicationRecorder, SQLIndexes):
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
        self._sql = {
            k: q.format(**self._TABLES).replace("%s", "?") for k, q in SQL_TEMPLATES.items()
        }

    def construct_create_table_statements(self) -> list[str]:
        types = {"uuid": "TEXT", "ts": "TEXT", "bool": "INTEGER"}
        return [
            *super().construct_create_table_statements(),
            *(ddl.format(**self._TABLES, **types) for ddl in DDL),
        ]

    def _create_table(self, c: SQLiteCursor) -> None:
        for statement in self.create_table_statements:
            sqlite_execute(c, statement)

    def _insert_events(
        self, c: SQLiteCursor, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        ids = super()._insert_events(c, stored_events, **kwargs)
        for query, params in self._index_writes(kwargs):
            c.execute(self._sql[query], params)
        return ids

    def _fetch_all(
        self, queries: Sequence[tuple[str, Sequence[Any]]]
    ) -> list[list[Mapping[str, Any]]]:
        """In one read transaction: one consistent view of the file."""
        answers: list[list[Mapping[str, Any]]] = []
        with self.datastore.transaction(commit=False) as c:
            for query, params in queries:
                c.execute(self._sql[query], params)
                answers.append([dict(r) for r in c.fetchall()])
        return answers

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
        parsers = {**_PARSERS, **enum_fields(row_type)}
        return row_type(
            **{k: (parsers[k](v) if k in parsers and v is not None else v) for k, v in row.items()}
        )


class SQLiteLedgerFactory(SQLiteFactory):
    """The library's SQLite factory, building the ledger's recorder."""

    application_recorder_class = SQLiteLedgerRecorder
