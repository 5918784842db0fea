"""Transition log lines (plain and JSON) and the secret filter."""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator

import pytest

from ledger.adapters.logs import SlotTransition, TransitionLog, configure_logging
from ledger.application import SlotLedger
from ledger.bootstrap import build_ledger, secrets_of
from ledger.settings import load_settings


@pytest.fixture
def ledger(database_url: str) -> Iterator[SlotLedger]:
    ledger = build_ledger(load_settings(database_url=database_url))
    yield ledger
    ledger.close()


@pytest.fixture
def restore_logging() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_one_line_per_transition_even_for_slots_first_seen_mid_life(
    ledger: SlotLedger, caplog: pytest.LogCaptureFixture
) -> None:
    slot = ledger.provision("bot", ctx=ledger.context("operator")).slot
    ledger.acquire("bot-1", ctx=ledger.context("api").under("cid-acquire"))
    seen: list[SlotTransition] = []
    tail = TransitionLog(ledger, [seen.append])
    tail.start_at()  # the slot's past is not logged, but its status is known
    ledger.mark_deploying(slot.id, "dep-1")  # not a transition: no line
    ledger.heartbeat(slot.id, "bot-1", ctx=ledger.context("api").under("cid-beat"))
    ledger.release("bot-1", ctx=ledger.context("api").under("cid-release"))
    ledger.retire(slot.id, "worn out")
    with caplog.at_level(logging.INFO, logger="ledger.transitions"):
        assert tail.catch_up() == 5  # events read, the pool's own included

    assert [(t.source, t.target) for t in seen] == [
        ("deploying", "busy"),
        ("busy", "idle"),
        ("idle", "retired"),
    ]
    started = seen[0]
    assert (started.slot, started.bot_id, started.actor) == (slot.name, "bot-1", "api")
    assert started.correlation_id == "cid-beat" and started.since <= started.at
    assert caplog.messages[0] == (
        f"slot {slot.name} bot bot-1: deploying -> busy (SlotStarted) by api cid=cid-beat"
    )
    assert len(caplog.messages) == 3
    assert tail.catch_up() == 0


def test_json_lines_carry_the_transition_and_secrets_are_redacted(
    ledger: SlotLedger, capsys: pytest.CaptureFixture[str], restore_logging: None
) -> None:
    settings = load_settings(api_token="tok-123456", coolify_token="cool-654321")
    configure_logging(json_lines=True, secrets=secrets_of(settings))
    tail = TransitionLog(ledger)
    tail.start_at()
    ledger.provision("bot", ctx=ledger.context("operator"))
    tail.catch_up()
    logging.getLogger("anything").warning("sent %s and cool-654321", "tok-123456")

    lines = [json.loads(line) for line in capsys.readouterr().err.splitlines()]
    provisioned = next(line for line in lines if line.get("event") == "SlotProvisioned")
    assert provisioned["source"] == "new" and provisioned["target"] == "idle"
    assert provisioned["actor"] == "operator" and provisioned["level"] == "info"
    assert set(provisioned) >= {"ts", "slot", "slot_id", "bot_id", "correlation_id", "position"}
    assert lines[-1]["message"] == "sent [REDACTED] and [REDACTED]"


def test_only_the_active_process_logs_and_it_relearns_slots_when_it_takes_over(
    ledger: SlotLedger,
) -> None:
    leading = False
    seen: list[SlotTransition] = []
    tail = TransitionLog(ledger, [seen.append], active=lambda: leading)
    tail.start_at()
    slot = ledger.provision("bot", ctx=ledger.context("operator")).slot
    ledger.acquire("bot-1")
    tail.catch_up()
    assert seen == []  # another process leads and logs these
    leading = True
    ledger.release("bot-1")
    tail.catch_up()
    assert [(t.slot, t.source, t.target) for t in seen] == [(slot.name, "deploying", "idle")]
