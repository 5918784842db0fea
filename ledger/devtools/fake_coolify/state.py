"""What the fake remembers: applications, their env vars, deployments, the request log and
the throttle window, and the rules that move them (deployments run on a timer, deletions
are queued). Nothing here locks: :class:`~ledger.devtools.fake_coolify.server.FakeCoolify`
holds its lock around every use."""

from __future__ import annotations

import dataclasses
import random
import string
import time
from collections import deque
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, Literal

from starlette.responses import JSONResponse

from ledger.application.ports import DeploymentStatus
from ledger.devtools.fake_coolify.calls import Abort, RecordedRequest, message
from ledger.devtools.fake_coolify.settings import FakeSettings, Faults
from ledger.devtools.fake_coolify.validation import is_true

__all__ = [
    "App",
    "Deployment",
    "Env",
    "State",
    "app_json",
    "deployment_json",
    "env_json",
    "now_iso",
]

_ID_ALPHABET = string.ascii_lowercase + string.digits
_REQUEST_LOG_LIMIT = 10_000
"""The request log keeps the newest entries only, so a long demo run stays bounded."""
CountedFault = Literal[
    "fail_next_deployments", "queue_full_next", "html_next", "garbage_next", "echo_auth_next"
]
"""The faults that are used up one per request or deployment."""


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
class App:
    """An application; ``attributes`` holds its columns as the API shows them."""

    id: int
    uuid: str
    attributes: dict[str, Any]
    envs: list[Env] = field(default_factory=list)
    delete_at: float | None = None
    busy_until: float = 0.0


@dataclass
class Deployment:
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


def now_iso() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def _domains(fqdn: object) -> set[str]:
    if not isinstance(fqdn, str):
        return set()
    return {part.strip().rstrip("/") for part in fqdn.split(",") if part.strip()}


def app_json(app: App) -> dict[str, Any]:
    return {"uuid": app.uuid, **app.attributes}


def env_json(env: Env) -> dict[str, Any]:
    return {**dataclasses.asdict(env), "real_value": env.value, "is_shared": False}


def deployment_json(deployment: Deployment, settings: FakeSettings) -> dict[str, Any]:
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


class State:
    """Everything the fake holds. Deployments advance lazily (:meth:`advance`), from
    timestamps fixed when they were queued."""

    def __init__(self, settings: FakeSettings) -> None:
        self.settings = settings
        self.random = random.Random(settings.seed)
        self.faults = Faults()
        self.apps: dict[str, App] = {}
        self.deployments: dict[str, Deployment] = {}
        self.requests: deque[RecordedRequest] = deque(maxlen=_REQUEST_LOG_LIMIT)
        self.next_id = 1
        self.window_start = 0.0
        self.window_hits = 0

    def reset(self) -> None:
        """Forget apps, deployments, requests, faults and the throttle window."""
        self.faults = Faults()
        self.apps.clear()
        self.deployments.clear()
        self.requests.clear()
        self.window_hits = 0

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

    def advance(self) -> None:
        """Move deployments and deletions forward to now."""
        now = time.monotonic()
        for deployment in self.deployments.values():
            if deployment.status.is_terminal:
                continue
            if now >= deployment.ends_at:
                self._finish(deployment)
            elif now >= deployment.starts_at:
                deployment.status = DeploymentStatus.IN_PROGRESS
        gone = {
            uuid
            for uuid, app in self.apps.items()
            if app.delete_at is not None and now >= app.delete_at
        }
        for uuid in gone:
            del self.apps[uuid]
        self.deployments = {
            uuid: d for uuid, d in self.deployments.items() if d.app_uuid not in gone
        }

    def _finish(self, deployment: Deployment) -> None:
        deployment.status = deployment.outcome
        deployment.finished_at = deployment.updated_at = now_iso()
        app = self.apps.get(deployment.app_uuid)
        if app is not None and deployment.outcome is DeploymentStatus.FINISHED:
            status = "exited:unhealthy" if deployment.exits_app else "running:unknown"
            app.attributes["status"] = status
            app.attributes["updated_at"] = deployment.finished_at

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-ready data."""
        return {
            "apps": {
                uuid: {
                    **app_json(app),
                    "envs": [env_json(env) for env in app.envs],
                    "deletion_queued": app.delete_at is not None,
                }
                for uuid, app in self.apps.items()
            },
            "deployments": {
                uuid: deployment_json(deployment, self.settings)
                for uuid, deployment in self.deployments.items()
            },
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

    def queue_deployment(self, app: App, *, force_rebuild: bool, instant: bool) -> Deployment:
        """Queue a deployment; faults that shape deployments are drawn now.

        Deployments of one app run one after another: each is queued for half of
        ``deploy_delay`` (or until the previous one ends), then in progress for the other half.
        An instant one skips the queue and is in progress for the whole delay.
        """
        now, delay = time.monotonic(), self.settings.deploy_delay
        if instant:  # no_questions_asked: skips the queue, runs at once
            starts_at, ends_at = now, now + delay
        else:
            starts_at = max(now + delay / 2, app.busy_until)
            ends_at = starts_at + delay / 2
        app.busy_until = max(app.busy_until, ends_at)
        failed = self.use_up("fail_next_deployments")
        stamp = now_iso()
        deployment = Deployment(
            id=self.next_row_id(),
            uuid=self.new_id(),
            app_uuid=app.uuid,
            app_id=app.id,
            app_name=app.attributes["name"],
            image_tag=app.attributes.get("docker_registry_image_tag"),
            force_rebuild=force_rebuild,
            status=DeploymentStatus.IN_PROGRESS if instant else DeploymentStatus.QUEUED,
            starts_at=starts_at,
            ends_at=ends_at,
            outcome=DeploymentStatus.FAILED if failed else DeploymentStatus.FINISHED,
            exits_app=self.faults.exit_after_deploy,
            created_at=stamp,
            updated_at=stamp,
        )
        self.deployments[deployment.uuid] = deployment
        return deployment

    def has_active_deployment(self, app: App) -> bool:
        return any(
            d.app_uuid == app.uuid and not d.status.is_terminal for d in self.deployments.values()
        )
