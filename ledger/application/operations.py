"""An operator's actions on the pool (resize, drain) and on one slot (retire, drain), for
the CLI and the API alike: each is an event with the operator as actor and a reason, and
each has a dry run that decides the same way and writes nothing.

Draining the pool records ``PoolDrained`` first (no slot is admitted after it), then
``SlotDrained`` on each slot not drained yet; run again, it finishes what an interrupted
run left. Undraining the pool reverses only what the pool's drain did: a slot drained by
name stays drained.

Retiring a slot commits ``SlotRetired`` first; its container is stopped and its Coolify
application deleted or kept (``RETIRE_MODE``) afterwards, through the same
:class:`~ledger.application.policies.SlotRuntime` the error-recovery policy uses. The API
runs that part in the background, so a request never waits on Coolify's retries.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Literal
from uuid import UUID

from ledger.application import Context, SlotLedger
from ledger.application.policies import SlotRuntime
from ledger.domain import Slot
from ledger.domain.slot import DRAIN_SCOPES, OCCUPIED
from ledger.domain.text import check_reason
from ledger.errors import IllegalTransition, SlotLedgerError

__all__ = ["Drainage", "Operator", "Resized", "Retirement"]

log = logging.getLogger(__name__)

ACTOR = "operator"


@dataclass(frozen=True)
class Resized:
    """What a resize did (or, in a dry run, would do)."""

    old_max_size: int
    new_max_size: int
    size: int
    changed: bool
    dry_run: bool


@dataclass(frozen=True)
class Retirement:
    """What retiring a slot did (or would do): the steps in order."""

    slot_id: UUID
    name: str
    steps: tuple[str, ...]
    dry_run: bool


@dataclass(frozen=True)
class Drainage:
    """What a drain or undrain did (or would do): its target (a slot's name, or
    ``pool <name>``), the events in order, and the slots they changed."""

    target: str
    undrain: bool
    steps: tuple[str, ...]
    slots: tuple[str, ...]
    dry_run: bool

    @property
    def changed(self) -> bool:
        return bool(self.steps)


class Operator:
    """The operator's commands, with the Coolify part of a retirement run by ``runtime``
    inline (the CLI) or on one background thread (``background=True``, the API).
    ``runtime`` is built on first use: a dry run or a resize needs no Coolify token."""

    def __init__(
        self,
        ledger: SlotLedger,
        runtime: Callable[[], SlotRuntime],
        retire_mode: Literal["delete", "quarantine"],
        *,
        background: bool = False,
    ) -> None:
        self.ledger = ledger
        self.runtime = runtime
        self.retire_mode = retire_mode
        self._executor = (
            ThreadPoolExecutor(max_workers=1, thread_name_prefix="retire") if background else None
        )

    def context(self) -> Context:
        return self.ledger.context(ACTOR)

    def resize(self, max_size: int, reason: str, *, dry_run: bool = False) -> Resized:
        """A new maximum; below the slots the pool has it is refused (``PoolTooSmall``)."""
        ledger = self.ledger
        before = ledger.get_pool()
        old = ledger.max_pool_size if before is None else before.max_size
        pool = ledger.resize_pool(max_size, reason, dry_run=dry_run, ctx=self.context())
        return Resized(old, max_size, pool.size, old != max_size, dry_run)

    def retire(self, ref: str, reason: str, *, dry_run: bool = False) -> Retirement:
        """An idle or error slot leaves the pool; a held or releasing one is refused,
        naming its bot. The slot's own guard decides again when the event is written."""
        ledger = self.ledger
        check_reason(reason)
        slot = ledger.get_slot(ledger.resolve_slot(ref))
        if slot.retired:
            raise IllegalTransition(f"slot {slot.name} is retired already")
        if slot.status in OCCUPIED:
            holder = f"bot {slot.bot_id!r}" if slot.bot_id else "its last bot (releasing)"
            msg = f"slot {slot.name} is {slot.status.value}, in use by {holder}: release it first"
            raise IllegalTransition(msg)
        steps = (f"record SlotRetired ({reason})", *self._coolify_steps(slot))
        if not dry_run:
            retired = ledger.retire(slot.id, reason, ctx=self.context()).slot
            self._run(lambda: self.clean_up(retired))
        return Retirement(slot.id, slot.name, steps, dry_run)

    def drain(
        self, ref: str, reason: str, *, undrain: bool = False, dry_run: bool = False
    ) -> Drainage:
        """Drain (or undrain) one slot: refused when it already is (or is not), or is
        retired. A held slot's lease runs on; it is not acquired again until undrained."""
        ledger = self.ledger
        check_reason(reason)
        slot = ledger.get_slot(ledger.resolve_slot(ref))
        event = _check_drain(slot, undrain)
        if not dry_run:
            ledger.drain(slot.id, reason, undrain=undrain, ctx=self.context())
        step = f"record {event} on {slot.name} ({reason})"
        if not undrain and slot.bot_id is not None:
            step += f"; bot {slot.bot_id!r} keeps it until its release"
        return Drainage(slot.name, undrain, (step,), (slot.name,), dry_run)

    def drain_pool(self, reason: str, *, undrain: bool = False, dry_run: bool = False) -> Drainage:
        """Drain (or undrain) the whole pool: its own event, then each slot's. Nothing
        left to change: no step, and nothing written."""
        ledger = self.ledger
        check_reason(reason)
        ctx = self.context()
        pool = ledger.get_pool()
        steps: list[str] = []
        if (pool is not None and pool.drained) is undrain:
            steps.append(f"record {'PoolUndrained' if undrain else 'PoolDrained'} ({reason})")
            if not dry_run:
                ledger.drain_pool(reason, undrain=undrain, ctx=ctx)
        changed: list[str] = []
        for row in ledger.slots():
            slot = ledger.slot_of(row)
            if slot.drained is not undrain or (undrain and slot.drain_scope != "pool"):
                continue
            event = _check_drain(slot, undrain)
            if not dry_run:
                try:
                    ledger.drain(slot.id, reason, undrain=undrain, scope="pool", ctx=ctx)
                except IllegalTransition:
                    continue  # retired, or drained by another operator, since it was read
            steps.append(f"record {event} on {slot.name}")
            changed.append(slot.name)
        target = f"pool {ledger.pool_name}"
        return Drainage(target, undrain, tuple(steps), tuple(changed), dry_run)

    def clean_up(self, slot: Slot) -> None:
        """Stop a retired slot's container, then delete or keep its application. A
        Coolify failure is logged (the reconciler finds the application orphaned)."""
        app = slot.coolify_uuid
        if app is None:
            return
        try:
            runtime = self.runtime()
            runtime.stop(app)
            if self.retire_mode == "delete":
                runtime.delete(app)
        except SlotLedgerError as e:
            log.warning("retired slot %s: Coolify clean-up of %s failed: %s", slot.name, app, e)

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)

    def _coolify_steps(self, slot: Slot) -> tuple[str, ...]:
        app = slot.coolify_uuid
        if app is None:
            return ("no application to stop or delete",)
        if self.retire_mode == "quarantine":
            return (f"stop application {app}", f"keep application {app} (quarantine)")
        return (f"stop application {app}", f"delete application {app}")

    def _run(self, work: Callable[[], None]) -> None:
        if self._executor is None:
            work()
        else:
            self._executor.submit(work)


def _check_drain(slot: Slot, undrain: bool) -> str:
    """The event a drain or undrain of ``slot`` records; refused as the slot would."""
    if slot.retired:
        raise IllegalTransition(f"slot {slot.name} is retired")
    if slot.drained is not undrain:
        how = DRAIN_SCOPES[slot.drain_scope or ""] if slot.drained else ""
        state = f"drained already ({how})" if slot.drained else "not drained"
        raise IllegalTransition(f"slot {slot.name} is {state}")
    if undrain and slot.drain_scope == "size":
        msg = (
            f"slot {slot.name} is drained {DRAIN_SCOPES['size']}: resize the pool "
            "(or retire a slot) to bring it back"
        )
        raise IllegalTransition(msg)
    return "SlotUndrained" if undrain else "SlotDrained"
