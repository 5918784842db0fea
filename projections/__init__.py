"""Read models of the slot ledger: status, pool stats, queue, audit, time travel.

Exactly-once batched projection (:class:`ReadModels`), live followers, rebuild/replay,
audit queries and incident bundles, on PostgreSQL and SQLite.
"""

from projections.bundle import Imported, export
from projections.engine.eventlog import EventLog, WritableLog
from projections.engine.follower import Companion, Follower, LogFollower
from projections.engine.readmodels import ReadModels
from projections.errors import ProjectionError, ReadModelTimeout, RebuildInProgress
from projections.jsonable import encode, jsonable
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
    "EventLog",
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
    "WritableLog",
    "encode",
    "export",
    "jsonable",
]
