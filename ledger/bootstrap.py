"""Bootstrap: the one place that turns settings into wired objects.

Entry points (CLI, HTTP service, workers, tests) and the running process
(:mod:`ledger.service`) call these functions; nothing else reads the environment or
chooses a backend. They build the write side (the ledger), the read side (read models
and their follower; incident bundles' imports), the Coolify client, the deployer and its
permits, the leader election, and the parts of the background loops.
"""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path

from eventsourcing.domain import datetime_now_with_tzinfo
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.utils import get_topic

from ledger.adapters.coolify import CoolifyClient, ResponseHook
from ledger.adapters.coolify.budget import RequestBudget
from ledger.adapters.coolify.checks import CoolifyTarget, check_at_start
from ledger.adapters.descriptions import DescriptionMirror
from ledger.adapters.leadership import WorkerLeadership
from ledger.adapters.memory import POPOLedgerFactory
from ledger.adapters.postgres import (
    PostgresDeployPermits,
    PostgresLeaderElection,
    PostgresLedgerFactory,
    advisory_key,
)
from ledger.adapters.sqlite import SQLiteLedgerFactory
from ledger.adapters.transcoding import MsgspecTranscoder
from ledger.application import Clock, SlotLedger
from ledger.application.checker import CheckerConfig, InvariantChecker
from ledger.application.deploy import (
    DeployPermits,
    LocalDeployPermits,
    Polling,
    SlotDeployer,
    SlotTemplate,
)
from ledger.application.policies import PolicyConfig
from ledger.application.reconcile import DriftConfig, Reconciler
from ledger.application.worker import Duty, LeaderElection, LocalLeaderElection
from ledger.errors import BadInput, ConfigurationError
from ledger.settings import PostgresStore, Settings, SQLiteStore, StoreConfig
from projections import (
    Follower,
    Imported,
    LogFollower,
    PostgresFollower,
    PostgresReadModels,
    ReadModels,
    SQLiteFollower,
    SQLiteReadModels,
)
from projections.bundle import load, parse
from projections.engine.follower import Parking

__all__ = [
    "build_budget",
    "build_coolify",
    "build_deployer",
    "build_follower",
    "build_leadership_watch",
    "build_ledger",
    "build_mirror",
    "build_permits",
    "build_read_models",
    "checker_config",
    "coolify_target",
    "drift_config",
    "election_for",
    "eventsourcing_env",
    "follower_env",
    "import_bundle",
    "is_embedded",
    "leader_duties",
    "memory_env",
    "policy_config",
    "secrets_of",
    "slot_template",
]


TRANSCODER_TOPIC = get_topic(MsgspecTranscoder)
"""The library's JSON format, decoded with msgspec (:mod:`ledger.adapters.transcoding`)."""


def eventsourcing_env(store: StoreConfig, settings: Settings | None = None) -> dict[str, str]:
    """The library's environment for a store; snapshots on, DB functions never (notes §5)."""
    common = {"IS_SNAPSHOTTING_ENABLED": "y", "TRANSCODER_TOPIC": TRANSCODER_TOPIC}
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
        "TRANSCODER_TOPIC": TRANSCODER_TOPIC,
    }


def slot_template(settings: Settings) -> SlotTemplate:
    return SlotTemplate(
        project_uuid=settings.coolify_project_uuid,
        server_uuid=settings.coolify_server_uuid,
        environment_name=settings.coolify_environment_name,
        image=settings.slot_image,
        image_tag=settings.slot_image_tag,
    )


def coolify_target(settings: Settings) -> CoolifyTarget:
    return CoolifyTarget(
        project_uuid=settings.coolify_project_uuid,
        server_uuid=settings.coolify_server_uuid,
        environment_name=settings.coolify_environment_name,
    )


def build_budget(settings: Settings) -> RequestBudget:
    """One budget for every process of a PostgreSQL store, in memory on SQLite."""
    store, per_minute = settings.store, settings.coolify_requests_per_minute
    if isinstance(store, PostgresStore):
        return RequestBudget.on_postgres(store.conninfo(), store.schema, per_minute)
    return RequestBudget(per_minute)


def build_coolify(settings: Settings, on_response: ResponseHook | None = None) -> CoolifyClient:
    """The process's Coolify client, with its request budget, once the settings passed
    the start-up checks (:mod:`ledger.adapters.coolify.checks`)."""
    token = settings.coolify_token.get_secret_value()
    if not token:
        msg = "LEDGER_COOLIFY_TOKEN is not set: the deploy flow needs a Coolify API token"
        raise ConfigurationError(msg)
    budget = build_budget(settings)
    try:
        client = CoolifyClient(
            settings.coolify_url,
            token,
            timeout=settings.coolify_timeout_s,
            on_response=on_response,
            budget=budget,
        )
    except BaseException:
        budget.close()
        raise
    try:
        check_at_start(client, coolify_target(settings))
    except BaseException:
        client.close()
        raise
    return client


def build_permits(settings: Settings) -> DeployPermits:
    """Advisory-lock permits shared by all processes on PostgreSQL, in-process on SQLite."""
    store = settings.store
    if isinstance(store, PostgresStore):
        return PostgresDeployPermits(
            store.conninfo(), settings.max_concurrent_deployments, settings.pool_name
        )
    return LocalDeployPermits(settings.max_concurrent_deployments)


def policy_config(settings: Settings) -> PolicyConfig:
    """The policies' settings, for the engine and the worker."""
    return PolicyConfig(
        pool_name=settings.pool_name,
        deploying_timeout_s=settings.deploying_timeout_s,
        recovery_interval_s=settings.recovery_interval_s,
        recovery_max_attempts=settings.recovery_max_attempts,
        retire_mode=settings.retire_mode,
        policy_tick_s=settings.policy_tick_s,
        releasing_timeout_s=2 * settings.stop_timeout_s,
    )


def drift_config(settings: Settings) -> DriftConfig:
    return DriftConfig(
        pool_name=settings.pool_name,
        slot_prefix=settings.slot_prefix,
        project_uuid=settings.coolify_project_uuid,
        environment_name=settings.coolify_environment_name,
        retire_mode=settings.retire_mode,
        interval_s=settings.drift_interval_s,
        grace_s=settings.drift_grace_s,
    )


def checker_config(settings: Settings) -> CheckerConfig:
    grace = settings.invariant_deploying_grace_s
    return CheckerConfig(
        pool_name=settings.pool_name,
        queue_wait_s=settings.invariant_queue_wait_s,
        deploying_timeout_s=settings.deploying_timeout_s,
        deploying_grace_s=2 * settings.policy_tick_s if grace is None else grace,
        checkpoint_events=settings.invariant_checkpoint_events,
    )


def leader_duties(settings: Settings, ledger: SlotLedger, coolify: CoolifyClient) -> list[Duty]:
    """What the policy worker's leader runs beside the policies: drift reconciliation and
    the always-on invariant checker."""
    return [
        Reconciler(ledger, coolify, drift_config(settings)),
        InvariantChecker(ledger, checker_config(settings)),
    ]


def secrets_of(settings: Settings) -> list[str]:
    """The configured secrets, for the logs' ``SecretFilter`` and the worker's endpoints."""
    store = settings.store
    password = store.password if isinstance(store, PostgresStore) else ""
    tokens = (settings.api_token.get_secret_value(), settings.coolify_token.get_secret_value())
    return [s for s in (*tokens, password) if s]


def election_for(settings: Settings) -> LeaderElection:
    """The policy worker's leader election: an advisory lock on PostgreSQL, where several
    processes may run; always the leader on SQLite, where one does."""
    store = settings.store
    if isinstance(store, PostgresStore):
        return PostgresLeaderElection(store.conninfo(), store.schema, settings.pool_name)
    return LocalLeaderElection()


def build_deployer(
    settings: Settings,
    ledger: SlotLedger,
    coolify: CoolifyClient,
    *,
    poll_s: float | None = None,
    status_grace_s: float | None = None,
) -> SlotDeployer:
    """``poll_s`` (poll that often, without backoff) and ``status_grace_s`` override
    the settings, for tests that need a quick deploy flow."""
    polling = (
        Polling(settings.poll_initial_s, settings.poll_max_s)
        if poll_s is None
        else Polling(poll_s, poll_s)
    )
    return SlotDeployer(
        ledger,
        coolify,
        slot_template(settings),
        build_permits(settings),
        queue_timeout_s=settings.queue_timeout_s,
        polling=polling,
        exited_grace_s=settings.exited_grace_s if status_grace_s is None else status_grace_s,
        stop_timeout_s=settings.stop_timeout_s,
        status_lag_s=settings.status_lag_s,
        deploy_retries=settings.deploy_retries,
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


def is_embedded(settings: Settings) -> bool:
    """Whether one process owns the store (SQLite): it then runs the policies itself,
    since no ``slotledger worker`` beside it can."""
    return isinstance(settings.store, SQLiteStore)


def build_leadership_watch(settings: Settings, ledger: SlotLedger) -> WorkerLeadership | None:
    """Whether some ``slotledger worker`` leads, for a process that runs none; None on
    SQLite, where no other process can lead."""
    store, recorder = settings.store, ledger.recorder
    if isinstance(store, PostgresStore) and isinstance(recorder, PostgresApplicationRecorder):
        return WorkerLeadership(recorder, advisory_key(store.schema, settings.pool_name))
    return None


def build_read_models(
    settings: Settings, ledger: SlotLedger | None = None, *, batch_size: int = 5000
) -> ReadModels:
    """The read models of the configured store: PostgreSQL tables beside the events, or
    the SQLite file beside the ledger's (``SQLiteStore.views_path``)."""
    ledger = ledger or build_ledger(settings)
    store = settings.store
    if isinstance(store, PostgresStore):
        return PostgresReadModels(
            ledger, store.conninfo(), schema=store.schema, batch_size=batch_size
        )
    return SQLiteReadModels(ledger, store.views_path, batch_size=batch_size)


def build_follower(models: ReadModels) -> Follower:
    """LISTEN/NOTIFY on PostgreSQL, polling on SQLite; call ``start()`` on it."""
    if isinstance(models, PostgresReadModels):
        return PostgresFollower(models)
    assert isinstance(models, SQLiteReadModels)
    return SQLiteFollower(models)


def build_mirror(
    settings: Settings,
    ledger: SlotLedger,
    coolify: CoolifyClient,
    *,
    leader: LogFollower | None = None,
    parking: Parking | None = None,
) -> DescriptionMirror:
    """The Coolify description mirror, tracking its position beside the events."""
    env = follower_env(settings.store, DescriptionMirror.NAME, settings)
    return DescriptionMirror(ledger, coolify, env, leader=leader, parking=parking)


def import_bundle(lines: Iterable[str], into: str) -> Imported:
    """Load an incident bundle into a new SQLite ledger at ``into``; its read models go
    to the sibling views file."""
    path = Path(into)
    if path.exists() and path.stat().st_size > 0:
        raise BadInput(f"{into} already exists: import needs a new file")
    bundle = parse(lines)
    store = SQLiteStore(str(path))
    ledger = SlotLedger(eventsourcing_env(store), pool_name=bundle.pool_name)
    try:
        events, aggregates = load(bundle, ledger)
        with SQLiteReadModels(ledger, store.views_path) as models:
            models.catch_up()
    finally:
        ledger.close()
    return Imported(events, aggregates, str(path), store.views_path)
