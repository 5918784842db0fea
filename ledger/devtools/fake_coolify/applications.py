"""The application and env-var routes (AppCtl in API.md), each in the real controller's
order of checks."""

from __future__ import annotations

import time
from typing import Any

from starlette.responses import JSONResponse, Response

from ledger.devtools.fake_coolify.calls import Call, json_body, lenient_body, message
from ledger.devtools.fake_coolify.state import App, Env, State, app_json, env_json
from ledger.devtools.fake_coolify.timeline import queue_deployment
from ledger.devtools.fake_coolify.validation import (
    ACTION_KEYS,
    CREATE_REQUIRED,
    CREATE_RULES,
    ENV_FLAG_DEFAULTS,
    ENV_FLAGS,
    ENV_RULES,
    UPDATE_RULES,
    field_errors,
    is_numeric,
    is_true,
    not_allowed,
    stored_description,
    strip_tags,
    validation_failed,
)

__all__ = [
    "create_dockerimage",
    "create_env",
    "delete_application",
    "delete_env",
    "get_application",
    "list_applications",
    "list_envs",
    "update_application",
    "update_env",
    "update_envs_bulk",
]

_NOT_FOUND = "Application not found"
"""The text of most AppCtl routes; GET, start/stop/restart and env DELETE add a period."""


def create_dockerimage(state: State, call: Call) -> Response:
    body = json_body(call)
    errors = not_allowed(body, CREATE_RULES) or field_errors(body, CREATE_RULES, CREATE_REQUIRED)
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
    stamp = state.now_stamp()
    attributes: dict[str, Any] = {
        "name": None,
        "description": None,
        "fqdn": fqdn,
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
        "created_at": stamp,
        "updated_at": stamp,
        "deleted_at": None,
        "server_status": True,
    }
    attributes.update({k: v for k, v in body.items() if k not in ACTION_KEYS})
    attributes["name"] = strip_tags(attributes["name"] or f"docker-image-{uuid}")
    if "description" in body:
        attributes["description"] = stored_description(body["description"])
    tags = [tag for tag in body.get("tags") or [] if isinstance(tag, str)]
    app = App(id=state.next_row_id(), uuid=uuid, attributes=attributes, tags=tags)
    # The column default; Coolify's own is the time its migration ran.
    app.last_online_at = stamp
    state.apps[uuid] = app
    state.tags.update(tags)
    if is_true(body.get("instant_deploy")):
        queue_deployment(state, app, force=False, instant=True)
    return JSONResponse({"uuid": uuid, "domains": fqdn}, 201)


def list_applications(state: State, call: Call) -> Response:
    """``applications``: the team's apps (deletion pending included) ordered by name
    (``ownedByCurrentTeamAPI``), filtered by an exact tag name when ``tag`` is given."""
    tag = call.query.get("tag", "").strip()
    apps = [app for app in state.apps.values() if not tag or tag in app.tags]
    apps.sort(key=lambda app: app.attributes["name"])
    return JSONResponse([app_json(app, call.sensitive) for app in apps])


def get_application(state: State, call: Call) -> Response:
    app = state.app_or_404(call.params["uuid"], _NOT_FOUND + ".")
    return JSONResponse(app_json(app, call.sensitive))


def update_application(state: State, call: Call) -> Response:
    """``update_by_uuid``: JSON checks, then 404, then the hand-written checks that answer
    early (ports, domain conflicts), then the validator's errors with the not-allowed keys
    added to them."""
    body = json_body(call)
    app = state.app_or_404(call.params["uuid"], _NOT_FOUND)
    if "ports_exposes" in body and not all(
        is_numeric(port) for port in str(body["ports_exposes"] or "").split(",")
    ):
        # A hand-written check: its error is a string, not a list (API.md §0).
        problem = "The ports_exposes should be a comma separated list of numbers."
        raise validation_failed({"ports_exposes": problem})
    if "domains" in body:
        state.check_domains(body["domains"], body, app.uuid)
    errors = {**field_errors(body, UPDATE_RULES), **not_allowed(body, UPDATE_RULES)}
    if errors:
        raise validation_failed(errors)
    changes = {k: v for k, v in body.items() if k not in ACTION_KEYS}
    if "name" in changes:
        changes["name"] = strip_tags(changes["name"] or "")
    if "description" in changes:
        changes["description"] = stored_description(changes["description"])
    if "domains" in body:
        changes["fqdn"] = body["domains"]
    app.attributes.update(changes, updated_at=state.now_stamp())
    if is_true(body.get("instant_deploy")):
        queued = queue_deployment(state, app, force=False, instant=False)
        if queued == "skipped":
            return JSONResponse({"message": "Deployment already queued for this commit."})
    return JSONResponse({"uuid": app.uuid})


def delete_application(state: State, call: Call) -> Response:
    app = state.app_or_404(call.params["uuid"], _NOT_FOUND)
    if app.delete_at is None:
        app.delete_at = time.monotonic() + state.settings.delete_delay
    return JSONResponse({"message": "Application deletion request queued."})


# Env vars (AppCtl envs, create_env, update_env_by_uuid, create_bulk_envs, delete_env_by_uuid)


def list_envs(state: State, call: Call) -> Response:
    """Production vars first, then preview vars, each by id; values only for a sensitive
    token."""
    app = state.app_or_404(call.params["uuid"], _NOT_FOUND)
    ordered = [e for e in app.envs if not e.is_preview] + [e for e in app.envs if e.is_preview]
    return JSONResponse([env_json(env, call.sensitive) for env in ordered])


def create_env(state: State, call: Call) -> Response:
    """404 first (no JSON checks on this route), then the validator with the not-allowed keys
    added; 409 for a key that exists (matched trimmed, spaces as underscores)."""
    body = lenient_body(call)
    app = state.app_or_404(call.params["uuid"], _NOT_FOUND)
    _check_env_body(body)
    flags = _env_flags(body)
    if _find_env(app, body["key"], flags["is_preview"]) is not None:
        raise message(409, "Environment variable already exists. Use PATCH request to update it.")
    env = _new_env(state, app, body, flags)
    return JSONResponse({"uuid": env.uuid}, 201)


def update_env(state: State, call: Call) -> Response:
    """Matched by key (and ``is_preview``), never created; ``is_multiline`` and
    ``is_shown_once`` left out are reset, the other flags kept."""
    body = json_body(call)
    app = state.app_or_404(call.params["uuid"], _NOT_FOUND)
    _check_env_body(body)
    env = _find_env(app, body["key"], is_true(body.get("is_preview")))
    if env is None:
        raise message(404, "Environment variable not found.")
    env.value, env.updated_at = body.get("value"), state.now_stamp()
    env.is_literal = is_true(body.get("is_literal"))
    env.is_multiline = is_true(body.get("is_multiline"))
    env.is_shown_once = is_true(body.get("is_shown_once"))
    for flag in ("is_runtime", "is_buildtime"):
        if flag in body:
            setattr(env, flag, is_true(body[flag]))
    if "comment" in body:
        env.comment = body["comment"]
    return JSONResponse(env_json(env, call.sensitive), 201)


def update_envs_bulk(state: State, call: Call) -> Response:
    body = json_body(call)
    app = state.app_or_404(call.params["uuid"], _NOT_FOUND)
    items = body.get("data")
    if not isinstance(items, list) or not items:
        raise message(400, "Bulk data is required.")
    saved = [_upsert_env(state, app, item) for item in items]
    return JSONResponse([env_json(env, call.sensitive) for env in saved], 201)


def delete_env(state: State, call: Call) -> Response:
    app = state.app_or_404(call.params["uuid"], _NOT_FOUND + ".")
    env = next((e for e in app.envs if e.uuid == call.params["env_uuid"]), None)
    if env is None:
        raise message(404, "Environment variable not found.")
    app.envs.remove(env)
    return JSONResponse({"message": "Environment variable deleted."})


def _check_env_body(body: dict[str, Any]) -> None:
    errors = {**field_errors(body, ENV_RULES, ("key",)), **not_allowed(body, ENV_RULES)}
    if errors:
        raise validation_failed(errors)


def _env_flags(item: dict[str, Any]) -> dict[str, bool]:
    return {
        flag: ENV_FLAG_DEFAULTS[flag] if item.get(flag) is None else is_true(item[flag])
        for flag in ENV_FLAGS
    }


def _find_env(app: App, key: str, is_preview: bool) -> Env | None:
    wanted = key.strip().replace(" ", "_")
    return next((e for e in app.envs if e.key == wanted and e.is_preview == is_preview), None)


def _new_env(state: State, app: App, item: dict[str, Any], flags: dict[str, bool]) -> Env:
    stamp = state.now_stamp()
    env = Env(
        uuid=state.new_id(),
        key=item["key"],
        value=item.get("value"),
        comment=item.get("comment"),
        created_at=stamp,
        updated_at=stamp,
        **flags,
    )
    app.envs.append(env)
    return env


def _upsert_env(state: State, app: App, item: object) -> Env:
    """One bulk item; earlier items stay saved when a later one fails (not atomic)."""
    if not isinstance(item, dict):
        raise validation_failed({"data": ["Each item must be an object."]})
    known = {key: value for key, value in item.items() if key in ENV_RULES}
    errors = field_errors(known, ENV_RULES, ("key",))
    if errors:
        raise validation_failed(errors)
    flags = _env_flags(known)
    env = _find_env(app, known["key"], flags["is_preview"])
    if env is None:
        return _new_env(state, app, known, flags)
    for flag, flag_value in flags.items():
        setattr(env, flag, flag_value)
    env.value, env.comment, env.updated_at = (
        known.get("value"),
        known.get("comment"),
        state.now_stamp(),
    )
    return env
