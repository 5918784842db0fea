"""Live following: a background thread that keeps one model set at the log's head.

Backends say how to learn about new events (LISTEN/NOTIFY, polling) and how to become
the set's only writer; this loop projects while leading, reconnects with exponential
backoff on any error (a projector that dies silently after a database outage is the
failure to avoid), and publishes its position so commands can wait for their writes.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from dataclasses import replace
from typing import Self

from projections.readmodels import ReadModels
from projections.records import Lag

__all__ = ["Follower"]

log = logging.getLogger(__name__)

_SLICE = 0.1
"""Longest uninterruptible wait, so stop() is prompt."""


class Follower(ABC):
    """Keeps ``models`` following the log from a thread, between start() and stop()."""

    def __init__(
        self,
        models: ReadModels,
        *,
        poll_interval: float,
        min_backoff: float = 0.05,
        max_backoff: float = 2.0,
    ) -> None:
        self.models = models
        self.poll_interval = poll_interval
        self.min_backoff = min_backoff
        self.max_backoff = max_backoff
        self.is_leader = False
        self.errors = 0
        self.last_error: BaseException | None = None
        self._position = -1
        self._heartbeat: float | None = None
        self._changed = threading.Condition()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    # --- backend -------------------------------------------------------------------------

    @abstractmethod
    def _connect(self) -> None:
        """Open whatever the follower needs to hear about new events."""

    @abstractmethod
    def _try_lead(self) -> bool:
        """Become the model set's only writer, if nobody else is."""

    @abstractmethod
    def _wait_for_news(self, timeout: float) -> bool:
        """Block up to ``timeout`` seconds; True when new events were announced."""

    @abstractmethod
    def _disconnect(self) -> None:
        """Close connections and give up leadership; must not raise."""

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> Self:
        if self._thread is None:
            self._stopping.clear()
            self._thread = threading.Thread(
                target=self._run, name=f"{type(self).__name__}", daemon=True
            )
            self._thread.start()
        return self

    def stop(self, timeout: float = 10.0) -> None:
        self._stopping.set()
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
        backoff = self.min_backoff
        while not self._stopping.is_set():
            delay = 0.0
            try:
                self._connect()
                while not self._stopping.is_set():
                    self._cycle()
                    backoff = self.min_backoff
                    self._idle()
            except Exception as e:
                self.errors += 1
                self.last_error = e
                log.warning("read model follower failed (retrying in %.2fs): %r", backoff, e)
                delay, backoff = backoff, min(backoff * 2, self.max_backoff)
            finally:
                self.is_leader = False
                self._disconnect()
            self._stopping.wait(delay)

    def _cycle(self) -> None:
        """Lead if possible and project up to the head; publish the position either way."""
        self.is_leader = self.is_leader or self._try_lead()
        if self.is_leader:
            while not self._stopping.is_set() and self.models.project():
                self._publish(self.models.position())
        self._publish(self.models.position())
        self._heartbeat = time.monotonic()

    def _idle(self) -> None:
        """Wait for news, or for the poll interval, in short slices."""
        deadline = time.monotonic() + self.poll_interval
        while not self._stopping.is_set() and (remaining := deadline - time.monotonic()) > 0:
            if self._wait_for_news(min(remaining, _SLICE)):
                return

    def _publish(self, position: int) -> None:
        with self._changed:
            if position != self._position:
                self._position = position
                self._changed.notify_all()

    # --- observing -----------------------------------------------------------------------

    def lag(self) -> Lag:
        """The models' lag, plus how long ago this follower last looked at the log."""
        heartbeat = None if self._heartbeat is None else time.monotonic() - self._heartbeat
        return replace(self.models.lag(), heartbeat_s=heartbeat)

    def wait(self, position: int, timeout: float = 5.0) -> None:
        """Read-your-writes: return once the models include ``position``. While leading,
        this is woken by the follower's own commits; otherwise it polls the models."""
        if not self.is_leader:
            self.models.wait(position, timeout)
            return
        deadline = time.monotonic() + timeout
        with self._changed:
            while self._position < position and (remaining := deadline - time.monotonic()) > 0:
                self._changed.wait(remaining)
        if self._position < position:
            self.models.wait(position, 0)
