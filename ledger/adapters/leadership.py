"""Who leads the policies, seen from a process that runs no worker itself."""

from __future__ import annotations

from dataclasses import replace

from eventsourcing.postgres import PostgresApplicationRecorder

from ledger.application.worker import Worker
from ledger.loops import LoopHealth

__all__ = ["WorkerLeadership"]


class WorkerLeadership:
    """Whether some ``slotledger worker`` leads this pool's policies now, for a ``serve``
    on PostgreSQL that runs no worker itself: the leader holds the election's advisory
    lock (:func:`ledger.adapters.postgres.advisory_key`), so ``pg_locks`` tells.

    A :class:`Periodic` checks and the answer is kept in memory, so ``/readyz`` and
    ``/metrics`` show it without a query of their own, also while the store is down.
    It is the ``policy-worker`` loop, ``stopped`` while no worker leads
    (``slotledger_loop_up`` 0, for an alert), yet never a readiness problem: no request
    needs the policies to be answered (they act on timeouts of minutes), and taking every
    server out of its load balancer because the workers are down would turn a degraded
    pool into a full outage.
    """

    CHECK_S = 2.0
    LED = "led by another process"
    UNLED = "no worker leads"
    _SQL = (
        "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory' AND granted"
        " AND database = (SELECT oid FROM pg_database WHERE datname = current_database())"
        " AND objsubid = 1 AND classid::bigint = %s AND objid::bigint = %s) AS led"
    )

    def __init__(self, recorder: PostgresApplicationRecorder, key: int) -> None:
        self._datastore = recorder.datastore
        # pg_locks shows a bigint key as its high and low 32 bits, unsigned.
        self._params = ((key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF)
        self.led: bool | None = None

    def check(self) -> None:
        with self._datastore.get_connection() as conn:
            row = conn.execute(self._SQL, self._params).fetchone()
        self.led = bool(row and row["led"])

    def health(self, checking: LoopHealth) -> LoopHealth:
        """The checking loop's health, told as the policy worker's: a failing or stopped
        check shows as such, else who leads (nothing before the first check)."""
        shown = replace(checking, name=Worker.NAME)
        if checking.state != "running" or self.led is None:
            return shown
        if self.led:
            return replace(shown, detail=self.LED)
        return replace(shown, state="stopped", detail=self.UNLED)
