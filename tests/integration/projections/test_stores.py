"""The read-model contract on the real stores (SQLite and PostgreSQL), plus what only
PostgreSQL has: LISTEN/NOTIFY following that survives a lost connection."""

from __future__ import annotations

import time

import psycopg
import pytest

from ledger.settings import PostgresStore, parse_database_url
from projections import PostgresFollower, PostgresReadModels
from tests.integration.projections.contract import WAIT_S, ReadModelsContract, Store


class TestReadModels(ReadModelsContract):
    @pytest.fixture
    def store_url(self, database_url: str) -> str:
        return database_url


def test_postgres_follower_reconnects_after_losing_its_connection(postgres_url: str) -> None:
    store = Store(postgres_url)
    try:
        ledger = store.ledger()
        models = store.models(ledger)
        assert isinstance(models, PostgresReadModels)
        follower = store.follower(models)
        assert isinstance(follower, PostgresFollower)
        follower.min_backoff = 0.01
        with follower:
            follower.wait(ledger.provision("meet").position, timeout=WAIT_S)
            config = parse_database_url(postgres_url)
            assert isinstance(config, PostgresStore)
            with psycopg.connect(config.conninfo(), autocommit=True) as admin:
                admin.execute(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                    "WHERE application_name = %s",
                    (follower.application_name,),
                )
            deadline = time.monotonic() + WAIT_S
            while follower.health().failures_total == 0 and time.monotonic() < deadline:
                time.sleep(0.01)
            assert follower.health().failures_total >= 1
            follower.wait(ledger.provision("meet").position, timeout=WAIT_S)
            assert follower.is_leader
    finally:
        store.close()
