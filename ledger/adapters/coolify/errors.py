"""Typed errors for calls to the Coolify API.

Callers branch on the class (and ``status``), never on Coolify's message text: the wording and
even the punctuation differ between routes (API.md §0). Messages carry the HTTP method and the
path only; the client redacts the bearer token from anything Coolify sends back before it gets
here, so no error text can leak it.
"""

from __future__ import annotations

from typing import Any

from ledger.domain import fit_text
from ledger.errors import SlotLedgerError

MAX_MESSAGE = 500
"""Coolify's text is cut to this (and cleaned of control characters) where it enters, so a
reason the ledger words with it stays within the domain's limits."""


class CoolifyError(SlotLedgerError):
    """A Coolify call failed; ``status`` is None when no HTTP response arrived.

    ``http_status`` is 502 because, seen from slotledger's own API, an upstream failure is a bad
    gateway, whatever status Coolify gave.
    """

    code = "coolify_error"
    http_status = 502

    def __init__(self, message: str, *, status: int | None, method: str, path: str) -> None:
        self.status = status
        self.message = fit_text(message, MAX_MESSAGE)
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
