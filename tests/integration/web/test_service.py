"""The service as a process: the demo world, ``slotledger serve`` and ``stats``."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
from pathlib import Path

import httpx
import pytest
from typer.testing import CliRunner

from ledger.adapters.descriptions import DescriptionMirror
from ledger.application import SlotLedger
from ledger.bootstrap import build_ledger
from ledger.devtools.demo import DEMO_BOT_PREFIX, Demo
from ledger.domain.invariants import check_events, iter_log
from ledger.entrypoints.cli import build_app
from ledger.service import NotStarted, Service
from ledger.settings import load_settings
from tests.integration.web.support import wait_until

QUICK_DEMO = Demo(
    pool_size=3,
    deploy_delay_s=0.05,
    arrival_s=(0.05, 0.1),
    hold_s=(0.2, 0.4),
    queue_timeout_s=(5.0, 10.0),
    heartbeat_s=0.1,
    failure_rate=0.2,
    seed=5,
)


def test_the_demo_moves_and_keeps_the_ledger_consistent(sqlite_url: str) -> None:
    service = Service(load_settings(database_url=sqlite_url), demo=QUICK_DEMO, deploy_poll_s=0.02)
    with service:
        ledger = service.ledger
        assert [r.name for r in ledger.slots()] == [f"pool-bot-00{i}" for i in (1, 2, 3)]

        def seen(kind: str) -> bool:
            return any(type(e).__name__ == kind for _, e in iter_log(ledger))

        wait_until(lambda: seen("SlotReleased") and seen("QueueEntryDispatched"), 20)
        wait_until(lambda: seen("SlotFailed"), 20)  # the fake fails some deploys
    ledger = ledger_of(sqlite_url)
    report = check_events(iter_log(ledger), queue_grace_s=5)
    ledger.close()
    assert report.ok, report.violations

    # a second run on the same files ends the first run's bots and keeps the pool
    with Service(
        load_settings(database_url=sqlite_url), demo=Demo(pool_size=3, bots=False)
    ) as again:
        assert len(again.ledger.slots()) == 3
        assert not [r for r in again.ledger.slots() if (r.bot_id or "").startswith(DEMO_BOT_PREFIX)]
        assert again.ledger.waiting() == []


def ledger_of(database_url: str) -> SlotLedger:
    return build_ledger(load_settings(database_url=database_url))


SLOTLEDGER = [sys.executable, "-c", "from ledger.entrypoints.cli import main; main()"]
"""The ``slotledger`` entry point, run by this interpreter."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def test_serve_demo_prints_the_url_and_runs_again_on_its_files(tmp_path: Path) -> None:
    """``make run`` twice: a fresh demo store each run, in ``.slotledger/demo/``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("LEDGER_")}
    for run in range(2):
        port = free_port()
        process = subprocess.Popen(
            [*SLOTLEDGER, "serve", "--demo", "--port", str(port)],
            cwd=tmp_path,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            text=True,
        )
        try:
            assert process.stdout is not None
            line = process.stdout.readline()
            assert f"http://127.0.0.1:{port}/" in line, line
            stats = httpx.get(f"http://127.0.0.1:{port}/v1/pool/stats", timeout=10).json()
            assert stats["total"] == 6 and stats["maxSize"] == 6, (run, stats)
        finally:
            process.send_signal(signal.SIGINT)
            assert process.wait(timeout=30) == 0
    assert (tmp_path / ".slotledger" / "demo" / "ledger.db").exists()


def test_stats_prints_pool_and_queue_counters(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    ledger = ledger_of(sqlite_url)
    for _ in range(2):
        ledger.provision("bot", ctx=ledger.context("operator"))
    ledger.acquire("bot-1")
    ledger.close()

    result = CliRunner().invoke(build_app(), ["stats", "--json"])
    assert result.exit_code == 0, result.output
    record = json.loads(result.stdout)
    assert {k: record[k] for k in ("total", "idle", "deploying", "maxSize", "queued")} == {
        "total": 2,
        "idle": 1,
        "deploying": 1,
        "maxSize": 100,
        "queued": 0,
    }
    table = CliRunner().invoke(build_app(), ["stats"])
    assert table.exit_code == 0 and "maxSize" in table.stdout


def test_serve_refuses_a_bad_configuration_with_one_line(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    monkeypatch.delenv("LEDGER_COOLIFY_TOKEN", raising=False)
    result = CliRunner().invoke(build_app(), ["serve", "--port", str(free_port())])
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [
        "error: bad_configuration: LEDGER_COOLIFY_TOKEN is not set: the deploy flow needs a "
        "Coolify API token"
    ]
    monkeypatch.setenv("LEDGER_DATABASE_URL", "mysql://nope")
    assert CliRunner().invoke(build_app(), ["stats"]).exit_code == 2


def test_a_failed_start_stops_what_it_started(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(self: DescriptionMirror) -> None:
        raise RuntimeError("mirror cannot start")

    monkeypatch.setattr(DescriptionMirror, "start", broken)
    before = {t.name for t in threading.enumerate()}
    service = Service(load_settings(database_url=sqlite_url), demo=Demo(bots=False))
    with pytest.raises(RuntimeError, match="mirror cannot start"):
        service.start()
    assert not service.started and not service.follower.running
    assert {t.name for t in threading.enumerate() if t.is_alive()} <= before
    with pytest.raises(NotStarted):
        service.deployer  # noqa: B018  (the property is what is tested)
    service.stop()
