"""One error hierarchy for slotledger.

Every error a caller can see derives from :class:`SlotLedgerError` and carries a short
machine code (``code``) used by the HTTP API (``{"error": code, "detail": text}``) and the
CLI (exit code 2 for bad input). Messages name what was wrong and never include secrets.
"""

from __future__ import annotations


class SlotLedgerError(Exception):
    """Base of every error slotledger raises on purpose."""

    code: str = "ledger_error"
    http_status: int = 500

    def __init__(self, detail: str) -> None:
        super().__init__(detail)
        self.detail = detail


class ConfigurationError(SlotLedgerError):
    """A setting is missing, malformed or out of range (checked at start)."""

    code = "bad_configuration"
    http_status = 500


class BadInput(SlotLedgerError):
    """A caller sent something that cannot be acted on; ``field`` names the input (as the
    API and CLI spell it, e.g. ``bot_id``, ``config.MEETING_URL``) when one is to blame."""

    code = "bad_input"
    http_status = 422

    def __init__(self, detail: str, *, field: str | None = None) -> None:
        super().__init__(detail)
        self.field = field


class NotFound(BadInput):
    """Base for lookups of things the ledger does not know."""

    code = "not_found"
    http_status = 404


class SlotNotFound(NotFound):
    code = "slot_not_found"


class BotNotFound(NotFound):
    """The bot holds no slot (and, where queues apply, waits in no queue)."""

    code = "bot_not_found"


class Conflict(SlotLedgerError):
    """The request contradicts the ledger's current state."""

    code = "conflict"
    http_status = 409


class IllegalTransition(Conflict):
    """The slot's lifecycle does not allow this command from its current status."""

    code = "illegal_transition"


class BotAlreadyHoldsSlot(Conflict):
    code = "bot_already_holds_slot"


class BotAlreadyQueued(Conflict):
    code = "bot_already_queued"


class StaleLease(Conflict):
    """A command carried an earlier lease number of the slot (fencing token)."""

    code = "stale_lease"


class WrongBot(Conflict):
    """A bot acted on a slot that another bot (or no bot) holds."""

    code = "wrong_bot"


class NoIdleSlot(Conflict):
    """No idle slot could be taken (all busy, deploying, in error, or lost to racers)."""

    code = "no_idle_slot"
    http_status = 409


class PoolFull(Conflict):
    """Provisioning would exceed the pool's maximum size."""

    code = "pool_full"


class ConcurrencyExhausted(Conflict):
    """Bounded retries on optimistic-concurrency conflicts ran out."""

    code = "concurrency_exhausted"
    http_status = 503


class StoreUnavailable(SlotLedgerError):
    """The database did not answer in time (down, restarting, out of connections,
    locked): nothing was decided, and the same request can be sent again shortly."""

    code = "store_unavailable"
    http_status = 503
    retry_after_s = 2
