"""Settings -> read models and their follower, the way ``ledger.bootstrap`` builds the ledger."""

from __future__ import annotations

from ledger.application import SlotLedger
from ledger.bootstrap import build_ledger
from ledger.settings import PostgresStore, Settings, SQLiteStore
from projections.engine.follower import Follower
from projections.engine.readmodels import ReadModels
from projections.stores.postgres import PostgresFollower, PostgresReadModels
from projections.stores.sqlite import SQLiteFollower, SQLiteReadModels

__all__ = ["build_follower", "build_read_models"]


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
    assert isinstance(store, SQLiteStore)
    return SQLiteReadModels(ledger, store.views_path, batch_size=batch_size)


def build_follower(models: ReadModels) -> Follower:
    """LISTEN/NOTIFY on PostgreSQL, polling on SQLite; call ``start()`` on it."""
    if isinstance(models, PostgresReadModels):
        return PostgresFollower(models)
    assert isinstance(models, SQLiteReadModels)
    return SQLiteFollower(models)
