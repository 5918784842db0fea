"""Read models of the slot ledger: status, pool stats, queue, audit, time travel.

Exactly-once batched projection (:class:`ReadModels`), live followers, rebuild/replay,
audit queries and incident bundles, on PostgreSQL and SQLite.
"""

from projections.bootstrap import build_follower, build_read_models
from projections.bundle import Imported, export, import_bundle
from projections.engine.follower import Companion, Follower, LogFollower
from projections.engine.readmodels import ReadModels
from projections.errors import ProjectionError, ReadModelTimeout, RebuildInProgress
from projections.models.records import (
    AuditRecord,
    BotLease,
    Failure,
    Interval,
    Lag,
    ParkedEvent,
    ParkedStatus,
    PoolSnapshot,
    PoolStats,
    Progress,
    QueueStats,
    SlotAt,
    SlotChange,
    SlotHistory,
    SlotState,
)
from projections.stores.postgres import PostgresFollower, PostgresReadModels
from projections.stores.sqlite import SQLiteFollower, SQLiteReadModels

__all__ = [
    "AuditRecord",
    "BotLease",
    "Companion",
    "Failure",
    "Follower",
    "Imported",
    "Interval",
    "Lag",
    "LogFollower",
    "ParkedEvent",
    "ParkedStatus",
    "PoolSnapshot",
    "PoolStats",
    "PostgresFollower",
    "PostgresReadModels",
    "Progress",
    "ProjectionError",
    "QueueStats",
    "ReadModelTimeout",
    "ReadModels",
    "RebuildInProgress",
    "SQLiteFollower",
    "SQLiteReadModels",
    "SlotAt",
    "SlotChange",
    "SlotHistory",
    "SlotState",
    "build_follower",
    "build_read_models",
    "export",
    "import_bundle",
]
