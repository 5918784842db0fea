"""How the fake behaves: its settings when nothing is wrong, and the faults it injects."""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, Self

__all__ = ["DEFAULT_TOKEN", "FakeSettings", "Faults"]

DEFAULT_TOKEN = "fake-coolify-token"


def _checked(current: Any, changes: Mapping[str, object], what: str, fixed: frozenset[str]) -> Any:
    """A copy of the dataclass ``current`` with ``changes``; unknown or fixed names, wrong
    types and negative numbers raise ValueError (an int is accepted for a float)."""
    types = {f.name: type(getattr(current, f.name)) for f in dataclasses.fields(current)}
    checked: dict[str, Any] = {}
    for name, value in changes.items():
        expected = types.get(name)
        if expected is None or name in fixed:
            raise ValueError(f"unknown {what} {name!r}")
        if expected is float and isinstance(value, int) and not isinstance(value, bool):
            value = float(value)
        if type(value) is not expected:
            raise ValueError(f"{what} {name!r} must be {expected.__name__}")
        if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
            raise ValueError(f"{what} {name!r} must not be negative")
        checked[name] = value
    return dataclasses.replace(current, **checked)


@dataclass(frozen=True)
class FakeSettings:
    """How the fake behaves when nothing is wrong; change at runtime with ``configure`` (Python)
    or ``POST /_fake/settings`` (validated).

    Tokens: ``token`` has every ability (like ``root``, so it also reads sensitive data);
    ``deploy_token`` has ``read``, ``write`` and ``deploy`` but not ``read:sensitive`` (env
    values and deployment ``logs`` are hidden from it, as from any token without it);
    ``read_only_token`` only ``read``, so write and deploy calls made with it get Coolify's 403.
    ``api_enabled`` False is Settings → Advanced with the API off: every ``/api/v1`` call but
    health answers 403 ``{"success": true, "message": "API is disabled."}``.

    Timing (seconds). A deployment runs ``deploy_delay`` once it leaves the queue; its new
    container comes up half-way. ``concurrent_builds`` deployments run at once on the server
    and one per application (Coolify's defaults: 2 and ``next_queuable``); more wait
    ``queued``, and start answers queue-full once ``deployment_queue_limit`` wait (25).
    ``stop_delay`` is how long the ``StopApplication`` job waits in Coolify's queue after
    ``POST /stop`` before it removes the app's containers (then the app reads
    ``exited:unhealthy`` at once). ``status_interval`` is the period of the status sweep
    (``ServerCheckJob`` → ``GetContainersStatus``, about 60 s in Coolify); until a sweep sees
    a new container, the app shows the bare ``running`` its deployment job stored
    (``running:unhealthy``); 0 sweeps on every request (no lag). The defaults (2 s stop, 5 s
    sweep) are shorter than Coolify's so the demo stays lively, long enough to show the lag.

    The project, server and environment are the only ones that exist: create calls naming
    anything else get Coolify's 404s. ``rate_limit`` is requests per ``rate_window`` seconds for
    all of ``/api/v1`` (0 turns the throttle off); Coolify's default is 200 per minute.
    """

    token: str = DEFAULT_TOKEN
    deploy_token: str = "fake-coolify-deploy-token"
    read_only_token: str = "fake-coolify-read-only-token"
    api_enabled: bool = True
    deploy_delay: float = 1.0
    delete_delay: float = 0.5
    stop_delay: float = 2.0
    status_interval: float = 5.0
    concurrent_builds: int = 2
    deployment_queue_limit: int = 25
    rate_limit: int = 200
    rate_window: float = 60.0
    project_uuid: str = "fake-project"
    server_uuid: str = "fake-server"
    environment_name: str = "production"
    environment_uuid: str = "fake-environment"
    seed: int | None = None
    """Seeds ids and fault draws when the fake is built (changing it later has no effect)."""

    def updated(self, changes: Mapping[str, object]) -> Self:
        """A copy with ``changes`` applied; unknown names, ``seed`` or wrong types raise
        ValueError."""
        result: Self = _checked(self, changes, "setting", frozenset({"seed"}))
        return result

    def public(self) -> dict[str, Any]:
        """The settings without the tokens, for answers and snapshots."""
        hidden = {"token", "deploy_token", "read_only_token"}
        return {k: v for k, v in dataclasses.asdict(self).items() if k not in hidden}


@dataclass(frozen=True)
class Faults:
    """Failures to inject. ``*_rate`` are per-request probabilities; ``*_next`` are used up.

    - ``error_rate``: answer 500 ``{"message":"Server Error"}`` without doing the work.
    - ``latency``: seconds added before every answer.
    - ``hang_rate``: never answer; the client has to time out.
    - ``reset_rate``: drop the TCP connection (RST) without an answer.
    - ``fail_next_deployments``: that many new deployments end ``failed``.
    - ``exit_after_deploy``: new deployments' containers exit, and the app reads
      ``exited:unhealthy`` as soon as they finish (harsher than Coolify, whose job stores
      ``running`` and lets the next sweep see the exit: for that, ``POST /_fake/apps/{uuid}``
      with ``{"container": "exits"}``).
    - ``queue_full_next``: start/restart return a ``deployment_uuid`` that was never created
      (Coolify's queue_full bug, API.md §5), ``/deploy`` answers 429.
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

    def updated(self, changes: Mapping[str, object]) -> Self:
        """A copy with ``changes`` applied; unknown names or wrong types raise ValueError."""
        result: Self = _checked(self, changes, "fault", frozenset())
        return result
