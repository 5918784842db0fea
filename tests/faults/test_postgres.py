"""PostgreSQL going away: a restart under load, on a cluster the test owns.

The service (write side, read models and their follower, HTTP API) runs against a
throwaway cluster while a client acquires and releases slots in a loop. The cluster is
killed (``pg_ctl stop -m immediate``, a crash) and started again. While it is down,
commands fail and ``/readyz`` answers 503; within 10 s of its return both recover on
their own; every command acknowledged before, during or after is in the log.
"""

from __future__ import annotations

import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import pytest
from fastapi.testclient import TestClient

from ledger.application import SlotLedger, new_correlation_id
from ledger.devtools.fake_coolify import FakeCoolifyServer, FakeSettings
from ledger.entrypoints.web.app import create_app
from ledger.service import Service
from ledger.settings import load_settings
from tests.faults.cluster import Cluster, pg_bin
from tests.faults.support import Ack, ClientLog, assert_log_sound

RECOVERY_S = 10.0
SETUP_S = 60.0
"""Getting going is not what this test measures: a loaded machine may take its time."""
DOWN_S = 15.0


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    bin_dir = pg_bin()
    if bin_dir is None:
        pytest.skip("no PostgreSQL binaries (initdb, pg_ctl) on this machine")
    with tempfile.TemporaryDirectory(prefix="slotledger-faults-") as root:
        cluster = Cluster(bin_dir, Path(root))
        cluster.init()
        cluster.start()
        try:
            yield cluster
        finally:
            cluster.stop("immediate", check=False)


@dataclass
class Client:
    """Acquires and releases in a loop; remembers what was acknowledged and when
    commands failed."""

    ledger: SlotLedger
    log: ClientLog = field(default_factory=ClientLog)
    failed_at: list[float] = field(default_factory=list)
    succeeded_at: list[float] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)

    def run(self) -> None:
        bot: str = "restart-bot"
        holding: bool | None = False
        while not self.stop.is_set():
            cid = new_correlation_id()
            try:
                if holding is None:  # after a failure: did the command land after all?
                    holding = self.ledger.index.slot_for_bot(bot) is not None
                if holding:
                    outcome = self.ledger.release(bot, ctx=self.ledger.context("api").under(cid))
                    self.log.record(Ack(bot, cid, "released at once", outcome.position))
                else:
                    outcome = self.ledger.acquire(bot, ctx=self.ledger.context("api").under(cid))
                    self.log.record(Ack(bot, cid, "acquired", outcome.position))
                holding = not holding
                self.succeeded_at.append(time.monotonic())
            except Exception:  # the store is down: any error, as an API caller sees it
                self.failed_at.append(time.monotonic())
                holding = None
                time.sleep(0.05)


def wait_until(condition: object, timeout: float, step: float = 0.1) -> float:
    """Seconds until ``condition()`` held; fails the test after ``timeout``."""
    started = time.monotonic()
    while not condition():  # type: ignore[operator]
        assert time.monotonic() - started < timeout, f"not within {timeout:g}s"
        time.sleep(step)
    return time.monotonic() - started


@pytest.mark.timeout(240)
def test_restart_under_load(cluster: Cluster) -> None:
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE ledger")
    fake_settings = FakeSettings(deploy_delay=0.05, rate_limit=0)
    with FakeCoolifyServer(fake_settings) as fake:
        settings = load_settings(
            database_url=cluster.url("ledger"),
            coolify_url=fake.base_url,
            coolify_token=fake.token,
            coolify_project_uuid=fake_settings.project_uuid,
            coolify_server_uuid=fake_settings.server_uuid,
            max_pool_size=4,
        )
        service = Service(settings, deploy_poll_s=0.05, drain_interval_s=0.2)
        with TestClient(create_app(service)) as http:
            for _ in range(4):
                service.ledger.provision("bot", ctx=service.ledger.context("operator"))
            client = Client(service.ledger)
            loader = threading.Thread(target=client.run, daemon=True)
            loader.start()
            try:
                wait_until(lambda: http.get("/readyz").status_code == 200, SETUP_S)
                wait_until(lambda: len(client.log.acks) >= 20, SETUP_S)

                cluster.stop("immediate")
                down_at = time.monotonic()
                not_ready_s = wait_until(lambda: http.get("/readyz").status_code == 503, DOWN_S)
                time.sleep(max(0.0, DOWN_S - (time.monotonic() - down_at)))

                cluster.start()
                up_at = time.monotonic()
                commands_s = wait_until(
                    lambda: any(t > up_at for t in client.succeeded_at), RECOVERY_S
                )
                ready_s = wait_until(lambda: http.get("/readyz").status_code == 200, RECOVERY_S)
            finally:
                client.stop.set()
                loader.join(timeout=30)
            failed_while_down = [t for t in client.failed_at if down_at <= t <= up_at]
            print(
                f"\nnot ready {not_ready_s:.1f}s after the crash; {len(failed_while_down)} "
                f"commands failed in the {DOWN_S:g}s down; commands back {commands_s:.1f}s and "
                f"ready {ready_s:.1f}s after the restart; {len(client.log.acks)} acknowledged"
            )
            assert failed_while_down, "no command failed while the store was down"
            assert_log_sound(service.ledger, client.log)
