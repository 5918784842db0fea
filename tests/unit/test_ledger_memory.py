"""The ledger contract on the in-memory store."""

from __future__ import annotations

from typing import Any

import pytest

from ledger.application import SlotLedger
from ledger.bootstrap import memory_env
from tests.contracts.ledger import LedgerContract, MakeLedger


class TestMemoryLedger(LedgerContract):
    @pytest.fixture
    def make_ledger(self) -> MakeLedger:
        def make(**kwargs: Any) -> SlotLedger:
            return SlotLedger(memory_env(), **kwargs)

        return make
