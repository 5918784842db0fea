"""Releases and requests that meet a queue dispatch, made deterministic: the dispatch is
run at the exact moment the race needs it (right after one of the command's own index
reads), on the in-memory store, SQLite and PostgreSQL.

Regression tests for issue 10, defects 3 and 4: a release that read "waiting" and then
met the dispatch answered 409 (or 404) while the bot kept the slot it was given, and a
request whose entry was dispatched between its commit and its answer answered 500."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from ledger.adapters.coolify import CoolifyClient
from ledger.application import Outcome, SlotLedger
from ledger.application.deploy import (
    Acquired,
    LocalDeployPermits,
    Queued,
    SlotDeployer,
    SlotTemplate,
)
from ledger.application.ports import QueueRow, SlotRow
from ledger.bootstrap import build_ledger, memory_env
from ledger.domain import SlotStatus
from ledger.domain.invariants import check_events, iter_log
from ledger.errors import BotNotFound
from ledger.settings import load_settings

READS = ("slot_for_bot", "waiting_entry_for_bot")


def refuse(request: httpx.Request) -> httpx.Response:
    raise AssertionError(f"these races need no Coolify call: {request.url}")


@pytest.fixture(params=["memory", "sqlite", "postgres"])
def ledger(request: pytest.FixtureRequest) -> Iterator[SlotLedger]:
    """A ledger with room for one slot, held by ``holder``; ``waiter`` waits for it."""
    if request.param == "memory":
        made = SlotLedger(memory_env(), max_pool_size=1)
    else:
        url = request.getfixturevalue(f"{request.param}_url")
        made = build_ledger(load_settings(database_url=url, max_pool_size=1))
    made.provision("bot", acquire_for="holder")
    yield made
    made.close()


@pytest.fixture
def deployer(ledger: SlotLedger) -> Iterator[SlotDeployer]:
    coolify = CoolifyClient(
        "http://coolify.invalid", "token", transport=httpx.MockTransport(refuse)
    )
    template = SlotTemplate("project", "server", "production", "image", "1")
    made = SlotDeployer(ledger, coolify, template, LocalDeployPermits(1))
    yield made
    made.close()
    coolify.close()


def dispatch_after_read(
    monkeypatch: pytest.MonkeyPatch,
    ledger: SlotLedger,
    read: str,
    bot_id: str,
    *,
    only_if_found: bool = False,
) -> list[int]:
    """Once the index read ``read`` for ``bot_id`` returns (with a row, if
    ``only_if_found``), the holder gives its slot back and the queue is dispatched, as
    another process would do at that moment. Returns a list that counts the dispatches."""
    real: Callable[[str], Any] = getattr(ledger.index, read)
    fired: list[int] = []

    def hooked(asked: str) -> Any:
        row = real(asked)
        if asked == bot_id and not fired and (row is not None or not only_if_found):
            fired.append(1)
            ledger.release("holder")
            ledger.dispatch_waiting()  # gives it to the bot, if it still waits
        return row

    monkeypatch.setattr(ledger.index, read, hooked)
    return fired


def held_by(ledger: SlotLedger, bot_id: str) -> tuple[SlotRow | None, QueueRow | None]:
    return ledger.index.slot_for_bot(bot_id), ledger.index.waiting_entry_for_bot(bot_id)


@pytest.mark.parametrize("read", READS)
def test_a_release_that_meets_the_dispatch_leaves_the_bot_holding_nothing(
    ledger: SlotLedger, deployer: SlotDeployer, monkeypatch: pytest.MonkeyPatch, read: str
) -> None:
    ledger.enqueue("waiter")
    fired = dispatch_after_read(monkeypatch, ledger, read, "waiter")

    deployer.release("waiter")

    assert fired, f"the dispatch never ran after {read}"
    assert held_by(ledger, "waiter") == (None, None)
    with pytest.raises(BotNotFound, match="holds no slot and waits in no queue"):
        deployer.release("waiter")  # repeating it changes nothing
    assert held_by(ledger, "waiter") == (None, None)
    report = check_events(iter_log(ledger))
    assert report.ok, report.violations


def test_a_release_between_read_and_cancel_releases_the_dispatched_slot(
    ledger: SlotLedger, deployer: SlotDeployer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The exact window of the defect: "waiting" was read, then the entry was dispatched,
    then the release decided: it releases the slot the dispatch gave."""
    ledger.enqueue("waiter")
    dispatch_after_read(monkeypatch, ledger, "waiting_entry_for_bot", "waiter")

    outcome = ledger.release_or_cancel("waiter")

    assert isinstance(outcome, Outcome) and outcome.slot.status is SlotStatus.IDLE
    assert outcome.slot.bot_id is None
    assert held_by(ledger, "waiter") == (None, None)


def test_a_request_whose_entry_is_dispatched_before_its_answer_answers_with_the_slot(
    ledger: SlotLedger, deployer: SlotDeployer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The entry is committed, then dispatched before the request reads its place: the
    answer is the slot, not an error."""
    fired = dispatch_after_read(
        monkeypatch, ledger, "waiting_entry_for_bot", "waiter", only_if_found=True
    )

    answer = deployer.request("waiter")

    assert fired
    assert isinstance(answer, Acquired), answer
    assert answer.slot.bot_id == "waiter" and not answer.existing
    slot, entry = held_by(ledger, "waiter")
    assert entry is None and slot is not None and slot.slot_id == answer.slot.id


def test_a_repeated_request_answers_with_what_the_bot_holds(
    ledger: SlotLedger, deployer: SlotDeployer
) -> None:
    first = deployer.request("waiter", priority=3)
    assert isinstance(first, Queued) and first.position == 1
    again = deployer.request("waiter", priority=3)
    assert isinstance(again, Queued) and again.entry.id == first.entry.id
    assert again.position == 1 and len(ledger.waiting()) == 1

    held = deployer.request("holder")
    assert isinstance(held, Acquired) and held.existing
    assert held.slot.id == ledger.slot_of_bot("holder").slot_id
