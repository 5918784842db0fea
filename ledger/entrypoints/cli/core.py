"""The core CLI commands, and the :class:`Context` every command group shares.

Each command builds only what it needs through :class:`Context` (settings first, so a bad
setting fails fast with exit 2), then calls one application method.

Which store: a command says so on stderr (``store: sqlite:////abs/.slotledger/ledger.db``)
when ``LEDGER_DATABASE_URL`` was not set, since the default is relative to the folder it
runs in (not with ``--json``, whose output is for programs). Only the commands that start
a store on purpose (:data:`CREATING`) create a SQLite file that is not there; every other
command refuses with exit 2, naming the path and ``LEDGER_DATABASE_URL``, instead of
answering from an empty store it just made.
"""

from __future__ import annotations

from functools import cached_property
from pathlib import Path
from typing import Annotated
from uuid import UUID

import typer

from ledger.adapters.coolify import CoolifyClient
from ledger.application import SlotLedger
from ledger.application.deploy import Acquired, SlotDeployer
from ledger.bootstrap import build_coolify, build_deployer, build_ledger, build_read_models
from ledger.domain.invariants import CheckReport, check_events, iter_log
from ledger.entrypoints.cli.output import (
    JsonOption,
    asked_for_json,
    emit,
    ndjson,
    note,
    run_guarded,
)
from ledger.errors import ConfigurationError
from ledger.settings import Settings, SQLiteStore, load_settings
from projections.engine.readmodels import ReadModels

__all__ = ["CREATING", "Context", "StoreNotFound", "register", "store_shown"]

CREATING = frozenset({"serve", "worker", "provision"})
"""The commands that start a store on purpose, creating its SQLite file when missing: a
service, a policy process, the first slots of a pool (``import`` makes its own new file)."""


class StoreNotFound(ConfigurationError):
    """A command that reads or changes a store found no store where the settings point."""

    code = "store_not_found"


def store_shown(settings: Settings) -> str:
    """The store as a person can find it: a SQLite path made absolute, a PostgreSQL URL
    without its password."""
    store = settings.store
    if isinstance(store, SQLiteStore) and store.path != ":memory:":
        return f"sqlite:///{Path(store.path).resolve()}"
    return store.redacted()


def is_default_store(settings: Settings) -> bool:
    """Whether the store is the default one (``LEDGER_DATABASE_URL`` not set anywhere)."""
    return "database_url" not in settings.model_fields_set


def require_store(settings: Settings) -> None:
    """Refuse a SQLite store whose file does not exist (a PostgreSQL URL is always named
    on purpose, and the database must exist for it to answer at all)."""
    store = settings.store
    if not isinstance(store, SQLiteStore) or store.path == ":memory:":
        return
    path = Path(store.path).resolve()
    if path.exists():
        return
    where = (
        "the default, relative to this folder"
        if is_default_store(settings)
        else "from LEDGER_DATABASE_URL"
    )
    raise StoreNotFound(
        f"no store at {path} ({where}): run in the folder that holds it, or set "
        "LEDGER_DATABASE_URL to sqlite:///path/to/ledger.db or postgresql://…; "
        f"only {', '.join(sorted(CREATING))} create a new store"
    )


class Context:
    """Lazily built services for one CLI invocation."""

    invocation: typer.Context | None = None
    """The root click context of the running invocation (set by the app's callback)."""

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def ledger(self) -> SlotLedger:
        settings = self.settings
        command = self.invocation.invoked_subcommand if self.invocation else None
        if command not in CREATING:
            require_store(settings)
        if is_default_store(settings) and not (
            self.invocation is not None and asked_for_json(self.invocation)
        ):
            note(f"store: {store_shown(settings)}")
        return build_ledger(settings)

    @cached_property
    def coolify(self) -> CoolifyClient:
        return build_coolify(self.settings)

    @cached_property
    def deployer(self) -> SlotDeployer:
        return build_deployer(self.settings, self.ledger, self.coolify)

    @cached_property
    def read_models(self) -> ReadModels:
        return build_read_models(self.settings, self.ledger)

    def close(self) -> None:
        """Close what this invocation built (nothing, for ``--help``) and forget it, so a
        next invocation of the same app (tests run many in one process) builds afresh."""
        built = vars(self)
        for name in ("read_models", "ledger", "coolify"):
            if name in built:
                built[name].close()
        built.clear()


def register(app: typer.Typer, ctx: Context) -> None:
    """Add the operator commands (provision, acquire, ...), ``check`` and ``fake-coolify``."""

    @app.command()
    def provision(
        platform: Annotated[str, typer.Option(help="Platform of the new slots.")] = "",
        count: Annotated[int, typer.Option(min=1, max=1000)] = 1,
        as_json: JsonOption = False,
    ) -> None:
        """Add slots to the pool (names come from the pool; the maximum size holds)."""

        def run() -> list[object]:
            chosen, who = platform or ctx.settings.default_platform, ctx.ledger.context("operator")
            return [ctx.ledger.provision(chosen, ctx=who).slot.name for _ in range(count)]

        emit(({"slot": name} for name in run_guarded(run)), as_json=as_json)

    @app.command()
    def acquire(
        bot_id: str,
        platform: Annotated[str, typer.Option(help="Only slots of this platform.")] = "",
        deploy: Annotated[
            bool, typer.Option(help="Also configure and start it on Coolify, and wait.")
        ] = False,
        as_json: JsonOption = False,
    ) -> None:
        """Take the least recently used idle slot for a bot (idle -> deploying)."""

        def run() -> dict[str, object]:
            who = ctx.ledger.context("operator")
            if deploy:
                result = ctx.deployer.request(bot_id, platform=platform or None, ctx=who)
                if isinstance(result, Acquired) and result.task is not None:
                    result.task.result()
                    row = ctx.ledger.slot_of_bot(bot_id)
                    return {"slot": row.name, "status": row.status, "bot": bot_id}
                return {"queued": bot_id, "position": getattr(result, "position", None)}
            outcome = ctx.ledger.acquire(bot_id, platform=platform or None, ctx=who)
            return {"slot": outcome.slot.name, "status": outcome.slot.status, "bot": bot_id}

        emit([run_guarded(run)], as_json=as_json)

    @app.command()
    def release(
        bot_id: str,
        stop: Annotated[bool, typer.Option(help="Stop the container on Coolify first.")] = False,
        as_json: JsonOption = False,
    ) -> None:
        """Give back the slot a bot holds (deploying|busy -> idle)."""

        def run() -> dict[str, object]:
            who = ctx.ledger.context("operator")
            if stop:
                ctx.deployer.release(bot_id, ctx=who)
                ctx.deployer.wait_idle(timeout=ctx.settings.stop_timeout_s + 60)
            else:
                ctx.ledger.release(bot_id, ctx=who)
            return {"released": bot_id}

        emit([run_guarded(run)], as_json=as_json)

    @app.command()
    def fail(
        slot: str,
        reason: Annotated[str, typer.Option(help="Why the slot is in error.")],
        as_json: JsonOption = False,
    ) -> None:
        """Put a slot in error by hand (any status -> error)."""

        def run() -> dict[str, object]:
            slot_id = ctx.ledger.resolve_slot(slot)
            who = ctx.ledger.context("operator")
            outcome = ctx.ledger.fail(slot_id, reason, reason_code="operator", ctx=who)
            return {"slot": outcome.slot.name, "status": outcome.slot.status}

        emit([run_guarded(run)], as_json=as_json)

    @app.command()
    def slots(
        all_slots: Annotated[bool, typer.Option("--all", help="Include retired slots.")] = False,
        as_json: JsonOption = False,
    ) -> None:
        """Every slot of the pool, from the ledger's inline index.

        --json adds each slot's id and its Coolify application's uuid."""
        rows = run_guarded(lambda: ctx.ledger.slots(include_retired=all_slots))
        emit(
            (
                {
                    "name": r.name,
                    "status": r.status,
                    "drained": r.drained,
                    "bot": r.bot_id,
                    "since": r.status_since,
                    "last_used": r.last_used,
                    "coolify_uuid": r.coolify_uuid,
                    "id": r.slot_id,
                }
                for r in rows
            ),
            as_json=as_json,
            title="slots",
            empty="the pool has no slots",
            columns=("name", "status", "drained", "bot", "since", "last_used"),
            wrap={"bot"},
        )

    @app.command()
    def check(
        queue_grace: Annotated[
            float, typer.Option(help="Seconds a queue may wait while a slot is idle.")
        ] = 30.0,
        as_json: JsonOption = False,
    ) -> None:
        """Check the event log's invariants; exit 1 when any is violated.

        With --json, one line per violation, then one line that sums up the check:
        checked_events, acquisitions, violations."""

        def run() -> tuple[CheckReport, dict[UUID, str]]:
            report = check_events(iter_log(ctx.ledger), queue_grace_s=queue_grace)
            return report, {r.slot_id: r.name for r in ctx.ledger.slots(include_retired=True)}

        report, names = run_guarded(run)
        summary = {
            "checked_events": report.events,
            "acquisitions": report.acquisitions,
            "violations": len(report.violations),
        }
        if as_json:
            ndjson([*report.violations, summary])
        else:
            emit(
                (
                    {
                        "at": v.timestamp,
                        "position": v.position,
                        "kind": v.kind,
                        "slot": names.get(v.slot_id, v.slot_id) if v.slot_id else None,
                        "bot": v.bot_id,
                        "detail": v.detail,
                    }
                    for v in report.violations
                ),
                as_json=False,
                title="violations",
                empty="no violations",
                columns=("at", "position", "kind", "slot", "bot", "detail"),
                wrap={"bot", "detail"},
            )
            typer.echo(
                f"checked {report.events} events, {report.acquisitions} acquisitions: "
                f"{len(report.violations)} violations"
            )
        if report.violations:
            raise typer.Exit(1)

    @app.command("fake-coolify")
    def fake_coolify(
        host: str = "127.0.0.1",
        port: int = 8765,
        deploy_delay: Annotated[float, typer.Option(min=0)] = 2.0,
        delete_delay: Annotated[float, typer.Option(min=0)] = 1.0,
        stop_delay: Annotated[
            float, typer.Option(min=0, help="Seconds before a stop job removes the container.")
        ] = 2.0,
        status_interval: Annotated[
            float, typer.Option(min=0, help="Seconds between status sweeps; 0 = no lag.")
        ] = 5.0,
        rate_limit: Annotated[
            int, typer.Option(min=0, help="Requests per minute per token; 0 turns it off.")
        ] = 200,
        token: Annotated[str, typer.Option(envvar="LEDGER_COOLIFY_TOKEN")] = "",
    ) -> None:
        """Serve the fake Coolify API (tests and the demo)."""
        from ledger.devtools import fake_coolify as fake

        fake.main(
            host,
            port,
            token=token or fake.DEFAULT_TOKEN,
            deploy_delay=deploy_delay,
            delete_delay=delete_delay,
            stop_delay=stop_delay,
            status_interval=status_interval,
            rate_limit=rate_limit,
        )
