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
