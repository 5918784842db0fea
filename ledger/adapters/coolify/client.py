"""Synchronous client for the Coolify v4 REST API, as the code behaves (see API.md).

Retries follow one rule: retry only when a second attempt cannot do the work twice. A 429 is
always retried (the throttle rejected the request before any work); 5xx and transport errors
are retried only for idempotent calls, because a retried POST start/restart/create may queue a
second deployment or create a second application.

Every attempt, retries included, first draws from the process's
:class:`~ledger.adapters.coolify.budget.RequestBudget` when the client has one, waiting for
room up to ``budget_wait_s``; no room in time raises :class:`CoolifyRateLimited` without
sending anything, the same error as a 429 that outlasted the retries.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping, Sequence
from types import TracebackType
from typing import Any, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

from ledger.adapters.coolify.budget import RequestBudget
from ledger.adapters.coolify.models import (
    CoolifyApplication,
    CoolifyDeployment,
    CreatedApp,
    DeploymentPage,
    StartResult,
    StoredEnvVar,
)
from ledger.application.ports import CreateDockerImageApp, EnvVar, clean_description
from ledger.domain import fit_text
from ledger.errors import (
    ConfigurationError,
    CoolifyBadResponse,
    CoolifyConflict,
    CoolifyError,
    CoolifyForbidden,
    CoolifyNotFound,
    CoolifyRateLimited,
    CoolifyServerError,
    CoolifyUnauthorized,
    CoolifyUnavailable,
    CoolifyValidationError,
)

logger = logging.getLogger("ledger.coolify")

ResponseHook = Callable[[str, str, int], None]
"""Called as ``(method, path_template, status)`` for every HTTP response, retries included."""

_ModelT = TypeVar("_ModelT", bound=BaseModel)

_EXCERPT_LENGTH = 200
MAX_MESSAGE = 500
"""Coolify's text is cut to this (and cleaned of control characters) where it enters, so a
reason the ledger words with it stays within the domain's limits."""
_REDACTED = "[REDACTED]"
_ERROR_BY_STATUS: dict[int, type[CoolifyError]] = {
    401: CoolifyUnauthorized,
    403: CoolifyForbidden,
    404: CoolifyNotFound,
    409: CoolifyConflict,
}

_IDEMPOTENT_METHODS = frozenset({"GET", "DELETE"})
_APPLICATION = "/applications/{uuid}"
_DEPLOYMENT = "/deployments/{uuid}"
_PROJECT = "/projects/{uuid}"
_WRITE_PROBE = {"slotledger_write_check": True}
"""A body the project PATCH refuses (422 "This field is not allowed.") before it reads or
changes anything, once ``api.ability:write`` has let it through."""
_NO_DEPLOYMENT = "slotledger-deploy-check"
"""Not a cuid2 (Coolify's uuids are lowercase letters and digits): no deployment has it."""


class _Named(BaseModel):
    """A project, environment or server as the checks read it."""

    model_config = ConfigDict(extra="ignore", frozen=True)

    uuid: str | None = None
    name: str | None = None


class _Environment(_Named):
    applications: list[_Named] = []


class CoolifyClient:
    """One Coolify instance, reached at ``base_url`` (ending in ``/api/v1``) with one token.

    Thread-safe: it wraps a single pooled ``httpx.Client``. ``transport`` and ``event_hooks``
    go straight to httpx (tests use them); ``sleep`` is what waits between retries. The
    client owns ``budget`` and closes it with itself.
    """

    def __init__(
        self,
        base_url: str,
        token: str,
        *,
        timeout: float = 10.0,
        max_retries: int = 4,
        backoff_base: float = 0.25,
        backoff_max: float = 8.0,
        transport: httpx.BaseTransport | None = None,
        on_response: ResponseHook | None = None,
        sleep: Callable[[float], None] = time.sleep,
        event_hooks: Mapping[str, Sequence[Callable[..., Any]]] | None = None,
        budget: RequestBudget | None = None,
        budget_wait_s: float = 60.0,
    ) -> None:
        if not token:
            raise ConfigurationError("Coolify API token is empty")
        if timeout <= 0 or max_retries < 0 or backoff_base < 0 or backoff_max < 0:
            raise ConfigurationError(
                "Coolify client needs timeout > 0 and non-negative retries and backoff"
            )
        self._base_url = base_url.rstrip("/")
        # The token is also matched in its JSON-escaped form, the way a body would echo it.
        self._secrets = (token, json.dumps(token)[1:-1])
        self._max_retries = max_retries
        self._backoff_base = backoff_base
        self._backoff_max = backoff_max
        self._on_response = on_response
        self._sleep = sleep
        self.budget = budget
        self._budget_wait_s = budget_wait_s
        self._answered_at: float | None = None
        self._random = random.Random()
        self._http = httpx.Client(
            base_url=self._base_url,
            headers={"Authorization": f"Bearer {token}", "Accept": "application/json"},
            timeout=timeout,
            transport=transport,
            event_hooks={name: list(hooks) for name, hooks in (event_hooks or {}).items()},
        )

    def __repr__(self) -> str:
        return f"CoolifyClient(base_url={self._base_url!r})"

    def close(self) -> None:
        self._http.close()
        if self.budget is not None:
            self.budget.close()

    def answered_within(self, seconds: float) -> bool:
        """Whether Coolify answered any request (below 500) in the last ``seconds``."""
        answered = self._answered_at
        return answered is not None and time.monotonic() - answered <= seconds

    def __enter__(self) -> CoolifyClient:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.close()

    # Applications

    def create_dockerimage_application(self, request: CreateDockerImageApp) -> CreatedApp:
        """Create an app from an image. No deployment uuid comes back, even with instant_deploy."""
        response = self._send("POST", "/applications/dockerimage", body=request.to_json())
        return self._parse(CreatedApp, response)

    def get_application(self, uuid: str) -> CoolifyApplication:
        return self._parse(CoolifyApplication, self._send("GET", _APPLICATION, uuid=uuid))

    def update_description(self, uuid: str, description: str) -> None:
        """Set the description, cleaned so that Coolify stores exactly what was sent."""
        self._update(uuid, {"description": clean_description(description)})

    def update_application(self, uuid: str, *, name: str, description: str) -> None:
        """Rename and describe the app (both are whitelisted keys; Coolify strips tags)."""
        self._update(uuid, {"name": name, "description": clean_description(description)})

    def _update(self, uuid: str, body: dict[str, str]) -> None:
        # A full-value PATCH: sending it twice leaves the same state, so retrying is safe.
        self._send("PATCH", _APPLICATION, uuid=uuid, body=body, idempotent=True)

    def update_envs_bulk(self, uuid: str, envs: Sequence[EnvVar]) -> list[StoredEnvVar]:
        """Upsert env vars by key; they reach the container on the next start or restart."""
        if not envs:
            raise ValueError("update_envs_bulk needs at least one env var")
        body = {"data": [env.model_dump(mode="json") for env in envs]}
        response = self._send(
            "PATCH", "/applications/{uuid}/envs/bulk", uuid=uuid, body=body, idempotent=True
        )
        data = self._json(response)
        if not isinstance(data, list):
            raise self._bad_response(response, "expected a JSON array")
        return [self._validate(StoredEnvVar, item, response) for item in data]

    def list_applications(self) -> list[CoolifyApplication]:
        """Every application the token's team can see, for reconciliation."""
        response = self._send("GET", "/applications")
        data = self._json(response)
        if not isinstance(data, list):
            raise self._bad_response(response, "expected a JSON array")
        return [self._validate(CoolifyApplication, item, response) for item in data]

    def list_envs(self, uuid: str) -> list[StoredEnvVar]:
        """The application's env vars, production first; values only for a sensitive token."""
        response = self._send("GET", "/applications/{uuid}/envs", uuid=uuid)
        data = self._json(response)
        if not isinstance(data, list):
            raise self._bad_response(response, "expected a JSON array")
        return [self._validate(StoredEnvVar, item, response) for item in data]

    def delete_env(self, app_uuid: str, env_uuid: str) -> None:
        """Hard-delete one env var by its uuid (Coolify deletes by uuid, not by key)."""
        template = "/applications/{uuid}/envs/{env_uuid}"
        self._send("DELETE", template, uuid=app_uuid, env_uuid=env_uuid)

    def delete_application(
        self,
        uuid: str,
        *,
        delete_configurations: bool = True,
        delete_volumes: bool = True,
        docker_cleanup: bool = True,
        delete_connected_networks: bool = True,
    ) -> None:
        """Queue the deletion; the app keeps answering 200 until Coolify's job has run."""
        params = {
            "delete_configurations": delete_configurations,
            "delete_volumes": delete_volumes,
            "docker_cleanup": docker_cleanup,
            "delete_connected_networks": delete_connected_networks,
        }
        self._send("DELETE", _APPLICATION, uuid=uuid, params=params)

    # Lifecycle (POST only since v4.2.0; never retried on 5xx or transport errors)

    def start(self, uuid: str, *, force: bool = False, instant_deploy: bool = False) -> StartResult:
        """Queue a deployment; ``result.skipped`` means one for this commit is already queued."""
        params = {"force": force, "instant_deploy": instant_deploy}
        response = self._send("POST", "/applications/{uuid}/start", uuid=uuid, params=params)
        return self._parse(StartResult, response)

    def restart(self, uuid: str) -> StartResult:
        """For image apps this is a full redeploy, like start."""
        response = self._send("POST", "/applications/{uuid}/restart", uuid=uuid)
        return self._parse(StartResult, response)

    def stop(self, uuid: str, *, docker_cleanup: bool = True) -> None:
        """Queue a stop; it does not cancel a running deployment."""
        params = {"docker_cleanup": docker_cleanup}
        self._send("POST", "/applications/{uuid}/stop", uuid=uuid, params=params)

    # Deployments

    def get_deployment(self, deployment_uuid: str) -> CoolifyDeployment:
        """A 404 right after start/restart means the server queue was full (API.md §5)."""
        return self._parse(CoolifyDeployment, self._send("GET", _DEPLOYMENT, uuid=deployment_uuid))

    def list_application_deployments(
        self, app_uuid: str, skip: int = 0, take: int = 10
    ) -> DeploymentPage:
        """Newest first; the body is ``{"count", "deployments"}`` (the spec is wrong)."""
        params = {"skip": skip, "take": take}
        template = "/deployments/applications/{uuid}"
        response = self._send("GET", template, uuid=app_uuid, params=params)
        return self._parse(DeploymentPage, response)

    def cancel_deployment(self, deployment_uuid: str) -> None:
        """Cancel a queued or running deployment; a finished one gives a 400 CoolifyError."""
        self._send("POST", "/deployments/{uuid}/cancel", uuid=deployment_uuid)

    # Projects, environments, servers and the token's abilities (the start-up checks)

    def list_project_uuids(self) -> set[str]:
        """The uuids of the token's team's projects. ``GET /projects/{uuid}`` cannot tell a
        missing project: the code loads a relation on the null it found and answers 500."""
        response = self._send("GET", "/projects")
        data = self._json(response)
        if not isinstance(data, list):
            raise self._bad_response(response, "expected a JSON array")
        found = (self._validate(_Named, item, response).uuid for item in data)
        return {uuid for uuid in found if uuid}

    def get_environment(self, project_uuid: str, name_or_uuid: str) -> str | None:
        """The environment's name; looked up by name first, then by uuid, like create."""
        template = "/projects/{uuid}/{env_uuid}"
        response = self._send("GET", template, uuid=project_uuid, env_uuid=name_or_uuid)
        return self._parse(_Named, response).name

    def environment_applications(self, project_uuid: str, name_or_uuid: str) -> set[str]:
        """The uuids of the environment's applications (the code loads them with it)."""
        template = "/projects/{uuid}/{env_uuid}"
        response = self._send("GET", template, uuid=project_uuid, env_uuid=name_or_uuid)
        found = self._parse(_Environment, response).applications
        return {app.uuid for app in found if app.uuid}

    def get_server(self, uuid: str) -> str | None:
        """The server's name."""
        return self._parse(_Named, self._send("GET", "/servers/{uuid}", uuid=uuid)).name

    def check_write_ability(self, project_uuid: str) -> None:
        """Pass ``api.ability:write`` without changing anything: Coolify answers the probe
        422 (a 403 means the token cannot write, and is raised)."""
        with contextlib.suppress(CoolifyValidationError):
            self._send("PATCH", _PROJECT, uuid=project_uuid, body=_WRITE_PROBE, idempotent=True)

    def check_deploy_ability(self) -> None:
        """Pass ``api.ability:deploy`` without deploying: cancelling a deployment that
        cannot exist answers 404 (a 403 means the token cannot deploy, and is raised)."""
        with contextlib.suppress(CoolifyNotFound):
            self._send("POST", "/deployments/{uuid}/cancel", uuid=_NO_DEPLOYMENT)

    # Instance

    def health(self) -> str:
        """The health body, ``OK`` when Coolify is up (needs no token)."""
        return self._send("GET", "/health").text.strip()

    def version(self) -> str:
        """Coolify's version, e.g. ``4.3.11`` (no ``v`` prefix, unlike the spec example)."""
        return self._send("GET", "/version").text.strip()

    # Transport, retries, errors

    def _send(
        self,
        method: str,
        template: str,
        *,
        uuid: str | None = None,
        env_uuid: str | None = None,
        params: Mapping[str, str | int | bool] | None = None,
        body: object = None,
        idempotent: bool | None = None,
    ) -> httpx.Response:
        """Send with retries; ``idempotent`` defaults to True for GET and DELETE only."""
        path = template
        if uuid is not None:
            segments = {"uuid": _path_segment(uuid)}
            if env_uuid is not None:
                segments["env_uuid"] = _path_segment(env_uuid)
            path = template.format(**segments)
        if idempotent is None:
            idempotent = method in _IDEMPOTENT_METHODS
        request = self._http.build_request(method, path, params=params, json=body)
        retries_done = 0
        while True:
            self._draw(request)
            try:
                response = self._http.send(request)
            except httpx.TransportError as exc:
                if not idempotent or retries_done >= self._max_retries:
                    raise CoolifyUnavailable(
                        self._fit(f"{type(exc).__name__}: {exc}"),
                        status=None,
                        method=method,
                        path=request.url.path,
                    ) from exc
                retries_done += 1
                backoff = self._backoff(retries_done)
                self._wait(request, type(exc).__name__, retries_done, backoff)
                continue
            if response.status_code < 500:
                self._answered_at = time.monotonic()
            if self._on_response is not None:
                self._on_response(method, template, response.status_code)
            if response.is_success:
                return response
            delay = self._retry_delay(response, idempotent, retries_done + 1)
            if delay is None or retries_done >= self._max_retries:
                raise self._error(response)
            retries_done += 1
            self._wait(request, str(response.status_code), retries_done, delay)

    def _draw(self, request: httpx.Request) -> None:
        """One request from the budget, or CoolifyRateLimited when no room came in time."""
        if self.budget is None or self.budget.acquire(self._budget_wait_s):
            return
        raise CoolifyRateLimited(
            f"no room in the request budget of {self.budget.per_minute}/min "
            f"within {self._budget_wait_s:.0f}s; not sent",
            status=None,
            method=request.method,
            path=request.url.path,
            retry_after=None,
        )

    def _retry_delay(self, response: httpx.Response, idempotent: bool, retry: int) -> float | None:
        """Seconds to wait before ``retry``, or None when the response must not be retried."""
        if response.status_code == 429:
            hinted = _retry_after(response)
            if hinted is None:
                return self._backoff(retry)
            return min(hinted, self._backoff_max * 4)
        if response.status_code >= 500 and idempotent:
            return self._backoff(retry)
        return None

    def _backoff(self, retry: int) -> float:
        """Exponential backoff with full jitter, so many workers do not retry in step."""
        ceiling = min(self._backoff_max, self._backoff_base * 2 ** (retry - 1))
        return self._random.uniform(0, ceiling)

    def _wait(self, request: httpx.Request, outcome: str, retry: int, delay: float) -> None:
        logger.warning(
            "Coolify %s %s answered %s; retry %d of %d in %.2fs",
            request.method,
            request.url.path,
            outcome,
            retry,
            self._max_retries,
            delay,
        )
        self._sleep(delay)

    def _redact(self, text: str) -> str:
        for secret in self._secrets:
            text = text.replace(secret, _REDACTED)
        return text

    def _fit(self, text: str) -> str:
        """Text from Coolify as an error carries it: redacted, cleaned and cut."""
        return fit_text(self._redact(text), MAX_MESSAGE)

    def _excerpt(self, response: httpx.Response) -> str:
        text = " ".join(self._redact(response.text).split())
        return text[:_EXCERPT_LENGTH] or "<empty body>"

    def _error(self, response: httpx.Response) -> CoolifyError:
        request = response.request
        status, method, path = response.status_code, request.method, request.url.path
        body = _json_object(self._redact(response.text))
        message = body.get("message") if body is not None else None
        message = self._fit(message if isinstance(message, str) else self._excerpt(response))
        if status == 422:
            errors = body.get("errors") if body is not None else None
            return CoolifyValidationError(
                message,
                status=status,
                method=method,
                path=path,
                errors=errors if isinstance(errors, dict) else {},
            )
        if status == 429:
            return CoolifyRateLimited(
                message, status=status, method=method, path=path, retry_after=_retry_after(response)
            )
        error_class = _ERROR_BY_STATUS.get(status)
        if error_class is None:
            error_class = CoolifyServerError if status >= 500 else CoolifyError
        return error_class(message, status=status, method=method, path=path)

    def _bad_response(self, response: httpx.Response, problem: str) -> CoolifyBadResponse:
        request = response.request
        return CoolifyBadResponse(
            self._fit(f"{problem}: {self._excerpt(response)}"),
            status=response.status_code,
            method=request.method,
            path=request.url.path,
        )

    def _json(self, response: httpx.Response) -> Any:
        content_type = response.headers.get("content-type", "")
        if "json" not in content_type:
            raise self._bad_response(response, f"expected JSON, got {content_type or 'no type'}")
        try:
            return response.json()
        except ValueError:
            pass  # raised below, outside the handler, so the body is not chained
        raise self._bad_response(response, "invalid JSON")

    def _parse(self, model: type[_ModelT], response: httpx.Response) -> _ModelT:
        return self._validate(model, self._json(response), response)

    def _validate(self, model: type[_ModelT], data: object, response: httpx.Response) -> _ModelT:
        try:
            return model.model_validate(data)
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(part) for part in error['loc']) or 'body'}: {error['msg']}"
                for error in exc.errors()
            )
        # Raised outside the handler: pydantic's error text would repeat body values.
        raise self._bad_response(response, f"unexpected {model.__name__} ({problems})")


def _path_segment(value: str) -> str:
    """Quote a uuid for the URL path; an empty one would silently hit a list route."""
    if not value:
        raise ValueError("Coolify uuid must not be empty")
    return quote(value, safe="")


def _retry_after(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (Laravel's throttle sends seconds, never a date)."""
    try:
        seconds = float(response.headers.get("retry-after", ""))
    except ValueError:
        return None
    return seconds if math.isfinite(seconds) and seconds >= 0 else None


def _json_object(text: str) -> dict[str, Any] | None:
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None
