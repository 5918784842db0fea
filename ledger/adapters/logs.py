"""Logging: one line per slot transition, plain or JSON, with secrets redacted.

:class:`TransitionLog` follows the event log from where it started (a log is about what
happens while the process runs, not a replay of history) and turns each status-changing
slot event into a :class:`SlotTransition`: slot, bot, from -> to, actor, correlation id.
Events do not carry the status they leave, so the last status of each slot is kept in
memory and, for a slot first seen mid-life, read once from the aggregate as it was just
before the event.

:func:`configure_logging` is the one logging setup of the long-running commands
(``serve``, ``worker``): ``--log-json`` switches to JSON lines, and every message passes
a filter that blanks the secrets it is given (``ledger.bootstrap.secrets_of`` reads them
from the settings), whatever code logged them.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from ledger.application import SlotLedger
from ledger.domain import TRANSITIONS, Slot, SlotStatus
from projections.engine.fold import Positioned
from projections.engine.follower import (
    Companion,
    LogFollower,
    MemoryTracker,
    Parking,
    TrackedConsumer,
)

__all__ = [
    "NEW",
    "RETIRED",
    "JsonFormatter",
    "SecretFilter",
    "SlotTransition",
    "TransitionLog",
    "configure_logging",
]

log = logging.getLogger("ledger.transitions")

NEW = "new"
"""The source of a slot's first transition (provisioned into ``idle``)."""
RETIRED = "retired"
"""The target of a slot's last transition (out of the pool)."""


@dataclass(frozen=True)
class SlotTransition:
    """A slot moved from one status to another (or into or out of the pool)."""

    position: int
    at: datetime
    slot_id: UUID
    slot: str
    bot_id: str | None
    event: str
    source: str
    target: str
    since: datetime
    """When ``source`` began: ``at - since`` is the time spent in it."""
    actor: str
    correlation_id: str

    def fields(self) -> dict[str, Any]:
        """JSON-ready fields, for ``--log-json`` lines."""
        return {
            k: v.isoformat() if isinstance(v, datetime) else str(v) if isinstance(v, UUID) else v
            for k, v in asdict(self).items()
        }

    def __str__(self) -> str:
        bot = f" bot {self.bot_id}" if self.bot_id else ""
        return (
            f"slot {self.slot}{bot}: {self.source} -> {self.target} ({self.event}) "
            f"by {self.actor} cid={self.correlation_id}"
        )


@dataclass
class _Last:
    name: str
    status: str
    since: datetime


Listener = Callable[[SlotTransition], None]


class TransitionLog(TrackedConsumer[SlotLedger]):
    """Logs every slot transition after ``start_at`` and hands it to the listeners.

    ``active`` says whether this process is the one that logs: with several processes on
    one PostgreSQL store, only the read models' leader does, so each transition is logged
    once. An inactive log skips events and forgets what it knew of their slots (it reads
    them again when it becomes active). In the service, a :class:`Companion` of the
    read-model follower runs it, which stands by while another process leads.

    Not thread-safe: one thread takes its batches.
    """

    name = "transition-log"

    def __init__(
        self,
        ledger: SlotLedger,
        listeners: Sequence[Listener] = (),
        *,
        active: Callable[[], bool] = lambda: True,
        batch: int = 500,
        logger: logging.Logger = log,
    ) -> None:
        self.memory = MemoryTracker()
        super().__init__(ledger, self.memory)
        self.listeners = list(listeners)
        self.active = active
        self.batch = batch
        self.logger = logger
        self._started = False
        self._last: dict[UUID, _Last] = {}

    def start_at(self, position: int | None = None) -> None:
        """Follow from ``position`` (default: the log's current head)."""
        if position is None:
            position = self.ledger.recorder.max_notification_id() or 0
        self.memory.position, self._started = position, True

    def follower(self, leader: LogFollower, parking: Parking | None) -> Companion:
        """The loop that runs this log beside the read-model follower ``leader``."""
        if not self._started:
            self.start_at()
        return Companion(self, leader, parking=parking, poll_interval=0.2, batch_size=self.batch)

    def catch_up(self, batch_size: int | None = None) -> int:
        """Process every event written since the last call; returns how many."""
        if not self._started:
            self.start_at()
        if not self.active():
            self.standby()
            return 0
        return super().catch_up(batch_size or self.batch)

    def standby(self) -> None:
        """Another process logs: skip to the head and forget the slots."""
        self._last.clear()
        self.memory.position = self.ledger.recorder.max_notification_id() or 0

    def handle(self, events: Sequence[Positioned]) -> None:
        for position, event in events:
            if isinstance(event, Slot.SlotEvent):
                self._follow(position, event)

    def _follow(self, position: int, event: Slot.SlotEvent) -> None:
        if (change := self._transition(position, event)) is not None:
            self._emit(change)

    def _transition(self, position: int, event: Slot.SlotEvent) -> SlotTransition | None:
        slot_id = event.originator_id
        if isinstance(event, Slot.SlotProvisioned):
            last = _Last(event.name, NEW, event.timestamp)
            target = SlotStatus.IDLE.value
        else:
            rule = TRANSITIONS.get(type(event).__name__)
            if rule is None or (rule.target is None and not rule.retires):
                return None  # the status is unchanged: not a transition
            last = self._last.get(slot_id) or self._before(slot_id, event.originator_version)
            target = RETIRED if rule.retires else str(rule.target)
        self._last[slot_id] = _Last(last.name, target, event.timestamp)
        return SlotTransition(
            position=position,
            at=event.timestamp,
            slot_id=slot_id,
            slot=last.name,
            bot_id=event.bot_id,
            event=type(event).__name__,
            source=last.status,
            target=target,
            since=last.since,
            actor=event.actor,
            correlation_id=event.correlation_id,
        )

    def _before(self, slot_id: UUID, version: int) -> _Last:
        """The slot as it was just before the event at ``version`` (first sight of it)."""
        slot: Slot = self.ledger.repository.get(slot_id, version=version - 1)
        status = RETIRED if slot.retired else slot.status.value
        return _Last(slot.name, status, slot.status_since)

    def _emit(self, change: SlotTransition) -> None:
        self.logger.info("%s", change, extra={"transition": change.fields()})
        for listener in self.listeners:
            try:
                listener(change)
            except Exception:  # a broken listener must not stop the log
                self.logger.exception("transition listener %r failed", listener)


class SecretFilter(logging.Filter):
    """Replaces each secret with ``[REDACTED]`` in every record's final message."""

    def __init__(self, secrets: Iterable[str]) -> None:
        super().__init__()
        self.secrets = [s for s in secrets if s]

    def filter(self, record: logging.LogRecord) -> bool:
        if not self.secrets:
            return True
        message = record.getMessage()
        redacted = message
        for secret in self.secrets:
            redacted = redacted.replace(secret, "[REDACTED]")
        if redacted != message:
            record.msg, record.args = redacted, None
        return True


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, and a transition's fields."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        transition = getattr(record, "transition", None)
        if isinstance(transition, dict):
            entry.update(transition)
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry, default=str)


def configure_logging(
    *, json_lines: bool = False, secrets: Iterable[str] = (), level: int = logging.INFO
) -> None:
    """Route every logger (uvicorn's too) to stderr, plain or as JSON lines."""
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(
        JsonFormatter()
        if json_lines
        else logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s")
    )
    handler.addFilter(SecretFilter(secrets))
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        uvicorn_logger = logging.getLogger(name)
        uvicorn_logger.handlers.clear()
        uvicorn_logger.propagate = True
    # One line per Coolify request drowns the transitions; errors still show.
    logging.getLogger("httpx").setLevel(max(level, logging.WARNING))
