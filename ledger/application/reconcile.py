"""Drift reconciliation: Coolify's applications against the pool's slots, both ways.

A crash between creating a slot's application and recording ``SlotAppCreated`` leaves an
application no slot knows; someone deleting an application in Coolify leaves a slot whose
application is gone. Every ``interval_s`` the policy worker's leader lists both sides and
records each finding as a ``DriftDetected`` event (:mod:`ledger.domain.drift`) before it
acts, so nothing happens silently:

- an **orphan** is an application of the pool's project and environment, named like the
  pool's slots (``{prefix}-{platform}-{NNN}``), whose uuid no slot has (retired ones
  included: a quarantined slot keeps its application). It is deleted
  (``RETIRE_MODE=delete``) or quarantined: left as it is, renamed ``<name>-quarantined``
  (no longer a slot's name, so it is found once) and described as such, through the
  PATCH's whitelisted ``name`` and ``description``;
- a **vanished** application is a slot's (not retired) that Coolify no longer lists: it
  is recorded; the deploy flow creates a new one on the slot's next use, as before.

Races. The deploy flow creates an application, then records it, so an application may
exist for a moment that no slot knows. An orphan is acted on only when Coolify says it
was created more than ``grace_s`` ago, and never while a slot of its name is deploying
without an application (its creation may be in flight, however long the recording takes).
The slots are read before and after the listing: an orphan must be unknown to the slots
read after it (an application recorded meanwhile is known), a vanished application must
be missing for a slot that had it before the listing and still has it after.

Each pass is idempotent: a finding already recorded is not recorded again, and its action
is repeated (a deletion Coolify has not run yet, a failed one) at most once per
``grace_s``. An action that fails fails the pass, after the others ran, so the loop's
health shows it.
"""

from __future__ import annotations

import logging
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from datetime import datetime
from typing import Literal, Protocol
from uuid import NAMESPACE_URL, uuid5

from eventsourcing.application import AggregateNotFoundError

from ledger.application.commands import Context
from ledger.application.ledger import SlotLedger
from ledger.application.ports import SlotRow
from ledger.application.unit_of_work import Attempt, Change
from ledger.domain import SlotStatus, fit_text
from ledger.domain.drift import Drift, DriftDecision, DriftKind, drift_id
from ledger.errors import CoolifyNotFound, SlotLedgerError

__all__ = ["DriftApp", "DriftConfig", "DriftCoolify", "Finding", "Reconciler"]

log = logging.getLogger("ledger.reconcile")

_FINDINGS = uuid5(NAMESPACE_URL, "slotledger:drift-finding")
_MAX_NAME = 128
QUARANTINE_SUFFIX = "-quarantined"


class DriftApp(Protocol):
    """An application as the listing shows it."""

    @property
    def uuid(self) -> str: ...

    @property
    def name(self) -> str: ...

    @property
    def created_at(self) -> str | None: ...

    @property
    def status(self) -> object: ...


class DriftCoolify(Protocol):
    """What reconciliation needs of Coolify."""

    def list_applications(self) -> Sequence[DriftApp]: ...

    def environment_applications(self, project_uuid: str, name_or_uuid: str) -> set[str]: ...

    def delete_application(self, uuid: str) -> None: ...

    def update_application(self, uuid: str, *, name: str, description: str) -> None: ...


@dataclass(frozen=True)
class DriftConfig:
    pool_name: str
    slot_prefix: str
    project_uuid: str
    environment_name: str
    retire_mode: Literal["delete", "quarantine"]
    interval_s: float
    grace_s: float


@dataclass(frozen=True)
class Finding:
    """One disagreement, what was decided, and (after a real pass) what came of it."""

    kind: DriftKind
    decision: DriftDecision
    app_uuid: str
    app_name: str | None
    slot: SlotRow | None
    observed: str
    reason: str
    recorded: bool = False
    """True when this pass wrote its ``DriftDetected`` (False: recorded before)."""
    outcome: str = "planned"
    """``planned`` (dry run), ``deleted``, ``quarantined``, ``gone`` (Coolify no longer
    has it), ``recorded``, ``repeated later`` (acted on less than a grace ago), or
    ``failed: <error>``."""

    def as_dict(self) -> dict[str, str | None]:
        return {
            "kind": self.kind.value,
            "decision": self.decision.value,
            "app": self.app_name,
            "app_uuid": self.app_uuid,
            "slot": None if self.slot is None else self.slot.name,
            "outcome": self.outcome,
            "observed": self.observed,
        }


class Reconciler:
    """One pass per call: list, compare, record, act. ``monotonic`` paces repeats."""

    NAME = "drift-reconciler"
    ACTOR = "policy:drift"

    def __init__(
        self,
        ledger: SlotLedger,
        coolify: DriftCoolify,
        config: DriftConfig,
        *,
        monotonic: Callable[[], float] = time.monotonic,
    ) -> None:
        self.ledger = ledger
        self.coolify = coolify
        self.config = config
        self._monotonic = monotonic
        self._slot_name = re.compile(
            rf"{re.escape(config.slot_prefix)}-[a-z0-9][a-z0-9-]*-\d{{3,}}"
        )
        self._acted: dict[str, float] = {}

    @property
    def name(self) -> str:
        return self.NAME

    @property
    def interval_s(self) -> float:
        return self.config.interval_s

    def run(self) -> None:
        """One pass, as the policy worker's duty."""
        self.reconcile()

    def reconcile(self, *, dry_run: bool = False) -> list[Finding]:
        """The findings of one pass (with a dry run: decided, neither recorded nor acted
        on). Raises the first failed action once every finding was handled."""
        before = self.ledger.slots(include_retired=True)
        apps = list(self.coolify.list_applications())
        scope = self.coolify.environment_applications(
            self.config.project_uuid, self.config.environment_name
        )
        after = self.ledger.slots(include_retired=True)
        now = self.ledger.clock()
        findings = [*self._orphans(apps, scope, after, now), *self._vanished(apps, before, after)]
        if dry_run:
            return findings
        failures: list[SlotLedgerError] = []
        done = [self._handle(finding, now, failures) for finding in findings]
        if failures:
            raise failures[0]
        return done

    # --- comparing ---------------------------------------------------------------------

    def _orphans(
        self, apps: list[DriftApp], scope: set[str], slots: list[SlotRow], now: datetime
    ) -> list[Finding]:
        known = {row.coolify_uuid for row in slots if row.coolify_uuid}
        by_name = {row.name: row for row in slots if not row.retired}
        found = []
        for app in apps:
            name = app.name
            if app.uuid in known or app.uuid not in scope or not self._is_slot_name(name):
                continue
            slot = by_name.get(name)
            if slot is not None and slot.status is SlotStatus.DEPLOYING and not slot.coolify_uuid:
                log.info("application %s (%s): its slot is being deployed; left", name, app.uuid)
                continue
            age = _age_s(app.created_at, now)
            if age is None or age < self.config.grace_s:
                shown = "unknown" if age is None else f"{age:.0f}s"
                log.info(
                    "application %s (%s) looks orphaned, age %s: waiting", name, app.uuid, shown
                )
                continue
            found.append(self._orphan(app, slot, age))
        return found

    def _orphan(self, app: DriftApp, slot: SlotRow | None, age: float) -> Finding:
        pool = self.config.pool_name
        observed = (
            f"application {app.name} ({app.uuid}), status {fit_text(str(app.status), 64)}, created "
            f"{app.created_at} ({age:.0f}s ago), is named like a slot of pool {pool} but no "
            "slot has it"
        )
        if slot is not None:
            observed += f"; slot {slot.name} has {slot.coolify_uuid or 'no application'}"
        if self.config.retire_mode == "delete":
            decision = DriftDecision.DELETE
            reason = "orphaned application: deleted (RETIRE_MODE=delete)"
        else:
            decision = DriftDecision.QUARANTINE
            reason = (
                f"orphaned application: kept for inspection as {_quarantined(app.name)} "
                "(RETIRE_MODE=quarantine)"
            )
        return Finding(DriftKind.ORPHAN, decision, app.uuid, app.name, slot, observed, reason)

    def _vanished(
        self, apps: list[DriftApp], before: list[SlotRow], after: list[SlotRow]
    ) -> list[Finding]:
        listed = {app.uuid for app in apps}
        now_rows = {row.slot_id: row for row in after}
        found = []
        for row in before:
            uuid = row.coolify_uuid
            current = now_rows.get(row.slot_id)
            if row.retired or uuid is None or uuid in listed:
                continue
            if current is None or current.retired or current.coolify_uuid != uuid:
                continue  # the slot moved on while Coolify was listed
            observed = f"slot {row.name} ({row.status}) has application {uuid}; Coolify lists none"
            reason = (
                "the slot's application vanished outside the ledger: the deploy flow creates "
                "a new one on the slot's next use"
            )
            found.append(
                Finding(
                    DriftKind.VANISHED,
                    DriftDecision.RECREATE,
                    uuid,
                    row.name,
                    row,
                    observed,
                    reason,
                )
            )
        return found

    def _is_slot_name(self, name: str) -> bool:
        return len(name) <= _MAX_NAME and self._slot_name.fullmatch(name) is not None

    # --- recording and acting ----------------------------------------------------------

    def _handle(self, finding: Finding, now: datetime, failures: list[SlotLedgerError]) -> Finding:
        recorded = self._record(finding, now)
        finding = replace(finding, recorded=recorded, outcome="recorded")
        if recorded:
            log.warning(
                "drift in pool %s: %s; %s", self.config.pool_name, finding.observed, finding.reason
            )
        if finding.kind is not DriftKind.ORPHAN:
            return finding
        last = self._acted.get(finding.app_uuid)
        if not recorded and last is not None and self._monotonic() - last < self.config.grace_s:
            return replace(finding, outcome="repeated later")
        self._acted[finding.app_uuid] = self._monotonic()
        try:
            return replace(finding, outcome=self._act(finding, now))
        except CoolifyNotFound:  # deleted meanwhile (its deletion job ran): nothing to do
            return replace(finding, outcome="gone")
        except SlotLedgerError as e:
            log.warning("drift action on %s failed: %s", finding.app_name, e.detail)
            failures.append(e)
            return replace(finding, outcome=f"failed: {e.detail}")

    def _record(self, finding: Finding, now: datetime) -> bool:
        """Write the finding's ``DriftDetected`` unless it was recorded before."""
        correlation_id = uuid5(_FINDINGS, f"{finding.kind}:{finding.app_uuid}").hex
        ctx = Context(self.ACTOR, correlation_id, now)

        def decide(_: Attempt) -> Change[bool]:
            drift = self._drift(ctx)
            slot = finding.slot
            recorded = drift.detect(
                finding.kind,
                finding.decision,
                app_uuid=finding.app_uuid,
                app_name=finding.app_name,
                slot_id=None if slot is None else slot.slot_id,
                slot_name=None if slot is None else slot.name,
                observed=finding.observed,
                reason=finding.reason,
                at=max(ctx.at, drift.modified_on),
                actor=ctx.actor,
                correlation_id=ctx.correlation_id,
            )
            return Change(recorded, [drift] if recorded else [])

        return self.ledger.uow.run(f"drift record of {finding.app_uuid}", decide).answer

    def _drift(self, ctx: Context) -> Drift:
        try:
            drift: Drift = self.ledger.repository.get(drift_id(self.config.pool_name))
        except AggregateNotFoundError:
            return Drift.open(
                self.config.pool_name, at=ctx.at, actor=ctx.actor, correlation_id=ctx.correlation_id
            )
        return drift

    def _act(self, finding: Finding, now: datetime) -> str:
        if finding.decision is DriftDecision.DELETE:
            self.coolify.delete_application(finding.app_uuid)
            return "deleted"
        name = finding.app_name or finding.app_uuid
        description = (
            f"[QUARANTINED] Orphan of slotledger pool {self.config.pool_name}: no slot has it - "
            f"{now.strftime('%Y-%m-%dT%H:%M:%SZ')}"
        )
        self.coolify.update_application(
            finding.app_uuid, name=_quarantined(name), description=description
        )
        return "quarantined"


def _quarantined(name: str) -> str:
    return f"{name}{QUARANTINE_SUFFIX}"


def _age_s(created_at: str | None, now: datetime) -> float | None:
    """Seconds since Coolify created the application, by its ``created_at``; None when
    that is missing or unreadable (the application is then left alone)."""
    if not created_at:
        return None
    try:
        created = datetime.fromisoformat(created_at)
    except ValueError:
        return None
    if created.tzinfo is None:
        return None
    return (now - created).total_seconds()
