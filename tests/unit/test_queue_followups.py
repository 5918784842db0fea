"""Issue 10 follow-ups, fast, on the in-memory ledger: configs the store reserves, a bot
that both waits and holds a slot, and how background failures are logged."""

from __future__ import annotations

import logging
import threading

import psycopg
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ledger.application import SlotLedger
from ledger.bootstrap import memory_env
from ledger.domain import QueueEntry, QueueStatus, check_config
from ledger.errors import BadInput, BotAlreadyQueued
from ledger.loops import log_failure
from ledger.service import Periodic


def ledger(max_pool_size: int = 2) -> SlotLedger:
    return SlotLedger(memory_env(), max_pool_size=max_pool_size)


# --- configs the store reserves ------------------------------------------------------------


@pytest.mark.parametrize(
    "config",
    [{"_type_": "nope", "_data_": "x"}, {"_type_": "x"}, {"_data_": "x", "MODE": "y"}],
)
def test_a_config_with_a_reserved_key_is_refused_naming_config(config: dict[str, str]) -> None:
    with pytest.raises(BadInput, match="reserves") as refused:
        ledger().enqueue("b1", config=config)
    assert refused.value.field == "config"


KEYS = st.from_regex(r"\A[A-Za-z_][A-Za-z0-9_]{0,8}\Z") | st.sampled_from(["_type_", "_data_"])


@settings(max_examples=100, deadline=None)
@given(st.dictionaries(KEYS, st.text(max_size=20), max_size=3))
def test_every_config_that_is_accepted_loads_back_equal(config: dict[str, str]) -> None:
    """The defect's class: whatever validation lets through, the store gives back."""
    try:
        check_config(config)
    except BadInput:
        return
    slots = ledger()
    saved = slots.enqueue("b1", config=config)
    loaded: QueueEntry = slots.repository.get(saved.id)
    assert loaded.config == config


# --- one slot or one entry -----------------------------------------------------------------


def test_a_bot_that_waits_cannot_acquire_or_provision_a_slot() -> None:
    slots = ledger()
    slots.provision("bot")
    slots.provision("bot")
    slots.enqueue("b0")
    with pytest.raises(BotAlreadyQueued):
        slots.acquire("b0")
    with pytest.raises(BotAlreadyQueued):
        slots.provision("bot", acquire_for="b0")
    assert [r.bot_id for r in slots.waiting()] == ["b0"]
    assert all(r.bot_id is None for r in slots.slots())


def test_dispatch_cancels_the_entry_of_a_bot_that_already_holds_a_slot_once() -> None:
    """Two first requests of one bot can pass both checks at once (``acquire_now`` is
    the path that skips the queue check); the drain then ends the entry, it does not
    retry it on every round."""
    slots = ledger(max_pool_size=3)
    slots.provision("bot")
    slots.provision("bot")
    entry = slots.enqueue("b0")
    held = slots.acquire_now("b0").slot
    attempts = 0
    save = slots.save

    def counted(*args: object, **kwargs: object) -> object:
        nonlocal attempts
        attempts += 1
        return save(*args, **kwargs)  # type: ignore[arg-type]

    slots.save = counted  # type: ignore[method-assign]
    assert slots.dispatch_waiting() == []
    assert attempts == 2  # the refused dispatch, then the cancel
    ended: QueueEntry = slots.repository.get(entry.id)
    assert ended.status is QueueStatus.CANCELLED
    assert ended.reason == f"bot 'b0' already holds slot {held.name}"
    assert slots.waiting() == []
    assert slots.slot_of_bot("b0").slot_id == held.id


# --- logging of background failures --------------------------------------------------------

OUTAGE = psycopg.OperationalError("connection refused")


@pytest.mark.parametrize(("error", "traced"), [(OUTAGE, False), (RuntimeError("bug"), True)])
def test_an_outage_is_one_line_and_a_bug_keeps_its_traceback(
    caplog: pytest.LogCaptureFixture, error: Exception, traced: bool
) -> None:
    log = logging.getLogger("test.followups")
    with caplog.at_level(logging.WARNING, logger="test.followups"):
        try:
            raise error
        except Exception as e:
            log_failure(log, "thing", e, "retrying")
    (record,) = caplog.records
    assert (record.exc_info is not None) is traced
    assert record.getMessage().startswith("thing failed")
    assert record.getMessage().endswith("retrying")
    if not traced:
        assert "the database did not answer: connection refused" in record.getMessage()


def test_a_periodic_duty_logs_an_outage_without_a_traceback(
    caplog: pytest.LogCaptureFixture,
) -> None:
    failed = threading.Event()

    def action() -> None:
        failed.set()
        raise OUTAGE

    periodic = Periodic("queue-drain", action, 0.01)
    with caplog.at_level(logging.WARNING, logger="ledger.service"):
        periodic.start()
        assert failed.wait(30)
        periodic.stop()
    mine = [r for r in caplog.records if r.getMessage().startswith("queue-drain failed")]
    assert mine
    assert all(r.exc_info is None for r in mine)
    assert periodic.health().consecutive_failures >= 1
