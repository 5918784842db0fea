"""Bootstrap: the one place that turns settings into wired objects.

Entry points (CLI, HTTP service, workers, tests) call these functions; nothing else reads
the environment or chooses a backend.
"""

from __future__ import annotations

import zlib
from pathlib import Path

from eventsourcing.domain import datetime_now_with_tzinfo
from eventsourcing.utils import get_topic

from ledger.adapters.coolify import CoolifyClient, ResponseHook
from ledger.adapters.persistence import (
    POPOLedgerFactory,
    PostgresLedgerFactory,
    SQLiteLedgerFactory,
)
from ledger.application import Clock, SlotLedger
from ledger.application.deploy import (
    DeployPermits,
    LocalDeployPermits,
    PostgresDeployPermits,
    SlotDeployer,
    SlotTemplate,
)
from ledger.errors import ConfigurationError
from ledger.settings import PostgresStore, Settings, SQLiteStore, StoreConfig

__all__ = [
    "build_coolify",
    "build_deployer",
    "build_ledger",
    "build_permits",
    "eventsourcing_env",
    "follower_env",
    "memory_env",
    "slot_template",
]


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
        # The library retries a failed command 10 times, each waiting this long for a
        # connection: a short wait makes commands fail during an outage, not hang.
        "POSTGRES_CONNECT_TIMEOUT": "1",
        # Every checkout is checked first, so the sessions of a restarted or purged
        # server are replaced as they come up instead of failing a command each.
        "POSTGRES_PRE_PING": "y",
        "POSTGRES_ENABLE_DB_FUNCTIONS": "n",
    }


FOLLOWER_POOL_SIZE = 1
FOLLOWER_MAX_OVERFLOW = 1
"""A follower's tracking recorder runs one statement at a time: its pool stays small
whatever ``LEDGER_POSTGRES_POOL_SIZE`` is (README: connections per process)."""


def follower_env(store: StoreConfig, name: str, settings: Settings | None = None) -> dict[str, str]:
    """The environment for a follower's own tracking table: beside the events on
    PostgreSQL, in a sibling file on SQLite (the library's SQLite table names are fixed)."""
    env = eventsourcing_env(store, settings)
    if isinstance(store, SQLiteStore) and store.path != ":memory:":
        env["SQLITE_DBNAME"] = store.sibling(name.lower())
    if isinstance(store, PostgresStore):
        env["POSTGRES_POOL_SIZE"] = str(FOLLOWER_POOL_SIZE)
        env["POSTGRES_MAX_OVERFLOW"] = str(FOLLOWER_MAX_OVERFLOW)
    return env


def memory_env() -> dict[str, str]:
    """The in-memory store, for unit tests."""
    return {
        "PERSISTENCE_MODULE": get_topic(POPOLedgerFactory),
        "IS_SNAPSHOTTING_ENABLED": "y",
    }


def slot_template(settings: Settings) -> SlotTemplate:
    return SlotTemplate(
        project_uuid=settings.coolify_project_uuid,
        server_uuid=settings.coolify_server_uuid,
        environment_name=settings.coolify_environment_name,
        image=settings.slot_image,
        image_tag=settings.slot_image_tag,
    )


def build_coolify(settings: Settings, on_response: ResponseHook | None = None) -> CoolifyClient:
    token = settings.coolify_token.get_secret_value()
    if not token:
        msg = "LEDGER_COOLIFY_TOKEN is not set: the deploy flow needs a Coolify API token"
        raise ConfigurationError(msg)
    return CoolifyClient(
        settings.coolify_url, token, timeout=settings.coolify_timeout_s, on_response=on_response
    )


def build_permits(settings: Settings) -> DeployPermits:
    """Advisory-lock permits shared by all processes on PostgreSQL, in-process on SQLite."""
    store = settings.store
    if isinstance(store, PostgresStore):
        namespace = zlib.crc32(f"slotledger:{settings.pool_name}".encode()) % 1_000_000
        return PostgresDeployPermits(
            store.conninfo(), settings.max_concurrent_deployments, namespace
        )
    return LocalDeployPermits(settings.max_concurrent_deployments)


def build_deployer(settings: Settings, ledger: SlotLedger, coolify: CoolifyClient) -> SlotDeployer:
    return SlotDeployer(
        ledger,
        coolify,
        slot_template(settings),
        build_permits(settings),
        queue_timeout_s=settings.queue_timeout_s,
    )


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
