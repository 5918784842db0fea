"""The Coolify API routes the fake serves, in Laravel's order: throttle, then auth
(``auth:sanctum``, the API switch ``ApiAllowed``, ``api.sensitive``, ``api.ability``), then
the controller (:mod:`.applications`, :mod:`.deployments`). Handlers run with the fake's
lock held and its timeline advanced to now."""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable, Mapping

from starlette.responses import JSONResponse, Response

from ledger.devtools.fake_coolify import applications as apps
from ledger.devtools.fake_coolify import deployments as deps
from ledger.devtools.fake_coolify import resources
from ledger.devtools.fake_coolify.calls import (
    API,
    NOT_FOUND_BODY,
    Abort,
    Call,
    html_page,
    message,
    wants_json,
)
from ledger.devtools.fake_coolify.settings import FakeSettings
from ledger.devtools.fake_coolify.state import State

__all__ = ["FAKE_VERSION", "route"]

FAKE_VERSION = "4.3.11"

_Handler = Callable[[State, Call], Response]
_Route = tuple[_Handler, str]
"""A handler and the token ability it needs (``read``, ``write`` or ``deploy``)."""
_ROOT = "root"


def route(state: State, call: Call) -> Response:
    if call.method == "GET" and call.path in ("/api/health", f"{API}/health"):
        return Response("OK", media_type="text/html")
    if not call.path.startswith(f"{API}/"):
        return JSONResponse(NOT_FOUND_BODY, 404)
    throttle_headers = _throttle(state, call)
    response = _dispatch(state, call)
    response.headers.update(throttle_headers)
    return response


def _throttle(state: State, call: Call) -> dict[str, str]:
    """Laravel ThrottleRequests: a fixed window opened by its first request."""
    limit = state.settings.rate_limit
    if not limit:
        return {}
    now = time.monotonic()
    if state.window_hits == 0 or now >= state.window_start + state.settings.rate_window:
        state.window_start, state.window_hits = now, 0
    state.window_hits += 1
    remaining = max(0, limit - state.window_hits)
    headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining)}
    if state.window_hits <= limit:
        return headers
    retry_after = max(1, math.ceil(state.window_start + state.settings.rate_window - now))
    headers["Retry-After"] = str(retry_after)
    if wants_json(call.headers):
        response: Response = JSONResponse({"message": "Too Many Attempts."}, 429, headers)
    else:
        response = html_page("Too Many Requests", "<h1>429 | Too Many Requests</h1>", 429)
        response.headers.update(headers)
    raise Abort(response)


def _dispatch(state: State, call: Call) -> Response:
    relative = call.path[len(API) :]
    for pattern, routes in _ROUTES:
        match = pattern.fullmatch(relative)
        if match is None or call.method not in routes:
            continue
        handler, ability = routes[call.method]
        sensitive = _authorize(state.settings, call, ability)
        return handler(
            state, dataclasses.replace(call, params=match.groupdict(), sensitive=sensitive)
        )
    return JSONResponse(NOT_FOUND_BODY, 404)


def _abilities(settings: FakeSettings) -> dict[str, frozenset[str]]:
    return {
        settings.token: frozenset({_ROOT}),
        settings.deploy_token: frozenset({"read", "write", "deploy"}),
        settings.read_only_token: frozenset({"read"}),
    }


def _authorize(settings: FakeSettings, call: Call, ability: str) -> bool:
    """Sanctum, then ``ApiAllowed`` (the API switch), then ``api.ability`` (``root`` passes
    every check). Returns ``can_read_sensitive`` (``root`` or ``read:sensitive``)."""
    header = call.headers.get("authorization", "")
    presented = header.removeprefix("Bearer ") if header.startswith("Bearer ") else None
    abilities = None if presented is None else _abilities(settings).get(presented)
    if abilities is None:
        raise message(401, "Unauthenticated.")
    if not settings.api_enabled:
        raise Abort(JSONResponse({"success": True, "message": "API is disabled."}, 403))
    if _ROOT not in abilities and ability not in abilities:
        raise message(403, f"Missing required permissions: {ability}")
    return bool(abilities & {_ROOT, "read:sensitive"})


def _version(state: State, call: Call) -> Response:
    return Response(FAKE_VERSION, media_type="text/html")


_APP = r"/applications/(?P<uuid>[^/]+)"
_DEPLOYMENT = r"/deployments/(?P<uuid>[^/]+)"
_POST_ONLY: _Route = (deps.method_changed, "read")
_ROUTE_TABLE: tuple[tuple[str, Mapping[str, _Route]], ...] = (
    ("/version", {"GET": (_version, "read")}),
    ("/applications", {"GET": (apps.list_applications, "read")}),
    ("/applications/dockerimage", {"POST": (apps.create_dockerimage, "write")}),
    (
        _APP,
        {
            "GET": (apps.get_application, "read"),
            "PATCH": (apps.update_application, "write"),
            "DELETE": (apps.delete_application, "write"),
        },
    ),
    (
        _APP + "/envs",
        {
            "GET": (apps.list_envs, "read"),
            "POST": (apps.create_env, "write"),
            "PATCH": (apps.update_env, "write"),
        },
    ),
    (_APP + "/envs/bulk", {"PATCH": (apps.update_envs_bulk, "write")}),
    (_APP + r"/envs/(?P<env_uuid>[^/]+)", {"DELETE": (apps.delete_env, "write")}),
    (_APP + "/start", {"POST": (deps.start, "deploy"), "GET": _POST_ONLY}),
    (_APP + "/restart", {"POST": (deps.restart, "deploy"), "GET": _POST_ONLY}),
    (_APP + "/stop", {"POST": (deps.stop, "deploy"), "GET": _POST_ONLY}),
    ("/deploy", {"POST": (deps.deploy, "deploy"), "GET": _POST_ONLY}),
    ("/deployments", {"GET": (deps.list_deployments, "read")}),
    (r"/deployments/applications/(?P<uuid>[^/]+)", {"GET": (deps.list_app_deployments, "read")}),
    (_DEPLOYMENT, {"GET": (deps.get_deployment, "read")}),
    (_DEPLOYMENT + "/cancel", {"POST": (deps.cancel_deployment, "deploy")}),
    *resources.ROUTES,
)
_ROUTES = [(re.compile(path), handlers) for path, handlers in _ROUTE_TABLE]
