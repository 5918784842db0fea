"""Domain layer: the slot lifecycle as event-sourced aggregates, free of I/O.

- :mod:`~ledger.domain.slot`: :class:`Slot`, one pre-provisioned Coolify application, and
  its transition table;
- :mod:`~ledger.domain.pool`: :class:`Pool`, the membership of a pool;
- :mod:`~ledger.domain.queue`: :class:`QueueEntry`, a bot waiting for a slot;
- :mod:`~ledger.domain.text`: the rules every text field passes;
- :mod:`~ledger.domain.snapshots`: snapshots that restore typed state;
- :mod:`~ledger.domain.invariants`: the checker that audits any event log.

The re-exports below are part of the stored data, not only a convenience: events and
snapshots written before the split name their classes by topics such as
``ledger.domain:Slot.SlotAcquired``, ``ledger.domain:Slot`` and
``ledger.domain:TypedSnapshot``, and the library resolves a topic by importing this
package and reading the attribute. Keep every aggregate and snapshot class importable
from here.
"""

from ledger.domain.pool import Pool, pool_id
from ledger.domain.queue import QueueEntry, QueueStatus
from ledger.domain.slot import TRANSITIONS, Slot, SlotStatus, Transition
from ledger.domain.snapshots import TypedSnapshot, TypedState, restore_types
from ledger.domain.text import (
    ACTOR_RULE,
    BOT_ID_RULE,
    CONFIG_KEY_RULE,
    CONFIG_VALUE_RULE,
    COOLIFY_UUID_RULE,
    CORRELATION_ID_RULE,
    MAX_CONFIG_ENTRIES,
    PLATFORM_RULE,
    POOL_NAME_RULE,
    REASON_CODE_RULE,
    REASON_RULE,
    SLOT_NAME_RULE,
    SLOT_PREFIX_RULE,
    TextRule,
    check_actor,
    check_bot_id,
    check_config,
    check_origin,
    check_platform,
    check_reason,
    check_text,
    fit_text,
)

__all__ = [
    "ACTOR_RULE",
    "BOT_ID_RULE",
    "CONFIG_KEY_RULE",
    "CONFIG_VALUE_RULE",
    "COOLIFY_UUID_RULE",
    "CORRELATION_ID_RULE",
    "MAX_CONFIG_ENTRIES",
    "PLATFORM_RULE",
    "POOL_NAME_RULE",
    "REASON_CODE_RULE",
    "REASON_RULE",
    "SLOT_NAME_RULE",
    "SLOT_PREFIX_RULE",
    "TRANSITIONS",
    "Pool",
    "QueueEntry",
    "QueueStatus",
    "Slot",
    "SlotStatus",
    "TextRule",
    "Transition",
    "TypedSnapshot",
    "TypedState",
    "check_actor",
    "check_bot_id",
    "check_config",
    "check_origin",
    "check_platform",
    "check_reason",
    "check_text",
    "fit_text",
    "pool_id",
    "restore_types",
]
