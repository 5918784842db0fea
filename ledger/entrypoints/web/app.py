"""The HTTP API and the dashboard of one :class:`~ledger.service.Service`.

Commands go to the write side (deployer, ledger) and wait, briefly, until the read
models include them, so a client reads its own writes; queries read the read models.
Handlers are plain functions: FastAPI runs them in its thread pool, which suits the
blocking store drivers. The app starts and stops the service in its lifespan, so
``uvicorn`` owns the whole process.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path as FilePath
from typing import Annotated

from fastapi import Depends, FastAPI, Header, Path, Query
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from fastapi.staticfiles import StaticFiles
from sse_starlette import EventSourceResponse
from starlette.concurrency import run_in_threadpool

from ledger.adapters.metrics import CONTENT_TYPE
from ledger.application.deploy import Acquired
from ledger.domain import QueueEntry, SlotStatus
from ledger.entrypoints.web.errors import Unauthorized, error_responses, install_error_handlers
from ledger.entrypoints.web.schemas import (
    BOT_ID,
    SLOT_REF,
    DeploymentIn,
    ErrorOut,
    EventOut,
    FailIn,
    HealthOut,
    HeartbeatIn,
    HeartbeatOut,
    HistoryOut,
    Instant,
    IntervalOut,
    LagOut,
    LoopOut,
    PoolAtOut,
    PoolStatsOut,
    QueuedOut,
    QueueEntryOut,
    QueueStatsOut,
    ReadyOut,
    ReleaseOut,
    SlotAtOut,
    SlotOut,
)
from ledger.entrypoints.web.stream import live_events
from ledger.errors import SlotNotFound
from ledger.service import Service
from projections.engine.fold import EVENT_TYPES

__all__ = ["STATIC_DIR", "create_app"]

STATIC_DIR = FilePath(__file__).resolve().parent / "static"

DESCRIPTION = """\
Event-sourced ledger for a pool of pre-provisioned Coolify slots.

Errors are JSON `{"error": <code>, "detail": <text>}`. When `LEDGER_API_TOKEN` is set,
every mutating operation needs `Authorization: Bearer <token>`. The dashboard at `/`
is fed by server-sent events from `/v1/stream` (`snapshot`, `lag` and `problem` events).
"""

SlotPath = Annotated[str, Path(pattern=SLOT_REF, description="The slot's id or name.")]
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
Bearer = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(HTTPBearer(auto_error=False, description="Needed when LEDGER_API_TOKEN is set.")),
]


def create_app(service: Service, *, on_started: Callable[[], None] | None = None) -> FastAPI:
    """The app for ``service``; ``on_started`` runs once the service is up (``serve``
    prints the dashboard's URL there)."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        await run_in_threadpool(service.start)
        if on_started is not None:
            on_started()
        try:
            yield
        finally:
            await run_in_threadpool(service.stop)

    app = FastAPI(
        title="slotledger",
        version="0.1.0",
        description=DESCRIPTION,
        lifespan=lifespan,
        docs_url=None,  # Swagger UI loads from a CDN; the machine may be offline
        redoc_url=None,
    )
    install_error_handlers(app)

    def authorized(credentials: Bearer) -> None:
        """Compares in constant time, so response timing does not leak the token."""
        expected = service.settings.api_token.get_secret_value()
        if not expected:
            return
        given = credentials.credentials if credentials is not None else ""
        if not hmac.compare_digest(given.encode(), expected.encode()):
            raise Unauthorized("a valid token is required: Authorization: Bearer <token>")

    mutating = [Depends(authorized)]

    # --- commands ------------------------------------------------------------------------

    @app.post(
        "/v1/deployments",
        tags=["deployments"],
        status_code=201,
        response_model=None,
        dependencies=mutating,
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
        body: DeploymentIn, idempotency_key: IdempotencyKey = None
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

    @app.delete(
        "/v1/deployments/{bot_id}",
        tags=["deployments"],
        dependencies=mutating,
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
    def release(bot_id: BotPath) -> ReleaseOut:
        """End what the bot holds at this moment: stop its container and release its
        slot, or cancel its queue entry (a release that meets the entry's dispatch
        releases the slot it was given)."""
        result = service.deployer.release(bot_id)
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

    @app.post(
        "/v1/slots/{slot_id}/heartbeat",
        tags=["slots"],
        dependencies=mutating,
        responses=error_responses(400, 401, 404, 409, 422),
    )
    def heartbeat(slot_id: SlotPath, body: HeartbeatIn) -> HeartbeatOut:
        """The holder's heartbeat starts a deploying slot; anyone else is refused (409)
        and the refusal is recorded on the slot."""
        ledger = service.ledger
        resolved = ledger.resolve_slot(slot_id)
        outcome = ledger.heartbeat(resolved, body.bot_id)
        if outcome is None:
            return HeartbeatOut(slot=SlotOut.of(ledger.get_slot(resolved)), started=False)
        service.settle(outcome.position)
        return HeartbeatOut(slot=SlotOut.of(outcome.slot), started=True)

    @app.post(
        "/v1/slots/{slot_id}/fail",
        tags=["slots"],
        dependencies=mutating,
        responses=error_responses(400, 401, 404, 409, 422),
    )
    def fail(slot_id: SlotPath, body: FailIn) -> SlotOut:
        """Put a slot in error by hand (an operator's command); the recovery policy
        takes it from there."""
        ledger = service.ledger
        outcome = ledger.fail(
            ledger.resolve_slot(slot_id), body.reason, reason_code="operator", actor="operator"
        )
        service.settle(outcome.position)
        return SlotOut.of(outcome.slot)

    # --- queries -------------------------------------------------------------------------

    @app.get("/v1/pool/stats", tags=["pool"])
    def pool_stats() -> PoolStatsOut:
        """Exactly ``total, idle, deploying, busy, error, maxSize`` (retired excluded)."""
        return PoolStatsOut.of(service.models.pool_stats())

    @app.get("/v1/pool/at", tags=["pool"], responses=error_responses(422))
    def pool_at(
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

    @app.get("/v1/queue/stats", tags=["queue"])
    def queue_stats() -> QueueStatsOut:
        return QueueStatsOut.of(service.models.queue_stats())

    @app.get("/v1/queue", tags=["queue"])
    def queue() -> list[QueueEntryOut]:
        """The waiting requests in dispatch order."""
        return QueueEntryOut.listing(service.ledger.waiting())

    @app.get("/v1/slots", tags=["slots"])
    def slots() -> list[SlotOut]:
        return [SlotOut.of(s) for s in service.models.slots()]

    @app.get("/v1/slots/{slot_id}", tags=["slots"], responses=error_responses(404, 422))
    def slot(slot_id: SlotPath) -> SlotOut:
        state = service.models.slot(slot_id)
        if state is None:
            raise SlotNotFound(f"no slot {slot_id!r}")
        return SlotOut.of(state)

    @app.get("/v1/slots/{slot_id}/history", tags=["slots"], responses=error_responses(404, 422))
    def history(slot_id: SlotPath) -> HistoryOut:
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

    @app.get("/v1/events", tags=["events"], responses=error_responses(422))
    def events(
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

    # --- operations ----------------------------------------------------------------------

    @app.get(
        "/metrics",
        tags=["operations"],
        response_class=Response,
        responses={200: {"content": {"text/plain": {}}, "description": "Prometheus text"}},
    )
    def metrics() -> Response:
        return Response(service.metrics.render(), media_type=CONTENT_TYPE)

    @app.get("/healthz", tags=["operations"])
    def healthz() -> HealthOut:
        """The process answers (liveness)."""
        return HealthOut()

    @app.get(
        "/readyz",
        tags=["operations"],
        response_model=None,
        responses={
            200: {"model": ReadyOut, "description": "Ready"},
            503: {"model": ReadyOut, "description": "Not ready, with the problems"},
        },
    )
    def readyz() -> JSONResponse:
        """The store answers, no background loop has stopped, the read models and the
        queue drain do not fail, and the read models keep up and miss no parked event;
        the body lists every loop's health and the parked events per consumer."""
        state = service.readiness()
        body = ReadyOut(
            status="ready" if state.ready else "not_ready",
            problems=state.problems,
            lag=LagOut.of_lag(state.lag) if state.lag is not None else None,
            loops=[LoopOut.of(h) for h in state.loops],
            parked=state.parked,
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if state.ready else 503)

    # --- dashboard -----------------------------------------------------------------------

    @app.get("/v1/stream", include_in_schema=False)
    async def stream() -> EventSourceResponse:
        return EventSourceResponse(live_events(service), ping=15)

    @app.get("/", include_in_schema=False)
    async def dashboard() -> FileResponse:
        return FileResponse(STATIC_DIR / "index.html")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
