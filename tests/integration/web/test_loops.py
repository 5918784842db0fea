"""Every background loop survives any exception, and ``/readyz`` and ``/metrics`` say how
each one does while it fails and after it recovers. Failures are injected into a
consumer's batch handling (the part each consumer supplies), the loop is the real one."""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence
from typing import Any

import psycopg
import pytest
from eventsourcing.persistence import IntegrityError

from ledger.adapters.descriptions import DescriptionMirror
from projections.engine.fold import Batch, Positioned
from projections.engine.follower import LogFollower, ReadModelConsumer
from tests.integration.web.conftest import MakeApi
from tests.integration.web.support import Api, wait_until


class Switch:
    """Makes a method raise ``error`` while on."""

    def __init__(self, error: Exception) -> None:
        self.error = error
        self.on = threading.Event()
        self.on.set()
        self.raised = 0

    def wrap(self, real: Callable[..., Any]) -> Callable[..., Any]:
        def method(this: object, *args: Any) -> Any:
            if self.on.is_set():
                self.raised += 1
                raise self.error
            return real(this, *args)

        return method


def loop(api: Api, name: str) -> dict[str, Any]:
    loops: list[dict[str, Any]] = api.client.get("/readyz").json()["loops"]
    return next(entry for entry in loops if entry["name"] == name)


def test_a_mirror_whose_handling_fails_keeps_running_says_so_and_recovers(
    database_url: str, make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    switch = Switch(IntegrityError("duplicate key value violates unique constraint"))
    real = DescriptionMirror.handle

    def handle(this: DescriptionMirror, events: Sequence[Positioned]) -> None:
        switch.wrap(real)(this, events)

    monkeypatch.setattr(DescriptionMirror, "handle", handle)
    monkeypatch.setattr(LogFollower, "PARK_AFTER", 10**9)  # fail on, for this test
    api = make_api(database_url, start=False)
    api.service.start()
    api.service.ledger.provision("bot", ctx=api.service.ledger.context("operator"))

    wait_until(lambda: switch.raised >= 3, what="the mirror failing")
    failing = loop(api, "description-mirror")
    assert failing["state"] == "failing" and failing["consecutive_failures"] >= 1
    assert failing["last_error"] == (
        "IntegrityError: duplicate key value violates unique constraint"
    )
    # The mirror depends on Coolify: it is shown, and the process stays ready.
    assert api.client.get("/readyz").status_code == 200
    metrics = api.client.get("/metrics").text
    assert 'slotledger_loop_up{loop="description-mirror"} 0.0' in metrics

    switch.on.clear()

    def recovered_and_caught_up() -> bool:
        health = loop(api, "description-mirror")
        return bool(health["state"] == "running" and health["lag_events"] == 0)

    wait_until(recovered_and_caught_up, what="recovery")
    recovered = loop(api, "description-mirror")
    assert recovered["consecutive_failures"] == 0
    assert recovered["failures_total"] >= 3
    metrics = api.client.get("/metrics").text
    assert 'slotledger_loop_up{loop="description-mirror"} 1.0' in metrics
    assert 'slotledger_loop_failures_total{loop="description-mirror"}' in metrics


def test_a_failing_read_model_follower_is_unready_at_once_and_recovers(
    database_url: str, make_api: MakeApi, monkeypatch: pytest.MonkeyPatch
) -> None:
    switch = Switch(psycopg.OperationalError("server closed the connection unexpectedly"))
    real = ReadModelConsumer.take

    def take(this: ReadModelConsumer, start: int, batch: Batch) -> bool:
        result: bool = switch.wrap(real)(this, start, batch)
        return result

    monkeypatch.setattr(ReadModelConsumer, "take", take)
    api = make_api(database_url, start=False)
    api.service.start()
    api.service.ledger.provision("bot", ctx=api.service.ledger.context("operator"))

    wait_until(lambda: api.client.get("/readyz").status_code == 503, what="not ready")
    answer = api.client.get("/readyz").json()
    assert any(
        p.startswith("read-models is failing")
        and p.endswith("OperationalError: server closed the connection unexpectedly")
        for p in answer["problems"]
    ), answer["problems"]
    assert loop(api, "read-models")["state"] == "failing"
    assert api.service.follower.running  # it keeps trying
    assert api.service.models.parked() == []  # an outage is never parked

    switch.on.clear()
    wait_until(
        lambda: (
            api.client.get("/readyz").status_code == 200
            and loop(api, "read-models")["lag_events"] == 0
        ),
        what="ready again, caught up",
    )
    assert loop(api, "read-models")["state"] == "running"
