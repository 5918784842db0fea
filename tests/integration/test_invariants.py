"""The invariant checker over hand-crafted logs, on both stores, and ``slotledger check``.

Each bad log is written straight through the recorder (``mapper.to_stored_event`` then
``recorder.insert_events``), past the domain's guards, because the ledger itself refuses
to produce any of them. A log the ledger wrote through its commands checks clean.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from uuid import UUID, uuid4

import pytest
from typer.testing import CliRunner

from ledger.application import SlotLedger
from ledger.bootstrap import build_ledger
from ledger.domain import QueueEntry, Slot
from ledger.domain.invariants import CheckReport, check_events, iter_log
from ledger.entrypoints.cli import build_app
from ledger.settings import load_settings

T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)


class HandCraftedLog:
    """Writes events at chosen instants (seconds after ``T0``), each event alone, with
    no regard for the transition table."""

    def __init__(self, ledger: SlotLedger) -> None:
        self.ledger = ledger
        self.versions: dict[UUID, int] = {}
        self.positions: list[int] = []

    def write(self, *events: Any) -> None:
        for event in events:
            self.versions[event.originator_id] = event.originator_version
            stored = self.ledger.mapper.to_stored_event(event)
            self.ledger.recorder.insert_events([stored])
            self.positions.append(self.ledger.recorder.max_notification_id() or 0)

    def provision(self, t: float, platform: str = "meet") -> UUID:
        slot = Slot.provision(
            slot_id=uuid4(),
            pool=self.ledger.pool_name,
            name=f"pool-{platform}-{len(self.versions) + 1:03d}",
            platform=platform,
            coolify_uuid=None,
            at=T0 + timedelta(seconds=t),
            actor="operator",
            correlation_id="crafted",
        )
        self.write(*slot.collect_events())
        return slot.id

    def slot(
        self, slot_id: UUID, event: type[Slot.SlotEvent], t: float, bot: str | None = None, **f: Any
    ) -> None:
        """The slot's next event, whatever its status."""
        self.write(
            event(
                originator_id=slot_id,
                originator_version=self.versions[slot_id] + 1,
                timestamp=T0 + timedelta(seconds=t),
                actor="api",
                correlation_id="crafted",
                bot_id=bot,
                **f,
            )
        )

    def enqueue(self, bot: str, t: float, platform: str | None = "meet") -> None:
        entry = QueueEntry.enqueue(
            bot_id=bot,
            pool=self.ledger.pool_name,
            platform=platform,
            priority=0,
            timeout_s=600,
            config={},
            at=T0 + timedelta(seconds=t),
            actor="api",
            correlation_id="crafted",
        )
        self.write(*entry.collect_events())


@pytest.fixture
def ledger(database_url: str) -> Iterator[SlotLedger]:
    ledger = build_ledger(load_settings(database_url=database_url))
    yield ledger
    ledger.close()


@pytest.fixture
def log(ledger: SlotLedger) -> HandCraftedLog:
    return HandCraftedLog(ledger)


def check(ledger: SlotLedger, queue_grace_s: float = 30.0) -> CheckReport:
    return check_events(iter_log(ledger), queue_grace_s=queue_grace_s)


def kinds(report: CheckReport) -> Counter[str]:
    return Counter(v.kind for v in report.violations)


def test_a_slot_acquired_while_another_bot_holds_it(log: HandCraftedLog) -> None:
    slot = log.provision(0)
    log.slot(slot, Slot.SlotAcquired, 1, "bot-a")
    log.slot(slot, Slot.SlotAcquired, 2, "bot-b")

    report = check(log.ledger)

    # acquiring a deploying slot is also an illegal transition
    assert kinds(report) == {"slot_two_bots": 1, "illegal_transition": 1}
    (violation,) = [v for v in report.violations if v.kind == "slot_two_bots"]
    assert (violation.slot_id, violation.bot_id) == (slot, "bot-b")
    assert violation.position == log.positions[-1]
    assert violation.timestamp == T0 + timedelta(seconds=2)
    assert "'bot-a' held it" in violation.detail


def test_a_bot_acquiring_a_second_slot(log: HandCraftedLog) -> None:
    first, second = log.provision(0), log.provision(1)
    log.slot(first, Slot.SlotAcquired, 2, "bot-a")
    log.slot(second, Slot.SlotAcquired, 3, "bot-a")

    report = check(log.ledger)

    assert kinds(report) == {"bot_two_slots": 1}
    (violation,) = report.violations
    assert (violation.slot_id, violation.bot_id) == (second, "bot-a")
    assert str(first) in violation.detail


ILLEGAL: dict[str, tuple[list[tuple[type[Slot.SlotEvent], str | None, dict[str, Any]]], str]] = {
    "started while idle": ([(Slot.SlotStarted, None, {})], "SlotStarted from idle"),
    "released while idle": ([(Slot.SlotReleased, "bot-a", {})], "SlotReleased from idle"),
    "recovered while busy": (
        [
            (Slot.SlotAcquired, "bot-a", {}),
            (Slot.SlotStarted, "bot-a", {}),
            (Slot.SlotRecovered, None, {}),
        ],
        "SlotRecovered from busy",
    ),
    "acquired after retirement": (
        [(Slot.SlotRetired, None, {"reason": "rotated"}), (Slot.SlotAcquired, "bot-a", {})],
        "SlotAcquired from retired",
    ),
}


@pytest.mark.parametrize("case", ILLEGAL)
def test_an_event_its_slots_status_does_not_allow(log: HandCraftedLog, case: str) -> None:
    steps, detail = ILLEGAL[case]
    slot = log.provision(0)
    for t, (event, bot, fields) in enumerate(steps, 1):
        log.slot(slot, event, t, bot, **fields)

    report = check(log.ledger)

    assert kinds(report) == {"illegal_transition": 1}
    (violation,) = report.violations
    assert (violation.slot_id, violation.detail) == (slot, detail)
    assert violation.position == log.positions[-1]


def test_a_queue_entry_waiting_while_a_slot_stands_idle(log: HandCraftedLog) -> None:
    log.provision(0)
    log.enqueue("bot-q", 1)
    log.provision(46)  # any later event shows how long the entry has waited

    starved = check(log.ledger, queue_grace_s=30)
    tolerated = check(log.ledger, queue_grace_s=60)

    assert kinds(starved) == {"queue_starved": 1}
    (violation,) = starved.violations
    assert violation.timestamp == T0 + timedelta(seconds=46)
    assert "waited 45.0s while a slot was idle" in violation.detail
    assert tolerated.ok


def test_a_queue_waiting_for_another_platform_is_not_starved(log: HandCraftedLog) -> None:
    log.provision(0, platform="meet")
    log.enqueue("bot-z", 1, platform="zoom")
    log.provision(120, platform="meet")

    assert check(log.ledger, queue_grace_s=30).ok


def test_a_log_written_by_the_ledgers_commands_is_clean(ledger: SlotLedger) -> None:
    slots = [ledger.provision("meet").slot.id for _ in range(2)]
    ledger.acquire("bot-1")
    ledger.acquire("bot-2")
    ledger.enqueue("bot-3")
    ledger.release("bot-1")
    assert [entry.bot_id for entry, _ in ledger.dispatch_waiting()] == ["bot-3"]
    held = ledger.slot_of_bot("bot-2").slot_id
    ledger.mark_deploying(held, "deployment-1")
    ledger.mark_started(held)
    ledger.fail(held, "container exited", reason_code="exited")
    ledger.recover(held)
    ledger.retire(held, "rotated")
    ledger.release("bot-3")

    report = check(ledger)

    assert report.ok, report.violations
    assert report.acquisitions == 3
    assert report.events == len(list(iter_log(ledger)))
    assert len(slots) == 2


def crafted_double_lease(url: str) -> None:
    ledger = build_ledger(load_settings(database_url=url))
    log = HandCraftedLog(ledger)
    slot = log.provision(0)
    log.slot(slot, Slot.SlotAcquired, 1, "bot-a")
    log.slot(slot, Slot.SlotAcquired, 2, "bot-b")
    ledger.close()


def test_check_command_exits_0_on_a_clean_log_and_1_on_violations(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", database_url)
    ledger = build_ledger(load_settings(database_url=database_url))
    ledger.provision("meet")
    ledger.acquire("bot-1")
    ledger.release("bot-1")
    ledger.close()

    clean = CliRunner().invoke(build_app(), ["check"])
    assert clean.exit_code == 0, clean.output
    assert "no violations" in clean.stdout
    assert "1 acquisitions: 0 violations" in clean.stdout

    crafted_double_lease(database_url)
    dirty = CliRunner().invoke(build_app(), ["check", "--json"])
    assert dirty.exit_code == 1, dirty.output
    *found, summary = [json.loads(line) for line in dirty.stdout.splitlines()]
    assert summary["violations"] == 2
    assert sorted(v["kind"] for v in found) == ["illegal_transition", "slot_two_bots"]
    assert {v["bot_id"] for v in found} == {"bot-b"}


def test_check_command_honours_the_queue_grace(
    sqlite_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("LEDGER_DATABASE_URL", sqlite_url)
    ledger = build_ledger(load_settings(database_url=sqlite_url))
    log = HandCraftedLog(ledger)
    log.provision(0)
    log.enqueue("bot-q", 1)
    log.provision(46)
    ledger.close()

    assert CliRunner().invoke(build_app(), ["check", "--queue-grace", "30"]).exit_code == 1
    assert CliRunner().invoke(build_app(), ["check", "--queue-grace", "60"]).exit_code == 0


def test_slotledger_check_as_a_process(sqlite_url: str, tmp_path: Path) -> None:
    """The installed entry point, as an operator or CI job runs it."""
    crafted_double_lease(sqlite_url)
    env = {**os.environ, "LEDGER_DATABASE_URL": sqlite_url}
    command = [
        sys.executable,
        "-c",
        "from ledger.entrypoints.cli import main; main()",
        "check",
        "--json",
    ]
    done = subprocess.run(
        command, env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 1, done.stderr
    *found, summary = [json.loads(line) for line in done.stdout.splitlines()]
    assert summary["violations"] == 2
    assert sorted(v["kind"] for v in found) == ["illegal_transition", "slot_two_bots"]
