"""The output layer of every ``slotledger`` command: tables or NDJSON, notes, and errors.

Every command module imports this (never ``ledger.cli``, which imports them), so that all
commands print alike: a table by default, ``--json`` for NDJSON, "nothing found" is exit 0,
and a ledger error is one line ``error: <code>: <detail>`` on stderr with exit 2 for bad
input or configuration and 1 for a refusal; a store that does not answer is such an error
too (``store_unavailable``, as the HTTP API's 503), not a traceback.

Tables fit the terminal (80 columns included): times are short and in UTC (``22:30:05``
today, ``12-01 22:30`` before), names stand where ids would, and only the free-text
columns wrap, inside their cells; nothing is cut off. Piped, with no ``COLUMNS`` set,
there is no width to fit, so no cell wraps and every row stays one line for ``grep``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Collection, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import fields, is_dataclass
from datetime import UTC, datetime
from enum import Enum
from typing import Annotated, Any, TypeVar

import typer
from rich import box
from rich.console import Console
from rich.table import Table

from ledger.errors import BadInput, ConfigurationError, SlotLedgerError, store_unavailable
from projections.jsonable import encode, jsonable

__all__ = [
    "BAD_INPUT",
    "REFUSED",
    "JsonOption",
    "asked_for_json",
    "console",
    "emit",
    "fail_with",
    "failing_cleanly",
    "ndjson",
    "note",
    "run_guarded",
    "short_time",
    "table",
]

BAD_INPUT = 2
"""Exit code of bad input and bad configuration (click's usage errors exit 2 too)."""
REFUSED = 1
"""Exit code of every other ledger error: the ledger refused the command."""
PIPED_WIDTH = 1000
"""The table width when stdout is no terminal and ``COLUMNS`` is unset: no wrapping."""

console = Console()
errors = Console(stderr=True)
T = TypeVar("T")

_JSON_ASKED = "slotledger.json"
"""Key in the click context's ``meta`` (shared by a command and its parents)."""


def _remember_json(context: typer.Context, value: bool) -> bool:
    if value:
        context.meta[_JSON_ASKED] = True
    return value


JsonOption = Annotated[
    bool,
    typer.Option("--json", help="NDJSON output, one object a line.", callback=_remember_json),
]
"""The one ``--json`` option of every command; it also keeps the notes off (see
:func:`asked_for_json`)."""


def asked_for_json(context: typer.Context) -> bool:
    """Whether this invocation (``context`` is any of its contexts) has ``--json``: its
    output is then for a program, and the notes for a person are left out."""
    return bool(context.meta.get(_JSON_ASKED))


def note(message: str) -> None:
    """One line for the person at the terminal, on stderr (never mixed into results)."""
    typer.echo(message, err=True)


def short_time(at: datetime, now: datetime | None = None) -> str:
    """An instant as a table shows it, in UTC: ``22:30:05`` today, ``12-01 22:30``
    earlier this year, ``2025-12-01 22:30`` before that (``--json`` has them in full)."""
    at = (at if at.tzinfo else at.replace(tzinfo=UTC)).astimezone(UTC)
    today = (now or datetime.now(UTC)).astimezone(UTC)
    if at.date() == today.date():
        return f"{at:%H:%M:%S}"
    return f"{at:%m-%d %H:%M}" if at.year == today.year else f"{at:%Y-%m-%d %H:%M}"


def _cell(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, datetime):
        return short_time(value)
    if isinstance(value, Enum):
        return str(value.value)
    return str(value)


def _screen() -> Console:
    screen = Console()
    return screen if screen.is_terminal or "COLUMNS" in os.environ else Console(width=PIPED_WIDTH)


def table(
    title: str,
    columns: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    wrap: Collection[str] = (),
    header: bool = True,
) -> None:
    """Print rows under ``columns``, after their title on a line of its own (as wide as
    the screen, not the table). Only the columns named in ``wrap`` (free text, bot ids)
    wrap inside their cells; the others (times, names, statuses, numbers) never do. A
    table with times says they are UTC in its title."""
    rows = [list(row) for row in rows]
    if any(isinstance(value, datetime) for row in rows for value in row):
        title = f"{title} (times in UTC)" if title else "times in UTC"
    shown = Table(
        box=box.SIMPLE_HEAD,
        show_header=header,
        show_edge=False,
        pad_edge=False,
        collapse_padding=True,
    )
    for column in columns:
        shown.add_column(column, no_wrap=column not in wrap, overflow="fold")
    for row in rows:
        shown.add_row(*(_cell(value) for value in row))
    screen = _screen()
    if title:
        screen.print(title, markup=False, highlight=False)
    screen.print(shown)


def ndjson(records: Iterable[object]) -> None:
    """One JSON object a line, in the one JSON encoding (:mod:`projections.jsonable`)."""
    for record in records:
        typer.echo(json.dumps(jsonable(record), default=encode))


def _fields(record: object) -> dict[str, Any]:
    """A record's fields and their values (not yet encoded): a mapping, a named tuple or
    a dataclass."""
    if isinstance(record, Mapping):
        return dict(record)
    if is_dataclass(record) and not isinstance(record, type):
        return {f.name: getattr(record, f.name) for f in fields(record)}
    as_dict: Callable[[], dict[str, Any]] = record._asdict  # type: ignore[attr-defined]
    return as_dict()


def emit(
    rows: Iterable[object],
    *,
    as_json: bool,
    title: str = "",
    empty: str = "nothing found",
    columns: Sequence[str] = (),
    wrap: Collection[str] = (),
) -> None:
    """Print records as NDJSON, or as a table of ``columns`` (default: every field; one
    record without ``columns`` is shown field by field); an empty result says so, exit 0."""
    records = [_fields(r) for r in rows]  # one record's values wrap: steps, reasons
    if as_json:
        ndjson(records)
    elif not records:
        console.print(empty, markup=False, highlight=False)
    elif len(records) == 1 and not columns:
        table(title, ["field", "value"], records[0].items(), header=False, wrap={"value"})
    else:
        chosen = columns or list(records[0])
        table(title, chosen, ([r.get(c) for c in chosen] for r in records), wrap=wrap)


def fail_with(error: SlotLedgerError) -> typer.Exit:
    """One line on stderr, ``error: <code>: <detail>``; the exit for the caller to raise."""
    detail = " ".join(error.detail.split())  # one line, whatever the detail holds
    errors.print(f"error: {error.code}: {detail}", markup=False, highlight=False, soft_wrap=True)
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
