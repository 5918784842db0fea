"""The status-column HTTP baseline of ``make bench``: the origin system as a minimal FastAPI
app, with slotledger's two request->release endpoints over the origin's table.

    python -m benchmarks.baseline_http --port 9000 --database-url postgresql://...

``POST /v1/deployments {"bot_id": ...}`` takes the least recently used idle row with one
``UPDATE ... FOR UPDATE SKIP LOCKED`` (201, or 409 when no row is idle);
``DELETE /v1/deployments/{bot_id}`` gives it back with one ``UPDATE`` (200, or 404 when the
bot holds nothing). The table and the acquire statement are the write-side baseline's
(:class:`benchmarks.write_side.StatusColumnCycle`), created by :func:`prepare`. Handlers are
plain functions in FastAPI's thread pool over a pool of autocommit connections, as
slotledger's are, and uvicorn runs with its defaults (one process, access log on).
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable, Iterator
from contextlib import AbstractContextManager, contextmanager
from typing import Annotated, Any

import psycopg
import uvicorn
from fastapi import FastAPI, Path
from fastapi.responses import JSONResponse
from psycopg_pool import ConnectionPool
from pydantic import BaseModel, Field

from benchmarks.write_side import Connection, StatusColumnCycle, connect
from ledger.settings import PostgresStore, SQLiteStore, parse_database_url

__all__ = ["create_app", "prepare"]

BOT_ID = r"^[A-Za-z0-9._:-]{1,128}$"
POOL_MAX = 10
"""Connections per process: slotledger's default pool (2) plus overflow (8)."""
RELEASE: dict[bool, str] = {
    False: "UPDATE slots SET status = 'idle', bot = NULL, last_used = now() "
    "WHERE bot = %s RETURNING id",
    True: "UPDATE slots SET status = 'idle', bot = NULL, "
    "last_used = strftime('%Y-%m-%dT%H:%M:%f', 'now') WHERE bot = ? RETURNING id",
}
"""Release by bot, since the endpoint names the bot (``StatusColumnCycle.RELEASE`` takes
the row id its client kept)."""


class DeploymentIn(BaseModel):
    bot_id: Annotated[str, Field(pattern=BOT_ID)]


Execute = Callable[[str, tuple[Any, ...]], Any]


def prepare(database_url: str, slots: int) -> None:
    """Create the origin's table with ``slots`` idle rows in the scratch store."""
    StatusColumnCycle.prepare(database_url, slots)


def _postgres(store: PostgresStore) -> tuple[Callable[[], AbstractContextManager[Execute]], bool]:
    pool: ConnectionPool[psycopg.Connection[Any]] = ConnectionPool(
        store.conninfo(),
        min_size=2,
        max_size=POOL_MAX,
        kwargs={"autocommit": True, "options": f"-c search_path={store.schema}"},
        open=True,
    )

    @contextmanager
    def session() -> Iterator[Execute]:
        with pool.connection() as conn:
            yield lambda sql, params: conn.execute(sql.encode(), params).fetchone()

    return session, False


def _sqlite(url: str) -> tuple[Callable[[], AbstractContextManager[Execute]], bool]:
    local = threading.local()

    @contextmanager
    def session() -> Iterator[Execute]:
        """One connection per thread (sqlite3 connections are not thread-safe)."""
        conn: Connection | None = getattr(local, "conn", None)
        if conn is None:
            conn = local.conn = connect(url)
        yield lambda sql, params: conn.execute(sql.replace("%s", "?"), params).fetchone()

    return session, True


def create_app(database_url: str) -> FastAPI:
    store = parse_database_url(database_url)
    if isinstance(store, SQLiteStore):
        session, sqlite = _sqlite(database_url)
    else:
        assert isinstance(store, PostgresStore)
        session, sqlite = _postgres(store)
    acquire, release = StatusColumnCycle.ACQUIRE[sqlite], RELEASE[sqlite]
    app = FastAPI(title="status-column baseline", docs_url=None, redoc_url=None)

    @app.post("/v1/deployments", status_code=201)
    def request_deployment(body: DeploymentIn) -> JSONResponse:
        with session() as execute:
            row = execute(acquire, (body.bot_id,))
        if row is None:
            return JSONResponse({"error": "no_idle_slot"}, status_code=409)
        return JSONResponse({"id": row[0], "bot_id": body.bot_id}, status_code=201)

    @app.delete("/v1/deployments/{bot_id}")
    def release_deployment(bot_id: Annotated[str, Path(pattern=BOT_ID)]) -> JSONResponse:
        with session() as execute:
            row = execute(release, (bot_id,))
        if row is None:
            return JSONResponse({"error": "bot_not_found"}, status_code=404)
        return JSONResponse({"bot_id": bot_id, "outcome": "released", "id": row[0]})

    @app.get("/healthz")
    def healthz() -> dict[str, str]:
        return {"status": "ok"}

    return app


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else "")
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--database-url", required=True)
    args = parser.parse_args()
    uvicorn.run(
        create_app(args.database_url), host=args.host, port=args.port, timeout_graceful_shutdown=3
    )


if __name__ == "__main__":
    main()
