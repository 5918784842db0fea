"""One request as the handlers see it, and the answers Coolify's framework (Laravel) gives
before or instead of a controller's."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from starlette.responses import HTMLResponse, JSONResponse, Response

__all__ = [
    "API",
    "NOT_FOUND_BODY",
    "Abort",
    "Call",
    "RecordedRequest",
    "html_page",
    "json_body",
    "lenient_body",
    "message",
    "munged_query",
    "wants_json",
]

API = "/api/v1"
NOT_FOUND_BODY = {"message": "Not found.", "docs": "https://coolify.io/docs"}


@dataclass(frozen=True)
class Call:
    """One request, read once; ``params`` are the path parameters of the matched route and
    ``sensitive`` whether its token may read sensitive data (``api.sensitive``)."""

    method: str
    path: str
    params: dict[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    raw_body: bytes
    sensitive: bool = False


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (the Authorization header is left out)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]

    @classmethod
    def of(cls, call: Call) -> RecordedRequest:
        headers = {k: v for k, v in call.headers.items() if k != "authorization"}
        return cls(call.method, call.path, dict(call.query), _body_for_log(call), headers)


def _body_for_log(call: Call) -> Any:
    """The JSON body when there is one, else the raw text (for tests to inspect)."""
    if not call.raw_body:
        return None
    try:
        return json.loads(call.raw_body)
    except ValueError:
        return call.raw_body.decode("utf-8", "replace")


class Abort(Exception):
    """Ends a handler early with ``response``, like Laravel's ``abort()``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


def message(status: int, text: str) -> Abort:
    return Abort(JSONResponse({"message": text}, status))


def _invalid_request(error: str) -> Abort:
    return Abort(JSONResponse({"message": "Invalid request.", "error": error}, 400))


def html_page(title: str, body: str, status: int) -> HTMLResponse:
    page = f"<!DOCTYPE html><html><head><title>{title}</title></head><body>{body}</body></html>"
    return HTMLResponse(page, status)


def wants_json(headers: Mapping[str, str]) -> bool:
    """Laravel's ``wantsJson()``: the first Accept type must be JSON."""
    first = headers.get("accept", "").split(",")[0]
    return "/json" in first or "+json" in first


def _munge(value: Any) -> Any:
    """Laravel's TrimStrings and ConvertEmptyStringsToNull middleware."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        return [_munge(item) for item in value]
    if isinstance(value, dict):
        return {key: _munge(item) for key, item in value.items()}
    return value


def munged_query(call: Call) -> dict[str, Any]:
    """The query string after the input-munging middleware."""
    query: dict[str, Any] = _munge(dict(call.query))
    return query


def lenient_body(call: Call) -> dict[str, Any]:
    """``$request->all()`` on a route without ``validateIncomingRequest``: the JSON object
    if there is one, else nothing."""
    try:
        body = json.loads(call.raw_body) if call.raw_body else {}
    except ValueError:
        return {}
    munged: dict[str, Any] = _munge(body) if isinstance(body, dict) else {}
    return munged


def json_body(call: Call) -> dict[str, Any]:
    """Coolify's ``validateIncomingRequest`` plus the input-munging middleware."""
    if "application/json" not in call.headers.get("content-type", ""):
        raise _invalid_request("Content-Type must be application/json.")
    try:
        body = json.loads(call.raw_body)
    except ValueError:
        raise _invalid_request("Invalid JSON.") from None
    if not isinstance(body, dict):
        raise _invalid_request("Invalid JSON.")
    if not body:
        raise _invalid_request("Empty JSON.")
    munged: dict[str, Any] = _munge(body)
    return munged
