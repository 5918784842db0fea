"""How the fake behaves: its settings when nothing is wrong, and the faults it injects."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

__all__ = ["DEFAULT_TOKEN", "FakeSettings", "Faults"]

DEFAULT_TOKEN = "fake-coolify-token"


@dataclass(frozen=True)
class FakeSettings:
    """How the fake behaves when nothing is wrong; change at runtime with ``configure``.

    ``token`` has every ability (like ``root``); ``read_only_token`` only ``read``, so write and
    deploy calls made with it get Coolify's 403.

    The project, server and environment are the only ones that exist: create calls naming
    anything else get Coolify's 404s. ``rate_limit`` is requests per ``rate_window`` seconds for
    all of ``/api/v1`` (0 turns the throttle off); Coolify's default is 200 per minute.
    """

    token: str = DEFAULT_TOKEN
    read_only_token: str = "fake-coolify-read-only-token"
    deploy_delay: float = 1.0
    delete_delay: float = 0.5
    rate_limit: int = 200
    rate_window: float = 60.0
    project_uuid: str = "fake-project"
    server_uuid: str = "fake-server"
    environment_name: str = "production"
    environment_uuid: str = "fake-environment"
    seed: int | None = None
    """Seeds ids and fault draws when the fake is built (changing it later has no effect)."""


@dataclass(frozen=True)
class Faults:
    """Failures to inject. ``*_rate`` are per-request probabilities; ``*_next`` are used up.

    - ``error_rate``: answer 500 ``{"message":"Server Error"}`` without doing the work.
    - ``latency``: seconds added before every answer.
    - ``hang_rate``: never answer; the client has to time out.
    - ``reset_rate``: drop the TCP connection (RST) without an answer.
    - ``fail_next_deployments``: that many new deployments end ``failed``.
    - ``exit_after_deploy``: finished deployments leave the app ``exited:unhealthy``.
    - ``queue_full_next``: start/restart return a ``deployment_uuid`` that was never created
      (Coolify's queue_full bug, API.md §5).
    - ``html_next``: answer 200 with an HTML page (a debug page listing the request headers).
    - ``garbage_next``: do the work, then answer a truncated JSON body.
    - ``drop_field_next``: do the work, then leave this key out of the next JSON object answer.
    - ``echo_auth_next``: answer 400 with the Authorization header echoed in the message.
    """

    error_rate: float = 0.0
    latency: float = 0.0
    hang_rate: float = 0.0
    reset_rate: float = 0.0
    fail_next_deployments: int = 0
    exit_after_deploy: bool = False
    queue_full_next: int = 0
    html_next: int = 0
    garbage_next: int = 0
    drop_field_next: str = ""
    echo_auth_next: int = 0

    def updated(self, changes: Mapping[str, object]) -> Faults:
        """A copy with ``changes`` applied; unknown names or wrong types raise ValueError."""
        types = {f.name: type(getattr(self, f.name)) for f in dataclasses.fields(self)}
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            expected = types.get(name)
            if expected is None:
                raise ValueError(f"unknown fault {name!r}")
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not expected:
                raise ValueError(f"fault {name!r} must be {expected.__name__}")
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"fault {name!r} must not be negative")
            checked[name] = value
        return dataclasses.replace(self, **checked)
