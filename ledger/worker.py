"""The policy worker: one leader per pool runs the policies, every other process waits.

Leadership is a PostgreSQL session-level advisory lock held on a dedicated connection (the
Marten/Emmett way): the lock lives exactly as long as the session, so a leader that dies
loses it when the server closes its session, and a standby takes it on its next tick. The
lock saves work and side effects; correctness does not rest on it alone. A leader that
lost its session mid-tick may still write, but every write is checked against the
aggregate's version, so a decision is still taken once.

On the embedded SQLite store there is one process, which always leads.
"""

from __future__ import annotations

import contextlib
import hashlib
import logging
import os
import threading
from abc import ABC, abstractmethod
from datetime import datetime

import psycopg

from ledger.application import Clock, SlotLedger
from ledger.policies import Decision, PolicyEngine, SlotRuntime
from ledger.settings import PostgresStore, Settings

__all__ = [
    "LeaderElection",
    "LocalLeaderElection",
    "PostgresLeaderElection",
    "Worker",
    "advisory_key",
    "election_for",
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


def advisory_key(schema: str, pool_name: str) -> int:
    """A stable 64-bit lock key per ledger schema and pool: two ledgers sharing a database
    never block each other."""
    name = f"slotledger:policies:{schema}:{pool_name}".encode()
    return int.from_bytes(hashlib.blake2b(name, digest_size=8).digest(), "big", signed=True)


class PostgresLeaderElection(LeaderElection):
    """``pg_try_advisory_lock`` on a connection of its own, checked every tick.

    The session asks the server for short TCP keepalives, so the lock of a leader whose
    host vanished (no FIN) frees after about 11 s (``KEEPALIVE_S``: idle + interval x count)
    instead of the kernel's two hours.
    Connect directly, never through a transaction-pooling proxy: session locks need the
    session.
    """

    CONNECT_TIMEOUT_S = 5
    KEEPALIVE_S = (5, 2, 3)  # idle, interval, count

    def __init__(self, store: PostgresStore, pool_name: str) -> None:
        self.conninfo = store.conninfo()
        self.key = advisory_key(store.schema, pool_name)
        self._conn: psycopg.Connection[tuple[object, ...]] | None = None
        self._leader = False

    @property
    def is_leader(self) -> bool:
        return self._leader

    def try_lead(self) -> bool:
        try:
            conn = self._connection()
            if self._leader:
                conn.execute("SELECT 1")  # the session, and so the lock, is still there
            else:
                row = conn.execute("SELECT pg_try_advisory_lock(%s)", (self.key,)).fetchone()
                self._leader = bool(row and row[0])
        except psycopg.Error:
            self.release()
            raise
        return self._leader

    def release(self) -> None:
        """Unlock, so a standby can take over at once, then close the session (which
        frees the lock anyway, only after the server notices)."""
        was_leader, self._leader = self._leader, False
        conn, self._conn = self._conn, None
        if conn is None:
            return
        with contextlib.suppress(psycopg.Error), conn:
            if was_leader and not conn.closed:
                conn.execute("SELECT pg_advisory_unlock(%s)", (self.key,))

    def _connection(self) -> psycopg.Connection[tuple[object, ...]]:
        if self._conn is None or self._conn.closed:
            self._leader = False
            idle, interval, count = self.KEEPALIVE_S
            self._conn = psycopg.connect(
                self.conninfo,
                autocommit=True,
                connect_timeout=self.CONNECT_TIMEOUT_S,
                application_name=f"slotledger-worker pid={os.getpid()}",
                keepalives=1,
                keepalives_idle=idle,
                keepalives_interval=interval,
                keepalives_count=count,
                options=(
                    f"-c tcp_keepalives_idle={idle} -c tcp_keepalives_interval={interval}"
                    f" -c tcp_keepalives_count={count} -c statement_timeout=5000"
                ),
            )
        return self._conn


def election_for(settings: Settings) -> LeaderElection:
    store = settings.store
    if isinstance(store, PostgresStore):
        return PostgresLeaderElection(store, settings.pool_name)
    return LocalLeaderElection()


class Worker:
    """Standby until leader, then one policy tick every ``tick_s``.

    Any error is logged and the loop goes on after a bounded backoff: a worker that stops
    ticking must say so in its log, and ``last_tick_at`` lets a health check see it. A
    leader failing ``RESIGN_AFTER`` times in a row gives leadership up.
    """

    MAX_BACKOFF_S = 30.0
    RESIGN_AFTER = 3

    def __init__(
        self,
        settings: Settings,
        ledger: SlotLedger,
        runtime: SlotRuntime,
        election: LeaderElection,
        clock: Clock | None = None,
        tick_s: float | None = None,
    ) -> None:
        self.engine = PolicyEngine(ledger, runtime, settings, clock)
        self.election = election
        self.tick_s = tick_s if tick_s is not None else settings.policy_tick_s
        self.pool_name = settings.pool_name
        self.last_tick_at: datetime | None = None
        self.failures = 0

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
        decisions = self.engine.tick()
        self.last_tick_at = self.engine.clock()
        return decisions

    def run(self, stop: threading.Event) -> None:
        """Loop until ``stop`` is set; leadership is given up on the way out."""
        try:
            while not stop.is_set():
                stop.wait(self._turn())
        finally:
            self.election.release()

    def backoff_s(self, failures: int) -> float:
        """Doubling from the tick, capped: a flapping database is not hammered, and a
        standby still tries often enough to take over soon after it recovers."""
        return min(self.tick_s * 2.0 ** min(failures, 16), max(self.MAX_BACKOFF_S, self.tick_s))

    def _turn(self) -> float:
        """Run one step; returns how long to wait before the next. A leader that keeps
        failing resigns, so a healthy standby can take over."""
        try:
            self.step()
        except Exception:
            self.failures += 1
            if self.failures >= self.RESIGN_AFTER and self.election.is_leader:
                self.election.release()
            delay = self.backoff_s(self.failures)
            log.exception(
                "policy worker failed %d time(s) in a row (%s); next try in %.1fs",
                self.failures,
                "leader" if self.election.is_leader else "not leading",
                delay,
            )
            return delay
        self.failures = 0
        return self.tick_s
