"""The in-memory backend (the library's ``popo``): the ledger's recorder and factory, for
unit tests and the demo. The indexes are dicts under the library's store lock, with the
same unique constraints as the SQL tables."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any, TypeVar
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder, IntegrityError, StoredEvent
from eventsourcing.popo import POPOApplicationRecorder, POPOFactory

from ledger.application.ports import (
    IndexRow,
    LedgerRecorder,
    QueueRow,
    SlotRow,
    dispatch_order,
    index_rows,
    lru_order,
    row_key,
)
from ledger.domain import QueueStatus

__all__ = ["POPOLedgerFactory", "POPOLedgerRecorder"]

R = TypeVar("R", SlotRow, QueueRow)


class POPOLedgerRecorder(POPOApplicationRecorder, LedgerRecorder):
    """In-memory recorder for unit tests; the indexes are dicts under the store lock."""

    def __init__(self) -> None:
        super().__init__()
        self._index: dict[UUID, IndexRow] = {}

    def _insert_events(
        self, stored_events: Sequence[StoredEvent], **kwargs: Any
    ) -> Sequence[int] | None:
        with self._database_lock:
            rows: list[IndexRow] = [*index_rows(kwargs, SlotRow), *index_rows(kwargs, QueueRow)]
            for row in rows:
                self._assert_unique(row)
            ids = super()._insert_events(stored_events, **kwargs)
            for row in rows:
                current = self._index.get(row_key(row))
                if current is None or current.version < row.version:
                    self._index[row_key(row)] = row
            return ids

    def _assert_unique(self, row: IndexRow) -> None:
        """The same unique constraints as the SQL tables."""
        for other in self._index.values():
            if type(other) is not type(row) or row_key(other) == row_key(row):
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
            lambda r: r.pool == pool and r.available and platform in (None, r.platform),
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
        return sorted(rows, key=dispatch_order)

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
