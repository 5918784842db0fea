"""A fake Coolify v4 API that behaves like the real code (API.md), for tests and the demo.

It keeps applications, env vars and deployments in memory, runs deployments on a timer
(queued, then in_progress, then finished after ``deploy_delay``), throttles like Laravel, and
can inject the failures a pool manager must survive (see :class:`Faults`). Faults can be set
from Python or over HTTP (``POST /_fake/faults``); ``GET /_fake/state`` shows everything,
including a log of every request received (without the Authorization header).

Run it in-process with :class:`FakeCoolifyServer`, or standalone with :func:`main`.
"""

from __future__ import annotations

import asyncio
import dataclasses
import json
import math
import random
import re
import socket
import string
import struct
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from types import TracebackType
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import HTMLResponse, JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ledger.adapters.coolify.models import ENV_KEY_PATTERN, DeploymentStatus

DEFAULT_TOKEN = "fake-coolify-token"
FAKE_VERSION = "4.3.11"
_API = "/api/v1"
_NOT_FOUND_BODY = {"message": "Not found.", "docs": "https://coolify.io/docs"}
_ID_ALPHABET = string.ascii_lowercase + string.digits
_REQUEST_LOG_LIMIT = 10_000
"""The request log keeps the newest entries only, so a long demo run stays bounded."""


@dataclass(frozen=True)
class FakeSettings:
    """How the fake behaves when nothing is wrong; change at runtime with ``configure``.

    ``token`` has every ability (like ``root``); ``read_only_token`` only ``read``, so write and
    deploy calls made with it get Coolify's 403.

    The project, server and environment are the only ones that exist: create calls naming
    anything else get Coolify's 404s. ``rate_limit`` is requests per ``rate_window`` seconds for
    all of ``/api/v1`` (0 turns the throttle off); Coolify's default is 200 per minute.
    """

    token: str = DEFAULT_TOKEN
    read_only_token: str = "fake-coolify-read-only-token"
    deploy_delay: float = 1.0
    delete_delay: float = 0.5
    rate_limit: int = 200
    rate_window: float = 60.0
    project_uuid: str = "fake-project"
    server_uuid: str = "fake-server"
    environment_name: str = "production"
    environment_uuid: str = "fake-environment"
    seed: int | None = None
    """Seeds ids and fault draws when the fake is built (changing it later has no effect)."""


@dataclass(frozen=True)
class Faults:
    """Failures to inject. ``*_rate`` are per-request probabilities; ``*_next`` are used up.

    - ``error_rate``: answer 500 ``{"message":"Server Error"}`` without doing the work.
    - ``latency``: seconds added before every answer.
    - ``hang_rate``: never answer; the client has to time out.
    - ``reset_rate``: drop the TCP connection (RST) without an answer.
    - ``fail_next_deployments``: that many new deployments end ``failed``.
    - ``exit_after_deploy``: finished deployments leave the app ``exited:unhealthy``.
    - ``queue_full_next``: start/restart return a ``deployment_uuid`` that was never created
      (Coolify's queue_full bug, API.md §5).
    - ``html_next``: answer 200 with an HTML page (a debug page listing the request headers).
    - ``garbage_next``: do the work, then answer a truncated JSON body.
    - ``drop_field_next``: do the work, then leave this key out of the next JSON object answer.
    - ``echo_auth_next``: answer 400 with the Authorization header echoed in the message.
    """

    error_rate: float = 0.0
    latency: float = 0.0
    hang_rate: float = 0.0
    reset_rate: float = 0.0
    fail_next_deployments: int = 0
    exit_after_deploy: bool = False
    queue_full_next: int = 0
    html_next: int = 0
    garbage_next: int = 0
    drop_field_next: str = ""
    echo_auth_next: int = 0

    def updated(self, changes: Mapping[str, object]) -> Faults:
        """A copy with ``changes`` applied; unknown names or wrong types raise ValueError."""
        types = {f.name: type(getattr(self, f.name)) for f in dataclasses.fields(self)}
        checked: dict[str, Any] = {}
        for name, value in changes.items():
            expected = types.get(name)
            if expected is None:
                raise ValueError(f"unknown fault {name!r}")
            if expected is float and isinstance(value, int) and not isinstance(value, bool):
                value = float(value)
            if type(value) is not expected:
                raise ValueError(f"fault {name!r} must be {expected.__name__}")
            if isinstance(value, int | float) and not isinstance(value, bool) and value < 0:
                raise ValueError(f"fault {name!r} must not be negative")
            checked[name] = value
        return dataclasses.replace(self, **checked)


@dataclass(frozen=True)
class RecordedRequest:
    """One request as the fake received it (the Authorization header is left out)."""

    method: str
    path: str
    query: dict[str, str]
    body: Any
    headers: dict[str, str]


@dataclass
class _Env:
    uuid: str
    key: str
    value: str | None
    is_preview: bool
    is_literal: bool
    is_multiline: bool
    is_shown_once: bool
    is_runtime: bool
    is_buildtime: bool
    comment: str | None
    created_at: str
    updated_at: str


@dataclass
class _App:
    """An application; ``attributes`` holds its columns as the API shows them."""

    id: int
    uuid: str
    attributes: dict[str, Any]
    envs: list[_Env] = field(default_factory=list)
    delete_at: float | None = None
    busy_until: float = 0.0


@dataclass
class _Deployment:
    id: int
    uuid: str
    app_uuid: str
    app_id: int
    app_name: str
    image_tag: str | None
    force_rebuild: bool
    status: DeploymentStatus
    starts_at: float
    ends_at: float
    outcome: DeploymentStatus
    exits_app: bool
    created_at: str
    updated_at: str
    finished_at: str | None = None


class _Abort(Exception):
    """Ends a handler early with ``response``, like Laravel's ``abort()``."""

    def __init__(self, response: Response) -> None:
        super().__init__(response.status_code)
        self.response = response


@dataclass(frozen=True)
class _Call:
    """One request, read once; ``params`` are the path parameters of the matched route."""

    method: str
    path: str
    params: dict[str, str]
    query: Mapping[str, str]
    headers: Mapping[str, str]
    raw_body: bytes


_Handler = Callable[["FakeCoolify", _Call], Response]
_Route = tuple[_Handler, str]
"""A handler and the token ability it needs (``read``, ``write`` or ``deploy``)."""
_Check = Callable[[str, object], str | None]


# Laravel-style validation, enough to reject what Coolify rejects.


def _label(field_name: str) -> str:
    return field_name.replace("_", " ")


def _string(max_length: int | None = None, pattern: str | None = None) -> _Check:
    def check(name: str, value: object) -> str | None:
        if not isinstance(value, str):
            return f"The {_label(name)} field must be a string."
        if max_length is not None and len(value) > max_length:
            return f"The {_label(name)} field must not be greater than {max_length} characters."
        if pattern is not None and not re.fullmatch(pattern, value):
            return f"The {_label(name)} field format is invalid."
        return None

    return check


def _boolean(name: str, value: object) -> str | None:
    if value in (True, False, 0, 1, "0", "1") and not isinstance(value, float):
        return None
    return f"The {_label(name)} field must be true or false."


def _integer(name: str, value: object) -> str | None:
    if isinstance(value, int) and not isinstance(value, bool):
        return None
    if isinstance(value, str) and value.lstrip("-").isdigit():
        return None
    return f"The {_label(name)} field must be an integer."


def _array(name: str, value: object) -> str | None:
    return None if isinstance(value, list) else f"The {_label(name)} field must be an array."


def _rules(checker: _Check, names: str) -> dict[str, _Check]:
    return dict.fromkeys(names.split(), checker)


_IMAGE_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_IMAGE_REFERENCE = (
    rf"(?:[A-Za-z0-9.-]+(?::\d+)?/)?{_IMAGE_COMPONENT}(?:/{_IMAGE_COMPONENT})*"
    r"(?::[A-Za-z0-9_][A-Za-z0-9_.-]{0,127})?(?:@sha256:[a-f0-9]{64})?"
)
"""A Docker image reference: optional registry host, lowercase path, optional tag or digest."""

# Whitelist of POST /applications/dockerimage (AppCtl $allowedFields, spec l.1515-1785).
_STRING_FIELDS = """
    project_uuid server_uuid environment_name environment_uuid destination_uuid ports_mappings
    description domains health_check_type health_check_command health_check_path
    health_check_port health_check_host health_check_method health_check_scheme
    health_check_response_text limits_memory limits_memory_swap limits_memory_reservation
    limits_cpus limits_cpuset custom_labels custom_docker_run_options pre_deployment_command
    pre_deployment_command_container post_deployment_command post_deployment_command_container
    manual_webhook_secret_github manual_webhook_secret_gitlab manual_webhook_secret_bitbucket
    manual_webhook_secret_gitea redirect gpu_driver gpu_count gpu_device_ids gpu_options
    custom_internal_name preview_url_template http_basic_auth_username http_basic_auth_password
"""
_BOOLEAN_FIELDS = """
    instant_deploy autogenerate_domain force_domain_override health_check_enabled
    is_force_https_enabled is_preview_deployments_enabled use_build_server use_build_secrets
    is_git_submodules_enabled is_git_lfs_enabled is_git_shallow_clone_enabled
    disable_build_cache inject_build_args_to_dockerfile include_source_commit_in_build
    is_env_sorting_enabled is_pr_deployments_public_enabled is_gzip_enabled
    is_stripprefix_enabled is_raw_compose_deployment_enabled is_log_drain_enabled
    is_gpu_enabled is_consistent_container_name_enabled is_http_basic_auth_enabled
    connect_to_docker_network is_container_label_escape_enabled
"""
_INTEGER_FIELDS = """
    health_check_return_code health_check_interval health_check_timeout health_check_retries
    health_check_start_period limits_memory_swappiness limits_cpu_shares stop_grace_period
    docker_images_to_keep max_restart_count
"""
_CREATE_RULES: dict[str, _Check] = {
    **_rules(_string(), _STRING_FIELDS),
    **_rules(_boolean, _BOOLEAN_FIELDS),
    **_rules(_integer, _INTEGER_FIELDS),
    **_rules(_array, "tags noindex_domains"),
    "docker_registry_image_name": _string(max_length=255, pattern=_IMAGE_REFERENCE),
    "docker_registry_image_tag": _string(pattern=r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}"),
    "ports_exposes": _string(pattern=r"\d+(,\d+)*"),
    "name": _string(max_length=255),
}
_CREATE_REQUIRED = ("project_uuid", "server_uuid", "docker_registry_image_name")
# Keys that place or create the app: the update whitelist rejects them (API.md §4).
_PLACEMENT_KEYS = frozenset(
    {"project_uuid", "server_uuid", "environment_name", "environment_uuid", "destination_uuid"}
    | {"autogenerate_domain", "tags"}
)
_UPDATE_RULES = {name: rule for name, rule in _CREATE_RULES.items() if name not in _PLACEMENT_KEYS}
# Request-only keys that are not columns of the application.
_ACTION_KEYS = _PLACEMENT_KEYS | {"instant_deploy", "force_domain_override", "domains"}

_ENV_FLAGS = (
    "is_preview",
    "is_literal",
    "is_multiline",
    "is_shown_once",
    "is_runtime",
    "is_buildtime",
)
_ENV_FLAG_DEFAULTS = {flag: flag in ("is_runtime", "is_buildtime") for flag in _ENV_FLAGS}
_ENV_RULES: dict[str, _Check] = {
    "key": _string(max_length=255, pattern=ENV_KEY_PATTERN),
    "value": _string(),
    "comment": _string(max_length=256),
    **dict.fromkeys(_ENV_FLAGS, _boolean),
}


def _validation_errors(
    body: Mapping[str, object], rules: Mapping[str, _Check], required: tuple[str, ...] = ()
) -> dict[str, list[str]]:
    """Coolify reports not-allowed keys on their own, before any other rule runs."""
    not_allowed = {key: ["This field is not allowed."] for key in body if key not in rules}
    if not_allowed:
        return not_allowed
    errors = {
        key: [f"The {_label(key)} field is required."] for key in required if body.get(key) is None
    }
    for key, value in body.items():
        problem = None if value is None else rules[key](key, value)
        if problem is not None:
            errors[key] = [problem]
    return errors


def _validation_failed(errors: Mapping[str, list[str]]) -> _Abort:
    return _Abort(JSONResponse({"message": "Validation failed.", "errors": errors}, 422))


def _message(status: int, text: str) -> _Abort:
    return _Abort(JSONResponse({"message": text}, status))


def _munge(value: Any) -> Any:
    """Laravel's TrimStrings and ConvertEmptyStringsToNull middleware."""
    if isinstance(value, str):
        return value.strip() or None
    if isinstance(value, list):
        return [_munge(item) for item in value]
    if isinstance(value, dict):
        return {key: _munge(item) for key, item in value.items()}
    return value


def _strip_tags(text: str) -> str:
    """Roughly PHP's strip_tags: drops ``<...>`` and an unclosed ``<`` to the end."""
    return re.sub(r"<[^>]*(>|$)", "", text)


def _stored_description(value: object) -> str:
    """strip_tags, null stored as "", and varchar(255) overflowing into a DB error (500)."""
    description = _strip_tags(value) if isinstance(value, str) else ""
    if len(description) > 255:
        raise _message(500, "Server Error")
    return description


def _is_true(value: object) -> bool:
    """A value that passed Laravel's ``boolean`` rule, read as true."""
    return value in (True, 1, "1")


def _query_flag(value: str | None, default: bool) -> bool:
    """Laravel's ``$request->boolean()``."""
    if value is None:
        return default
    return value.strip().lower() in {"1", "true", "on", "yes"}


def _now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _domains(fqdn: object) -> set[str]:
    if not isinstance(fqdn, str):
        return set()
    return {part.strip().rstrip("/") for part in fqdn.split(",") if part.strip()}


def _env_json(env: _Env) -> dict[str, Any]:
    return {**dataclasses.asdict(env), "real_value": env.value, "is_shared": False}


def _deployment_json(deployment: _Deployment, settings: FakeSettings) -> dict[str, Any]:
    url = (
        f"/project/{settings.project_uuid}/environment/{settings.environment_uuid}"
        f"/application/{deployment.app_uuid}/deployment/{deployment.uuid}"
    )
    return {
        "id": deployment.id,
        "application_id": deployment.app_id,
        "deployment_uuid": deployment.uuid,
        "pull_request_id": 0,
        "force_rebuild": deployment.force_rebuild,
        "commit": "HEAD",
        "status": deployment.status.value,
        "is_webhook": False,
        "is_api": True,
        "restart_only": False,
        "rollback": False,
        "only_this_server": False,
        "git_type": None,
        "current_process_id": None,
        "server_id": 0,
        "server_name": "localhost",
        "destination_id": 0,
        "application_name": deployment.app_name,
        "deployment_url": url,
        "docker_registry_image_tag": deployment.image_tag,
        "commit_message": None,
        "logs": "[]",
        "created_at": deployment.created_at,
        "updated_at": deployment.updated_at,
        "finished_at": deployment.finished_at,
    }


def _html_page(title: str, body: str, status: int) -> HTMLResponse:
    page = f"<!DOCTYPE html><html><head><title>{title}</title></head><body>{body}</body></html>"
    return HTMLResponse(page, status)


def _wants_json(headers: Mapping[str, str]) -> bool:
    """Laravel's ``wantsJson()``: the first Accept type must be JSON."""
    first = headers.get("accept", "").split(",")[0]
    return "/json" in first or "+json" in first


class FakeCoolify:
    """The fake as an ASGI application plus a thread-safe Python API for tests.

    All state sits behind one lock: handlers are synchronous and short, so uvicorn's event
    loop and test threads can share it. Deployments advance lazily, on every request and every
    inspection, from timestamps fixed when they were queued.
    """

    def __init__(self, settings: FakeSettings | None = None) -> None:
        self._settings = settings or FakeSettings()
        self._lock = threading.Lock()
        self._random = random.Random(self._settings.seed)
        self._faults = Faults()
        self._apps: dict[str, _App] = {}
        self._deployments: dict[str, _Deployment] = {}
        self._requests: deque[RecordedRequest] = deque(maxlen=_REQUEST_LOG_LIMIT)
        self._next_id = 1
        self._window_start = 0.0
        self._window_hits = 0

    # Python API

    @property
    def settings(self) -> FakeSettings:
        return self._settings

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._faults

    def configure(self, **changes: Any) -> None:
        """Change settings at runtime (delays, rate limit, token, ...)."""
        with self._lock:
            self._settings = dataclasses.replace(self._settings, **changes)

    def set_faults(self, **changes: Any) -> Faults:
        """Update some faults; raises ValueError for unknown names or wrong types."""
        with self._lock:
            self._faults = self._faults.updated(changes)
            return self._faults

    def reset(self) -> None:
        """Forget apps, deployments, requests, faults and the throttle window."""
        with self._lock:
            self._faults = Faults()
            self._apps.clear()
            self._deployments.clear()
            self._requests.clear()
            self._window_hits = 0

    def reset_throttle(self) -> None:
        """Open a fresh rate-limit window, as if it had expired."""
        with self._lock:
            self._window_hits = 0

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._requests)

    def application(self, uuid: str) -> dict[str, Any] | None:
        """The app as ``GET /applications/{uuid}`` would show it, or None once deleted."""
        with self._lock:
            self._advance()
            app = self._apps.get(uuid)
            return None if app is None else self._app_json(app)

    def env_vars(self, app_uuid: str) -> list[dict[str, Any]]:
        with self._lock:
            app = self._apps.get(app_uuid)
            return [] if app is None else [_env_json(env) for env in app.envs]

    def deployments(self, app_uuid: str) -> list[dict[str, Any]]:
        """The app's deployments as the API shows them, oldest first."""
        with self._lock:
            self._advance()
            return [
                _deployment_json(deployment, self._settings)
                for deployment in self._deployments.values()
                if deployment.app_uuid == app_uuid
            ]

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-ready data (served at ``GET /_fake/state``)."""
        with self._lock:
            self._advance()
            return {
                "apps": {
                    uuid: {
                        **self._app_json(app),
                        "envs": [_env_json(env) for env in app.envs],
                        "deletion_queued": app.delete_at is not None,
                    }
                    for uuid, app in self._apps.items()
                },
                "deployments": {
                    uuid: _deployment_json(deployment, self._settings)
                    for uuid, deployment in self._deployments.items()
                },
                "faults": dataclasses.asdict(self._faults),
                "requests": [dataclasses.asdict(request) for request in self._requests],
            }

    # ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw_body = await request.body()
        call = _Call(
            method=request.method,
            path=request.url.path,
            params={},
            query=dict(request.query_params),
            headers=dict(request.headers),
            raw_body=raw_body,
        )
        if call.path.startswith("/_fake/"):
            await self._control(call)(scope, receive, send)
            return
        fault, latency = self._draw_fault(call)
        if latency:
            await asyncio.sleep(latency)
        if fault == "reset":
            await _drop_connection(send)
        elif fault == "hang":
            await self._hang(receive)
        else:
            await self._answer(call, fault)(scope, receive, send)

    def _draw_fault(self, call: _Call) -> tuple[str | None, float]:
        """Record the request; pick at most one fault for it, and its added latency."""
        with self._lock:
            headers = {k: v for k, v in call.headers.items() if k != "authorization"}
            self._requests.append(
                RecordedRequest(
                    call.method, call.path, dict(call.query), _body_for_log(call), headers
                )
            )
            faults = self._faults
            if self._random.random() < faults.reset_rate:
                return "reset", faults.latency
            if self._random.random() < faults.hang_rate:
                return "hang", faults.latency
            if faults.html_next:
                self._faults = dataclasses.replace(faults, html_next=faults.html_next - 1)
                return "html", faults.latency
            if faults.echo_auth_next:
                self._faults = dataclasses.replace(faults, echo_auth_next=faults.echo_auth_next - 1)
                return "echo", faults.latency
            if self._random.random() < faults.error_rate:
                return "error", faults.latency
            return None, faults.latency

    @staticmethod
    async def _hang(receive: Receive) -> None:
        """Never answer: wait for the client to give up (uvicorn cancels this on shutdown)."""
        while (await receive())["type"] != "http.disconnect":
            pass

    def _answer(self, call: _Call, fault: str | None) -> Response:
        if fault == "html":
            lines = "".join(f"{name}: {value}\n" for name, value in sorted(call.headers.items()))
            return _html_page("Whoops!", f"<h1>Whoops!</h1><pre>{lines}</pre>", 200)
        if fault == "echo":
            echoed = f"Invalid request. Authorization: {call.headers.get('authorization', '')}"
            return JSONResponse({"message": echoed, "error": echoed}, 400)
        if fault == "error":
            return self._server_error(call)
        with self._lock:
            self._advance()
            try:
                response = self._route(call)
            except _Abort as abort:
                response = abort.response
            return self._corrupt(response)

    def _corrupt(self, response: Response) -> Response:
        """Apply ``garbage_next`` / ``drop_field_next`` to a successful JSON answer."""
        faults = self._faults
        if not (200 <= response.status_code < 300 and isinstance(response, JSONResponse)):
            return response
        if faults.garbage_next:
            self._faults = dataclasses.replace(faults, garbage_next=faults.garbage_next - 1)
            cut = bytes(response.body)[: max(1, len(response.body) // 2)]
            return Response(cut, response.status_code, media_type="application/json")
        if faults.drop_field_next:
            data = json.loads(bytes(response.body))
            if isinstance(data, dict) and faults.drop_field_next in data:
                self._faults = dataclasses.replace(faults, drop_field_next="")
                del data[faults.drop_field_next]
                return JSONResponse(data, response.status_code)
        return response

    def _server_error(self, call: _Call) -> Response:
        if _wants_json(call.headers):
            return JSONResponse({"message": "Server Error"}, 500)
        return _html_page("Server Error", "<h1>500 | Server Error</h1>", 500)

    # Routing: Laravel order is throttle, then auth, then the controller.

    def _route(self, call: _Call) -> Response:
        if call.method == "GET" and call.path in ("/api/health", f"{_API}/health"):
            return Response("OK", media_type="text/html")
        if not call.path.startswith(f"{_API}/"):
            return JSONResponse(_NOT_FOUND_BODY, 404)
        throttle_headers = self._throttle(call)
        response = self._dispatch(call)
        response.headers.update(throttle_headers)
        return response

    def _throttle(self, call: _Call) -> dict[str, str]:
        """Laravel ThrottleRequests: a fixed window opened by its first request."""
        limit = self._settings.rate_limit
        if not limit:
            return {}
        now = time.monotonic()
        if self._window_hits == 0 or now >= self._window_start + self._settings.rate_window:
            self._window_start, self._window_hits = now, 0
        self._window_hits += 1
        remaining = max(0, limit - self._window_hits)
        headers = {"X-RateLimit-Limit": str(limit), "X-RateLimit-Remaining": str(remaining)}
        if self._window_hits <= limit:
            return headers
        retry_after = max(1, math.ceil(self._window_start + self._settings.rate_window - now))
        headers["Retry-After"] = str(retry_after)
        if _wants_json(call.headers):
            response: Response = JSONResponse({"message": "Too Many Attempts."}, 429, headers)
        else:
            response = _html_page("Too Many Requests", "<h1>429 | Too Many Requests</h1>", 429)
            response.headers.update(headers)
        raise _Abort(response)

    def _dispatch(self, call: _Call) -> Response:
        relative = call.path[len(_API) :]
        for pattern, routes in _ROUTES:
            match = pattern.fullmatch(relative)
            if match is None or call.method not in routes:
                continue
            handler, ability = routes[call.method]
            self._authorize(call, ability)
            return handler(self, dataclasses.replace(call, params=match.groupdict()))
        return JSONResponse(_NOT_FOUND_BODY, 404)

    def _authorize(self, call: _Call, ability: str) -> None:
        """Sanctum auth, then the ``api.ability`` middleware (the read-only token reads only)."""
        settings = self._settings
        presented = call.headers.get("authorization")
        if presented == f"Bearer {settings.token}":
            return
        if presented != f"Bearer {settings.read_only_token}":
            raise _message(401, "Unauthenticated.")
        if ability != "read":
            raise _message(403, f"Missing required permissions: {ability}")

    # Control endpoints

    def _control(self, call: _Call) -> Response:
        if call.method == "GET" and call.path == "/_fake/state":
            return JSONResponse(self.snapshot())
        if call.method == "POST" and call.path == "/_fake/faults":
            try:
                changes = json.loads(call.raw_body or b"{}")
                if not isinstance(changes, dict):
                    raise ValueError("faults must be a JSON object")
                return JSONResponse(dataclasses.asdict(self.set_faults(**changes)))
            except ValueError as exc:
                return JSONResponse({"message": str(exc)}, 422)
        if call.method == "POST" and call.path == "/_fake/reset":
            self.reset()
            return JSONResponse({"message": "Reset."})
        return JSONResponse(_NOT_FOUND_BODY, 404)

    # State helpers (the lock is held)

    def _new_id(self) -> str:
        return "".join(self._random.choice(_ID_ALPHABET) for _ in range(24))

    def _next_row_id(self) -> int:
        self._next_id += 1
        return self._next_id

    def _advance(self) -> None:
        """Move deployments and deletions forward to now."""
        now = time.monotonic()
        for deployment in self._deployments.values():
            if deployment.status.is_terminal:
                continue
            if now >= deployment.ends_at:
                self._finish(deployment)
            elif now >= deployment.starts_at:
                deployment.status = DeploymentStatus.IN_PROGRESS
        gone = {
            uuid
            for uuid, app in self._apps.items()
            if app.delete_at is not None and now >= app.delete_at
        }
        for uuid in gone:
            del self._apps[uuid]
        self._deployments = {
            uuid: d for uuid, d in self._deployments.items() if d.app_uuid not in gone
        }

    def _finish(self, deployment: _Deployment) -> None:
        deployment.status = deployment.outcome
        deployment.finished_at = deployment.updated_at = _now_iso()
        app = self._apps.get(deployment.app_uuid)
        if app is not None and deployment.outcome is DeploymentStatus.FINISHED:
            status = "exited:unhealthy" if deployment.exits_app else "running:unknown"
            app.attributes["status"] = status
            app.attributes["updated_at"] = deployment.finished_at

    def _app_json(self, app: _App) -> dict[str, Any]:
        return {"uuid": app.uuid, **app.attributes}

    def _app_or_404(self, uuid: str, message: str) -> _App:
        """``message`` varies by route: "Application not found." or without the period."""
        app = self._apps.get(uuid)
        if app is None:
            raise _message(404, message)
        return app

    def _json_body(self, call: _Call) -> dict[str, Any]:
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

    def _check_domains(self, fqdn: object, body: Mapping[str, Any], own_uuid: str) -> None:
        if _is_true(body.get("force_domain_override")):
            return
        conflicts = [
            {
                "domain": domain,
                "resource_name": other.attributes["name"],
                "resource_uuid": other.uuid,
                "resource_type": "application",
                "message": f"Domain {domain} is already in use by application "
                f"'{other.attributes['name']}'",
            }
            for other in self._apps.values()
            if other.uuid != own_uuid
            for domain in _domains(fqdn) & _domains(other.attributes.get("fqdn"))
        ]
        if conflicts:
            message = "Domain conflicts detected. Use force_domain_override=true to proceed."
            warning = (
                "Using the same domain for multiple resources can cause routing conflicts "
                "and unpredictable behavior."
            )
            body_out = {"message": message, "warning": warning, "conflicts": conflicts}
            raise _Abort(JSONResponse(body_out, 409))

    def _queue_deployment(self, app: _App, *, force_rebuild: bool, instant: bool) -> _Deployment:
        """Queue a deployment; faults that shape deployments are drawn now.

        Deployments of one app run one after another: each is queued for half of
        ``deploy_delay`` (or until the previous one ends), then in progress for the other half.
        An instant one skips the queue and is in progress for the whole delay.
        """
        now, delay = time.monotonic(), self._settings.deploy_delay
        if instant:  # no_questions_asked: skips the queue, runs at once
            starts_at, ends_at = now, now + delay
        else:
            starts_at = max(now + delay / 2, app.busy_until)
            ends_at = starts_at + delay / 2
        app.busy_until = max(app.busy_until, ends_at)
        faults = self._faults
        failed = faults.fail_next_deployments > 0
        if failed:
            self._faults = dataclasses.replace(
                faults, fail_next_deployments=faults.fail_next_deployments - 1
            )
        stamp = _now_iso()
        deployment = _Deployment(
            id=self._next_row_id(),
            uuid=self._new_id(),
            app_uuid=app.uuid,
            app_id=app.id,
            app_name=app.attributes["name"],
            image_tag=app.attributes.get("docker_registry_image_tag"),
            force_rebuild=force_rebuild,
            status=DeploymentStatus.IN_PROGRESS if instant else DeploymentStatus.QUEUED,
            starts_at=starts_at,
            ends_at=ends_at,
            outcome=DeploymentStatus.FAILED if failed else DeploymentStatus.FINISHED,
            exits_app=faults.exit_after_deploy,
            created_at=stamp,
            updated_at=stamp,
        )
        self._deployments[deployment.uuid] = deployment
        return deployment

    def _has_active_deployment(self, app: _App) -> bool:
        return any(
            d.app_uuid == app.uuid and not d.status.is_terminal for d in self._deployments.values()
        )

    # Handlers (the lock is held)

    def _version(self, call: _Call) -> Response:
        return Response(FAKE_VERSION, media_type="text/html")

    def _create_dockerimage(self, call: _Call) -> Response:
        body = self._json_body(call)
        errors = _validation_errors(body, _CREATE_RULES, _CREATE_REQUIRED)
        if errors:
            raise _validation_failed(errors)
        settings = self._settings
        env_name, env_uuid = body.get("environment_name"), body.get("environment_uuid")
        if env_name is None and env_uuid is None:
            raise _message(
                422, "You need to provide at least one of environment_name or environment_uuid."
            )
        if body["project_uuid"] != settings.project_uuid:
            raise _message(404, "Project not found.")
        if env_name != settings.environment_name and env_uuid != settings.environment_uuid:
            raise _message(404, "Environment not found.")
        if body["server_uuid"] != settings.server_uuid:
            raise _message(404, "Server not found.")
        uuid = self._new_id()
        if body.get("domains") is not None:
            fqdn = body["domains"]
        elif _is_true(body.get("autogenerate_domain", True)):
            fqdn = f"http://{uuid}.127.0.0.1.sslip.io"
        else:
            fqdn = None
        self._check_domains(fqdn, body, uuid)
        stamp = _now_iso()
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
        attributes.update({k: v for k, v in body.items() if k not in _ACTION_KEYS})
        attributes["name"] = _strip_tags(attributes["name"] or f"docker-image-{uuid}")
        if "description" in body:
            attributes["description"] = _stored_description(body["description"])
        app = _App(id=self._next_row_id(), uuid=uuid, attributes=attributes)
        self._apps[uuid] = app
        if _is_true(body.get("instant_deploy")):
            self._queue_deployment(app, force_rebuild=False, instant=True)
        return JSONResponse({"uuid": uuid, "domains": fqdn}, 201)

    def _get_application(self, call: _Call) -> Response:
        app = self._app_or_404(call.params["uuid"], "Application not found.")
        return JSONResponse(self._app_json(app))

    def _update_application(self, call: _Call) -> Response:
        body = self._json_body(call)
        errors = _validation_errors(body, _UPDATE_RULES)
        if errors:
            raise _validation_failed(errors)
        app = self._app_or_404(call.params["uuid"], "Application not found")
        if "domains" in body:
            self._check_domains(body["domains"], body, app.uuid)
        changes = {k: v for k, v in body.items() if k not in _ACTION_KEYS}
        if "name" in changes:
            changes["name"] = _strip_tags(changes["name"] or "")
        if "description" in changes:
            changes["description"] = _stored_description(changes["description"])
        if "domains" in body:
            changes["fqdn"] = body["domains"]
        app.attributes.update(changes, updated_at=_now_iso())
        if _is_true(body.get("instant_deploy")):
            if self._has_active_deployment(app):
                return JSONResponse({"message": "Deployment already queued for this commit."})
            self._queue_deployment(app, force_rebuild=False, instant=False)
        return JSONResponse({"uuid": app.uuid})

    def _delete_application(self, call: _Call) -> Response:
        app = self._app_or_404(call.params["uuid"], "Application not found")
        if app.delete_at is None:
            app.delete_at = time.monotonic() + self._settings.delete_delay
        return JSONResponse({"message": "Application deletion request queued."})

    def _update_envs_bulk(self, call: _Call) -> Response:
        body = self._json_body(call)
        app = self._app_or_404(call.params["uuid"], "Application not found")
        items = body.get("data")
        if not isinstance(items, list) or not items:
            raise _message(400, "Bulk data is required.")
        saved = [self._upsert_env(app, item) for item in items]
        return JSONResponse([_env_json(env) for env in saved], 201)

    def _upsert_env(self, app: _App, item: object) -> _Env:
        """One bulk item; earlier items stay saved when a later one fails (not atomic)."""
        if not isinstance(item, dict):
            raise _validation_failed({"data": ["Each item must be an object."]})
        known = {key: value for key, value in item.items() if key in _ENV_RULES}
        errors = _validation_errors(known, _ENV_RULES, ("key",))
        if errors:
            raise _validation_failed(errors)
        flags = {
            flag: _ENV_FLAG_DEFAULTS[flag] if known.get(flag) is None else _is_true(known[flag])
            for flag in _ENV_FLAGS
        }
        key, value, stamp = known["key"], known.get("value"), _now_iso()
        for env in app.envs:
            if env.key == key and env.is_preview == flags["is_preview"]:
                for flag, flag_value in flags.items():
                    setattr(env, flag, flag_value)
                env.value, env.comment, env.updated_at = value, known.get("comment"), stamp
                return env
        env = _Env(
            uuid=self._new_id(),
            key=key,
            value=value,
            comment=known.get("comment"),
            created_at=stamp,
            updated_at=stamp,
            **flags,
        )
        app.envs.append(env)
        return env

    def _start(self, call: _Call) -> Response:
        force = _query_flag(call.query.get("force"), default=False)
        instant = _query_flag(call.query.get("instant_deploy"), default=False)
        return self._deploy(call, "Deployment request queued.", force=force, instant=instant)

    def _restart(self, call: _Call) -> Response:
        return self._deploy(call, "Restart request queued.", force=False, instant=False)

    def _deploy(self, call: _Call, queued_message: str, *, force: bool, instant: bool) -> Response:
        """``queue_application_deployment``: skip check first, then the queue limit."""
        app = self._app_or_404(call.params["uuid"], "Application not found.")
        if not (force or instant) and self._has_active_deployment(app):
            return JSONResponse({"message": "Deployment already queued for this commit."})
        faults = self._faults
        if faults.queue_full_next:
            self._faults = dataclasses.replace(faults, queue_full_next=faults.queue_full_next - 1)
            return JSONResponse({"message": queued_message, "deployment_uuid": self._new_id()})
        deployment = self._queue_deployment(app, force_rebuild=force, instant=instant)
        return JSONResponse({"message": queued_message, "deployment_uuid": deployment.uuid})

    def _stop(self, call: _Call) -> Response:
        app = self._app_or_404(call.params["uuid"], "Application not found.")
        app.attributes.update(status="exited:unhealthy", updated_at=_now_iso())
        return JSONResponse({"message": "Application stopping request queued."})

    def _method_changed(self, call: _Call) -> Response:
        body = {"message": "This endpoint has changed to a POST request."}
        return JSONResponse(body, 405, headers={"Allow": "POST"})

    def _get_deployment(self, call: _Call) -> Response:
        deployment = self._deployments.get(call.params["uuid"])
        if deployment is None:
            raise _message(404, "Deployment not found.")
        return JSONResponse(_deployment_json(deployment, self._settings))

    def _cancel_deployment(self, call: _Call) -> Response:
        deployment = self._deployments.get(call.params["uuid"])
        if deployment is None:
            raise _message(404, "Deployment not found.")
        if deployment.status.is_terminal:
            raise _message(
                400, f"Deployment cannot be cancelled. Current status: {deployment.status.value}"
            )
        deployment.status = DeploymentStatus.CANCELLED_BY_USER
        deployment.finished_at = deployment.updated_at = _now_iso()
        app = self._apps[deployment.app_uuid]
        app.busy_until = max(
            (
                d.ends_at
                for d in self._deployments.values()
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

    def _list_app_deployments(self, call: _Call) -> Response:
        app = self._app_or_404(call.params["uuid"], "Application not found.")
        errors: dict[str, list[str]] = {}
        paging: dict[str, int] = {}
        for name, default, minimum in (("skip", "0", 0), ("take", "10", 1)):
            text = call.query.get(name, default)
            problem = _integer(name, text)
            if problem is None and int(text) < minimum:
                problem = f"The {name} field must be at least {minimum}."
            if problem is None:
                paging[name] = int(text)
            else:
                errors[name] = [problem]
        if errors:
            raise _validation_failed(errors)
        own = [d for d in self._deployments.values() if d.app_uuid == app.uuid]
        newest_first = sorted(own, key=lambda d: d.id, reverse=True)
        window = newest_first[paging["skip"] : paging["skip"] + paging["take"]]
        page = [_deployment_json(d, self._settings) for d in window]
        return JSONResponse({"count": len(own), "deployments": page})


def _invalid_request(error: str) -> _Abort:
    return _Abort(JSONResponse({"message": "Invalid request.", "error": error}, 400))


def _body_for_log(call: _Call) -> Any:
    """The JSON body when there is one, else the raw text (for tests to inspect)."""
    if not call.raw_body:
        return None
    try:
        return json.loads(call.raw_body)
    except ValueError:
        return call.raw_body.decode("utf-8", "replace")


async def _drop_connection(send: Send) -> None:
    """Abort the TCP connection with a RST, as a crashed proxy would.

    ASGI has no way to do this, so it reaches uvicorn's transport through the ``send`` bound
    method of its request cycle (h11 and httptools both keep it as ``.transport``).
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if not isinstance(transport, asyncio.Transport):
        raise RuntimeError("reset_rate needs uvicorn: no transport behind the ASGI send")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await asyncio.sleep(0)  # let uvicorn see the disconnect, so it does not log a missing answer


_APP = r"/applications/(?P<uuid>[^/]+)"
_ROUTE_TABLE: tuple[tuple[str, dict[str, _Route]], ...] = (
    ("/version", {"GET": (FakeCoolify._version, "read")}),
    ("/applications/dockerimage", {"POST": (FakeCoolify._create_dockerimage, "write")}),
    (
        _APP,
        {
            "GET": (FakeCoolify._get_application, "read"),
            "PATCH": (FakeCoolify._update_application, "write"),
            "DELETE": (FakeCoolify._delete_application, "write"),
        },
    ),
    (_APP + "/envs/bulk", {"PATCH": (FakeCoolify._update_envs_bulk, "write")}),
    (
        _APP + "/start",
        {"POST": (FakeCoolify._start, "deploy"), "GET": (FakeCoolify._method_changed, "read")},
    ),
    (
        _APP + "/restart",
        {"POST": (FakeCoolify._restart, "deploy"), "GET": (FakeCoolify._method_changed, "read")},
    ),
    (
        _APP + "/stop",
        {"POST": (FakeCoolify._stop, "deploy"), "GET": (FakeCoolify._method_changed, "read")},
    ),
    (
        r"/deployments/applications/(?P<uuid>[^/]+)",
        {"GET": (FakeCoolify._list_app_deployments, "read")},
    ),
    (r"/deployments/(?P<uuid>[^/]+)", {"GET": (FakeCoolify._get_deployment, "read")}),
    (
        r"/deployments/(?P<uuid>[^/]+)/cancel",
        {"POST": (FakeCoolify._cancel_deployment, "deploy")},
    ),
)
_ROUTES = [(re.compile(path), handlers) for path, handlers in _ROUTE_TABLE]


class FakeCoolifyServer:
    """Runs a :class:`FakeCoolify` with uvicorn in a background thread on a free port."""

    def __init__(
        self, settings: FakeSettings | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.fake = FakeCoolify(settings)
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port/api/v1``, the client's base URL (valid once started)."""
        return f"http://{self._host}:{self._port}{_API}"

    @property
    def token(self) -> str:
        return self.fake.settings.token

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("fake Coolify server already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this; without it every keep-alive answer waits ~40 ms
        # for the client's delayed ACK (uvicorn only sets it on sockets it creates).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self._host, self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.fake,
            lifespan="off",
            http="h11",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name="fake-coolify",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake Coolify server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeCoolifyServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    token: str = DEFAULT_TOKEN,
    deploy_delay: float = 2.0,
    delete_delay: float = 1.0,
    rate_limit: int = 200,
    seed: int | None = None,
) -> None:
    """Serve the fake in the foreground (``slotledger fake-coolify``) until interrupted."""
    settings = FakeSettings(
        token=token,
        deploy_delay=deploy_delay,
        delete_delay=delete_delay,
        rate_limit=rate_limit,
        seed=seed,
    )
    fake = FakeCoolify(settings)
    uvicorn.run(
        fake,
        host=host,
        port=port,
        lifespan="off",
        http="h11",
        log_level="info",
        timeout_graceful_shutdown=1,
    )
