"""The eventsourcing library's own recorder test cases, run against our recorders.

Our recorders override the library's private hooks (``_insert_events``, the create
statements) to write the inline indexes in the events' transaction; these are the
library's checks that events, notifications and their ids still behave as the library
promises: inserts and selects, conflicts, contiguous and non-interleaving notification
ids under concurrent writers. The aggregate recorder case runs only on PostgreSQL, the one
backend whose factory overrides how aggregate recorders are made. Each recorder is built
by our factory from the same environment production uses, on a fresh SQLite file or a
fresh PostgreSQL schema.
The library's ``test_performance`` methods only print timings, so they are left out.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest
from eventsourcing.persistence import AggregateRecorder, InfrastructureFactory
from eventsourcing.tests.persistence import (
    AggregateRecorderTestCase,
    ApplicationRecorderTestCase,
    NonInterleavingNotificationIDsBaseCase,
)
from eventsourcing.utils import Environment

from ledger.adapters.memory import POPOLedgerFactory
from ledger.adapters.postgres import PostgresLedgerFactory
from ledger.adapters.sqlite import SQLiteLedgerFactory
from ledger.application.ports import LedgerRecorder
from ledger.bootstrap import eventsourcing_env
from ledger.settings import load_settings


class _Backend:
    """Builds our recorder with our factory; closes every factory after the test."""

    factory_class: ClassVar[type[InfrastructureFactory[Any]]]
    env: dict[str, str]

    @pytest.fixture(autouse=True)
    def _factories(self) -> Iterator[None]:
        """Closes the factories once the threads the test started have ended: the
        library's concurrent cases stop their reader threads without joining them, and a
        SQLite connection closed under a reader crashes the interpreter."""
        self._made: list[InfrastructureFactory[Any]] = []
        before = set(threading.enumerate())
        yield
        for thread in set(threading.enumerate()) - before:
            if not thread.daemon:  # the readers; a connection pool's workers are daemons
                thread.join(timeout=30)
        for factory in self._made:
            factory.close()

    def _factory(self) -> InfrastructureFactory[Any]:
        factory = self.factory_class(Environment("LibraryContract", self.env))
        self._made.append(factory)
        return factory

    def create_recorder(self) -> LedgerRecorder:
        recorder = self._factory().application_recorder()
        assert isinstance(recorder, LedgerRecorder)
        return recorder


class _Memory(_Backend):
    factory_class = POPOLedgerFactory
    env: dict[str, str] = {}


class _SQLite(_Backend):
    factory_class = SQLiteLedgerFactory

    @pytest.fixture(autouse=True)
    def _store(self, sqlite_url: str) -> None:
        self.env = eventsourcing_env(load_settings(database_url=sqlite_url).store)


class _Postgres(_Backend):
    factory_class = PostgresLedgerFactory

    @pytest.fixture(autouse=True)
    def _store(self, postgres_url: str) -> None:
        settings = load_settings(database_url=postgres_url)
        self.env = eventsourcing_env(settings.store, settings)


class TestPOPOApplicationRecorder(_Memory, ApplicationRecorderTestCase[LedgerRecorder]):
    test_performance = None  # type: ignore[assignment]


class TestPOPONonInterleaving(_Memory, NonInterleavingNotificationIDsBaseCase):
    pass


class TestSQLiteApplicationRecorder(_SQLite, ApplicationRecorderTestCase[LedgerRecorder]):
    test_performance = None  # type: ignore[assignment]


class TestSQLiteNonInterleaving(_SQLite, NonInterleavingNotificationIDsBaseCase):
    pass


class TestPostgresAggregateRecorder(_Postgres, AggregateRecorderTestCase):
    """The snapshot store: the library's recorder, created by our factory's override
    (tables only when missing, under the DDL lock)."""

    test_performance = None  # type: ignore[assignment]

    def create_recorder(self) -> AggregateRecorder:
        factory = self._factory()
        return factory.aggregate_recorder("snapshots")


class TestPostgresApplicationRecorder(_Postgres, ApplicationRecorderTestCase[LedgerRecorder]):
    test_performance = None  # type: ignore[assignment]


class TestPostgresNonInterleaving(_Postgres, NonInterleavingNotificationIDsBaseCase):
    pass
