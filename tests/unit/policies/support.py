"""Test support for the policies: a recording runtime and history builders."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from ledger.application import SlotLedger
from ledger.application.policies import PolicyConfig
from ledger.bootstrap import policy_config
from ledger.domain.invariants import iter_log
from ledger.errors import SlotLedgerError
from ledger.settings import Settings


class RuntimeFailure(SlotLedgerError):
    code = "runtime_failure"
    http_status = 502


class RecordingRuntime:
    """Records every call; the operations named in ``failing`` raise like Coolify would."""

    def __init__(self, *failing: str) -> None:
        self.calls: list[tuple[str, str]] = []
        self.failing = set(failing)

    def stop(self, coolify_uuid: str) -> None:
        self._call("stop", coolify_uuid)

    def delete(self, coolify_uuid: str) -> None:
        self._call("delete", coolify_uuid)

    def _call(self, operation: str, coolify_uuid: str) -> None:
        self.calls.append((operation, coolify_uuid))
        if operation in self.failing:
            msg = f"Coolify POST /applications/{coolify_uuid}/{operation}: HTTP 500: boom"
            raise RuntimeFailure(msg)


def make_settings(**overrides: Any) -> Settings:
    """The issue's defaults, spelled out so the environment cannot change them."""
    values: dict[str, Any] = {
        "database_url": "sqlite:///:memory:",
        "deploying_timeout_s": 300,
        "recovery_interval_s": 300,
        "recovery_max_attempts": 3,
        "retire_mode": "delete",
    }
    return Settings(**(values | overrides))


def make_config(**overrides: Any) -> PolicyConfig:
    """The policies' config from :func:`make_settings`, as the bootstrap builds it."""
    return policy_config(make_settings(**overrides))


def deploying_slot(ledger: SlotLedger, bot_id: str, coolify_uuid: str | None = "app-1") -> UUID:
    """A slot acquired for ``bot_id`` whose container has not reported yet."""
    return ledger.provision("meet", coolify_uuid=coolify_uuid, acquire_for=bot_id).slot.id


def error_slot(ledger: SlotLedger, coolify_uuid: str | None = "app-1") -> UUID:
    slot_id = deploying_slot(ledger, "bot-err", coolify_uuid)
    ledger.fail(slot_id, "container failed to start", reason_code="start_failed")
    return slot_id


def slot_events(ledger: SlotLedger, slot_id: UUID) -> list[Any]:
    return [e for _, e in iter_log(ledger) if e.originator_id == slot_id]


def log_length(ledger: SlotLedger) -> int:
    return sum(1 for _ in iter_log(ledger))
