"""Deploy permits on PostgreSQL: one session per process whatever the number of waiting
deploys, the cap shared across processes, and a dead session replaced with the permits
it held taken back. Two ``PostgresDeployPermits`` stand in for two processes."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator

import psycopg
import pytest

from ledger.adapters.postgres import PostgresDeployPermits
from ledger.application.deploy import DeployFailed
from tests.blackbox import wait_for
from tests.integration.policies.support import store_of

SESSIONS = (
    "SELECT count(*) FROM pg_stat_activity WHERE application_name = %s"
    " AND datname = current_database()"
)


@pytest.fixture
def conninfo(postgres_url: str) -> str:
    return store_of(postgres_url).conninfo()


@pytest.fixture
def scope() -> str:
    return f"test-{random.getrandbits(64):x}"  # other tests on the server use others


def _sessions(conninfo: str) -> int:
    with psycopg.connect(conninfo) as conn:
        row = conn.execute(SESSIONS, (f"slotledger deploy permits pid={os.getpid()}",)).fetchone()
    assert row is not None
    return int(row[0])


class Holders:
    """Threads holding permits until told to let go; counts who holds at once."""

    def __init__(self) -> None:
        self.release = threading.Event()
        self.holding = self.most = 0
        self.refused = 0
        self._lock = threading.Lock()
        self.threads: list[threading.Thread] = []

    def start(self, permits: PostgresDeployPermits, count: int, timeout: float = 120) -> None:
        for _ in range(count):
            thread = threading.Thread(target=self._hold, args=(permits, timeout), daemon=True)
            thread.start()
            self.threads.append(thread)

    def _hold(self, permits: PostgresDeployPermits, timeout: float) -> None:
        try:
            with permits.hold(timeout):
                with self._lock:
                    self.holding += 1
                    self.most = max(self.most, self.holding)
                self.release.wait(120)
                with self._lock:
                    self.holding -= 1
        except DeployFailed:
            with self._lock:
                self.refused += 1

    def join(self) -> None:
        self.release.set()
        for thread in self.threads:
            thread.join(timeout=120)


@pytest.fixture
def holders() -> Iterator[Holders]:
    made = Holders()
    yield made
    made.join()


def test_waiting_deploys_hold_no_connection_and_the_cap_holds_across_processes(
    conninfo: str, scope: str, holders: Holders
) -> None:
    first, second = (PostgresDeployPermits(conninfo, 2, scope) for _ in range(2))
    holders.start(first, 6)
    holders.start(second, 6)
    wait_for(lambda: holders.holding == 2, what="two deploys holding the two permits")

    wait_for(lambda: _sessions(conninfo) >= 2, what="both processes trying")
    assert _sessions(conninfo) == 2  # one per process, with ten deploys waiting
    holders.release.set()
    holders.join()
    assert holders.most == 2 and holders.refused == 0


def test_a_dead_session_is_replaced_and_its_permits_are_taken_back(
    conninfo: str, scope: str, holders: Holders
) -> None:
    mine, other = (PostgresDeployPermits(conninfo, 2, scope) for _ in range(2))
    holders.start(mine, 1)
    wait_for(lambda: holders.holding == 1, what="a deploy holding a permit")
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE application_name = %s",
            (f"slotledger deploy permits pid={os.getpid()}",),
        )

    # A new session: the held permit is taken back, then the other one is taken.
    with mine.hold(60), pytest.raises(DeployFailed), other.hold(0.5):
        pass
    assert _sessions(conninfo) == 2  # one each: the dead one is gone
