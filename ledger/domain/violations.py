"""The :class:`Violations` aggregate: the invariant violations recorded for one pool.

One per pool, its id derived from the pool's name. The always-on checker
(:mod:`ledger.application.checker`) records each violation it finds
(:class:`~ledger.domain.invariants.Violation`) as one ``InvariantViolated`` event with
its evidence, and ``InvariantResolved`` once its state ended. The aggregate remembers the
key of every violation it recorded, so a checker that reads the log again (a restarted
worker, a new leader) records nothing twice; what is open is what ``/readyz``, the
metrics and the dashboard show.

:class:`CheckerCheckpoint` is no event of the log: it is the checker's state at a log
position, kept beside the snapshots (a cache, like them), so a restarted checker goes on
from there instead of reading the whole log again.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate, DomainEvent

from ledger.domain.invariants import KINDS, Resolution, Violation
from ledger.domain.text import (
    BOT_ID_RULE,
    POOL_NAME_RULE,
    REASON_RULE,
    check_origin,
    check_text,
    fit_text,
)
from ledger.errors import BadInput

__all__ = ["CheckerCheckpoint", "OpenViolation", "Violations", "checkpoint_id", "violations_id"]


def violations_id(pool_name: str) -> UUID:
    """A pool's violations are found by the pool's name, so their id is derived from it."""
    return uuid5(NAMESPACE_URL, f"slotledger:invariants:{pool_name}")


def checkpoint_id(pool_name: str) -> UUID:
    """Where the checker of a pool keeps its checkpoints."""
    return uuid5(NAMESPACE_URL, f"slotledger:invariant-checkpoint:{pool_name}")


@dataclass(frozen=True)
class OpenViolation:
    """A recorded violation whose state has not ended, as the surfaces show it."""

    kind: str
    key: str
    position: int
    positions: tuple[int, ...]
    slot_id: UUID | None
    bot_id: str | None
    detail: str
    observed_at: datetime
    recorded_at: datetime


class Violations(Aggregate):
    """The violations of one pool's invariants, each recorded once."""

    class ViolationsEvent(Aggregate.Event):
        actor: str
        correlation_id: str

    class ViolationsOpened(Aggregate.Created, ViolationsEvent):
        pool: str

    class InvariantViolated(ViolationsEvent):
        """``position`` is where it was seen, ``positions`` the evidence (where the
        violating state began, where it was seen); ``observed_at`` the log's time (or
        the clock's) then; ``detail`` says what is wrong, in words."""

        kind: str
        key: str
        position: int
        positions: list[int]
        slot_id: UUID | None
        bot_id: str | None
        detail: str
        observed_at: datetime

        def apply(self, aggregate: Any) -> None:
            violations: Violations = aggregate
            violations.recorded[self.key] = self.kind
            violations.totals[self.kind] = violations.totals.get(self.kind, 0) + 1
            violations.open[self.key] = OpenViolation(
                kind=self.kind,
                key=self.key,
                position=self.position,
                positions=tuple(self.positions),
                slot_id=self.slot_id,
                bot_id=self.bot_id,
                detail=self.detail,
                observed_at=self.observed_at,
                recorded_at=self.timestamp,
            )

    class InvariantResolved(ViolationsEvent):
        """The violation ``key``'s state ended at ``position``, as ``detail`` says."""

        kind: str
        key: str
        position: int
        detail: str

        def apply(self, aggregate: Any) -> None:
            aggregate.open.pop(self.key, None)

    def __init__(self, *, pool: str, actor: str, correlation_id: str) -> None:
        self.pool = pool
        self.recorded: dict[str, str] = {}
        """Every key ever recorded, with its kind."""
        self.open: dict[str, OpenViolation] = {}
        self.totals: dict[str, int] = {}
        """Violations recorded, by kind."""

    @classmethod
    def start(cls, pool: str, *, at: datetime, actor: str, correlation_id: str) -> Violations:
        check_text(pool, POOL_NAME_RULE, field="pool")
        check_origin(actor, correlation_id)
        return cls._create(
            cls.ViolationsOpened,
            id=violations_id(pool),
            timestamp=at,
            pool=pool,
            actor=actor,
            correlation_id=correlation_id,
        )

    def record(
        self, violation: Violation, *, at: datetime, actor: str, correlation_id: str
    ) -> bool:
        """Record a violation; False (nothing recorded) when its key was recorded before.
        Text from the log (a bot id, a detail quoting an event) is made fit, not refused:
        the evidence of a bad log must never be lost to its badness."""
        if violation.kind not in KINDS:
            raise BadInput(f"unknown invariant {violation.kind!r}", field="kind")
        check_origin(actor, correlation_id)
        if violation.key in self.recorded:
            return False
        bot = violation.bot_id
        self.trigger_event(
            self.InvariantViolated,
            timestamp=at,
            kind=violation.kind,
            key=violation.key,
            position=violation.position,
            positions=list(violation.positions),
            slot_id=violation.slot_id,
            bot_id=None if bot is None else fit_text(bot, BOT_ID_RULE.max_len),
            detail=fit_text(violation.detail, REASON_RULE.max_len),
            observed_at=violation.timestamp,
            actor=actor,
            correlation_id=correlation_id,
        )
        return True

    def resolve(
        self, resolution: Resolution, *, at: datetime, actor: str, correlation_id: str
    ) -> bool:
        """Close an open violation; False (nothing recorded) when it is not open."""
        check_origin(actor, correlation_id)
        if resolution.key not in self.open:
            return False
        self.trigger_event(
            self.InvariantResolved,
            timestamp=at,
            kind=resolution.kind,
            key=resolution.key,
            position=resolution.position,
            detail=fit_text(resolution.detail, REASON_RULE.max_len),
            actor=actor,
            correlation_id=correlation_id,
        )
        return True


class CheckerCheckpoint(DomainEvent):
    """The checker's state (:meth:`~ledger.domain.invariants.Checker.dump`) once it had
    checked the log up to ``originator_version``, the position: positions only grow, so
    a later checkpoint has a higher version and two leaders writing one at the same
    position conflict instead of mixing."""

    state: dict[str, Any]

    @classmethod
    def of(
        cls, pool_name: str, position: int, state: dict[str, Any], *, at: datetime
    ) -> CheckerCheckpoint:
        fields: dict[str, Any] = {
            "originator_id": checkpoint_id(pool_name),
            "originator_version": position,
            "timestamp": at,
            "state": state,
        }
        return cls(**fields)
