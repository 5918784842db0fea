"""What happens in the fake over time, the way Coolify's jobs do it (API.md; the functions
named are Coolify's):

- the deployment queue: ``queue_application_deployment`` (queue-full first, then "already
  queued", then run at once if ``next_queuable``, else wait) and ``queue_next_deployment``
  when one ends;
- a deployment job (``ApplicationDeploymentJob``): its new container comes up half-way
  (``start_by_compose_file`` in the rolling update), at the end the old one is removed and
  the job stores the bare status ``running`` (shown ``running:unhealthy``);
- ``StopApplication``, a queued job: when it runs, it removes whatever containers the app
  has *then* (also those of a deployment started after the stop was asked for) and stores
  ``exited``; it never cancels a deployment;
- the status sweep (``GetContainersStatus`` with ``ContainerStatusAggregator``) every
  ``status_interval``: the only thing that turns ``running`` into what the container is.

Everything advances lazily: :func:`advance` replays the events due since the last call, in
time order, each at its own time.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Literal, TypeVar

from ledger.application.ports import DeploymentStatus
from ledger.devtools.fake_coolify.state import App, Container, Deployment, State

__all__ = ["advance", "cancel", "queue_deployment", "request_stop"]

QueueRefusal = Literal["queue_full", "skipped"]

_ACTIVE = (DeploymentStatus.QUEUED, DeploymentStatus.IN_PROGRESS)
_NO_RESTARTS: dict[str, object] = {
    "restart_count": 0,
    "last_restart_at": None,
    "last_restart_type": None,
}
"""What StopApplication and a sweep that finds no container reset."""
_T = TypeVar("_T")


def advance(state: State, now: float | None = None) -> None:
    """Run every job and sweep due by ``now``, oldest first."""
    now = time.monotonic() if now is None else now
    while True:
        due = _next_job(state, now)
        _periodic_sweeps(state, until=now if due is None else due[0], inclusive=due is None)
        if due is None:
            break
        due[1]()
    if state.settings.status_interval == 0:
        _sweep(state, now)


def _next_job(state: State, now: float) -> tuple[float, Callable[[], None]] | None:
    """The earliest job step due by ``now`` (ties: containers start, deployments end, stops
    run, then deletions), with a call that performs it."""
    due: list[tuple[float, int, Callable[[], None]]] = []
    for deployment in state.deployments.values():
        if deployment.status is not DeploymentStatus.IN_PROGRESS:
            continue
        wants_container = deployment.outcome is DeploymentStatus.FINISHED
        if wants_container and not deployment.container_started:
            if deployment.container_at <= now:
                step = _bound(_start_container, state, deployment)
                due.append((deployment.container_at, 0, step))
        elif deployment.ends_at <= now:
            due.append((deployment.ends_at, 1, _bound(_end, state, deployment)))
    due += [(at, 2, _bound(_run_stop, state, (at, uuid))) for at, uuid in state.stops if at <= now]
    due += [
        (app.delete_at, 3, _bound(_delete, state, app))
        for app in state.apps.values()
        if app.delete_at is not None and app.delete_at <= now
    ]
    if not due:
        return None
    at, _, step = min(due, key=lambda item: (item[0], item[1]))
    return at, step


def _bound(step: Callable[[State, _T], None], state: State, arg: _T) -> Callable[[], None]:
    return lambda: step(state, arg)


# The queue (bootstrap/helpers/applications.php)


def queue_deployment(
    state: State, app: App, *, force: bool, instant: bool, restart_only: bool = False
) -> Deployment | QueueRefusal:
    """``queue_application_deployment``: the server's queue limit is checked first, then an
    active deployment of the same commit skips the request (unless forced or instant). A new
    deployment runs at once if instant (``no_questions_asked``) or queuable, else waits."""
    now = time.monotonic()
    waiting = sum(d.status is DeploymentStatus.QUEUED for d in state.deployments.values())
    if state.use_up("queue_full_next") or waiting >= state.settings.deployment_queue_limit:
        return "queue_full"
    if not (force or instant) and any(
        d.app_uuid == app.uuid and d.status in _ACTIVE for d in state.deployments.values()
    ):
        return "skipped"
    failed = state.use_up("fail_next_deployments")
    exits_at_once = state.faults.exit_after_deploy
    stamp = state.stamp(now)
    deployment = Deployment(
        id=state.next_row_id(),
        uuid=state.new_id(),
        app_uuid=app.uuid,
        app_id=app.id,
        app_name=app.attributes["name"],
        force_rebuild=force,
        restart_only=restart_only,
        behaviour="exits" if exits_at_once else app.container,
        exits_at_once=exits_at_once,
        outcome=DeploymentStatus.FAILED if failed else DeploymentStatus.FINISHED,
        created_at=stamp,
        updated_at=stamp,
    )
    state.deployments[deployment.uuid] = deployment
    if instant or _queuable(state, deployment):
        _start(state, deployment, now)
    return deployment


def _queuable(state: State, deployment: Deployment) -> bool:
    """``next_queuable``: nothing of this app in progress, and a free build slot."""
    running = [d for d in state.deployments.values() if d.status is DeploymentStatus.IN_PROGRESS]
    if any(d.app_uuid == deployment.app_uuid for d in running):
        return False
    return len(running) < state.settings.concurrent_builds


def _start(state: State, deployment: Deployment, at: float) -> None:
    delay = state.settings.deploy_delay
    deployment.status = DeploymentStatus.IN_PROGRESS
    deployment.updated_at = state.stamp(at)
    deployment.container_at = at + delay / 2
    deployment.ends_at = at + delay


def _queue_next(state: State, at: float) -> None:
    """``queue_next_deployment``: start the waiting deployments that can run, oldest first."""
    waiting = [d for d in state.deployments.values() if d.status is DeploymentStatus.QUEUED]
    for deployment in sorted(waiting, key=lambda d: d.id):
        if _queuable(state, deployment):
            _start(state, deployment, at)


def cancel(state: State, deployment: Deployment) -> None:
    """``cancel_deployment``: the row is marked at once. A container the job already started
    keeps running (only the helper container is removed); ``finished_at`` is written by the
    job's cleanup, so a deployment cancelled while queued never gets one."""
    now = time.monotonic()
    was_running = deployment.status is DeploymentStatus.IN_PROGRESS
    deployment.status = DeploymentStatus.CANCELLED_BY_USER
    deployment.updated_at = state.stamp(now)
    if was_running:
        deployment.finished_at = deployment.updated_at
        _queue_next(state, now)


# The deployment job (app/Jobs/ApplicationDeploymentJob.php)


def _start_container(state: State, deployment: Deployment) -> None:
    deployment.container_started = True
    app = state.apps.get(deployment.app_uuid)
    if app is not None:
        app.containers.append(Container(deployment.uuid, deployment.behaviour))


def _end(state: State, deployment: Deployment) -> None:
    """A finished job removes the old container and stores ``running``; a failed one never
    started its container and leaves the old one and the status alone."""
    at = deployment.ends_at
    deployment.status = deployment.outcome
    deployment.finished_at = deployment.updated_at = state.stamp(at)
    app = state.apps.get(deployment.app_uuid)
    if app is not None and deployment.outcome is DeploymentStatus.FINISHED:
        app.containers = [c for c in app.containers if c.deployment_uuid == deployment.uuid]
        _save(state, app, at, status="exited" if deployment.exits_at_once else "running")
    _queue_next(state, at)


# StopApplication (app/Actions/Application/StopApplication.php)


def request_stop(state: State, app: App) -> None:
    """``StopApplication::dispatch``: the job runs ``stop_delay`` later."""
    state.stops.append((time.monotonic() + state.settings.stop_delay, app.uuid))


def _run_stop(state: State, job: tuple[float, str]) -> None:
    state.stops.remove(job)
    at, uuid = job
    app = state.apps.get(uuid)
    if app is None:
        return
    app.containers.clear()
    _save(state, app, at, status="exited", **_NO_RESTARTS)


def _delete(state: State, app: App) -> None:
    """``DeleteResourceJob``: containers, env vars and the row (and so its deployments) go."""
    del state.apps[app.uuid]
    state.deployments = {uuid: d for uuid, d in state.deployments.items() if d.app_uuid != app.uuid}


# The status sweep (app/Actions/Docker/GetContainersStatus.php, ContainerStatusAggregator)


def _periodic_sweeps(state: State, until: float, inclusive: bool) -> None:
    """The sweeps due before ``until`` (or at it, when no job step is due then: at the same
    time, jobs go first)."""
    interval = state.settings.status_interval
    if interval == 0:
        return
    while state.next_sweep_at < until or (inclusive and state.next_sweep_at == until):
        at = state.next_sweep_at
        state.next_sweep_at = at + interval
        _sweep(state, at)


def _sweep(state: State, at: float) -> None:
    for app in state.apps.values():
        _sweep_app(state, app, at)


def _sweep_app(state: State, app: App, at: float) -> None:
    """One app in ``GetContainersStatus``. Without a container it becomes ``exited`` (and its
    restart count is reset); with one, a rising restart count is recorded, then a changed
    aggregated status is stored, an unchanged one only refreshes ``last_online_at``. The
    rolling update's old and new containers share a compose service name, so the newest
    one is what counts."""
    if not app.containers:
        if not app.status.startswith("exited"):
            _save(state, app, at, status="exited", **_NO_RESTARTS)
        return
    container = app.containers[-1]
    container.sweeps += 1
    docker_status, restarts = _observe(container)
    if restarts > app.restart_count:
        crash = {"last_restart_at": state.stamp(at), "last_restart_type": "crash"}
        _save(state, app, at, restart_count=restarts, **crash)
    aggregated = _aggregate(docker_status, restarts)
    if app.status != aggregated:
        _save(state, app, at, status=aggregated)
    else:
        _save(state, app, at, last_online_at=state.stamp(at))


def _save(state: State, app: App, at: float, **changes: object) -> None:
    """``$application->update([...])``: only changed columns are written; a changed status
    also writes ``last_online_at`` (``Application::saving``), and any change ``updated_at``."""
    stamp = state.stamp(at)
    dirty = {name: value for name, value in changes.items() if getattr(app, name) != value}
    if "status" in dirty:
        dirty["last_online_at"] = stamp
    for name, value in dirty.items():
        setattr(app, name, value)
    if dirty:
        app.attributes["updated_at"] = stamp


def _observe(container: Container) -> tuple[str, int]:
    """What Docker reports for the container, as ``GetContainersStatus`` words it
    (``state:health``, health ``unknown`` without a HEALTHCHECK, bare ``exited``), and its
    RestartCount. A crash loop is caught restarting, then exited between two restarts."""
    match container.behaviour:
        case "no_healthcheck":
            return "running:unknown", 0
        case "healthy":
            return "running:healthy", 0
        case "unhealthy":
            return "running:unhealthy", 0
        case "exits":
            return "exited", 0
        case "degraded":
            return "exited", 1
        case "crashloop":
            restarts = container.sweeps
            return ("restarting:unknown" if restarts % 2 else "exited"), restarts


def _aggregate(docker_status: str, restarts: int) -> str:
    """``ContainerStatusAggregator::aggregateFromStrings`` for one container, with
    ``preserveRestarting: true`` as applications use it."""
    if "restarting" in docker_status:
        return "restarting:unknown"
    if "exited" in docker_status:
        return "degraded:unhealthy" if restarts > 0 else "exited"
    if "unhealthy" in docker_status:
        return "running:unhealthy"
    if "unknown" in docker_status:
        return "running:unknown"
    return "running:healthy"
