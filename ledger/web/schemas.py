"""Request and response models of the HTTP API: the OpenAPI document is generated from
these, so they are as precise as the domain's own checks (patterns, ranges, enums).

Free-text fields refuse NUL (by pattern, so the document says so) and text that cannot
be encoded as UTF-8: both would otherwise reach the event store or PostgreSQL and fail
there, as a 500.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import AfterValidator, AliasChoices, BaseModel, ConfigDict, Field

from ledger.domain import (
    BOT_ID_PATTERN,
    CONFIG_KEY_PATTERN,
    PLATFORM_PATTERN,
    QueueEntry,
    SlotStatus,
)
from ledger.persistence import QueueRow
from ledger.service import lag_seconds
from projections import Lag
from projections.inputs import utc

__all__ = [
    "BOT_ID",
    "SLOT_REF",
    "BotId",
    "DeploymentIn",
    "ErrorOut",
    "EventOut",
    "FailIn",
    "HealthOut",
    "HeartbeatIn",
    "HeartbeatOut",
    "HistoryOut",
    "Instant",
    "LagOut",
    "PoolAtOut",
    "PoolStatsOut",
    "QueueEntryOut",
    "QueueStatsOut",
    "QueuedOut",
    "ReadyOut",
    "ReleaseOut",
    "SlotOut",
    "SlotRef",
    "SnapshotOut",
]

BOT_ID = BOT_ID_PATTERN.pattern
SLOT_REF = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""A slot's UUID or its name (names are ``prefix-platform-NNN``)."""
NO_NUL = r"^[^\x00]*$"
NON_BLANK = r"^[^\x00]*\S[^\x00]*$"


def _encodable(text: str) -> str:
    """JSON can escape lone surrogates; UTF-8, and so the store, cannot hold them."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode text") from None
    return text


def _instant(at: datetime) -> datetime:
    """Instants are UTC (a naive one is taken as UTC); one that UTC cannot hold is bad
    input, not an overflow deep in a query."""
    try:
        return utc(at)
    except OverflowError:
        raise ValueError("is out of the representable range once converted to UTC") from None


Text = Annotated[str, AfterValidator(_encodable)]
BotId = Annotated[str, Field(pattern=BOT_ID, description="The bot's id.")]
SlotRef = Annotated[str, Field(pattern=SLOT_REF, description="A slot's id or its name.")]
Platform = Annotated[str, Field(pattern=PLATFORM_PATTERN.pattern)]
Instant = Annotated[datetime, AfterValidator(_instant)]


class _Model(BaseModel):
    """Responses, read from the domain's and the read models' objects by attribute
    (``validation_alias`` names the attribute where the API's name differs)."""

    model_config = ConfigDict(frozen=True, from_attributes=True)

    @classmethod
    def of(cls, source: object) -> Self:
        return cls.model_validate(source)


class _Request(BaseModel):
    """Unknown fields are refused: a typo must not be silently ignored."""

    model_config = ConfigDict(extra="forbid", frozen=True)


class ErrorOut(_Model):
    """Every error answer: a short machine code and a sentence for humans."""

    error: str = Field(examples=["bot_already_holds_slot"])
    detail: str


class DeploymentIn(_Request):
    bot_id: BotId
    platform: Platform | None = Field(None, description="Only slots of this platform.")
    priority: int = Field(0, ge=-1000, le=1000, description="Lower values are served first.")
    queue_timeout_s: float | None = Field(
        None,
        gt=0,
        le=QueueEntry.MAX_TIMEOUT_S,
        allow_inf_nan=False,
        description="How long to wait in the queue when the pool is full.",
    )
    config: dict[
        Annotated[str, Field(pattern=CONFIG_KEY_PATTERN.pattern)],
        Annotated[Text, Field(max_length=4096, pattern=NO_NUL)],
    ] = Field(
        default_factory=dict,
        max_length=100,
        description="Environment variables for the bot's container (settings, never secrets).",
        json_schema_extra={"additionalProperties": False},  # only the pattern's keys
    )


class HeartbeatIn(_Request):
    bot_id: BotId


class FailIn(_Request):
    reason: Annotated[Text, Field(min_length=1, max_length=1000, pattern=NON_BLANK)]


class SlotOut(_Model):
    slot_id: UUID = Field(validation_alias=AliasChoices("slot_id", "id"))
    name: str
    pool: str
    platform: str
    status: SlotStatus
    status_since: datetime
    bot_id: str | None
    lease: int
    coolify_uuid: str | None
    deployment_uuid: str | None
    last_used: datetime | None
    last_error: str | None
    recovery_attempts: int
    retired: bool
    version: int


class QueuedOut(_Model):
    """The pool is full: the request waits at ``position``."""

    bot_id: str
    position: int
    estimated_wait_ms: int
    priority: int
    platform: str | None
    queued_at: datetime
    timeout_at: datetime


class ReleaseOut(_Model):
    """``released``: the slot is idle again; ``failed``: stopping the container failed,
    so the slot is in error; ``cancelled``: the bot's queue entry was cancelled."""

    bot_id: str
    outcome: Literal["released", "failed", "cancelled"]
    slot: SlotOut | None


class HeartbeatOut(_Model):
    """``started``: this heartbeat moved the slot from deploying to busy."""

    slot: SlotOut
    started: bool


class PoolStatsOut(_Model):
    """Exactly the seed's keys."""

    total: int
    idle: int
    deploying: int
    busy: int
    error: int
    maxSize: int = Field(validation_alias=AliasChoices("maxSize", "max_size"))  # the seed's name


class QueueStatsOut(_Model):
    length: int
    oldest_queued_at: datetime | None
    average_wait_s: float | None = Field(description="Mean enqueue-to-dispatch time.")


class QueueEntryOut(_Model):
    position: int = Field(description="1-based place in dispatch order.")
    bot_id: str
    platform: str | None
    priority: int
    queued_at: datetime
    timeout_at: datetime

    @classmethod
    def listing(cls, rows: list[QueueRow]) -> list[QueueEntryOut]:
        return [
            cls(
                position=i,
                bot_id=r.bot_id,
                platform=r.platform,
                priority=r.priority,
                queued_at=r.queued_at,
                timeout_at=r.timeout_at,
            )
            for i, r in enumerate(rows, 1)
        ]


class SlotAtOut(_Model):
    slot_id: UUID
    name: str
    platform: str
    status: SlotStatus
    since: datetime
    bot_id: str | None


class PoolAtOut(_Model):
    at: datetime
    pool: str
    slots: list[SlotAtOut]
    stats: PoolStatsOut


class EventOut(_Model):
    position: int
    type: str
    occurred_at: datetime
    originator_id: UUID
    originator_version: int
    slot_id: UUID | None
    bot_id: str | None
    actor: str | None
    correlation_id: str | None
    reason: str | None
    data: dict[str, Any] = Field(validation_alias="fields")


class IntervalOut(_Model):
    status: SlotStatus
    start: datetime = Field(validation_alias=AliasChoices("start", "from_ts"))
    end: datetime | None = Field(
        validation_alias=AliasChoices("end", "to_ts"),
        description="None while the slot is still in this status.",
    )
    start_position: int = Field(validation_alias=AliasChoices("start_position", "from_position"))
    end_position: int | None = Field(validation_alias=AliasChoices("end_position", "to_position"))
    bot_id: str | None


class HistoryOut(_Model):
    slot: SlotOut
    intervals: list[IntervalOut]
    time_in_status: dict[SlotStatus, float] = Field(description="Seconds in each status.")
    events: list[EventOut]


class LagOut(_Model):
    head: int = Field(description="The event log's last position.")
    position: int = Field(description="The position the read models reached.")
    behind: int
    seconds: float = Field(description="How late the read models are; 0 when caught up.")
    heartbeat_s: float | None = Field(description="Since the follower last read the log.")

    @classmethod
    def of_lag(cls, lag: Lag) -> LagOut:
        return cls(
            head=lag.head,
            position=lag.position,
            behind=lag.behind,
            seconds=lag_seconds(lag),
            heartbeat_s=lag.heartbeat_s,
        )


class HealthOut(_Model):
    status: Literal["ok"] = "ok"


class ReadyOut(_Model):
    status: Literal["ready", "not_ready"]
    problems: list[str]
    lag: LagOut | None


class SnapshotOut(_Model):
    """What the dashboard's stream pushes on every projected change."""

    position: int
    server_time: datetime
    stats: PoolStatsOut
    queue: QueueStatsOut
    waiting: list[QueueEntryOut]
    slots: list[SlotOut]
    events: list[EventOut]
    lag: LagOut
