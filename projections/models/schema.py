"""Table definitions and the SQL both backends share.

A table's columns are the fields of its row type (:mod:`projections.records`); a
:class:`Dialect` maps them to one backend's types, placeholders and value conversions;
:class:`ModelSet` names one set of the tables (live, the rebuild's side tables, or a
replay target), and :class:`Statements` is every statement for a set, built once.
"""

from __future__ import annotations

import types
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields, is_dataclass
from datetime import datetime
from enum import StrEnum
from functools import cached_property
from typing import Any, Literal, Union, get_args, get_origin, get_type_hints
from uuid import UUID

from projections.models.records import (
    AuditRecord,
    Interval,
    JSONText,
    ParkedEvent,
    PoolSize,
    QueueState,
    SlotState,
    Tracking,
)

__all__ = [
    "AUDIT",
    "MODELS",
    "PARKED",
    "POOL_SIZES",
    "QUEUE_ENTRIES",
    "SLOT_STATUS",
    "STATUS_INTERVALS",
    "TRACKING",
    "Column",
    "Dialect",
    "ModelSet",
    "Statements",
    "Table",
]

Kind = Literal["uuid", "text", "int", "ts", "bool", "json"]
Convert = Callable[[Any], Any]


@dataclass(frozen=True)
class Column:
    name: str
    kind: Kind
    nullable: bool
    enum: type[StrEnum] | None = None


def _column(name: str, hint: Any) -> Column:
    args = get_args(hint)
    nullable = get_origin(hint) in (Union, types.UnionType) and type(None) in args
    base = next(a for a in args if a is not type(None)) if nullable else hint
    if base is JSONText:
        return Column(name, "json", nullable)
    if isinstance(base, type) and issubclass(base, StrEnum):
        return Column(name, "text", nullable, base)
    kinds: dict[Any, Kind] = {UUID: "uuid", str: "text", bool: "bool", int: "int", datetime: "ts"}
    return Column(name, kinds[base], nullable)


@dataclass(frozen=True)
class Table:
    """One read model: its row type, primary key and secondary indexes."""

    name: str
    record: type[Any]
    key: tuple[str, ...]
    indexes: tuple[tuple[str, ...], ...] = ()
    added: tuple[str, ...] = ()
    """Columns added after the table's first release: a store made before gains them at
    its next start (:mod:`ledger.ddl`); each is nullable, or a flag that starts false."""

    @cached_property
    def columns(self) -> tuple[Column, ...]:
        hints = get_type_hints(self.record)
        names = (
            [f.name for f in fields(self.record)]
            if is_dataclass(self.record)
            else list(self.record._fields)
        )
        return tuple(_column(n, hints[n]) for n in names)

    @cached_property
    def column_list(self) -> str:
        return ", ".join(c.name for c in self.columns)


SLOT_STATUS = Table(
    "slot_status",
    SlotState,
    ("slot_id",),
    (("pool", "name"), ("bot_id",)),
    added=("drained", "drain_scope"),
)
STATUS_INTERVALS = Table(
    "status_intervals",
    Interval,
    ("slot_id", "from_position"),
    (("slot_id", "from_ts", "from_position"),),
)
POOL_SIZES = Table("pool_sizes", PoolSize, ("pool_id", "from_position"), (("pool_id", "from_ts"),))
QUEUE_ENTRIES = Table(
    "queue_entries", QueueState, ("entry_id",), (("pool", "status", "queued_at"),)
)
AUDIT = Table(
    "audit",
    AuditRecord,
    ("position",),
    (
        ("slot_id", "position"),
        ("bot_id", "position"),
        ("type", "occurred_at"),
        ("occurred_at",),
    ),
)
TRACKING = Table("tracking", Tracking, ("name",))
MODELS = (SLOT_STATUS, STATUS_INTERVALS, POOL_SIZES, QUEUE_ENTRIES, AUDIT, TRACKING)
PARKED = Table("parked", ParkedEvent, ("consumer", "position"), (("status",),))
"""Events the consumers of the log parked: not a model (a rebuild neither drops nor swaps
it), one table per live model set, shared by every consumer that parks there."""


class Dialect(ABC):
    """What differs between the backends' SQL: types, placeholders, conversions."""

    placeholder: str
    types: dict[Kind, str]

    @abstractmethod
    def qualify(self, schema: str, name: str) -> str:
        """A table's name as statements use it."""

    @abstractmethod
    def member_of(self, column: str) -> str:
        """A condition matching ``column`` against one list parameter (see ``list_param``)."""

    @abstractmethod
    def list_param(self, values: Sequence[Any]) -> Any:
        """A list of values as the single parameter ``member_of`` expects."""

    @abstractmethod
    def seconds_between(self, start: str, end: str) -> str:
        """An expression for the seconds from one timestamp column to another."""

    @abstractmethod
    def encoder(self, column: Column) -> Convert | None:
        """Python value -> database value; None when the driver adapts it itself."""

    @abstractmethod
    def decoder(self, column: Column) -> Convert | None:
        """Database value -> Python value; None when the driver returns it as is."""

    false: str = "false"
    """The literal an added flag column starts at."""

    lock_row: str = ""
    """Appended to the tracking select when a writer reads it."""


@dataclass(frozen=True)
class ModelSet:
    """Where one set of the read models lives: a schema (PostgreSQL; ignored by SQLite)
    and a name prefix; ``suffix`` marks a rebuild's side tables."""

    schema: str
    prefix: str
    suffix: str = ""

    def table(self, table: Table) -> str:
        return f"{self.prefix}{table.name}{self.suffix}"

    def index(self, table: Table, columns: Sequence[str]) -> str:
        return f"{self.table(table)}_{'_'.join(columns)}_idx"

    def key_index(self, table: Table) -> str:
        return f"{self.table(table)}_pkey"

    def identifiers(self) -> list[str]:
        """Every table and index name of the set."""
        return [
            name
            for t in MODELS
            for name in (
                self.table(t),
                self.key_index(t),
                *(self.index(t, c) for c in t.indexes),
            )
        ]


class Statements:
    """Every statement of one model set, built once."""

    def __init__(self, dialect: Dialect, model_set: ModelSet) -> None:
        self.dialect = dialect
        self.model_set = model_set
        self.names = {t.name: dialect.qualify(model_set.schema, model_set.table(t)) for t in MODELS}
        # A rebuild's side tables share the live set's parked events: no suffix.
        self.names[PARKED.name] = dialect.qualify(
            model_set.schema, f"{model_set.prefix}{PARKED.name}"
        )
        self.create_tables = [self._create_table(t) for t in MODELS]
        self.add_columns = [self._add_column(t, name) for t in MODELS for name in t.added]
        self.create_indexes = [
            f"CREATE INDEX IF NOT EXISTS {model_set.index(t, cols)} ON {self.names[t.name]} "
            f"({', '.join(cols)})"
            for t in MODELS
            for cols in t.indexes
        ]
        parked_key = ModelSet(model_set.schema, model_set.prefix)
        self.create_parked = [
            self._create_table(PARKED, parked_key),
            f"CREATE INDEX IF NOT EXISTS {parked_key.index(PARKED, ('status',))} "
            f"ON {self.names[PARKED.name]} (status)",
        ]
        self.drop_tables = [f"DROP TABLE IF EXISTS {self.names[t.name]}" for t in MODELS]
        self.insert = {t.name: self._insert(t) for t in MODELS}
        self.upsert = {t.name: self._upsert(t) for t in (SLOT_STATUS, QUEUE_ENTRIES)}
        self.close_intervals = self.sql(
            "UPDATE {status_intervals} SET to_ts = ?, to_position = ? "
            "WHERE slot_id = ? AND from_position = ?"
        )
        self.init_tracking = self.sql(
            "INSERT INTO {tracking} (name, position) VALUES (?, 0) ON CONFLICT (name) DO NOTHING"
        )
        self.select_tracking = self.sql(
            f"SELECT {TRACKING.column_list} FROM {{tracking}} WHERE name = ?"
        )
        self.lock_tracking = self.sql(
            "SELECT position FROM {tracking} WHERE name = ?" + dialect.lock_row
        )
        self.update_tracking = self.sql(
            "UPDATE {tracking} SET position = ?, event_at = ?, updated_at = ? WHERE name = ?"
        )
        self.park = self._upsert(PARKED)
        parked = f"SELECT {PARKED.column_list} FROM {{parked}} WHERE status = 'parked'"
        self.parked = self.sql(parked + " ORDER BY position, consumer")
        self.parked_at = self.sql(parked + " AND position = ? ORDER BY consumer")
        self.parked_counts = self.sql(
            "SELECT consumer, count(*) FROM {parked} WHERE status = 'parked' GROUP BY consumer"
        )
        self.resolve_parked = self.sql(
            "UPDATE {parked} SET status = ?, resolved_at = ? "
            "WHERE consumer = ? AND position = ? AND status = 'parked'"
        )
        self.excluded = self.sql(
            "SELECT position FROM {parked} WHERE consumer = ? AND status <> 'retried' "
            "AND position > ? AND position <= ?"
        )
        self.advance_tracking = self.sql(
            "UPDATE {tracking} SET position = ?, updated_at = ? WHERE name = ?"
        )
        self.prior = {
            t.name: self.sql(
                f"SELECT {t.column_list} FROM {{{t.name}}} WHERE {dialect.member_of(t.key[0])}"
            )
            for t in (SLOT_STATUS, QUEUE_ENTRIES)
        }
        self.all_rows = {
            t.name: self.sql(
                f"SELECT {t.column_list} FROM {{{t.name}}} ORDER BY {', '.join(t.key)}"
            )
            for t in MODELS
        }
        slots = f"SELECT {SLOT_STATUS.column_list} FROM {{slot_status}} "
        self.slot_by_id = self.sql(slots + "WHERE slot_id = ?")
        self.slot_by_name = self.sql(slots + "WHERE name = ? ORDER BY pool")
        self.slots_of_pool = self.sql(slots + "WHERE pool = ? ORDER BY name")
        self.slot_names = self.sql(
            f"SELECT slot_id, name FROM {{slot_status}} WHERE {dialect.member_of('slot_id')}"
        )
        self.statuses = self.sql("SELECT status FROM {slot_status} WHERE pool = ? AND NOT retired")
        self.max_size = self.sql(
            "SELECT max_size FROM {pool_sizes} WHERE pool_id = ? "
            "ORDER BY from_position DESC LIMIT 1"
        )
        self.max_size_at = self.sql(
            "SELECT max_size FROM {pool_sizes} WHERE pool_id = ? AND from_ts <= ? "
            "ORDER BY from_ts DESC, from_position DESC LIMIT 1"
        )
        self.queue_waiting = self.sql(
            "SELECT count(*), min(queued_at) FROM {queue_entries} "
            "WHERE pool = ? AND status = 'waiting'"
        )
        self.queue_wait = self.sql(
            f"SELECT avg({dialect.seconds_between('queued_at', 'ended_at')}) "
            "FROM {queue_entries} WHERE pool = ? AND status = 'dispatched'"
        )
        self.intervals_of_slot = self.sql(
            f"SELECT {STATUS_INTERVALS.column_list} FROM {{status_intervals}} "
            "WHERE slot_id = ? ORDER BY from_position"
        )
        # One indexed probe per slot: the last interval starting at or before t, kept
        # when it had not ended by t.
        self.pool_at = self.sql(
            "SELECT s.slot_id, s.name, s.platform, i.status, i.from_ts, i.bot_id "
            "FROM {slot_status} s JOIN {status_intervals} i "
            "ON i.slot_id = s.slot_id AND i.from_position = ("
            "  SELECT j.from_position FROM {status_intervals} j "
            "  WHERE j.slot_id = s.slot_id AND j.from_ts <= ? "
            "  ORDER BY j.from_ts DESC, j.from_position DESC LIMIT 1) "
            "WHERE s.pool = ? AND (i.to_ts IS NULL OR i.to_ts > ?) ORDER BY s.name"
        )
        self.events_between = self.sql(
            "SELECT a.slot_id, s.name, count(*) FROM {audit} a "
            "JOIN {slot_status} s ON s.slot_id = a.slot_id "
            "WHERE a.occurred_at > ? AND a.occurred_at <= ? AND s.pool = ? "
            "GROUP BY a.slot_id, s.name"
        )
        self.audit = self.sql(f"SELECT {AUDIT.column_list} FROM {{audit}}")
        self.audit_filters = {
            name: self.sql(condition)
            for name, condition in (
                ("slot", "slot_id = ?"),
                ("bot", "bot_id = ?"),
                ("type", "type = ?"),
                ("since", "occurred_at >= ?"),
                ("until", "occurred_at <= ?"),
                ("types", dialect.member_of("type")),
                ("originators", dialect.member_of("originator_id")),
                ("through", "position <= ?"),
            )
        }
        self.audit_order = " ORDER BY position"
        self.limit = self.sql(" LIMIT ?")

    def sql(self, template: str) -> str:
        """Fill in table names and the dialect's placeholder."""
        return template.format(**self.names).replace("?", self.dialect.placeholder)

    def _create_table(self, table: Table, names: ModelSet | None = None) -> str:
        columns = ", ".join(
            f"{c.name} {self.dialect.types[c.kind]}{'' if c.nullable else ' NOT NULL'}"
            for c in table.columns
        )
        key = (names or self.model_set).key_index(table)
        return (
            f"CREATE TABLE IF NOT EXISTS {self.names[table.name]} ({columns}, "
            f"CONSTRAINT {key} PRIMARY KEY ({', '.join(table.key)}))"
        )

    def _add_column(self, table: Table, name: str) -> str:
        column = next(c for c in table.columns if c.name == name)
        kind = self.dialect.types[column.kind]
        if column.nullable:
            definition = kind
        elif column.kind == "bool":
            definition = f"{kind} NOT NULL DEFAULT {self.dialect.false}"
        else:
            msg = f"{table.name}.{name}: an added column is nullable or a bool"
            raise TypeError(msg)
        return f"ALTER TABLE {self.names[table.name]} ADD COLUMN IF NOT EXISTS {name} {definition}"

    def _insert(self, table: Table) -> str:
        values = ", ".join("?" for _ in table.columns)
        return self.sql(f"INSERT INTO {{{table.name}}} ({table.column_list}) VALUES ({values})")

    def _upsert(self, table: Table) -> str:
        updates = ", ".join(
            f"{c.name} = excluded.{c.name}" for c in table.columns if c.name not in table.key
        )
        return (
            self._insert(table) + f" ON CONFLICT ({', '.join(table.key)}) DO UPDATE SET {updates}"
        )
