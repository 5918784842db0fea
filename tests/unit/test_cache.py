"""The versioned cache's copies: shared immutable values, nothing else shared."""

from __future__ import annotations

from ledger.application import SlotLedger
from ledger.application.cache import own_copy
from ledger.bootstrap import memory_env


def test_a_copy_and_its_original_never_change_each_other() -> None:
    ledger = SlotLedger(memory_env(), max_pool_size=1)
    ledger.provision("meet")
    ledger.acquire("holder")  # the queue needs a full pool
    entry = ledger.enqueue("waiting-bot", config={"token": "secret"})
    clone = own_copy(entry)
    assert clone == entry and clone is not entry
    assert vars(clone) == vars(entry)
    clone.config["token"] = "changed"
    clone._pending_events.append(object())  # type: ignore[arg-type]
    assert entry.config == {"token": "secret"}
    assert entry.pending_events == []
    slot = ledger.get_slot(ledger.slot_of_bot("holder").slot_id)
    copied = own_copy(slot)
    copied.release("holder", at=slot.status_since, actor="api", correlation_id="c-1")
    assert slot.status != copied.status and not slot.pending_events
