"""The ledger contract on the real stores: SQLite and PostgreSQL."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from ledger.application import SlotLedger
from ledger.bootstrap import build_ledger
from ledger.settings import load_settings
from tests.contracts.ledger import LedgerContract, MakeLedger


class TestStoreLedger(LedgerContract):
    @pytest.fixture
    def make_ledger(self, database_url: str) -> Iterator[MakeLedger]:
        made: list[SlotLedger] = []

        def make(*, clock: Any = None, **settings: Any) -> SlotLedger:
            ledger = build_ledger(
                load_settings(database_url=database_url, **settings),
                **({"clock": clock} if clock else {}),
            )
            made.append(ledger)
            return ledger

        yield make
        for ledger in made:
            ledger.close()


def _count_loads(ledger: SlotLedger, monkeypatch: pytest.MonkeyPatch) -> list[object]:
    """The aggregates ``ledger`` loads afresh (snapshot and events) from now on."""
    loads: list[object] = []
    real_get = ledger.repository.get

    def counted_get(*args: Any, **kwargs: Any) -> Any:
        loads.append(args)
        return real_get(*args, **kwargs)

    monkeypatch.setattr(ledger.repository, "get", counted_get)
    return loads


def test_a_cached_slot_another_process_moved_on_is_brought_forward_by_its_new_events(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Two ledgers on one store, as two processes: the one whose cached slot the other
    moved on reads only the events after its copy's version (no snapshot, no full
    load), and decides on exactly the stored slot."""
    settings = load_settings(database_url=database_url)
    here, there = build_ledger(settings), build_ledger(settings)
    try:
        slot_id = here.provision("meet").slot.id
        here.acquire("bot-here")
        here.release("bot-here")
        for i in range(3):
            there.acquire(f"bot-there-{i}")
            there.release(f"bot-there-{i}")
        stored = there.get_slot(slot_id)
        loads = _count_loads(here, monkeypatch)
        brought = here.current_slot(slot_id)
        assert brought == stored
        assert brought.version == stored.version
        assert loads == [], "the slot was loaded afresh instead of brought forward"
        outcome = here.acquire("bot-again")
        assert outcome.slot.id == slot_id
        assert outcome.slot.version == stored.version + 1
    finally:
        here.close()
        there.close()


def test_the_pool_another_process_changed_is_read_as_stored(
    database_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool has no index row: its cached copy is brought forward on every read, so a
    resize and a provision by another process are seen at once, without a full load."""
    here = build_ledger(load_settings(database_url=database_url, max_pool_size=3))
    there = build_ledger(load_settings(database_url=database_url, max_pool_size=3))
    try:
        here.provision("meet")
        cached = here.get_pool()
        assert cached is not None and (cached.size, cached.max_size) == (1, 3)
        there.resize_pool(5, "more bots")
        there.provision("meet")
        loads = _count_loads(here, monkeypatch)
        pool = here.get_pool()
        assert pool is not None and (pool.size, pool.max_size) == (2, 5)
        assert pool == there.get_pool()
        assert loads == [], "the pool was loaded afresh instead of brought forward"
    finally:
        here.close()
        there.close()
