"""``/v1/deployments``: a bot asks for a slot, gives it back, and its orchestrator asks
where it stands."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse

from ledger.application.containers import ATTEMPT_KEY
from ledger.application.deploy import Acquired
from ledger.application.ports import SlotRow
from ledger.domain import QueueEntry, SlotStatus
from ledger.domain.slot import OCCUPIED
from ledger.entrypoints.web.dependencies import MUTATING, ServiceDep
from ledger.entrypoints.web.errors import error_responses
from ledger.entrypoints.web.schemas import (
    BOT_ID,
    DeploymentIn,
    DeploymentState,
    DeploymentStatusOut,
    ErrorOut,
    QueuedOut,
    ReleaseOut,
    SlotOut,
)
from ledger.errors import BotNotFound, ConcurrencyExhausted
from ledger.service import Service
from projections.models.records import AuditRecord

__all__ = ["router"]

router = APIRouter(tags=["deployments"])

BotPath = Annotated[str, Path(pattern=BOT_ID, description="The bot's id.")]
IdempotencyKey = Annotated[
    str | None,
    Header(
        alias="Idempotency-Key",
        pattern=r"^[\x21-\x7e]{1,255}$",
        description="Names the request: a retry with the same key and body answers as the "
        "first did; the same key with a different body for the bot is refused (422).",
    ),
]


@router.post(
    "/v1/deployments",
    dependencies=MUTATING,
    status_code=201,
    response_model=None,
    responses={
        200: {
            "model": SlotOut,
            "description": "The bot already holds this slot (a repeated request): "
            "nothing new was written",
        },
        201: {"model": SlotOut, "description": "A slot was acquired; it is deploying"},
        202: {
            "model": QueuedOut,
            "description": "The pool is full: the request waits at `position` (a "
            "repeated request answers with the same entry and its current place; 0 "
            "when the place could not be read: repeat the request to read it)",
        },
        **error_responses(400, 401, 409, 503),
        422: {
            "model": ErrorOut,
            "description": "Invalid input, or `idempotency_key_reused`: the "
            "Idempotency-Key was used for this bot with a different body",
        },
    },
)
def request_deployment(
    service: ServiceDep, body: DeploymentIn, idempotency_key: IdempotencyKey = None
) -> JSONResponse:
    """A slot for a bot: an idle one, a new one while the pool has room, else a
    place in the queue. Safe to repeat: a bot that already holds a slot or waits
    gets that slot (200) or that entry (202), never a second one."""
    started = time.perf_counter()
    result = service.deployer.request(
        body.bot_id,
        platform=body.platform,
        priority=body.priority,
        queue_timeout_s=body.queue_timeout_s,
        config=dict(body.config),
        ctx=service.ledger.context("api"),
        idempotency_key=idempotency_key,
    )
    latency = service.metrics.acquire_latency
    if isinstance(result, Acquired):
        if not result.existing:
            latency.labels("acquired").observe(time.perf_counter() - started)
        service.settle(result.position)
        return JSONResponse(
            SlotOut.of(result.slot).model_dump(mode="json"),
            status_code=200 if result.existing else 201,
            headers={"Location": f"/v1/slots/{result.slot.id}"},
        )
    latency.labels("queued").observe(time.perf_counter() - started)
    service.settle(result.log_position)
    entry = result.entry
    queued = QueuedOut(
        bot_id=entry.bot_id,
        position=result.position,
        estimated_wait_ms=result.estimated_wait_ms,
        priority=entry.priority,
        platform=entry.platform,
        queued_at=entry.queued_at,
        timeout_at=entry.timeout_at,
    )
    return JSONResponse(queued.model_dump(mode="json"), status_code=202)


@router.delete(
    "/v1/deployments/{bot_id}",
    dependencies=MUTATING,
    responses={
        **error_responses(401, 409, 422, 503),
        404: {
            "model": ErrorOut,
            "description": "`bot_not_found`: the bot holds no slot and waits in no "
            "queue, also when it was released already (a repeated release changes "
            "nothing)",
        },
    },
)
def release(service: ServiceDep, bot_id: BotPath) -> ReleaseOut:
    """End what the bot holds at this moment: end its lease on its slot (the
    container is stopped and the slot cleared in the background, never in this
    request), or cancel its queue entry (a release that meets the entry's dispatch
    releases the slot it was given)."""
    result = service.deployer.release(bot_id, ctx=service.ledger.context("api"))
    if isinstance(result, QueueEntry):
        service.settle()
        return ReleaseOut(bot_id=bot_id, outcome="cancelled", slot=None)
    service.settle(result.position)
    return ReleaseOut(bot_id=bot_id, outcome="released", slot=SlotOut.of(result.slot))


@router.get(
    "/v1/deployments/{bot_id}",
    responses={
        **error_responses(422, 503),
        404: {"model": ErrorOut, "description": "`bot_not_found`: the bot was never seen"},
    },
)
def deployment_status(service: ServiceDep, bot_id: BotPath) -> DeploymentStatusOut:
    """Where the bot stands: queued (its place and expected wait), deploying or busy
    (its slot), releasing, or the outcome of its last request: released, or failed
    with the reason. What the bot holds is read from the ledger itself; the outcome of
    a request that ended, from the event log's read models."""
    ledger = service.ledger
    for _ in range(ledger.max_attempts):
        held = ledger.holding(bot_id)
        if held is None:
            return _ended(service, bot_id)
        if isinstance(held, SlotRow):
            slot = ledger.slot_of(held)
            if slot.status is SlotStatus.BUSY:
                return DeploymentStatusOut(bot_id=bot_id, state="busy", slot=SlotOut.of(slot))
            cid = ledger.lease_correlation_id(slot.id)
            return DeploymentStatusOut(
                bot_id=bot_id,
                state="deploying",
                slot=SlotOut.of(slot),
                reason=_retried(service, bot_id, cid),
            )
        try:
            queued = service.deployer.queued(ledger.repository.get(held.entry_id))
        except BotNotFound:
            continue  # dispatched or ended since the read: read again
        entry = queued.entry
        retry = ATTEMPT_KEY in entry.config
        return DeploymentStatusOut(
            bot_id=bot_id,
            state="queued",
            position=queued.position,
            estimated_wait_ms=queued.estimated_wait_ms,
            reason=_retried(service, bot_id, entry.correlation_id) if retry else None,
        )
    raise ConcurrencyExhausted(f"the state of bot {bot_id!r} kept changing; try again")


_ENDS = frozenset(
    {"SlotReleasing", "SlotReleased", "SlotFailed", "QueueEntryExpired", "QueueEntryCancelled"}
)
"""The events that end a bot's request, or a lease of it."""


def _ended(service: Service, bot_id: str) -> DeploymentStatusOut:
    """The outcome of the bot's last request, from its events (it holds nothing now)."""
    service.settle()
    ends = [r for r in service.models.audit(bot=bot_id, limit=None) if r.type in _ENDS]
    if not ends:
        raise BotNotFound(f"bot {bot_id!r} was never seen")
    last = ends[-1]
    if last.type in ("SlotFailed", "QueueEntryExpired"):
        state: DeploymentState = "failed"
    elif last.type == "SlotReleasing" and _still_releasing(service, last):
        state = "releasing"
    else:
        state = "released"
    return DeploymentStatusOut(
        bot_id=bot_id, state=state, reason=last.reason, since=last.occurred_at
    )


def _still_releasing(service: Service, released: AuditRecord) -> bool:
    """The slot the bot released is still releasing that lease: no bot on it, a
    container may run, and its status was set before the bot let go."""
    slot = service.models.slot(released.slot_id) if released.slot_id else None
    return (
        slot is not None
        and slot.bot_id is None
        and slot.status in OCCUPIED
        and slot.since_position < released.position
    )


def _retried(service: Service, bot_id: str, correlation_id: str | None) -> str | None:
    """The failure a request retries: its last ``SlotFailed``, if any (same request =
    same correlation id)."""
    failures = [
        r
        for r in service.models.audit(bot=bot_id, type="SlotFailed", limit=None)
        if r.correlation_id == correlation_id
    ]
    return f"retry after a failed deploy: {failures[-1].reason}" if failures else None
