"""A poison event on PostgreSQL, through the real entry points (``slotledger serve`` and
the CLI as subprocesses): the read side parks it, goes on, and says so until an operator
skips it.

The poison is real: a ``SlotFailed`` whose reason holds a NUL, which the event store
keeps (events are bytes) but PostgreSQL refuses in the audit model's text column. The
API refuses such a reason now, so the test writes the event with the library directly,
bypassing the domain's check, as an older version or another writer could have.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from ledger.application import SlotLedger
from ledger.bootstrap import build_ledger
from ledger.domain import Slot
from ledger.settings import load_settings
from tests.blackbox import cluster, run_cli, wait_for


def write_poison(ledger: SlotLedger) -> int:
    """A NUL in a failure reason, straight into the store; returns its position."""
    slot_id = ledger.provision("bot", ctx=ledger.context("operator")).slot.id
    slot: Slot = ledger.repository.get(slot_id)
    slot.trigger_event(
        Slot.SlotFailed,
        timestamp=ledger.clock(),
        actor="operator",
        correlation_id="poison",
        bot_id=None,
        reason="disk \x00 full",
        reason_code="operator",
    )
    recordings = ledger.save(slot)
    return recordings[-1].notification.id


def readyz(server_url: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(server_url + "/readyz", timeout=10)
    return answer.status_code, answer.json()


def test_a_poison_event_is_parked_shown_and_skipped(postgres_url: str, tmp_path: Path) -> None:
    with cluster(tmp_path) as running:
        fake = running.fake_coolify()
        env = running.env(postgres_url, fake)
        server = running.serve(env)
        wait_for(lambda: readyz(server.url)[0] == 200, what="a ready server")

        ledger = build_ledger(load_settings(database_url=postgres_url))
        try:
            poison = write_poison(ledger)
            later = ledger.provision("bot", ctx=ledger.context("operator")).slot  # after the poison
        finally:
            ledger.close()

        with server.client() as client:
            # The followers go past it: the later event is projected.
            wait_for(
                lambda: client.get(f"/v1/slots/{later.name}").status_code == 200,
                what="the event after the poison in the read models",
            )
            status, body = wait_for(
                lambda: (r := readyz(server.url))[1]["parked"] and r,
                what="/readyz showing the parked event",
            )
            assert status == 503 and body["parked"] == {"read-models": 1}
            assert any("parked" in p for p in body["problems"]), body["problems"]
            loops = {loop["name"]: loop for loop in body["loops"]}
            assert loops["read-models"]["state"] == "running"  # it went on
            assert loops["read-models"]["lag_events"] == 0
            metrics = client.get("/metrics").text
            assert 'slotledger_parked_events{consumer="read-models"} 1.0' in metrics
            assert 'slotledger_loop_up{loop="read-models"} 1.0' in metrics

        listed = run_cli("parked", "--json", env=env)
        assert listed.returncode == 0, listed.stderr
        [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
        assert (entry["consumer"], entry["position"]) == ("read-models", poison)
        assert entry["topic"].endswith("Slot.SlotFailed") and entry["status"] == "parked"
        assert "CharacterNotInRepertoire" in entry["error"], entry["error"]

        retried = run_cli("parked", "retry", str(poison), env=env)
        assert retried.returncode == 1 and "still parked" in retried.stderr  # still poison

        skipped = run_cli("parked", "skip", str(poison), env=env)
        assert skipped.returncode == 0, skipped.stderr
        assert f"skipped event {poison} for read-models" in skipped.stdout
        status, body = wait_for(
            lambda: (r := readyz(server.url))[0] == 200 and r, what="ready again"
        )
        assert body["parked"] == {} and body["problems"] == []
        assert run_cli("parked", env=env).stderr.strip() == "no parked events"
        # A rebuild leaves the skipped event out too, instead of failing on it.
        rebuilt = run_cli("replay", env=env)
        assert rebuilt.returncode == 0, rebuilt.stderr
