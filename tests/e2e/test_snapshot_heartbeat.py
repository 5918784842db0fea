"""Issue 10, defect 2, through a running ``slotledger serve``: a slot loaded from a snapshot
must behave as one built by replay. Before the fix its status came back a plain ``str``,
so the holder's heartbeat no longer started it.

The defect shows only when the latest event that set the status is inside the snapshot
(a later transition sets a real ``SlotStatus`` again), so the test cycles acquire and
release on the one slot until a snapshot falls within a lease, between its acquire and
the heartbeat; the snapshot is then read from the store to prove it was crossed."""

from __future__ import annotations

import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import httpx
import psycopg

from ledger.application import SlotLedger
from ledger.domain import Slot
from tests.blackbox import cluster, wait_for

MAX_CYCLES = 120
INTERVAL = SlotLedger.snapshotting_intervals[Slot]
QUICK_RELEASE = {
    "LEDGER_STATUS_LAG_S": "1",
    "LEDGER_POLL_INITIAL_S": "0.05",
    "LEDGER_POLL_MAX_S": "0.25",
}
"""A release cancels the lease's running deployment and gives the status this long to
show a container it may have started: the fake's status sweep is short."""


def snapshot_versions(database_url: str) -> set[int]:
    """The slot snapshots in the store, read beside the server."""
    url = urlsplit(database_url)
    if url.scheme == "sqlite":
        with sqlite3.connect(url.path) as conn:
            rows = conn.execute("SELECT originator_version FROM stored_snapshots").fetchall()
    else:
        schema = parse_qs(url.query)["schema"][0]
        with psycopg.connect(database_url.split("?", 1)[0]) as conn:
            rows = conn.execute(
                f"SELECT originator_version FROM {schema}.slotledger_snapshots"
            ).fetchall()
    return {int(r[0]) for r in rows}


def deploying(http: httpx.Client, slot_id: str) -> dict[str, Any]:
    """The slot once its deploy has started (its events for this lease are written)."""

    def started() -> dict[str, Any] | None:
        slot: dict[str, Any] = http.get(f"/v1/slots/{slot_id}").json()
        return slot if slot["deployment_uuid"] is not None else None

    found: dict[str, Any] = wait_for(started, what=f"slot {slot_id} deploying")
    assert found["status"] == "deploying", found
    return found


def test_the_holders_heartbeat_starts_a_slot_loaded_from_a_snapshot(
    tmp_path: Path, database_url: str
) -> None:
    with cluster(tmp_path) as running:
        # Deployments never finish: only the holder's heartbeat can start the slot.
        fake = running.fake_coolify(deploy_delay=3600)
        env = running.env(database_url, fake, LEDGER_MAX_POOL_SIZE="1", **QUICK_RELEASE)
        server = running.serve(env)
        with server.client() as http:
            slot_ids, snapshot = set(), None
            for n in range(MAX_CYCLES):
                bot = f"bot-{n}"
                acquired = http.post("/v1/deployments", json={"bot_id": bot})
                assert acquired.status_code == 201, acquired.text
                slot_id = acquired.json()["slot_id"]
                slot_ids.add(slot_id)
                lease = range(acquired.json()["version"], deploying(http, slot_id)["version"] + 1)
                snapshot = next((v for v in lease if v % INTERVAL == 0), None)
                if snapshot is not None:
                    break
                released = http.delete(f"/v1/deployments/{bot}")
                assert released.status_code == 200, released.text
                assert released.json()["outcome"] == "released"
                wait_for(  # the release's second step: the cancelled deploy is cleared
                    lambda s=slot_id: http.get(f"/v1/slots/{s}").json()["status"] == "idle",
                    what=f"slot {slot_id} idle again",
                )
            assert snapshot is not None, f"no snapshot fell within a lease in {MAX_CYCLES} cycles"
            assert slot_ids == {slot_id}
            wait_for(lambda: snapshot in snapshot_versions(database_url), what="the snapshot")

            beat = http.post(f"/v1/slots/{slot_id}/heartbeat", json={"bot_id": bot})
            assert beat.status_code == 200, beat.text
            assert beat.json()["started"] is True
            assert beat.json()["slot"]["status"] == "busy"
            assert wait_for(lambda: http.get(f"/v1/slots/{slot_id}").json()["status"] == "busy")
