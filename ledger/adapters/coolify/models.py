"""Pydantic models for what slotledger reads from Coolify.

Response models ignore unknown keys (Coolify adds columns between releases) but insist on the
few fields the ledger acts on, so a missing one fails loudly as a bad response. What the
ledger sends (the request models) and the deployment statuses it branches on belong to the
application's Coolify port (:mod:`ledger.application.ports`), which these models satisfy.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator

from ledger.application.ports import DeploymentStatus


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


def _instant(value: object) -> datetime | None:
    """A Coolify time as an aware UTC datetime. Laravel serialises ``created_at`` and
    ``updated_at`` as ISO 8601 with ``Z``, but columns it does not cast (``last_online_at``,
    ``finished_at``) as the database has them, ``2025-12-17 22:30:00`` in the app's
    timezone (UTC); anything else is unknown (None), never a bad response."""
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip())
        except ValueError:
            return None
    else:
        return None
    return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)


Instant = Annotated[datetime | None, BeforeValidator(_instant)]


class AppStatus(_Response):
    """An application status string ``state:health[:excluded]`` split into its parts.

    Coolify appends ``:unhealthy`` to a bare state (API.md §3), and so does :meth:`parse`.
    States seen for image apps: running, starting, restarting, degraded, paused, exited;
    health: healthy, unhealthy, unknown.
    """

    raw: str
    state: str
    health: str
    excluded: bool = False

    @classmethod
    def parse(cls, raw: str) -> AppStatus:
        state, *rest = raw.split(":")
        excluded = "excluded" in rest
        healths = [part for part in rest if part != "excluded"]
        default = "unknown" if excluded else "unhealthy"
        health = healths[0] if healths else default
        return cls(raw=raw, state=state, health=health, excluded=excluded)

    @property
    def is_running(self) -> bool:
        return self.state == "running"

    @property
    def is_exited(self) -> bool:
        return self.state == "exited"

    def __str__(self) -> str:
        return self.raw


class CoolifyApplication(_Response):
    """The parts of ``GET /applications/{uuid}`` that the ledger uses."""

    uuid: str
    name: str
    status: AppStatus
    description: str | None = None
    fqdn: str | None = None
    build_pack: str | None = None
    docker_registry_image_name: str | None = None
    docker_registry_image_tag: Annotated[
        str | None, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    ] = None
    ports_exposes: str | None = None
    created_at: str | None = None
    updated_at: Instant = None
    last_online_at: Instant = None
    """Set whenever the status changes, and by every status sweep that sees the container
    (``Application::saving``, ``PushServerUpdateJob``): a status with a ``last_online_at``
    after a deployment's ``finished_at`` was observed after that deployment."""

    @field_validator("status", mode="before")
    @classmethod
    def _parse_status(cls, value: object) -> object:
        return AppStatus.parse(value) if isinstance(value, str) else value


class CreatedApp(_Response):
    """201 body of the create call; ``domains`` is the assigned FQDN (absent from the spec)."""

    uuid: str
    domains: str | None = None


class StartResult(_Response):
    """200 body of start/restart.

    No ``deployment_uuid`` means Coolify skipped the request because a deployment of the same
    commit is already queued or running (API.md §5); find it with the deployments list.
    """

    message: str
    deployment_uuid: str | None = None

    @property
    def skipped(self) -> bool:
        return self.deployment_uuid is None


class CoolifyDeployment(_Response):
    """A deployment queue entry (``GET /deployments/{uuid}``)."""

    deployment_uuid: str
    status: DeploymentStatus
    application_name: str | None = None
    commit: str | None = None
    created_at: str | None = None
    updated_at: Instant = None
    finished_at: Instant = None

    @property
    def is_terminal(self) -> bool:
        return self.status.is_terminal


class DeploymentPage(_Response):
    """One page of ``GET /deployments/applications/{uuid}``, newest first.

    The real shape is ``{"count", "deployments"}``; the spec's array of Application is wrong.
    """

    count: int
    deployments: list[CoolifyDeployment]


class StoredEnvVar(_Response):
    """An env var as Coolify echoes it; ``value`` is hidden without a sensitive-read token."""

    uuid: str
    key: str
    value: str | None = None
    is_preview: bool = False
