"""Drift between the ledger and Coolify, reconciled: orphaned applications are recorded
(``DriftDetected``), then deleted or quarantined per ``RETIRE_MODE``; a slot whose
application vanished is recorded too; an application whose creation is in flight is
left alone.

In process against the fake (every request checked against the official spec), the races
step by step; through real processes, ``serve`` on SQLite (which runs the policy worker,
and so the reconciler) finds an orphan made directly on the fake and acts on it.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.adapters.coolify import CoolifyClient, CreateDockerImageApp
from ledger.application import SlotLedger
from ledger.application.reconcile import DriftConfig, Reconciler
from ledger.bootstrap import build_ledger
from ledger.devtools.fake_coolify import FakeCoolifyServer, FakeSettings
from ledger.domain.drift import Drift, drift_id
from ledger.domain.invariants import check_events, iter_log
from ledger.settings import load_settings
from tests.blackbox import FAKE_PROJECT, FAKE_SERVER, FAKE_TOKEN, HttpProcess, cluster, wait_for
from tests.integration.coolify.spec_check import SpecValidator, load_spec

FAKE = FakeSettings(deploy_delay=0.05, delete_delay=0.05, rate_limit=0, seed=9)
CONFIG = DriftConfig(
    pool_name="default",
    slot_prefix="pool",
    project_uuid=FAKE.project_uuid,
    environment_name=FAKE.environment_name,
    retire_mode="delete",
    interval_s=1.0,
    grace_s=0.0,
)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCoolifyServer]:
    with FakeCoolifyServer(FAKE) as server:
        yield server


@pytest.fixture
def ledger(sqlite_url: str, fake: FakeCoolifyServer) -> Iterator[SlotLedger]:
    fake.fake.reset()
    ledger = build_ledger(load_settings(database_url=sqlite_url))
    yield ledger
    ledger.close()


@pytest.fixture(scope="module")
def validator() -> SpecValidator:
    return SpecValidator(load_spec())


@pytest.fixture
def coolify(fake: FakeCoolifyServer, validator: SpecValidator) -> Iterator[CoolifyClient]:
    with CoolifyClient(fake.base_url, fake.token, event_hooks={"request": [validator]}) as client:
        yield client


def _app(coolify: CoolifyClient, name: str) -> str:
    request = CreateDockerImageApp(
        project_uuid=FAKE.project_uuid,
        server_uuid=FAKE.server_uuid,
        environment_name=FAKE.environment_name,
        docker_registry_image_name="ghcr.io/example/bot",
        name=name,
    )
    return coolify.create_dockerimage_application(request).uuid


def _reconciler(ledger: SlotLedger, coolify: CoolifyClient, **changes: Any) -> Reconciler:
    return Reconciler(ledger, coolify, replace(CONFIG, **changes))


def _drift_events(ledger: SlotLedger) -> list[Drift.DriftDetected]:
    events = ledger.events.get(drift_id(CONFIG.pool_name))
    return [e for e in events if isinstance(e, Drift.DriftDetected)]


def _deleted(fake: FakeCoolifyServer) -> list[str]:
    return [r.path.rsplit("/", 1)[-1] for r in fake.fake.requests() if r.method == "DELETE"]


def test_an_app_whose_creation_is_in_flight_is_never_taken_for_an_orphan(
    ledger: SlotLedger, coolify: CoolifyClient, fake: FakeCoolifyServer
) -> None:
    slot = ledger.provision("bot", ctx=ledger.context("operator")).slot
    acquired = ledger.acquire("b1").slot  # deploying, its application being created
    app = _app(coolify, slot.name)  # Coolify answered; SlotAppCreated not recorded yet
    reconciler = _reconciler(ledger, coolify)
    assert reconciler.reconcile() == []
    ledger.app_created(slot.id, app, lease=acquired.lease)
    assert reconciler.reconcile() == []
    assert fake.fake.application(app) is not None
    assert _drift_events(ledger) == []


def test_an_orphan_younger_than_the_grace_waits_then_is_recorded_once_and_deleted(
    ledger: SlotLedger, coolify: CoolifyClient, fake: FakeCoolifyServer
) -> None:
    slot = ledger.provision("bot", ctx=ledger.context("operator")).slot
    ledger.app_created(slot.id, _app(coolify, slot.name))
    orphan = _app(coolify, slot.name)  # a crash between creating and recording, earlier
    _app(coolify, "pool-party")  # not named like a slot: never the pool's
    assert _reconciler(ledger, coolify, grace_s=3600).reconcile() == []
    reconciler = _reconciler(ledger, coolify)
    [finding] = reconciler.reconcile()
    assert (finding.kind, finding.decision, finding.outcome) == ("orphan", "delete", "deleted")
    assert _deleted(fake) == [orphan]
    reconciler.reconcile()  # Coolify may still list it while its deletion job waits
    [event] = _drift_events(ledger)
    assert check_events(iter_log(ledger)).ok  # the log's checker takes drift events
    assert (event.kind, event.decision, event.app_uuid) == ("orphan", "delete", orphan)
    assert event.slot_id == slot.id and event.actor == "policy:drift"
    assert "no slot has it" in event.observed and "deleted" in event.reason


def test_a_quarantined_orphan_is_renamed_described_and_kept(
    ledger: SlotLedger, coolify: CoolifyClient, fake: FakeCoolifyServer
) -> None:
    orphan = _app(coolify, "pool-bot-007")
    reconciler = _reconciler(ledger, coolify, retire_mode="quarantine")
    [finding] = reconciler.reconcile()
    assert finding.outcome == "quarantined"
    kept = fake.fake.application(orphan)
    assert kept is not None and kept["name"] == "pool-bot-007-quarantined"
    assert kept["description"].startswith("[QUARANTINED] Orphan of slotledger pool default")
    assert reconciler.reconcile() == []  # no longer named like a slot
    assert [e.decision for e in _drift_events(ledger)] == ["quarantine"]
    assert _deleted(fake) == []


def test_a_vanished_application_is_recorded_once_and_a_dry_run_writes_nothing(
    ledger: SlotLedger, coolify: CoolifyClient, fake: FakeCoolifyServer
) -> None:
    slot = ledger.provision("bot", ctx=ledger.context("operator")).slot
    app = _app(coolify, slot.name)
    ledger.app_created(slot.id, app)
    coolify.delete_application(app)  # someone deletes it in Coolify
    wait_for(lambda: fake.fake.application(app) is None, what="the fake to delete it")
    reconciler = _reconciler(ledger, coolify)
    [planned] = reconciler.reconcile(dry_run=True)
    assert planned.outcome == "planned" and _drift_events(ledger) == []
    [finding] = reconciler.reconcile()
    assert (finding.kind, finding.decision, finding.recorded) == ("vanished", "recreate", True)
    [again] = reconciler.reconcile()
    assert not again.recorded
    [event] = _drift_events(ledger)
    assert event.slot_id == slot.id and event.app_uuid == app


# --- through real processes --------------------------------------------------------------


def _orphan_on(fake: HttpProcess, name: str) -> str:
    body = {
        "project_uuid": FAKE_PROJECT,
        "server_uuid": FAKE_SERVER,
        "environment_name": "production",
        "docker_registry_image_name": "ghcr.io/example/bot",
        "name": name,
    }
    headers = {"Authorization": f"Bearer {FAKE_TOKEN}", "Accept": "application/json"}
    answer = httpx.post(f"{fake.url}/api/v1/applications/dockerimage", json=body, headers=headers)
    assert answer.status_code == 201, answer.text
    uuid: str = answer.json()["uuid"]
    return uuid


def _fake_app(fake: HttpProcess, uuid: str) -> dict[str, Any] | None:
    apps: dict[str, Any] = httpx.get(f"{fake.url}/_fake/state", timeout=10).json()["apps"]
    return apps.get(uuid)


def _drift_event(server: HttpProcess, app_uuid: str) -> dict[str, Any] | None:
    events = httpx.get(f"{server.url}/v1/events", params={"limit": 10_000}, timeout=10).json()
    found = [
        e for e in events if e["type"] == "DriftDetected" and e["data"]["app_uuid"] == app_uuid
    ]
    return found[0] if found else None


@pytest.mark.parametrize(
    ("store", "mode"),
    [("sqlite", "quarantine"), pytest.param("postgres", "delete", marks=pytest.mark.postgres)],
)
def test_the_worker_finds_an_orphan_made_on_coolify_records_it_and_acts(
    request: pytest.FixtureRequest, tmp_path: Path, store: str, mode: str
) -> None:
    """On SQLite ``serve`` runs the policy worker itself; on PostgreSQL a ``slotledger
    worker`` beside it leads and reconciles."""
    database_url = str(request.getfixturevalue(f"{store}_url"))
    with cluster(tmp_path) as running:
        fake = running.fake_coolify()
        env = running.env(
            database_url,
            fake,
            LEDGER_RETIRE_MODE=mode,
            LEDGER_DRIFT_INTERVAL_S="0.5",
            LEDGER_DRIFT_GRACE_S="0",
            LEDGER_POLICY_TICK_S="0.2",
        )
        server = running.serve(env)
        if store == "postgres":
            running.worker(env)
        orphan = _orphan_on(fake, "pool-bot-042")
        event = wait_for(lambda: _drift_event(server, orphan), what="a DriftDetected event")
        assert event["actor"] == "policy:drift"
        assert event["data"]["kind"] == "orphan" and event["data"]["decision"] == mode
        assert "pool-bot-042" in event["data"]["observed"]
        if mode == "delete":
            wait_for(lambda: _fake_app(fake, orphan) is None, what="the orphan deleted")
        else:
            kept = wait_for(
                lambda: (
                    (app := _fake_app(fake, orphan))
                    and app["name"].endswith("-quarantined")
                    and app
                ),
                what="the orphan quarantined",
            )
            assert kept["description"].startswith("[QUARANTINED]")
