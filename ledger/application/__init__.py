"""Application layer: the commands of the slot lifecycle and the one path they take.

``commands`` (typed commands and their context), ``unit_of_work`` (load, decide, save,
the one retry rule), ``decisions`` (the acquire and release rules, shared with
``group_commit``), ``ledger`` (``SlotLedger``), ``policies``, ``deploy`` and ``worker``.
"""

from ledger.application.commands import Clock, Context, Outcome, new_correlation_id
from ledger.application.decisions import already_holds, holds_no_slot, no_idle_slot, not_queued
from ledger.application.ledger import SlotLedger, index_row, slot_row

__all__ = [
    "Clock",
    "Context",
    "Outcome",
    "SlotLedger",
    "already_holds",
    "holds_no_slot",
    "index_row",
    "new_correlation_id",
    "no_idle_slot",
    "not_queued",
    "slot_row",
]
