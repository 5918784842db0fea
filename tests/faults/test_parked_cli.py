"""A poison event with no server running: the CLI's read-side commands park it through
the follower's own rounds, exactly as a server would, warn in one line and answer,
instead of crashing on it (installed console script, both stores)."""

from __future__ import annotations

import json
from pathlib import Path

from ledger.application import SlotLedger
from ledger.bootstrap import build_ledger
from ledger.domain import Pool, pool_id
from ledger.settings import load_settings
from tests.blackbox import run_cli
from tests.faults.test_parked_blackbox import write_poison

WARNING = "warning: 1 event(s) parked: the read models leave them out (see `slotledger parked`)"


def write_overflow(ledger: SlotLedger) -> int:
    """A pool size no 64-bit column holds (SQLite keeps a NUL in text, so this is its
    poison), straight into the store; returns its position."""
    ledger.provision("bot", ctx=ledger.context("operator"))
    pool: Pool = ledger.repository.get(pool_id(ledger.pool_name))
    pool.trigger_event(
        Pool.PoolResized,
        timestamp=ledger.clock(),
        actor="operator",
        correlation_id="poison",
        old_max_size=pool.max_size,
        new_max_size=2**70,
        reason="poison",
    )
    return ledger.save(pool)[-1].notification.id


def test_read_commands_park_a_poison_event_and_answer(database_url: str, tmp_path: Path) -> None:
    poisoned = write_poison if database_url.startswith("postgresql") else write_overflow
    ledger = build_ledger(load_settings(database_url=database_url))
    try:
        poison = poisoned(ledger)
        later = ledger.provision("bot", ctx=ledger.context("operator")).slot  # after the poison
    finally:
        ledger.close()
    env = {"LEDGER_DATABASE_URL": database_url}

    stats = run_cli("stats", "--json", env=env, cwd=tmp_path)
    assert stats.returncode == 0, stats.stderr
    assert stats.stderr.strip() == WARNING
    assert json.loads(stats.stdout)["total"] == 2  # the event after the poison counts

    listed = run_cli("parked", "--json", env=env, cwd=tmp_path)
    assert listed.returncode == 0, listed.stderr
    [entry] = [json.loads(line) for line in listed.stdout.splitlines()]
    assert (entry["consumer"], entry["position"], entry["status"]) == (
        "read-models",
        poison,
        "parked",
    )

    for args in (["audit", "--json"], ["history", later.name, "--json"], ["export"]):
        answer = run_cli(*args, env=env, cwd=tmp_path)
        assert answer.returncode == 0, (args, answer.stderr)
        assert answer.stderr.strip() == WARNING, args
        assert answer.stdout.strip(), args
    audit = run_cli("audit", "--json", env=env, cwd=tmp_path)
    positions = [json.loads(line)["position"] for line in audit.stdout.splitlines()]
    assert poison not in positions and max(positions) > poison

    assert run_cli("parked", "skip", str(poison), env=env, cwd=tmp_path).returncode == 0
    quiet = run_cli("stats", env=env, cwd=tmp_path)
    assert quiet.returncode == 0 and quiet.stderr == "", quiet.stderr


def test_parked_first_parks_and_lists(postgres_url: str, tmp_path: Path) -> None:
    """``parked`` as the very first command catches up too, so it lists the poison."""
    ledger = build_ledger(load_settings(database_url=postgres_url))
    try:
        poison = write_poison(ledger)
    finally:
        ledger.close()
    listed = run_cli("parked", "--json", env={"LEDGER_DATABASE_URL": postgres_url}, cwd=tmp_path)
    assert listed.returncode == 0 and listed.stderr == "", listed.stderr
    assert [json.loads(line)["position"] for line in listed.stdout.splitlines()] == [poison]
