"""Fixtures: one fake Coolify per session (reset per test) and real clients talking to it.

Every client made here carries :class:`SpecValidator` as an httpx request hook, so every
request any test sends through the client is checked against the official spec. Clients
sleep through :class:`SleepRecorder` instead of ``time.sleep``: retries cost no time and
tests can assert the delays.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_core import OpenAPI

from ledger.adapters.coolify import CoolifyClient
from ledger.devtools.fake_coolify import FakeCoolify, FakeCoolifyServer
from tests.integration.coolify.spec_check import SpecValidator, load_spec
from tests.integration.coolify.support import TEST_SETTINGS, MakeClient, SleepRecorder


@pytest.fixture(scope="session")
def openapi_spec() -> OpenAPI:
    return load_spec()


@pytest.fixture(scope="session")
def fake_server() -> Iterator[FakeCoolifyServer]:
    with FakeCoolifyServer(TEST_SETTINGS) as server:
        yield server


@pytest.fixture
def fake(fake_server: FakeCoolifyServer) -> FakeCoolify:
    """The session's fake, emptied and back to the test settings."""
    fake_server.fake.reset()
    fake_server.fake.configure(**dataclasses.asdict(TEST_SETTINGS))
    return fake_server.fake


@pytest.fixture
def spec_validator(openapi_spec: OpenAPI) -> SpecValidator:
    return SpecValidator(openapi_spec)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


@pytest.fixture
def make_client(
    fake_server: FakeCoolifyServer,
    fake: FakeCoolify,
    spec_validator: SpecValidator,
    sleeps: SleepRecorder,
) -> Iterator[MakeClient]:
    """Build clients against the fake; options override the constructor defaults."""
    clients: list[CoolifyClient] = []

    def make(**options: Any) -> CoolifyClient:
        options.setdefault("token", fake_server.token)
        options.setdefault("sleep", sleeps)
        options.setdefault("timeout", 2.0)
        client = CoolifyClient(
            fake_server.base_url, event_hooks={"request": [spec_validator]}, **options
        )
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.close()


@pytest.fixture
def client(make_client: MakeClient) -> CoolifyClient:
    return make_client()


@pytest.fixture
def raw_http(fake_server: FakeCoolifyServer, fake: FakeCoolify) -> Iterator[httpx.Client]:
    """Plain httpx with the right token, for checking the fake itself (no spec check)."""
    headers = {"Authorization": f"Bearer {fake_server.token}", "Accept": "application/json"}
    with httpx.Client(base_url=fake_server.base_url, headers=headers, timeout=30.0) as http:
        yield http


@pytest.fixture
def spec_http(
    fake_server: FakeCoolifyServer, fake: FakeCoolify, spec_validator: SpecValidator
) -> Iterator[httpx.Client]:
    """Plain httpx whose every request must pass the spec, for routes the client lacks."""
    headers = {"Authorization": f"Bearer {fake_server.token}", "Accept": "application/json"}
    with httpx.Client(
        base_url=fake_server.base_url,
        headers=headers,
        timeout=30.0,
        event_hooks={"request": [spec_validator]},
    ) as http:
        yield http
