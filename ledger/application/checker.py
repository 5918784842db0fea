"""The always-on invariant checker: the checks of ``slotledger check``, on every new event.

The policy worker's leader runs it as one of its duties (:class:`~ledger.application.
worker.Duty`), on every tick: in ``serve`` on SQLite (which runs the worker), in the
``slotledger worker`` that leads on PostgreSQL; so one process checks a pool at a time,
like the policies, and the policies' decisions of a tick are in the log when it looks.
A run:

1. records what the last run found but could not record (the store was down);
2. feeds the domain's :class:`~ledger.domain.invariants.Checker` the events after its
   position, for at most ``budget_s`` (a long catch-up never holds the policies up for
   long), and once it has caught up with the log, the clock's time, so a slot deploying
   past its timeout or a starving queue shows in a quiet log too;
3. records each finding on the pool's :class:`~ledger.domain.violations.Violations`:
   a violation as one ``InvariantViolated`` with its evidence, once per key, and its
   ``InvariantResolved`` when its state ended;
4. every ``checkpoint_events`` positions, writes a checkpoint.

Position, restart and cost. The checker's state (each slot's status and holder, the
waiting entries, the pools' maxima, what is open) is the fold of the whole log, so
rebuilding it by reading the log again costs the log's length; a log of millions of
events would keep a restarted worker's checks minutes behind. So the state itself is kept:
a :class:`~ledger.domain.violations.CheckerCheckpoint` (the state as JSON, at a position)
beside the snapshots, never in the log. A restart loads the newest checkpoint and feeds
what follows it: at most ``checkpoint_events`` events plus those written since, however
long the log. A checkpoint is written only once everything found up to its position is
recorded, so whatever a restart reads again it finds again, under the same keys, and the
aggregate refuses a key it has (no duplicate, also when two leaders overlap). Without a
checkpoint (the first run, or one lost: it is a cache) the log is read from the start
once. Old checkpoints stay (the library has no delete): one row of the state's size per
``checkpoint_events`` events.

An event the checker cannot read or take (an unknown topic, a bug) is recorded as an
``unchecked_event`` violation and passed; an outage is retried at the next run, and more
than ``MAX_UNCHECKED_IN_A_ROW`` such events in a row stop the checker where it is
(loudly: its loop fails) rather than record the whole log as unchecked.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from contextlib import suppress
from dataclasses import dataclass
from datetime import datetime
from uuid import NAMESPACE_URL, uuid5

from eventsourcing.application import AggregateNotFoundError
from eventsourcing.persistence import IntegrityError, Notification

from ledger.application.commands import Context
from ledger.application.ledger import SlotLedger
from ledger.application.unit_of_work import Attempt, Change
from ledger.domain.invariants import Checker, Finding, Violation
from ledger.domain.violations import (
    CheckerCheckpoint,
    OpenViolation,
    Violations,
    checkpoint_id,
    violations_id,
)
from ledger.errors import is_outage
from ledger.loops import describe_error

__all__ = ["CheckerConfig", "InvariantChecker", "ViolationBoard"]

log = logging.getLogger("ledger.invariants")

_FINDINGS = uuid5(NAMESPACE_URL, "slotledger:invariant-finding")


@dataclass(frozen=True)
class CheckerConfig:
    pool_name: str
    queue_wait_s: float
    """How long a queue may wait while a slot it could take stands idle."""
    deploying_timeout_s: float
    """The stale-deploying policy's timeout..."""
    deploying_grace_s: float
    """...and how late its decision may come (a policy tick or two)."""
    checkpoint_events: int = 10_000
    batch: int = 1000
    budget_s: float = 1.0
    """Longest a run goes on catching up before it hands the tick back."""


class InvariantChecker:
    """The checker as the worker leader's duty: :meth:`run` once per tick."""

    NAME = "invariant-checker"
    ACTOR = "policy:invariants"
    MAX_UNCHECKED_IN_A_ROW = 5

    def __init__(
        self,
        ledger: SlotLedger,
        config: CheckerConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.config = config
        self._monotonic = monotonic
        self._checker: Checker | None = None
        self._pending: list[Finding] = []
        self._checkpointed = 0
        self._unchecked_in_a_row = 0

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def interval_s(self) -> float:
        return 0.0  # every tick of the worker

    @property
    def position(self) -> int:
        """How far the log has been checked (0 before the first run)."""
        return 0 if self._checker is None else self._checker.position

    def run(self) -> int:
        """One run (module docstring); how many events it checked."""
        checker = self._checker if self._checker is not None else self._start()
        self._flush()
        deadline = self._monotonic() + self.config.budget_s
        checked = 0
        while True:
            notifications = self.ledger.recorder.select_notifications(
                checker.position, self.config.batch, inclusive_of_start=False
            )
            for notification in notifications:
                self._feed(checker, notification)
            checked += len(notifications)
            self._found(checker)
            if len(notifications) < self.config.batch:
                checker.tick(self.ledger.clock())
                self._found(checker)
                break
            if self._monotonic() >= deadline:
                break
        self._checkpoint(checker)
        return checked

    # --- reading -----------------------------------------------------------------------

    def _start(self) -> Checker:
        """The checker at its newest checkpoint, or at the log's start."""
        config = self.config
        checker = Checker(
            queue_grace_s=config.queue_wait_s,
            deploying_timeout_s=config.deploying_timeout_s,
            deploying_grace_s=config.deploying_grace_s,
            pool=config.pool_name,
        )
        snapshots = self.ledger.snapshots
        if snapshots is not None:
            newest = list(snapshots.get(checkpoint_id(config.pool_name), desc=True, limit=1))
            kept = newest[0] if newest else None
            if isinstance(kept, CheckerCheckpoint) and checker.restore(kept.state):
                self._checkpointed = checker.position
        log.info(
            "invariant checker of pool %s starts after position %d",
            config.pool_name,
            checker.position,
        )
        self._checker = checker
        return checker

    def _feed(self, checker: Checker, notification: Notification) -> None:
        try:
            checker.feed(notification.id, self.ledger.mapper.to_domain_event(notification))
        except Exception as e:
            if is_outage(e) or self._unchecked_in_a_row >= self.MAX_UNCHECKED_IN_A_ROW:
                raise
            self._unchecked_in_a_row += 1
            checker.unchecked(
                notification.id, self.ledger.clock(), notification.topic, describe_error(e)
            )
            return
        self._unchecked_in_a_row = 0

    # --- recording ---------------------------------------------------------------------

    def _found(self, checker: Checker) -> None:
        self._pending += checker.drain()
        self._flush()

    def _flush(self) -> None:
        """Record the pending findings in one transaction (all or none: on a failure they
        stay pending for the next run)."""
        findings = self._pending
        if not findings:
            return
        ctx = Context(self.ACTOR, uuid5(_FINDINGS, findings[0].key).hex, self.ledger.clock())

        def decide(_: Attempt) -> Change[list[Finding]]:
            violations = self._violations(ctx)
            at = max(ctx.at, violations.modified_on)
            done = [f for f in findings if self._record(violations, f, ctx.actor, at)]
            return Change(done, [violations] if done else [])

        done = self.ledger.uow.run(f"invariant findings of {self.config.pool_name}", decide)
        self._pending = []
        for finding in done.answer:
            if isinstance(finding, Violation):
                log.warning(
                    "invariant violated in pool %s: %s at position %d: %s",
                    self.config.pool_name,
                    finding.kind,
                    finding.position,
                    finding.detail,
                )
            else:
                log.info("invariant violation %s resolved: %s", finding.key, finding.detail)

    @staticmethod
    def _record(violations: Violations, finding: Finding, actor: str, at: datetime) -> bool:
        """Each finding's events carry a correlation id derived from its key."""
        correlation_id = uuid5(_FINDINGS, finding.key).hex
        if isinstance(finding, Violation):
            return violations.record(finding, at=at, actor=actor, correlation_id=correlation_id)
        return violations.resolve(finding, at=at, actor=actor, correlation_id=correlation_id)

    def _violations(self, ctx: Context) -> Violations:
        try:
            violations: Violations = self.ledger.repository.get(
                violations_id(self.config.pool_name)
            )
        except AggregateNotFoundError:
            return Violations.start(
                self.config.pool_name, at=ctx.at, actor=ctx.actor, correlation_id=ctx.correlation_id
            )
        return violations

    def _checkpoint(self, checker: Checker) -> None:
        """Keep the state once ``checkpoint_events`` positions passed since the last
        checkpoint, and only with nothing found left unrecorded."""
        snapshots = self.ledger.snapshots
        if (
            snapshots is None
            or self._pending
            or checker.position - self._checkpointed < self.config.checkpoint_events
        ):
            return
        checkpoint = CheckerCheckpoint.of(
            self.config.pool_name, checker.position, checker.dump(), at=self.ledger.clock()
        )
        with suppress(IntegrityError):  # another leader kept the state at this position
            snapshots.put([checkpoint])
        self._checkpointed = checker.position


class ViolationBoard:
    """A pool's recorded violations as ``/readyz``, the metrics and the dashboard show
    them, read from the log in any process: the aggregate is kept in memory and brought
    up to date with its new events at each read, one indexed query."""

    def __init__(self, ledger: SlotLedger, pool_name: str) -> None:
        self.ledger = ledger
        self.pool_name = pool_name
        self._violations: Violations | None = None
        self._lock = threading.Lock()

    def _read(self) -> Violations | None:
        current = self._violations
        after = None if current is None else current.version
        for event in self.ledger.events.get(violations_id(self.pool_name), gt=after):
            assert isinstance(event, Violations.ViolationsEvent)
            current = event.mutate(current)
        self._violations = current
        return current

    def open(self) -> list[OpenViolation]:
        """The open violations, oldest first."""
        with self._lock:
            current = self._read()
            shown = [] if current is None else list(current.open.values())
        return sorted(shown, key=lambda v: v.position)

    def totals(self) -> dict[str, int]:
        """Violations ever recorded, by kind."""
        with self._lock:
            current = self._read()
            return {} if current is None else dict(current.totals)
