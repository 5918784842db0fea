"""The Coolify request budget: one sliding-window log per process (per store on
PostgreSQL), drawn from before every request the client sends, retries included.

In process against the fake, every request checked against the official spec; then
through real processes: ``serve`` under load never sends more than its budget in a
minute, counted from the fake's own record of what it received.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import httpx
import pytest
from psycopg_pool import ConnectionPool
from pyrate_limiter import Duration, PostgresBucket, Rate

from ledger.adapters.coolify import CoolifyRateLimited
from ledger.adapters.coolify.budget import TABLE, RequestBudget
from ledger.devtools.fake_coolify import FakeCoolify
from ledger.settings import PostgresStore, load_settings
from tests.blackbox import cluster, wait_for
from tests.integration.coolify.support import MakeClient


def _store(postgres_url: str) -> PostgresStore:
    store = load_settings(database_url=postgres_url).store
    assert isinstance(store, PostgresStore)
    return store


def test_a_full_window_makes_the_next_draw_wait_and_then_give_up() -> None:
    budget = RequestBudget(3)
    try:
        assert [budget.acquire(0.05) for _ in range(4)] == [True, True, True, False]
        stats = budget.stats()
        assert (stats.sent, stats.waits, stats.timeouts, stats.available) == (3, 1, 1, 0)
        assert stats.waited_s >= 0.05
        assert not stats.shared
    finally:
        budget.close()


def test_threads_of_one_process_draw_from_one_budget() -> None:
    budget = RequestBudget(10)
    drawn: list[bool] = []
    lock = threading.Lock()

    def draw() -> None:
        for _ in range(5):
            got = budget.acquire(0.05)
            with lock:
                drawn.append(got)

    threads = [threading.Thread(target=draw) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    budget.close()
    assert drawn.count(True) == 10
    assert drawn.count(False) == 10


@pytest.mark.postgres
def test_processes_of_one_store_share_the_budget(postgres_url: str) -> None:
    store = _store(postgres_url)
    first = RequestBudget.on_postgres(store.conninfo(), store.schema, 4)
    second = RequestBudget.on_postgres(store.conninfo(), store.schema, 4)
    try:
        assert [first.acquire(0.05) for _ in range(3)] == [True, True, True]
        assert [second.acquire(0.05) for _ in range(2)] == [True, False]
        assert first.stats().shared
        assert second.stats().available == 0
    finally:
        first.close()
        second.close()


@pytest.mark.postgres
@pytest.mark.parametrize("shared", [False, True], ids=["process", "store"])
def test_a_large_budget_is_drawn_in_blocks_whose_rest_lapses(
    postgres_url: str, shared: bool
) -> None:
    """2,000 a minute: blocks of 10, one draw per block; what a block leaves unsent
    lapses, so the window never counts more than was drawn."""
    store = _store(postgres_url)
    budget = (
        RequestBudget.on_postgres(store.conninfo(), store.schema, 2000)
        if shared
        else RequestBudget(2000)
    )
    try:
        budget.LEASE_S = 3600.0  # nothing lapses while the first blocks are used
        assert budget.block == 10
        assert all(budget.acquire(0.05) for _ in range(25))
        stats = budget.stats()
        assert (stats.sent, stats.available) == (25, 2000 - 30)
        budget.LEASE_S = 0.0  # the next blocks lapse at once: one request each
        assert [budget.acquire(0.05) for _ in range(7)] == [True] * 7  # 5 leased, 2 blocks
        stats = budget.stats()
        assert (stats.sent, stats.available) == (32, 2000 - 50)
    finally:
        budget.close()


def test_an_unreachable_shared_budget_falls_back_to_the_process_own(postgres_url: str) -> None:
    store = _store(postgres_url)
    pool = ConnectionPool(
        store.conninfo(),
        kwargs={"options": f"-c search_path={store.schema}"},
        timeout=1.0,
        open=True,
    )
    budget = RequestBudget(2, PostgresBucket(pool, TABLE, [Rate(2, Duration.MINUTE)]))
    try:
        pool.close()  # the database is gone, as far as the budget can tell
        assert [budget.acquire(0.05) for _ in range(3)] == [True, True, False]
        assert budget.stats().fallbacks == 1
    finally:
        budget.close()


def test_the_client_draws_before_every_request_and_sends_none_without_room(
    make_client: MakeClient, fake: FakeCoolify
) -> None:
    client = make_client(budget=RequestBudget(2), budget_wait_s=0.05)
    assert client.version() and client.version()
    with pytest.raises(CoolifyRateLimited, match="request budget of 2/min"):
        client.version()
    assert len(fake.requests()) == 2
    assert client.budget is not None and client.budget.stats().timeouts == 1


def test_retries_draw_from_the_budget_too(make_client: MakeClient, fake: FakeCoolify) -> None:
    fake.set_faults(error_rate=1.0)
    client = make_client(budget=RequestBudget(3), budget_wait_s=0.05, max_retries=5)
    with pytest.raises(CoolifyRateLimited):
        client.version()
    assert len(fake.requests()) == 3


# --- through real processes --------------------------------------------------------------

BUDGET = 12
"""Requests a minute for the black-box test: four deployments ask for more at once."""


def _received(fake_url: str) -> int:
    requests: list[Any] = httpx.get(f"{fake_url}/_fake/state", timeout=10).json()["requests"]
    return len(requests)


def _metric(server_url: str, name: str) -> float:
    for line in httpx.get(f"{server_url}/metrics", timeout=10).text.splitlines():
        if line.startswith(name + " "):
            return float(line.split()[1])
    raise AssertionError(f"{name} not in /metrics")


def test_serve_under_load_sends_no_more_than_its_budget_in_a_minute(
    tmp_path: Path, sqlite_url: str
) -> None:
    """Four deployments in flight ask for more than the budget's minute holds; every
    sample of what the fake received, taken within a minute of serve's start, is at most
    the budget."""
    with cluster(tmp_path) as running:
        fake = running.fake_coolify(deploy_delay=30.0, rate_limit=200)
        env = running.env(
            sqlite_url,
            fake,
            LEDGER_COOLIFY_REQUESTS_PER_MINUTE=str(BUDGET),
            LEDGER_MAX_POOL_SIZE="4",
        )
        before = _received(fake.url)  # the test's own health checks of the fake
        started = time.monotonic()
        server = running.serve(env)
        with server.client() as api:
            for bot in ("b1", "b2", "b3", "b4"):
                assert api.post("/v1/deployments", json={"bot_id": bot}).status_code < 300
        wait_for(
            lambda: _metric(server.url, "slotledger_coolify_budget_waits_total") > 0,
            what="a Coolify request waiting for the budget",
        )
        samples: list[tuple[float, int]] = []
        for _ in range(20):
            samples.append((time.monotonic() - started, _received(fake.url) - before))
            time.sleep(0.5)
        in_first_minute = [count for at, count in samples if at < 59]
        assert max(in_first_minute, default=0) <= BUDGET, samples
        assert _metric(server.url, "slotledger_coolify_budget_per_minute") == BUDGET
