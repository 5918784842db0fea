"""Every error answer is ``{"error": code, "detail": text}`` with a 4xx for bad input.

Errors of the ledger's hierarchy carry their own code and HTTP status; request
validation, malformed JSON, unknown routes and wrong methods are mapped here. A store
that does not answer is an outage, not a bug: 503 ``store_unavailable`` with
``Retry-After`` and one log line. Anything else is a bug: answered with a 500 that
reveals nothing, its traceback logged once (by the server, which Starlette re-raises
it to).
"""

from __future__ import annotations

import logging
import re
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ledger.entrypoints.web.schemas import ErrorOut
from ledger.errors import STORE_ERRORS, SlotLedgerError, StoreUnavailable, store_unavailable

__all__ = ["Unauthorized", "error_responses", "install_error_handlers"]

log = logging.getLogger("ledger.web")

_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "Missing or wrong bearer token",
    404: "Not found",
    409: "Refused by the ledger's current state",
    422: "Invalid input",
    503: "The store is unavailable, the service is not running, or it lost too many races:"
    " retry after Retry-After seconds",
}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class Unauthorized(SlotLedgerError):
    code = "unauthorized"
    http_status = 401


class TooManyStreams(SlotLedgerError):
    """Each open stream costs the server a poll loop; past the cap, new ones wait."""

    code = "too_many_streams"
    http_status = 503


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses an operation can answer."""
    return {s: {"model": ErrorOut, "description": _DESCRIPTIONS[s]} for s in statuses}


def _answer(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorOut(error=code, detail=detail).model_dump()
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _describe(errors: Sequence[Any]) -> str:
    """``body.reason: must not contain control characters ...; query.limit: ...``: each
    problem after the field it concerns. The domain's own wording (a ``ValueError`` from a
    :class:`~ledger.web.schemas.Checked` field) is shown without pydantic's prefix; the
    input itself never is (it may be a config value)."""
    parts = []
    for e in errors:
        where = ".".join(_location(p) for p in e.get("loc", ()))
        cause = e.get("ctx", {}).get("error") if e.get("type") == "value_error" else None
        problem = str(cause) if isinstance(cause, ValueError) else str(e.get("msg", "invalid"))
        parts.append(f"{where}: {problem}" if where else problem)
    return "; ".join(parts) or "invalid request"


_PLAIN_LOCATION = re.compile(r"[A-Za-z0-9_\[\]-]{1,64}")


def _location(part: object) -> str:
    """One step of an error's location; a step that is input (a refused config key) is
    shown escaped and short, as it may hold control characters or be 10,000 long."""
    text = str(part)
    if _PLAIN_LOCATION.fullmatch(text):
        return text
    return ascii(text[:40]) + ("..." if len(text) > 40 else "")


async def _ledger_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SlotLedgerError)
    if exc.http_status >= 500:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, exc.code, exc.detail)
    headers: dict[str, str] = {}
    if isinstance(exc, Unauthorized):
        headers["WWW-Authenticate"] = "Bearer"
    if exc.http_status == 503:
        headers["Retry-After"] = str(StoreUnavailable.retry_after_s)
    return _answer(exc.http_status, exc.code, exc.detail, headers)


async def _store_error(request: Request, exc: Exception) -> JSONResponse:
    """A driver's or the library's store error: an outage when the store did not
    answer, else a bug like any other (re-raised, to reach :func:`_unexpected`)."""
    outage = store_unavailable(exc)
    if outage is None:
        raise exc
    return await _ledger_error(request, outage)


async def _validation_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, RequestValidationError)
    errors = exc.errors()
    if any(e.get("type") == "json_invalid" for e in errors):
        return _answer(400, "malformed_json", "the request body is not valid JSON")
    return _answer(422, "bad_input", _describe(errors))


async def _http_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, HTTPException)
    code = _HTTP_CODES.get(exc.status_code, "http_error")
    return _answer(exc.status_code, code, str(exc.detail), exc.headers)


async def _unexpected(request: Request, exc: Exception) -> JSONResponse:
    """The catch-all, which Starlette re-raises for the server to log with its
    traceback: one line here says which request it was."""
    if (outage := store_unavailable(exc)) is not None:
        return await _ledger_error(request, outage)
    log.error("%s %s failed unexpectedly: %s", request.method, request.url.path, type(exc).__name__)
    return _answer(500, "internal_error", "internal error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SlotLedgerError, _ledger_error)
    for store_error in STORE_ERRORS:
        app.add_exception_handler(store_error, _store_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
