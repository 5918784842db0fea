"""One error hierarchy for slotledger.

Every error a caller can see derives from :class:`SlotLedgerError` and carries a short
machine code (``code``) used by the HTTP API (``{"error": code, "detail": text}``) and the
CLI (exit code 2 for bad input). Messages name what was wrong and never include secrets.
"""

from __future__ import annotations

import sqlite3
from typing import Any

import psycopg
from eventsourcing import persistence as es


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


# --- Which store errors are outages ----------------------------------------------------
# One classification for every layer: the stores' exception types are named here (and
# nothing of ours is imported), so the HTTP API, the CLI, the loops and the read side's
# followers decide the same way.

STORE_ERRORS: tuple[type[Exception], ...] = (
    es.OperationalError,
    es.InterfaceError,
    psycopg.OperationalError,
    psycopg.InterfaceError,
    sqlite3.OperationalError,
)
"""What the stores raise when they do not answer; :func:`store_unavailable` decides."""


def store_unavailable(error: BaseException) -> StoreUnavailable | None:
    """The :class:`StoreUnavailable` behind ``error`` (or what it was raised from), if
    the store failed to answer: psycopg's operational and interface errors (refused or
    lost connections, pool timeouts, terminated backends, lock and statement timeouts),
    the library's own pool timing out, a locked SQLite file. Anything else, such as the
    library's errors that no such cause raised, is not an outage: ``None``."""
    seen: set[int] = set()
    cause: BaseException | None = error
    while cause is not None and id(cause) not in seen:
        seen.add(id(cause))
        if isinstance(cause, StoreUnavailable):
            return cause
        if isinstance(
            cause, psycopg.OperationalError | psycopg.InterfaceError | es.ConnectionUnavailableError
        ) or (isinstance(cause, sqlite3.OperationalError) and _is_busy(cause)):
            reason = " ".join(str(cause).split())[:300] or type(cause).__name__
            return StoreUnavailable(f"the database did not answer: {reason}")
        cause = cause.__cause__
    return None


def _is_busy(error: sqlite3.OperationalError) -> bool:
    message = str(error).lower()
    return "locked" in message or "busy" in message


_DATA_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.DataError,
    psycopg.IntegrityError,
    sqlite3.DataError,
    sqlite3.IntegrityError,
    es.DataError,
    es.IntegrityError,
)
_RETRIED_ERRORS: tuple[type[BaseException], ...] = (
    psycopg.Error,
    sqlite3.Error,
    es.PersistenceError,
    es.ConnectionPoolClosedError,
    OSError,
)


def is_outage(error: BaseException) -> bool:
    """Whether a log follower should retry ``error`` rather than park the event: the
    store or the network failing says nothing about the event being processed. Wider
    than :func:`store_unavailable` (any store or network error but bad data), since a
    follower retrying a store error that persists costs only its backoff."""
    return isinstance(error, _RETRIED_ERRORS) and not isinstance(error, _DATA_ERRORS)


# --- Coolify ---------------------------------------------------------------------------
# Callers branch on the class (and ``status``), never on Coolify's message text: the
# wording and even the punctuation differ between routes (API.md §0). Messages carry the
# HTTP method and the path only; the client redacts the bearer token from anything Coolify
# sends back, and fits its text to the domain's limits, before it gets here.


class CoolifyError(SlotLedgerError):
    """A Coolify call failed; ``status`` is None when no HTTP response arrived.

    ``http_status`` is 502 because, seen from slotledger's own API, an upstream failure is a bad
    gateway, whatever status Coolify gave.
    """

    code = "coolify_error"
    http_status = 502

    def __init__(self, message: str, *, status: int | None, method: str, path: str) -> None:
        self.status = status
        self.message = message
        self.method = method
        self.path = path
        super().__init__(self._describe())

    def _describe(self) -> str:
        shown = "no response" if self.status is None else f"HTTP {self.status}"
        return f"Coolify {self.method} {self.path}: {shown}: {self.message}"

    def __repr__(self) -> str:
        return (
            f"{type(self).__name__}(status={self.status!r}, method={self.method!r}, "
            f"path={self.path!r}, message={self.message!r})"
        )


class CoolifyUnauthorized(CoolifyError):
    """401: the token is missing, wrong, or its team is gone."""

    code = "coolify_unauthorized"


class CoolifyForbidden(CoolifyError):
    """403: missing ability or team role, the API switch is off, or the IP is not allowed."""

    code = "coolify_forbidden"


class CoolifyNotFound(CoolifyError):
    """404: unknown uuid (application, deployment, project, ...) or unknown path."""

    code = "coolify_not_found"


class CoolifyConflict(CoolifyError):
    """409: domain conflict, or an env var that already exists."""

    code = "coolify_conflict"


class CoolifyValidationError(CoolifyError):
    """422: Coolify rejected the body; ``errors`` maps field to messages (may be empty)."""

    code = "coolify_validation_failed"

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        method: str,
        path: str,
        errors: dict[str, Any],
    ) -> None:
        self.errors = errors
        super().__init__(message, status=status, method=method, path=path)

    def _describe(self) -> str:
        fields = f" (fields: {', '.join(sorted(self.errors))})" if self.errors else ""
        return super()._describe() + fields


class CoolifyRateLimited(CoolifyError):
    """429 after the retries ran out; ``retry_after`` is Coolify's hint in seconds."""

    code = "coolify_rate_limited"
    http_status = 503

    def __init__(
        self,
        message: str,
        *,
        status: int | None,
        method: str,
        path: str,
        retry_after: float | None,
    ) -> None:
        self.retry_after = retry_after
        super().__init__(message, status=status, method=method, path=path)


class CoolifyServerError(CoolifyError):
    """5xx: Coolify failed (often a DB error, e.g. a description longer than 255)."""

    code = "coolify_server_error"


class CoolifyBadResponse(CoolifyError):
    """A success status with a body the client cannot use (HTML, garbage, missing field)."""

    code = "coolify_bad_response"


class CoolifyUnavailable(CoolifyError):
    """No HTTP response at all: connect error, timeout or dropped connection."""

    code = "coolify_unavailable"
    http_status = 503
