"""Write-side figures of ``make bench``, each against a baseline measured in the same run.

- ``cycles``: acquire -> release cycles per second with N concurrent clients, Coolify
  excluded. slotledger (``SlotLedger.acquire`` + ``release``) against the origin system's
  status column (one ``UPDATE ... FOR UPDATE SKIP LOCKED`` to take the least recently used
  idle row, one ``UPDATE`` back to idle), same pool size, same duration, same database,
  one right after the other, in each cell: 1, 4 and 16 processes of one client each, and
  16 threads of one process (slotledger with group commit). Acquire latency is timed per
  call; the 1-minute load average is kept beside each run. :func:`cycle_results` returns
  it all as JSON-ready data, with slotledger's round trips per command.
- ``inserts``: single-row ``INSERT`` + commit with N clients: the physical ceiling of any
  design that commits once per command on this database.
- ``loads``: ``SlotLedger.get_slot`` (no aggregate cache) for a slot with a short and a
  long history; snapshots (every 50 events) keep the long one close to the short one.

Every measurement runs in a scratch place of its own (a fresh schema on PostgreSQL, a
fresh file on SQLite), dropped afterwards.
"""

from __future__ import annotations

import multiprocessing
import os
import resource
import sqlite3
import statistics
import tempfile
import threading
import time
from abc import ABC, abstractmethod
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from functools import partial
from multiprocessing.synchronize import Barrier as ProcessBarrier
from pathlib import Path
from typing import Any, ClassVar, Protocol
from urllib.parse import urlsplit
from uuid import UUID

import psycopg
from eventsourcing.application import project_aggregate
from psycopg import pq

from ledger.adapters.postgres import PostgresLedgerRecorder
from ledger.application import SlotLedger
from ledger.bootstrap import build_ledger
from ledger.domain import Slot, SlotStatus
from ledger.errors import SlotLedgerError
from ledger.settings import PostgresStore, SQLiteStore, load_settings, parse_database_url

__all__ = [
    "Cell",
    "Figure",
    "Samples",
    "WriteSideSizes",
    "cycle_cells",
    "cycle_figures",
    "cycle_figures_of",
    "cycle_results",
    "insert_figures",
    "load_figures",
    "measure",
    "memory_figures",
    "percentile",
    "round_trips",
    "scratch",
]

PLATFORM = "bench"
ACQUIRE_P99_TARGET_MS = 25.0


@dataclass(frozen=True)
class Figure:
    """One line of the results table: a value, what it measures, and at which size."""

    section: str
    name: str
    value: float
    unit: str
    size: str
    target: str = ""
    met: bool | None = None


@dataclass(frozen=True)
class WriteSideSizes:
    """How big and how long the write-side measurements are."""

    clients: int = 16
    """Client threads of the one-process cell (group commit)."""
    slots: int = 32
    seconds: float = 10.0
    processes: bool = True
    """Also run the cells of one client per process, one per count in ``process_counts``."""
    process_counts: tuple[int, ...] = (1, 4, 16)
    histories: tuple[int, int] = (10, 10_000)
    load_repeats: int = 200

    @classmethod
    def quick(cls) -> WriteSideSizes:
        return cls(seconds=2.0, processes=False, histories=(10, 2_000), load_repeats=50)


def percentile(values: Sequence[float], q: int) -> float:
    """The q-th percentile (inclusive method), or NaN without values."""
    if not values:
        return float("nan")
    if len(values) == 1:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


# --- scratch stores ------------------------------------------------------------------------


@contextmanager
def scratch(database_url: str, name: str) -> Iterator[str]:
    """A database URL for one measurement: a fresh schema on PostgreSQL, a fresh file
    beside the given one on SQLite; removed afterwards. Names carry the process id, so
    concurrent runs on one server never drop each other's tables."""
    store = parse_database_url(database_url)
    name = f"{name}_{os.getpid()}"
    if isinstance(store, SQLiteStore):
        path = Path(store.sibling(f"bench-{name}"))
        path.parent.mkdir(parents=True, exist_ok=True)
        _remove_sqlite(path)
        try:
            yield f"sqlite:///{path}"
        finally:
            _remove_sqlite(path)
        return
    assert isinstance(store, PostgresStore)
    schema = f"bench_{name}"
    drop = f"DROP SCHEMA IF EXISTS {schema} CASCADE"
    _run_sql(store.conninfo(), drop, f"CREATE SCHEMA {schema}")
    try:
        yield urlsplit(database_url)._replace(query=f"schema={schema}").geturl()
    finally:
        _run_sql(store.conninfo(), drop)


def _remove_sqlite(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def _run_sql(conninfo: str, *statements: str) -> None:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        for statement in statements:
            conn.execute(statement.encode())  # built from our own names, never input


# --- workloads -----------------------------------------------------------------------------


class Connection(Protocol):
    """What the baselines need of a DB-API connection (psycopg and sqlite3 both fit)."""

    def execute(self, query: Any, params: Any = ..., /) -> Any: ...

    def close(self) -> None: ...


def connect(url: str) -> Connection:
    """An autocommit connection to the scratch store, for the hand-written baselines."""
    store = parse_database_url(url)
    if isinstance(store, SQLiteStore):
        conn = sqlite3.connect(
            store.path, isolation_level=None, timeout=30, check_same_thread=False
        )
        conn.execute("PRAGMA journal_mode=WAL")
        return conn
    assert isinstance(store, PostgresStore)
    return psycopg.connect(
        store.conninfo(), autocommit=True, options=f"-c search_path={store.schema}"
    )


class Workload(ABC):
    """One process's share of a measurement: state shared by its client threads, and one
    client's unit of work (a cycle, or an insert)."""

    name: ClassVar[str]

    @abstractmethod
    def __init__(self, url: str, clients: int, slots: int) -> None:
        """Open what ``clients`` client threads share in this process."""

    @classmethod
    @abstractmethod
    def prepare(cls, url: str, slots: int) -> None:
        """Create what the clients work on, once, before any client starts."""

    @abstractmethod
    def step(self, client: int) -> float | None:
        """One unit of work; returns the acquire latency in ms when there is one."""

    @abstractmethod
    def close(self) -> None: ...


def _bench_ledger(url: str, slots: int, connections: int) -> SlotLedger:
    return build_ledger(
        load_settings(
            database_url=url,
            max_pool_size=slots,
            default_platform=PLATFORM,
            postgres_pool_size=connections,
            postgres_max_overflow=2,
        )
    )


class LedgerCycle(Workload):
    """slotledger's acquire -> release, through the application's commands."""

    name = "slotledger"

    @classmethod
    def prepare(cls, url: str, slots: int) -> None:
        ledger = _bench_ledger(url, slots, 1)
        try:
            for _ in range(slots):
                ledger.provision(PLATFORM, ctx=ledger.context("operator"))
        finally:
            ledger.close()

    def __init__(self, url: str, clients: int, slots: int) -> None:
        self.ledger = _bench_ledger(url, slots, clients)

    def step(self, client: int) -> float:
        bot = f"bench-{client}"
        started = time.perf_counter()
        self.ledger.acquire(bot)
        latency = (time.perf_counter() - started) * 1000
        self.ledger.release(bot)
        return latency

    def close(self) -> None:
        self.ledger.close()


class LedgerGroupCycle(LedgerCycle):
    """The same commands as the service runs them: concurrent callers of one process
    share transactions (``SlotLedger.enable_group_commit``)."""

    name = "slotledger (group commit)"

    def __init__(self, url: str, clients: int, slots: int) -> None:
        super().__init__(url, clients, slots)
        self.ledger.enable_group_commit()


class NoIdleRow(SlotLedgerError):
    """The status-column baseline found no idle row it could lock."""

    code = "no_idle_row"


class _SqlWorkload(Workload):
    """A hand-written baseline: one connection per client, SQL for both backends
    (written with ``%s`` placeholders; SQLite gets ``?``)."""

    ddl: ClassVar[dict[str, tuple[str, ...]]]

    def __init__(self, url: str, clients: int, slots: int) -> None:
        self.url = url
        self.sqlite = isinstance(parse_database_url(url), SQLiteStore)
        self._connections: dict[int, Connection] = {}

    @classmethod
    def prepare(cls, url: str, slots: int) -> None:
        conn = connect(url)
        backend = "sqlite" if isinstance(conn, sqlite3.Connection) else "postgres"
        try:
            for statement in cls.ddl[backend]:
                conn.execute(statement.format(slots=slots))
        finally:
            conn.close()

    def execute(self, client: int, sql: str, params: Sequence[Any]) -> Any:
        conn = self._connections.get(client)
        if conn is None:
            conn = self._connections[client] = connect(self.url)
        return conn.execute(sql.replace("%s", "?") if self.sqlite else sql, params)

    def close(self) -> None:
        for conn in self._connections.values():
            conn.close()


class StatusColumnCycle(_SqlWorkload):
    """The origin system: a status column in a table of its own, a least recently used
    idle row taken with ``FOR UPDATE SKIP LOCKED`` (SQLite serialises writers instead)."""

    name = "status column"
    ddl: ClassVar[dict[str, tuple[str, ...]]] = {
        "postgres": (
            "CREATE TABLE slots (id serial PRIMARY KEY, status text NOT NULL, bot text, "
            "last_used timestamptz)",
            "CREATE INDEX slots_idle ON slots (last_used) WHERE status = 'idle'",
            "INSERT INTO slots (status) SELECT 'idle' FROM generate_series(1, {slots})",
        ),
        "sqlite": (
            "CREATE TABLE slots (id INTEGER PRIMARY KEY, status TEXT NOT NULL, bot TEXT, "
            "last_used TEXT)",
            "CREATE INDEX slots_idle ON slots (last_used) WHERE status = 'idle'",
            "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < {slots}) "
            "INSERT INTO slots (status) SELECT 'idle' FROM n",
        ),
    }
    ACQUIRE: ClassVar[dict[bool, str]] = {
        False: "UPDATE slots SET status = 'deploying', bot = %s WHERE id = (SELECT id FROM slots "
        "WHERE status = 'idle' ORDER BY last_used NULLS FIRST LIMIT 1 FOR UPDATE SKIP LOCKED) "
        "RETURNING id",
        True: "UPDATE slots SET status = 'deploying', bot = %s WHERE id = (SELECT id FROM slots "
        "WHERE status = 'idle' ORDER BY last_used NULLS FIRST LIMIT 1) RETURNING id",
    }
    RELEASE: ClassVar[dict[bool, str]] = {
        False: "UPDATE slots SET status = 'idle', bot = NULL, last_used = now() WHERE id = %s",
        True: "UPDATE slots SET status = 'idle', bot = NULL, "
        "last_used = strftime('%Y-%m-%dT%H:%M:%f', 'now') WHERE id = %s",
    }

    def step(self, client: int) -> float:
        started = time.perf_counter()
        row = self.execute(client, self.ACQUIRE[self.sqlite], (f"bench-{client}",)).fetchone()
        latency = (time.perf_counter() - started) * 1000
        if row is None:
            raise NoIdleRow("every idle row was locked")
        self.execute(client, self.RELEASE[self.sqlite], (row[0],))
        return latency


class InsertCommit(_SqlWorkload):
    """The physical reference: one single-row INSERT committed per step."""

    name = "insert+commit"
    ddl: ClassVar[dict[str, tuple[str, ...]]] = {
        "postgres": (
            "CREATE TABLE inserts (id bigserial PRIMARY KEY, client int NOT NULL, "
            "at timestamptz NOT NULL DEFAULT now())",
        ),
        "sqlite": (
            "CREATE TABLE inserts (id INTEGER PRIMARY KEY, client INTEGER NOT NULL, "
            "at TEXT NOT NULL DEFAULT CURRENT_TIMESTAMP)",
        ),
    }

    def step(self, client: int) -> None:
        self.execute(client, "INSERT INTO inserts (client) VALUES (%s)", (client,))


WORKLOADS: dict[str, type[Workload]] = {
    w.name: w for w in (LedgerCycle, LedgerGroupCycle, StatusColumnCycle, InsertCommit)
}


# --- running clients -----------------------------------------------------------------------


@dataclass
class Samples:
    """What a group of clients measured: completed steps, wall time, acquire latencies,
    and errors by type (a step that raised is not counted)."""

    steps: int = 0
    elapsed_s: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    errors: Counter[str] = field(default_factory=Counter)

    def merge(self, other: Samples) -> Samples:
        return Samples(
            self.steps + other.steps,
            max(self.elapsed_s, other.elapsed_s),
            self.latencies_ms + other.latencies_ms,
            self.errors + other.errors,
        )

    @property
    def rate(self) -> float:
        return self.steps / self.elapsed_s if self.elapsed_s else 0.0


def _drive(
    kind: str,
    url: str,
    clients: Sequence[int],
    slots: int,
    seconds: float,
    processes: ProcessBarrier | None,
) -> Samples:
    """Run some clients in threads of this process: each warms up with one step, all
    start together (with the other processes' clients too), and stop after ``seconds``."""
    workload = WORKLOADS[kind](url, len(clients), slots)
    start: list[float] = []

    def go() -> None:
        if processes is not None:
            processes.wait(timeout=300)
        start.append(time.monotonic())

    barrier = threading.Barrier(len(clients), action=go)
    results: list[Samples] = []

    def client(index: int) -> None:
        workload.step(index)
        barrier.wait(timeout=300)
        samples, stop = Samples(), start[0] + seconds
        while time.monotonic() < stop:
            try:
                latency = workload.step(index)
            except SlotLedgerError as e:
                samples.errors[type(e).__name__] += 1
                continue
            samples.steps += 1
            if latency is not None:
                samples.latencies_ms.append(latency)
        samples.elapsed_s = time.monotonic() - start[0]
        results.append(samples)

    threads = [threading.Thread(target=client, args=(i,), daemon=True) for i in clients]
    try:
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    finally:
        workload.close()
    merged = Samples()
    for samples in results:
        merged = merged.merge(samples)
    return merged


def _process_main(
    kind: str,
    url: str,
    clients: Sequence[int],
    slots: int,
    seconds: float,
    processes: ProcessBarrier,
    results: Any,
) -> None:
    """Entry point of one client process (importable under ``spawn``)."""
    results.put(_drive(kind, url, clients, slots, seconds, processes))


def measure(
    kind: str, url: str, *, clients: int, slots: int, seconds: float, processes: int = 1
) -> Samples:
    """Prepare a scratch store for one workload and run ``clients`` clients on it for
    ``seconds``, as threads of this process or spread over ``processes`` processes."""
    WORKLOADS[kind].prepare(url, slots)
    if processes == 1:
        return _drive(kind, url, range(clients), slots, seconds, None)
    context = multiprocessing.get_context("spawn")
    barrier = context.Barrier(processes)
    queue = context.Queue()
    shares = [range(clients)[i::processes] for i in range(processes)]
    workers = [
        context.Process(
            target=_process_main,
            args=(kind, url, share, slots, seconds, barrier, queue),
            daemon=True,
        )
        for share in shares
    ]
    for worker in workers:
        worker.start()
    merged = Samples()
    try:
        for _ in workers:
            merged = merged.merge(queue.get(timeout=seconds + 300))
    finally:
        for worker in workers:
            worker.join(timeout=30)
            if worker.is_alive():
                worker.kill()
    return merged


# --- figures -------------------------------------------------------------------------------


def _with_errors(size: str, samples: Samples) -> str:
    if not samples.errors:
        return size
    return size + "; errors: " + ", ".join(f"{k} x{n}" for k, n in samples.errors.items())


@dataclass(frozen=True)
class Cell:
    """One comparison: slotledger and the status column with the same clients, one after
    the other in the same run: threads of one process (the service, with group commit)
    or one client per process (many service instances, where group commit has nothing
    to batch)."""

    clients: int
    processes: bool

    @property
    def workload(self) -> str:
        return LedgerCycle.name if self.processes else LedgerGroupCycle.name

    @property
    def label(self) -> str:
        if not self.processes:
            return f"{self.clients} threads"
        return f"{self.clients} process" + ("es" if self.clients > 1 else "")


def cycle_cells(sizes: WriteSideSizes) -> list[Cell]:
    """The process counts, then the threads of one process."""
    counts = sizes.process_counts if sizes.processes else ()
    return [*(Cell(n, True) for n in counts), Cell(sizes.clients, False)]


def _load_1m() -> float:
    return round(os.getloadavg()[0], 2)


def _cycle_run(
    kind: str, database_url: str, cell: Cell, sizes: WriteSideSizes, log: Callable[[str], None]
) -> dict[str, Any]:
    """One workload of a cell on a fresh scratch store, with the load around it."""
    log(f"cycles: {kind}, {cell.label}, {sizes.slots} slots, {sizes.seconds:g} s")
    before = _load_1m()
    with scratch(database_url, "cycles") as url:
        samples = measure(
            kind,
            url,
            clients=cell.clients,
            slots=sizes.slots,
            seconds=sizes.seconds,
            processes=cell.clients if cell.processes else 1,
        )
    return {
        "workload": kind,
        "cycles": samples.steps,
        "elapsed_s": round(samples.elapsed_s, 3),
        "cycles_per_s": samples.rate,
        "acquires": len(samples.latencies_ms),
        "acquire_p50_ms": percentile(samples.latencies_ms, 50),
        "acquire_p99_ms": percentile(samples.latencies_ms, 99),
        "errors": dict(samples.errors),
        "load_1m_before": before,
        "load_1m_after": _load_1m(),
    }


def cycle_results(
    database_url: str, sizes: WriteSideSizes, log: Callable[[str], None]
) -> dict[str, Any]:
    """Every cell's two runs, the ratio of their rates, and slotledger's round trips per
    command: JSON-ready (``benchmarks/results/latest.json``), read back by
    :func:`cycle_figures_of`."""
    cells = []
    for cell in cycle_cells(sizes):
        ours = _cycle_run(cell.workload, database_url, cell, sizes, log)
        baseline = _cycle_run(StatusColumnCycle.name, database_url, cell, sizes, log)
        rate = baseline["cycles_per_s"]
        cells.append(
            {
                "label": cell.label,
                "clients": cell.clients,
                "processes": cell.clients if cell.processes else 1,
                "slotledger": ours,
                "status_column": baseline,
                "ratio": ours["cycles_per_s"] / rate if rate else float("nan"),
            }
        )
    return {
        "slots": sizes.slots,
        "seconds": sizes.seconds,
        "targets": {"ratio": 1.0, "acquire_p99_ms": ACQUIRE_P99_TARGET_MS},
        "cells": cells,
        "round_trips": round_trips(database_url, log),
    }


def _run_figures(run: Mapping[str, Any], name: str, size: str, target: bool) -> list[Figure]:
    load = f"load {run['load_1m_before']:.1f}->{run['load_1m_after']:.1f}"
    errors = "".join(f"; errors: {k} x{n}" for k, n in run["errors"].items())
    acquires = f"{run['acquires']:,} acquires; {size}; {load}"
    p99 = run["acquire_p99_ms"]
    return [
        Figure(
            "cycles",
            name,
            run["cycles_per_s"],
            "cycles/s",
            f"{run['cycles']:,} cycles; {size}; {load}{errors}",
        ),
        Figure("latency", f"{name} acquire p50", run["acquire_p50_ms"], "ms", acquires),
        Figure(
            "latency",
            f"{name} acquire p99",
            p99,
            "ms",
            acquires,
            f"<= {ACQUIRE_P99_TARGET_MS:g} ms" if target else "",
            p99 <= ACQUIRE_P99_TARGET_MS if target else None,
        ),
    ]


def cycle_figures_of(results: Mapping[str, Any]) -> list[Figure]:
    """The figures of :func:`cycle_results`: per cell each rate, the ratio, acquire p50
    and p99 (named ``A (cell)``, ``B (cell)`` and ``A / B (cell)``, as the README table
    pairs them), then the round trips."""
    figures = []
    for cell in results["cells"]:
        size = f"{cell['label']}, {results['slots']} slots, {results['seconds']:g} s"
        ours, baseline = cell["slotledger"], cell["status_column"]
        mine = f"{ours['workload']} ({cell['label']})"
        theirs = f"{baseline['workload']} ({cell['label']})"
        figures += _run_figures(ours, mine, size, target=True)
        figures += _run_figures(baseline, theirs, size, target=False)
        figures.append(
            Figure(
                "cycles",
                f"{ours['workload']} / {theirs}",
                cell["ratio"],
                "x",
                size,
                ">= 1.0",
                cell["ratio"] >= 1.0,
            )
        )
    trips = results["round_trips"]
    figures += [
        Figure(
            "round trips",
            f"slotledger {command}",
            float(n),
            "round trips",
            "one command, one client, pooled connections' checks included",
        )
        for command, n in trips.items()
    ]
    return figures


def cycle_figures(
    database_url: str, sizes: WriteSideSizes, log: Callable[[str], None]
) -> list[Figure]:
    """slotledger against the status column in every cell (:func:`cycle_results`)."""
    return cycle_figures_of(cycle_results(database_url, sizes, log))


def _client_waits(trace: str) -> int:
    """Round trips in a libpq trace: each time the server answers what the client sent
    since its last answer (a pipeline's many statements are one)."""
    waits, sending = 0, False
    for line in trace.splitlines():
        if line.startswith("F"):
            sending = True
        elif line.startswith("B") and sending:
            waits, sending = waits + 1, False
    return waits


def round_trips(database_url: str, log: Callable[[str], None]) -> dict[str, int]:
    """Round trips of one acquire and one release on PostgreSQL (libpq's trace of the
    ledger's one pooled connection), after a warm-up that leaves both slots in the
    process's cache, as a busy process has them; empty on SQLite."""
    if not isinstance(parse_database_url(database_url), PostgresStore):
        return {}
    log("round trips: one acquire, one release")
    counts = {}
    with scratch(database_url, "trips") as url:
        LedgerCycle.prepare(url, 2)
        ledger = build_ledger(
            load_settings(
                database_url=url,
                max_pool_size=2,
                default_platform=PLATFORM,
                postgres_pool_size=1,
                postgres_max_overflow=0,
            )
        )
        recorder = ledger.recorder
        assert isinstance(recorder, PostgresLedgerRecorder)
        pool = recorder.datastore.pool
        try:
            for _ in range(2):  # each cycle takes the other slot: both are cached after
                ledger.acquire("trips")
                ledger.release("trips")
            for command in ("acquire", "release"):
                with tempfile.TemporaryFile("w+") as trace:
                    with pool.connection() as conn:  # traced from its next use on
                        conn.pgconn.trace(trace.fileno())
                        conn.pgconn.set_trace_flags(pq.Trace.SUPPRESS_TIMESTAMPS)
                    getattr(ledger, command)("trips")
                    conn.pgconn.untrace()  # the pool's one connection, not checked out again
                    trace.seek(0)
                    counts[command] = _client_waits(trace.read())
        finally:
            ledger.close()
    return counts


def insert_figures(
    database_url: str, sizes: WriteSideSizes, log: Callable[[str], None]
) -> list[Figure]:
    """The database's single-row insert-and-commit rate with the same number of clients."""
    log(f"inserts: {sizes.clients} clients in threads, {sizes.seconds:g} s")
    with scratch(database_url, "inserts") as url:
        samples = measure(
            InsertCommit.name, url, clients=sizes.clients, slots=0, seconds=sizes.seconds
        )
    size = f"{samples.steps:,} rows; {sizes.clients} clients (threads), {sizes.seconds:g} s"
    return [
        Figure("physical", "insert+commit/s", samples.rate, "rows/s", _with_errors(size, samples))
    ]


SNAPSHOT_INTERVAL = SlotLedger.snapshotting_intervals[Slot]


def _grow(ledger: SlotLedger, slot: Slot, events: int, chunk: int = 500) -> None:
    """Acquire and release the slot until its history has ``events`` events, saving in
    chunks (snapshots are taken as in production, every ``SNAPSHOT_INTERVAL`` versions)."""
    bot = f"history-{slot.id.hex[:8]}"
    while slot.version < events:
        at = ledger.clock()
        if slot.status is SlotStatus.IDLE:
            slot.acquire(bot, at=at, actor="api", correlation_id="bench")
        else:
            slot.release(bot, at=at, actor="api", correlation_id="bench")
        if slot.version % chunk == 0 or slot.version == events:
            ledger.save(slot)


def _median_ms(action: Callable[[], object], repeats: int) -> float:
    timings = []
    for _ in range(repeats):
        started = time.perf_counter()
        action()
        timings.append((time.perf_counter() - started) * 1000)
    return statistics.median(timings)


def _replay(ledger: SlotLedger, slot_id: UUID) -> Slot | None:
    """A slot rebuilt from all of its events, snapshots ignored (for contrast)."""
    slot: Slot | None = project_aggregate(None, ledger.events.get(slot_id))
    return slot


def load_figures(
    database_url: str, sizes: WriteSideSizes, log: Callable[[str], None]
) -> list[Figure]:
    """Time to load one slot with a short and a long history, snapshots on; the long one
    also at its worst point (``SNAPSHOT_INTERVAL - 1`` events past its last snapshot) and
    with snapshots ignored."""
    short, long = sizes.histories
    worst = long + SNAPSHOT_INTERVAL - 1
    log(f"loads: slots with {short:,}, {long:,} and {worst:,} events")
    with scratch(database_url, "loads") as url:
        ledger = _bench_ledger(url, 10, 1)
        try:
            ids = {}
            for events in (short, long, worst):
                slot = ledger.provision(PLATFORM).slot
                _grow(ledger, slot, events)
                ids[events] = slot.id
            medians = {
                events: _median_ms(partial(ledger.get_slot, slot_id), sizes.load_repeats)
                for events, slot_id in ids.items()
            }
            replay_repeats = max(3, sizes.load_repeats // 20)
            replayed = _median_ms(partial(_replay, ledger, ids[long]), replay_repeats)
        finally:
            ledger.close()
    figures = [
        Figure(
            "loads",
            f"get_slot, {events:,} events",
            ms,
            "ms",
            f"median of {sizes.load_repeats}; snapshot every {SNAPSHOT_INTERVAL}",
        )
        for events, ms in medians.items()
    ]
    ratio = medians[long] / medians[short]
    figures += [
        Figure(
            "loads",
            f"load {long:,} / {short:,} events",
            ratio,
            "x",
            "snapshot at the last event",
            "<= 2",
            ratio <= 2,
        ),
        Figure(
            "loads",
            f"load {worst:,} / {short:,} events",
            medians[worst] / medians[short],
            "x",
            f"{SNAPSHOT_INTERVAL - 1} events past the last snapshot (worst case)",
        ),
        Figure(
            "loads",
            f"replay {long:,} events, snapshots ignored",
            replayed,
            "ms",
            f"median of {replay_repeats}; for contrast",
        ),
    ]
    return figures


def memory_figures(when: str) -> list[Figure]:
    """Peak resident memory so far (``getrusage`` high-water marks): this process, which
    hosts the in-process clients, and the largest client process."""
    mib = 1024.0  # ru_maxrss is in KiB on Linux
    own = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / mib
    children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / mib
    figures = [
        Figure(
            "memory",
            f"peak RSS, benchmark process ({when})",
            own,
            "MiB",
            "ledgers and client threads in-process",
        )
    ]
    if children:
        figures.append(
            Figure(
                "memory",
                f"peak RSS, largest client process ({when})",
                children,
                "MiB",
                "one ledger per process",
            )
        )
    return figures
