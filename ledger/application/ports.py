"""The ports the application needs: the event store, which every backend implements, and
Coolify, which :class:`ledger.adapters.coolify.CoolifyClient` implements.

The application saves events together with the index rows they bring up to date (passed
through ``save()`` under :data:`INDEX_ROWS`); the recorder writes both in one transaction
and answers the command side's queries from the rows: least recently used idle slot, next
queued request. The adapters (``ledger.adapters.memory``, ``.sqlite``, ``.postgres``)
implement :class:`LedgerRecorder`; the application imports only this module.

:class:`Coolify` names the calls the deploy flow and the policies make, and what they read
of the answers; the requests they send are defined here, so the client takes them as they
are, and its pydantic answers satisfy the small read-only views structurally.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, Protocol, Self, TypeVar
from uuid import UUID

from eventsourcing.persistence import ApplicationRecorder
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from ledger.domain import QueueStatus, SlotStatus

__all__ = [
    "DESCRIPTION_MAX_LENGTH",
    "ENV_KEY_PATTERN",
    "INDEX_ROWS",
    "AcquireReads",
    "AppCreated",
    "AppState",
    "ContainerState",
    "Coolify",
    "CreateDockerImageApp",
    "DeploymentList",
    "DeploymentState",
    "DeploymentStatus",
    "EnvVar",
    "IndexRow",
    "LedgerRecorder",
    "ListedApp",
    "QueueRow",
    "SlotRow",
    "StartAnswer",
    "StoredEnv",
    "clean_description",
    "dispatch_order",
    "index_rows",
    "lru_order",
    "row_key",
]

INDEX_ROWS = "index_rows"
"""Keyword under which the application passes index rows through ``save()``."""


@dataclass(frozen=True)
class SlotRow:
    """A slot's current state as the inline index keeps it."""

    slot_id: UUID
    pool: str
    name: str
    platform: str
    coolify_uuid: str | None
    status: SlotStatus
    bot_id: str | None
    status_since: datetime
    last_used: datetime | None
    retired: bool
    version: int
    drain_scope: str | None = None
    """Why the slot is drained (:data:`~ledger.domain.slot.DrainScope`); None: it is not."""

    @property
    def drained(self) -> bool:
        return self.drain_scope is not None

    @property
    def available(self) -> bool:
        """Whether an acquire may take the slot: idle, in the pool and not drained."""
        return self.status is SlotStatus.IDLE and not self.retired and not self.drained


@dataclass(frozen=True)
class QueueRow:
    """A queue entry's current state as the inline index keeps it."""

    entry_id: UUID
    pool: str
    bot_id: str
    platform: str | None
    priority: int
    queued_at: datetime
    timeout_at: datetime
    status: QueueStatus
    version: int


IndexRow = SlotRow | QueueRow
R = TypeVar("R", SlotRow, QueueRow)


@dataclass(frozen=True)
class AcquireReads:
    """Everything an acquire decides on, read together (one round trip where the backend
    can): the bot's queue entry, the slot it holds, and idle candidates."""

    waiting: QueueRow | None
    held: SlotRow | None
    idle: list[SlotRow]


class LedgerRecorder(ApplicationRecorder, ABC):
    """An application recorder that also answers the command side's queries."""

    def acquire_reads(
        self, bot_id: str, pool: str, platform: str | None, limit: int
    ) -> AcquireReads:
        """:meth:`waiting_entry_for_bot`, :meth:`slot_for_bot` and
        :meth:`idle_candidates` at once; backends with round trips send them together."""
        return AcquireReads(
            self.waiting_entry_for_bot(bot_id),
            self.slot_for_bot(bot_id),
            self.idle_candidates(pool, platform, limit),
        )

    @abstractmethod
    def idle_candidates(self, pool: str, platform: str | None, limit: int) -> list[SlotRow]:
        """Available slots (idle, not drained) of one platform or any, least recently
        used first."""

    @abstractmethod
    def slot_for_bot(self, bot_id: str) -> SlotRow | None:
        """The slot a bot holds, if any."""

    @abstractmethod
    def slot_row(self, slot_id: UUID) -> SlotRow | None:
        """One slot's row, retired ones included."""

    @abstractmethod
    def slot_rows(self, pool: str, *, include_retired: bool = False) -> list[SlotRow]:
        """Every slot of a pool, by name."""

    @abstractmethod
    def waiting_entries(self, pool: str) -> list[QueueRow]:
        """Waiting queue entries in dispatch order: priority (lower first), then FIFO."""

    @abstractmethod
    def waiting_entry_for_bot(self, bot_id: str) -> QueueRow | None:
        """The entry a bot waits in, if any."""


def index_rows(kwargs: Mapping[str, Any], kind: type[R]) -> list[R]:
    """The rows of one kind that a ``save()`` passed, in key order: a fixed order of row
    locks keeps concurrent writers from deadlocking."""
    rows: Sequence[IndexRow] = kwargs.get(INDEX_ROWS, ())
    return sorted((r for r in rows if isinstance(r, kind)), key=lambda r: str(row_key(r)))


def row_key(row: IndexRow) -> UUID:
    return row.slot_id if isinstance(row, SlotRow) else row.entry_id


def lru_order(row: SlotRow) -> tuple[bool, datetime, str]:
    """The order of :meth:`LedgerRecorder.idle_candidates`: never used first, then least
    recently used, then by name."""
    return (row.last_used is not None, row.last_used or row.status_since, row.name)


def dispatch_order(row: QueueRow) -> tuple[int, datetime, str]:
    """The order of :meth:`LedgerRecorder.waiting_entries`."""
    return (row.priority, row.queued_at, row.bot_id)


# --- Coolify -----------------------------------------------------------------------------

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


class _Request(BaseModel):
    """What the ledger sends: unknown keys are refused, as Coolify answers them with 422
    (API.md §0)."""

    model_config = ConfigDict(extra="forbid", frozen=True)


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


class AppCreated(Protocol):
    """What the deploy flow reads of a created application."""

    @property
    def uuid(self) -> str: ...


class StartAnswer(Protocol):
    """What the deploy flow reads of a start: no uuid when one is already queued."""

    @property
    def deployment_uuid(self) -> str | None: ...


class DeploymentState(Protocol):
    """What the deploy flow reads of a deployment."""

    @property
    def deployment_uuid(self) -> str: ...

    @property
    def status(self) -> DeploymentStatus: ...

    @property
    def finished_at(self) -> datetime | None: ...


class DeploymentList(Protocol):
    """One page of an application's deployments, newest first."""

    @property
    def deployments(self) -> Sequence[DeploymentState]: ...


class ContainerState(Protocol):
    """An application's container status; ``str()`` gives Coolify's own text."""

    @property
    def is_running(self) -> bool: ...

    @property
    def is_exited(self) -> bool: ...


class AppState(Protocol):
    """What the deploy flow reads of an application; ``last_online_at`` is when Coolify
    last changed or confirmed ``status`` (None when it does not say)."""

    @property
    def status(self) -> ContainerState: ...

    @property
    def last_online_at(self) -> datetime | None: ...


class ListedApp(AppState, Protocol):
    """One application of ``GET /applications``, for reconciliation."""

    @property
    def uuid(self) -> str: ...

    @property
    def name(self) -> str: ...


class StoredEnv(Protocol):
    """One env var of an application as Coolify keeps it."""

    @property
    def uuid(self) -> str: ...

    @property
    def key(self) -> str: ...


class Coolify(Protocol):
    """The Coolify calls of the deploy flow and the policies. Failures raise
    :class:`~ledger.errors.CoolifyError` (:class:`~ledger.errors.CoolifyNotFound` for an
    unknown uuid)."""

    def create_dockerimage_application(self, request: CreateDockerImageApp) -> AppCreated: ...

    def get_application(self, uuid: str) -> AppState: ...

    def update_envs_bulk(self, uuid: str, envs: Sequence[EnvVar]) -> object: ...

    def delete_application(self, uuid: str) -> None: ...

    def start(self, uuid: str) -> StartAnswer: ...

    def stop(self, uuid: str) -> None: ...

    def get_deployment(self, deployment_uuid: str) -> DeploymentState: ...

    def list_application_deployments(self, app_uuid: str, *, take: int) -> DeploymentList: ...

    def cancel_deployment(self, deployment_uuid: str) -> None: ...

    def list_applications(self) -> Sequence[ListedApp]: ...

    def list_envs(self, uuid: str) -> Sequence[StoredEnv]: ...

    def delete_env(self, app_uuid: str, env_uuid: str) -> None: ...
