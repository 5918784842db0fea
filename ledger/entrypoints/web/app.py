"""The HTTP API and the dashboard of one :class:`~ledger.service.Service`.

Commands go to the write side (deployer, ledger) and answer from their own result;
queries read the read models, once these include every write committed before the query
arrived (:class:`ReadYourWrites`), so a client reads its own writes.
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
from starlette.types import ASGIApp, Receive, Scope, Send

from ledger.entrypoints.web.errors import install_error_handlers
from ledger.entrypoints.web.routes import ROUTERS, charts
from ledger.entrypoints.web.routes.ops import STATIC_DIR
from ledger.entrypoints.web.stream import StreamLimit
from ledger.service import Service

__all__ = ["ReadYourWrites", "create_app"]

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


class ReadYourWrites:
    """Reads of the read models (``GET`` under ``/v1/``, the dashboard's stream too, and
    ``/metrics``, whose gauges come from them) begin once the models include every write
    committed before they arrived (:meth:`Service.caught_up`: no wait while the models
    are current, else woken by the follower). Commands do not wait for the models: their
    answers come from their own results. ``/healthz`` and ``/readyz`` never wait: they
    must answer while the follower is stuck."""

    QUERIES = frozenset({"GET", "HEAD"})
    PREFIXES = ("/v1/", "/metrics")

    def __init__(self, app: ASGIApp, service: Service) -> None:
        self.app = app
        self.service = service

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if (
            scope["type"] == "http"
            and scope["method"] in self.QUERIES
            and scope["path"].startswith(self.PREFIXES)
        ):
            await run_in_threadpool(self.service.caught_up)
        await self.app(scope, receive, send)


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
    app.add_middleware(ReadYourWrites, service=service)
    for router in ROUTERS:
        app.include_router(router)
    app.include_router(charts.router)
    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    return app
