"""The fake's one project, its environment and its server, as slotledger's start-up checks
read them (``ProjectController``, ``ServersController``), with the real code's answers:

- ``GET /projects``: the team's projects, ``uuid``, ``name`` and ``description`` only;
- ``GET /projects/{uuid}``: the project with its environments; for a missing project the
  code calls ``load()`` on the null it found, so Coolify answers 500, not 404;
- ``PATCH /projects/{uuid}``: the JSON checks, then the validator and the not-allowed
  keys (422) before the project is looked up (404), then the update (201);
- ``GET /projects/{uuid}/environments`` and ``GET /projects/{uuid}/{name_or_uuid}`` (by
  name first, then uuid; 404 "Project not found." before "Environment not found.");
- ``GET /servers/{uuid}``: 404 "Server not found." for any other uuid.

:data:`ROUTES` has the shape of the route table in :mod:`.handlers`; the environment route
comes after ``/environments``, as in ``routes/api.php``.
"""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse, Response

from ledger.devtools.fake_coolify.calls import Call, json_body, message
from ledger.devtools.fake_coolify.state import State, app_json
from ledger.devtools.fake_coolify.validation import field_errors, not_allowed, validation_failed

__all__ = ["ROUTES"]

_CREATED_AT = "2026-01-01T00:00:00.000000Z"


def _name(name: str, value: object) -> str | None:
    if not isinstance(value, str):
        return f"The {name} field must be a string."
    return (
        None if len(value) <= 255 else f"The {name} field must not be greater than 255 characters."
    )


def _description(name: str, value: object) -> str | None:
    return None if isinstance(value, str) else f"The {name} field must be a string."


_PROJECT_RULES = {"name": _name, "description": _description}
_PROJECT = r"/projects/(?P<uuid>[^/]+)"


def _project(state: State, call: Call) -> dict[str, Any]:
    if call.params["uuid"] != state.settings.project_uuid:
        raise message(404, "Project not found.")
    return {
        "uuid": state.settings.project_uuid,
        "name": "fake project",
        "description": None,
    }


def _environment(state: State, call: Call) -> dict[str, Any]:
    settings = state.settings
    return {
        "uuid": settings.environment_uuid,
        "name": settings.environment_name,
        "description": None,
        "created_at": _CREATED_AT,
        "updated_at": _CREATED_AT,
    }


def list_projects(state: State, call: Call) -> Response:
    project = {"uuid": state.settings.project_uuid, "name": "fake project", "description": None}
    return JSONResponse([project])


def get_project(state: State, call: Call) -> Response:
    if call.params["uuid"] != state.settings.project_uuid:
        return JSONResponse({"message": "Server Error"}, 500)  # ->first()->load() on null
    return JSONResponse({**_project(state, call), "environments": [_environment(state, call)]})


def update_project(state: State, call: Call) -> Response:
    body = json_body(call)
    errors = field_errors(body, _PROJECT_RULES) | not_allowed(body, _PROJECT_RULES)
    if errors:
        raise validation_failed(errors)
    project = _project(state, call)
    return JSONResponse({**project, **body}, 201)


def list_environments(state: State, call: Call) -> Response:
    _project(state, call)
    return JSONResponse([_environment(state, call)])


def get_environment(state: State, call: Call) -> Response:
    _project(state, call)
    wanted = call.params["environment_name_or_uuid"]
    environment = _environment(state, call)
    if wanted not in (environment["name"], environment["uuid"]):
        raise message(404, "Environment not found.")
    apps = [app_json(app, call.sensitive) for app in state.apps.values()]
    return JSONResponse({**environment, "applications": apps})


def get_server(state: State, call: Call) -> Response:
    if call.params["uuid"] != state.settings.server_uuid:
        raise message(404, "Server not found.")
    return JSONResponse(
        {
            "uuid": state.settings.server_uuid,
            "name": "fake server",
            "description": None,
            "ip": "127.0.0.1",
            "user": "root",
            "port": 22,
        }
    )


ROUTES = (
    ("/projects", {"GET": (list_projects, "read")}),
    (_PROJECT, {"GET": (get_project, "read"), "PATCH": (update_project, "write")}),
    (_PROJECT + "/environments", {"GET": (list_environments, "read")}),
    (_PROJECT + r"/(?P<environment_name_or_uuid>[^/]+)", {"GET": (get_environment, "read")}),
    (r"/servers/(?P<uuid>[^/]+)", {"GET": (get_server, "read")}),
)
