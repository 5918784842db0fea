"""``/v1/slots``: the slots as the read models see them, and the commands on one slot
(the holder's heartbeat, an operator's fail)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Path, Query

from ledger.domain import SlotStatus
from ledger.entrypoints.web.dependencies import MUTATING, ServiceDep
from ledger.entrypoints.web.errors import error_responses
from ledger.entrypoints.web.schemas import (
    PLATFORM,
    SLOT_REF,
    EventOut,
    FailIn,
    HeartbeatIn,
    HeartbeatOut,
    HistoryOut,
    IntervalOut,
    SlotOut,
)
from ledger.errors import SlotNotFound

__all__ = ["commands", "router"]

commands = APIRouter(tags=["slots"], dependencies=MUTATING)
router = APIRouter(tags=["slots"])

SlotPath = Annotated[str, Path(pattern=SLOT_REF, description="The slot's id or name.")]


@commands.post(
    "/v1/slots/{slot_id}/heartbeat",
    responses=error_responses(400, 401, 404, 409, 422),
)
def heartbeat(service: ServiceDep, slot_id: SlotPath, body: HeartbeatIn) -> HeartbeatOut:
    """The holder's heartbeat starts a deploying slot; anyone else is refused (409)
    and the refusal is recorded on the slot."""
    ledger = service.ledger
    resolved = ledger.resolve_slot(slot_id)
    outcome = ledger.heartbeat(resolved, body.bot_id, ctx=ledger.context("api"))
    if outcome is None:
        return HeartbeatOut(slot=SlotOut.of(ledger.get_slot(resolved)), started=False)
    service.settle(outcome.position)
    return HeartbeatOut(slot=SlotOut.of(outcome.slot), started=True)


@commands.post(
    "/v1/slots/{slot_id}/fail",
    responses=error_responses(400, 401, 404, 409, 422),
)
def fail(service: ServiceDep, slot_id: SlotPath, body: FailIn) -> SlotOut:
    """Put a slot in error by hand (an operator's command); the recovery policy
    takes it from there."""
    ledger = service.ledger
    outcome = ledger.fail(
        ledger.resolve_slot(slot_id),
        body.reason,
        reason_code="operator",
        ctx=ledger.context("operator"),
    )
    service.settle(outcome.position)
    return SlotOut.of(outcome.slot)


@router.get("/v1/slots", responses=error_responses(422))
def list_slots(
    service: ServiceDep,
    status: Annotated[
        list[SlotStatus] | None,
        Query(description="Only slots in these statuses (repeat the parameter for several)."),
    ] = None,
    platform: Annotated[
        str | None, Query(pattern=PLATFORM, description="Only this platform.")
    ] = None,
    drained: Annotated[
        bool | None, Query(description="Only drained slots (true) or only the others (false).")
    ] = None,
) -> list[SlotOut]:
    """The pool's slots, optionally filtered by status, platform and drain."""
    wanted = set(status or SlotStatus)
    return [
        SlotOut.of(s)
        for s in service.models.slots()
        if s.status in wanted
        and (platform is None or s.platform == platform)
        and (drained is None or s.drained is drained)
    ]


@router.get("/v1/slots/{slot_id}", responses=error_responses(404, 422))
def slot(service: ServiceDep, slot_id: SlotPath) -> SlotOut:
    state = service.models.slot(slot_id)
    if state is None:
        raise SlotNotFound(f"no slot {slot_id!r}")
    return SlotOut.of(state)


@router.get("/v1/slots/{slot_id}/history", responses=error_responses(404, 422))
def history(service: ServiceDep, slot_id: SlotPath) -> HistoryOut:
    """The slot's timeline: status intervals, time in each status, every event."""
    found = service.models.history(slot_id)
    if found.slot is None:
        raise SlotNotFound(f"no slot {slot_id!r}")
    return HistoryOut(
        slot=SlotOut.of(found.slot),
        intervals=[IntervalOut.of(i) for i in found.intervals],
        time_in_status=found.time_in_status,
        events=[EventOut.of(r) for r in found.events],
    )
