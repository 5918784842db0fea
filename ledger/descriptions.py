"""Coolify descriptions that mirror the ledger, in the seed's exact format.

The mirror is a tracked follower of the event log: it reads the log from its own stored
position, computes each touched slot's description from the slot's *current* state
(so writing it twice is harmless), PATCHes Coolify, and only then advances its position.
A Coolify outage delays updates and loses none: the position stays put and is retried.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory, Tracking, TrackingRecorder
from eventsourcing.utils import Environment

from ledger.application import SlotLedger
from ledger.coolify import CoolifyClient, CoolifyError, CoolifyNotFound, clean_description
from ledger.domain import Slot, SlotStatus
from ledger.persistence import SlotRow

__all__ = ["DescriptionMirror", "describe", "iso_utc"]

log = logging.getLogger("ledger.descriptions")


def iso_utc(at: datetime) -> str:
    """``2025-12-17T22:30:00Z``: the seed's timestamp format."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(slot: SlotRow, last_error: str | None) -> str:
    """The description for a slot's current state (at most 255 characters, no ``<``/``>``)."""
    if slot.retired:
        text = f"[RETIRED] Out of the pool - {iso_utc(slot.status_since)}"
    elif slot.status is SlotStatus.DEPLOYING:
        text = f"[DEPLOYING] Bot #{slot.bot_id} - Starting container..."
    elif slot.status is SlotStatus.BUSY:
        text = f"[BUSY] Bot #{slot.bot_id} - {iso_utc(slot.status_since)}"
    elif slot.status is SlotStatus.IDLE:
        used = iso_utc(slot.last_used) if slot.last_used else "never"
        text = f"[IDLE] Available - Last used: {used}"
    else:
        text = f"[ERROR] {last_error or 'unknown error'} - {iso_utc(slot.status_since)}"
    return clean_description(text)


class DescriptionMirror:
    """Keeps every slot's Coolify description equal to its ledger status."""

    NAME = "DescriptionMirror"

    def __init__(
        self,
        ledger: SlotLedger,
        coolify: CoolifyClient,
        tracking_env: dict[str, str],
        *,
        batch: int = 500,
        sleep: Callable[[float], bool] | None = None,
    ) -> None:
        self.ledger = ledger
        self.coolify = coolify
        factory = InfrastructureFactory.construct(Environment(self.NAME, tracking_env))
        self.tracking: TrackingRecorder = factory.tracking_recorder()
        self.batch = batch
        self._stop = threading.Event()
        self._sleep = sleep or self._stop.wait
        self._thread: threading.Thread | None = None
        self.failures = 0

    @property
    def position(self) -> int:
        return self.tracking.max_tracking_id(self.ledger.name) or 0

    def sync_once(self) -> int:
        """Mirror one batch; returns how many events it advanced over (0 = caught up).
        Raises the Coolify error that stopped it, leaving the position unchanged."""
        start = self.position
        notifications = self.ledger.recorder.select_notifications(
            start, self.batch, inclusive_of_start=False
        )
        if not notifications:
            return 0
        touched: dict[UUID, None] = {}
        for n in notifications:
            event: Any = self.ledger.mapper.to_domain_event(n)
            if isinstance(event, Slot.SlotEvent):
                touched[event.originator_id] = None
        for slot_id in touched:
            self._mirror(slot_id)
        self.tracking.insert_tracking(Tracking(self.ledger.name, notifications[-1].id))
        return len(notifications)

    def _mirror(self, slot_id: UUID) -> None:
        row = self.ledger.index.slot_row(slot_id)
        if row is None or row.coolify_uuid is None:
            return
        slot = self.ledger.get_slot(slot_id)
        try:
            self.coolify.update_description(row.coolify_uuid, describe(row, slot.last_error))
        except CoolifyNotFound:
            # Deleted outside the ledger: the deploy flow recreates it, with a new uuid
            # and a SlotAppCreated event that brings this slot back here.
            log.warning("slot %s: Coolify application %s not found", row.name, row.coolify_uuid)

    def sync(self) -> None:
        """Mirror until caught up."""
        while self.sync_once():
            pass

    def run(self, idle_s: float = 0.5, max_backoff_s: float = 30.0) -> None:
        """Follow the log until stopped; back off while Coolify fails."""
        backoff = idle_s
        while not self._stop.is_set():
            try:
                advanced = self.sync_once()
            except CoolifyError as e:
                self.failures += 1
                backoff = min(max_backoff_s, backoff * 2)
                log.warning("description mirror paused %.1fs: %s", backoff, e)
                self._sleep(backoff)
                continue
            backoff = idle_s
            if not advanced:
                self._sleep(idle_s)

    def start(self) -> None:
        self._thread = threading.Thread(target=self.run, name="description-mirror", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
