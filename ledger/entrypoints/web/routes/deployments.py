"""``/v1/deployments``: a bot asks for a slot and gives it back."""

from __future__ import annotations

import time
from typing import Annotated

from fastapi import APIRouter, Header, Path
from fastapi.responses import JSONResponse

from ledger.application.deploy import Acquired
from ledger.domain import QueueEntry, SlotStatus
from ledger.entrypoints.web.dependencies import MUTATING, ServiceDep
from ledger.entrypoints.web.errors import error_responses
from ledger.entrypoints.web.schemas import (
    BOT_ID,
    DeploymentIn,
    ErrorOut,
    QueuedOut,
    ReleaseOut,
    SlotOut,
)

__all__ = ["router"]

router = APIRouter(tags=["deployments"], dependencies=MUTATING)

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
    """End what the bot holds at this moment: stop its container and release its
    slot, or cancel its queue entry (a release that meets the entry's dispatch
    releases the slot it was given)."""
    result = service.deployer.release(bot_id, ctx=service.ledger.context("api"))
    if isinstance(result, QueueEntry):
        service.settle()
        return ReleaseOut(bot_id=bot_id, outcome="cancelled", slot=None)
    service.settle(result.position)
    released = result.slot.status is SlotStatus.IDLE
    return ReleaseOut(
        bot_id=bot_id,
        outcome="released" if released else "failed",
        slot=SlotOut.of(result.slot),
    )
