"""Coolify descriptions that mirror the ledger, in the seed's exact format.

The mirror is a tracked consumer of the event log (:mod:`projections.follower` runs it):
it computes each touched slot's description from the slot's *current* state (so writing
it twice is harmless), PATCHes Coolify, and only then advances its position. A Coolify
outage delays updates and loses none: the position stays put and is retried; a Coolify
answer that refuses one slot's description for good (a 4xx other than auth and rate
limits) is not an outage, so that event is parked like any event a consumer cannot take.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from datetime import UTC, datetime
from uuid import UUID

from eventsourcing.persistence import InfrastructureFactory, TrackingRecorder
from eventsourcing.utils import Environment

from ledger.adapters.coolify import CoolifyClient, CoolifyError, CoolifyNotFound, clean_description
from ledger.application import SlotLedger
from ledger.application.ports import SlotRow
from ledger.domain import Slot, SlotStatus
from ledger.loops import LoopHealth
from projections.engine.fold import Positioned
from projections.engine.follower import (
    Companion,
    LogFollower,
    Parking,
    RecorderTracker,
    Standalone,
    TrackedConsumer,
)

__all__ = ["UNDESCRIBED", "DescriptionMirror", "describe", "iso_utc"]

log = logging.getLogger("ledger.descriptions")


def iso_utc(at: datetime) -> str:
    """``2025-12-17T22:30:00Z``: the seed's timestamp format."""
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def describe(slot: SlotRow, last_error: str | None) -> str:
    """The description for a slot's current state (at most 255 characters, no ``<``/``>``)."""
    if slot.retired:
        text = f"[RETIRED] Out of the pool - {iso_utc(slot.status_since)}"
    elif slot.bot_id is None and slot.status in (SlotStatus.DEPLOYING, SlotStatus.BUSY):
        text = "[RELEASING] Stopping the last lease's container..."
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


_OUTAGE_STATUSES = frozenset({401, 403, 408, 429})
"""Coolify answers that say nothing about one slot: a token problem, a timeout, rate limits."""


UNDESCRIBED = (
    Slot.SlotDeploying,
    Slot.SlotHeartbeatRefused,
    Slot.SlotDrained,
    Slot.SlotUndrained,
)
"""Slot events that change nothing :func:`describe` reads (status, its time, bot, last
use, last error, retirement): the description written for the event before stays right,
and writing it again would spend a Coolify request (one per deploy, for
``SlotDeploying``) of the token's 200 a minute."""


class DescriptionMirror(TrackedConsumer[SlotLedger]):
    """Keeps every slot's Coolify description equal to its ledger status.

    Run by the process's read-model follower's :class:`Companion` when ``leader`` is
    given (so one process mirrors at a time), else by a polling follower of its own."""

    NAME = "DescriptionMirror"
    """Its tracking table's name (the library's, beside the events)."""
    name = "description-mirror"

    def __init__(
        self,
        ledger: SlotLedger,
        coolify: CoolifyClient,
        tracking_env: dict[str, str],
        *,
        batch: int = 500,
        leader: LogFollower | None = None,
        parking: Parking | None = None,
    ) -> None:
        factory = InfrastructureFactory.construct(Environment(self.NAME, tracking_env))
        self.tracking: TrackingRecorder = factory.tracking_recorder()
        super().__init__(ledger, RecorderTracker(self.tracking, ledger.name))
        self.coolify = coolify
        self.batch = batch
        self.follower: LogFollower = (
            Standalone(self, parking=parking, poll_interval=0.5, batch_size=batch)
            if leader is None
            else Companion(self, leader, parking=parking, batch_size=batch)
        )

    def handle(self, events: Sequence[Positioned]) -> None:
        """Each slot a batch changed the description of is described once, as it is
        now (so a batch's intermediate states are never written)."""
        touched: dict[UUID, None] = {}
        for _, event in events:
            if isinstance(event, Slot.SlotEvent) and not isinstance(event, UNDESCRIBED):
                touched[event.originator_id] = None
        for slot_id in touched:
            self._mirror(slot_id)

    def is_outage(self, error: BaseException) -> bool:
        if isinstance(error, CoolifyError):
            return error.status is None or error.status >= 500 or error.status in _OUTAGE_STATUSES
        return super().is_outage(error)

    def _mirror(self, slot_id: UUID) -> None:
        row = self.ledger.index.slot_row(slot_id)
        if row is None or row.coolify_uuid is None:
            return
        slot = self.ledger.slot_of(row)
        try:
            self.coolify.update_description(row.coolify_uuid, describe(row, slot.last_error))
        except CoolifyNotFound:
            # Deleted outside the ledger: the deploy flow recreates it, with a new uuid
            # and a SlotAppCreated event that brings this slot back here.
            log.warning("slot %s: Coolify application %s not found", row.name, row.coolify_uuid)

    def sync(self) -> None:
        """Mirror until caught up (tests and one-off runs; the service follows)."""
        self.catch_up(self.batch)

    def start(self) -> None:
        self.follower.start()

    def stop(self) -> None:
        self.follower.stop()

    def health(self, head: int | None = None) -> LoopHealth:
        return self.follower.health(head)
