"""Prometheus metrics of one running service, in a registry of its own.

Counters and histograms are fed as things happen (API requests, Coolify responses, slot
transitions seen in the event log). Gauges are read from the read models when scraped,
so they never drift from the ledger and cost nothing between scrapes; so is the health
of every background loop (``slotledger_loop_*{loop}``), from memory, so it stays
visible while the store is down. Each
:class:`Metrics` owns a :class:`CollectorRegistry`, so tests can run several services in
one process.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.exposition import CONTENT_TYPE_LATEST
from prometheus_client.registry import Collector

from ledger.adapters.coolify.budget import BudgetStats
from ledger.adapters.logs import SlotTransition
from ledger.domain import SlotStatus
from ledger.loops import LoopHealth

__all__ = ["CONTENT_TYPE", "Gauges", "Metrics"]

log = logging.getLogger("ledger.metrics")

CONTENT_TYPE = CONTENT_TYPE_LATEST

_LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)
_DEPLOYING_BUCKETS = (1.0, 2.0, 5.0, 10.0, 20.0, 30.0, 60.0, 120.0, 300.0, 600.0, 900.0)


@dataclass(frozen=True)
class Gauges:
    """The state-derived values, read at scrape time."""

    slots: dict[SlotStatus, int]
    max_size: int
    queue_length: int
    lag_events: int
    lag_seconds: float
    heartbeat_age_s: float | None
    parked: dict[str, int]
    """Unresolved parked events per consumer."""
    loop_lags: dict[str, int | None]
    """Events each log follower has still to take (None: unknown, or on standby)."""
    heartbeat_refusals_unrecorded: int = 0
    """Heartbeats refused without an event (one event per slot and bot per minute)."""


class _StateCollector(Collector):
    """Turns a :class:`Gauges` reading into metric families at each scrape. A failed
    reading (store down) drops these families from that scrape instead of failing it,
    so the counters stay visible while the store is unreachable."""

    def __init__(self, read: Callable[[], Gauges]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        try:
            gauges = self._read()
        except Exception as e:
            log.warning("metrics: could not read the pool state: %r", e)
            return
        slots = GaugeMetricFamily(
            "slotledger_slots", "Slots in the pool by status (retired excluded).", labels=["status"]
        )
        for status in SlotStatus:
            slots.add_metric([status.value], gauges.slots.get(status, 0))
        yield slots
        yield GaugeMetricFamily(
            "slotledger_pool_max_size", "Maximum number of slots in the pool.", gauges.max_size
        )
        yield GaugeMetricFamily(
            "slotledger_queue_length", "Requests waiting for a slot.", gauges.queue_length
        )
        yield GaugeMetricFamily(
            "slotledger_projection_lag_events",
            "Events written to the log but not yet in the read models (upper bound).",
            gauges.lag_events,
        )
        yield GaugeMetricFamily(
            "slotledger_projection_lag_seconds",
            "Age of the newest projected event while the read models are behind, else 0.",
            gauges.lag_seconds,
        )
        if gauges.heartbeat_age_s is not None:
            yield GaugeMetricFamily(
                "slotledger_projection_heartbeat_age_seconds",
                "Seconds since the read model follower last looked at the log.",
                gauges.heartbeat_age_s,
            )
        parked = GaugeMetricFamily(
            "slotledger_parked_events",
            "Events a consumer could not take and went on past, waiting for an operator "
            "(`slotledger parked`).",
            labels=["consumer"],
        )
        for consumer, count in sorted(gauges.parked.items()):
            parked.add_metric([consumer], count)
        yield parked
        lags = GaugeMetricFamily(
            "slotledger_loop_lag_events",
            "Events written to the log that a log follower has not taken yet (upper bound).",
            labels=["loop"],
        )
        for name, lag in sorted(gauges.loop_lags.items()):
            if lag is not None:
                lags.add_metric([name], lag)
        yield lags
        yield CounterMetricFamily(
            "slotledger_heartbeat_refusals_unrecorded",
            "Heartbeats from a bot that does not hold the slot, refused (409) within a "
            "minute of the recorded SlotHeartbeatRefused of the same slot and bot.",
            value=gauges.heartbeat_refusals_unrecorded,
        )


class _LoopCollector(Collector):
    """The health of every background loop, from memory: no store needed."""

    def __init__(self, read: Callable[[], list[LoopHealth]]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        loops = self._read()
        up = GaugeMetricFamily(
            "slotledger_loop_up",
            "1 while a background loop runs (or stands by) without failing, else 0.",
            labels=["loop"],
        )
        failures = CounterMetricFamily(
            "slotledger_loop_failures",
            "Failed rounds of a background loop (failed deploys for `deploys`).",
            labels=["loop"],
        )
        in_a_row = GaugeMetricFamily(
            "slotledger_loop_consecutive_failures",
            "Failed rounds of a background loop since its last success.",
            labels=["loop"],
        )
        age = GaugeMetricFamily(
            "slotledger_loop_last_success_age_seconds",
            "Seconds since a background loop last finished a round.",
            labels=["loop"],
        )
        tasks = GaugeMetricFamily(
            "slotledger_loop_running_tasks",
            "Tasks a task pool runs now (deploys in flight).",
            labels=["loop"],
        )
        for h in loops:
            up.add_metric([h.name], 1 if h.up else 0)
            failures.add_metric([h.name], h.failures_total)
            in_a_row.add_metric([h.name], h.consecutive_failures)
            if h.last_success_age_s is not None:
                age.add_metric([h.name], h.last_success_age_s)
            if h.running_tasks is not None:
                tasks.add_metric([h.name], h.running_tasks)
        yield from (up, failures, in_a_row, age, tasks)


class _ViolationCollector(Collector):
    """The invariant violations recorded in the log, by kind, at each scrape: every
    process of the store shows the same totals, whichever one checks. A failed reading
    drops the families from that scrape."""

    def __init__(self, read: Callable[[], Mapping[str, int]], kinds: Sequence[str]) -> None:
        self._read = read
        self._kinds = kinds

    def collect(self) -> Iterator[Metric]:
        try:
            totals = self._read()
        except Exception as e:
            log.warning("metrics: could not read the invariant violations: %r", e)
            return
        recorded = CounterMetricFamily(
            "slotledger_invariant_violations",
            "Invariant violations the always-on checker recorded (InvariantViolated), by kind.",
            labels=["kind"],
        )
        for kind in sorted({*self._kinds, *totals}):
            recorded.add_metric([kind], totals.get(kind, 0))
        yield recorded


class _BudgetCollector(Collector):
    """The Coolify request budget (:mod:`ledger.adapters.coolify.budget`), at each scrape."""

    def __init__(self, read: Callable[[], BudgetStats]) -> None:
        self._read = read

    def collect(self) -> Iterator[Metric]:
        budget = self._read()
        yield GaugeMetricFamily(
            "slotledger_coolify_budget_per_minute",
            "Coolify requests the budget allows per minute (on PostgreSQL, for every process "
            "of the store together).",
            budget.per_minute,
        )
        for name, text, value in (
            ("requests", "Coolify requests this process sent, retries included.", budget.sent),
            ("budget_waits", "Coolify requests that waited for room in the budget.", budget.waits),
            (
                "budget_wait_seconds",
                "Time Coolify requests spent waiting for room in the budget.",
                budget.waited_s,
            ),
            (
                "budget_timeouts",
                "Coolify requests not sent: no room came in the budget in time.",
                budget.timeouts,
            ),
            (
                "budget_fallbacks",
                "Times the shared budget could not be reached and this process drew from its own.",
                budget.fallbacks,
            ),
        ):
            yield CounterMetricFamily(f"slotledger_coolify_{name}", text, value)
        if budget.available is not None:
            yield GaugeMetricFamily(
                "slotledger_coolify_budget_available",
                "Coolify requests the budget has room for now (the limit less the last minute's).",
                budget.available,
            )


class Metrics:
    """The instruments of one service."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.acquire_latency = Histogram(
            "slotledger_acquire_latency_seconds",
            "Time to answer a slot request, by outcome (acquired or queued).",
            ["outcome"],
            buckets=_LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.deploying_time = Histogram(
            "slotledger_deploying_seconds",
            "Time slots spent deploying, by the status they left it for.",
            ["to"],
            buckets=_DEPLOYING_BUCKETS,
            registry=self.registry,
        )
        self.coolify_errors = Counter(
            "slotledger_coolify_errors",
            "Coolify API responses with an error status, by method, path and status.",
            ["method", "path", "status"],
            registry=self.registry,
        )
        self.transitions = Counter(
            "slotledger_transitions",
            "Slot transitions seen in the event log, by source and target status.",
            ["source", "target"],
            registry=self.registry,
        )

    def watch(self, read: Callable[[], Gauges]) -> None:
        """Expose the state gauges, read with ``read`` at each scrape."""
        self.registry.register(_StateCollector(read))

    def watch_loops(self, read: Callable[[], list[LoopHealth]]) -> None:
        """Expose the loops' health, read with ``read`` at each scrape."""
        self.registry.register(_LoopCollector(read))

    def watch_violations(
        self, read: Callable[[], Mapping[str, int]], kinds: Sequence[str] = ()
    ) -> None:
        """Expose the recorded invariant violations per kind (each of ``kinds`` from 0),
        read with ``read`` at each scrape."""
        self.registry.register(_ViolationCollector(read, kinds))

    def watch_budget(self, read: Callable[[], BudgetStats]) -> None:
        """Expose the Coolify request budget, read with ``read`` at each scrape."""
        self.registry.register(_BudgetCollector(read))

    def coolify_response(self, method: str, path: str, status: int) -> None:
        """The Coolify client's response hook."""
        if status >= 400:
            self.coolify_errors.labels(method, path, str(status)).inc()

    def transition(self, change: SlotTransition) -> None:
        """A listener of :class:`ledger.logs.TransitionLog`."""
        self.transitions.labels(change.source, change.target).inc()
        if change.source == SlotStatus.DEPLOYING and change.target != SlotStatus.DEPLOYING:
            seconds = (change.at - change.since).total_seconds()
            self.deploying_time.labels(change.target).observe(max(seconds, 0.0))

    def render(self) -> bytes:
        """The Prometheus text exposition of every metric."""
        return generate_latest(self.registry)
