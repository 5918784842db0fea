"""Group commit: concurrent acquire and release commands of one process share a transaction.

Every write to the event store commits (and fsyncs) under the events table lock, so one
command per transaction caps the ledger at one command per commit. A busy service gets
many commands at once: a writer thread takes whatever is waiting, decides each command in
order against one read of the pool's index and cached aggregates, and saves all their
events in one transaction. Each caller still gets its own outcome or its own typed error.

Correctness does not depend on the batch: the index read and the aggregates are checked
by the same version rules as any save, so if another process wrote meanwhile the commit
fails as a whole and every command of the batch runs again on its own.
"""

from __future__ import annotations

import copy
import logging
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Literal
from uuid import UUID

from eventsourcing.persistence import PersistenceError

from ledger.adapters.persistence import SlotRow, lru_order
from ledger.application import Outcome, SlotLedger, already_holds, holds_no_slot, no_idle_slot
from ledger.domain import Slot, SlotStatus, check_bot_id, check_platform
from ledger.errors import SlotLedgerError

__all__ = ["GroupCommit"]

log = logging.getLogger("ledger.group_commit")

Command = Literal["acquire", "release"]


class _StaleRead(Exception):
    """Another process wrote between the batch's index read and an aggregate load."""


@dataclass
class _Job:
    command: Command
    bot_id: str
    platform: str | None
    actor: str
    correlation_id: str
    future: Future[Outcome] = field(default_factory=Future)


@dataclass
class _Batch:
    """One batch's view of the pool: the index as read once, updated as commands decide."""

    rows: dict[UUID, SlotRow]
    holders: dict[str, UUID]
    taken: set[UUID] = field(default_factory=set)
    touched: dict[UUID, Slot] = field(default_factory=dict)


class GroupCommit:
    """The writer thread of one :class:`SlotLedger` and its cache of slot aggregates."""

    def __init__(self, ledger: SlotLedger, *, max_batch: int = 64) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._cache: dict[UUID, Slot] = {}
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()
        # Snapshots reload and write a slot: off the writer, so no batch waits for them.
        self._snapshots = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshots")
        self.batches = 0
        self.fallbacks = 0

    def submit(
        self,
        command: Command,
        bot_id: str,
        *,
        platform: str | None,
        actor: str,
        correlation_id: str,
    ) -> Outcome:
        check_bot_id(bot_id)
        if platform is not None:
            check_platform(platform)
        job = _Job(command, bot_id, platform, actor, correlation_id)
        self._jobs.put(job)
        return job.future.result()

    def defer_snapshots(self, take: Callable[[], None]) -> None:
        self._snapshots.submit(self._snapshot, take)

    @staticmethod
    def _snapshot(take: Callable[[], None]) -> None:
        try:
            take()
        except Exception:  # a missed snapshot only makes the next load read more events
            log.exception("snapshot failed")

    def close(self) -> None:
        self._jobs.put(None)
        self._thread.join(timeout=10)
        self._snapshots.shutdown(wait=True)

    def _run(self) -> None:
        while True:
            first = self._jobs.get()
            if first is None:
                return
            jobs = [first]
            while len(jobs) < self.max_batch:
                try:
                    job = self._jobs.get_nowait()
                except queue.Empty:
                    break
                if job is None:
                    self._jobs.put(None)
                    break
                jobs.append(job)
            self._commit(jobs)

    def _commit(self, jobs: list[_Job]) -> None:
        try:
            results = self._decide_and_save(jobs)
        except (PersistenceError, _StaleRead) as e:
            # Another process wrote meanwhile (or the store hiccuped): forget what this
            # batch touched and let every command decide again on its own.
            log.debug("batch of %d fell back to single commands: %s", len(jobs), e)
            self._cache.clear()
            self.fallbacks += 1
            for job in jobs:
                self._settle(job, lambda job=job: self._alone(job))  # type: ignore[misc]
            return
        except BaseException as e:  # a bug: every waiting caller must hear of it
            self._cache.clear()
            for job in jobs:
                job.future.set_exception(e)
            return
        self.batches += 1
        for job, result in zip(jobs, results, strict=True):
            if isinstance(result, BaseException):
                job.future.set_exception(result)
            else:
                job.future.set_result(result)

    @staticmethod
    def _settle(job: _Job, run: Callable[[], Outcome]) -> None:
        try:
            job.future.set_result(run())
        except BaseException as e:
            job.future.set_exception(e)

    def _alone(self, job: _Job) -> Outcome:
        if job.command == "acquire":
            return self.ledger.acquire_now(
                job.bot_id,
                platform=job.platform,
                actor=job.actor,
                correlation_id=job.correlation_id,
            )
        return self.ledger.release_now(
            job.bot_id, actor=job.actor, correlation_id=job.correlation_id
        )

    def _decide_and_save(self, jobs: list[_Job]) -> list[Outcome | SlotLedgerError]:
        rows = {r.slot_id: r for r in self.ledger.index.slot_rows(self.ledger.pool_name)}
        batch = _Batch(rows, {r.bot_id: r.slot_id for r in rows.values() if r.bot_id})
        decided: list[tuple[Slot, int] | SlotLedgerError] = []
        for job in jobs:
            try:
                slot = self._decide(batch, job)
            except SlotLedgerError as e:
                decided.append(e)
                continue
            batch.touched[slot.id] = slot
            decided.append((copy.copy(slot), slot.version))
        positions: dict[tuple[UUID, int], int] = {}
        if batch.touched:
            try:
                recordings = self.ledger.save(*batch.touched.values())
            except BaseException:
                for slot_id in batch.touched:
                    self._cache.pop(slot_id, None)
                raise
            positions = {
                (r.domain_event.originator_id, r.domain_event.originator_version): r.notification.id
                for r in recordings
            }
        return [
            d if isinstance(d, SlotLedgerError) else Outcome(d[0], positions[(d[0].id, d[1])])
            for d in decided
        ]

    def _decide(self, batch: _Batch, job: _Job) -> Slot:
        at = self.ledger.clock()
        if job.command == "acquire":
            if job.bot_id in batch.holders:
                raise already_holds(job.bot_id, batch.rows[batch.holders[job.bot_id]].name)
            slot = self._slot(batch, self._idle_candidate(batch, job.platform))
            slot.acquire(job.bot_id, at=at, actor=job.actor, correlation_id=job.correlation_id)
            batch.holders[job.bot_id] = slot.id
            batch.taken.add(slot.id)
            return slot
        slot_id = batch.holders.get(job.bot_id)
        if slot_id is None:
            raise holds_no_slot(job.bot_id)
        slot = self._slot(batch, batch.rows[slot_id])
        slot.release(job.bot_id, at=at, actor=job.actor, correlation_id=job.correlation_id)
        del batch.holders[job.bot_id]
        return slot

    def _idle_candidate(self, batch: _Batch, platform: str | None) -> SlotRow:
        idle = [
            r
            for r in batch.rows.values()
            if r.status is SlotStatus.IDLE
            and not r.retired
            and r.slot_id not in batch.taken
            and platform in (None, r.platform)
        ]
        if not idle:
            raise no_idle_slot(self.ledger.pool_name, platform)
        return min(idle, key=lru_order)

    def _slot(self, batch: _Batch, row: SlotRow) -> Slot:
        """The slot as this batch has it; else cached if still at the index's version;
        else loaded."""
        if row.slot_id in batch.touched:
            return batch.touched[row.slot_id]
        cached = self._cache.get(row.slot_id)
        if cached is None or cached.version != row.version or cached.pending_events:
            cached = self.ledger.get_slot(row.slot_id)
            self._cache[row.slot_id] = cached
            if cached.version != row.version:
                raise _StaleRead(f"slot {row.name} moved on since the batch read the index")
        return cached
