"""Every error answer is ``{"error": code, "detail": text}`` with a 4xx for bad input.

Errors of the ledger's hierarchy carry their own code and HTTP status; request
validation, malformed JSON, unknown routes and wrong methods are mapped here. Anything
else is a bug: logged with its traceback, answered with a 500 that reveals nothing.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

from ledger.errors import SlotLedgerError
from ledger.web.schemas import ErrorOut

__all__ = ["Unauthorized", "error_responses", "install_error_handlers"]

log = logging.getLogger("ledger.web")

_DESCRIPTIONS = {
    400: "Malformed JSON",
    401: "Missing or wrong bearer token",
    404: "Not found",
    409: "Refused by the ledger's current state",
    422: "Invalid input",
    503: "The service is not running, or lost too many races: retry",
}
_HTTP_CODES = {404: "not_found", 405: "method_not_allowed"}


class Unauthorized(SlotLedgerError):
    code = "unauthorized"
    http_status = 401


def error_responses(*statuses: int) -> dict[int | str, dict[str, Any]]:
    """OpenAPI ``responses`` entries for the error statuses an operation can answer."""
    return {s: {"model": ErrorOut, "description": _DESCRIPTIONS[s]} for s in statuses}


def _answer(
    status: int, code: str, detail: str, headers: Mapping[str, str] | None = None
) -> JSONResponse:
    body = ErrorOut(error=code, detail=detail).model_dump()
    return JSONResponse(body, status_code=status, headers=dict(headers or {}))


def _describe(errors: Sequence[Any]) -> str:
    """``body.bot_id: String should match pattern ...; query.limit: ...``"""
    parts = []
    for e in errors:
        where = ".".join(str(p) for p in e.get("loc", ()))
        parts.append(f"{where}: {e.get('msg', 'invalid')}" if where else str(e.get("msg")))
    return "; ".join(parts) or "invalid request"


async def _ledger_error(request: Request, exc: Exception) -> JSONResponse:
    assert isinstance(exc, SlotLedgerError)
    if exc.http_status >= 500:
        log.error("%s %s failed: %s: %s", request.method, request.url.path, exc.code, exc.detail)
    headers = {"WWW-Authenticate": "Bearer"} if isinstance(exc, Unauthorized) else None
    return _answer(exc.http_status, exc.code, exc.detail, headers)


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
    log.exception("%s %s failed unexpectedly", request.method, request.url.path)
    return _answer(500, "internal_error", "internal error; the server log has the details")


def install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(SlotLedgerError, _ledger_error)
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(Exception, _unexpected)
