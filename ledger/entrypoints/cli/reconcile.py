"""``slotledger reconcile [--dry-run] [--json]``: one drift reconciliation pass, now.

The policy worker's leader runs the same pass every ``LEDGER_DRIFT_INTERVAL_S``
(:mod:`ledger.application.reconcile`); a real run takes that leadership first, as
``policy run`` does, so it never acts beside a running leader.
"""

from __future__ import annotations

from typing import Annotated

import typer

from ledger.application.reconcile import Finding, Reconciler
from ledger.bootstrap import drift_config, election_for
from ledger.entrypoints.cli.core import Context
from ledger.entrypoints.cli.output import JsonOption, emit, note, run_guarded
from ledger.errors import Conflict

__all__ = ["register"]

_COLUMNS = ("kind", "decision", "app", "slot", "outcome")


def register(app: typer.Typer, ctx: Context) -> None:
    """Add ``reconcile``."""

    @app.command()
    def reconcile(
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Show the drift found; record and change nothing.")
        ] = False,
        as_json: JsonOption = False,
    ) -> None:
        """Compare Coolify's applications with the pool's slots once: record each drift,
        then delete or quarantine orphaned applications (RETIRE_MODE)."""

        def run() -> list[Finding]:
            reconciler = Reconciler(ctx.ledger, ctx.coolify, drift_config(ctx.settings))
            if dry_run:
                return reconciler.reconcile(dry_run=True)
            election = election_for(ctx.settings)
            try:
                if not election.try_lead():
                    raise Conflict(f"a worker leads pool {ctx.settings.pool_name}: nothing done")
                return reconciler.reconcile()
            finally:
                election.release()

        findings = run_guarded(run)
        if dry_run and not as_json:
            note("dry run: nothing was recorded or changed")
        rows = [f.as_dict() for f in findings]
        if not as_json:
            rows = [{c: row[c] for c in _COLUMNS} for row in rows]
        emit(rows, as_json=as_json, title="drift", empty="no drift")
