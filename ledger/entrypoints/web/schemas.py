"""Request and response models of the HTTP API: the OpenAPI document is generated from
these, so they are as precise as the domain's own checks (patterns, ranges, enums).

Text fields are checked by the domain's own rules (:class:`ledger.domain.TextRule`: one
set of checks, worded once) and documented with them (``maxLength``, ``pattern``): NUL,
control characters, lone surrogates and over-long text are a 422 naming the field, and
never reach the event store.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal, Self
from uuid import UUID

from pydantic import (
    AfterValidator,
    AliasChoices,
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    GetCoreSchemaHandler,
    GetJsonSchemaHandler,
)
from pydantic.json_schema import JsonSchemaValue
from pydantic_core import CoreSchema, core_schema

from ledger.application.ports import QueueRow
from ledger.domain import (
    BOT_ID_RULE,
    CONFIG_KEY_RULE,
    CONFIG_VALUE_RULE,
    MAX_CONFIG_ENTRIES,
    PLATFORM_RULE,
    REASON_RULE,
    Pool,
    QueueEntry,
    SlotStatus,
    TextRule,
)
from ledger.service import lag_seconds
from projections import Lag
from projections.inputs import utc

__all__ = [
    "BOT_ID",
    "PLATFORM",
    "SLOT_REF",
    "BotId",
    "Checked",
    "DeploymentIn",
    "DeploymentState",
    "DeploymentStatusOut",
    "DrainIn",
    "DrainOut",
    "ErrorOut",
    "EventOut",
    "FailIn",
    "HealthOut",
    "HeartbeatIn",
    "HeartbeatOut",
    "HistoryOut",
    "Instant",
    "LagOut",
    "LoopOut",
    "PoolAtOut",
    "PoolStatsOut",
    "QueueEntryOut",
    "QueueStatsOut",
    "QueuedOut",
    "ReadyOut",
    "Reason",
    "ReleaseOut",
    "ResizeIn",
    "ResizeOut",
    "RetireOut",
    "SlotOut",
    "SlotRef",
    "SnapshotOut",
    "ViolationOut",
]

BOT_ID = BOT_ID_RULE.pattern
PLATFORM = PLATFORM_RULE.pattern
SLOT_REF = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$"
"""A slot's UUID or its name (names are ``prefix-platform-NNN``)."""


@dataclass(frozen=True)
class Checked:
    """Annotation of a text field: the domain's ``rule`` checks it, and the document
    states the rule, so clients and fuzzers know what is accepted before they ask."""

    rule: TextRule

    def __get_pydantic_core_schema__(
        self, source: Any, handler: GetCoreSchemaHandler
    ) -> CoreSchema:
        return core_schema.no_info_after_validator_function(self._check, handler(source))

    def __get_pydantic_json_schema__(
        self, schema: CoreSchema, handler: GetJsonSchemaHandler
    ) -> JsonSchemaValue:
        document = handler(schema)
        document.update(maxLength=self.rule.max_len, pattern=self.rule.pattern)
        return document

    def _check(self, value: str) -> str:
        problem = self.rule.problem(value)
        if problem is not None:
            raise ValueError(problem)
        return value


def _instant(at: datetime) -> datetime:
    """Instants are UTC (a naive one is taken as UTC); one that UTC cannot hold is bad
    input, not an overflow deep in a query."""
    try:
        return utc(at)
    except OverflowError:
        raise ValueError("is out of the representable range once converted to UTC") from None


BotId = Annotated[str, Checked(BOT_ID_RULE), Field(description="The bot's id.")]
SlotRef = Annotated[str, Field(pattern=SLOT_REF, description="A slot's id or its name.")]
Platform = Annotated[str, Checked(PLATFORM_RULE)]
Reason = Annotated[str, Checked(REASON_RULE)]


def _iso_only(value: object) -> object:
    """pydantic also reads numbers as Unix times; the API documents ISO 8601 only, and
    ``since=-190346`` is far likelier a mistake than an instant in 1969."""
    if isinstance(value, int | float) or (isinstance(value, str) and _NUMBER.match(value)):
        raise ValueError("must be an ISO 8601 instant such as 2025-12-17T22:30:00Z")
    return value


_NUMBER = re.compile(r"^\s*[-+]?[0-9.]+\s*$")
Instant = Annotated[datetime, BeforeValidator(_iso_only), AfterValidator(_instant)]


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


def _whole_number(value: object) -> object:
    """JSON Schema's ``integer`` includes ``2.0``; text and booleans are not numbers here."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValueError("must be an integer")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValueError("must be an integer")
        return int(value)
    return value


class DeploymentIn(_Request):
    bot_id: BotId
    platform: Platform | None = Field(None, description="Only slots of this platform.")
    priority: Annotated[int, BeforeValidator(_whole_number)] = Field(
        0, ge=-1000, le=1000, description="Lower values are served first."
    )
    queue_timeout_s: float | None = Field(
        None,
        gt=0,
        strict=True,
        le=QueueEntry.MAX_TIMEOUT_S,
        allow_inf_nan=False,
        description="How long to wait in the queue when the pool is full.",
    )
    config: dict[
        Annotated[str, Checked(CONFIG_KEY_RULE)],
        Annotated[str, Checked(CONFIG_VALUE_RULE)],
    ] = Field(
        default_factory=dict,
        max_length=MAX_CONFIG_ENTRIES,
        description="Environment variables for the bot's container (settings, never secrets).",
        json_schema_extra={"additionalProperties": False},  # only the pattern's keys
    )


class HeartbeatIn(_Request):
    bot_id: BotId


class FailIn(_Request):
    reason: Reason


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
    drained: bool = Field(
        default=False, description="Out of acquisition until undrained; status unchanged."
    )
    drain_scope: Literal["slot", "pool", "size"] | None = Field(
        default=None,
        description="Drained by name (`slot`), with its pool (`pool`), or by the ledger to "
        "keep the pool within a maximum lowered below its size (`size`).",
    )
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
    """``released``: the bot's lease ended, it holds nothing and may ask again; its
    slot (``deploying`` or ``busy`` with no bot) is cleared in the background: the
    deployment cancelled, the container stopped and gone, the configuration deleted,
    then the slot is idle, or in error with the reason if the container did not go
    (``GET /v1/deployments/{bot_id}`` shows ``releasing`` until then). ``cancelled``:
    the bot's queue entry was cancelled."""

    bot_id: str
    outcome: Literal["released", "cancelled"]
    slot: SlotOut | None


DeploymentState = Literal["queued", "deploying", "busy", "releasing", "failed", "released"]


class DeploymentStatusOut(_Model):
    """Where a bot stands. ``queued``: waiting at ``position`` (about
    ``estimated_wait_ms``); ``deploying``/``busy``: on ``slot``; ``releasing``: the bot
    gave its slot back and its container is being cleared; ``released``: its last
    request ended (given back, or its queue entry cancelled); ``failed``: its last
    request failed for good (the deploy failed past the retries, or its wait expired),
    ``reason`` says why. A queued or deploying request that is a retry after a failed
    deploy also has ``reason``: the failure it retries."""

    bot_id: str
    state: DeploymentState
    position: int | None = Field(None, description="1-based place in the queue (queued).")
    estimated_wait_ms: int | None = Field(None, description="Queued: the expected wait.")
    slot: SlotOut | None = Field(None, description="The slot held (deploying, busy).")
    reason: str | None = None
    since: datetime | None = Field(
        None, description="When the state began (from the log; None while queued or held)."
    )


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


REDACTED = "[redacted]"
"""What a read shows instead of a value of a bot's configuration: the configuration may
carry secrets (a meeting URL with its password) and is meant for that bot's container
only, so no read endpoint shows its values, with or without a token; the keys stay, for
debugging."""


def _redact_config(data: dict[str, Any]) -> dict[str, Any]:
    config = data.get("config")
    if not isinstance(config, dict) or not config:
        return data
    return {**data, "config": dict.fromkeys(config, REDACTED)}


class EventOut(_Model):
    """One event of the log; configuration values are redacted (:data:`REDACTED`)."""

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
    data: Annotated[dict[str, Any], AfterValidator(_redact_config)] = Field(
        validation_alias="fields"
    )


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


class LoopOut(_Model):
    """One background loop's health (``slotledger_loop_*{loop}`` in /metrics)."""

    name: str
    state: Literal["running", "failing", "standby", "stopped"]
    failures_total: int
    consecutive_failures: int
    last_error: str | None = Field(description="The last failure, `Type: message`.")
    last_success_age_s: float | None
    position: int | None = Field(description="Log followers: the last position taken.")
    lag_events: int | None = Field(description="Log followers: events not taken yet.")
    running_tasks: int | None = Field(description="The deploys: how many run now.")
    detail: str | None = Field(
        default=None, description="What the state means here (who leads the policies)."
    )


class ViolationOut(_Model):
    """An open invariant violation, as the always-on checker recorded it."""

    kind: str
    key: str = Field(description="Its name: recorded once under it.")
    position: int = Field(description="The log position where it was seen.")
    positions: list[int] = Field(description="The evidence: where its state began, where seen.")
    slot_id: UUID | None
    bot_id: str | None
    detail: str
    observed_at: datetime
    recorded_at: datetime


class ReadyOut(_Model):
    status: Literal["ready", "not_ready"]
    problems: list[str]
    lag: LagOut | None
    loops: list[LoopOut] = Field(default_factory=list)
    parked: dict[str, int] = Field(
        default_factory=dict,
        description="Events each consumer parked (`slotledger parked` lists them).",
    )
    violations: list[ViolationOut] = Field(
        default_factory=list,
        description="Open invariant violations, oldest first; each is also a line of "
        "`problems`, which leaves the process ready.",
    )


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


class ResizeIn(_Request):
    """An operator's new maximum; ``dry_run`` answers what would happen, writing nothing."""

    max_size: Annotated[int, Field(ge=1, le=Pool.MAX_SIZE_LIMIT)]
    reason: Reason
    dry_run: bool = False


class ResizeOut(_Model):
    """``changed`` is false when the pool already had this maximum (nothing written)."""

    old_max_size: int
    new_max_size: int
    size: int = Field(description="The slots the pool has now.")
    changed: bool
    dry_run: bool


class DrainIn(_Request):
    """Why; ``dry_run`` answers what would happen, writing nothing."""

    reason: Reason
    dry_run: bool = False


class DrainOut(_Model):
    """The events a drain or undrain recorded (or would), in order; none: nothing to do."""

    target: str = Field(description="The slot's name, or `pool <name>`.")
    undrain: bool
    steps: list[str]
    slots: list[str] = Field(description="The slots whose drain changed.")
    changed: bool
    dry_run: bool


class RetireOut(_Model):
    """The retirement's steps: ``SlotRetired`` is committed before the answer; the Coolify
    steps (stop, then delete or keep per ``RETIRE_MODE``) run after it, in the background."""

    slot_id: UUID
    name: str
    steps: list[str]
    dry_run: bool
