"""What the dashboard's charts draw, aggregated from the read models over a window:
``/v1/pool/timeline`` (the pool's statuses over time), ``/v1/stats/deploy-times``
(deploying -> busy, with p50/p95) and ``/v1/stats/queue-wait`` (the queue over time).

A window is cut into equal buckets; a bucket's counts are time-weighted means (slot
seconds in a status over the bucket's length), so a deploy shorter than a bucket still
shows, and the area of a stacked chart is the time the pool spent. The end of a window
later than now is now (the future is not known yet), and a window never has more than
:data:`MAX_BUCKETS` buckets: a larger step is taken instead, and the answer says which.
"""

from __future__ import annotations

import math
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated
from uuid import UUID

from fastapi import APIRouter, Query
from pydantic import BaseModel, ConfigDict, Field

from ledger.domain import QueueStatus, SlotStatus
from ledger.entrypoints.web.dependencies import ServiceDep
from ledger.entrypoints.web.errors import error_responses
from ledger.entrypoints.web.schemas import Instant
from ledger.errors import BadInput

__all__ = ["MAX_BUCKETS", "router"]

router = APIRouter(tags=["charts"])

MAX_BUCKETS = 500
DEFAULT_BUCKETS = 120
DEFAULT_SPAN_S = 3600
MAX_STEP_S = 366 * 86_400
MAX_WINDOW_S = 30 * 86_400
MAX_SAMPLES = 1000
HISTOGRAM_BINS = 10
STATUSES = (SlotStatus.IDLE, SlotStatus.DEPLOYING, SlotStatus.BUSY, SlotStatus.ERROR)

Since = Annotated[
    Instant | None,
    Query(description="The window's start (ISO 8601); default an hour before `until`."),
]
Until = Annotated[
    Instant | None, Query(description="The window's end (ISO 8601); default and at most now.")
]
Step = Annotated[
    int | None,
    Query(
        ge=1,
        le=MAX_STEP_S,
        description=f"Seconds per bucket; default the window in {DEFAULT_BUCKETS} buckets, "
        f"raised so the window has at most {MAX_BUCKETS}.",
    ),
]


# --- windows and buckets ---------------------------------------------------------------


@dataclass(frozen=True)
class Grid:
    """A window ``[since, until)`` cut into buckets of ``step`` seconds (the last one
    may be shorter); times inside it are seconds since ``since``."""

    since: datetime
    until: datetime
    step: int

    @classmethod
    def of(cls, since: datetime | None, until: datetime | None, step: int | None) -> Grid:
        now = datetime.now(UTC)
        if since is not None and until is not None and since > until:
            raise BadInput(
                f"since ({since.isoformat()}) is after until ({until.isoformat()})", field="since"
            )
        end = min(until or now, now)
        start = since if since is not None else _earlier(end, DEFAULT_SPAN_S)
        start = min(start, end)
        span = (end - start).total_seconds()
        wanted = step or max(1, math.ceil(span / DEFAULT_BUCKETS))
        return cls(start, end, max(wanted, math.ceil(span / MAX_BUCKETS)))

    @property
    def span(self) -> float:
        return (self.until - self.since).total_seconds()

    @property
    def count(self) -> int:
        return math.ceil(self.span / self.step)

    def start(self, index: int) -> datetime:
        return self.since + timedelta(seconds=index * self.step)

    def length(self, index: int) -> float:
        return min((index + 1) * self.step, self.span) - index * self.step

    def at(self, instant: datetime) -> float:
        """``instant`` in seconds since the window's start."""
        return (instant - self.since).total_seconds()

    def overlaps(self, start: float, end: float) -> Iterator[tuple[int, float]]:
        """Each bucket that ``[start, end)`` overlaps, with the seconds it overlaps."""
        start, end = max(start, 0.0), min(end, self.span)
        if end <= start:
            return
        for index in range(int(start // self.step), math.ceil(end / self.step)):
            shared = min(end, (index + 1) * self.step) - max(start, index * self.step)
            if shared > 0:
                yield index, shared


def _earlier(instant: datetime, seconds: int) -> datetime:
    """``seconds`` before ``instant``, or the earliest instant there is."""
    try:
        return instant - timedelta(seconds=seconds)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


def _rounded(value: float) -> float:
    return round(value, 3)


class _Out(BaseModel):
    model_config = ConfigDict(frozen=True)


class _WindowOut(_Out):
    since: datetime
    until: datetime = Field(description="The end used: the one asked for, at most now.")
    step_s: int = Field(description="Seconds per bucket (the last may be shorter).")

    @classmethod
    def window(cls, grid: Grid) -> dict[str, object]:
        return {"since": grid.since, "until": grid.until, "step_s": grid.step}


# --- the pool over time ----------------------------------------------------------------


class StatusBucketOut(_Out):
    start: datetime
    idle: float = Field(description="Mean number of idle slots over the bucket.")
    deploying: float
    busy: float
    error: float


class TimelineOut(_WindowOut):
    pool: str
    max_size: int = Field(description="The pool's maximum size now.")
    buckets: list[StatusBucketOut]


@router.get("/v1/pool/timeline", responses=error_responses(422))
def pool_timeline(
    service: ServiceDep, since: Since = None, until: Until = None, step: Step = None
) -> TimelineOut:
    """How many slots were in each status over time, from the status intervals: per
    bucket, the mean number of slots in each status (a stacked chart's layers)."""
    grid = Grid.of(since, until, step)
    models = service.models
    seconds = [dict.fromkeys(STATUSES, 0.0) for _ in range(grid.count)]
    for interval in models.intervals_overlapping(grid.since, grid.until):
        end = grid.span if interval.to_ts is None else grid.at(interval.to_ts)
        for index, shared in grid.overlaps(grid.at(interval.from_ts), end):
            seconds[index][interval.status] += shared
    buckets = [
        StatusBucketOut(
            start=grid.start(i),
            **{s.value: _rounded(spent[s] / grid.length(i)) for s in STATUSES},
        )
        for i, spent in enumerate(seconds)
    ]
    return TimelineOut(
        **TimelineOut.window(grid),
        pool=models.pool_name,
        max_size=models.pool_stats().max_size,
        buckets=buckets,
    )


# --- deploy times ----------------------------------------------------------------------


class DeploySampleOut(_Out):
    at: datetime = Field(description="When the slot became busy.")
    seconds: float = Field(description="From deploying to busy.")
    slot_id: UUID
    bot_id: str | None


class HistogramBinOut(_Out):
    start_s: float
    end_s: float
    count: int


class DeployTimesOut(_Out):
    since: datetime
    until: datetime = Field(description="The end used: the one asked for, at most now.")
    count: int = Field(description="Deploys that ended in busy within the window.")
    p50_s: float | None = Field(description="Median (nearest rank); None without deploys.")
    p95_s: float | None = Field(description="95th percentile (nearest rank).")
    mean_s: float | None
    max_s: float | None
    histogram: list[HistogramBinOut] = Field(
        description="Every deploy of the window, binned from the fastest to the slowest."
    )
    samples: list[DeploySampleOut] = Field(
        description=f"The newest {MAX_SAMPLES} deploys, oldest first."
    )


def percentile(ordered: list[float], share: float) -> float:
    """Nearest rank: the smallest value with at least ``share`` of the values at or
    below it (``ordered`` sorted, not empty)."""
    return ordered[max(math.ceil(share * len(ordered)), 1) - 1]


def histogram(ordered: list[float]) -> list[HistogramBinOut]:
    """About :data:`HISTOGRAM_BINS` bins of a round width (1, 2 or 5 x 10^k s) from the
    fastest deploy to the slowest, so a tight distribution still shows its shape."""
    if not ordered:
        return []
    rough = max(ordered[-1] - ordered[0], 0.001) / HISTOGRAM_BINS
    magnitude = 10 ** math.floor(math.log10(rough))
    width = next(m * magnitude for m in (1, 2, 5, 10) if m * magnitude >= rough)
    first = math.floor(ordered[0] / width)
    counts = [0] * (math.floor(ordered[-1] / width) - first + 1)
    for value in ordered:
        counts[math.floor(value / width) - first] += 1
    return [
        HistogramBinOut(
            start_s=_rounded((first + i) * width), end_s=_rounded((first + i + 1) * width), count=n
        )
        for i, n in enumerate(counts)
    ]


@router.get("/v1/stats/deploy-times", responses=error_responses(422))
def deploy_times(
    service: ServiceDep,
    window: Annotated[
        int, Query(ge=1, le=MAX_WINDOW_S, description="Seconds before `until`.")
    ] = DEFAULT_SPAN_S,
    until: Until = None,
) -> DeployTimesOut:
    """How long deploys took (deploying -> busy) that ended within the window."""
    now = datetime.now(UTC)
    end = min(until or now, now)
    start = _earlier(end, window)
    samples = [
        DeploySampleOut(
            at=busy_at,
            seconds=_rounded((busy_at - d.from_ts).total_seconds()),
            slot_id=d.slot_id,
            bot_id=d.bot_id,
        )
        for d in service.models.deploys_ended(start, end)
        if (busy_at := d.to_ts) is not None
    ]
    ordered = sorted(s.seconds for s in samples)
    return DeployTimesOut(
        since=start,
        until=end,
        count=len(ordered),
        p50_s=percentile(ordered, 0.50) if ordered else None,
        p95_s=percentile(ordered, 0.95) if ordered else None,
        mean_s=_rounded(sum(ordered) / len(ordered)) if ordered else None,
        max_s=ordered[-1] if ordered else None,
        histogram=histogram(ordered),
        samples=samples[-MAX_SAMPLES:],
    )


# --- the queue over time ---------------------------------------------------------------


class QueueBucketOut(_Out):
    start: datetime
    waiting: float = Field(description="Mean number of entries waiting over the bucket.")
    longest_wait_s: float = Field(
        description="The longest wait any entry had reached by the bucket's end (or its own)."
    )
    dispatched: int = Field(description="Entries given a slot within the bucket.")
    mean_wait_s: float | None = Field(description="Their mean wait; None when none.")


class QueueWaitOut(_WindowOut):
    buckets: list[QueueBucketOut]


@router.get("/v1/stats/queue-wait", responses=error_responses(422))
def queue_wait(
    service: ServiceDep, since: Since = None, until: Until = None, step: Step = None
) -> QueueWaitOut:
    """The queue over time: how many waited, the longest wait, and the waits of the
    entries dispatched in each bucket."""
    grid = Grid.of(since, until, step)
    waiting = [0.0] * grid.count
    longest = [0.0] * grid.count
    served: list[list[float]] = [[] for _ in range(grid.count)]
    for entry in service.models.queue_overlapping(grid.since, grid.until):
        queued = grid.at(entry.queued_at)
        ended = grid.span if entry.ended_at is None else grid.at(entry.ended_at)
        for index, shared in grid.overlaps(queued, ended):
            waiting[index] += shared
            reached = min(ended, (index + 1) * grid.step, grid.span) - queued
            longest[index] = max(longest[index], reached)
        if entry.status is QueueStatus.DISPATCHED and 0 <= ended < grid.span:
            served[int(ended // grid.step)].append(ended - queued)
    return QueueWaitOut(
        **QueueWaitOut.window(grid),
        buckets=[
            QueueBucketOut(
                start=grid.start(i),
                waiting=_rounded(waiting[i] / grid.length(i)),
                longest_wait_s=_rounded(longest[i]),
                dispatched=len(served[i]),
                mean_wait_s=_rounded(sum(served[i]) / len(served[i])) if served[i] else None,
            )
            for i in range(grid.count)
        ],
    )
