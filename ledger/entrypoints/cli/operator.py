"""An operator's actions on the command line: ``retire SLOT``, ``drain SLOT``, ``undrain
SLOT``, ``pool resize N``, ``pool drain`` and ``pool undrain``, each with ``--reason`` and
``--dry-run`` (see :mod:`ledger.application.operations`). The CLI does the Coolify part of
a retirement itself, before it answers."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial
from typing import Annotated

import typer

from ledger.application.deploy import CoolifySlotRuntime
from ledger.application.operations import Operator
from ledger.entrypoints.cli.core import Context
from ledger.entrypoints.cli.output import JsonOption, emit, run_guarded

__all__ = ["register"]

Reason = Annotated[str, typer.Option(help="Why: recorded on the event.")]
DryRun = Annotated[bool, typer.Option("--dry-run", help="Say what would happen; write nothing.")]


def register(app: typer.Typer, ctx: Context) -> None:
    """Add ``retire``, ``drain``, ``undrain`` and the ``pool`` group (``pool resize``,
    ``pool drain``, ``pool undrain``)."""

    def operator() -> Operator:
        return Operator(
            ctx.ledger, lambda: CoolifySlotRuntime(ctx.coolify), ctx.settings.retire_mode
        )

    @app.command()
    def retire(
        slot: str, reason: Reason, dry_run: DryRun = False, as_json: JsonOption = False
    ) -> None:
        """Retire an idle or error slot: SlotRetired, then its container stopped and its
        application deleted or kept (RETIRE_MODE)."""

        def run() -> dict[str, object]:
            done = operator().retire(slot, reason, dry_run=dry_run)
            verb = "would" if dry_run else "did"
            return {"slot": done.name, "dry_run": dry_run, verb: "; ".join(done.steps)}

        emit([run_guarded(run)], as_json=as_json)

    @app.command()
    def drain(
        slot: str, reason: Reason, dry_run: DryRun = False, as_json: JsonOption = False
    ) -> None:
        """Take a slot out of acquisition (SlotDrained). A bot that holds it keeps it until
        its release; the slot then stays idle until undrained."""
        emit([run_guarded(partial(_drain, operator, slot, reason, dry_run))], as_json=as_json)

    @app.command()
    def undrain(
        slot: str, reason: Reason, dry_run: DryRun = False, as_json: JsonOption = False
    ) -> None:
        """Put a drained slot back into acquisition (SlotUndrained)."""
        run = partial(_drain, operator, slot, reason, dry_run, undrain=True)
        emit([run_guarded(run)], as_json=as_json)

    pool = typer.Typer(help="The pool as a whole.", no_args_is_help=True)

    @pool.command()
    def resize(
        max_size: Annotated[int, typer.Argument(help="The new maximum number of slots.")],
        reason: Reason,
        dry_run: DryRun = False,
        as_json: JsonOption = False,
    ) -> None:
        """Record a new maximum pool size (PoolResized); running servers serve the queue
        with the new room on their next drain. Below the slots the pool has: refused."""

        def run() -> dict[str, object]:
            done = operator().resize(max_size, reason, dry_run=dry_run)
            return {
                "old_max_size": done.old_max_size,
                "new_max_size": done.new_max_size,
                "slots": done.size,
                "changed": done.changed,
                "dry_run": done.dry_run,
            }

        emit([run_guarded(run)], as_json=as_json)

    @pool.command("drain")
    def drain_pool(reason: Reason, dry_run: DryRun = False, as_json: JsonOption = False) -> None:
        """No new acquisition in the pool: PoolDrained, then SlotDrained on each slot not
        drained yet (run again, it finishes an interrupted drain). Requests wait in the
        queue; busy slots finish."""
        emit([run_guarded(partial(_drain, operator, None, reason, dry_run))], as_json=as_json)

    @pool.command("undrain")
    def undrain_pool(reason: Reason, dry_run: DryRun = False, as_json: JsonOption = False) -> None:
        """PoolUndrained, then SlotUndrained on each slot the pool's drain drained (slots
        drained by name stay drained)."""
        run = partial(_drain, operator, None, reason, dry_run, undrain=True)
        emit([run_guarded(run)], as_json=as_json)

    app.add_typer(pool, name="pool")


def _drain(
    operator: Callable[[], Operator],
    slot: str | None,
    reason: str,
    dry_run: bool,
    *,
    undrain: bool = False,
) -> dict[str, object]:
    """Drain or undrain one slot, or the pool (``slot`` None), as a row to print."""
    if slot is None:
        done = operator().drain_pool(reason, undrain=undrain, dry_run=dry_run)
    else:
        done = operator().drain(slot, reason, undrain=undrain, dry_run=dry_run)
    verb = "would" if dry_run else "did"
    return {
        "target": done.target,
        "dry_run": dry_run,
        verb: "; ".join(done.steps) or "nothing: already so",
    }
