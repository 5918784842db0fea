"""``/v1/events``: the audit query over the log."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ledger.entrypoints.web.dependencies import ServiceDep
from ledger.entrypoints.web.errors import error_responses
from ledger.entrypoints.web.schemas import BOT_ID, SLOT_REF, EventOut, Instant
from projections.engine.fold import EVENT_TYPES

__all__ = ["router"]

router = APIRouter(tags=["events"])


@router.get("/v1/events", responses=error_responses(422))
def events(
    service: ServiceDep,
    slot: Annotated[str | None, Query(pattern=SLOT_REF, description="Id or name")] = None,
    bot: Annotated[str | None, Query(pattern=BOT_ID)] = None,
    event_type: Annotated[
        str | None, Query(alias="type", json_schema_extra={"enum": sorted(EVENT_TYPES)})
    ] = None,
    since: Annotated[Instant | None, Query()] = None,
    until: Annotated[Instant | None, Query()] = None,
    limit: Annotated[int, Query(ge=1, le=10_000)] = 100,
) -> list[EventOut]:
    """Events of the log by slot, bot, type and time window, oldest first."""
    records = service.models.audit(
        slot=slot, bot=bot, type=event_type, since=since, until=until, limit=limit
    )
    return [EventOut.of(r) for r in records]
