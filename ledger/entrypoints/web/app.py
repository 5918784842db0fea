"""The HTTP API and the dashboard of one :class:`~ledger.service.Service`.

Commands go to the write side (deployer, ledger) and wait, briefly, until the read
models include them, so a client reads its own writes; queries read the read models.
Handlers are plain functions, one router per resource in :mod:`.routes`: FastAPI runs
them in its thread pool, which suits the blocking store drivers. The app starts and
stops the service in its lifespan, so ``uvicorn`` owns the whole process.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager

from fastapi import FastAPI
from fastapi.routing import APIRoute
from fastapi.staticfiles import StaticFiles
from starlette.concurrency import run_in_threadpool

from ledger.entrypoints.web.errors import install_error_handlers
from ledger.entrypoints.web.routes import ROUTERS
from ledger.entrypoints.web.routes.ops import STATIC_DIR
from ledger.entrypoints.web.stream import StreamLimit
from ledger.service import Service

__all__ = ["create_app"]

DESCRIPTION = """\
Event-sourced ledger for a pool of pre-provisioned Coolify slots.

Errors are JSON `{"error": <code>, "detail": <text>}`. When `LEDGER_API_TOKEN` is set,
every mutating operation needs `Authorization: Bearer <token>`. The dashboard at `/`
is fed by server-sent events from `/v1/stream` (`snapshot`, `lag` and `problem` events).
"""


def operation_id(route: APIRoute) -> str:
    """Each operation's id is its handler's name (``request_deployment``), so clients
    generated in other languages get readable method names."""
    return route.name


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
        generate_unique_id_function=operation_id,
        docs_url=None,  # Swagger UI loads from a CDN; the machine may be offline
        redoc_url=None,
    )
    app.state.service = service  # what the routes' ServiceDep reads
    app.state.streams = StreamLimit(service.settings.max_streams)
    install_error_handlers(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
