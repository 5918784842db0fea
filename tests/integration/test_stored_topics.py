"""Events and snapshots stored before the domain became a package of modules still load.

Until issue 11 every domain class lived in one module, so the stored topics read
``ledger.domain:Slot.SlotAcquired``, ``ledger.domain:Slot`` (in a created event's and a
snapshot's state) and ``ledger.domain:TypedSnapshot``. New events are written under the
modules' own topics (``ledger.domain.slot:...``); the old ones resolve through the
package's re-exports. Each test writes a log, rewrites its topics to the old spelling with
SQL, and loads it on a real store: aggregates (by replay and from snapshots), commands on
top, and the read models rebuilt row for row.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterator
from contextlib import closing, contextmanager
from typing import Any
from uuid import UUID

import psycopg
import pytest

from ledger.application import SlotLedger
from ledger.domain import TypedSnapshot, pool_id
from ledger.settings import PostgresStore, SQLiteStore, load_settings
from tests.integration.aggregates import assert_same_state, replay
from tests.integration.projections.contract import Store

MODULES = ("pool", "queue", "slot", "snapshots")
"""The domain modules whose classes stored topics name."""


def old_spelling(text: str) -> str:
    """``text`` with every topic as it was stored before the split."""
    for module in MODULES:
        text = text.replace(f"ledger.domain.{module}:", "ledger.domain:")
    return text


def in_old_spelling(dump: dict[str, list[Any]]) -> dict[str, list[Any]]:
    """Read-model rows as the old log gives them: the audit keeps a created event's
    ``originator_topic`` among its data."""
    return dump | {"audit": [r._replace(data=old_spelling(r.data)) for r in dump["audit"]]}


class StoredLog:
    """The store's event and snapshot tables, read and written with SQL, past the library."""

    def __init__(self, url: str, ledger: SlotLedger) -> None:
        assert ledger.snapshots is not None
        self.store = load_settings(database_url=url).store
        self.tables = (
            ledger.recorder.events_table_name,
            ledger.snapshots.recorder.events_table_name,
        )

    @contextmanager
    def _connection(self) -> Iterator[tuple[Any, str]]:
        """A connection, and the qualifier that goes before a table name."""
        if isinstance(self.store, PostgresStore):
            with psycopg.connect(self.store.conninfo(), autocommit=True) as conn:
                yield conn, f'"{self.store.schema}".'
        else:
            assert isinstance(self.store, SQLiteStore)
            with closing(sqlite3.connect(self.store.path)) as conn, conn:
                yield conn, ""

    def rewrite(self, old: str, new: str) -> None:
        """Replace ``old`` by ``new`` in every stored topic, and in the JSON of every state."""
        postgres = isinstance(self.store, PostgresStore)
        param = "%s" if postgres else "?"
        state = (
            f"convert_to(replace(convert_from(state, 'UTF8'), {param}, {param}), 'UTF8')"
            if postgres
            else f"CAST(replace(CAST(state AS TEXT), {param}, {param}) AS BLOB)"
        )
        with self._connection() as (conn, schema):
            for table in self.tables:
                conn.execute(
                    f'UPDATE {schema}"{table}" SET topic = replace(topic, {param}, {param}), '
                    f"state = {state}",
                    (old, new, old, new),
                )

    def topics(self) -> list[str]:
        """Every topic stored: the rows' own, and those inside created events and snapshots."""
        found: list[str] = []
        with self._connection() as (conn, schema):
            for table in self.tables:
                for topic, state in conn.execute(f'SELECT topic, state FROM {schema}"{table}"'):
                    inner = json.loads(bytes(state))
                    found += [
                        topic,
                        *(inner[k] for k in ("originator_topic", "topic") if k in inner),
                    ]
        return found


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    made = Store(database_url)
    yield made
    made.close()


def write_every_kind_of_event(ledger: SlotLedger) -> list[UUID]:
    """Slots, the pool and queue entries through their lifecycles, snapshots of each kind;
    returns every aggregate id."""
    ledger.max_pool_size = 2
    ledger.ensure_pool()
    for n in range(2):
        ledger.provision("meet", coolify_uuid=f"app-{n}")
    ledger.acquire("b-1")
    ledger.release("b-1")
    held = ledger.acquire("b-2").slot.id
    ledger.mark_deploying(held, "dep-1")
    failed = ledger.acquire("b-3").slot.id
    waiting = ledger.enqueue("q-waiting").id
    ledger.enqueue("q-cancelled")
    cancelled = ledger.cancel_queued("q-cancelled").id
    ledger.fail(failed, "exit 1", reason_code="crash")
    ledger.recovery_failed(failed, "still down")
    ledger.recover(failed)
    slots = [held, failed]
    aggregates = [*slots, pool_id(ledger.pool_name), waiting, cancelled]
    for aggregate_id in (slots[0], pool_id(ledger.pool_name), waiting):
        ledger.take_snapshot(aggregate_id)
    return aggregates


def test_events_and_snapshots_stored_under_the_old_topics_load(store: Store) -> None:
    writer = store.ledger()
    aggregates = write_every_kind_of_event(writer)
    before = {a: replay(writer, a) for a in aggregates}
    live = store.models(writer)
    live.catch_up()
    rows = live.dump()
    log = StoredLog(store.url, writer)
    assert any(t.startswith("ledger.domain.slot:") for t in log.topics())

    for module in MODULES:
        log.rewrite(f"ledger.domain.{module}:", "ledger.domain:")
    assert in_old_spelling(rows) != rows  # the audit names topics too

    old_topics = log.topics()
    assert {"ledger.domain:Slot", "ledger.domain:TypedSnapshot"} <= set(old_topics)
    assert all(t.startswith("ledger.domain:") for t in old_topics), old_topics

    reader = store.ledger()
    assert reader.snapshots is not None
    for aggregate_id, expected in before.items():
        assert_same_state(replay(reader, aggregate_id), expected)
        assert_same_state(reader.repository.get(aggregate_id), expected)
    [snapshot] = reader.snapshots.get(aggregates[0], desc=True, limit=1)
    assert type(snapshot) is TypedSnapshot

    models = store.models(reader)
    models.rebuild()
    assert models.parked() == []
    assert models.dump() == in_old_spelling(rows)

    reader.release("b-2")  # a new event on top of the old ones, under its module's topic
    assert log.topics().count("ledger.domain.slot:Slot.SlotReleased") == 1
    assert store.ledger().get_slot(aggregates[0]).bot_id is None
    assert models.catch_up() == 1
    assert models.parked() == []
    assert models.slot(aggregates[0]) is not None
