"""HTTP figures of ``make bench``: slotledger's API against the status-column HTTP baseline.

Each setup (1 and 3 ``slotledger serve`` processes on PostgreSQL, 1 on SQLite) runs in a
scratch store of its own with ``slots`` slots, against the fake Coolify with no deploy or
delete delay and no rate limit. The baseline (:mod:`benchmarks.baseline_http`, the origin's
status column behind the same two endpoints) runs as the same number of uvicorn processes
on the same database, in the same run, right after.

- ``sequential``: one client, one request at a time (httpx): ``POST /v1/deployments`` and
  ``DELETE /v1/deployments/{bot}`` p50 and p99, each on its own.
- ``cells``: request -> release under ``wrk`` (benchmarks/wrk_cycle.lua) with 1, 16 and 64
  connections, each its own bot alternating POST and DELETE, one connection per wrk
  thread, threads spread round-robin over the servers' ports (no proxy); each cell runs
  ``seconds``. Requests/s, p50/p99 of all requests, answers by class (2xx, 4xx, 5xx),
  socket errors and timeouts; ratios to the baseline's cell of the same size.

Between cells every bot of the cell is released, and slotledger's servers are given time
to finish the cell's background work (read models caught up, no deploy running), so one
cell's backlog is not measured in the next. The load average is read before and after
each setup.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import httpx

from benchmarks import baseline_http
from benchmarks.write_side import Figure, percentile, scratch
from ledger.bootstrap import build_ledger
from ledger.settings import load_settings

__all__ = [
    "SECTION",
    "SETUPS",
    "SQLITE_SETUPS",
    "HttpSizes",
    "Setup",
    "http_figures",
    "measure",
    "readme_rows",
    "wrk_available",
]

SCRIPT = str(Path(sys.executable).with_name("slotledger"))
LUA = Path(__file__).with_name("wrk_cycle.lua")
FAKE_TOKEN = "bench-coolify-token"
FAKE_NO_DELAYS = ("--deploy-delay", "0", "--delete-delay", "0", "--rate-limit", "0")
SLOTLEDGER, BASELINE = "slotledger", "status column"
SECTION = "http"
_FAILURE = re.compile(r'" 5\d\d\b| ERROR | CRITICAL ')
MAX_PROBLEMS = 50
P99_TARGET_MS = 50.0
"""The issue's target for p99 at 64 clients on PostgreSQL."""
POST_P50_TARGET_MS = 5.0


@dataclass(frozen=True)
class HttpSizes:
    clients: tuple[int, ...] = (1, 16, 64)
    slots: int = 32
    seconds: float = 10.0
    sequential: int = 200
    """Cycles of the one-client sequential latency (after 10 of warm-up)."""
    timeout_s: float = 10.0
    """wrk's request timeout: a request slower than this counts as a timeout."""

    @classmethod
    def quick(cls) -> HttpSizes:
        return cls(seconds=2.0, sequential=50)


@dataclass(frozen=True)
class Setup:
    backend: str
    """``postgres`` or ``sqlite``."""
    servers: int

    @property
    def label(self) -> str:
        name = "PostgreSQL" if self.backend == "postgres" else "SQLite"
        return f"{self.servers} server{'s' if self.servers > 1 else ''}, {name}"


SETUPS = (Setup("postgres", 1), Setup("postgres", 3), Setup("sqlite", 1))
SQLITE_SETUPS = (Setup("sqlite", 1),)
"""What runs when the run's database is SQLite."""


def wrk_available() -> bool:
    return shutil.which("wrk") is not None


# --- processes -----------------------------------------------------------------------------


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class _Server:
    """One HTTP server process, its output in a file; ready when ``ready`` answers."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], logs: Path) -> None:
        self.name = name
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = logs / f"{name}.log"
        with self.log_path.open("ab") as out:
            self.popen = subprocess.Popen(
                [arg.format(port=self.port) for arg in args],
                env={**os.environ, **env},
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def wait_ready(self, path: str, timeout: float = 120.0) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.popen.poll() is not None:
                break
            try:
                if httpx.get(self.url + path, timeout=5).status_code < 500:
                    return
            except httpx.HTTPError:
                pass
            time.sleep(0.1)
        tail = self.log_path.read_text(errors="replace")[-3000:]
        raise RuntimeError(f"{self.name} did not start at {self.url}:\n{tail}")

    def problems(self, offset: int) -> list[str]:
        """Lines logged after ``offset`` that tell of a failure: 5xx answers, errors
        and the last line of each traceback."""
        with self.log_path.open(errors="replace") as out:
            out.seek(offset)
            lines = out.read().splitlines()
        return [
            f"{self.name}: {line.strip()}"
            for i, line in enumerate(lines)
            if _FAILURE.search(line)
            or (line and not line[0].isspace() and i and lines[i - 1].startswith("  "))
        ]

    def stop(self) -> None:
        if self.popen.poll() is None:
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.popen.pid, signal.SIGKILL)
                self.popen.wait(timeout=10)


@contextmanager
def _servers(
    stack: ExitStack, count: int, name: str, args: list[str], env: Mapping[str, str], logs: Path
) -> Iterator[list[_Server]]:
    started = [_Server(f"{name}-{i + 1}", args, env, logs) for i in range(count)]
    for server in started:
        stack.callback(server.stop)
    for server in started:
        server.wait_ready("/healthz")
    yield started


def _fake_coolify(stack: ExitStack, logs: Path) -> _Server:
    fake = _Server(
        "fake-coolify",
        [SCRIPT, "fake-coolify", "--port", "{port}", *FAKE_NO_DELAYS],
        {"LEDGER_COOLIFY_TOKEN": FAKE_TOKEN},
        logs,
    )
    stack.callback(fake.stop)
    fake.wait_ready("/api/health")
    return fake


def _ledger_env(url: str, fake: _Server, slots: int) -> dict[str, str]:
    """The fake Coolify has no rate limit, so the ledger's budget for a real one (150
    requests a minute) is raised to match: measured is the ledger, not a budget the
    baseline does not have. Against a real Coolify, 200 requests a minute per token bound
    every design's turnover."""
    return {
        "LEDGER_DATABASE_URL": url,
        "LEDGER_MAX_POOL_SIZE": str(slots),
        "LEDGER_COOLIFY_REQUESTS_PER_MINUTE": "10000",
        "LEDGER_COOLIFY_URL": fake.url + "/api/v1",
        "LEDGER_COOLIFY_TOKEN": FAKE_TOKEN,
        "LEDGER_COOLIFY_PROJECT_UUID": "fake-project",
        "LEDGER_COOLIFY_SERVER_UUID": "fake-server",
    }


def _provision(url: str, slots: int) -> None:
    """``slots`` idle slots of the default platform, written before any server starts."""
    settings = load_settings(database_url=url, max_pool_size=slots)
    ledger = build_ledger(settings)
    try:
        for _ in range(slots):
            ledger.provision(settings.default_platform, ctx=ledger.context("operator"))
    finally:
        ledger.close()


def _quiesce(servers: Sequence[_Server], timeout: float = 60.0) -> float:
    """Wait until every server's read models caught up and no deploy runs; seconds
    waited (a cell's background work must not be measured in the next)."""
    started = time.monotonic()
    deadline = started + timeout
    for server in servers:
        while time.monotonic() < deadline:
            try:
                body = httpx.get(server.url + "/readyz", timeout=10).json()
            except (httpx.HTTPError, ValueError):
                time.sleep(0.2)
                continue
            deploys = [loop for loop in body.get("loops", []) if loop["name"] == "deploys"]
            lag = body.get("lag") or {}
            if lag.get("behind", 1) == 0 and all(d["running_tasks"] == 0 for d in deploys):
                break
            time.sleep(0.2)
    return time.monotonic() - started


# --- load ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Cell:
    """One load-generator run: one system, one setup, one client count."""

    system: str
    setup: str
    clients: int
    seconds: float
    requests: int
    ok: int
    client_errors: int
    server_errors: int
    socket_errors: int
    timeouts: int
    p50_ms: float
    p90_ms: float
    p99_ms: float
    max_ms: float
    quiesce_s: float = 0.0
    problems: list[str] = field(default_factory=list)
    """The servers' 5xx answers and errors logged during the cell (the logs go with
    the run's temporary directory, so what explains a 5xx is kept here)."""

    @property
    def rate(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0


def _wrk(ports: Sequence[int], clients: int, sizes: HttpSizes, bots: str) -> dict[str, Any]:
    command = [
        "wrk",
        f"-t{clients}",
        f"-c{clients}",
        f"-d{sizes.seconds:g}s",
        f"--timeout={sizes.timeout_s:g}s",
        f"-s{LUA}",
        f"http://127.0.0.1:{ports[0]}/",
    ]
    env = {**os.environ, "BENCH_PORTS": ",".join(map(str, ports)), "BENCH_BOTS": bots}
    done = subprocess.run(
        command,
        env=env,
        capture_output=True,
        text=True,
        timeout=sizes.seconds + sizes.timeout_s + 120,
        check=True,
    )
    line = next((x for x in done.stdout.splitlines() if x.startswith("RESULT ")), None)
    if line is None:
        raise RuntimeError(f"wrk printed no result:\n{done.stdout}\n{done.stderr}")
    result: dict[str, Any] = json.loads(line.removeprefix("RESULT "))
    return result


def _release_all(url: str, bots: str, clients: int) -> None:
    """Give back whatever the cell's bots still hold (wrk stops between the requests
    of a cycle); a 404 means the bot held nothing."""
    with httpx.Client(base_url=url, timeout=30) as client:
        for n in range(1, clients + 1):
            client.delete(f"/v1/deployments/{bots}-{n}")


def _cell(
    system: str,
    setup: Setup,
    servers: Sequence[_Server],
    clients: int,
    sizes: HttpSizes,
    log: Callable[[str], None],
) -> Cell:
    bots = f"c{clients}"
    log(f"http: {system}, {setup.label}, {_clients(clients)}, {sizes.seconds:g} s")
    offsets = [s.log_path.stat().st_size for s in servers]
    raw = _wrk([s.port for s in servers], clients, sizes, bots)
    problems = [line for s, at in zip(servers, offsets, strict=True) for line in s.problems(at)]
    _release_all(servers[0].url, bots, clients)
    waited = _quiesce(servers) if system == SLOTLEDGER else 0.0
    return Cell(
        system=system,
        setup=setup.label,
        clients=clients,
        seconds=raw["duration_us"] / 1e6,
        requests=raw["requests"],
        ok=raw["ok"],
        client_errors=raw["client_errors"],
        server_errors=raw["server_errors"],
        socket_errors=raw["connect_errors"] + raw["read_errors"] + raw["write_errors"],
        timeouts=raw["timeouts"],
        p50_ms=raw["p50_us"] / 1000,
        p90_ms=raw["p90_us"] / 1000,
        p99_ms=raw["p99_us"] / 1000,
        max_ms=raw["max_us"] / 1000,
        quiesce_s=round(waited, 2),
        problems=problems[:MAX_PROBLEMS],
    )


@dataclass(frozen=True)
class Sequential:
    """One client, one request at a time: each endpoint's latency on its own."""

    system: str
    setup: str
    cycles: int
    post_p50_ms: float
    post_p99_ms: float
    delete_p50_ms: float
    delete_p99_ms: float
    statuses: dict[str, int] = field(default_factory=dict)


def _sequential(system: str, setup: Setup, url: str, cycles: int) -> Sequential:
    posts: list[float] = []
    deletes: list[float] = []
    statuses: Counter[str] = Counter()
    with httpx.Client(base_url=url, timeout=30) as client:
        for n in range(10 + cycles):
            started = time.perf_counter()
            answer = client.post("/v1/deployments", json={"bot_id": "seq-1"})
            middle = time.perf_counter()
            released = client.delete("/v1/deployments/seq-1")
            ended = time.perf_counter()
            if n >= 10:
                posts.append((middle - started) * 1000)
                deletes.append((ended - middle) * 1000)
                statuses[f"POST {answer.status_code}"] += 1
                statuses[f"DELETE {released.status_code}"] += 1
    return Sequential(
        system,
        setup.label,
        cycles,
        statistics.median(posts),
        percentile(posts, 99),
        statistics.median(deletes),
        percentile(deletes, 99),
        dict(statuses),
    )


# --- one setup, both systems ---------------------------------------------------------------


@dataclass
class SetupRun:
    setup: Setup
    sequential: list[Sequential] = field(default_factory=list)
    cells: list[Cell] = field(default_factory=list)
    load_before: list[float] = field(default_factory=list)
    load_after: list[float] = field(default_factory=list)


@contextmanager
def _store(database_url: str, setup: Setup, name: str) -> Iterator[str]:
    """A scratch store for one system: a schema on the run's PostgreSQL, or a SQLite
    file in a temporary directory."""
    if setup.backend == "postgres":
        with scratch(database_url, name) as url:
            yield url
        return
    with tempfile.TemporaryDirectory(prefix="bench-http-") as directory:
        yield f"sqlite:///{directory}/{name}.db"


def _run_system(
    system: str,
    setup: Setup,
    database_url: str,
    sizes: HttpSizes,
    logs: Path,
    log: Callable[[str], None],
    run: SetupRun,
) -> None:
    with _store(database_url, setup, f"http_{system.split()[0]}") as url, ExitStack() as stack:
        if system == SLOTLEDGER:
            fake = _fake_coolify(stack, logs)
            _provision(url, sizes.slots)
            args = [SCRIPT, "serve", "--port", "{port}"]
            env = _ledger_env(url, fake, sizes.slots)
        else:
            baseline_http.prepare(url, sizes.slots)
            args = [sys.executable, "-m", "benchmarks.baseline_http", "--port", "{port}"]
            args += ["--database-url", url]
            env = {}
        name = f"{system.split()[0]}-{setup.backend}-{setup.servers}"
        with _servers(stack, setup.servers, name, args, env, logs) as servers:
            if setup.servers == 1:
                log(f"http: {system}, {setup.label}, sequential, {sizes.sequential} cycles")
                run.sequential.append(_sequential(system, setup, servers[0].url, sizes.sequential))
                if system == SLOTLEDGER:
                    _quiesce(servers)
            for clients in sizes.clients:
                run.cells.append(_cell(system, setup, servers, clients, sizes, log))


def measure(
    database_url: str,
    sizes: HttpSizes,
    log: Callable[[str], None],
    setups: Sequence[Setup] = SETUPS,
    logs: Path | None = None,
    systems: Sequence[str] = (SLOTLEDGER, BASELINE),
) -> list[SetupRun]:
    """Every setup, slotledger then its baseline; server output goes to ``logs``."""
    runs = []
    with ExitStack() as stack:
        if logs is None:
            logs = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-logs-")))
        for setup in setups:
            run = SetupRun(setup, load_before=[round(x, 2) for x in os.getloadavg()])
            for system in systems:
                _run_system(system, setup, database_url, sizes, logs, log, run)
            run.load_after = [round(x, 2) for x in os.getloadavg()]
            runs.append(run)
    return runs


# --- figures -------------------------------------------------------------------------------


def _clients(n: int) -> str:
    return f"{n} client{'s' if n != 1 else ''}"


def _size(cell: Cell) -> str:
    answers = f"{cell.requests:,} requests ({cell.ok:,} 2xx"
    if cell.client_errors:
        answers += f", {cell.client_errors:,} 4xx"
    if cell.server_errors:
        answers += f", {cell.server_errors:,} 5xx"
    if cell.socket_errors or cell.timeouts:
        answers += f", {cell.socket_errors} socket errors, {cell.timeouts} timeouts"
    return f"{answers}); {_clients(cell.clients)}, {cell.seconds:.0f} s"


def _ratio(a: float, b: float) -> float:
    return a / b if b else float("nan")


def figures(runs: Sequence[SetupRun], sizes: HttpSizes) -> list[Figure]:
    out: list[Figure] = []
    for run in runs:
        label = run.setup.label
        for seq in run.sequential:
            size = f"1 client, sequential, {seq.cycles} cycles, {sizes.slots} slots"
            target = seq.system == SLOTLEDGER
            out += [
                Figure(
                    SECTION,
                    f"{seq.system} POST p50 ({label})",
                    seq.post_p50_ms,
                    "ms",
                    size,
                    f"<= {POST_P50_TARGET_MS:g} ms" if target else "",
                    seq.post_p50_ms <= POST_P50_TARGET_MS if target else None,
                ),
                Figure(SECTION, f"{seq.system} POST p99 ({label})", seq.post_p99_ms, "ms", size),
                Figure(
                    SECTION, f"{seq.system} DELETE p50 ({label})", seq.delete_p50_ms, "ms", size
                ),
            ]
        baselines = {c.clients: c for c in run.cells if c.system == BASELINE}
        for cell in run.cells:
            name = f"{cell.system}, {_clients(cell.clients)} ({label})"
            out += [
                Figure(SECTION, f"{name} requests/s", cell.rate, "req/s", _size(cell)),
                Figure(SECTION, f"{name} p50", cell.p50_ms, "ms", _size(cell)),
            ]
            postgres64 = run.setup.backend == "postgres" and cell.clients == 64
            target = cell.system == SLOTLEDGER and postgres64
            out.append(
                Figure(
                    SECTION,
                    f"{name} p99",
                    cell.p99_ms,
                    "ms",
                    _size(cell),
                    f"<= {P99_TARGET_MS:g} ms" if target else "",
                    cell.p99_ms <= P99_TARGET_MS if target else None,
                )
            )
            baseline = baselines.get(cell.clients)
            if cell.system == SLOTLEDGER and baseline is not None:
                ratio = _ratio(cell.rate, baseline.rate)
                postgres = run.setup.backend == "postgres"
                out.append(
                    Figure(
                        SECTION,
                        f"{name} requests/s / status column",
                        ratio,
                        "x",
                        f"{_clients(cell.clients)}, {sizes.slots} slots",
                        ">= 1.0" if postgres else "",
                        ratio >= 1.0 if postgres else None,
                    )
                )
                out.append(
                    Figure(
                        SECTION,
                        f"{name} 5xx",
                        float(cell.server_errors),
                        "answers",
                        _size(cell),
                        "0",
                        cell.server_errors == 0,
                    )
                )
    return out


def http_figures(
    database_url: str,
    sizes: HttpSizes,
    log: Callable[[str], None],
    setups: Sequence[Setup] = SETUPS,
) -> tuple[list[Figure], dict[str, Any]]:
    """The HTTP figures and their raw results (for the JSON), or none without ``wrk``."""
    if not wrk_available():
        log("http skipped: wrk is not installed (apt-get install wrk)")
        return [], {"skipped": "wrk is not installed"}
    runs = measure(database_url, sizes, log, setups)
    raw = {
        "sizes": asdict(sizes),
        "load_generator": "wrk (benchmarks/wrk_cycle.lua), one connection per thread, "
        "threads round-robin over the servers' ports",
        "setups": [
            {
                "setup": run.setup.label,
                "load_average_before": run.load_before,
                "load_average_after": run.load_after,
                "sequential": [asdict(s) for s in run.sequential],
                "cells": [asdict(c) | {"requests_per_s": round(c.rate, 1)} for c in run.cells],
            }
            for run in runs
        ],
    }
    return figures(runs, sizes), raw


def _latency(p50: float, p99: float) -> str:
    return f"p50 {p50:.1f} / p99 {p99:.1f} ms"


def _load_cell(cell: dict[str, Any]) -> str:
    text = f"{cell['requests_per_s']:,.0f} req/s, {_latency(cell['p50_ms'], cell['p99_ms'])}"
    bad = cell["server_errors"] + cell["socket_errors"] + cell["timeouts"]
    if bad:
        text += f", {cell['server_errors']} 5xx, {cell['timeouts']} timeouts"
    return text


Row = tuple[str, str, str, str]
"""A README row: figure, slotledger, status column, ratio or target."""


def readme_rows(raw: Mapping[str, Any] | None) -> list[Row]:
    """The README rows of the HTTP figures, from the raw results."""
    if not raw or "setups" not in raw:
        return []
    seconds = raw["sizes"]["seconds"]
    rows = []
    for setup in raw["setups"]:
        label, load = setup["setup"], setup["load_average_before"][0]
        seq = {s["system"]: s for s in setup["sequential"]}
        if SLOTLEDGER in seq and BASELINE in seq:
            ours, theirs = seq[SLOTLEDGER], seq[BASELINE]
            size = f"1 client, sequential, {ours['cycles']} cycles; {label}"
            met = "met" if ours["post_p50_ms"] <= POST_P50_TARGET_MS else "NOT met"
            rows += [
                (
                    f"HTTP POST /v1/deployments; {size}",
                    _latency(ours["post_p50_ms"], ours["post_p99_ms"]),
                    _latency(theirs["post_p50_ms"], theirs["post_p99_ms"]),
                    f"p50 <= {POST_P50_TARGET_MS:g} ms ({met})",
                ),
                (
                    f"HTTP DELETE /v1/deployments/{{bot}}; {size}",
                    _latency(ours["delete_p50_ms"], ours["delete_p99_ms"]),
                    _latency(theirs["delete_p50_ms"], theirs["delete_p99_ms"]),
                    "",
                ),
            ]
        cells = {(c["system"], c["clients"]): c for c in setup["cells"]}
        for (system, clients), ours in cells.items():
            theirs = cells.get((BASELINE, clients))
            if system != SLOTLEDGER or theirs is None:
                continue
            ratio = _ratio(ours["requests_per_s"], theirs["requests_per_s"])
            rows.append(
                (
                    f"HTTP request→release, {_clients(clients)}, {seconds:g} s; {label} "
                    f"(load {load:.1f})",
                    _load_cell(ours),
                    _load_cell(theirs),
                    f"{ratio:.2f}x",
                )
            )
    return rows


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="HTTP benchmarks alone")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--database-url", default="postgresql://postgres@127.0.0.1:5432/test")
    parser.add_argument("--setup", action="append", help="e.g. postgres:1 (repeatable)")
    parser.add_argument("--clients", type=int, action="append")
    parser.add_argument("--seconds", type=float)
    parser.add_argument("--sequential", type=int)
    parser.add_argument("--logs", type=Path)
    parser.add_argument("--system", choices=[SLOTLEDGER, BASELINE], action="append")
    args = parser.parse_args()
    chosen = HttpSizes.quick() if args.quick else HttpSizes()
    overrides: dict[str, Any] = {}
    if args.clients:
        overrides["clients"] = tuple(args.clients)
    if args.seconds:
        overrides["seconds"] = args.seconds
    if args.sequential:
        overrides["sequential"] = args.sequential
    if overrides:
        chosen = HttpSizes(**(asdict(chosen) | overrides))
    setups: tuple[Setup, ...] = SETUPS
    if args.setup:
        setups = tuple(Setup(b, int(n)) for b, n in (s.split(":") for s in args.setup))
    if args.logs:
        args.logs.mkdir(parents=True, exist_ok=True)
    result = measure(
        args.database_url,
        chosen,
        lambda m: print(m, file=sys.stderr),
        setups,
        args.logs,
        args.system or (SLOTLEDGER, BASELINE),
    )
    for run in result:
        print(json.dumps(asdict(run), indent=1, default=str))
