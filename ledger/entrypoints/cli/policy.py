"""CLI commands for the policies: ``policy run [--dry-run] [--json]`` and ``worker``.

``ledger.cli`` owns the application and calls :func:`register` with factories, so these
commands wire nothing themselves. Errors follow ``ledger.output.fail_with``: one line on
stderr, exit 2 for bad input or configuration, 1 for any other refusal.

A dry run only plans: the policies' decisions need the ledger, never Coolify, so it is
built without a Coolify client and runs without ``LEDGER_COOLIFY_TOKEN``.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from types import FrameType
from typing import Annotated

import typer

from ledger.adapters.logs import configure_logging
from ledger.application import SlotLedger
from ledger.application.policies import PolicyEngine, SlotRuntime
from ledger.application.worker import Duty, LocalLeaderElection, Worker
from ledger.bootstrap import election_for, policy_config, secrets_of
from ledger.entrypoints.cli.output import JsonOption, emit, failing_cleanly
from ledger.entrypoints.web.worker_app import WorkerEndpoint, create_worker_app
from ledger.errors import Conflict, store_unavailable
from ledger.settings import Settings

log = logging.getLogger("ledger.worker")

__all__ = ["Build", "Plan", "register"]

Build = Callable[[], tuple[SlotLedger, SlotRuntime, Settings]]
"""What the policies run with: the ledger, the containers' runtime (Coolify), settings."""
Plan = Callable[[], tuple[SlotLedger, Settings]]
"""What a dry run plans with: no runtime, so no Coolify client and no token."""
Duties = Callable[[SlotLedger], Sequence[Duty]]

_TABLE_COLUMNS = ("rule", "action", "target", "event", "reason")


class _NoRuntime:
    """The runtime of a dry run: the engine plans and never calls it."""

    def stop(self, coolify_uuid: str) -> None:
        raise AssertionError("a dry run never stops a container")

    def delete(self, coolify_uuid: str) -> None:
        raise AssertionError("a dry run never deletes an application")


def register(
    app: typer.Typer, build: Build, *, plan: Plan | None = None, duties: Duties = lambda _: ()
) -> None:
    """Add ``policy run`` and ``worker`` to ``app``; ``plan`` builds a dry run's parts
    (without it, ``build`` does); ``duties`` what the worker's leader runs beside the
    policies (drift reconciliation)."""

    def planned() -> tuple[SlotLedger, SlotRuntime, Settings]:
        if plan is None:
            return build()
        ledger, settings = plan()
        return ledger, _NoRuntime(), settings

    policy = typer.Typer(
        help="Time-driven policies: stale deploying, error recovery, queue expiry.",
        no_args_is_help=True,
    )

    @policy.command("run")
    def run(
        dry_run: Annotated[
            bool, typer.Option("--dry-run", help="Print what would be emitted; write nothing.")
        ] = False,
        as_json: JsonOption = False,
    ) -> None:
        """Run every policy once and print the decisions.

        A real run takes the workers' leadership first, so it never races a running
        leader; a dry run needs no leadership, touches nothing outside the ledger and
        needs no Coolify token."""
        parts = planned if dry_run else build
        with failing_cleanly(), _built(parts) as (ledger, runtime, settings):
            election = LocalLeaderElection() if dry_run else election_for(settings)
            try:
                if not election.try_lead():
                    raise Conflict(f"a worker leads pool {settings.pool_name}: nothing done")
                decisions = PolicyEngine(ledger, runtime, policy_config(settings)).tick(
                    dry_run=dry_run
                )
            finally:
                election.release()
        if dry_run:
            typer.echo("dry run: nothing was written", err=True)
        rows = [d.as_dict() for d in decisions]
        emit(
            rows,
            as_json=as_json,
            title="policy decisions",
            empty="no decisions",
            columns=_TABLE_COLUMNS,
            wrap={"reason"},
        )

    app.add_typer(policy, name="policy")

    @app.command("worker")
    def worker(
        log_json: Annotated[bool, typer.Option("--log-json", help="JSON log lines.")] = False,
        port: Annotated[
            int | None,
            typer.Option(
                min=1, max=65535, help="Serve /healthz, /readyz and /metrics on this port."
            ),
        ] = None,
        host: Annotated[str, typer.Option(help="Interface for --port.")] = "127.0.0.1",
    ) -> None:
        """Run the policies until SIGINT or SIGTERM: leader when the pool has none,
        standby otherwise; with --port, its health over HTTP."""
        with failing_cleanly(), _built(build) as (ledger, runtime, settings):
            configure_logging(json_lines=log_json, secrets=secrets_of(settings))
            _ensure_pool(ledger)
            stop = threading.Event()
            election = election_for(settings)
            loop = Worker(policy_config(settings), ledger, runtime, election, duties=duties(ledger))
            with _stopping_on_signals(stop), _endpoint(loop, stop, settings, host, port):
                loop.run(stop)


def _ensure_pool(ledger: SlotLedger) -> None:
    """A changed ``LEDGER_MAX_POOL_SIZE`` takes effect as one ``PoolResized`` when a
    worker starts, as when a server does. A store that does not answer yet is no reason
    not to start: the worker's loops wait for it, and the next start records it."""
    try:
        ledger.ensure_pool(ctx=ledger.context("operator"))
    except Exception as e:
        outage = store_unavailable(e)
        if outage is None:
            raise
        log.warning("the pool's maximum size is not checked at start: %s", outage.detail)


@contextmanager
def _built(build: Build) -> Iterator[tuple[SlotLedger, SlotRuntime, Settings]]:
    ledger, runtime, settings = build()
    try:
        yield ledger, runtime, settings
    finally:
        ledger.close()


@contextmanager
def _endpoint(
    loop: Worker, stop: threading.Event, settings: Settings, host: str, port: int | None
) -> Iterator[None]:
    """The worker's HTTP endpoint while the loop runs, only when a port is given: any
    number of workers may run on one host, so a default port would make the second one
    fail to start, and a port nobody asked for is one more thing to secure."""
    if port is None:
        yield
        return
    app = create_worker_app(loop, lambda: not stop.is_set(), secrets_of(settings))
    endpoint = WorkerEndpoint(app, host, port)
    endpoint.start()
    try:
        yield
    finally:
        endpoint.stop()


@contextmanager
def _stopping_on_signals(stop: threading.Event) -> Iterator[None]:
    def handle(signum: int, frame: FrameType | None) -> None:
        stop.set()

    previous = {s: signal.signal(s, handle) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)
