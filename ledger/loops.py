"""What every background loop shares: a jittered backoff and a health record.

A background loop (read-model follower, description mirror, transition log, policy
worker, queue drain) must survive any exception, come back quickly once the store
answers again, and say how it is doing. :class:`Backoff` bounds the pause after a
failure at about two seconds, so every loop works again within a few seconds of the
store's return; :class:`Health` is what ``/readyz`` and ``/metrics`` read.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass, replace
from typing import Literal

from ledger.errors import store_unavailable

__all__ = ["Backoff", "Health", "LoopHealth", "LoopState", "describe_error", "log_failure"]

LoopState = Literal["running", "failing", "standby", "stopped"]

_MAX_ERROR_CHARS = 300


def describe_error(error: BaseException) -> str:
    """``Type: first line of the message``, cut short: enough to act on, never a dump
    of parameters (callers redact configured secrets before showing it)."""
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    return text if len(text) <= _MAX_ERROR_CHARS else text[: _MAX_ERROR_CHARS - 1] + "…"


def log_failure(logger: logging.Logger, what: str, error: BaseException, after: str) -> None:
    """Log that ``what`` failed and what happens ``after``. An outage (the store did not
    answer, see :func:`~ledger.errors.store_unavailable`) is one line: it is expected,
    the line says all there is to know, and a traceback for each would bury the log. Any
    other error is a bug and keeps its traceback."""
    outage = store_unavailable(error)
    if outage is None:
        logger.error("%s failed; %s", what, after, exc_info=error)
    else:
        logger.warning("%s failed: %s; %s", what, outage.detail, after)


class Backoff:
    """Doubling pauses from ``min_s`` to ``max_s``, each drawn between half and all of
    the current step, so processes that failed together do not retry in lockstep."""

    def __init__(self, min_s: float = 0.05, max_s: float = 2.0) -> None:
        self.min_s = min_s
        self.max_s = max_s
        self._step = min_s

    def next(self) -> float:
        """The pause before the next attempt; each call doubles the step, up to max_s."""
        step, self._step = self._step, min(self._step * 2, self.max_s)
        return random.uniform(step / 2, step)

    def reset(self) -> None:
        self._step = self.min_s


@dataclass(frozen=True)
class LoopHealth:
    """One loop's state as ``/readyz`` and ``/metrics`` show it."""

    name: str
    state: LoopState
    failures_total: int
    consecutive_failures: int
    last_error: str | None
    """The last failure, ``Type: message``; kept after a recovery, for the record."""
    last_success_age_s: float | None
    """Seconds since the last successful round; None before the first."""
    position: int | None = None
    """Log followers: the last position taken."""
    lag_events: int | None = None
    """Log followers: events written but not yet taken (upper bound)."""
    running_tasks: int | None = None
    """Task pools (the deploys): how many run now."""
    detail: str | None = None
    """What the state means where it is not obvious (who leads the policy worker)."""

    @property
    def up(self) -> bool:
        return self.state in ("running", "standby")

    def redacted(self, secrets: Iterable[str]) -> LoopHealth:
        """This health with each secret blanked from its last error, for open endpoints."""
        error = self.last_error
        if error is None:
            return self
        for secret in secrets:
            error = error.replace(secret, "[REDACTED]")
        return replace(self, last_error=error)


class Health:
    """The mutable side of :class:`LoopHealth`, written by the loop's own thread and read
    by others: every field is replaced whole, under a lock."""

    def __init__(self, name: str) -> None:
        self.name = name
        self._lock = threading.Lock()
        self._failures_total = 0
        self._consecutive = 0
        self._last_error: str | None = None
        self._last_success: float | None = None
        self._standby = False

    def succeeded(self, *, standby: bool = False) -> None:
        with self._lock:
            self._consecutive = 0
            self._last_success = time.monotonic()
            self._standby = standby

    def failed(self, error: BaseException) -> int:
        """Record a failure; returns how many in a row."""
        with self._lock:
            self._failures_total += 1
            self._consecutive += 1
            self._last_error = describe_error(error)
            return self._consecutive

    @property
    def consecutive_failures(self) -> int:
        return self._consecutive

    def snapshot(
        self,
        *,
        alive: bool = True,
        position: int | None = None,
        lag_events: int | None = None,
        running_tasks: int | None = None,
    ) -> LoopHealth:
        """The current health; ``alive`` says whether the loop's thread runs."""
        with self._lock:
            state: LoopState = (
                "stopped"
                if not alive
                else "failing"
                if self._consecutive
                else "standby"
                if self._standby
                else "running"
            )
            age = None if self._last_success is None else time.monotonic() - self._last_success
            return LoopHealth(
                name=self.name,
                state=state,
                failures_total=self._failures_total,
                consecutive_failures=self._consecutive,
                last_error=self._last_error,
                last_success_age_s=age,
                position=position,
                lag_events=lag_events,
                running_tasks=running_tasks,
            )
