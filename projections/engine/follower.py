"""The one log-follower loop, which every consumer of the event log runs on.

A consumer (:class:`Consumer`) says where it stands, how it takes a batch and how it
records its position; :class:`LogFollower` does the rest, the same way for all: batches,
wake-ups (LISTEN/NOTIFY on PostgreSQL, polling on SQLite: the backends' subclasses),
leadership (one writer per consumer across processes), a jittered backoff capped at
about two seconds on *any* exception (a loop that dies silently after a database outage
is the failure to avoid), health for ``/readyz`` and ``/metrics``, and parking.

Parking: an event a consumer cannot take must not stop it. The rule: an error from the
store or the network that is not about the data (connection, timeout, lock, missing
table: :func:`ledger.errors.is_outage`, which consumers extend, e.g. with Coolify being down) is an
outage, and is retried forever; never parked. Any other error (a data error such as a
character the database refuses, a constraint, or a bug in the consumer) makes the loop
take events one at a time (growing the batch back after each success) until the failing
event is alone; when that one event fails ``PARK_AFTER`` times in a row, it is recorded
with its position, topic and error (:class:`~projections.records.ParkedEvent`) and the
consumer's position moves past it.
After ``MAX_PARKED_IN_A_ROW`` parked events with no event taken between them, the
error is taken for systematic (every event fails): the loop stops parking and keeps
failing, loudly, instead of parking the whole log.

Consumers: the read models (:class:`Follower`, exactly once: the models and their
position commit together), the description mirror and the transition log
(:class:`Companion` followers, at least once through a :class:`Tracker`), which lead
when the process's read-model follower leads and are woken by its news.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, Generic, Protocol, Self, TypeVar
from uuid import UUID

from eventsourcing import persistence as es
from eventsourcing.persistence import Tracking, TrackingRecorder

from ledger.errors import is_outage
from ledger.loops import Backoff, Health, LoopHealth, describe_error
from projections.engine.eventlog import EventLog
from projections.engine.fold import Batch, Positioned
from projections.engine.readmodels import ReadModels
from projections.models.records import Lag, ParkedEvent, ParkedStatus

__all__ = [
    "Companion",
    "Consumer",
    "Follower",
    "LogFollower",
    "MemoryTracker",
    "Parking",
    "ReadModelConsumer",
    "RecorderTracker",
    "Standalone",
    "TrackedConsumer",
    "Tracker",
]

log = logging.getLogger(__name__)

_SLICE = 0.1
"""Longest uninterruptible wait, so stop() is prompt."""


class Parking(Protocol):
    """Where a follower records the events its consumer could not take."""

    def park(self, entry: ParkedEvent) -> None: ...


L = TypeVar("L", bound=EventLog)
"""The log a consumer reads: any :class:`EventLog`, or more of the ledger for consumers
that act on it (the description mirror, the transition log)."""


class Consumer(ABC, Generic[L]):
    """One consumer of the ledger's event log, as the loop sees it."""

    name: str
    """The loop's and the parked events' name for it."""

    def __init__(self, ledger: L) -> None:
        self.ledger = ledger

    @abstractmethod
    def position(self) -> int:
        """The last log position this consumer has taken (0 before any)."""

    @abstractmethod
    def take(self, start: int, batch: Batch) -> bool:
        """Take a batch read after ``start`` and record ``batch.last`` as the position;
        False when another writer had moved the position first (nothing was done)."""

    @abstractmethod
    def skip(self, start: int, position: int) -> bool:
        """Move the position from ``start`` to ``position`` (past a parked event)."""

    def read(self, start: int, limit: int) -> Batch:
        """Up to ``limit`` events after ``start``, decoded."""
        notifications = self.ledger.recorder.select_notifications(
            start, limit, inclusive_of_start=False
        )
        to_event = self.ledger.mapper.to_domain_event
        events: list[Positioned] = [(n.id, to_event(n)) for n in notifications]
        last = notifications[-1].id if notifications else start
        return Batch(events, last, len(events))

    def standby(self) -> None:
        """Called instead of taking events while another process leads."""

    def is_outage(self, error: BaseException) -> bool:
        """Whether an error is an outage (retried, never parked); consumers that talk
        to more than the store add their own."""
        return is_outage(error)


class Tracker(ABC):
    """Where an at-least-once consumer records its position."""

    @abstractmethod
    def get(self) -> int: ...

    @abstractmethod
    def advance(self, start: int, position: int) -> bool:
        """Record ``position``; False when another writer recorded one as far first."""


class RecorderTracker(Tracker):
    """The library's tracking table: one row per upstream application, which refuses
    to go back, so two processes recording the same batch are told, not corrupted."""

    def __init__(self, recorder: TrackingRecorder, upstream: str) -> None:
        self.recorder = recorder
        self.upstream = upstream

    def get(self) -> int:
        return self.recorder.max_tracking_id(self.upstream) or 0

    def advance(self, start: int, position: int) -> bool:
        try:
            self.recorder.insert_tracking(Tracking(self.upstream, position))
        except es.IntegrityError:
            if self.get() >= position:
                return False  # another process got there first: nothing is lost
            raise
        return True


class MemoryTracker(Tracker):
    """A position that lives as long as the process (the transition log's)."""

    def __init__(self, position: int = 0) -> None:
        self.position = position

    def get(self) -> int:
        return self.position

    def advance(self, start: int, position: int) -> bool:
        self.position = position
        return True


class TrackedConsumer(Consumer[L]):
    """A consumer that handles a batch and then records its position: at least once,
    so handling an event twice must be harmless."""

    def __init__(self, ledger: L, tracker: Tracker) -> None:
        super().__init__(ledger)
        self.tracker = tracker

    @abstractmethod
    def handle(self, events: Sequence[Positioned]) -> None:
        """Act on a batch of events, in log order."""

    def position(self) -> int:
        return self.tracker.get()

    def take(self, start: int, batch: Batch) -> bool:
        self.handle(batch.events)
        return self.tracker.advance(start, batch.last)

    def skip(self, start: int, position: int) -> bool:
        return self.tracker.advance(start, position)

    def retry(self, event: Positioned) -> None:
        """An operator's retry of a parked event: handle it again, alone."""
        self.handle([event])

    def catch_up(self, batch_size: int = 500) -> int:
        """Take every event up to the log's head, in this thread (one-off runs and
        tests; a :class:`LogFollower` runs consumers in the background); how many."""
        done = 0
        while True:
            start = self.position()
            batch = self.read(start, batch_size)
            if not batch.read:
                return done
            if self.take(start, batch):
                done += batch.read


class ReadModelConsumer(Consumer[EventLog]):
    """The read models as a consumer: exactly once, since each batch commits with the
    models' own tracking row."""

    def __init__(self, models: ReadModels) -> None:
        super().__init__(models.ledger)
        self.models = models
        self.name = models.CONSUMER

    def position(self) -> int:
        return self.models.position()

    def read(self, start: int, limit: int) -> Batch:
        return self.models._next_batch(start, None, None, limit=limit)

    def take(self, start: int, batch: Batch) -> bool:
        return self.models._commit(start, batch)

    def skip(self, start: int, position: int) -> bool:
        return self.models.skip(start, position)


class LogFollower(ABC):
    """Runs one consumer from a thread between start() and stop(): leads when it can,
    takes batches up to the log's head, waits for news, and survives every error."""

    PARK_AFTER = 3
    """Failures of one event alone, in a row, that park it."""
    MAX_PARKED_IN_A_ROW = 5
    """Parked events without one taken between them, after which parking stops."""

    def __init__(
        self,
        consumer: Consumer[Any],
        *,
        parking: Parking | None,
        poll_interval: float,
        batch_size: int = 500,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self.consumer = consumer
        self.name = consumer.name
        self.parking = parking
        self.poll_interval = poll_interval
        self.batch_size = batch_size
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.is_leader = False
        self.health_record = Health(consumer.name)
        self._size = batch_size
        self._failing: tuple[int, int] | None = None
        """(position, failures alone in a row) of the event that fails now."""
        self._parked_in_a_row = 0
        self._position = -1
        self._heartbeat: float | None = None
        self._changed = threading.Condition()
        self._news = 0
        self._woken = threading.Event()
        """Set by :meth:`wake`: a write was committed in this process."""
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- backend -------------------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> None:
        """Open whatever the follower needs to hear about new events."""

    @abstractmethod
    def _try_lead(self) -> bool:
        """Become the consumer's only writer, if nobody else is."""

    @abstractmethod
    def _wait_for_news(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when new events were announced (by the
        store, or by :meth:`wake` where the store cannot announce them)."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Close connections and give up leadership; must not raise."""

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(target=self._run, name=self.name, daemon=True)
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
        self._woken.set()  # ends a wait for a wake-up at once
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    def _run(self) -> None:
        backoff = Backoff(self.min_backoff, self.max_backoff)
        connected = False
        while not self._stopping.is_set():
            try:
                if not connected:
                    self._connect()
                    connected = True
                while not self._stopping.is_set():
                    self._cycle()
                    backoff.reset()
                    self._idle()
            except Exception as e:
                failures = self.health_record.failed(e)
                delay = backoff.next()
                log.warning(
                    "%s failed %d time(s) in a row, retrying in %.2fs: %s",
                    self.name,
                    failures,
                    delay,
                    describe_error(e),
                )
                if self.consumer.is_outage(e) or not connected:
                    self._disconnect_quietly()
                    connected = False
                self._stopping.wait(delay)
        self._disconnect_quietly()

    def _disconnect_quietly(self) -> None:
        self.is_leader = False
        self._disconnect()

    def _cycle(self) -> None:
        """Lead if possible and take batches up to the head; publish the position. The
        position is read once per cycle: each round knows where the next one starts."""
        self.is_leader = self.is_leader or self._try_lead()
        if self.is_leader:
            position = self.consumer.position()
            self._publish(position)
            start: int | None = position
            while start is not None and not self._stopping.is_set():
                start, moved = self._round(start)
                if moved:
                    self._announce()
        else:
            self.consumer.standby()
            self._publish(self.consumer.position())
        self._heartbeat = time.monotonic()
        self.health_record.succeeded(standby=not self.is_leader)

    def _round(self, start: int) -> tuple[int | None, bool]:
        """Take one batch after ``start``: where the next round starts (None: caught up
        with the log as this round read it, since it read less than a full batch) and
        whether the position moved. A failure either parks the event that fails alone
        (the round is done) or is raised for the backoff."""
        self._woken.clear()  # this read includes every write committed before a wake-up
        size = self._size
        try:
            batch = self.consumer.read(start, size)
            if not batch.read:
                return None, False
            if not self.consumer.take(start, batch):
                return self._reread(), False  # another writer moved: read again
            self._publish(batch.last)
        except Exception as e:
            if self.consumer.is_outage(e) or not self._park_or_narrow(start, e):
                raise
            return (position := self._reread()), position != start
        self._failing, self._parked_in_a_row = None, 0
        self._size = min(size * 2, self.batch_size)
        self.health_record.succeeded()
        return (None if batch.read < size else batch.last), True

    def _reread(self) -> int:
        """The position as stored, published: after another writer or a parked event
        moved it."""
        position = self.consumer.position()
        self._publish(position)
        return position

    def catch_up(self) -> None:
        """Take every event up to the log's head as it is now, in the calling thread and
        through the loop's own rounds (narrowing a failing batch, parking the event that
        fails alone): a one-off run, such as a CLI command's, parks what a server would.
        Raised: an outage, and an error once nothing may be parked (parking stopped)."""
        target = self.consumer.ledger.recorder.max_notification_id() or 0
        backoff = Backoff(self.min_backoff, self.max_backoff)
        start: int | None = self.consumer.position()
        while start is not None and start < target:
            try:
                start, _ = self._round(start)
            except Exception as e:
                if self.consumer.is_outage(e) or not self._may_park_later():
                    raise
                time.sleep(backoff.next())
                start = self.consumer.position()

    def _may_park_later(self) -> bool:
        """Whether the event that fails now is still being counted towards parking."""
        return (
            self._failing is not None
            and self._failing[1] < self.PARK_AFTER
            and self.parking is not None
            and self._parked_in_a_row < self.MAX_PARKED_IN_A_ROW
        )

    def _park_or_narrow(self, start: int, error: Exception) -> bool:
        """After a batch failed on something other than an outage: take the events one
        at a time from there (at once: the batch size grows back with each success, so
        the event that fails is soon alone), then count that event's failures and park
        it at ``PARK_AFTER``. True when the round is done with (narrowed, or parked: the
        loop goes on at once); False to retry the event after the backoff."""
        if self._size > 1:
            self._size = 1
            self.health_record.failed(error)
            log.warning(
                "%s: a batch after %d failed, taking its events one at a time: %s",
                self.name,
                start,
                describe_error(error),
            )
            return True
        first = self.consumer.ledger.recorder.select_notifications(
            start, 1, inclusive_of_start=False
        )
        if not first:
            return False
        notification = first[0]
        position, failures = self._failing or (notification.id, 0)
        failures = failures + 1 if position == notification.id else 1
        self._failing = (notification.id, failures)
        if (
            failures < self.PARK_AFTER
            or self.parking is None
            or self._parked_in_a_row >= self.MAX_PARKED_IN_A_ROW
        ):
            return False
        self.health_record.failed(error)
        self.parking.park(
            ParkedEvent(
                consumer=self.name,
                position=notification.id,
                topic=notification.topic,
                originator_id=UUID(str(notification.originator_id)),
                error=describe_error(error),
                attempts=failures,
                parked_at=datetime.now(UTC),
                status=ParkedStatus.PARKED,
                resolved_at=None,
            )
        )
        self.consumer.skip(start, notification.id)
        self._failing = None
        self._parked_in_a_row += 1
        log.error(
            "%s parked event %d (%s) after %d failures: %s; see `slotledger parked`",
            self.name,
            notification.id,
            notification.topic,
            failures,
            describe_error(error),
        )
        return True

    def _idle(self) -> None:
        """Wait for news, or for the poll interval, in short slices."""
        deadline = time.monotonic() + self.poll_interval
        while not self._stopping.is_set() and (remaining := deadline - time.monotonic()) > 0:
            if self._wait_for_news(min(remaining, _SLICE)):
                self._announce()
                return

    def wake(self, position: int | None = None) -> None:
        """A write (at ``position``, when known) was committed in this process: take it
        now, unless it was taken already. Cheap, from any thread, any number of times."""
        if position is None or position > self._position:
            self._woken.set()

    def _wait_for_wake(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds for :meth:`wake` (or stop); True when woken."""
        return self._woken.wait(timeout) and not self._stopping.is_set()

    def _publish(self, position: int) -> None:
        """Tell the waiters how far the models are; never backwards, since a position
        heard from another process may come before one read from the store."""
        with self._changed:
            if position > self._position:
                self._position = position
                self._changed.notify_all()

    def _announce(self) -> None:
        """Tell the companions that the log moved."""
        with self._changed:
            self._news += 1
            self._changed.notify_all()

    def await_news(self, seen: int, timeout: float) -> int:
        """Block until the news count passes ``seen`` or ``timeout``; the count."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._news == seen and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            return self._news

    # --- observing -----------------------------------------------------------------------

    def health(self, head: int | None = None) -> LoopHealth:
        """This loop's health; its lag when the log's ``head`` is given."""
        position = self._position if self._position >= 0 else None
        lag = None if head is None or position is None or not self.is_leader else head - position
        return self.health_record.snapshot(
            alive=self.running, position=position, lag_events=None if lag is None else max(lag, 0)
        )


class Follower(LogFollower):
    """Keeps ``models`` following the log, and lets commands wait for their writes."""

    def __init__(
        self,
        models: ReadModels,
        *,
        parking: Parking | None = None,
        poll_interval: float,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        super().__init__(
            ReadModelConsumer(models),
            parking=models if parking is None else parking,
            poll_interval=poll_interval,
            batch_size=models.batch_size,
            min_backoff=min_backoff,
            max_backoff=max_backoff,
        )
        self.models = models

    def health(self, head: int | None = None) -> LoopHealth:
        """The models' lag counts for every process, leading or not: they share them."""
        health = super().health(head)
        if head is None or health.position is None:
            return health
        return replace(health, lag_events=max(head - health.position, 0))

    def lag(self) -> Lag:
        """The models' lag, plus how long ago this follower last looked at the log."""
        heartbeat = None if self._heartbeat is None else time.monotonic() - self._heartbeat
        return replace(self.models.lag(), heartbeat_s=heartbeat)

    def wait(self, position: int, timeout: float = 5.0) -> None:
        """Read-your-writes: return once the models include ``position``; else
        ReadModelTimeout after ``timeout`` seconds. Nothing polls: the caller wakes the
        follower and waits on its condition, which the follower signals as it publishes
        a position: after its own commits while leading, or, in standby, when it hears
        of the leader's (the backends say how: NOTIFY, or its own poll). Without a
        running follower, the models are polled instead (one-off commands)."""
        if not self.running:
            self.models.wait(position, timeout)
            return
        deadline = time.monotonic() + timeout
        with self._changed:
            if self._position >= position:
                return
        self.wake(position)
        with self._changed:
            while self._position < position and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
            if self._position >= position:
                return
        self.models.wait(position, 0)  # the store has the last word: reached, or the timeout


class Standalone(LogFollower):
    """A consumer on its own: it always leads and polls the log (one-process set-ups)."""

    def _connect(self) -> None:
        """Nothing to open: the consumer reads through the ledger."""

    def _try_lead(self) -> bool:
        return True

    def _wait_for_news(self, timeout: float) -> bool:
        return self._wait_for_wake(timeout)

    def _disconnect(self) -> None:
        """Nothing to close."""


class Companion(LogFollower):
    """A consumer beside the process's read-model follower: it leads when that one
    leads (one writer per consumer across processes, without another lock or LISTEN
    connection) and is woken by its news, with its own poll as a safety net."""

    def __init__(
        self,
        consumer: Consumer[Any],
        leader: LogFollower,
        *,
        parking: Parking | None,
        poll_interval: float = 0.5,
        batch_size: int = 500,
    ) -> None:
        super().__init__(
            consumer,
            parking=parking,
            poll_interval=poll_interval,
            batch_size=batch_size,
            max_backoff=leader.max_backoff,
        )
        self.leader = leader
        self._seen = 0

    def _connect(self) -> None:
        """Nothing to open: the leader's follower listens for both."""

    def _try_lead(self) -> bool:
        return self.leader.is_leader

    def _wait_for_news(self, timeout: float) -> bool:
        seen, self._seen = self._seen, self.leader.await_news(self._seen, timeout)
        return self._seen != seen

    def _disconnect(self) -> None:
        """Nothing to close."""

    def _cycle(self) -> None:
        if self.is_leader and not self.leader.is_leader:
            self.is_leader = False  # the leader lost its lock: so did we
        super()._cycle()
