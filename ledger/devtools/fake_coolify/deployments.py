"""The lifecycle and deployment routes: start/restart/stop (AppCtl), and DeployCtl's
deployments, cancel and ``/deploy``."""

from __future__ import annotations

import re
from typing import Any

from starlette.responses import JSONResponse, Response

from ledger.application.ports import DeploymentStatus
from ledger.devtools.fake_coolify.calls import Abort, Call, lenient_body, message, munged_query
from ledger.devtools.fake_coolify.state import App, State, deployment_json
from ledger.devtools.fake_coolify.timeline import cancel, queue_deployment, request_stop
from ledger.devtools.fake_coolify.validation import (
    integer,
    php_truthy,
    query_flag,
    request_validation_failed,
)

__all__ = [
    "cancel_deployment",
    "deploy",
    "get_deployment",
    "list_app_deployments",
    "list_deployments",
    "method_changed",
    "restart",
    "start",
    "stop",
]

_SKIPPED = "Deployment already queued for this commit."


def start(state: State, call: Call) -> Response:
    force = query_flag(call.query.get("force"), default=False)
    instant = query_flag(call.query.get("instant_deploy"), default=False)
    return _queue(state, call, "Deployment request queued.", force=force, instant=instant)


def restart(state: State, call: Call) -> Response:
    text = "Restart request queued."
    return _queue(state, call, text, force=False, instant=False, restart_only=True)


def _queue(
    state: State,
    call: Call,
    queued_message: str,
    *,
    force: bool,
    instant: bool,
    restart_only: bool = False,
) -> Response:
    """``action_deploy``/``action_restart`` answer "skipped" without a uuid, and ignore a
    full queue: they hand out the fresh uuid of a deployment never created (API.md §5)."""
    app = state.app_or_404(call.params["uuid"], "Application not found.")
    queued = queue_deployment(state, app, force=force, instant=instant, restart_only=restart_only)
    if queued == "skipped":
        return JSONResponse({"message": _SKIPPED})
    uuid = state.new_id() if queued == "queue_full" else queued.uuid
    return JSONResponse({"message": queued_message, "deployment_uuid": uuid})


def stop(state: State, call: Call) -> Response:
    """``action_stop`` only dispatches the job; the containers go when it runs."""
    app = state.app_or_404(call.params["uuid"], "Application not found.")
    request_stop(state, app)
    return JSONResponse({"message": "Application stopping request queued."})


def method_changed(state: State, call: Call) -> Response:
    body = {"message": "This endpoint has changed to a POST request."}
    return JSONResponse(body, 405, headers={"Allow": "POST"})


def get_deployment(state: State, call: Call) -> Response:
    deployment = state.deployments.get(call.params["uuid"])
    if deployment is None:
        raise message(404, "Deployment not found.")
    return JSONResponse(deployment_json(deployment, state.settings, call.sensitive))


def list_deployments(state: State, call: Call) -> Response:
    """``deployments``: the queued and running ones on the team's servers, by id."""
    active = [
        d
        for d in state.deployments.values()
        if d.status in (DeploymentStatus.QUEUED, DeploymentStatus.IN_PROGRESS)
    ]
    active.sort(key=lambda d: d.id)
    return JSONResponse([deployment_json(d, state.settings, call.sensitive) for d in active])


def cancel_deployment(state: State, call: Call) -> Response:
    deployment = state.deployments.get(call.params["uuid"])
    if deployment is None:
        raise message(404, "Deployment not found.")
    if deployment.status.is_terminal:
        raise message(
            400, f"Deployment cannot be cancelled. Current status: {deployment.status.value}"
        )
    cancel(state, deployment)
    body = {
        "message": "Deployment cancelled successfully.",
        "deployment_uuid": deployment.uuid,
        "status": deployment.status.value,
    }
    return JSONResponse(body)


def list_app_deployments(state: State, call: Call) -> Response:
    """``get_application_deployments``: ``$request->validate`` runs before anything else,
    then the 404 (without a period)."""
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
        raise request_validation_failed(errors)
    app = state.app_or_404(call.params["uuid"], "Application not found")
    own = [d for d in state.deployments.values() if d.app_uuid == app.uuid]
    newest_first = sorted(own, key=lambda d: d.id, reverse=True)
    window = newest_first[paging["skip"] : paging["skip"] + paging["take"]]
    page = [deployment_json(d, state.settings, call.sensitive) for d in window]
    return JSONResponse({"count": len(own), "deployments": page})


# /deploy (DeployCtl deploy, by_uuids, by_tags, deploy_resource)


def deploy(state: State, call: Call) -> Response:
    """``POST /deploy``: ``uuid`` or ``tag`` (comma-separated), from the JSON body or the query.
    ``force`` is cast the PHP way, so ``force=false`` forces. A full queue stops the request
    with 429 and ``Retry-After: 60``, keeping what it queued before."""
    params = {**munged_query(call), **lenient_body(call)}
    uuids, tags = params.get("uuid"), params.get("tag")
    force = php_truthy(params.get("force"))
    pull_request = max(_php_int(params.get("pr")), 0)
    if uuids and tags:
        raise message(400, "You can only use uuid or tag, not both.")
    if tags and pull_request:
        raise message(400, "You can only use tag or pr, not both.")
    if tags:
        return _deploy_tags(state, _names(tags), force)
    if uuids:
        return _deploy_uuids(state, _names(uuids), force, pull_request)
    raise message(400, "You must provide uuid or tag.")


def _php_int(value: object) -> int:
    """PHP's ``(int)`` cast: the leading digits of a string, else 0."""
    if isinstance(value, int):
        return value
    match = re.match(r"\s*([+-]?\d+)", str(value or ""))
    return int(match.group(1)) if match else 0


def _names(value: object) -> list[str]:
    """``explode(',')`` then ``array_filter``, which also drops ``"0"``."""
    return [name for name in str(value).split(",") if name not in ("", "0")]


def _deploy_uuids(state: State, uuids: list[str], force: bool, pull_request: int) -> Response:
    if not uuids:
        raise message(400, "No UUIDs provided.")
    deployments: list[dict[str, Any]] = []
    for uuid in uuids:
        app = state.apps.get(uuid)
        if app is None:
            continue
        if pull_request:  # the fake has no preview deployments
            text = f"Pull request {pull_request} not found for this resource."
            deployments.append({"message": text, "resource_uuid": uuid})
            continue
        text, deployment_uuid = _deploy_resource(state, app, force)
        deployments.append(
            {"message": text, "resource_uuid": uuid, "deployment_uuid": deployment_uuid}
        )
    if not deployments:
        raise message(404, "No resources found.")
    return JSONResponse({"deployments": deployments})


def _deploy_tags(state: State, tags: list[str], force: bool) -> Response:
    if not tags:
        raise message(400, "No TAGs provided.")
    messages: list[str] = []
    details: list[dict[str, str]] = []
    for tag in tags:
        if tag not in state.tags:
            continue
        tagged = [app for app in state.apps.values() if tag in app.tags]
        if not tagged:
            messages.append(f"No resources found for tag {tag}.")
        for app in tagged:
            text, deployment_uuid = _deploy_resource(state, app, force)
            details.append({"resource_uuid": app.uuid, "deployment_uuid": deployment_uuid})
            messages.append(text)
    if not messages:
        raise message(404, "No resources found with this tag.")
    payload: dict[str, Any] = {"message": messages}
    if details:
        payload["details"] = details
    return JSONResponse(payload)


def _deploy_resource(state: State, app: App, force: bool) -> tuple[str, str]:
    """The message and deployment uuid ``deploy_resource`` answers. The uuid is made before
    queueing, so a skipped request still hands it out although nothing was created."""
    queued = queue_deployment(state, app, force=force, instant=False)
    if queued == "queue_full":
        text = "Deployment queue is full. Please wait for existing deployments to complete."
        raise Abort(JSONResponse({"message": text}, 429, headers={"Retry-After": "60"}))
    if queued == "skipped":
        return _SKIPPED, state.new_id()
    return f"Application {app.attributes['name']} deployment queued.", queued.uuid
