"""Invariant checker: reads any event log and reports what must never happen.

It trusts nothing but the events themselves, so it can audit a production log, an
imported incident bundle, or the log a concurrency test produced:

- ``slot_two_bots``: a slot acquired while another bot held it;
- ``bot_two_slots``: a bot acquiring a second slot while holding one;
- ``illegal_transition``: an event its slot's status does not allow (transition table);
- ``queue_starved``: a queue entry waiting while a slot stood idle for too long.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any
from uuid import UUID

from eventsourcing.application import Application

from ledger.domain.queue import QueueEntry
from ledger.domain.slot import TRANSITIONS, Slot, SlotStatus

__all__ = ["CheckReport", "Violation", "check_events", "iter_log"]


@dataclass(frozen=True)
class Violation:
    kind: str
    position: int
    timestamp: datetime
    detail: str
    slot_id: UUID | None = None
    bot_id: str | None = None


@dataclass
class CheckReport:
    events: int = 0
    acquisitions: int = 0
    violations: list[Violation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations


def iter_log(app: Application[Any], *, batch: int = 1000) -> Iterator[tuple[int, Any]]:
    """Every event of an application's log with its position, in log order."""
    start = 0
    while True:
        notifications = app.recorder.select_notifications(start, batch, inclusive_of_start=False)
        for n in notifications:
            yield n.id, app.mapper.to_domain_event(n)
        if len(notifications) < batch:
            return
        start = notifications[-1].id


@dataclass
class _SlotState:
    status: SlotStatus = SlotStatus.IDLE
    holder: str | None = None
    platform: str = ""
    retired: bool = False


@dataclass
class _Checker:
    queue_grace_s: float
    report: CheckReport = field(default_factory=CheckReport)
    slots: dict[UUID, _SlotState] = field(default_factory=dict)
    holders: dict[str, UUID] = field(default_factory=dict)
    waiting: dict[UUID, QueueEntry.QueueEntryEnqueued] = field(default_factory=dict)
    starved_since: datetime | None = None
    starvation_reported: bool = False

    def violate(self, kind: str, position: int, event: Any, detail: str, **ids: Any) -> None:
        self.report.violations.append(Violation(kind, position, event.timestamp, detail, **ids))

    def feed(self, position: int, event: Any) -> None:
        self.report.events += 1
        if isinstance(event, Slot.SlotEvent):
            self.slot_event(position, event)
        elif isinstance(event, QueueEntry.QueueEntryEnqueued):
            self.waiting[event.originator_id] = event
        elif isinstance(event, QueueEntry.QueueEvent):
            self.waiting.pop(event.originator_id, None)
        self.watch_queue(position, event)

    def slot_event(self, position: int, event: Slot.SlotEvent) -> None:
        slot_id, name = event.originator_id, type(event).__name__
        if isinstance(event, Slot.SlotProvisioned):
            if slot_id in self.slots:
                self.violate(
                    "illegal_transition", position, event, "slot provisioned twice", slot_id=slot_id
                )
            self.slots[slot_id] = _SlotState(platform=event.platform)
            return
        state = self.slots.setdefault(slot_id, _SlotState())
        transition = TRANSITIONS.get(name)
        if transition is None:
            return
        if state.retired or state.status not in transition.sources:
            was = "retired" if state.retired else state.status.value
            self.violate(
                "illegal_transition",
                position,
                event,
                f"{name} from {was}",
                slot_id=slot_id,
                bot_id=event.bot_id,
            )
        if isinstance(event, Slot.SlotAcquired):
            self.acquired(position, event, state)
        elif isinstance(event, Slot.SlotReleased | Slot.SlotFailed) and state.holder:
            self.holders.pop(state.holder, None)
            state.holder = None
        if transition.target is not None:
            state.status = transition.target
        state.retired = state.retired or transition.retires

    def acquired(self, position: int, event: Slot.SlotAcquired, state: _SlotState) -> None:
        bot, slot_id = event.bot_id or "", event.originator_id
        self.report.acquisitions += 1
        if state.holder is not None and state.holder != bot:
            self.violate(
                "slot_two_bots",
                position,
                event,
                f"acquired by {bot!r} while {state.holder!r} held it",
                slot_id=slot_id,
                bot_id=bot,
            )
        other = self.holders.get(bot)
        if other is not None and other != slot_id:
            self.violate(
                "bot_two_slots",
                position,
                event,
                f"bot {bot!r} acquired a second slot while holding {other}",
                slot_id=slot_id,
                bot_id=bot,
            )
        state.holder = bot
        self.holders[bot] = slot_id

    def watch_queue(self, position: int, event: Any) -> None:
        idle_platforms = {
            s.platform for s in self.slots.values() if s.status is SlotStatus.IDLE and not s.retired
        }
        starving = any(
            e.platform is None or e.platform in idle_platforms for e in self.waiting.values()
        )
        if not starving:
            self.starved_since, self.starvation_reported = None, False
            return
        if self.starved_since is None:
            self.starved_since = event.timestamp
        waited = (event.timestamp - self.starved_since).total_seconds()
        if waited > self.queue_grace_s and not self.starvation_reported:
            self.starvation_reported = True
            self.violate(
                "queue_starved",
                position,
                event,
                f"queue entries waited {waited:.1f}s while a slot was idle",
            )


def check_events(events: Iterable[tuple[int, Any]], *, queue_grace_s: float = 30.0) -> CheckReport:
    """Replay ``(position, event)`` pairs and collect every invariant violation."""
    checker = _Checker(queue_grace_s=queue_grace_s)
    for position, event in events:
        checker.feed(position, event)
    return checker.report
