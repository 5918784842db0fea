"""``policy run`` and ``worker`` through typer, on the in-memory store."""

from __future__ import annotations

import json
import os
import signal
import threading
import time

import pytest
import typer
from typer.testing import CliRunner

from ledger.application import SlotLedger
from ledger.domain import SlotStatus
from ledger.entrypoints.cli.policy import register
from ledger.errors import ConfigurationError, NoIdleSlot, SlotLedgerError
from tests.contracts.ledger import FakeClock
from tests.unit.policies.support import (
    RecordingRuntime,
    deploying_slot,
    log_length,
    make_settings,
)

runner = CliRunner()


def _app(ledger: SlotLedger, **settings: object) -> typer.Typer:
    app = typer.Typer()
    register(app, lambda: (ledger, RecordingRuntime(), make_settings(**settings)))
    return app


@pytest.fixture
def stale(ledger: SlotLedger, clock: FakeClock) -> SlotLedger:
    deploying_slot(ledger, "bot-1")
    clock.advance(301)
    return ledger


def test_dry_run_prints_a_table_and_writes_nothing(stale: SlotLedger) -> None:
    before = log_length(stale)

    result = runner.invoke(_app(stale), ["policy", "run", "--dry-run"])

    assert result.exit_code == 0, result.output
    for expected in ("rule", "reason", "stale-deploying", "pool-meet-001", "deploying timeout"):
        assert expected in result.stdout
    assert result.stderr == "dry run: nothing was written\n"
    assert log_length(stale) == before


def test_run_prints_ndjson_and_writes(stale: SlotLedger) -> None:
    result = runner.invoke(_app(stale), ["policy", "run", "--json"])

    assert result.exit_code == 0, result.output
    lines = [json.loads(line) for line in result.stdout.splitlines()]
    assert [(d["rule"], d["event"]) for d in lines] == [
        ("stale-deploying", "SlotFailed"),
        ("error-recovery", "SlotRecovered"),
    ]
    assert lines[0]["reason"] == "deploying timeout"
    assert stale.slots()[0].status is SlotStatus.IDLE


def test_nothing_to_do_says_so(ledger: SlotLedger) -> None:
    result = runner.invoke(_app(ledger), ["policy", "run"])

    assert (result.exit_code, result.stdout) == (0, "no decisions\n")


@pytest.mark.parametrize(
    ("error", "code"),
    [
        (ConfigurationError("bad configuration: LEDGER_DEPLOYING_TIMEOUT: must be >= 10"), 2),
        (NoIdleSlot("no idle slot in pool default"), 1),
    ],
)
@pytest.mark.parametrize("command", [["policy", "run"], ["worker"]])
def test_refusals_exit_with_one_line(error: SlotLedgerError, code: int, command: list[str]) -> None:
    def build() -> tuple[SlotLedger, RecordingRuntime, object]:
        raise error

    app = typer.Typer()
    register(app, build)  # type: ignore[arg-type]

    result = runner.invoke(app, command)

    assert result.exit_code == code
    assert result.stderr == f"error: {error.code}: {error.detail}\n"


def test_worker_runs_until_sigterm(stale: SlotLedger) -> None:
    handlers = signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)

    def terminate_once_recovered() -> None:
        """SIGTERM once the worker did its work, however long that takes (the deadline
        only stops a worker that never gets there; the assertions then fail)."""
        deadline = time.monotonic() + 60
        while stale.slots()[0].status is not SlotStatus.IDLE and time.monotonic() < deadline:
            time.sleep(0.02)
        os.kill(os.getpid(), signal.SIGTERM)

    terminator = threading.Thread(target=terminate_once_recovered)
    terminator.start()

    result = runner.invoke(_app(stale, policy_tick_s=0.02), ["worker"])

    terminator.join()
    assert result.exit_code == 0, result.output
    assert stale.slots()[0].status is SlotStatus.IDLE
    assert (signal.getsignal(signal.SIGTERM), signal.getsignal(signal.SIGINT)) == handlers
