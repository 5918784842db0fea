"""Helpers shared by the Coolify client tests."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from ledger.adapters.coolify import CoolifyClient, CreateDockerImageApp
from ledger.devtools.fake_coolify import FakeSettings

TEST_SETTINGS = FakeSettings(
    deploy_delay=0.1,
    delete_delay=0.05,
    stop_delay=0.05,
    status_interval=0.05,
    rate_limit=0,
    seed=7,
)
"""Short delays keep the suite fast (the stop job and the status sweep still lag, so tests
poll for their effects); a fixed seed makes ids and fault draws repeatable. No rate limit:
tests poll as fast as the machine lets them, so a limit would make them depend on its speed;
the throttle's own tests configure one."""

MakeClient = Callable[..., CoolifyClient]


class SleepRecorder:
    """Stands in for ``time.sleep``: records each delay, then runs ``on_sleep`` if set."""

    def __init__(self) -> None:
        self.delays: list[float] = []
        self.on_sleep: Callable[[], object] | None = None

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)
        if self.on_sleep is not None:
            self.on_sleep()


def app_request(**overrides: Any) -> CreateDockerImageApp:
    """A valid create request for the fake's project, server and environment."""
    fields: dict[str, Any] = {
        "project_uuid": TEST_SETTINGS.project_uuid,
        "server_uuid": TEST_SETTINGS.server_uuid,
        "environment_name": TEST_SETTINGS.environment_name,
        "docker_registry_image_name": "ghcr.io/example/bot",
        "docker_registry_image_tag": "1.4.2",
        "ports_exposes": "8080",
        "name": "slot-1",
        **overrides,
    }
    return CreateDockerImageApp(**fields)


def wait_until(condition: Callable[[], bool], timeout: float = 60.0) -> None:
    """Poll ``condition`` in real time (deployments run on the fake's clock)."""
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s")
        time.sleep(0.01)
