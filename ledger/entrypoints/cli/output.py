"""The output layer of every ``slotledger`` command: tables or NDJSON, and errors.

Every command module imports this (never ``ledger.cli``, which imports them), so that all
commands print alike: a table by default, ``--json`` for NDJSON, "nothing found" is exit 0,
and a ledger error is one line ``error: <code>: <detail>`` on stderr with exit 2 for bad
input or configuration and 1 for a refusal; a store that does not answer is such an error
too (``store_unavailable``, as the HTTP API's 503), not a traceback.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Annotated, Any, TypeVar

import typer
from rich.console import Console
from rich.table import Table

from ledger.errors import BadInput, ConfigurationError, SlotLedgerError, store_unavailable
from projections.jsonable import jsonable

__all__ = [
    "BAD_INPUT",
    "REFUSED",
    "JsonOption",
    "console",
    "emit",
    "fail_with",
    "failing_cleanly",
    "run_guarded",
]

BAD_INPUT = 2
"""Exit code of bad input and bad configuration (click's usage errors exit 2 too)."""
REFUSED = 1
"""Exit code of every other ledger error: the ledger refused the command."""

console = Console()
errors = Console(stderr=True)
T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="NDJSON output, one object a line.")]


def emit(
    rows: Iterable[Any], *, as_json: bool, title: str = "", empty: str = "nothing found"
) -> None:
    """Print records as a rich table, or as NDJSON; an empty result says so, exit 0."""
    records = [jsonable(r) for r in rows]
    if as_json:
        for record in records:
            sys.stdout.write(json.dumps(record, default=str) + "\n")
        return
    if not records:
        console.print(empty)
        return
    table = Table(title=title or None)
    columns = list(records[0])
    for column in columns:
        table.add_column(column)
    for record in records:
        table.add_row(*("" if record.get(c) is None else str(record.get(c)) for c in columns))
    console.print(table)


def fail_with(error: SlotLedgerError) -> typer.Exit:
    """One line on stderr; the exit for the caller to raise."""
    errors.print(
        f"error: {error.code}: {error.detail}", markup=False, highlight=False, soft_wrap=True
    )
    return typer.Exit(BAD_INPUT if isinstance(error, BadInput | ConfigurationError) else REFUSED)


@contextmanager
def failing_cleanly() -> Iterator[None]:
    """Turn a ledger error (or a store outage) raised inside into :func:`fail_with`'s line
    and exit code; anything else is a bug, and keeps its traceback."""
    try:
        yield
    except SlotLedgerError as e:
        raise fail_with(e) from None
    except Exception as e:
        if (outage := store_unavailable(e)) is None:
            raise
        raise fail_with(outage) from None


def run_guarded(action: Callable[[], T]) -> T:
    """``action()``, its ledger errors printed and exited as :func:`fail_with` does."""
    with failing_cleanly():
        return action()
