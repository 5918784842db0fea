"""Bootstrap: the one place that turns settings into wired objects.

Entry points (CLI, HTTP service, workers, tests) call these functions; nothing else reads
the environment or chooses a backend.
"""

from __future__ import annotations

from pathlib import Path

from eventsourcing.domain import datetime_now_with_tzinfo
from eventsourcing.utils import get_topic

from ledger.application import Clock, SlotLedger
from ledger.persistence import POPOLedgerFactory, PostgresLedgerFactory, SQLiteLedgerFactory
from ledger.settings import PostgresStore, Settings, SQLiteStore, StoreConfig

__all__ = ["build_ledger", "eventsourcing_env", "follower_env", "memory_env"]


def eventsourcing_env(store: StoreConfig, settings: Settings | None = None) -> dict[str, str]:
    """The library's environment for a store; snapshots on, DB functions never (notes §5)."""
    common = {"IS_SNAPSHOTTING_ENABLED": "y"}
    if isinstance(store, SQLiteStore):
        if store.path != ":memory:":
            Path(store.path).parent.mkdir(parents=True, exist_ok=True)
        return common | {
            "PERSISTENCE_MODULE": get_topic(SQLiteLedgerFactory),
            "SQLITE_DBNAME": store.path,
            "SQLITE_LOCK_TIMEOUT": "10",
        }
    assert isinstance(store, PostgresStore)
    pool_size = settings.postgres_pool_size if settings else 2
    overflow = settings.postgres_max_overflow if settings else 8
    return common | {
        "PERSISTENCE_MODULE": get_topic(PostgresLedgerFactory),
        "POSTGRES_DBNAME": store.dbname,
        "POSTGRES_HOST": store.host,
        "POSTGRES_PORT": str(store.port),
        "POSTGRES_USER": store.user,
        "POSTGRES_PASSWORD": store.password,
        "POSTGRES_SCHEMA": store.schema,
        "POSTGRES_POOL_SIZE": str(pool_size),
        "POSTGRES_MAX_OVERFLOW": str(overflow),
        "POSTGRES_LOCK_TIMEOUT": "10",
        "POSTGRES_CONNECT_TIMEOUT": "10",
        "POSTGRES_PRE_PING": "y",
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
    }


def follower_env(store: StoreConfig, name: str, settings: Settings | None = None) -> dict[str, str]:
    """The environment for a follower's own tracking table: beside the events on
    PostgreSQL, in a sibling file on SQLite (the library's SQLite table names are fixed)."""
    env = eventsourcing_env(store, settings)
    if isinstance(store, SQLiteStore) and store.path != ":memory:":
        env["SQLITE_DBNAME"] = store.sibling(name.lower())
    return env


def memory_env() -> dict[str, str]:
    """The in-memory store, for unit tests."""
    return {
        "PERSISTENCE_MODULE": get_topic(POPOLedgerFactory),
        "IS_SNAPSHOTTING_ENABLED": "y",
    }


def build_ledger(settings: Settings, *, clock: Clock = datetime_now_with_tzinfo) -> SlotLedger:
    return SlotLedger(
        eventsourcing_env(settings.store, settings),
        pool_name=settings.pool_name,
        slot_prefix=settings.slot_prefix,
        max_pool_size=settings.max_pool_size,
        max_attempts=settings.acquire_attempts,
        default_platform=settings.default_platform,
        clock=clock,
    )
