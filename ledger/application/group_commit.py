"""Group commit: concurrent acquire and release commands of one process share a transaction.

Every write to the event store is a transaction that commits (and fsyncs), so one
command per transaction costs a commit per command. A busy service gets many commands at
once: a writer thread takes whatever is waiting, decides each command in order against
one read of the pool's index and cached aggregates, and saves all their events in one
transaction. Each caller still gets its own outcome or its own typed error. A command
submitted while no other is in flight runs at once in its caller's thread, as a single
command: alone, a hand-over to the writer only adds latency. The decisions are the single
path's own (:mod:`ledger.application.decisions`), read through the batch's view of the
pool instead of the index.

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
from datetime import datetime
from typing import Any, Protocol
from uuid import UUID

from eventsourcing.persistence import PersistenceError, Recording

from ledger.application.commands import Acquire, Context, Outcome, Release
from ledger.application.decisions import decide_acquire, decide_release
from ledger.application.ports import AcquireReads, LedgerRecorder, SlotRow, lru_order
from ledger.application.unit_of_work import LostRace
from ledger.domain import Slot, check_bot_id, check_platform
from ledger.errors import SlotLedgerError

__all__ = ["GroupCommit", "Writer"]

log = logging.getLogger("ledger.group_commit")


class Writer(Protocol):
    """What group commit needs of the ledger it batches for."""

    index: LedgerRecorder
    pool_name: str

    def slot_of(self, row: SlotRow) -> Slot: ...

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]: ...

    def now(self, ctx: Context) -> datetime: ...

    def acquire_now(
        self, bot_id: str, *, platform: str | None = None, ctx: Context | None = None
    ) -> Outcome: ...

    def release_now(self, bot_id: str, *, ctx: Context | None = None) -> Outcome: ...


@dataclass
class _Job:
    command: Acquire | Release
    ctx: Context
    future: Future[Outcome] = field(default_factory=Future)


class _Batch:
    """One batch's view of the pool (a :class:`~ledger.application.decisions.SlotView`):
    the index as read once, updated as commands decide."""

    def __init__(
        self, pool_name: str, rows: list[SlotRow], load: Callable[[_Batch, SlotRow], Slot]
    ) -> None:
        self._pool_name = pool_name
        self.rows = {r.slot_id: r for r in rows}
        self.holders = {r.bot_id: r.slot_id for r in rows if r.bot_id}
        self.taken: set[UUID] = set()
        self.touched: dict[UUID, Slot] = {}
        self._load = load

    @property
    def pool_name(self) -> str:
        return self._pool_name

    def holder_row(self, bot_id: str) -> SlotRow | None:
        slot_id = self.holders.get(bot_id)
        return None if slot_id is None else self.rows[slot_id]

    def acquire_reads(self, bot_id: str, platform: str | None, limit: int) -> AcquireReads:
        """The queue was checked before the command was submitted."""
        idle = [
            r
            for r in self.rows.values()
            if r.available and r.slot_id not in self.taken and platform in (None, r.platform)
        ]
        return AcquireReads(None, self.holder_row(bot_id), sorted(idle, key=lru_order)[:limit])

    def load(self, row: SlotRow) -> Slot:
        return self._load(self, row)


class GroupCommit:
    """The writer thread of one :class:`SlotLedger`."""

    def __init__(self, ledger: Writer, *, max_batch: int = 64) -> None:
        self.ledger = ledger
        self.max_batch = max_batch
        self._jobs: queue.SimpleQueue[_Job | None] = queue.SimpleQueue()
        self._lock = threading.Lock()
        self._in_flight = 0
        """Commands submitted and not yet answered: a command that finds none runs in
        its caller's thread, alone; the others are batched by the writer."""
        self._thread = threading.Thread(target=self._run, name="group-commit", daemon=True)
        self._thread.start()
        # Snapshots reload and write a slot: off the writer, so no batch waits for them.
        self._snapshots = ThreadPoolExecutor(max_workers=1, thread_name_prefix="snapshots")
        self.batches = 0
        self.fallbacks = 0

    def submit(self, command: Acquire | Release, ctx: Context) -> Outcome:
        check_bot_id(command.bot_id)
        if isinstance(command, Acquire) and command.platform is not None:
            check_platform(command.platform)
        job = _Job(command, ctx)
        with self._lock:
            alone = self._in_flight == 0
            self._in_flight += 1
        try:
            if alone:  # nothing to share a transaction with: no hand-over to the writer
                return self._alone(job)
            self._jobs.put(job)
            return job.future.result()
        finally:
            with self._lock:
                self._in_flight -= 1

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
        except (PersistenceError, LostRace) as e:
            # Another process wrote meanwhile (or the store hiccuped): every command
            # decides again on its own.
            log.debug("batch of %d fell back to single commands: %s", len(jobs), e)
            self.fallbacks += 1
            for job in jobs:
                self._settle(job, lambda job=job: self._alone(job))  # type: ignore[misc]
            return
        except BaseException as e:  # a bug: every waiting caller must hear of it
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
        command = job.command
        if isinstance(command, Acquire):
            return self.ledger.acquire_now(command.bot_id, platform=command.platform, ctx=job.ctx)
        return self.ledger.release_now(command.bot_id, ctx=job.ctx)

    def _decide_and_save(self, jobs: list[_Job]) -> list[Outcome | SlotLedgerError]:
        batch = _Batch(
            self.ledger.pool_name, self.ledger.index.slot_rows(self.ledger.pool_name), self._slot
        )
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
            recordings = self.ledger.save(*batch.touched.values())
            positions = {
                (r.domain_event.originator_id, r.domain_event.originator_version): r.notification.id
                for r in recordings
            }
        return [
            d if isinstance(d, SlotLedgerError) else Outcome(d[0], positions[(d[0].id, d[1])])
            for d in decided
        ]

    def _decide(self, batch: _Batch, job: _Job) -> Slot:
        """The single path's decision, against the batch's view."""
        at = self.ledger.now(job.ctx)
        command = job.command
        if isinstance(command, Acquire):
            slot = decide_acquire(batch, command, job.ctx, at)
            batch.holders[command.bot_id] = slot.id
            batch.taken.add(slot.id)
            return slot
        slot = decide_release(batch, command, job.ctx, at)
        del batch.holders[command.bot_id]
        return slot

    def _slot(self, batch: _Batch, row: SlotRow) -> Slot:
        """The slot as this batch has it; else at the index's version (cached or loaded;
        another process wrote between the batch's index read and the load:
        :class:`LostRace`, and the batch falls back to single commands)."""
        if row.slot_id in batch.touched:
            return batch.touched[row.slot_id]
        slot = self.ledger.slot_of(row)
        if slot.version != row.version:
            raise LostRace(f"slot {row.name} moved on since the batch read the index")
        return slot
