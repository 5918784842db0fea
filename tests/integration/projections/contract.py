"""Contract for the read models, run against every store (see ``test_stores.py``).

A store's test class subclasses :class:`ReadModelsContract` and provides ``store_url``.
Most tests use one hand-made history on a fake clock (:func:`timeline`) whose expected
read models were worked out by hand, second by second.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID

import psycopg
import pytest
from typer.testing import CliRunner

from ledger.application import SlotLedger
from ledger.bootstrap import build_follower, build_ledger, build_read_models, import_bundle
from ledger.domain import SlotStatus
from ledger.entrypoints.cli import build_app
from ledger.errors import BadInput
from ledger.settings import load_settings
from projections import Follower, ReadModels, ReadModelTimeout
from projections.bundle import export
from projections.engine.fold import Batch
from projections.engine.follower import LogFollower
from projections.models.records import ParkedStatus
from tests.contracts.ledger import FakeClock

T0 = datetime(2025, 12, 17, 22, 0, tzinfo=UTC)
WAIT_S = 60.0
"""A generous deadline for background work: a loaded machine makes a test slower, not red."""
IDLE, DEPLOYING, BUSY, ERROR = (
    SlotStatus.IDLE,
    SlotStatus.DEPLOYING,
    SlotStatus.BUSY,
    SlotStatus.ERROR,
)


def at(seconds: float) -> datetime:
    return T0 + timedelta(seconds=seconds)


@dataclass
class Store:
    """Builds ledgers, read models and followers on one store, and closes them all."""

    url: str
    made: list[Any] = field(default_factory=list)

    @property
    def is_postgres(self) -> bool:
        return self.url.startswith("postgresql")

    def ledger(self, *, clock: FakeClock | None = None, **settings: Any) -> SlotLedger:
        ledger = build_ledger(
            load_settings(database_url=self.url, **settings), **({"clock": clock} if clock else {})
        )
        self.made.append(ledger)
        return ledger

    def models(self, ledger: SlotLedger, *, batch_size: int = 5000) -> ReadModels:
        models = build_read_models(
            load_settings(database_url=self.url), ledger, batch_size=batch_size
        )
        self.made.append(models)
        return models

    def follower(self, models: ReadModels) -> Follower:
        follower = build_follower(models)
        self.made.append(follower)
        return follower

    def close(self) -> None:
        for thing in reversed(self.made):
            (thing.stop if isinstance(thing, Follower) else thing.close)()


@dataclass
class Timeline:
    ledger: SlotLedger
    clock: FakeClock
    a: UUID
    b: UUID
    started: int
    failed: int


def timeline(store: Store) -> Timeline:
    """Slots A and B of one pool, minute by minute (seconds after T0):

    10 A provisioned (pool created, max 100)   20 B provisioned
    30 bot-1 acquires A    40 A deploying    50 A started (busy)
    60 B fails ("container exited", exited)  70 bot-1 releases A
    80 B recovered         90 B retired
    100 bot-2 queues      130 bot-2 dispatched to A (deploying)    140 bot-3 queues
    150 pool resized to 5  160 A fails ("deploy timed out", deploy_timeout) holding bot-2
    """
    clock = FakeClock(T0)
    ledger = store.ledger(clock=clock)
    clock.now = at(10)
    a = ledger.provision("meet").slot.id
    clock.now = at(20)
    b = ledger.provision("meet").slot.id
    clock.now = at(30)
    assert ledger.acquire("bot-1").slot.id == a
    clock.now = at(40)
    ledger.mark_deploying(a, "dep-1")
    clock.now = at(50)
    started = ledger.mark_started(a).position
    clock.now = at(60)
    failed = ledger.fail(b, "container exited", reason_code="exited").position
    clock.now = at(70)
    ledger.release("bot-1")
    clock.now = at(80)
    ledger.recover(b)
    clock.now = at(90)
    ledger.retire(b, "rotated")
    clock.now = at(100)
    ledger.enqueue("bot-2")
    clock.now = at(130)
    [(_, outcome)] = ledger.dispatch_waiting()
    assert outcome.slot.id == a
    clock.now = at(140)
    ledger.enqueue("bot-3")
    clock.now = at(150)
    store.ledger(clock=clock, max_pool_size=5).ensure_pool()
    clock.now = at(160)
    ledger.fail(a, "deploy timed out", reason_code="deploy_timeout")
    return Timeline(ledger, clock, a, b, started, failed)


def statuses(models: ReadModels, t: float) -> dict[str, tuple[SlotStatus, str | None]]:
    return {s.name: (s.status, s.bot_id) for s in models.pool_at(at(t)).slots}


class ReadModelsContract:
    @pytest.fixture
    def store_url(self) -> str:
        raise NotImplementedError

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[Store]:
        store = Store(store_url)
        yield store
        store.close()

    @pytest.fixture
    def replay_target(self, store: Store, tmp_path: Path) -> Iterator[str]:
        """A schema (PostgreSQL) or file (SQLite) for replays, removed afterwards."""
        if not store.is_postgres:
            yield str(tmp_path / "replayed.db")
            return
        schema = f"r_{uuid.uuid4().hex[:12]}"
        yield schema
        with psycopg.connect(store.url.split("?")[0], autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")

    # --- the models ----------------------------------------------------------------------

    def test_slot_status_follows_the_aggregates(self, store: Store) -> None:
        t = timeline(store)
        models = store.models(t.ledger)
        models.catch_up()
        assert models.position() == models.head()
        for slot_id in (t.a, t.b):
            row, slot = models.slot(slot_id), t.ledger.get_slot(slot_id)
            assert row is not None
            assert (row.status, row.status_since, row.bot_id, row.last_used, row.last_error) == (
                slot.status,
                slot.status_since,
                slot.bot_id,
                slot.last_used,
                slot.last_error,
            )
            assert (row.lease, row.retired, row.version, row.coolify_uuid) == (
                slot.lease,
                slot.retired,
                slot.version,
                slot.coolify_uuid,
            )
        assert models.slot("pool-meet-001") == models.slot(t.a)

    def test_pool_and_queue_stats(self, store: Store) -> None:
        t = timeline(store)
        models = store.models(t.ledger)
        models.catch_up()
        stats = models.pool_stats()
        assert stats.as_dict() == {
            "total": 1,
            "idle": 0,
            "deploying": 0,
            "busy": 0,
            "error": 1,
            "maxSize": 5,
        }
        queue = models.queue_stats()
        assert (queue.length, queue.oldest_queued_at, queue.average_wait_s) == (1, at(140), 30.0)

    # --- time travel against hand-computed expectations ---------------------------------

    def test_pool_at_any_instant(self, store: Store) -> None:
        t = timeline(store)
        models = store.models(t.ledger)
        models.catch_up()
        a, b = "pool-meet-001", "pool-meet-002"
        assert statuses(models, 5) == {}
        assert statuses(models, 15) == {a: (IDLE, None)}
        assert statuses(models, 30) == {a: (DEPLOYING, "bot-1"), b: (IDLE, None)}
        assert statuses(models, 45) == {a: (DEPLOYING, "bot-1"), b: (IDLE, None)}
        assert statuses(models, 55) == {a: (BUSY, "bot-1"), b: (IDLE, None)}
        assert statuses(models, 65) == {a: (BUSY, "bot-1"), b: (ERROR, None)}
        assert statuses(models, 75) == {a: (IDLE, None), b: (ERROR, None)}
        assert statuses(models, 85) == {a: (IDLE, None), b: (IDLE, None)}
        assert statuses(models, 95) == {a: (IDLE, None)}
        assert statuses(models, 135) == {a: (DEPLOYING, "bot-2")}
        assert statuses(models, 165) == {a: (ERROR, None)}
        assert models.pool_at(at(5)).stats.as_dict()["maxSize"] == 0
        assert models.pool_at(at(65)).stats.as_dict() == {
            "total": 2,
            "idle": 0,
            "deploying": 0,
            "busy": 1,
            "error": 1,
            "maxSize": 100,
        }
        assert models.pool_at(at(155)).stats.max_size == 5
        since = {s.name: s.since for s in models.pool_at(at(65)).slots}
        assert since == {a: at(50), b: at(60)}

    def test_diff_between_instants(self, store: Store) -> None:
        t = timeline(store)
        models = store.models(t.ledger)
        models.catch_up()
        changes = {c.name: c for c in models.diff(at(35), at(75))}
        assert set(changes) == {"pool-meet-001", "pool-meet-002"}
        a, b = changes["pool-meet-001"], changes["pool-meet-002"]
        assert (a.before, a.after, a.bot_before, a.bot_after, a.events) == (
            DEPLOYING,
            IDLE,
            "bot-1",
            None,
            3,
        )
        assert (b.before, b.after, b.events) == (IDLE, ERROR, 1)
        [retired] = models.diff(at(85), at(95))
        assert (retired.name, retired.before, retired.after, retired.events) == (
            "pool-meet-002",
            IDLE,
            None,
            2,  # SlotRetired, and the pool's SlotRemoved
        )
        assert models.diff(at(96), at(99)) == []
        with pytest.raises(BadInput, match="after it ends"):
            models.diff(at(75), at(35))

    def test_history_with_time_in_each_status(self, store: Store) -> None:
        t = timeline(store)
        models = store.models(t.ledger)
        models.catch_up()
        b = models.history(t.b, now=at(200))
        assert [(i.status, i.from_ts, i.to_ts) for i in b.intervals] == [
            (IDLE, at(20), at(60)),
            (ERROR, at(60), at(80)),
            (IDLE, at(80), at(90)),
        ]
        assert b.time_in_status == {IDLE: 50.0, ERROR: 20.0}
        assert [e.type for e in b.events] == [
            "SlotProvisioned",
            "SlotAdmitted",  # the pool's events about the slot belong to its history too
            "SlotFailed",
            "SlotRecovered",
            "SlotRetired",
            "SlotRemoved",
        ]
        a = models.history("pool-meet-001", now=at(200))
        assert a.time_in_status == {IDLE: 80.0, DEPLOYING: 50.0, BUSY: 20.0, ERROR: 40.0}
        assert models.history("no-such-slot").slot is None
        assert models.history(uuid.uuid4()).intervals == []

    # --- audit queries -------------------------------------------------------------------

    def test_audit_by_bot_type_slot_and_window(self, store: Store) -> None:
        t = timeline(store)
        models = store.models(t.ledger)
        models.catch_up()
        assert [r.type for r in models.audit(bot="bot-1")] == [
            "SlotAcquired",
            "SlotDeploying",
            "SlotStarted",
            "SlotReleased",
        ]
        failed = models.audit(type="SlotFailed")
        assert [(r.slot_id, r.reason, r.fields["reason_code"]) for r in failed] == [
            (t.b, "container exited", "exited"),
            (t.a, "deploy timed out", "deploy_timeout"),
        ]
        assert [r.occurred_at for r in models.audit(slot=t.a, since=at(40), until=at(70))] == [
            at(40),
            at(50),
            at(70),
        ]
        window = models.audit(since=at(95), until=at(145))
        assert [r.type for r in window] == [
            "QueueEntryEnqueued",
            "SlotAcquired",
            "QueueEntryDispatched",
            "QueueEntryEnqueued",
        ]
        assert window[2].slot_id == t.a and window[2].bot_id == "bot-2"
        assert all(r.actor and r.correlation_id for r in window)
        assert len(models.audit(limit=2)) == 2
        assert models.audit(bot="nobody") == []
        assert models.audit(slot="no-such-slot") == []

    def test_slots_of_a_bot_and_failures_with_reasons(self, store: Store) -> None:
        t = timeline(store)
        models = store.models(t.ledger)
        models.catch_up()
        [lease] = models.slots_of_bot("bot-2")
        assert (lease.slot_id, lease.slot_name, lease.acquired_at, lease.ended_at) == (
            t.a,
            "pool-meet-001",
            at(130),
            at(160),
        )
        assert lease.ended_by == "SlotFailed"
        assert [x.ended_by for x in models.slots_of_bot("bot-1")] == ["SlotReleased"]
        assert models.slots_of_bot("nobody") == []
        failures = models.failures(at(0), at(200))
        assert [(f.slot_name, f.reason, f.reason_code, f.bot_id) for f in failures] == [
            ("pool-meet-002", "container exited", "exited", None),
            ("pool-meet-001", "deploy timed out", "deploy_timeout", "bot-2"),
        ]
        assert models.failures(at(61), at(159)) == []

    def test_bad_input_is_typed(self, store: Store) -> None:
        models = store.models(store.ledger())
        with pytest.raises(BadInput, match="unknown event type 'SlotExploded'"):
            models.audit(type="SlotExploded")
        with pytest.raises(BadInput, match="after it ends"):
            models.audit(since=at(10), until=at(5))
        with pytest.raises(BadInput, match="limit"):
            models.audit(limit=0)
        with pytest.raises(BadInput, match="beyond the log end"):
            models.replay(10_000, "anywhere")

    # --- exactly once, rebuild, replay ---------------------------------------------------

    def test_rebuild_equals_live_row_for_row(self, store: Store) -> None:
        clock = FakeClock(T0)
        ledger = store.ledger(clock=clock)
        models = store.models(ledger, batch_size=3)
        with store.follower(store.models(ledger, batch_size=3)) as follower:
            t = timeline(store)
            follower.wait(t.ledger.recorder.max_notification_id() or 0, timeout=WAIT_S)
        live = models.dump()
        assert live["audit"] and live["status_intervals"] and live["queue_entries"]
        position = models.position()
        serving: list[int] = []
        with store.follower(store.models(ledger)):  # a live follower while swapping
            models.rebuild(lambda p: serving.append(models.pool_stats().total))
        assert models.dump() == live
        assert models.position() == position
        assert serving

    def test_exactly_once_when_a_batch_fails_mid_write(self, store: Store) -> None:
        t = timeline(store)
        models = store.models(t.ledger, batch_size=4)
        real_write, calls = models._write, []

        def write_then_crash(curs: Any, changes: Any) -> None:
            calls.append(changes.position)
            real_write(curs, changes)
            if len(calls) == 3:
                raise RuntimeError("killed mid-batch")

        models._write = write_then_crash  # type: ignore[method-assign]
        with pytest.raises(RuntimeError, match="mid-batch"):
            models.catch_up()
        assert models.position() == calls[1]  # the third batch rolled back whole
        restarted = store.models(t.ledger, batch_size=4)
        restarted.catch_up()
        followed = restarted.dump()
        restarted.rebuild()
        assert restarted.dump() == followed
        assert len(followed["audit"]) == len({r.position for r in followed["audit"]})

    def test_exactly_once_when_the_process_is_killed(self, store: Store) -> None:
        t = timeline(store)
        t.ledger.recover(t.a)
        for n in range(12):
            t.ledger.acquire(f"extra-{n}") if n % 2 == 0 else t.ledger.release(f"extra-{n - 1}")
        models = store.models(t.ledger)
        head = models.head()
        worker = subprocess.Popen(
            [sys.executable, "-m", "tests.integration.projections.crash_worker", store.url],
            cwd=Path(__file__).parents[3],
            env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[3])},
        )
        try:
            deadline = time.monotonic() + WAIT_S
            while models.position() < head // 3:
                assert worker.poll() is None, "the worker ended before it was killed"
                assert time.monotonic() < deadline
                time.sleep(0.01)
            os.kill(worker.pid, signal.SIGKILL)
        finally:
            worker.wait()
        assert 0 < models.position() < head
        models.catch_up()
        followed = models.dump()
        models.rebuild()
        assert models.dump() == followed
        assert models.position() == head

    def test_concurrent_writers_apply_each_event_once(self, store: Store) -> None:
        t = timeline(store)
        writers = [store.models(t.ledger, batch_size=2), store.models(t.ledger, batch_size=3)]
        with ThreadPoolExecutor(len(writers)) as pool:
            list(pool.map(lambda m: m.catch_up(), writers))
        for writer in writers:
            writer.catch_up()  # one may have stopped when the other got ahead
        followed = writers[0].dump()
        writers[0].rebuild()
        assert writers[0].dump() == followed
        assert writers[1].position() == writers[1].head()

    def test_replay_until_an_instant_or_a_position(self, store: Store, replay_target: str) -> None:
        t = timeline(store)
        models = store.models(t.ledger)
        models.catch_up()
        past = models.replay(at(55), replay_target)
        assert past.position() == t.started
        assert {s.name: s.status for s in past.slots()} == {
            "pool-meet-001": BUSY,
            "pool-meet-002": IDLE,
        }
        past.close()
        past = models.replay(t.failed, replay_target)
        assert {s.name: s.status for s in past.slots()} == {
            "pool-meet-001": BUSY,
            "pool-meet-002": ERROR,
        }
        assert [r.type for r in past.audit(type="SlotFailed")] == ["SlotFailed"]
        past.close()
        with pytest.raises(BadInput, match="beyond the log end"):
            models.replay(models.head() + 1, replay_target)
        live = models.model_set.schema if store.is_postgres else getattr(models, "path", "")
        with pytest.raises(BadInput, match="live models"):
            models.replay(None, live)

    # --- live following ------------------------------------------------------------------

    def test_read_your_writes(self, store: Store) -> None:
        ledger = store.ledger()
        models = store.models(ledger)
        slot_id = ledger.provision("meet").slot.id
        with store.follower(models) as follower:
            for bot in ("b1", "b2"):
                outcome = ledger.acquire(bot)
                follower.wait(outcome.position, timeout=WAIT_S)
                assert models.slot(slot_id).bot_id == bot  # type: ignore[union-attr]
                follower.wait(ledger.release(bot).position, timeout=WAIT_S)
                assert models.slot(slot_id).status is IDLE  # type: ignore[union-attr]
            lag = follower.lag()
            assert lag.position == lag.head and lag.behind == 0
            assert lag.heartbeat_s is not None and lag.heartbeat_s < WAIT_S
            assert lag.seconds is not None and lag.seconds >= 0

    def test_wait_times_out_without_a_follower(self, store: Store) -> None:
        ledger = store.ledger()
        models = store.models(ledger)
        position = ledger.provision("meet").position
        assert models.lag().behind >= 1
        with pytest.raises(ReadModelTimeout, match="is a follower running") as caught:
            models.wait(position, timeout=0.2)
        assert caught.value.code == "read_model_timeout"
        with pytest.raises(BadInput, match="beyond the log end"):
            models.wait(position + 100, timeout=0.1)
        models.catch_up()
        models.wait(position, timeout=0)
        assert models.lag().behind == 0

    def test_follower_recovers_from_errors(self, store: Store) -> None:
        ledger = store.ledger()
        models = store.models(ledger)
        real_commit, failures = models._commit, []

        def flaky(start: int, batch: Batch) -> bool:
            if len(failures) < 2:
                failures.append(1)
                raise RuntimeError("database went away")
            return real_commit(start, batch)

        models._commit = flaky  # type: ignore[method-assign]
        with store.follower(models) as follower:
            position = ledger.provision("meet").position
            follower.wait(position, timeout=WAIT_S)
            health = follower.health()
            assert health.failures_total == 2 and health.state == "running"
            assert health.last_error == "RuntimeError: database went away"

    def test_an_event_the_models_cannot_take_is_parked_and_left_out_until_retried(
        self, store: Store
    ) -> None:
        ledger = store.ledger()
        models = store.models(ledger)
        ledger.provision("meet")
        poison = ledger.acquire("b1").position
        real_fold = models.projector.fold

        def fold(events: Any, slots: Any, queue: Any) -> Any:
            if any(position == poison for position, _ in events):
                raise ValueError("cannot take this one")
            return real_fold(events, slots, queue)

        models.projector.fold = fold  # type: ignore[method-assign]
        with store.follower(models) as follower:
            after = ledger.release("b1").position
            follower.wait(after, timeout=WAIT_S)  # it went on past the poison
            [parked] = models.parked()
            assert (parked.consumer, parked.position, parked.status) == (
                "read-models",
                poison,
                ParkedStatus.PARKED,
            )
            assert parked.error == "ValueError: cannot take this one"
            assert parked.attempts == LogFollower.PARK_AFTER
            assert parked.topic.endswith("Slot.SlotAcquired")
            assert models.parked_counts() == {"read-models": 1}
            assert "SlotAcquired" not in [r.type for r in models.audit()]
            assert "SlotReleased" in [r.type for r in models.audit()]
            assert follower.health().state == "running"
        live = models.dump()
        models.rebuild()  # leaves the parked event out, like the live models: no failure
        assert models.dump() == live
        models.rebuild(retry=[poison])  # an operator's retry, once the cause is fixed
        assert models.resolve_parked(parked, ParkedStatus.RETRIED)
        assert not models.resolve_parked(parked, ParkedStatus.SKIPPED)  # resolved once
        assert models.parked() == [] and models.parked_counts() == {}
        assert "SlotAcquired" in [r.type for r in models.audit()]
        retried = models.dump()
        models.rebuild()  # a retried event is no longer left out
        assert models.dump() == retried

    def test_one_writer_per_model_set(self, store: Store) -> None:
        ledger = store.ledger()
        first = store.follower(store.models(ledger)).start()
        second = store.follower(store.models(ledger)).start()
        deadline = time.monotonic() + WAIT_S
        while not (first.is_leader or second.is_leader) and time.monotonic() < deadline:
            time.sleep(0.01)
        time.sleep(0.2)
        assert [first.is_leader, second.is_leader].count(True) == 1
        leader, standby = (first, second) if first.is_leader else (second, first)
        position = ledger.provision("meet").position
        standby.wait(position, timeout=WAIT_S)  # a standby still serves read-your-writes
        leader.stop()
        deadline = time.monotonic() + WAIT_S
        while not standby.is_leader and time.monotonic() < deadline:
            time.sleep(0.02)
        assert standby.is_leader
        standby.wait(ledger.provision("meet").position, timeout=WAIT_S)

    # --- incident bundles ----------------------------------------------------------------

    def test_export_import_round_trip(self, store: Store, tmp_path: Path) -> None:
        t = timeline(store)
        models = store.models(t.ledger)
        models.catch_up()
        bundle = list(export(models, slot="pool-meet-002"))
        assert [r["type"] for r in bundle if r["matched"]] == [
            "SlotProvisioned",
            "SlotAdmitted",
            "SlotFailed",
            "SlotRecovered",
            "SlotRetired",
            "SlotRemoved",
        ]
        assert {r["type"] for r in bundle if not r["matched"]} >= {"PoolCreated", "SlotAdmitted"}
        path = str(tmp_path / "incident.db")
        result = import_bundle((_dumps(r) for r in bundle), path)
        assert result.events == len(bundle)
        imported = build_ledger(load_settings(database_url=f"sqlite:///{path}"))
        imported_models = build_read_models(
            load_settings(database_url=f"sqlite:///{path}"), imported
        )
        try:
            assert imported.get_slot(t.b).retired
            assert imported_models.history(t.b, now=at(200)) == models.history(t.b, now=at(200))
            assert imported_models.audit(slot=t.b) == models.audit(slot=t.b)
            assert imported_models.failures() == models.failures(until=at(100))
        finally:
            imported_models.close()
            imported.close()
        by_bot = list(export(models, bot="bot-2", since=at(100)))
        assert {"QueueEntryEnqueued", "QueueEntryDispatched", "SlotFailed"} <= {
            r["type"] for r in by_bot if r["matched"]
        }
        assert [r["originator_version"] for r in by_bot if r["originator_id"] == str(t.a)] == list(
            range(1, t.ledger.get_slot(t.a).version + 1)
        )
        assert list(export(models, bot="nobody")) == []
        with pytest.raises(BadInput, match="new file"):
            import_bundle((_dumps(r) for r in bundle), path)

    # --- command line --------------------------------------------------------------------

    def test_cli(
        self, store: Store, tmp_path: Path, replay_target: str, monkeypatch: pytest.MonkeyPatch
    ) -> None:
        t = timeline(store)
        monkeypatch.setenv("LEDGER_DATABASE_URL", store.url)
        app = build_app()  # the real entry point's app, on this store
        run = CliRunner().invoke

        result = run(app, ["at", at(65).isoformat()])
        assert result.exit_code == 0, result.output
        assert "pool-meet-002" in result.stdout and "error=1" in result.stdout
        result = run(app, ["at", "2025-12-17T22:01:05Z", "--json"])
        assert result.exit_code == 0, result.output
        assert result.stdout.splitlines()[-1].startswith('{"at"')
        assert run(app, ["at", "yesterday"]).exit_code == 2
        assert "cannot parse timestamp 'yesterday'" in run(app, ["at", "yesterday"]).stderr

        assert run(app, ["history", "pool-meet-002"]).exit_code == 0
        result = run(app, ["history", "ghost"])
        assert result.exit_code == 2 and "slot_not_found" in result.stderr

        result = run(app, ["audit", "--bot", "bot-1", "--json"])
        assert result.exit_code == 0 and len(result.stdout.splitlines()) == 4
        result = run(app, ["audit", "--type", "SlotExploded"])
        assert result.exit_code == 2 and "unknown event type" in result.stderr
        result = run(app, ["audit", "--bot", "nobody"])
        assert result.exit_code == 0 and "no events match" in result.stderr
        assert "pool-meet-001" in run(app, ["audit", "--bot", "bot-2", "--slots"]).stdout
        failures = run(app, ["audit", "--failures", "--since", at(0).isoformat(), "--json"])
        assert json.loads(failures.stdout.splitlines()[-1])["reason_code"] == "deploy_timeout"
        assert run(app, ["audit", "--slots"]).exit_code == 2

        result = run(app, ["diff", at(35).isoformat(), at(75).isoformat(), "--json"])
        assert result.exit_code == 0 and len(result.stdout.splitlines()) == 2
        assert run(app, ["diff", at(75).isoformat(), at(35).isoformat()]).exit_code == 2

        result = run(app, ["export", "--slot", "pool-meet-002"])
        assert result.exit_code == 0
        bundle = tmp_path / "incident.ndjson"
        bundle.write_text(result.stdout)
        local = tmp_path / "local.db"
        result = run(app, ["import", str(bundle), "--into", str(local)])
        assert result.exit_code == 0, result.output
        assert run(app, ["import", str(bundle), "--into", str(local)]).exit_code == 2
        missing = str(tmp_path / "missing.ndjson")
        assert run(app, ["import", missing, "--into", str(tmp_path / "x.db")]).exit_code == 2

        assert run(app, ["replay", "--until", "5"]).exit_code == 2
        result = run(app, ["replay"])
        assert result.exit_code == 0 and "swapped them in" in result.stdout
        result = run(app, ["replay", "--until", at(55).isoformat(), "--into", replay_target])
        assert result.exit_code == 0 and f"position {t.started}" in result.stdout
        result = run(app, ["at", at(200).isoformat(), "--models", replay_target])
        assert result.exit_code == 0 and "busy=1" in result.stdout  # as of 55s, not now
        missing = "r_nothing_here" if store.is_postgres else str(tmp_path / "nothing.db")
        assert run(app, ["history", "pool-meet-001", "--models", missing]).exit_code == 2
        assert run(app, ["replay", "--until", "999999", "--into", replay_target]).exit_code == 2


def _dumps(record: dict[str, Any]) -> str:
    return json.dumps(record)
