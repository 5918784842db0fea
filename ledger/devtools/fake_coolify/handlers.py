"""The Coolify API routes the fake serves, in Laravel's order: throttle, then auth, then the
controller. Handlers run with the fake's lock held and its deployments advanced to now."""

from __future__ import annotations

import dataclasses
import math
import re
import time
from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse, Response

from ledger.application.ports import DeploymentStatus
from ledger.devtools.fake_coolify.calls import (
    API,
    NOT_FOUND_BODY,
    Abort,
    Call,
    html_page,
    json_body,
    message,
    wants_json,
)
from ledger.devtools.fake_coolify.state import (
    App,
    Env,
    State,
    app_json,
    deployment_json,
    env_json,
    now_iso,
)
from ledger.devtools.fake_coolify.validation import (
    ACTION_KEYS,
    CREATE_REQUIRED,
    CREATE_RULES,
    ENV_FLAG_DEFAULTS,
    ENV_FLAGS,
    ENV_RULES,
    UPDATE_RULES,
    integer,
    is_true,
    query_flag,
    stored_description,
    strip_tags,
    validation_errors,
    validation_failed,
)

__all__ = ["FAKE_VERSION", "route"]

FAKE_VERSION = "4.3.11"

_Handler = Callable[[State, Call], Response]
_Route = tuple[_Handler, str]
"""A handler and the token ability it needs (``read``, ``write`` or ``deploy``)."""


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
        _authorize(state, call, ability)
        return handler(state, dataclasses.replace(call, params=match.groupdict()))
    return JSONResponse(NOT_FOUND_BODY, 404)


def _authorize(state: State, call: Call, ability: str) -> None:
    """Sanctum auth, then the ``api.ability`` middleware (the read-only token reads only)."""
    settings = state.settings
    presented = call.headers.get("authorization")
    if presented == f"Bearer {settings.token}":
        return
    if presented != f"Bearer {settings.read_only_token}":
        raise message(401, "Unauthenticated.")
    if ability != "read":
        raise message(403, f"Missing required permissions: {ability}")


def _version(state: State, call: Call) -> Response:
    return Response(FAKE_VERSION, media_type="text/html")


def _create_dockerimage(state: State, call: Call) -> Response:
    body = json_body(call)
    errors = validation_errors(body, CREATE_RULES, CREATE_REQUIRED)
    if errors:
        raise validation_failed(errors)
    settings = state.settings
    env_name, env_uuid = body.get("environment_name"), body.get("environment_uuid")
    if env_name is None and env_uuid is None:
        raise message(
            422, "You need to provide at least one of environment_name or environment_uuid."
        )
    if body["project_uuid"] != settings.project_uuid:
        raise message(404, "Project not found.")
    if env_name != settings.environment_name and env_uuid != settings.environment_uuid:
        raise message(404, "Environment not found.")
    if body["server_uuid"] != settings.server_uuid:
        raise message(404, "Server not found.")
    uuid = state.new_id()
    if body.get("domains") is not None:
        fqdn = body["domains"]
    elif is_true(body.get("autogenerate_domain", True)):
        fqdn = f"http://{uuid}.127.0.0.1.sslip.io"
    else:
        fqdn = None
    state.check_domains(fqdn, body, uuid)
    stamp = now_iso()
    attributes: dict[str, Any] = {
        "name": None,
        "description": None,
        "fqdn": fqdn,
        "status": "exited:unhealthy",
        "build_pack": "dockerimage",
        "docker_registry_image_name": body["docker_registry_image_name"],
        "docker_registry_image_tag": None,
        "ports_exposes": None,
        "ports_mappings": None,
        "health_check_enabled": False,
        "limits_memory": "0",
        "limits_cpus": "0",
        "environment_id": 1,
        "destination_id": 0,
        "destination_type": "App\\Models\\StandaloneDocker",
        "restart_count": 0,
        "last_restart_at": None,
        "created_at": stamp,
        "updated_at": stamp,
        "deleted_at": None,
        "server_status": True,
    }
    attributes.update({k: v for k, v in body.items() if k not in ACTION_KEYS})
    attributes["name"] = strip_tags(attributes["name"] or f"docker-image-{uuid}")
    if "description" in body:
        attributes["description"] = stored_description(body["description"])
    app = App(id=state.next_row_id(), uuid=uuid, attributes=attributes)
    state.apps[uuid] = app
    if is_true(body.get("instant_deploy")):
        state.queue_deployment(app, force_rebuild=False, instant=True)
    return JSONResponse({"uuid": uuid, "domains": fqdn}, 201)


def _get_application(state: State, call: Call) -> Response:
    app = state.app_or_404(call.params["uuid"], "Application not found.")
    return JSONResponse(app_json(app))


def _update_application(state: State, call: Call) -> Response:
    body = json_body(call)
    errors = validation_errors(body, UPDATE_RULES)
    if errors:
        raise validation_failed(errors)
    app = state.app_or_404(call.params["uuid"], "Application not found")
    if "domains" in body:
        state.check_domains(body["domains"], body, app.uuid)
    changes = {k: v for k, v in body.items() if k not in ACTION_KEYS}
    if "name" in changes:
        changes["name"] = strip_tags(changes["name"] or "")
    if "description" in changes:
        changes["description"] = stored_description(changes["description"])
    if "domains" in body:
        changes["fqdn"] = body["domains"]
    app.attributes.update(changes, updated_at=now_iso())
    if is_true(body.get("instant_deploy")):
        if state.has_active_deployment(app):
            return JSONResponse({"message": "Deployment already queued for this commit."})
        state.queue_deployment(app, force_rebuild=False, instant=False)
    return JSONResponse({"uuid": app.uuid})


def _delete_application(state: State, call: Call) -> Response:
    app = state.app_or_404(call.params["uuid"], "Application not found")
    if app.delete_at is None:
        app.delete_at = time.monotonic() + state.settings.delete_delay
    return JSONResponse({"message": "Application deletion request queued."})


def _update_envs_bulk(state: State, call: Call) -> Response:
    body = json_body(call)
    app = state.app_or_404(call.params["uuid"], "Application not found")
    items = body.get("data")
    if not isinstance(items, list) or not items:
        raise message(400, "Bulk data is required.")
    saved = [_upsert_env(state, app, item) for item in items]
    return JSONResponse([env_json(env) for env in saved], 201)


def _upsert_env(state: State, app: App, item: object) -> Env:
    """One bulk item; earlier items stay saved when a later one fails (not atomic)."""
    if not isinstance(item, dict):
        raise validation_failed({"data": ["Each item must be an object."]})
    known = {key: value for key, value in item.items() if key in ENV_RULES}
    errors = validation_errors(known, ENV_RULES, ("key",))
    if errors:
        raise validation_failed(errors)
    flags = {
        flag: ENV_FLAG_DEFAULTS[flag] if known.get(flag) is None else is_true(known[flag])
        for flag in ENV_FLAGS
    }
    key, value, stamp = known["key"], known.get("value"), now_iso()
    for env in app.envs:
        if env.key == key and env.is_preview == flags["is_preview"]:
            for flag, flag_value in flags.items():
                setattr(env, flag, flag_value)
            env.value, env.comment, env.updated_at = value, known.get("comment"), stamp
            return env
    env = Env(
        uuid=state.new_id(),
        key=key,
        value=value,
        comment=known.get("comment"),
        created_at=stamp,
        updated_at=stamp,
        **flags,
    )
    app.envs.append(env)
    return env


def _start(state: State, call: Call) -> Response:
    force = query_flag(call.query.get("force"), default=False)
    instant = query_flag(call.query.get("instant_deploy"), default=False)
    return _deploy(state, call, "Deployment request queued.", force=force, instant=instant)


def _restart(state: State, call: Call) -> Response:
    return _deploy(state, call, "Restart request queued.", force=False, instant=False)


def _deploy(
    state: State, call: Call, queued_message: str, *, force: bool, instant: bool
) -> Response:
    """``queue_application_deployment``: skip check first, then the queue limit."""
    app = state.app_or_404(call.params["uuid"], "Application not found.")
    if not (force or instant) and state.has_active_deployment(app):
        return JSONResponse({"message": "Deployment already queued for this commit."})
    if state.use_up("queue_full_next"):
        return JSONResponse({"message": queued_message, "deployment_uuid": state.new_id()})
    deployment = state.queue_deployment(app, force_rebuild=force, instant=instant)
    return JSONResponse({"message": queued_message, "deployment_uuid": deployment.uuid})


def _stop(state: State, call: Call) -> Response:
    app = state.app_or_404(call.params["uuid"], "Application not found.")
    app.attributes.update(status="exited:unhealthy", updated_at=now_iso())
    return JSONResponse({"message": "Application stopping request queued."})


def _method_changed(state: State, call: Call) -> Response:
    body = {"message": "This endpoint has changed to a POST request."}
    return JSONResponse(body, 405, headers={"Allow": "POST"})


def _get_deployment(state: State, call: Call) -> Response:
    deployment = state.deployments.get(call.params["uuid"])
    if deployment is None:
        raise message(404, "Deployment not found.")
    return JSONResponse(deployment_json(deployment, state.settings))


def _cancel_deployment(state: State, call: Call) -> Response:
    deployment = state.deployments.get(call.params["uuid"])
    if deployment is None:
        raise message(404, "Deployment not found.")
    if deployment.status.is_terminal:
        raise message(
            400, f"Deployment cannot be cancelled. Current status: {deployment.status.value}"
        )
    deployment.status = DeploymentStatus.CANCELLED_BY_USER
    deployment.finished_at = deployment.updated_at = now_iso()
    app = state.apps[deployment.app_uuid]
    app.busy_until = max(
        (
            d.ends_at
            for d in state.deployments.values()
            if d.app_uuid == app.uuid and not d.status.is_terminal
        ),
        default=time.monotonic(),
    )
    body = {
        "message": "Deployment cancelled successfully.",
        "deployment_uuid": deployment.uuid,
        "status": deployment.status.value,
    }
    return JSONResponse(body)


def _list_app_deployments(state: State, call: Call) -> Response:
    app = state.app_or_404(call.params["uuid"], "Application not found.")
    errors: dict[str, list[str]] = {}
    paging: dict[str, int] = {}
    for name, default, minimum in (("skip", "0", 0), ("take", "10", 1)):
        text = call.query.get(name, default)
        problem = integer(name, text)
        if problem is None and int(text) < minimum:
            problem = f"The {name} field must be at least {minimum}."
        if problem is None:
            paging[name] = int(text)
        else:
            errors[name] = [problem]
    if errors:
        raise validation_failed(errors)
    own = [d for d in state.deployments.values() if d.app_uuid == app.uuid]
    newest_first = sorted(own, key=lambda d: d.id, reverse=True)
    window = newest_first[paging["skip"] : paging["skip"] + paging["take"]]
    page = [deployment_json(d, state.settings) for d in window]
    return JSONResponse({"count": len(own), "deployments": page})


_APP = r"/applications/(?P<uuid>[^/]+)"
_DEPLOYMENT = r"/deployments/(?P<uuid>[^/]+)"
_ROUTE_TABLE: tuple[tuple[str, dict[str, _Route]], ...] = (
    ("/version", {"GET": (_version, "read")}),
    ("/applications/dockerimage", {"POST": (_create_dockerimage, "write")}),
    (
        _APP,
        {
            "GET": (_get_application, "read"),
            "PATCH": (_update_application, "write"),
            "DELETE": (_delete_application, "write"),
        },
    ),
    (_APP + "/envs/bulk", {"PATCH": (_update_envs_bulk, "write")}),
    (_APP + "/start", {"POST": (_start, "deploy"), "GET": (_method_changed, "read")}),
    (_APP + "/restart", {"POST": (_restart, "deploy"), "GET": (_method_changed, "read")}),
    (_APP + "/stop", {"POST": (_stop, "deploy"), "GET": (_method_changed, "read")}),
    (r"/deployments/applications/(?P<uuid>[^/]+)", {"GET": (_list_app_deployments, "read")}),
    (_DEPLOYMENT, {"GET": (_get_deployment, "read")}),
    (_DEPLOYMENT + "/cancel", {"POST": (_cancel_deployment, "deploy")}),
)
_ROUTES = [(re.compile(path), handlers) for path, handlers in _ROUTE_TABLE]
