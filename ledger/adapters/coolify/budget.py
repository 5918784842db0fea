"""One budget for every request slotledger sends to Coolify.

Coolify throttles its API per token: 200 requests a minute by default, counted in
Laravel's fixed one-minute windows (API.md §0). The budget is a sliding-window log
(pyrate-limiter's ``SlidingWindowLog``): no 60 seconds ever hold more than
``per_minute`` requests, so no fixed window of Coolify's can either, where a token
bucket of the same rate lets up to twice as many through around a window's edge. A
request that finds the window full waits for room, up to the caller's bound.

On PostgreSQL the log is a table beside the events (pyrate-limiter's ``PostgresBucket``:
count and insert under a table lock, timestamps from the database's clock), so every
process of the store draws from one budget and the 200 per token hold whatever the
number of ``serve`` and ``worker`` processes. On SQLite the log is in memory, for the one
process. When the shared table cannot be reached, the process draws from its own log for
``FALLBACK_S``, so a database outage does not also stop the Coolify calls that need no
database; Coolify's 429 with ``Retry-After``, which the client honours, stays the backstop.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from dataclasses import dataclass

from psycopg_pool import ConnectionPool
from pyrate_limiter import (
    AbstractBucket,
    Duration,
    InMemoryBucket,
    Limiter,
    PostgresBucket,
    Rate,
    RateItem,
    SingleBucketFactory,
)

from ledger.errors import store_unavailable
from ledger.loops import describe_error

__all__ = ["BudgetStats", "RequestBudget"]

log = logging.getLogger("ledger.coolify.budget")


class _ClockFallbackFilter(logging.Filter):
    """pyrate-limiter logs a traceback each time its database clock falls back to the
    local one (every draw of an outage). The fallback is harmless, and the outage is told
    once by this module when the bucket itself fails, so those records are dropped."""

    def filter(self, record: logging.LogRecord) -> bool:
        return not record.getMessage().startswith("Postgres time query failed")


logging.getLogger("pyrate_limiter.clocks").addFilter(_ClockFallbackFilter())

_ITEM = "coolify"
_SETTLE_S = 0.01
"""Added to each pause, so a try does not come a hair before the room it waits for."""
TABLE = "coolify_budget"
"""pyrate-limiter names the table ``ratelimit___coolify_budget``, in the store's schema."""


@dataclass(frozen=True)
class BudgetStats:
    """What ``/metrics`` shows of the budget."""

    per_minute: int
    shared: bool
    """True when every process of the store draws from this budget (PostgreSQL)."""
    sent: int
    """Requests this process drew (and so sent)."""
    waits: int
    """Draws that found the window full and waited."""
    waited_s: float
    timeouts: int
    """Waits that ran out before room came: the request was not sent."""
    fallbacks: int
    """Times the shared log could not be reached and this process drew from its own."""
    available: int | None
    """Requests the window has room for now; None when that cannot be read."""


class RequestBudget:
    """Thread-safe: one per process, drawn from before every request the client sends."""

    FALLBACK_S = 10.0
    BLOCK_SHARE = 200
    """A process draws ``per_minute // BLOCK_SHARE`` requests at a time (at least one, so
    a budget of Coolify's usual size draws one by one): a large budget is not paid for
    with a round trip and a table lock per request."""
    LEASE_S = 1.0
    """Requests of a block not sent within this lapse: a window then takes at most one
    block per process more than its limit (half a percent of it)."""
    LEAK_EVERY_S = 10.0
    """Entries older than the window are deleted this often (by the drawing thread: the
    library's own leaker thread ends for good on the first database error)."""

    def __init__(self, per_minute: int, shared: AbstractBucket | None = None) -> None:
        if per_minute < 1:
            raise ValueError("a Coolify request budget needs at least one request a minute")
        self.per_minute = per_minute
        self.block = max(1, per_minute // self.BLOCK_SHARE)
        rates = [Rate(per_minute, Duration.MINUTE)]
        self._buckets: dict[bool, AbstractBucket] = {False: InMemoryBucket(rates)}
        if shared is not None:
            self._buckets[True] = shared
        self._limiters = {
            is_shared: Limiter(SingleBucketFactory(bucket, schedule_leak=False))
            for is_shared, bucket in self._buckets.items()
        }
        self._lock = threading.Lock()
        self._sent = self._waits = self._timeouts = self._fallbacks = 0
        self._waited_s = 0.0
        self._leased = 0
        self._lease_ends = 0.0
        self._shared_down_until = 0.0
        self._leaked_at = time.monotonic()

    @classmethod
    def on_postgres(cls, conninfo: str, schema: str, per_minute: int) -> RequestBudget:
        """The budget of every process on the store's schema; its table is created when
        missing. One connection of its own: a draw holds it for milliseconds, and draws
        take turns on it (the README counts it in each process's bound)."""
        pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=1,
            kwargs={"options": f"-c search_path={schema}"},
            timeout=2.0,
            name="coolify-budget",
            open=True,
        )
        try:
            bucket = PostgresBucket(pool, TABLE, [Rate(per_minute, Duration.MINUTE)])
        except BaseException:
            pool.close()
            raise
        return cls(per_minute, bucket)

    @property
    def shared(self) -> bool:
        return True in self._buckets

    def acquire(self, timeout_s: float) -> bool:
        """Draw one request, waiting up to ``timeout_s`` for room; False when none came."""
        if self._take_leased():
            return True
        use_shared = self._shared_up()
        try:
            drawn = self._draw(use_shared, timeout_s)
        except Exception as e:
            if not use_shared or store_unavailable(e) is None:
                raise
            self._fall_back(e)
            drawn = self._draw(False, timeout_s)
        self._leak_if_due()
        return drawn

    def stats(self) -> BudgetStats:
        with self._lock:
            counts = (self._sent, self._waits, self._waited_s, self._timeouts, self._fallbacks)
        sent, waits, waited_s, timeouts, fallbacks = counts
        return BudgetStats(
            self.per_minute,
            self.shared,
            sent,
            waits,
            waited_s,
            timeouts,
            fallbacks,
            self._available(),
        )

    def close(self) -> None:
        for limiter in self._limiters.values():
            limiter.close()

    def _take_leased(self) -> bool:
        """One request of the block drawn last, if it has not lapsed."""
        with self._lock:
            if self._leased and time.monotonic() < self._lease_ends:
                self._leased -= 1
                self._sent += 1
                return True
            return False

    def _drew(self) -> None:
        """A block was drawn: one request is sent now, the rest is leased (the caller
        holds the lock)."""
        self._sent += 1
        self._leased = self.block - 1
        self._lease_ends = time.monotonic() + self.LEASE_S

    def _shared_up(self) -> bool:
        return self.shared and time.monotonic() >= self._shared_down_until

    def _draw(self, shared: bool, timeout_s: float) -> bool:
        """Non-blocking tries, sleeping in between as long as the bucket says room takes:
        each try stamps the request with the clock's time. (The library's blocking wait
        stamps it with the time it meant to wake, so a sleep that overran, on a busy
        machine, dates the request early and lets the window take more than its limit.)"""
        bucket, limiter = self._buckets[shared], self._limiters[shared]
        if limiter.try_acquire(_ITEM, weight=self.block, blocking=False) is True:
            with self._lock:
                self._drew()
            return True
        with self._lock:
            self._waits += 1  # counted as it starts: a long wait shows while it lasts
        started = time.monotonic()
        deadline = started + timeout_s
        drawn = False
        while not drawn and (remaining := deadline - time.monotonic()) > 0:
            wait_ms = bucket.waiting(RateItem(_ITEM, _now(bucket), self.block))
            pause = max(wait_ms if isinstance(wait_ms, int) else 0, 0) / 1000 + _SETTLE_S
            time.sleep(min(pause * random.uniform(1.0, 1.2), remaining))
            drawn = limiter.try_acquire(_ITEM, weight=self.block, blocking=False) is True
        with self._lock:
            self._waited_s += time.monotonic() - started
            if drawn:
                self._drew()
            else:
                self._timeouts += 1
        return drawn

    def _fall_back(self, error: Exception) -> None:
        with self._lock:
            self._fallbacks += 1
            self._shared_down_until = time.monotonic() + self.FALLBACK_S
        log.warning(
            "the shared Coolify request budget cannot be reached (%s); this process draws "
            "from its own for %.0fs",
            describe_error(error),
            self.FALLBACK_S,
        )

    def _leak_if_due(self) -> None:
        now = time.monotonic()
        with self._lock:
            if now - self._leaked_at < self.LEAK_EVERY_S:
                return
            self._leaked_at = now
        for bucket in self._buckets.values():
            try:
                bucket.leak(_now(bucket))
            except Exception as e:  # the next round tries again; a draw must not fail
                log.debug("leaking the Coolify budget failed: %s", describe_error(e))

    def _available(self) -> int | None:
        """Room in the window now: the limit less the entries of the last minute, found
        by bisecting the newest ``per_minute`` entries (the library keeps them in order)."""
        bucket = self._buckets[self._shared_up()]
        try:
            start = _now(bucket) - Duration.MINUTE.value
            low, high = 0, self.per_minute
            while low < high:
                middle = (low + high) // 2
                item = bucket.peek(middle)
                if isinstance(item, RateItem) and item.timestamp >= start:
                    low = middle + 1
                else:
                    high = middle
        except Exception as e:
            log.debug("reading the Coolify budget failed: %s", describe_error(e))
            return None
        return self.per_minute - low


def _now(bucket: AbstractBucket) -> int:
    now = bucket.now()  # type: ignore[no-untyped-call]  # untyped in pyrate-limiter 4.5
    if not isinstance(now, int):  # an async bucket; ours are synchronous
        raise TypeError(f"{type(bucket).__name__} is not synchronous")
    return now
