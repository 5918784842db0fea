"""``/v1/queue``: the requests that wait for a slot."""

from __future__ import annotations

from fastapi import APIRouter

from ledger.entrypoints.web.dependencies import ServiceDep
from ledger.entrypoints.web.schemas import QueueEntryOut, QueueStatsOut

__all__ = ["router"]

router = APIRouter(tags=["queue"])


@router.get("/v1/queue/stats")
def queue_stats(service: ServiceDep) -> QueueStatsOut:
    return QueueStatsOut.of(service.models.queue_stats())


@router.get("/v1/queue")
def queue(service: ServiceDep) -> list[QueueEntryOut]:
    """The waiting requests in dispatch order."""
    return QueueEntryOut.listing(service.ledger.waiting())
