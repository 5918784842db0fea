"""Fixtures: one fake Coolify per session (reset per test) and a fresh service per test,
on SQLite and PostgreSQL (``api``) or SQLite only (``sqlite_api``) for HTTP-layer tests."""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient

from ledger.devtools.fake_coolify import FakeCoolifyServer
from ledger.entrypoints.web import create_app
from ledger.service import Service
from tests.integration.web.support import FAKE, Api, fast_service, service_settings

MakeApi = Callable[..., Api]


@pytest.fixture(scope="session")
def fake_coolify() -> Iterator[FakeCoolifyServer]:
    with FakeCoolifyServer(FAKE) as server:
        yield server


@pytest.fixture
def make_api(fake_coolify: FakeCoolifyServer) -> Iterator[MakeApi]:
    """Builds started services (``start=False`` for a stopped one); stops them after."""
    fake_coolify.fake.reset()
    fake_coolify.fake.configure(**dataclasses.asdict(FAKE))
    services: list[Service] = []

    def make(database_url: str, *, start: bool = True, **overrides: Any) -> Api:
        service = fast_service(service_settings(database_url, fake_coolify, **overrides))
        services.append(service)
        if start:
            service.start()
        client = TestClient(create_app(service), raise_server_exceptions=False)
        return Api(service, client)

    yield make
    for service in services:
        service.stop()


# The store fixture comes first in each signature, so its teardown (dropping a schema)
# runs after the service built on it has stopped.


@pytest.fixture
def api(database_url: str, make_api: MakeApi) -> Api:
    return make_api(database_url)


@pytest.fixture
def sqlite_api(sqlite_url: str, make_api: MakeApi) -> Api:
    return make_api(sqlite_url)
