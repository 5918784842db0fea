"""What the fake remembers: applications (with their env vars and the containers Docker runs
for them), deployments, pending stop jobs, the request log and the throttle window, and how
the API shows them. How they change over time is :mod:`.timeline`. Nothing here locks:
:class:`~ledger.devtools.fake_coolify.server.FakeCoolify` holds its lock around every use."""

from __future__ import annotations

import dataclasses
import random
import string
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal, get_args

from starlette.responses import JSONResponse

from ledger.application.ports import DeploymentStatus
from ledger.devtools.fake_coolify.calls import Abort, RecordedRequest, message
from ledger.devtools.fake_coolify.settings import FakeSettings, Faults
from ledger.devtools.fake_coolify.validation import is_true

__all__ = [
    "CONTAINER_BEHAVIOURS",
    "App",
    "Container",
    "ContainerBehaviour",
    "Deployment",
    "Env",
    "State",
    "app_json",
    "deployment_json",
    "env_json",
]

_ID_ALPHABET = string.ascii_lowercase + string.digits
_REQUEST_LOG_LIMIT = 10_000
"""The request log keeps the newest entries only, so a long demo run stays bounded."""
CountedFault = Literal[
    "fail_next_deployments", "queue_full_next", "html_next", "garbage_next", "echo_auth_next"
]
"""The faults that are used up one per request or deployment."""

ContainerBehaviour = Literal[
    "no_healthcheck", "healthy", "unhealthy", "crashloop", "degraded", "exits"
]
"""How an app's container behaves once deployed, as the status sweep sees it:
``no_healthcheck`` runs without a Docker HEALTHCHECK (``running:unknown``, Coolify's default
for images); ``healthy``/``unhealthy`` run with a passing/failing one; ``crashloop`` crashes on
start and Docker restarts it (``restarting:unknown``, ``degraded:unhealthy`` when a sweep
catches it exited between restarts); ``degraded`` crashed once and stayed down
(``degraded:unhealthy``); ``exits`` exits cleanly after start (``exited:unhealthy``)."""
CONTAINER_BEHAVIOURS: tuple[ContainerBehaviour, ...] = get_args(ContainerBehaviour)

_SENSITIVE_APP_KEYS = frozenset(
    {
        "custom_labels",
        "dockerfile",
        "docker_compose",
        "docker_compose_raw",
        "manual_webhook_secret_bitbucket",
        "manual_webhook_secret_gitea",
        "manual_webhook_secret_github",
        "manual_webhook_secret_gitlab",
        "private_key_id",
        "http_basic_auth_password",
    }
)
"""What AppCtl ``removeSensitiveData`` hides from a token without ``read:sensitive``."""


@dataclass
class Env:
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
class Container:
    """One container Docker runs for an app, started by deployment ``deployment_uuid``."""

    deployment_uuid: str
    behaviour: ContainerBehaviour
    sweeps: int = 0
    """How many status sweeps have seen it (a crash loop's restart count)."""


@dataclass
class App:
    """An application. ``attributes`` holds the columns the API shows as they were sent;
    ``status`` is the stored value (``running``, ``running:unknown``, ``exited``, ...)."""

    id: int
    uuid: str
    attributes: dict[str, Any]
    tags: list[str] = field(default_factory=list)
    envs: list[Env] = field(default_factory=list)
    containers: list[Container] = field(default_factory=list)
    container: ContainerBehaviour = "no_healthcheck"
    """How containers of its next deployments behave (``POST /_fake/apps/{uuid}``)."""
    status: str = "exited"
    restart_count: int = 0
    last_restart_at: str | None = None
    last_restart_type: str | None = None
    last_online_at: str | None = None
    delete_at: float | None = None


@dataclass
class Deployment:
    """A row of Coolify's deployment queue; ``container_at``/``ends_at`` are monotonic times
    fixed when it leaves the queue."""

    id: int
    uuid: str
    app_uuid: str
    app_id: int
    app_name: str
    force_rebuild: bool
    restart_only: bool
    behaviour: ContainerBehaviour
    exits_at_once: bool
    outcome: DeploymentStatus
    created_at: str
    updated_at: str
    status: DeploymentStatus = DeploymentStatus.QUEUED
    finished_at: str | None = None
    container_at: float = 0.0
    ends_at: float = 0.0
    container_started: bool = False


def shown_status(stored: str) -> str:
    """The ``Application::status`` accessor: a bare state gets ``:unhealthy``."""
    return stored if ":" in stored else f"{stored}:unhealthy"


def app_json(app: App, sensitive: bool) -> dict[str, Any]:
    shown = {
        "uuid": app.uuid,
        **app.attributes,
        "status": shown_status(app.status),
        "restart_count": app.restart_count,
        "last_restart_at": app.last_restart_at,
        "last_restart_type": app.last_restart_type,
        "last_online_at": app.last_online_at,
    }
    if sensitive:
        return shown
    return {key: value for key, value in shown.items() if key not in _SENSITIVE_APP_KEYS}


def env_json(env: Env, sensitive: bool) -> dict[str, Any]:
    shown = {**dataclasses.asdict(env), "real_value": env.value, "is_shared": False}
    if sensitive:
        return shown
    return {key: value for key, value in shown.items() if key not in ("value", "real_value")}


def deployment_json(
    deployment: Deployment, settings: FakeSettings, sensitive: bool
) -> dict[str, Any]:
    url = (
        f"/project/{settings.project_uuid}/environment/{settings.environment_uuid}"
        f"/application/{deployment.app_uuid}/deployment/{deployment.uuid}"
    )
    shown: dict[str, Any] = {
        "id": deployment.id,
        "application_id": str(deployment.app_id),
        "deployment_uuid": deployment.uuid,
        "pull_request_id": 0,
        "force_rebuild": deployment.force_rebuild,
        "commit": "HEAD",
        "status": deployment.status.value,
        "is_webhook": False,
        "is_api": True,
        "restart_only": deployment.restart_only,
        "rollback": False,
        "only_this_server": False,
        "git_type": None,
        "current_process_id": None,
        "server_id": 0,
        "server_name": "localhost",
        "destination_id": "0",
        "application_name": deployment.app_name,
        "deployment_url": url,
        # Only webhook and preview deployments pass a tag to queue_application_deployment.
        "docker_registry_image_tag": None,
        "commit_message": None,
        "created_at": deployment.created_at,
        "updated_at": deployment.updated_at,
        "finished_at": deployment.finished_at,
    }
    if sensitive:
        shown["logs"] = "[]"
    return shown


class State:
    """Everything the fake holds. Times are monotonic; :meth:`stamp` turns one into the
    ISO timestamp Coolify would have written then."""

    def __init__(self, settings: FakeSettings) -> None:
        self.settings = settings
        self.random = random.Random(settings.seed)
        self.faults = Faults()
        self.apps: dict[str, App] = {}
        self.deployments: dict[str, Deployment] = {}
        self.stops: list[tuple[float, str]] = []
        """Pending ``StopApplication`` jobs: when they run, and for which app."""
        self.tags: set[str] = set()
        self.requests: deque[RecordedRequest] = deque(maxlen=_REQUEST_LOG_LIMIT)
        self.next_id = 1
        self.window_start = 0.0
        self.window_hits = 0
        self._wall_offset = time.time() - time.monotonic()
        self.next_sweep_at = time.monotonic() + settings.status_interval

    def reset(self) -> None:
        """Forget apps, deployments, stops, requests, faults and the throttle window."""
        self.faults = Faults()
        self.apps.clear()
        self.deployments.clear()
        self.stops.clear()
        self.tags.clear()
        self.requests.clear()
        self.window_hits = 0
        self.next_sweep_at = time.monotonic() + self.settings.status_interval

    def apply_settings(self, settings: FakeSettings) -> None:
        """New settings; a new sweep period starts now."""
        if settings.status_interval != self.settings.status_interval:
            self.next_sweep_at = time.monotonic() + settings.status_interval
        self.settings = settings

    def stamp(self, at: float) -> str:
        """Whole seconds, as Coolify's ``timestamp`` columns keep them."""
        return datetime.fromtimestamp(at + self._wall_offset, UTC).strftime(
            "%Y-%m-%dT%H:%M:%S.000000Z"
        )

    def now_stamp(self) -> str:
        return self.stamp(time.monotonic())

    def use_up(self, fault: CountedFault) -> bool:
        """Whether a counted fault applies now; if so, one is used up."""
        left: int = getattr(self.faults, fault)
        if left:
            changes: dict[str, Any] = {fault: left - 1}
            self.faults = dataclasses.replace(self.faults, **changes)
        return bool(left)

    def new_id(self) -> str:
        return "".join(self.random.choice(_ID_ALPHABET) for _ in range(24))

    def next_row_id(self) -> int:
        self.next_id += 1
        return self.next_id

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-ready data (sensitive values included, tokens left out)."""
        return {
            "apps": {
                uuid: {
                    **app_json(app, sensitive=True),
                    "envs": [env_json(env, sensitive=True) for env in app.envs],
                    "tags": app.tags,
                    "container": app.container,
                    "containers": [c.deployment_uuid for c in app.containers],
                    "deletion_queued": app.delete_at is not None,
                }
                for uuid, app in self.apps.items()
            },
            "deployments": {
                uuid: deployment_json(deployment, self.settings, sensitive=True)
                for uuid, deployment in self.deployments.items()
            },
            "stops_pending": sorted(uuid for _, uuid in self.stops),
            "settings": self.settings.public(),
            "faults": dataclasses.asdict(self.faults),
            "requests": [dataclasses.asdict(request) for request in self.requests],
        }

    def app_or_404(self, uuid: str, text: str) -> App:
        """``text`` varies by route: "Application not found." or without the period."""
        app = self.apps.get(uuid)
        if app is None:
            raise message(404, text)
        return app

    def check_domains(self, fqdn: object, body: Mapping[str, Any], own_uuid: str) -> None:
        if is_true(body.get("force_domain_override")):
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
            for other in self.apps.values()
            if other.uuid != own_uuid
            for domain in _domains(fqdn) & _domains(other.attributes.get("fqdn"))
        ]
        if conflicts:
            text = "Domain conflicts detected. Use force_domain_override=true to proceed."
            warning = (
                "Using the same domain for multiple resources can cause routing conflicts "
                "and unpredictable behavior."
            )
            body_out = {"message": text, "warning": warning, "conflicts": conflicts}
            raise Abort(JSONResponse(body_out, 409))


def _domains(fqdn: object) -> set[str]:
    if not isinstance(fqdn, str):
        return set()
    return {part.strip().rstrip("/") for part in fqdn.split(",") if part.strip()}
