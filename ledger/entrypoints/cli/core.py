"""The core CLI commands, and the :class:`Context` every command group shares.

Each command builds only what it needs through :class:`Context` (settings first, so a bad
setting fails fast with exit 2), then calls one application method.
"""

from __future__ import annotations

from functools import cached_property
from typing import Annotated

import typer

from ledger.adapters.coolify import CoolifyClient
from ledger.application import SlotLedger
from ledger.application.deploy import Acquired, SlotDeployer
from ledger.bootstrap import build_coolify, build_deployer, build_ledger, build_read_models
from ledger.domain.invariants import check_events, iter_log
from ledger.entrypoints.cli.output import JsonOption, emit, run_guarded
from ledger.settings import Settings, load_settings
from projections.engine.readmodels import ReadModels

__all__ = ["Context", "register"]


class Context:
    """Lazily built services for one CLI invocation."""

    @cached_property
    def settings(self) -> Settings:
        return load_settings()

    @cached_property
    def ledger(self) -> SlotLedger:
        return build_ledger(self.settings)

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
        """Every slot of the pool, from the ledger's inline index."""
        rows = run_guarded(lambda: ctx.ledger.slots(include_retired=all_slots))
        emit(
            (
                {
                    "name": r.name,
                    "status": r.status,
                    "bot": r.bot_id,
                    "since": r.status_since,
                    "last_used": r.last_used,
                    "coolify_uuid": r.coolify_uuid,
                    "id": r.slot_id,
                }
                for r in rows
            ),
            as_json=as_json,
            empty="the pool has no slots",
        )

    @app.command()
    def check(
        queue_grace: Annotated[
            float, typer.Option(help="Seconds a queue may wait while a slot is idle.")
        ] = 30.0,
        as_json: JsonOption = False,
    ) -> None:
        """Check the event log's invariants; exit 1 when any is violated."""
        report = run_guarded(lambda: check_events(iter_log(ctx.ledger), queue_grace_s=queue_grace))
        emit(report.violations, as_json=as_json, empty="no violations")
        if not as_json:
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
            rate_limit=rate_limit,
        )
