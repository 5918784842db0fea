"""An operator's actions over HTTP: resize the pool (``PUT /v1/pool``), retire a slot
(``DELETE /v1/slots/{id}``), drain and undrain a slot or the pool (``POST
/v1/slots/{id}/drain``, ``/undrain``, ``POST /v1/pool/drain``, ``/undrain``), each with
``dry_run`` (see :mod:`ledger.application.operations`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ledger.application.operations import Drainage
from ledger.entrypoints.web.dependencies import MUTATING, ServiceDep
from ledger.entrypoints.web.errors import error_responses
from ledger.entrypoints.web.routes.slots import SlotPath
from ledger.entrypoints.web.schemas import (
    DrainIn,
    DrainOut,
    Reason,
    ResizeIn,
    ResizeOut,
    RetireOut,
)
from ledger.service import Service

__all__ = ["router"]

router = APIRouter(tags=["operator"], dependencies=MUTATING)


@router.put("/v1/pool", responses=error_responses(400, 401, 409, 422))
def resize_pool(service: ServiceDep, body: ResizeIn) -> ResizeOut:
    """A new maximum pool size, recorded as ``PoolResized``; waiting requests are served
    at once when it grew. Below the slots the pool has: 409 ``pool_too_small``."""
    resized = service.operator.resize(body.max_size, body.reason, dry_run=body.dry_run)
    if resized.changed and not resized.dry_run:
        service.settle()
        if resized.new_max_size > resized.old_max_size:
            service.deployer.drain()
    return ResizeOut.of(resized)


@router.delete("/v1/slots/{slot_id}", responses=error_responses(401, 404, 409, 422))
def retire_slot(
    service: ServiceDep,
    slot_id: SlotPath,
    reason: Annotated[Reason, Query(description="Why the slot leaves the pool.")],
    dry_run: Annotated[bool, Query(description="Say what would happen; write nothing.")] = False,
) -> RetireOut:
    """Retire an idle or error slot (a slot in use: 409 naming its bot): ``SlotRetired``
    now, its container stopped and its application deleted or kept (``RETIRE_MODE``)
    in the background."""
    retirement = service.operator.retire(slot_id, reason, dry_run=dry_run)
    if not dry_run:
        service.settle()
    return RetireOut.of(retirement)


@router.post("/v1/slots/{slot_id}/drain", responses=error_responses(400, 401, 404, 409, 422))
def drain_slot(service: ServiceDep, slot_id: SlotPath, body: DrainIn) -> DrainOut:
    """No new acquisition of this slot (``SlotDrained``); a bot that holds it keeps it
    until its release. Drained already, or retired: 409."""
    done = service.operator.drain(slot_id, body.reason, dry_run=body.dry_run)
    return _answer(service, done)


@router.post("/v1/slots/{slot_id}/undrain", responses=error_responses(400, 401, 404, 409, 422))
def undrain_slot(service: ServiceDep, slot_id: SlotPath, body: DrainIn) -> DrainOut:
    """The slot can be acquired again (``SlotUndrained``); waiting requests are served at
    once. Not drained, or retired: 409."""
    done = service.operator.drain(slot_id, body.reason, undrain=True, dry_run=body.dry_run)
    return _answer(service, done)


@router.post("/v1/pool/drain", responses=error_responses(400, 401, 409, 422))
def drain_pool(service: ServiceDep, body: DrainIn) -> DrainOut:
    """No new acquisition in the pool: ``PoolDrained`` (no new slot), then ``SlotDrained``
    on each slot not drained yet. Requests wait in the queue meanwhile; busy slots
    finish. Again: it drains what is left, else changes nothing."""
    return _answer(service, service.operator.drain_pool(body.reason, dry_run=body.dry_run))


@router.post("/v1/pool/undrain", responses=error_responses(400, 401, 409, 422))
def undrain_pool(service: ServiceDep, body: DrainIn) -> DrainOut:
    """``PoolUndrained``, then ``SlotUndrained`` on each slot the pool's drain drained
    (slots drained by name stay drained); waiting requests are served at once."""
    done = service.operator.drain_pool(body.reason, undrain=True, dry_run=body.dry_run)
    return _answer(service, done)


def _answer(service: Service, done: Drainage) -> DrainOut:
    """Read-your-writes for the answer; an undrain serves the queue at once."""
    if done.changed and not done.dry_run:
        service.settle()
        if done.undrain:
            service.deployer.drain()
    return DrainOut.of(done)
