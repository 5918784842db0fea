"""The description mirror skips the slot events that cannot change a description."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from ledger.adapters.descriptions import UNDESCRIBED, describe
from ledger.application import SlotLedger
from ledger.application.ledger import index_row
from ledger.application.ports import SlotRow
from ledger.bootstrap import memory_env
from ledger.domain import Slot

EXTRA: dict[type[Any], dict[str, str]] = {
    Slot.SlotDeploying: {"deployment_uuid": "deployment-1"},
    Slot.SlotHeartbeatRefused: {"reason": "not the holder"},
    Slot.SlotDrained: {"reason": "maintenance", "scope": "slot"},
    Slot.SlotUndrained: {"reason": "done"},
}


def _states() -> dict[str, Slot]:
    """A slot in each status, and releasing."""
    ledger = SlotLedger(memory_env(), max_pool_size=1)
    slot = ledger.provision("meet").slot
    at, who = slot.status_since, {"actor": "api", "correlation_id": "c-1"}
    states = {"idle": copy.deepcopy(slot)}
    slot.acquire("bot-1", at=at, **who)
    states["deploying"] = copy.deepcopy(slot)
    slot.mark_started(at=at, **who)
    states["busy"] = copy.deepcopy(slot)
    slot.begin_release("bot-1", at=at, **who)
    states["releasing"] = copy.deepcopy(slot)
    failed = copy.deepcopy(states["busy"])
    failed.fail("container exited", at=at, **who)
    states["error"] = failed
    return states


def _description(slot: Slot) -> str:
    row = index_row(slot)
    assert isinstance(row, SlotRow)
    return describe(row, slot.last_error)


@pytest.mark.parametrize("event_class", UNDESCRIBED, ids=lambda c: c.__name__)
def test_an_undescribed_event_leaves_every_description_as_it_was(event_class: type[Any]) -> None:
    for status, slot in _states().items():
        before = _description(slot)
        after = copy.deepcopy(slot)
        after.trigger_event(
            event_class,
            actor="api",
            correlation_id="c-2",
            bot_id=slot.bot_id,
            **EXTRA[event_class],
        )
        assert _description(after) == before, f"{event_class.__name__} on a {status} slot"
