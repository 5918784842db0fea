"""The dashboard's live feed: server-sent events pushed on every projected change.

Each connection polls the read models' position (one small query) and, when it moved,
pushes a full :class:`SnapshotOut`; between changes it pushes the projection lag every
few seconds so the lag tile stays honest. Snapshots are whole rather than deltas: a
missed event can never leave the dashboard wrong, and the pool is small.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import AsyncIterator
from datetime import UTC, datetime, timedelta

import anyio
from sse_starlette import ServerSentEvent
from starlette.concurrency import run_in_threadpool

from ledger.entrypoints.web.errors import TooManyStreams
from ledger.entrypoints.web.schemas import (
    EventOut,
    LagOut,
    PoolStatsOut,
    QueueEntryOut,
    QueueStatsOut,
    SlotOut,
    SnapshotOut,
)
from ledger.service import Service
from projections import AuditRecord, ReadModels

__all__ = ["RECENT_EVENTS", "StreamLimit", "live_events", "recent_events", "snapshot"]

log = logging.getLogger("ledger.web.stream")

RECENT_EVENTS = 30
_LOOKBACK = (timedelta(seconds=30), timedelta(minutes=5), timedelta(hours=1), timedelta(days=1))


class StreamLimit:
    """At most ``limit`` open streams (``LEDGER_MAX_STREAMS``): without a cap, a
    thousand idle dashboards made ``/healthz`` take seconds."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.open = 0
        self._lock = threading.Lock()

    async def guard(self, events: AsyncIterator[ServerSentEvent]) -> AsyncIterator[ServerSentEvent]:
        """``events`` counted as one open stream until the client goes away;
        :class:`TooManyStreams` when the cap is reached."""
        with self._lock:
            if self.open >= self.limit:
                raise TooManyStreams(
                    f"{self.open} dashboard streams are open (LEDGER_MAX_STREAMS={self.limit})"
                )
            self.open += 1
        return self._counted(events)

    async def _counted(
        self, events: AsyncIterator[ServerSentEvent]
    ) -> AsyncIterator[ServerSentEvent]:
        try:
            async for event in events:
                yield event
        finally:
            with self._lock:
                self.open -= 1


def recent_events(models: ReadModels, limit: int = RECENT_EVENTS) -> list[AuditRecord]:
    """The newest events, newest first. The audit query lists events oldest first, so
    look back from the newest projected event over widening windows (a day at most)
    until one holds enough; busy pools stop at the first, small window."""
    newest = models.tracking().event_at
    records: list[AuditRecord] = []
    if newest is None:
        return records
    for window in _LOOKBACK:
        records = models.audit(since=newest - window, limit=None)
        if len(records) >= limit:
            break
    return records[-limit:][::-1]


def snapshot(service: Service) -> SnapshotOut:
    """Everything the dashboard shows, read at one moment."""
    models = service.models
    position = models.position()
    return SnapshotOut(
        position=position,
        server_time=datetime.now(UTC),
        stats=PoolStatsOut.of(models.pool_stats()),
        queue=QueueStatsOut.of(models.queue_stats()),
        waiting=QueueEntryOut.listing(service.ledger.waiting()),
        slots=[SlotOut.of(s) for s in models.slots()],
        events=[EventOut.of(r) for r in recent_events(models)],
        lag=LagOut.of_lag(service.lag()),
    )


async def live_events(
    service: Service, poll_s: float = 0.25, lag_every_s: float = 2.0
) -> AsyncIterator[ServerSentEvent]:
    """``snapshot`` events on change, ``lag`` events in between, ``problem`` events
    while the store cannot be read (the stream survives an outage)."""
    shown = -1
    lag_sent = time.monotonic()
    while True:
        try:
            position = await run_in_threadpool(service.models.position)
            if position != shown:
                current = await run_in_threadpool(snapshot, service)
                shown = current.position
                lag_sent = time.monotonic()
                yield ServerSentEvent(current.model_dump_json(), event="snapshot", id=str(shown))
            elif time.monotonic() - lag_sent >= lag_every_s:
                lag = await run_in_threadpool(service.lag)
                lag_sent = time.monotonic()
                yield ServerSentEvent(LagOut.of_lag(lag).model_dump_json(), event="lag")
        except Exception as e:
            log.warning("dashboard stream: cannot read the read models: %r", e)
            yield ServerSentEvent(json.dumps({"detail": type(e).__name__}), event="problem")
            await anyio.sleep(2.0)
        await anyio.sleep(poll_s)
