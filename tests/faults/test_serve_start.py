"""``slotledger serve`` starting while the store is down, and beside busy servers, as
subprocesses on PostgreSQL (tests/blackbox.py).

- A server started during an outage retries its start (one line per attempt) and comes
  up once the store answers; with no store for ``LEDGER_START_TIMEOUT_S`` it exits 1;
  bad configuration exits 2 at once.
- A server (re)started on a schema where two servers run under write load comes up
  every time: a schema already in place runs no DDL, so it takes no lock that could
  deadlock with the running writers.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from tests.blackbox import cluster, free_port, run_cli, wait_for
from tests.faults.cluster import Cluster
from tests.faults.test_outages_blackbox import pg_cluster

__all__ = ["pg_cluster"]  # the throwaway server's fixture, used here too


def test_a_server_started_during_an_outage_comes_up_when_the_store_does(
    pg_cluster: Cluster, tmp_path: Path
) -> None:
    pg_cluster.stop("fast")
    with cluster(tmp_path) as running:
        fake = running.fake_coolify()
        env = running.env(pg_cluster.url("ledger"), fake, LEDGER_START_TIMEOUT_S="600")
        server = running.serve(env, wait=False)
        wait_for(
            lambda: server.output().count("start attempt") >= 2,
            what="the server retrying its start",
        )
        assert server.alive()
        pg_cluster.start()
        server.wait_ready()
        assert "Traceback" not in server.output()


def test_no_store_for_the_start_timeout_exits_1_and_bad_configuration_exits_2(
    tmp_path: Path,
) -> None:
    nowhere = f"postgresql://postgres@127.0.0.1:{free_port()}/ledger"
    env = {"LEDGER_DATABASE_URL": nowhere, "LEDGER_START_TIMEOUT_S": "2"}
    gave_up = run_cli("serve", "--port", str(free_port()), env=env, cwd=tmp_path)
    assert gave_up.returncode == 1, gave_up.stderr
    assert "start attempt 1 failed" in gave_up.stderr
    assert gave_up.stderr.strip().splitlines()[-1].startswith("error: store_unavailable: ")
    assert "Traceback" not in gave_up.stderr

    bad = run_cli(
        "serve",
        "--port",
        str(free_port()),
        env={"LEDGER_DATABASE_URL": nowhere, "LEDGER_START_TIMEOUT_S": "nope"},
        cwd=tmp_path,
    )
    assert bad.returncode == 2 and "LEDGER_START_TIMEOUT_S" in bad.stderr, bad.stderr
    assert "start attempt" not in bad.stderr


def _write_load(urls: list[str], stop: threading.Event) -> Iterator[int]:
    """Deploy and release bots through the running servers until ``stop``; yields the
    status of each answer."""
    clients = [httpx.Client(base_url=u, timeout=30) for u in urls]
    try:
        n = 0
        while not stop.is_set():
            client, bot = clients[n % len(clients)], f"load-{n % 6}"
            yield client.post("/v1/deployments", json={"bot_id": bot}).status_code
            yield client.delete(f"/v1/deployments/{bot}").status_code
            n += 1
    finally:
        for c in clients:
            c.close()


def test_a_server_restarted_beside_two_busy_servers_comes_up_every_time(
    postgres_url: str, tmp_path: Path
) -> None:
    with cluster(tmp_path) as running:
        fake = running.fake_coolify()
        env = running.env(postgres_url, fake, LEDGER_MAX_POOL_SIZE="4")
        busy = [running.serve(env, name=f"busy-{i}") for i in range(2)]
        assert run_cli("provision", "--count", "4", env=env, cwd=tmp_path).returncode == 0
        stop, statuses = threading.Event(), []
        loaders = [
            threading.Thread(
                target=lambda: statuses.extend(_write_load([s.url for s in busy], stop))
            )
            for _ in range(4)
        ]
        for loader in loaders:
            loader.start()
        try:
            wait_for(lambda: len(statuses) > 20, what="write load on the two servers")
            for attempt in range(3):
                started = time.monotonic()
                restarted = running.serve(env, name=f"restarted-{attempt}")  # waits for it
                print(f"restart {attempt}: up after {time.monotonic() - started:.2f}s")
                assert "Deadlock" not in restarted.output()
                restarted.stop()
        finally:
            stop.set()
            for loader in loaders:
                loader.join(timeout=60)
        assert all(s < 500 for s in statuses), sorted(set(statuses))
