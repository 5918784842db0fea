"""``make bench``: every benchmark figure in one run, as a table and as JSON.

    python -m benchmarks.run [--quick] [--json-out PATH] [--database-url URL]

Write side (``benchmarks.write_side``): acquire -> release cycles against the status-column
baseline, acquire latency, the physical insert rate, aggregate load times. Read side
(``benchmarks.read_side``, PostgreSQL only): rebuild rate, live lag, time travel. Peak
memory closes the table. ``--quick`` uses small sizes and also runs on SQLite
(``--database-url sqlite:///path/bench.db``). Results go to ``bench-results/<timestamp>.json``
unless ``--json-out`` says otherwise, for comparison across runs.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sqlite3
import sys
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from rich.console import Console, JustifyMethod
from rich.table import Table

from benchmarks import read_side
from benchmarks.write_side import (
    Figure,
    WriteSideSizes,
    cycle_figures,
    insert_figures,
    load_figures,
    memory_figures,
)
from ledger.settings import PostgresStore, parse_database_url

__all__ = ["machine", "main", "read_side_figures", "render"]

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
READ_SIDE_EVENTS = 1_000_000

console = Console(stderr=True)


def machine(database_url: str) -> dict[str, Any]:
    """What the figures were measured on."""
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    memory_gib = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    info: dict[str, Any] = {
        "host": platform.node(),
        "os": platform.platform(),
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(memory_gib, 1),
        "python": platform.python_version(),
        "load_average_1_5_15": [round(x, 2) for x in os.getloadavg()],
    }
    store = parse_database_url(database_url)
    if isinstance(store, PostgresStore):
        with psycopg.connect(store.conninfo()) as conn:
            for setting in ("server_version", "fsync", "synchronous_commit", "shared_buffers"):
                row = conn.execute(f"SHOW {setting}").fetchone()
                info[f"postgres_{setting}"] = row[0] if row else None
    else:
        info["database"] = f"SQLite {sqlite3.sqlite_version} (WAL)"
    return info


@dataclass(frozen=True)
class _ReadSideFigure:
    """How one key of ``read_side.main``'s result becomes a figure."""

    key: str
    name: str
    unit: str
    size: Callable[[Mapping[str, Any]], str]
    target: str = ""
    meets: Callable[[float], bool] | None = None


def _events(raw: Mapping[str, Any]) -> str:
    return f"{raw.get('events', 0):,} events"


def _live(raw: Mapping[str, Any]) -> str:
    return (
        f"{raw.get('live_commands', 0):,} commands at "
        f"{raw.get('live_commands_per_s', 0)} commands/s (target rate 200/s)"
    )


_READ_SIDE: tuple[_ReadSideFigure, ...] = (
    _ReadSideFigure(
        "rebuild_events_per_s",
        "rebuild",
        "events/s",
        lambda r: f"{r.get('rebuild_events', 0):,} events",
        ">= 100,000/s",
        lambda v: v >= 100_000,
    ),
    _ReadSideFigure("live_lag_p50_ms", "live lag p50", "ms", _live),
    _ReadSideFigure("live_lag_p99_ms", "live lag p99", "ms", _live, "<= 50 ms", lambda v: v <= 50),
    _ReadSideFigure(
        "pool_at_median_ms", "pool_at(t) median", "ms", _events, "<= 200 ms", lambda v: v <= 200
    ),
    _ReadSideFigure("pool_at_max_ms", "pool_at(t) max", "ms", _events),
)


def read_side_figures(raw: Mapping[str, Any]) -> list[Figure]:
    """The read-side result as figures; a key the read side no longer returns is
    reported, not guessed."""
    figures = []
    for spec in _READ_SIDE:
        if spec.key not in raw:
            console.print(f"[yellow]read side returned no {spec.key!r}; figure left out")
            continue
        value = float(raw[spec.key])
        met = spec.meets(value) if spec.meets else None
        figures.append(
            Figure("read side", spec.name, value, spec.unit, spec.size(raw), spec.target, met)
        )
    return figures


def _postgres_base_url(database_url: str) -> str:
    """The server URL without the ``schema`` query: the read side makes its own schema."""
    return urlsplit(database_url)._replace(query="").geturl()


def _format(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    return f"{value:.1f}" if abs(value) >= 10 else f"{value:.2f}"


_COLUMNS: tuple[tuple[str, JustifyMethod], ...] = (
    ("section", "left"),
    ("figure", "left"),
    ("value", "right"),
    ("unit", "left"),
    ("size", "left"),
    ("target", "left"),
    ("met", "center"),
)


def render(figures: list[Figure], title: str) -> Table:
    table = Table(title=title, title_justify="left")
    for column, justify in _COLUMNS:
        table.add_column(column, justify=justify)
    for f in figures:
        met = "" if f.met is None else ("yes" if f.met else "[bold red]NO")
        table.add_row(f.section, f.name, _format(f.value), f.unit, f.size, f.target, met)
    return table


def _title(
    database: str, quick: bool, started: datetime, duration: float, info: dict[str, Any]
) -> str:
    """Where, when and on what the figures were measured."""
    store = (
        f"PostgreSQL {info['postgres_server_version']} (fsync {info['postgres_fsync']}, "
        f"synchronous_commit {info['postgres_synchronous_commit']})"
        if "postgres_server_version" in info
        else info.get("database", "")
    )
    return (
        f"slotledger {'quick ' if quick else ''}benchmarks on {database}, "
        f"{started:%Y-%m-%d %H:%M} UTC, {duration:.0f} s\n"
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, load "
        f"{info['load_average_at_start'][0]:.1f} at start and "
        f"{info['load_average_1_5_15'][0]:.1f} at end, Python {info['python']}, {store}"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    parser.add_argument("--json-out", type=Path, help="where to write the JSON results")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LEDGER_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="postgresql://... (scratch schemas bench_*) or sqlite:///path (scratch files)",
    )
    args = parser.parse_args(argv)
    store = parse_database_url(args.database_url)
    started, began = datetime.now(UTC), time.monotonic()
    load_at_start = os.getloadavg()

    def log(message: str) -> None:
        console.log(f"[{time.monotonic() - began:6.1f}s] {message}")

    sizes = WriteSideSizes.quick() if args.quick else WriteSideSizes()
    figures = [
        *cycle_figures(args.database_url, sizes, log),
        *insert_figures(args.database_url, sizes, log),
        *load_figures(args.database_url, sizes, log),
        *memory_figures("after write side"),
    ]
    raw_read_side: dict[str, Any] | None = None
    if isinstance(store, PostgresStore):
        log("read side (benchmarks.read_side)")
        os.environ["LEDGER_BENCH_POSTGRES_URL"] = _postgres_base_url(args.database_url)
        raw_read_side = read_side.main(READ_SIDE_EVENTS, args.quick)
        figures += [*read_side_figures(raw_read_side), *memory_figures("end of run")]
    else:
        log("read side skipped: benchmarks.read_side runs on PostgreSQL only")

    info = machine(args.database_url) | {"load_average_at_start": list(load_at_start)}
    duration = time.monotonic() - began
    title = _title(store.redacted(), args.quick, started, duration, info)
    Console(width=200).print(render(figures, title))

    out = args.json_out or Path("bench-results") / f"{started:%Y%m%dT%H%M%SZ}.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "started_at": started.isoformat(),
        "duration_s": round(duration, 1),
        "quick": args.quick,
        "database": store.redacted(),
        "machine": info,
        "sizes": asdict(sizes),
        "figures": [asdict(f) for f in figures],
        "read_side": raw_read_side,
    }
    out.write_text(json.dumps(document, indent=2, allow_nan=True) + "\n")
    console.print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
