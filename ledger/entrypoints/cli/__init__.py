"""The ``slotledger`` command line: the one registry of every command.

Each command module adds its commands to the app built here and prints through
``ledger.output`` (tables, ``--json`` NDJSON, one error line with exit 2 for bad input and
1 for a refusal); none imports this module, so there is no import cycle.
"""

from __future__ import annotations

import typer

from ledger.application.deploy import CoolifySlotRuntime
from ledger.bootstrap import leader_duties
from ledger.entrypoints.cli import core as commands
from ledger.entrypoints.cli import helptext
from ledger.entrypoints.cli import operator as operator_cli
from ledger.entrypoints.cli import policy as policy_cli
from ledger.entrypoints.cli import readside as projections_cli
from ledger.entrypoints.cli import reconcile as reconcile_cli
from ledger.entrypoints.cli import serve as web_cli

__all__ = ["build_app", "main"]


def build_app() -> typer.Typer:
    """Every command, sharing one lazily built :class:`commands.Context` per invocation."""
    app = typer.Typer(
        name="slotledger",
        help="Event-sourced ledger for pools of pre-provisioned Coolify slots.",
        no_args_is_help=True,
        pretty_exceptions_enable=False,
        add_completion=False,
    )
    ctx = commands.Context()

    @app.callback()
    def close_when_done(click_context: typer.Context) -> None:
        ctx.invocation = click_context
        click_context.call_on_close(ctx.close)

    commands.register(app, ctx)
    policy_cli.register(
        app,
        lambda: (ctx.ledger, CoolifySlotRuntime(ctx.coolify), ctx.settings),
        plan=lambda: (ctx.ledger, ctx.settings),
        duties=lambda ledger: leader_duties(ctx.settings, ledger, ctx.coolify),
    )
    web_cli.register(app, ctx)
    projections_cli.register(app, lambda: ctx)
    reconcile_cli.register(app, ctx)
    operator_cli.register(app, ctx)
    helptext.use_for(app)
    return app


def main() -> None:
    build_app()()
