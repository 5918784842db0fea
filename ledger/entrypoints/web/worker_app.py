"""The HTTP endpoint of a ``slotledger worker --port N`` process: ``/healthz``, ``/readyz``
and ``/metrics``, so the policy loop of a worker and its duties (drift, the invariant
checker), which serve no API, can be watched like a server's loops; with the open
invariant violations of the pool, read from the log.

FastAPI and uvicorn as ``serve`` uses them, in a daemon thread beside the policy loop;
the metrics are :class:`ledger.metrics.Metrics` with the loop gauges only, the same
``slotledger_loop_*{loop}`` families that ``serve`` exposes.
"""

from __future__ import annotations

import socket
import threading
from collections.abc import Callable, Iterable
from datetime import datetime
from typing import Literal

import uvicorn
from fastapi import FastAPI, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field

from ledger.adapters.metrics import CONTENT_TYPE, Metrics
from ledger.application.checker import ViolationBoard
from ledger.application.worker import Worker
from ledger.domain.invariants import KINDS
from ledger.entrypoints.web.schemas import HealthOut, LoopOut, ViolationOut
from ledger.errors import ConfigurationError
from ledger.loops import LoopHealth
from ledger.service import loop_problem, violation_problem

__all__ = ["WorkerEndpoint", "WorkerReadyOut", "create_worker_app"]


class WorkerReadyOut(BaseModel):
    """A worker's readiness: its role, its loops' health, the open violations."""

    model_config = ConfigDict(frozen=True)

    status: Literal["ready", "not_ready"]
    problems: list[str]
    pool: str
    leader: bool = Field(description="True while this process runs the policies.")
    last_tick_at: datetime | None = Field(description="When this process last ran them.")
    loops: list[LoopOut]
    violations: list[ViolationOut] = Field(
        default_factory=list, description="Open invariant violations, oldest first."
    )


def create_worker_app(
    worker: Worker, alive: Callable[[], bool], secrets: Iterable[str] = ()
) -> FastAPI:
    """The endpoint of one worker; ``alive`` says whether its loop still runs.

    Ready while the loop runs, as leader or as standby (a healthy standby is what
    lets another worker fail); 503 while it fails or has stopped. Its duties' health is
    shown, and so is each open invariant violation, among the problems, leaving it ready."""
    hidden = [s for s in secrets if s]
    board = ViolationBoard(worker.engine.ledger, worker.pool_name)

    def loops() -> list[LoopHealth]:
        return [h.redacted(hidden) for h in worker.loops(alive=alive())]

    metrics = Metrics()
    metrics.watch_loops(loops)
    metrics.watch_violations(board.totals, KINDS)
    app = FastAPI(title="slotledger worker", openapi_url=None, docs_url=None, redoc_url=None)

    @app.get("/healthz")
    def healthz() -> HealthOut:
        """The process answers (liveness)."""
        return HealthOut()

    @app.get("/readyz", response_model=None)
    def readyz() -> JSONResponse:
        every = loops()
        loop = every[0]
        problems = [] if loop.up else [loop_problem(loop)]
        ready = not problems
        try:
            violations = board.open()
        except Exception as e:  # the store is down: the loops say so
            problems.append(f"invariant violations unreadable: {type(e).__name__}")
            violations = []
        body = WorkerReadyOut(
            status="ready" if ready else "not_ready",
            problems=problems + [violation_problem(v) for v in violations],
            pool=worker.pool_name,
            leader=worker.is_leader,
            last_tick_at=worker.last_tick_at,
            loops=[LoopOut.of(h) for h in every],
            violations=[ViolationOut.of(v) for v in violations],
        )
        return JSONResponse(body.model_dump(mode="json"), status_code=200 if ready else 503)

    @app.get("/metrics", response_class=Response)
    def metrics_text() -> Response:
        return Response(metrics.render(), media_type=CONTENT_TYPE)

    return app


class WorkerEndpoint:
    """uvicorn serving ``app`` in a daemon thread. The socket is bound at construction,
    in the caller's thread, so a taken port fails the command at once with one line
    instead of a dead thread nobody sees."""

    def __init__(self, app: FastAPI, host: str, port: int) -> None:
        family = socket.AF_INET6 if ":" in host else socket.AF_INET
        try:
            self._socket = socket.create_server((host, port), family=family)
        except OSError as e:
            raise ConfigurationError(f"--port: cannot listen on {host}:{port}: {e}") from None
        config = uvicorn.Config(app, log_config=None, timeout_graceful_shutdown=3)
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run, kwargs={"sockets": [self._socket]}, name="worker-http"
        )
        self._thread.daemon = True

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._socket.close()
