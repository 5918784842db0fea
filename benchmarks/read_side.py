"""Read-side speed on PostgreSQL: rebuild rate, live lag, pool time travel.

``main(size, quick)`` (called by ``make bench``) writes a realistic log of ``size`` events
(``quick``: 50,000) into a scratch schema, then measures:

- rebuild of every read model from the whole log (events/s; target >= 100,000/s), with
  where its CPU goes: ours per part (read, decode, fold, write, the rest of a batch's
  commit) and the PostgreSQL backends' that serve it, in microseconds per event;
- ``pool_at(t)`` at random instants over that log (ms; target <= 200 ms);
- live lag while 200 transitions/s go through SlotLedger commands: time from a
  command's commit to the follower's commit that makes it visible (target p99 <= 50 ms).

The machine may be shared: each figure comes with the 1-minute load average before and
after it was measured. The log is generated with the aggregates in memory and written
with the ledger's recorder in chunks of 5,000 events (one save per event would take far
too long).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import psycopg
from psycopg.conninfo import make_conninfo

from ledger.application import SlotLedger
from ledger.bootstrap import build_ledger
from ledger.domain import Pool, QueueEntry, Slot, SlotStatus
from ledger.settings import PostgresStore, load_settings
from projections.engine.fold import Projector
from projections.engine.readmodels import ReadModels
from projections.stores.postgres import PostgresFollower, PostgresReadModels

__all__ = ["generate", "main"]

DEFAULT_URL = "postgresql://postgres@127.0.0.1:5432/test"
CHUNK = 5000
BENCH_APPLICATION = "slotledger-bench-read-side"
"""The read models' connections' ``application_name``: how their server backends are found."""


@dataclass
class Generated:
    events: int
    first: datetime
    last: datetime


class _History:
    """A random but legal history of one pool: slots cycle through their lifecycle,
    fail and recover, get retired and replaced; bots queue; the pool is resized."""

    def __init__(self, ledger: SlotLedger, slots: int, seed: int, start: datetime) -> None:
        self.ledger = ledger
        self.rng = random.Random(seed)
        self.now = start
        self.pending: list[Any] = []
        self.written = 0
        self.pool = Pool.create(
            name=ledger.pool_name,
            prefix="bench",
            max_size=slots * 2,
            at=self.tick(),
            correlation_id="gen",
        )
        self.slots = [self.provision() for _ in range(slots)]
        self.waiting: list[QueueEntry] = []
        self.bots = 0

    def tick(self) -> datetime:
        self.now += timedelta(milliseconds=self.rng.randint(5, 400))
        return self.now

    def provision(self) -> Slot:
        at, slot_id = self.tick(), uuid4()
        name = self.pool.admit(slot_id, "meet", at=at, actor="operator", correlation_id="gen")
        return Slot.provision(
            slot_id=slot_id,
            pool=self.ledger.pool_name,
            name=name,
            platform="meet",
            coolify_uuid=f"app-{slot_id.hex[:8]}",
            at=at,
            actor="operator",
            correlation_id="gen",
        )

    def step(self) -> None:
        rng, at, cid = self.rng, self.tick(), uuid4().hex
        index = rng.randrange(len(self.slots))
        slot = self.slots[index]
        roll = rng.random()
        if roll < 0.0004:
            self.pool.resize(
                rng.randint(len(self.slots) + 10, 400),
                "capacity review",
                at=at,
                actor="operator",
                correlation_id=cid,
            )
        elif roll < 0.02:
            self.waiting.append(
                QueueEntry.enqueue(
                    bot_id=self.new_bot(),
                    pool=self.ledger.pool_name,
                    platform="meet",
                    priority=0,
                    timeout_s=300,
                    config={},
                    at=at,
                    actor="api",
                    correlation_id=cid,
                )
            )
        elif slot.status is SlotStatus.IDLE:
            if roll < 0.025:
                slot.retire("rotated", at=at, actor="operator", correlation_id=cid)
                self.pool.remove(slot.id, at=at, actor="operator", correlation_id=cid)
                self.pending += slot.collect_events()
                self.slots[index] = slot = self.provision()
            elif self.waiting:
                entry = self.waiting.pop(0)
                if (at - entry.queued_at).total_seconds() > 300:
                    entry.expire("timed out", at=at, actor="policy:queue", correlation_id=cid)
                else:
                    entry.dispatch(slot.id, at=at, actor="worker", correlation_id=cid)
                    slot.acquire(entry.bot_id, at=at, actor="worker", correlation_id=cid)
                self.pending += entry.collect_events()
            else:
                slot.acquire(self.new_bot(), at=at, actor="api", correlation_id=cid)
        elif slot.status is SlotStatus.DEPLOYING:
            if roll < 0.06:
                slot.fail(
                    "deploy timed out",
                    reason_code="deploy_timeout",
                    at=at,
                    actor="policy:stuck",
                    correlation_id=cid,
                )
            elif slot.deployment_uuid is None:
                slot.mark_deploying(uuid4().hex, at=at, actor="worker", correlation_id=cid)
            else:
                slot.mark_started(at=at, actor="worker", correlation_id=cid)
        elif slot.status is SlotStatus.BUSY:
            if roll < 0.05:
                slot.fail(
                    "container exited",
                    reason_code="exited",
                    at=at,
                    actor="worker",
                    correlation_id=cid,
                )
            else:
                assert slot.bot_id is not None
                slot.release(slot.bot_id, at=at, actor="api", correlation_id=cid)
        elif roll < 0.4:
            slot.recovery_failed(
                "still unhealthy", at=at, actor="policy:recovery", correlation_id=cid
            )
        else:
            slot.recover(at=at, actor="policy:recovery", correlation_id=cid)
        self.pending += slot.collect_events()
        self.pending += self.pool.collect_events()

    def new_bot(self) -> str:
        self.bots += 1
        return f"bot-{self.bots}"

    def flush(self) -> None:
        mapper = self.ledger.mapper
        for i in range(0, len(self.pending), CHUNK):
            chunk = self.pending[i : i + CHUNK]
            self.ledger.recorder.insert_events([mapper.to_stored_event(e) for e in chunk])
            self.written += len(chunk)
        self.pending = []


def generate(
    ledger: SlotLedger,
    size: int,
    *,
    slots: int = 100,
    seed: int = 7,
    start: datetime = datetime(2025, 1, 1, tzinfo=UTC),
) -> Generated:
    """Write about ``size`` events of a legal history straight through the recorder."""
    history = _History(ledger, slots, seed, start)
    first = history.now
    history.pending += history.pool.collect_events()
    for slot in history.slots:
        history.pending += slot.collect_events()
    while history.written + len(history.pending) < size:
        history.step()
        if len(history.pending) >= CHUNK:
            history.flush()
    history.flush()
    return Generated(history.written, first, history.now)


@contextmanager
def _scratch_schema(base_url: str) -> Iterator[str]:
    """A database URL whose schema is this run's own, dropped afterwards (runs started
    by ``make bench`` and by hand must not drop each other's tables)."""
    schema = f"bench_read_side_{os.getpid()}"
    with psycopg.connect(base_url, autocommit=True) as conn:
        conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base_url}?schema={schema}"
    finally:
        with psycopg.connect(base_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


def _load() -> float:
    return round(os.getloadavg()[0], 2)


class _Parts:
    """CPU seconds per part of a rebuild, from the thread that ran each part (the read
    ahead runs in a thread of its own): the methods below are wrapped for one rebuild."""

    WRAPPED: tuple[tuple[type[Any], str, str], ...] = (
        (PostgresReadModels, "_notifications", "read"),
        (ReadModels, "_excluded", "read"),
        (ReadModels, "_next_batch", "batch"),
        (Projector, "prior_ids", "fold"),
        (Projector, "fold", "fold"),
        (PostgresReadModels, "_write", "write"),
        (ReadModels, "_commit", "commit"),
    )

    def __init__(self) -> None:
        self.cpu: dict[str, float] = dict.fromkeys(
            ("read", "batch", "fold", "write", "commit"), 0.0
        )

    @contextmanager
    def measuring(self) -> Iterator[None]:
        originals = [(cls, name, vars(cls)[name]) for cls, name, _ in self.WRAPPED]
        for (cls, name, part), (_, _, method) in zip(self.WRAPPED, originals, strict=True):
            setattr(cls, name, self._timed(method, part))
        try:
            yield
        finally:
            for cls, name, method in originals:
                setattr(cls, name, method)

    def _timed(self, method: Any, part: str) -> Any:
        cpu = self.cpu

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.thread_time()
            try:
                return method(*args, **kwargs)
            finally:
                cpu[part] += time.thread_time() - started

        return timed

    def per_event(self, events: int) -> dict[str, float]:
        """Microseconds per event: read (select and rows), decode (the mapper), fold,
        write (our side of COPY and the upserts), commit (the rest of each batch)."""
        cpu = self.cpu
        parts = {
            "read": cpu["read"],
            "decode": cpu["batch"] - cpu["read"],
            "fold": cpu["fold"],
            "write": cpu["write"],
            "commit": cpu["commit"] - cpu["fold"] - cpu["write"],
        }
        return {k: round(v / max(events, 1) * 1e6, 2) for k, v in parts.items()}


def _backend_cpu_s(conninfo: str) -> float | None:
    """CPU seconds the server backends of the benchmark's connections have used; None
    when the server's processes are not visible here (a remote server)."""
    with psycopg.connect(conninfo) as conn:
        pids = [
            r[0]
            for r in conn.execute(
                "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
                (BENCH_APPLICATION,),
            )
        ]
    total = 0
    for pid in pids:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        except FileNotFoundError:
            return None
        total += int(stat[11]) + int(stat[12])  # utime, stime
    return total / os.sysconf("SC_CLK_TCK")


def _rebuild(models: PostgresReadModels, conninfo: str) -> dict[str, Any]:
    """One rebuild of every model, timed, with its CPU by part."""
    parts, load, backends = _Parts(), _load(), _backend_cpu_s(conninfo)
    started, cpu = time.perf_counter(), time.process_time()
    with parts.measuring():
        rebuilt = models.rebuild()
    rebuild_s = time.perf_counter() - started
    cpu_us = (time.process_time() - cpu) / max(rebuilt, 1) * 1e6
    after = _backend_cpu_s(conninfo)
    server_us = (
        None
        if backends is None or after is None
        else round((after - backends) / max(rebuilt, 1) * 1e6, 2)
    )
    return {
        "rebuild_events": rebuilt,
        "rebuild_s": round(rebuild_s, 3),
        "rebuild_events_per_s": round(rebuilt / rebuild_s),
        "rebuild_cpu_us_per_event": round(cpu_us, 2),
        "rebuild_profile_us_per_event": parts.per_event(rebuilt),
        "rebuild_postgres_cpu_us_per_event": server_us,
        "rebuild_load_average": [load, _load()],
    }


def _pool_at_ms(models: PostgresReadModels, log: Generated, samples: int) -> list[float]:
    rng = random.Random(3)
    span = (log.last - log.first).total_seconds()
    timings = []
    for _ in range(samples):
        at = log.first + timedelta(seconds=rng.uniform(0, span))
        started = time.perf_counter()
        models.pool_at(at)
        timings.append((time.perf_counter() - started) * 1000)
    return timings


class _TimedFollower(PostgresFollower):
    """Records when each position became visible."""

    seen: list[tuple[float, int]]

    def _publish(self, position: int) -> None:
        super()._publish(position)
        self.seen.append((time.perf_counter(), position))


def _live_lag_ms(
    ledger: SlotLedger, models: PostgresReadModels, rate: float, seconds: float
) -> tuple[list[float], int]:
    """Drive acquire -> deploying -> started -> release cycles at ``rate`` commands/s
    through SlotLedger; lag = follower's visible time minus the command's return."""
    ledger.ensure_pool()
    for _ in range(12):  # slots the ledger's own index knows, for acquire to pick from
        ledger.provision("live")
    follower = _TimedFollower(models)
    follower.seen = []
    commits: list[tuple[float, int]] = []
    with follower:
        follower.wait(ledger.recorder.max_notification_id() or 0, timeout=60)
        bots = [f"live-bot-{i}" for i in range(8)]
        held: dict[str, UUID] = {}
        steps: dict[str, int] = dict.fromkeys(bots, 0)
        interval, started, n = 1.0 / rate, time.perf_counter(), 0
        while (elapsed := time.perf_counter() - started) < seconds:
            bot = bots[n % len(bots)]
            step = steps[bot] % 4
            if step == 0:
                outcome = ledger.acquire(bot)
                held[bot] = outcome.slot.id
            elif step == 1:
                outcome = ledger.mark_deploying(held[bot], uuid4().hex)
            elif step == 2:
                outcome = ledger.mark_started(held[bot])
            else:
                outcome = ledger.release(bot)
            commits.append((time.perf_counter(), outcome.position))
            steps[bot] += 1
            n += 1
            pause = started + n * interval - time.perf_counter()
            if pause > 0:
                time.sleep(pause)
        follower.wait(commits[-1][1], timeout=10)
    lags = []
    seen = follower.seen
    j = 0
    for committed_at, position in commits:
        while seen[j][1] < position:
            j += 1
        lags.append(max(seen[j][0] - committed_at, 0.0) * 1000)
    return lags, round(n / elapsed)


def _pct(values: list[float], q: int) -> float:
    """The q-th percentile."""
    if len(values) < 2:
        return values[0]
    return statistics.quantiles(values, n=100, method="inclusive")[q - 1]


def main(size: int = 1_000_000, quick: bool = False) -> dict[str, Any]:
    """Run the read-side benchmark on PostgreSQL; prints and returns the figures."""
    base_url = os.environ.get("LEDGER_BENCH_POSTGRES_URL", DEFAULT_URL)
    with _scratch_schema(base_url) as url:
        return _measure(url, 50_000 if quick else size, quick)


def _measure(url: str, size: int, quick: bool) -> dict[str, Any]:
    settings = load_settings(database_url=url, max_pool_size=1000)
    store = settings.store
    assert isinstance(store, PostgresStore)
    conninfo = make_conninfo(store.conninfo(), application_name=BENCH_APPLICATION)
    ledger = build_ledger(settings)
    try:
        started = time.perf_counter()
        log = generate(ledger, size)
        generated_s = time.perf_counter() - started
        print(f"generated {log.events:,} events in {generated_s:.1f}s")

        with PostgresReadModels(ledger, conninfo, schema=store.schema) as models:
            rebuild = _rebuild(models, conninfo)
            print(
                f"rebuild: {rebuild['rebuild_events']:,} events in {rebuild['rebuild_s']:.2f}s "
                f"= {rebuild['rebuild_events_per_s']:,} events/s (target >= 100,000/s); "
                f"{rebuild['rebuild_cpu_us_per_event']:.1f} us of our CPU per event "
                f"{rebuild['rebuild_profile_us_per_event']}, "
                f"PostgreSQL {rebuild['rebuild_postgres_cpu_us_per_event']} us; "
                f"load average {rebuild['rebuild_load_average']} on {os.cpu_count()} CPUs"
            )

            before = _load()
            timings = _pool_at_ms(models, log, 20 if quick else 50)
            pool_at_load = [before, _load()]
            print(
                f"pool_at(t) over {log.events:,} events: "
                f"median {statistics.median(timings):.1f} ms, "
                f"max {max(timings):.1f} ms (target <= 200 ms); load average {pool_at_load}"
            )

            before = _load()
            lags, achieved = _live_lag_ms(ledger, models, rate=200, seconds=3 if quick else 10)
            live_load = [before, _load()]
            print(
                f"live lag at {achieved} commands/s ({len(lags)} commands): "
                f"p50 {_pct(lags, 50):.1f} ms, p99 {_pct(lags, 99):.1f} ms, "
                f"max {max(lags):.1f} ms (target p99 <= 50 ms); load average {live_load}"
            )
    finally:
        ledger.close()
    return {
        "events": log.events,
        "generate_s": round(generated_s, 2),
        **rebuild,
        "load_average": rebuild["rebuild_load_average"][0],
        "cpus": os.cpu_count(),
        "pool_at_median_ms": round(statistics.median(timings), 2),
        "pool_at_max_ms": round(max(timings), 2),
        "pool_at_samples": len(timings),
        "pool_at_load_average": pool_at_load,
        "live_commands_per_s": achieved,
        "live_commands": len(lags),
        "live_lag_p50_ms": round(_pct(lags, 50), 2),
        "live_lag_p99_ms": round(_pct(lags, 99), 2),
        "live_lag_max_ms": round(max(lags), 2),
        "live_load_average": live_load,
    }


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1_000_000)
    parser.add_argument("--quick", action="store_true")
    arguments = parser.parse_args()
    print(json.dumps(main(arguments.size, arguments.quick), indent=2))
