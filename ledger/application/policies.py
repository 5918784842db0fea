"""Policies: the time-driven rules of the slot lifecycle (issue 5).

Four rules share one shape. ``decide`` only reads: the inline index names candidates and
the aggregate has the final word. ``apply`` loads the aggregate again, decides again at the
decision's time, and saves through the ledger's unit of work; when the fresh decision
differs (the slot started, another worker acted), the decision is dropped and the next tick
decides from the new state. A lost race means: re-read and decide again.

Decisions are a function of the history and the clock only. Their events carry the
decision time and a correlation id derived from the decision, so the same history with the
same clock gives the same events, and a decision taken twice would show as a duplicate id.
A dry run returns the decisions without applying them; it shows one step ahead, so a stale
deploying slot shows its failure, and its recovery only on a later tick.
"""

from __future__ import annotations

import logging
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, replace
from datetime import datetime, timedelta
from typing import Any, ClassVar, Generic, Literal, Protocol, TypeVar
from uuid import NAMESPACE_URL, UUID, uuid5

from eventsourcing.domain import Aggregate

from ledger.application import Clock, Context, SlotLedger
from ledger.application.ledger import CAPACITY_ACTOR
from ledger.application.unit_of_work import Attempt, Change
from ledger.domain import QueueEntry, QueueStatus, Slot, SlotStatus
from ledger.domain.slot import OCCUPIED
from ledger.errors import SlotLedgerError

__all__ = [
    "Decision",
    "ErrorRecoveryRule",
    "PolicyConfig",
    "PolicyEngine",
    "QueueExpiryRule",
    "Rule",
    "SlotRuntime",
    "StaleDeployingRule",
    "StaleReleasingRule",
]

log = logging.getLogger("ledger.policies")

_DECISIONS = uuid5(NAMESPACE_URL, "slotledger:policy-decision")


class SlotRuntime(Protocol):
    """The container side of a slot. Both calls must be idempotent (a stopped or deleted
    application is fine) and raise a :class:`~ledger.errors.SlotLedgerError` on failure.
    ``stop`` returns once the container is gone, so a recovered slot is idle with nothing
    running on it."""

    def stop(self, coolify_uuid: str) -> None: ...

    def delete(self, coolify_uuid: str) -> None: ...


@dataclass(frozen=True)
class PolicyConfig:
    """The policies' settings as plain values (``ledger.bootstrap.policy_config`` reads
    them from the settings), so the application never reads the configuration."""

    pool_name: str
    deploying_timeout_s: float
    recovery_interval_s: float
    recovery_max_attempts: int
    retire_mode: Literal["delete", "quarantine"]
    policy_tick_s: float
    releasing_timeout_s: float = 360.0
    """How long a slot may stay releasing: past it, the process that released it
    stopped before the container was gone (see :class:`StaleReleasingRule`)."""


@dataclass(frozen=True)
class Decision:
    """One thing a rule does (or, in a dry run, would do) to one slot or queue entry."""

    rule: str
    action: str
    target_id: UUID
    target: str
    """The slot's name, or the bot id of a queue entry: what a human looks for."""
    event: str
    reason: str
    since: datetime
    """When the judged state began: deploying or error since, or queued at."""
    at: datetime
    """The decision time; the written event carries it."""
    version: int
    """The aggregate version the decision was made on."""

    @property
    def correlation_id(self) -> str:
        return uuid5(_DECISIONS, f"{self.rule}:{self.target_id}:{self.version}").hex

    def as_dict(self) -> dict[str, str | int]:
        return {
            "rule": self.rule,
            "action": self.action,
            "target_id": str(self.target_id),
            "target": self.target,
            "event": self.event,
            "reason": self.reason,
            "since": self.since.isoformat(),
            "at": self.at.isoformat(),
            "version": self.version,
            "correlation_id": self.correlation_id,
        }

    def __str__(self) -> str:
        return f"{self.rule}: {self.action} {self.target} -> {self.event} ({self.reason})"


A = TypeVar("A", bound=Aggregate)


class Rule(ABC, Generic[A]):
    """A rule over one kind of aggregate: candidates, a pure judgement, and the writes."""

    name: ClassVar[str]

    @property
    def actor(self) -> str:
        return f"policy:{self.name}"

    def decide(self, ledger: SlotLedger, now: datetime) -> list[Decision]:
        decisions = (
            self.judge(ledger, self.load(ledger, i), now) for i in self.candidates(ledger, now)
        )
        return [d for d in decisions if d is not None]

    def apply(self, ledger: SlotLedger, decision: Decision) -> Decision | None:
        """Carry a decision out; returns it as carried out (a side effect may change the
        event), or ``None`` when the aggregate changed so that it no longer holds. The
        decision is its own request: its actor is the rule, its correlation id the
        decision's, its time the decision's."""
        ctx = Context(self.actor, decision.correlation_id, decision.at)
        carried_out: list[Decision] = []  # side effects run once, whatever the races

        def decide(_: Attempt) -> Change[Decision | None]:
            aggregate = self.load(ledger, decision.target_id)
            fresh = self.judge(ledger, aggregate, decision.at)
            if fresh is None or replace(fresh, version=decision.version) != decision:
                return Change(None)
            if not carried_out:
                carried_out.append(self.carry_out(aggregate, decision))
            done = carried_out[0]
            # A write that won a race keeps its order: never stamp an event before it.
            stamped = replace(ctx, at=max(ctx.at, aggregate.modified_on))
            return Change(done, self.write(ledger, aggregate, done, stamped))

        return ledger.uow.run(f"{decision.rule} on {decision.target}", decide).answer

    @abstractmethod
    def candidates(self, ledger: SlotLedger, now: datetime) -> list[UUID]:
        """Ids worth judging, from the inline index (cheap, may be stale)."""

    @abstractmethod
    def load(self, ledger: SlotLedger, target_id: UUID) -> A: ...

    @abstractmethod
    def judge(self, ledger: SlotLedger, aggregate: A, at: datetime) -> Decision | None:
        """The decision for this aggregate at ``at``, reading only."""

    def carry_out(self, aggregate: A, decision: Decision) -> Decision:
        """Side effects outside the ledger, run once per decision before its event."""
        return decision

    @abstractmethod
    def write(
        self, ledger: SlotLedger, aggregate: A, decision: Decision, ctx: Context
    ) -> Sequence[Aggregate]:
        """Trigger the decision's event under ``ctx``; returns the aggregates to save
        together."""


class SlotRule(Rule[Slot], ABC):
    def load(self, ledger: SlotLedger, target_id: UUID) -> Slot:
        return ledger.get_slot(target_id)

    def decision(self, slot: Slot, action: str, event: str, reason: str, at: datetime) -> Decision:
        return Decision(
            rule=self.name,
            action=action,
            target_id=slot.id,
            target=slot.name,
            event=event,
            reason=reason,
            since=slot.status_since,
            at=at,
            version=slot.version,
        )


class StaleDeployingRule(SlotRule):
    """A slot deploying longer than the timeout failed to start (the seed's edge cases 1
    and 4). A slow deploy is saved by its bot's heartbeat, which starts the slot."""

    name = "stale-deploying"
    REASON: ClassVar[str] = "deploying timeout"
    REASON_CODE: ClassVar[str] = "deploying_timeout"

    def __init__(self, timeout_s: float) -> None:
        self.timeout = timedelta(seconds=timeout_s)

    def candidates(self, ledger: SlotLedger, now: datetime) -> list[UUID]:
        return [
            r.slot_id
            for r in ledger.slots()
            if r.status is SlotStatus.DEPLOYING and now - r.status_since > self.timeout
        ]

    def judge(self, ledger: SlotLedger, aggregate: Slot, at: datetime) -> Decision | None:
        slot = aggregate
        if slot.retired or slot.status is not SlotStatus.DEPLOYING or slot.releasing:
            return None  # a releasing slot has its own rule and its own clock
        if at - slot.status_since <= self.timeout:
            return None
        return self.decision(slot, "fail", "SlotFailed", self.REASON, at)

    def write(
        self, ledger: SlotLedger, aggregate: Slot, decision: Decision, ctx: Context
    ) -> Sequence[Aggregate]:
        aggregate.fail(
            decision.reason,
            reason_code=self.REASON_CODE,
            at=ctx.at,
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
        )
        return [aggregate]


class StaleReleasingRule(SlotRule):
    """A slot releasing longer than the timeout is failed, so error recovery stops its
    container: the process that released it stopped between the two steps of the
    release (a live one fails or completes its own release within its stop timeout,
    which the default timeout doubles)."""

    name = "stale-releasing"
    REASON_CODE: ClassVar[str] = "releasing_timeout"

    def __init__(self, timeout_s: float) -> None:
        self.timeout = timedelta(seconds=timeout_s)

    def candidates(self, ledger: SlotLedger, now: datetime) -> list[UUID]:
        return [
            r.slot_id
            for r in ledger.slots()
            if r.bot_id is None and r.status in OCCUPIED and now - r.status_since > self.timeout
        ]

    def judge(self, ledger: SlotLedger, aggregate: Slot, at: datetime) -> Decision | None:
        slot = aggregate
        if slot.retired or not slot.releasing:
            return None
        since = _releasing_since(ledger, slot)
        if at - since <= self.timeout:
            return None
        waited = (at - since).total_seconds()
        reason = f"release not finished after {waited:.0f}s: its container may still run"
        return replace(self.decision(slot, "fail", "SlotFailed", reason, at), since=since)

    def write(
        self, ledger: SlotLedger, aggregate: Slot, decision: Decision, ctx: Context
    ) -> Sequence[Aggregate]:
        aggregate.fail_release(
            decision.reason,
            reason_code=self.REASON_CODE,
            at=ctx.at,
            actor=ctx.actor,
            correlation_id=ctx.correlation_id,
        )
        return [aggregate]


def _releasing_since(ledger: SlotLedger, slot: Slot) -> datetime:
    """When the releasing slot's lease ended: its latest ``SlotReleasing``, read from
    the newest events back (the status did not change, so ``status_since`` is older)."""
    for event in ledger.events.get(slot.id, lte=slot.version, desc=True):
        if isinstance(event, Slot.SlotReleasing):
            return event.timestamp
    return slot.status_since


class ErrorRecoveryRule(SlotRule):
    """An error slot is stopped and made idle again; after ``max_attempts`` failed
    attempts it is retired so the pool makes room for a fresh slot.

    Attempts are counted from the slot's events (``SlotRecoveryFailed``), never shared
    with heartbeats. A slot whose last attempt failed less than an interval ago waits, so a
    new leader that runs recovery at once does not retry early. A slot without a Coolify
    application (creation failed mid-deploy) has nothing to stop and goes back to idle:
    its next deploy creates the application. ``retire_mode`` ``delete`` deletes the
    application of a retired slot; ``quarantine`` keeps it as evidence and says so.
    """

    name = "error-recovery"

    def __init__(
        self,
        runtime: SlotRuntime,
        *,
        interval_s: float,
        max_attempts: int,
        retire_mode: Literal["delete", "quarantine"],
    ) -> None:
        self.runtime = runtime
        self.interval = timedelta(seconds=interval_s)
        self.max_attempts = max_attempts
        self.retire_mode = retire_mode

    def candidates(self, ledger: SlotLedger, now: datetime) -> list[UUID]:
        return [r.slot_id for r in ledger.slots() if r.status is SlotStatus.ERROR]

    def judge(self, ledger: SlotLedger, aggregate: Slot, at: datetime) -> Decision | None:
        slot = aggregate
        if slot.retired or slot.status is not SlotStatus.ERROR:
            return None
        attempts = slot.recovery_attempts
        if attempts >= self.max_attempts:
            return self.decision(slot, "retire", "SlotRetired", self._retire_plan(slot), at)
        last_failed = _last_failed_attempt(ledger, slot)
        if last_failed is not None and at - last_failed < self.interval:
            return None
        app = slot.coolify_uuid
        step = f"stop application {app}" if app else "no application to stop"
        reason = f"{step}, then idle (attempt {attempts + 1} of {self.max_attempts})"
        return self.decision(slot, "recover", "SlotRecovered", reason, at)

    def carry_out(self, aggregate: Slot, decision: Decision) -> Decision:
        app = aggregate.coolify_uuid
        if app is None:
            return decision
        if decision.action == "recover":
            try:
                self.runtime.stop(app)
            except SlotLedgerError as e:
                failed = f"stopping application {app} failed: {e.detail}"
                return replace(decision, event="SlotRecoveryFailed", reason=failed)
            return decision
        if self.retire_mode == "quarantine":
            return decision
        try:
            self.runtime.delete(app)
        except SlotLedgerError as e:
            kept = f"deleting application {app} failed ({e.detail}); application kept"
            return replace(decision, reason=f"{self._attempts(aggregate)}; {kept}")
        return replace(decision, reason=f"{self._attempts(aggregate)}; application {app} deleted")

    def write(
        self, ledger: SlotLedger, aggregate: Slot, decision: Decision, ctx: Context
    ) -> Sequence[Aggregate]:
        slot, at, actor, cid = aggregate, ctx.at, ctx.actor, ctx.correlation_id
        if decision.event == "SlotRecoveryFailed":
            slot.recovery_failed(decision.reason, at=at, actor=actor, correlation_id=cid)
        elif decision.action == "recover":
            slot.recover(at=at, actor=actor, correlation_id=cid)
        else:
            slot.retire(decision.reason, at=at, actor=actor, correlation_id=cid)
            pool = ledger.get_pool()
            if pool is not None:  # a slot always has its pool; a foreign store may not
                pool.remove(slot.id, at=at, actor=actor, correlation_id=cid)
                return [slot, pool]
        return [slot]

    def _attempts(self, slot: Slot) -> str:
        return f"retired after {slot.recovery_attempts} failed recovery attempts"

    def _retire_plan(self, slot: Slot) -> str:
        app = slot.coolify_uuid
        if app is None:
            return f"{self._attempts(slot)}; no application to delete"
        if self.retire_mode == "quarantine":
            return f"{self._attempts(slot)}; application {app} kept for inspection (quarantine)"
        return f"{self._attempts(slot)}; delete application {app}"


def _last_failed_attempt(ledger: SlotLedger, slot: Slot) -> datetime | None:
    """When the current error episode's last recovery attempt failed, from the events
    (the aggregate keeps only the count)."""
    if slot.recovery_attempts == 0:
        return None
    for event in ledger.events.get(slot.id, lte=slot.version, desc=True):
        if isinstance(event, Slot.SlotRecoveryFailed):
            return event.timestamp
        transition = event.transition() if isinstance(event, Slot.SlotEvent) else None
        if transition is not None and transition.target is not None:
            return None
    return None


class QueueExpiryRule(Rule[QueueEntry]):
    """A waiting entry past its timeout expires with a reason its requester can read."""

    name = "queue-expiry"

    def candidates(self, ledger: SlotLedger, now: datetime) -> list[UUID]:
        return [r.entry_id for r in ledger.waiting() if r.timeout_at <= now]

    def load(self, ledger: SlotLedger, target_id: UUID) -> QueueEntry:
        entry: QueueEntry = ledger.repository.get(target_id)
        return entry

    def judge(self, ledger: SlotLedger, aggregate: QueueEntry, at: datetime) -> Decision | None:
        entry = aggregate
        if entry.status is not QueueStatus.WAITING or entry.timeout_at > at:
            return None
        waited = (at - entry.queued_at).total_seconds()
        return Decision(
            rule=self.name,
            action="expire",
            target_id=entry.id,
            target=entry.bot_id,
            event="QueueEntryExpired",
            reason=f"no slot became available within {waited:.0f}s",
            since=entry.queued_at,
            at=at,
            version=entry.version,
        )

    def write(
        self, ledger: SlotLedger, aggregate: QueueEntry, decision: Decision, ctx: Context
    ) -> Sequence[Aggregate]:
        aggregate.expire(
            decision.reason, at=ctx.at, actor=ctx.actor, correlation_id=ctx.correlation_id
        )
        return [aggregate]


class PolicyEngine:
    """Runs every rule once per tick, error recovery at most once per recovery interval.

    Stale deploying and stale releasing run before recovery, so a slot failed by either
    timeout is recovered in the same tick when recovery is due (the seed's edge case 4).
    The interval is kept in memory; after a failover the events keep a slot from being
    retried early.
    """

    def __init__(
        self,
        ledger: SlotLedger,
        runtime: SlotRuntime,
        config: PolicyConfig,
        clock: Clock | None = None,
    ) -> None:
        self.ledger = ledger
        self.clock: Clock = clock or ledger.clock
        self.stale = StaleDeployingRule(config.deploying_timeout_s)
        self.releasing = StaleReleasingRule(config.releasing_timeout_s)
        self.recovery = ErrorRecoveryRule(
            runtime,
            interval_s=config.recovery_interval_s,
            max_attempts=config.recovery_max_attempts,
            retire_mode=config.retire_mode,
        )
        self.expiry = QueueExpiryRule()
        self.last_recovery_at: datetime | None = None

    def recovery_due(self, now: datetime) -> bool:
        last = self.last_recovery_at
        return last is None or now - last >= self.recovery.interval

    def tick(self, *, dry_run: bool = False) -> list[Decision]:
        """Decide and apply; returns the decisions carried out (planned, in a dry run)."""
        now = self.clock()
        recover = self.recovery_due(now)
        rules: list[Rule[Any]] = [
            self.stale,
            self.releasing,
            *([self.recovery] if recover else []),
            self.expiry,
        ]
        taken = []
        for rule in rules:
            for decision in rule.decide(self.ledger, now):
                done = self._dry(decision) if dry_run else self._apply(rule, decision)
                if done is not None:
                    taken.append(done)
        if recover and not dry_run:
            self.last_recovery_at = now
        return taken + self._fit(now, dry_run=dry_run)

    def _fit(self, now: datetime, *, dry_run: bool) -> list[Decision]:
        """The capacity drains the ledger keeps (``SlotLedger.fit_capacity``): here for
        the slots that came to rest since the last change, which may now be undrained."""
        ctx = Context(CAPACITY_ACTOR, uuid5(_DECISIONS, f"capacity:{now}").hex, now)
        changes = self.ledger.fit_capacity(dry_run=dry_run, ctx=ctx)
        decisions = [
            Decision(
                rule="capacity",
                action="undrain" if change.undrain else "drain",
                target_id=row.slot_id,
                target=row.name,
                event="SlotUndrained" if change.undrain else "SlotDrained",
                reason=change.reason,
                since=row.status_since,
                at=now,
                version=row.version,
            )
            for row, change in changes
        ]
        for decision in decisions:
            log.info("dry run, would %s" if dry_run else "%s", decision)
        return decisions

    def _dry(self, decision: Decision) -> Decision:
        log.info("dry run, would %s", decision)
        return decision

    def _apply(self, rule: Rule[Any], decision: Decision) -> Decision | None:
        """Apply one decision; a refusal is logged and the others still run."""
        try:
            done = rule.apply(self.ledger, decision)
        except SlotLedgerError as e:
            log.warning(
                "%s: %s %s not applied: %s", rule.name, decision.action, decision.target, e.detail
            )
            return None
        if done is None:
            log.info(
                "%s: %s %s left alone: it changed since decided",
                rule.name,
                decision.action,
                decision.target,
            )
        else:
            log.info("%s", done)
        return done
