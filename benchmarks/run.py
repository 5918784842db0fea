"""``make bench``: every benchmark figure in one run, as a table and as JSON.

    python -m benchmarks.run [--quick] [--json-out PATH] [--database-url URL]

Write side (``benchmarks.write_side``): acquire -> release cycles against the status-column
baseline, acquire latency, the physical insert rate, aggregate load times. Read side
(``benchmarks.read_side``, PostgreSQL only): rebuild rate, live lag, time travel. HTTP
(``benchmarks.http_side``, needs ``wrk``): ``slotledger serve`` against the status-column
HTTP baseline, 1 and 3 servers on PostgreSQL and 1 on SQLite. Peak memory closes the
table. ``--quick`` uses small sizes and also runs on SQLite (``--database-url
sqlite:///path/bench.db``; the PostgreSQL setups are left out then).

The results go to ``benchmarks/results/latest.json`` (``latest-quick.json`` with
``--quick``) unless ``--json-out`` says otherwise: the machine (CPU, cores, memory,
Python, PostgreSQL), the load average before and after each section, and every figure
with its size and baseline. The run ends with the results table, then the same figures
as the README's performance table (Markdown).
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
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from rich.console import Console, JustifyMethod
from rich.table import Table

from benchmarks import http_side, read_side
from benchmarks.write_side import (
    Figure,
    WriteSideSizes,
    cycle_figures_of,
    cycle_results,
    insert_figures,
    load_figures,
    memory_figures,
)
from ledger.settings import PostgresStore, parse_database_url

__all__ = ["Row", "machine", "main", "read_side_figures", "readme_rows", "readme_table", "render"]

DEFAULT_DATABASE_URL = "postgresql://postgres@127.0.0.1:5432/test"
READ_SIDE_EVENTS = 1_000_000
RESULTS = Path(__file__).with_name("results")

console = Console(stderr=True)
SECTIONS = ("write side", "read side", "http")


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


def _store(info: Mapping[str, Any]) -> str:
    if "postgres_server_version" in info:
        return (
            f"PostgreSQL {info['postgres_server_version']} (fsync {info['postgres_fsync']}, "
            f"synchronous_commit {info['postgres_synchronous_commit']})"
        )
    return str(info.get("database", ""))


def _loads(sections: list[Section]) -> str:
    """The 1-minute load average at the start and end of each section."""
    return ", ".join(f"{s.name} {s.load_before[0]:.1f}->{s.load_after[0]:.1f}" for s in sections)


def _title(
    database: str,
    quick: bool,
    started: datetime,
    duration: float,
    info: dict[str, Any],
    sections: list[Section],
) -> str:
    """Where, when and on what the figures were measured."""
    return (
        f"slotledger {'quick ' if quick else ''}benchmarks on {database}, "
        f"{started:%Y-%m-%d %H:%M} UTC, {duration:.0f} s\n"
        f"{info['cpu']}, {info['cores']} cores, {info['memory_gib']} GiB, "
        f"Python {info['python']}, {_store(info)}\n"
        f"load average (1 min) by section: {_loads(sections)}"
    )


@dataclass
class Section:
    """One part of the run, with the load average (1, 5, 15 min) around it."""

    name: str
    load_before: list[float]
    load_after: list[float] = field(default_factory=list)
    duration_s: float = 0.0


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


@dataclass(frozen=True)
class Row:
    """One line of the README's performance table."""

    figure: str
    slotledger: str
    baseline: str = ""
    ratio: str = ""
    """The ratio to the baseline, or the target where there is no baseline."""


def _value(f: Figure) -> str:
    unit = "" if f.unit == "x" else f" {f.unit}"
    return f"{_format(f.value)}{unit}"


def _met(f: Figure) -> str:
    if f.met is None:
        return f.target
    return f"{f.target} ({'met' if f.met else 'NOT met'})"


def readme_rows(figures: list[Figure]) -> list[Row]:
    """The figures as README rows. A ratio figure ``A / B (mode)`` makes one row of A's
    value, B's value and the ratio (the write side names its figures so); any other
    figure with a target makes a row with its target; the HTTP side makes its own. A
    section that names its figures otherwise gives fewer rows, never wrong ones."""
    by_name = {(f.section, f.name): f for f in figures}
    rows: list[Row] = []
    paired: set[tuple[str, str]] = set()
    for f in figures:
        if f.section == http_side.SECTION or f.unit != "x" or " / " not in f.name:
            continue
        system, _, rest = f.name.partition(" / ")
        mode = rest[rest.rfind(" (") :] if " (" in rest else ""
        ours, theirs = by_name.get((f.section, system + mode)), by_name.get((f.section, rest))
        if ours is None or theirs is None:
            continue
        paired |= {(f.section, f.name), (f.section, ours.name)}
        ratio = f"{_format(f.value)}x" + (f" ({_met(f)})" if f.target else "")
        rows.append(Row(f"{ours.name}; {ours.size}", _value(ours), _value(theirs), ratio))
    for f in figures:
        if f.section == http_side.SECTION or not f.target or (f.section, f.name) in paired:
            continue
        rows.append(Row(f"{f.name}; {f.size}", _value(f), "", _met(f)))
    return rows


def readme_table(rows: list[Row]) -> str:
    """The rows in the README's Markdown table format."""
    lines = ["| figure | slotledger | status column | ratio / target |", "|---|---|---|---|"]
    lines += [f"| {r.figure} | {r.slotledger} | {r.baseline} | {r.ratio} |" for r in rows]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--quick", action="store_true", help="small sizes (under a minute)")
    parser.add_argument("--json-out", type=Path, help="where to write the JSON results")
    parser.add_argument(
        "--database-url",
        default=os.environ.get("LEDGER_BENCH_DATABASE_URL", DEFAULT_DATABASE_URL),
        help="postgresql://... (scratch schemas bench_*) or sqlite:///path (scratch files)",
    )
    parser.add_argument(
        "--skip", action="append", choices=SECTIONS, default=[], help="leave a section out"
    )
    args = parser.parse_args(argv)
    store = parse_database_url(args.database_url)
    postgres = isinstance(store, PostgresStore)
    started, began = datetime.now(UTC), time.monotonic()
    sections: list[Section] = []

    def log(message: str) -> None:
        console.log(f"[{time.monotonic() - began:6.1f}s] {message}")

    def run(name: str, measure: Callable[[], list[Figure]]) -> list[Figure]:
        if name in args.skip:
            log(f"{name} skipped (--skip)")
            return []
        section = Section(name, _load())
        t0 = time.monotonic()
        try:
            return measure()
        finally:
            section.load_after, section.duration_s = _load(), round(time.monotonic() - t0, 1)
            sections.append(section)

    sizes = WriteSideSizes.quick() if args.quick else WriteSideSizes()
    http_sizes = http_side.HttpSizes.quick() if args.quick else http_side.HttpSizes()
    raw: dict[str, Any] = {}

    def write() -> list[Figure]:
        raw["write_side"] = cycle_results(args.database_url, sizes, log)
        return [
            *cycle_figures_of(raw["write_side"]),
            *insert_figures(args.database_url, sizes, log),
            *load_figures(args.database_url, sizes, log),
        ]

    def read() -> list[Figure]:
        if not postgres:
            log("read side skipped: benchmarks.read_side runs on PostgreSQL only")
            return []
        log("read side (benchmarks.read_side)")
        os.environ["LEDGER_BENCH_POSTGRES_URL"] = _postgres_base_url(args.database_url)
        raw["read_side"] = read_side.main(READ_SIDE_EVENTS, args.quick)
        return read_side_figures(raw["read_side"])

    def http() -> list[Figure]:
        setups = http_side.SETUPS if postgres else http_side.SQLITE_SETUPS
        figures, raw["http"] = http_side.http_figures(args.database_url, http_sizes, log, setups)
        return figures

    figures = [
        *run("write side", write),
        *memory_figures("after write side"),
        *run("read side", read),
        *run("http", http),
        *memory_figures("end of run"),
    ]

    info = machine(args.database_url)
    duration = time.monotonic() - began
    title = _title(store.redacted(), args.quick, started, duration, info, sections)
    Console(width=200).print(render(figures, title))
    rows = readme_rows(figures) + [Row(*r) for r in http_side.readme_rows(raw.get("http"))]
    print(f"\n{title}\n\n{readme_table(rows)}\n")

    out = args.json_out or RESULTS / ("latest-quick.json" if args.quick else "latest.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    document = {
        "started_at": started.isoformat(),
        "duration_s": round(duration, 1),
        "quick": args.quick,
        "database": store.redacted(),
        "machine": info,
        "sections": [asdict(s) for s in sections],
        "sizes": {"write_side": asdict(sizes), "http": asdict(http_sizes)},
        "figures": [asdict(f) for f in figures],
        "readme_table": [asdict(r) for r in rows],
        "write_side": raw.get("write_side"),
        "read_side": raw.get("read_side"),
        "http": raw.get("http"),
    }
    out.write_text(json.dumps(document, indent=2, allow_nan=True) + "\n")
    console.print(f"results written to {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
