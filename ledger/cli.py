"""The ``slotledger`` command line: a thin entrypoint over the bootstrap.

Tables by default, ``--json`` (NDJSON) for machines. Bad input exits 2 with one line on
stderr; a refused command (conflict) exits 1; "nothing found" is not an error (exit 0).
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, is_dataclass
from datetime import datetime
from enum import Enum
from typing import Annotated, Any, TypeVar
from uuid import UUID

import typer
from rich.console import Console
from rich.table import Table

from ledger.errors import BadInput, ConfigurationError, SlotLedgerError

__all__ = ["app", "emit", "fail_with", "main", "run_guarded"]

app = typer.Typer(
    name="slotledger",
    help="Event-sourced ledger for pools of pre-provisioned Coolify slots.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)
console = Console()
errors = Console(stderr=True)
T = TypeVar("T")

JsonOption = Annotated[bool, typer.Option("--json", help="NDJSON output, one object a line.")]


def _plain(value: Any) -> Any:
    if isinstance(value, UUID):
        return str(value)
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    if is_dataclass(value) and not isinstance(value, type):
        return {k: _plain(v) for k, v in asdict(value).items()}
    if isinstance(value, Mapping):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_plain(v) for v in value]
    return value


def emit(
    rows: Iterable[Any], *, as_json: bool, title: str = "", empty: str = "nothing found"
) -> None:
    """Print records as a rich table, or as NDJSON; an empty result says so, exit 0."""
    records = [_plain(r) for r in rows]
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
    """One line on stderr; exit 2 for bad input and configuration, 1 for refusals."""
    errors.print(
        f"error: {error.code}: {error.detail}", markup=False, highlight=False, soft_wrap=True
    )
    return typer.Exit(2 if isinstance(error, BadInput | ConfigurationError) else 1)


def run_guarded(action: Callable[[], T]) -> T:
    try:
        return action()
    except SlotLedgerError as e:
        raise fail_with(e) from None


def main() -> None:
    from ledger.commands import register_all  # imports this module: import it late

    register_all(app)
    app()
