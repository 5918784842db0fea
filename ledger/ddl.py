"""Columns added to a table after its first release.

Each is one statement, ``ALTER TABLE t ADD COLUMN IF NOT EXISTS c <type> ...``, kept
beside the table's ``CREATE TABLE`` for every backend, so a store made by an earlier
version gains the column at its next start: PostgreSQL runs the statement as written;
SQLite has no ``IF NOT EXISTS`` there, so :func:`sqlite_execute` asks the table first.
:func:`added_columns` lets the PostgreSQL catalog check
(:func:`ledger.pglocks.ddl_missing`) see a missing column as DDL still to run.
A base module: it imports nothing of ours.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any, Protocol

__all__ = ["Cursor", "added_columns", "sqlite_execute"]


class Cursor(Protocol):
    """What :func:`sqlite_execute` needs of a cursor (``sqlite3``'s, or the library's)."""

    def execute(self, sql: str, /) -> Any: ...

    def fetchall(self) -> Any: ...


_ADD_COLUMN = re.compile(
    r'ALTER TABLE (?:"?\w+"?\.)?"?(\w+)"? ADD COLUMN IF NOT EXISTS "?(\w+)"?', re.IGNORECASE
)


def added_columns(statements: Iterable[str]) -> set[tuple[str, str]]:
    """The (table, column) pairs that ``statements`` add."""
    found = (_ADD_COLUMN.match(s) for s in statements)
    return {(m[1], m[2]) for m in found if m is not None}


def sqlite_execute(cursor: Cursor, statement: str) -> None:
    """Run a DDL statement on SQLite; an added column only when the table lacks it."""
    match = _ADD_COLUMN.match(statement)
    if match is None:
        cursor.execute(statement)
        return
    table, column = match[1], match[2]
    cursor.execute(f'PRAGMA table_info("{table}")')
    present = {row[1] for row in cursor.fetchall()}
    if column not in present:
        cursor.execute(statement.replace(" IF NOT EXISTS", "", 1))
