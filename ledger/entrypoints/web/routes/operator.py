"""An operator's actions over HTTP: resize the pool (``PUT /v1/pool``) and retire a slot
(``DELETE /v1/slots/{id}``), each with ``dry_run`` (see
:mod:`ledger.application.operations`)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ledger.entrypoints.web.dependencies import MUTATING, ServiceDep
from ledger.entrypoints.web.errors import error_responses
from ledger.entrypoints.web.routes.slots import SlotPath
from ledger.entrypoints.web.schemas import Reason, ResizeIn, ResizeOut, RetireOut

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
