"""The policy worker: one leader per pool runs the policies, every other process waits.

Leadership is a PostgreSQL session-level advisory lock held on a dedicated connection
(:class:`ledger.adapters.postgres.PostgresLeaderElection`, the Marten/Emmett way): the
lock lives exactly as long as the session, so a leader that dies loses it when the
server closes its session, and a standby takes it on its next tick. The
lock saves work and side effects; correctness does not rest on it alone. A leader that
lost its session mid-tick may still write, but every write is checked against the
aggregate's version, so a decision is still taken once.

On the embedded SQLite store there is one process, which always leads.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from datetime import datetime
from typing import Protocol

from ledger.application import Clock, SlotLedger
from ledger.application.policies import Decision, PolicyConfig, PolicyEngine, SlotRuntime
from ledger.loops import Backoff, Health, LoopHealth, log_failure

__all__ = [
    "Duty",
    "LeaderElection",
    "LocalLeaderElection",
    "Worker",
]

log = logging.getLogger("ledger.worker")


class LeaderElection(ABC):
    """Decides which process runs the policies; asked once per tick."""

    @property
    @abstractmethod
    def is_leader(self) -> bool: ...

    @abstractmethod
    def try_lead(self) -> bool:
        """Check that leadership still holds, or take it when free; True when leading.
        Raises when the check itself fails, after giving leadership up."""

    @abstractmethod
    def release(self) -> None: ...


class LocalLeaderElection(LeaderElection):
    """The embedded mode: a single process, always the leader."""

    @property
    def is_leader(self) -> bool:
        return True

    def try_lead(self) -> bool:
        return True

    def release(self) -> None:
        pass


class Duty(Protocol):
    """A periodic task of the leader beside the policies (drift reconciliation)."""

    @property
    def name(self) -> str: ...

    @property
    def interval_s(self) -> float: ...

    def run(self) -> object: ...


class _Scheduled:
    """A duty, when it is next due, and its own health: its failures are its own, never
    the policy loop's, and are retried at its next turn."""

    def __init__(self, duty: Duty) -> None:
        self.duty = duty
        self.health = Health(duty.name)
        self.due_at = 0.0

    def run_if_due(self) -> None:
        now = time.monotonic()
        if now < self.due_at:
            return
        self.due_at = now + self.duty.interval_s
        try:
            self.duty.run()
        except Exception as e:
            if self.health.failed(e) == 1:
                log_failure(log, self.duty.name, e, f"next try in {self.duty.interval_s:.0f}s")
            return
        self.health.succeeded()


class Worker:
    """Standby until leader, then one policy tick every ``tick_s``, and each of
    ``duties`` when due (one health each: :meth:`loops`).

    Any error is logged and the loop goes on after the shared jittered backoff (at most
    ``MAX_BACKOFF_S``, so a worker ticks again within seconds of the store's return); a
    worker that stops ticking says so in its log and in :meth:`health`. A leader failing
    ``RESIGN_AFTER`` times in a row gives leadership up.
    """

    MAX_BACKOFF_S = 2.0
    RESIGN_AFTER = 3
    NAME = "policy-worker"

    def __init__(
        self,
        config: PolicyConfig,
        ledger: SlotLedger,
        runtime: SlotRuntime,
        election: LeaderElection,
        clock: Clock | None = None,
        tick_s: float | None = None,
        duties: Sequence[Duty] = (),
    ) -> None:
        self.engine = PolicyEngine(ledger, runtime, config, clock)
        self.election = election
        self.tick_s = tick_s if tick_s is not None else config.policy_tick_s
        self.pool_name = config.pool_name
        self.last_tick_at: datetime | None = None
        self.failures = 0
        self.backoff = Backoff(max_s=self.MAX_BACKOFF_S)
        self.health_record = Health(self.NAME)
        self._duties = [_Scheduled(duty) for duty in duties]

    @property
    def is_leader(self) -> bool:
        return self.election.is_leader

    def step(self) -> list[Decision]:
        """One turn of the loop: check leadership, and tick when leading."""
        was_leader = self.election.is_leader
        leading = self.election.try_lead()
        if leading != was_leader:
            state = "leader" if leading else "standby"
            log.info("worker pid %d is now %s for pool %s", os.getpid(), state, self.pool_name)
        if not leading:
            return []
        try:
            decisions = self.engine.tick()
            self.last_tick_at = self.engine.clock()
        finally:  # a failing policy must not stop the duties (the invariant checker)
            for duty in self._duties:
                duty.run_if_due()
        return decisions

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; leadership is given up on the way out."""
        try:
            while not stop.is_set():
                stop.wait(self._turn())
        finally:
            self.election.release()

    def health(self, *, alive: bool = True) -> LoopHealth:
        """How the loop does; ``alive`` says whether the thread running it still runs."""
        return self.health_record.snapshot(alive=alive)

    def loops(self, *, alive: bool = True) -> list[LoopHealth]:
        """The policy loop's health, then each duty's (``standby`` while not leading)."""
        duties = [duty.health.snapshot(alive=alive) for duty in self._duties]
        if alive and not self.election.is_leader:
            duties = [replace(health, state="standby") for health in duties]
        return [self.health(alive=alive), *duties]

    def _turn(self) -> float:
        """Run one step; returns how long to wait before the next. A leader that keeps
        failing resigns, so a healthy standby can take over."""
        try:
            self.step()
        except Exception as e:
            return self._failed(e)
        self.failures = 0
        self.backoff.reset()
        self.health_record.succeeded(standby=not self.election.is_leader)
        return self.tick_s

    def _failed(self, error: Exception) -> float:
        """Count, maybe resign, log; the pause before the next try (never a raise: the
        loop must outlive anything a step throws, a failing resignation included)."""
        self.failures += 1
        self.health_record.failed(error)
        if self.failures >= self.RESIGN_AFTER and self.election.is_leader:
            try:
                self.election.release()
            except Exception:
                log.exception("policy worker could not give leadership up")
        delay = min(self.backoff.next(), max(self.tick_s, self.backoff.min_s))
        role = "leader" if self.election.is_leader else "not leading"
        log_failure(
            log,
            f"policy worker ({role}, {self.failures} time(s) in a row)",
            error,
            f"next try in {delay:.1f}s",
        )
        return delay
