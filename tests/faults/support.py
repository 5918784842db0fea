"""What every fault test checks at the end, and the client-side log it checks against.

A client records a command only after the ledger acknowledged it (the call returned);
"no event lost" then means every recorded command has its event in the log, found by
the correlation id the client chose.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from ledger.application import Outcome, SlotLedger
from ledger.application.deploy import Acquired, Queued
from ledger.domain import QueueEntry, Slot, SlotStatus
from ledger.domain.invariants import check_events, iter_log

EXPECTED_EVENT: dict[str, type[Any]] = {
    "acquired": Slot.SlotAcquired,
    "queued": QueueEntry.QueueEntryEnqueued,
    "released": Slot.SlotReleasing,
    "released at once": Slot.SlotReleased,
    "failed": Slot.SlotFailed,
    "cancelled": QueueEntry.QueueEntryCancelled,
}
"""The event an acknowledged outcome must have left in the log."""


@dataclass(frozen=True)
class Ack:
    """One acknowledged command: which bot, under which correlation id, with which
    outcome, and (for commands that return one) the log position of its event."""

    bot_id: str
    correlation_id: str
    outcome: str
    position: int | None = None


class ClientLog:
    """Acknowledged commands, kept in memory and, with ``path``, appended to a file line
    by line (a process killed mid-write leaves at most one torn last line)."""

    def __init__(self, path: Path | None = None) -> None:
        self.path = path
        self.acks: list[Ack] = []
        self._lock = threading.Lock()

    def record(self, ack: Ack) -> None:
        with self._lock:
            self.acks.append(ack)
            if self.path is not None:
                with self.path.open("a") as f:
                    f.write(json.dumps(asdict(ack)) + "\n")

    def requested(self, bot_id: str, correlation_id: str, result: Acquired | Queued) -> None:
        """Record what ``SlotDeployer.request`` answered."""
        if isinstance(result, Acquired):
            self.record(Ack(bot_id, correlation_id, "acquired", result.position))
        else:
            self.record(Ack(bot_id, correlation_id, "queued"))

    def released(self, bot_id: str, correlation_id: str, outcome: Outcome | QueueEntry) -> None:
        """Record what ``SlotDeployer.release`` answered: a cancelled queue entry, or the
        bot's lease ended (``SlotReleasing``; its slot is cleared in the background)."""
        if isinstance(outcome, QueueEntry):
            self.record(Ack(bot_id, correlation_id, "cancelled"))
        else:
            self.record(Ack(bot_id, correlation_id, "released", outcome.position))

    @classmethod
    def read(cls, path: Path) -> ClientLog:
        log = cls()
        if path.exists():
            for line in path.read_text().splitlines():
                try:
                    log.acks.append(Ack(**json.loads(line)))
                except json.JSONDecodeError:
                    continue  # the torn line of a killed writer: never acknowledged
        return log

    def missing(self, ledger: SlotLedger) -> list[Ack]:
        """Acknowledged commands whose event is not in the log (at or before the position
        the command returned, which is that of the last event it saved)."""
        first: dict[tuple[type[Any], str | None, str], int] = {}
        for position, event in iter_log(ledger):
            key = (type(event), getattr(event, "bot_id", None), event.correlation_id)
            first.setdefault(key, position)
        lost = []
        for ack in self.acks:
            found = first.get((EXPECTED_EVENT[ack.outcome], ack.bot_id, ack.correlation_id))
            if found is None or (ack.position is not None and found > ack.position):
                lost.append(ack)
        return lost


def failures_without_reason(ledger: SlotLedger) -> list[Slot.SlotFailed]:
    return [
        e
        for _, e in iter_log(ledger)
        if isinstance(e, Slot.SlotFailed)
        and not (e.reason.strip() and e.reason_code not in ("", "unspecified"))
    ]


def inconsistent_slots(ledger: SlotLedger, allowed: Iterable[SlotStatus]) -> list[str]:
    """Slots whose index row disagrees with the aggregate, or whose status is not allowed."""
    allowed = set(allowed)
    problems = []
    for row in ledger.slots():
        slot = ledger.get_slot(row.slot_id)
        seen = (row.status, row.bot_id, row.version)
        if seen != (slot.status, slot.bot_id, slot.version):
            problems.append(f"{row.name}: index {seen} != aggregate {slot.status, slot.bot_id}")
        if slot.status not in allowed:
            problems.append(f"{row.name}: {slot.status.value} since {slot.status_since}")
    return problems


def assert_log_sound(ledger: SlotLedger, client: ClientLog, *, queue_grace_s: float = 30.0) -> None:
    """No acknowledged command lost, every failure has its reason, no invariant broken
    (a queue may wait up to ``queue_grace_s`` beside an idle slot)."""
    assert client.missing(ledger) == []
    assert failures_without_reason(ledger) == []
    report = check_events(iter_log(ledger), queue_grace_s=queue_grace_s)
    assert report.ok, report.violations
