"""The :class:`Drift` aggregate: where Coolify and the ledger disagree, and what was decided.

One per pool, its id derived from the pool's name. The reconciler
(:mod:`ledger.application.reconcile`) compares Coolify's applications with the pool's
slots both ways and records each finding as one ``DriftDetected`` event, written before
anything is done about it, so nothing is deleted or quarantined silently:

- ``orphan``: an application named like the pool's slots that no slot knows (a crash
  between creating it and recording ``SlotAppCreated``); decided ``delete`` or
  ``quarantine``, per ``RETIRE_MODE``;
- ``vanished``: a slot's application that Coolify no longer has; decided ``recreate``:
  the deploy flow creates a new one on the slot's next use.

The aggregate remembers the findings it recorded, so one seen again (an orphan whose
deletion Coolify has not run yet, a vanished application whose slot was not used since)
is recorded once.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.domain.text import (
    COOLIFY_UUID_RULE,
    POOL_NAME_RULE,
    REASON_RULE,
    SLOT_NAME_RULE,
    check_origin,
    check_text,
)
from ledger.errors import BadInput

__all__ = ["Drift", "DriftDecision", "DriftKind", "drift_id"]


class DriftKind(StrEnum):
    ORPHAN = "orphan"
    VANISHED = "vanished"


class DriftDecision(StrEnum):
    DELETE = "delete"
    QUARANTINE = "quarantine"
    RECREATE = "recreate"


_DECISIONS = {
    DriftKind.ORPHAN: frozenset({DriftDecision.DELETE, DriftDecision.QUARANTINE}),
    DriftKind.VANISHED: frozenset({DriftDecision.RECREATE}),
}


def drift_id(pool_name: str) -> UUID:
    """A pool's drift record is found by the pool's name, so its id is derived from it."""
    return uuid5(NAMESPACE_URL, f"slotledger:drift:{pool_name}")


class Drift(Aggregate):
    """The drift findings of one pool, each recorded once."""

    class DriftEvent(Aggregate.Event):
        actor: str
        correlation_id: str

    class DriftOpened(Aggregate.Created, DriftEvent):
        pool: str

    class DriftDetected(DriftEvent):
        """``observed`` is what Coolify and the ledger showed; ``reason`` says what was
        decided and why, in words (it is the audit's reason column)."""

        kind: str
        decision: str
        app_uuid: str
        app_name: str | None
        slot_id: UUID | None
        slot_name: str | None
        observed: str
        reason: str

        def apply(self, aggregate: Any) -> None:
            aggregate.recorded[_key(self.kind, self.app_uuid)] = self.decision

    def __init__(self, *, pool: str, actor: str, correlation_id: str) -> None:
        self.pool = pool
        self.recorded: dict[str, str] = {}

    @classmethod
    def open(cls, pool: str, *, at: datetime, actor: str, correlation_id: str) -> Drift:
        check_text(pool, POOL_NAME_RULE, field="pool")
        check_origin(actor, correlation_id)
        return cls._create(
            cls.DriftOpened,
            id=drift_id(pool),
            timestamp=at,
            pool=pool,
            actor=actor,
            correlation_id=correlation_id,
        )

    def has_recorded(self, kind: DriftKind, app_uuid: str) -> bool:
        return _key(kind, app_uuid) in self.recorded

    def detect(
        self,
        kind: DriftKind,
        decision: DriftDecision,
        *,
        app_uuid: str,
        app_name: str | None,
        slot_id: UUID | None,
        slot_name: str | None,
        observed: str,
        reason: str,
        at: datetime,
        actor: str,
        correlation_id: str,
    ) -> bool:
        """Record a finding and its decision; False (nothing recorded) when this finding
        was recorded before."""
        if decision not in _DECISIONS[kind]:
            raise BadInput(f"a {kind} drift cannot be decided {decision!r}", field="decision")
        check_origin(actor, correlation_id)
        if self.has_recorded(kind, app_uuid):
            return False
        self.trigger_event(
            self.DriftDetected,
            timestamp=at,
            kind=kind.value,
            decision=decision.value,
            app_uuid=check_text(app_uuid, COOLIFY_UUID_RULE, field="app_uuid"),
            app_name=None if app_name is None else _name(app_name, "app_name"),
            slot_id=slot_id,
            slot_name=None if slot_name is None else _name(slot_name, "slot_name"),
            observed=check_text(observed, REASON_RULE, field="observed"),
            reason=check_text(reason, REASON_RULE, field="reason"),
            actor=actor,
            correlation_id=correlation_id,
        )
        return True


def _key(kind: str, app_uuid: str) -> str:
    return f"{kind}:{app_uuid}"


def _name(name: str, field: str) -> str:
    return check_text(name, SLOT_NAME_RULE, field=field)
