"""Operations and the dashboard: metrics, liveness, readiness, the live feed and the
page it feeds."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter, Request
from fastapi.responses import FileResponse, JSONResponse, Response
from sse_starlette import EventSourceResponse

from ledger.adapters.metrics import CONTENT_TYPE
from ledger.entrypoints.web.dependencies import ServiceDep
from ledger.entrypoints.web.schemas import HealthOut, LagOut, LoopOut, ReadyOut, ViolationOut
from ledger.entrypoints.web.stream import StreamLimit, live_events

__all__ = ["STATIC_DIR", "router"]

STATIC_DIR = Path(__file__).resolve().parents[1] / "static"

router = APIRouter()


@router.get(
    "/metrics",
    tags=["operations"],
    response_class=Response,
    responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
)
def metrics(service: ServiceDep) -> Response:
    return Response(service.metrics.render(), media_type=CONTENT_TYPE)


@router.get("/healthz", tags=["operations"])
def healthz() -> HealthOut:
    """The process answers (liveness)."""
    return HealthOut()


@router.get(
    "/readyz",
    tags=["operations"],
    response_model=None,
    responses={
        200: {"model": ReadyOut, "description": "Ready"},
        503: {"model": ReadyOut, "description": "Not ready, with the problems"},
    },
)
def readyz(service: ServiceDep) -> JSONResponse:
    """The store answers, no background loop has stopped, the read models and the
    queue drain do not fail, and the read models keep up and miss no parked event;
    the body lists every loop's health and the parked events per consumer."""
    # ...and the open invariant violations, each also a problem that leaves it ready (the
    # operation's description is part of the API's reference document, kept as it was).
    state = service.readiness()
    body = ReadyOut(
        status="ready" if state.ready else "not_ready",
        problems=state.problems,
        lag=LagOut.of_lag(state.lag) if state.lag is not None else None,
        loops=[LoopOut.of(h) for h in state.loops],
        parked=state.parked,
        violations=[ViolationOut.of(v) for v in state.violations],
    )
    return JSONResponse(body.model_dump(mode="json"), status_code=200 if state.ready else 503)


@router.get("/v1/stream", include_in_schema=False)
async def stream(service: ServiceDep, request: Request) -> EventSourceResponse:
    limit: StreamLimit = request.app.state.streams
    return EventSourceResponse(await limit.guard(live_events(service)), ping=15)


@router.get("/", include_in_schema=False)
async def dashboard() -> FileResponse:
    return FileResponse(STATIC_DIR / "index.html")
