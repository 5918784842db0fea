"""``/v1/pool``: the pool's stats, now and at a past instant."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from ledger.entrypoints.web.dependencies import ServiceDep
from ledger.entrypoints.web.errors import error_responses
from ledger.entrypoints.web.schemas import Instant, PoolAtOut, PoolStatsOut, SlotAtOut

__all__ = ["router"]

router = APIRouter(tags=["pool"])


@router.get("/v1/pool/stats")
def pool_stats(service: ServiceDep) -> PoolStatsOut:
    """Exactly ``total, idle, deploying, busy, error, maxSize`` (retired excluded)."""
    return PoolStatsOut.of(service.models.pool_stats())


@router.get("/v1/pool/at", responses=error_responses(422))
def pool_at(
    service: ServiceDep,
    t: Annotated[Instant, Query(description="ISO 8601 instant, e.g. 2025-12-17T22:00:00Z")],
) -> PoolAtOut:
    """Every slot's status, and the pool's stats, at a past instant."""
    snapshot = service.models.pool_at(t)
    return PoolAtOut(
        at=snapshot.at,
        pool=snapshot.pool,
        slots=[SlotAtOut.of(s) for s in snapshot.slots],
        stats=PoolStatsOut.of(snapshot.stats),
    )
