"""CLI commands of the service: ``serve`` (API, dashboard, metrics) and ``stats``."""

from __future__ import annotations

import shutil
import sys
from pathlib import Path
from typing import Annotated

import typer
import uvicorn

from ledger.adapters.logs import configure_logging
from ledger.bootstrap import secrets_of
from ledger.devtools.demo import DEMO_STORE, Demo
from ledger.entrypoints.cli.core import Context, is_default_store, store_shown
from ledger.entrypoints.cli.output import JsonOption, emit, note, run_guarded
from ledger.entrypoints.cli.readside import caught_up
from ledger.entrypoints.web.app import create_app
from ledger.service import Service, start_service

__all__ = ["register"]


def _program() -> str:
    """How a person runs this console script again: by name when it is on PATH."""
    if shutil.which("slotledger"):
        return "slotledger"
    return str(Path(sys.executable).with_name("slotledger"))


def register(app: typer.Typer, ctx: Context) -> None:
    """Add ``serve`` and ``stats``."""

    @app.command()
    def serve(
        demo: Annotated[
            bool,
            typer.Option(
                "--demo",
                help=f"Fake Coolify, a small pool and simulated bots, on a fresh store in "
                f"{DEMO_STORE}/ each run.",
            ),
        ] = False,
        host: Annotated[str, typer.Option(help="Interface to listen on.")] = "127.0.0.1",
        port: Annotated[int, typer.Option(min=1, max=65535)] = 8000,
        log_json: Annotated[bool, typer.Option("--log-json", help="Log JSON lines.")] = False,
    ) -> None:
        """Serve the HTTP API, the dashboard and /metrics until Ctrl-C.

        On the embedded SQLite store the policies run in this process too. The store is
        created when it does not exist yet."""
        settings = run_guarded(lambda: ctx.settings)
        configure_logging(json_lines=log_json, secrets=secrets_of(settings))
        world = Demo(store=DEMO_STORE) if demo else None
        # Fail with one line before uvicorn takes over: bad configuration at once, an
        # unavailable store after LEDGER_START_TIMEOUT_S of retries.
        service = run_guarded(
            lambda: start_service(lambda: Service(settings, demo=world), settings.start_timeout_s)
        )
        if world is None and is_default_store(settings):
            note(f"store: {store_shown(settings)}")
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        url = f"http://{shown}:{port}/"

        def announce() -> None:
            lines = [f"slotledger dashboard: {url}  (Ctrl-C stops)"]
            if world is not None:
                lines += world.banner(
                    dashboard=url,
                    store=store_shown(service.settings),
                    api_token=bool(settings.api_token.get_secret_value()),
                    program=_program(),
                )
            for line in lines:
                typer.echo(line)

        uvicorn.run(
            create_app(service, on_started=announce),
            host=host,
            port=port,
            log_config=None,
            timeout_graceful_shutdown=3,
        )

    @app.command()
    def stats(as_json: JsonOption = False) -> None:
        """Pool and queue counters, from the read models brought up to date first."""

        def run() -> dict[str, object]:
            models = caught_up(ctx.read_models)
            pool, queue = models.pool_stats(), models.queue_stats()
            return {
                **pool.as_dict(),
                "queued": queue.length,
                "oldest_queued_at": queue.oldest_queued_at,
                "average_wait_s": queue.average_wait_s,
            }

        emit([run_guarded(run)], as_json=as_json, title="pool")
