"""Fixtures for the policy tests: the in-memory ledger on a fake clock."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from ledger.application import SlotLedger
from ledger.application.policies import PolicyEngine
from ledger.bootstrap import memory_env
from tests.contracts.ledger import FakeClock
from tests.unit.policies.support import RecordingRuntime, make_config


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


@pytest.fixture
def ledger(clock: FakeClock) -> Iterator[SlotLedger]:
    ledger = SlotLedger(memory_env(), clock=clock)
    yield ledger
    ledger.close()


@pytest.fixture
def runtime() -> RecordingRuntime:
    return RecordingRuntime()


@pytest.fixture
def engine(ledger: SlotLedger, runtime: RecordingRuntime) -> PolicyEngine:
    return PolicyEngine(ledger, runtime, make_config())
