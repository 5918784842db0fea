"""Pydantic models for what slotledger sends to and reads from Coolify.

Response models ignore unknown keys (Coolify adds columns between releases) but insist on the
few fields the ledger acts on, so a missing one fails loudly as a bad response. Request models
forbid unknown keys because Coolify rejects them with 422 (API.md §0).
"""

from __future__ import annotations

from enum import StrEnum
from typing import Annotated, Self

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

DESCRIPTION_MAX_LENGTH = 255
"""Coolify stores descriptions in a varchar(255); longer ones fail with a 500 (API.md §4)."""


def clean_description(text: str) -> str:
    """Make ``text`` survive Coolify's description column unchanged.

    Coolify runs ``strip_tags`` on descriptions and the column is varchar(255), so anything
    with ``<``/``>`` would be silently altered and anything longer would be a server error.
    It also trims input, so trimming here keeps what Coolify stores equal to what was sent.
    """
    without_tags = text.replace("<", "").replace(">", "").strip()
    return without_tags[:DESCRIPTION_MAX_LENGTH].rstrip()


class _Response(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class DeploymentStatus(StrEnum):
    """Every status a deployment can have (``ApplicationDeploymentStatus``, API.md §8)."""

    QUEUED = "queued"
    IN_PROGRESS = "in_progress"
    FINISHED = "finished"
    FAILED = "failed"
    CANCELLED_BY_USER = "cancelled-by-user"

    @property
    def is_terminal(self) -> bool:
        """True once the deployment will not change any more."""
        return self in _TERMINAL_DEPLOYMENT_STATUSES


_TERMINAL_DEPLOYMENT_STATUSES = frozenset(
    {DeploymentStatus.FINISHED, DeploymentStatus.FAILED, DeploymentStatus.CANCELLED_BY_USER}
)


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
    updated_at: str | None = None

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
    updated_at: str | None = None
    finished_at: str | None = None

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


ENV_KEY_PATTERN = r"^[A-Za-z_][A-Za-z0-9_.]*$"


class EnvVar(_Request):
    """One item of a bulk env upsert.

    Every flag is always sent: Coolify may reset ``is_multiline``/``is_shown_once`` when they
    are left out (API.md §6). Values must be strings; Coolify trims them and stores ``""`` as null.
    """

    key: Annotated[str, Field(max_length=255, pattern=ENV_KEY_PATTERN)]
    value: str
    is_preview: bool = False
    is_literal: bool = False
    is_multiline: bool = False
    is_shown_once: bool = False
    is_runtime: bool = True
    is_buildtime: bool = True


class CreateDockerImageApp(_Request):
    """Body of ``POST /applications/dockerimage`` limited to keys Coolify whitelists (API.md §2).

    Optional keys left as None are not sent, so Coolify applies its own defaults (for example
    ``autogenerate_domain`` true, ``health_check_enabled`` false).
    """

    project_uuid: str
    server_uuid: str
    docker_registry_image_name: Annotated[str, Field(min_length=1, max_length=255)]
    environment_name: str | None = None
    environment_uuid: str | None = None
    destination_uuid: str | None = None
    docker_registry_image_tag: Annotated[
        str | None, Field(pattern=r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
    ] = None
    ports_exposes: Annotated[str | None, Field(pattern=r"^\d+(,\d+)*$")] = None
    ports_mappings: str | None = None
    name: Annotated[str | None, Field(max_length=255)] = None
    description: str | None = None
    domains: str | None = None
    autogenerate_domain: bool | None = None
    force_domain_override: bool | None = None
    instant_deploy: bool | None = None
    limits_memory: str | None = None
    limits_memory_reservation: str | None = None
    limits_cpus: str | None = None
    health_check_enabled: bool | None = None
    health_check_path: str | None = None
    health_check_port: str | None = None
    health_check_interval: int | None = None
    health_check_timeout: int | None = None
    health_check_retries: int | None = None
    health_check_start_period: int | None = None
    stop_grace_period: Annotated[int | None, Field(ge=1, le=3600)] = None
    tags: list[Annotated[str, Field(min_length=2)]] | None = None

    @field_validator("description")
    @classmethod
    def _clean_description(cls, value: str | None) -> str | None:
        return None if value is None else clean_description(value)

    @model_validator(mode="after")
    def _needs_environment(self) -> Self:
        if self.environment_name is None and self.environment_uuid is None:
            raise ValueError("set environment_name or environment_uuid (at least one)")
        return self

    def to_json(self) -> dict[str, object]:
        """The JSON body: only the keys that are set."""
        return self.model_dump(mode="json", exclude_none=True)
