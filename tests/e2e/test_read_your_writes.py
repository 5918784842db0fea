"""Read-your-writes through running ``slotledger serve`` processes, on both stores.

Commands answer from their own result, without waiting for the read models; a query
waits instead, until the models include every write committed before it arrived. So a
client that got an answer reads its write next, from the same server and, on
PostgreSQL, from any other server on the database: each query reads the log's head from
the store itself. Every read below comes right after the answer, never retried: a read
that missed the write fails the test. (The deploy running in the background may write
more in between, such as the slot's application: only what the client wrote is compared.)
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.blackbox import cluster

CYCLES = 12
"""request -> read -> release -> read, one bot after the other."""
POOL = str(CYCLES + 1)
"""Room for a new slot at every request, whether or not a released one is clear yet."""


def holdings(reader: httpx.Client, bot: str) -> tuple[dict[str, Any] | None, dict[str, Any]]:
    """The slot the read models show ``bot`` holding (None: none), and the pool's stats."""
    slots = reader.get("/v1/slots")
    assert slots.status_code == 200, slots.text
    held = [s for s in slots.json() if s["bot_id"] == bot]
    assert len(held) <= 1, held
    stats = reader.get("/v1/pool/stats")
    assert stats.status_code == 200, stats.text
    return (held[0] if held else None), stats.json()


def cycles(writer: httpx.Client, reader: httpx.Client) -> None:
    """Each write is read back at once, from ``reader``, after ``writer`` answered."""
    for n in range(CYCLES):
        bot = f"ryw-{n}"
        asked = writer.post("/v1/deployments", json={"bot_id": bot})
        assert asked.status_code == 201, asked.text
        slot_id = asked.json()["slot_id"]
        slot = reader.get(f"/v1/slots/{slot_id}")
        assert slot.status_code == 200, slot.text  # a slot made for this request, too
        assert (slot.json()["status"], slot.json()["bot_id"]) == ("deploying", bot), n
        held, stats = holdings(reader, bot)
        assert held is not None and held["slot_id"] == slot_id, (n, held)
        assert stats["deploying"] >= 1, (n, stats)

        released = writer.delete(f"/v1/deployments/{bot}")
        assert released.status_code == 200 and released.json()["outcome"] == "released"
        assert reader.get(f"/v1/slots/{slot_id}").json()["bot_id"] is None, n
        held, _ = holdings(reader, bot)
        assert held is None, (n, held)


@pytest.mark.parametrize("store", ["sqlite", "postgres"])
def test_a_client_reads_its_own_writes_at_once(
    tmp_path: Path, store: str, request: pytest.FixtureRequest
) -> None:
    url = request.getfixturevalue("sqlite_url" if store == "sqlite" else "postgres_url")
    with cluster(tmp_path) as running:
        fake = running.fake_coolify(deploy_delay=3600)  # a slot stays deploying while held
        server = running.serve(running.env(url, fake, LEDGER_MAX_POOL_SIZE=POOL))
        with server.client() as http:
            cycles(http, http)


@pytest.mark.postgres
def test_any_server_answers_with_the_writes_another_server_acknowledged(
    tmp_path: Path, postgres_url: str
) -> None:
    with cluster(tmp_path) as running:
        fake = running.fake_coolify(deploy_delay=3600)
        env = running.env(postgres_url, fake, LEDGER_MAX_POOL_SIZE=POOL)
        first, second = running.serve(env, name="serve-a"), running.serve(env, name="serve-b")
        with first.client() as a, second.client() as b:
            cycles(a, b)  # one of the two leads the read models: each way round once
            cycles(b, a)
