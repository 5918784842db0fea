"""Helpers for the web tests: settings pointed at a fake Coolify, a service with its API
client, a real uvicorn server in a thread (for the event stream and the browser)."""

from __future__ import annotations

import socket
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn
from fastapi import FastAPI
from fastapi.testclient import TestClient

from ledger.devtools.fake_coolify import FakeCoolifyServer, FakeSettings
from ledger.service import Service
from ledger.settings import Settings, load_settings

FAKE = FakeSettings(
    deploy_delay=0.05, delete_delay=0.05, stop_delay=0.1, status_interval=0.1, rate_limit=0, seed=11
)
"""Coolify's lags, short: a container is seen running by the second status sweep after
its deployment, a stop job runs 0.1 s after its request."""


def service_settings(database_url: str, fake: FakeCoolifyServer, **overrides: Any) -> Settings:
    values: dict[str, Any] = {
        "database_url": database_url,
        "coolify_url": fake.base_url,
        "coolify_token": fake.token,
        "coolify_project_uuid": FAKE.project_uuid,
        "coolify_server_uuid": FAKE.server_uuid,
        "max_pool_size": 3,
    }
    return load_settings(**(values | overrides))


def fast_service(settings: Settings) -> Service:
    """A service that polls quickly, so background work lands within a test's patience."""
    return Service(settings, deploy_poll_s=0.02, status_grace_s=2.0, drain_interval_s=0.1)


@dataclass
class Api:
    service: Service
    client: TestClient

    def provision(self, count: int) -> list[str]:
        """Slots added straight through the ledger; returns their names once projected."""
        outcomes = [
            self.service.ledger.provision("bot", ctx=self.service.ledger.context("operator"))
            for _ in range(count)
        ]
        self.service.settle(outcomes[-1].position)
        return [o.slot.name for o in outcomes]

    def slot(self, ref: str) -> dict[str, Any]:
        answer = self.client.get(f"/v1/slots/{ref}")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found


def wait_until(condition: Callable[[], object], timeout: float = 60.0, what: str = "") -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"not reached within {timeout}s: {what or condition}")
        time.sleep(0.02)


class ServerThread:
    """uvicorn serving ``app`` on a free local port, lifespan included."""

    def __init__(self, app: FastAPI) -> None:
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self.sock.bind(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        config = uvicorn.Config(
            app, log_level="warning", access_log=False, timeout_graceful_shutdown=1
        )
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(
            target=self.server.run, kwargs={"sockets": [self.sock]}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def __enter__(self) -> ServerThread:
        self.thread.start()
        wait_until(lambda: self.server.started or not self.thread.is_alive(), 30, "uvicorn start")
        assert self.server.started, "uvicorn did not start"
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.should_exit = True
        self.thread.join(timeout=15)
