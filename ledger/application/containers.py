"""What the deploy flow does to one slot's Coolify application, as Coolify really behaves
(API.md, and its code where API.md says nothing): every call waits while Coolify asks it
to, and every wait polls with backoff and is bounded.

- :meth:`AppDriver.configure`: the application's env vars become exactly one lease's
  configuration (bulk upsert, then every other key deleted by its uuid: the bulk route
  only adds and updates).
- :meth:`AppDriver.start`: a deployment of this configuration; one that Coolify says is
  already queued was queued before the configuration was written, so it is cancelled and
  the start is made again.
- :meth:`AppDriver.wait_ready`: the deployment finished, then a ``running:*`` status that
  Coolify observed after it finished (``last_online_at`` later than ``finished_at``), so
  neither a status left from before nor the bare ``running`` the deployment job writes
  itself counts; a container that keeps restarting never does.
- :meth:`AppDriver.clear`: cancel what is still deploying, stop, wait until Coolify
  reports the container exited (stop is a queued job there, so a slot is free only once
  it has run), then delete the lease's configuration keys, so nothing of one bot stays
  for the next.
"""

from __future__ import annotations

import contextlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass
from functools import partial
from typing import TypeVar

from ledger.application.ports import (
    AppState,
    ContainerState,
    Coolify,
    DeploymentState,
    DeploymentStatus,
    EnvVar,
)
from ledger.errors import (
    CoolifyError,
    CoolifyNotFound,
    CoolifyRateLimited,
    CoolifyServerError,
    CoolifyUnavailable,
    SlotLedgerError,
)

__all__ = [
    "ATTEMPT_KEY",
    "LEDGER_KEYS",
    "AppDriver",
    "Closed",
    "DeployFailed",
    "Polling",
    "observed_after",
]

log = logging.getLogger("ledger.deploy")

T = TypeVar("T")

ATTEMPT_KEY = "SLOTLEDGER_ATTEMPT"
"""How many deploys of the bot's request failed before this one (see the deploy flow)."""
LEDGER_KEYS = frozenset(
    {"SLOTLEDGER_BOT_ID", "SLOTLEDGER_SLOT_ID", "SLOTLEDGER_LEASE", ATTEMPT_KEY}
)
"""The env vars the ledger itself writes for every lease: they hold no secret, name the
slot's last lease and are overwritten by the next, so clearing a slot keeps them (four
requests fewer per release)."""

_ACTIVE = frozenset({DeploymentStatus.QUEUED, DeploymentStatus.IN_PROGRESS})
_WAITABLE = (CoolifyRateLimited, CoolifyUnavailable, CoolifyServerError)
"""What a poll waits out: the throttle, an outage, a server error. A poll only reads, so
asking again is always safe; the deadline bounds how long."""


class DeployFailed(SlotLedgerError):
    """Coolify did not give what a step of the lifecycle needs (a running container, a
    gone one, a deployment at all) within its bound: the slot fails with this reason;
    ``reason_code`` groups failures."""

    code = "deploy_failed"
    http_status = 502

    def __init__(self, detail: str, reason_code: str) -> None:
        super().__init__(detail)
        self.reason_code = reason_code


class Closed(Exception):
    """The process is stopping: the wait ends, and the ledger's policies settle the slot
    (a deploying slot goes stale, a releasing one outlives its stop timeout)."""


@dataclass(frozen=True)
class Polling:
    """How Coolify is polled: the first pause ``initial_s``, each next one ``factor``
    times longer up to ``max_s``, every pause off by up to ``jitter`` either way so that
    many waits do not poll in step. Coolify allows 200 requests a minute per token and
    its status lags up to a minute, so the pauses grow toward the origin system's 15 s;
    a short first pause keeps a fast deploy or stop fast."""

    initial_s: float = 1.0
    max_s: float = 15.0
    factor: float = 1.5
    jitter: float = 0.2

    def pauses(self, rng: random.Random) -> Iterator[float]:
        pause = self.initial_s
        while True:
            yield pause * rng.uniform(1 - self.jitter, 1 + self.jitter)
            pause = min(self.max_s, pause * self.factor)


def observed_after(app: AppState, deployment: DeploymentState) -> bool:
    """Whether Coolify observed the application's status after the deployment finished.

    ``last_online_at`` is set on every status change and every sweep that finds the
    container (``Application::saving``, ``PushServerUpdateJob``). Both columns have whole
    seconds in real Coolify, and the deployment job writes its bare ``running`` just
    before its ``finished_at``, so only a later ``last_online_at`` proves a sweep after
    the finish. None has never been observed."""
    seen, finished = app.last_online_at, deployment.finished_at
    return seen is not None and (finished is None or seen > finished)


class AppDriver:
    """The Coolify side of a slot's lifecycle; thread-safe (it keeps no per-slot state).
    ``closing`` ends every wait when set (:class:`Closed`)."""

    START_ATTEMPTS = 3
    """Start requests per deploy before Coolify's queue counts as full."""

    def __init__(
        self,
        coolify: Coolify,
        polling: Polling | None = None,
        *,
        stop_timeout_s: float = 180.0,
        status_lag_s: float = 60.0,
        closing: threading.Event | None = None,
    ) -> None:
        self.coolify = coolify
        self.polling = polling or Polling()
        self.stop_timeout_s = stop_timeout_s
        self.status_lag_s = status_lag_s
        self.closing = closing or threading.Event()
        self._random = random.Random()

    # --- waiting -------------------------------------------------------------------------

    def wait(
        self,
        check: Callable[[], T | None],
        deadline: float,
        timed_out: Callable[[], DeployFailed],
        guard: Callable[[], None] = lambda: None,
    ) -> T:
        """Poll ``check`` until it answers (not None), pausing with backoff; Coolify's
        throttle, outages and server errors are waited out (a 429's ``Retry-After`` at
        least). ``guard`` runs before every poll and raises to give up (the lease
        ended); past ``deadline`` (monotonic) the wait raises ``timed_out()``."""
        pauses = self.polling.pauses(self._random)
        while True:
            guard()
            hint = 0.0
            try:
                found = check()
            except _WAITABLE as e:
                found, hint = None, _retry_after(e)
                log.info("waiting out Coolify: %s", e)
            if found is not None:
                return found
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise timed_out()
            self.pause(min(max(next(pauses), hint), remaining))

    def patient(self, call: Callable[[], T], deadline: float) -> T:
        """A command that Coolify's throttle refused is sent again until ``deadline``:
        a 429 comes before any work, so repeating it cannot do the work twice."""
        while True:
            try:
                return call()
            except CoolifyRateLimited as e:
                remaining = deadline - time.monotonic()
                if remaining <= 0:
                    raise
                self.pause(min(max(_retry_after(e), self.polling.initial_s), remaining))

    def pause(self, seconds: float) -> None:
        if self.closing.wait(seconds):
            raise Closed("the deployer is closing")

    # --- configuration -------------------------------------------------------------------

    def configure(self, app_uuid: str, env: Mapping[str, str], deadline: float) -> None:
        """Make the application's env vars exactly ``env``: upsert them in one request,
        then delete every other key (a previous lease's, or one set by hand)."""
        stale = [e for e in self._envs(app_uuid, deadline) if e[0] not in env]
        upsert = [EnvVar(key=key, value=value) for key, value in env.items()]
        self.patient(lambda: self.coolify.update_envs_bulk(app_uuid, upsert), deadline)
        self._delete_envs(app_uuid, [uuid for _, uuid in stale], deadline)

    def wipe(self, app_uuid: str, deadline: float) -> None:
        """Delete every env var but the ledger's own (:data:`LEDGER_KEYS`)."""
        stale = [uuid for key, uuid in self._envs(app_uuid, deadline) if key not in LEDGER_KEYS]
        self._delete_envs(app_uuid, stale, deadline)

    def _envs(self, app_uuid: str, deadline: float) -> list[tuple[str, str]]:
        envs = self.wait(
            partial(self.coolify.list_envs, app_uuid),
            deadline,
            lambda: DeployFailed("Coolify did not list the env vars in time", "coolify_timeout"),
        )
        return [(e.key, e.uuid) for e in envs]

    def _delete_envs(self, app_uuid: str, env_uuids: list[str], deadline: float) -> None:
        for env_uuid in env_uuids:
            with contextlib.suppress(CoolifyNotFound):  # gone already: what was wanted
                self.patient(partial(self.coolify.delete_env, app_uuid, env_uuid), deadline)

    # --- deploying -----------------------------------------------------------------------

    def start(self, app_uuid: str, deadline: float) -> str:
        """Start a deployment and return its uuid, once it exists (API.md §5: a 200
        without one means one is already queued, which ran or runs with an earlier
        configuration: it is cancelled and the start made again; one that 404s means
        Coolify's queue was full)."""
        pauses = self.polling.pauses(self._random)
        for _ in range(self.START_ATTEMPTS):
            answer = self.patient(lambda: self.coolify.start(app_uuid), deadline)
            deployment_uuid = answer.deployment_uuid
            if deployment_uuid is None:
                log.info("application %s: a deployment was already queued; cancelling it", app_uuid)
                self.cancel_active(app_uuid, deadline)
                continue
            try:
                self.patient(partial(self.coolify.get_deployment, deployment_uuid), deadline)
            except CoolifyNotFound:
                log.warning(
                    "deployment %s does not exist: Coolify's queue is full", deployment_uuid
                )
                self.pause(next(pauses))
            else:
                return deployment_uuid
        raise DeployFailed(
            f"Coolify queued no deployment of this lease after {self.START_ATTEMPTS} start "
            "requests (deployment queue full, or one queued again each time)",
            "coolify_queue_full",
        )

    def wait_finished(
        self, deployment_uuid: str, deadline: float, guard: Callable[[], None]
    ) -> DeploymentState:
        """The deployment once it finished; a failed or cancelled one raises."""
        seen: list[DeploymentStatus] = []

        def finished() -> DeploymentState | None:
            deployment = self.coolify.get_deployment(deployment_uuid)
            seen.append(deployment.status)
            if deployment.status is DeploymentStatus.FAILED:
                raise DeployFailed(
                    f"Coolify deployment {deployment_uuid} failed", "deployment_failed"
                )
            if deployment.status is DeploymentStatus.CANCELLED_BY_USER:
                raise DeployFailed(
                    f"Coolify deployment {deployment_uuid} was cancelled", "deployment_cancelled"
                )
            return deployment if deployment.status is DeploymentStatus.FINISHED else None

        return self.wait(
            finished,
            deadline,
            lambda: DeployFailed(
                f"deployment {deployment_uuid} still {seen[-1] if seen else 'unknown'} "
                "at the ready timeout",
                "ready_timeout",
            ),
            guard,
        )

    def wait_running(
        self,
        app_uuid: str,
        deployment: DeploymentState,
        deadline: float,
        grace_s: float,
        guard: Callable[[], None],
    ) -> None:
        """Until Coolify observes the container running after the deployment; within
        ``grace_s`` (the status lags), else the container does not run."""
        seen: list[str] = []

        def running() -> bool | None:
            app = self.coolify.get_application(app_uuid)
            seen.append(str(app.status))
            return True if app.status.is_running and observed_after(app, deployment) else None

        def timed_out() -> DeployFailed:
            last = seen[-1] if seen else "unknown"
            return DeployFailed(
                f"container not running {grace_s:.0f}s after its deployment finished: {last}",
                "container_not_running",
            )

        self.wait(running, min(deadline, time.monotonic() + grace_s), timed_out, guard)

    # --- clearing ------------------------------------------------------------------------

    def cancel_active(self, app_uuid: str, deadline: float) -> bool:
        """Cancel the application's queued and running deployments and wait until they
        have ended (a finished one cannot be cancelled: it ended, which is what counts).
        True when one of them was running: its container may have started, and a
        cancel leaves it running while the status still shows what was before."""
        page = self.wait(
            partial(self.coolify.list_application_deployments, app_uuid, take=10),
            deadline,
            lambda: DeployFailed("Coolify did not list the deployments in time", "coolify_timeout"),
        )
        active = [d for d in page.deployments if d.status in _ACTIVE]
        for deployment in active:
            self.cancel(deployment.deployment_uuid, deadline)
        ended = self.wait(
            lambda: self._all_ended([d.deployment_uuid for d in active]),
            deadline,
            lambda: DeployFailed(
                f"deployments {', '.join(d.deployment_uuid for d in active)} "
                "did not end after their cancel",
                "cancel_timeout",
            ),
        )
        ran = any(d.status is DeploymentStatus.IN_PROGRESS for d in active)
        return ran or any(d.finished_at is not None for d in ended)

    def cancel(self, deployment_uuid: str, deadline: float) -> None:
        """Cancel a deployment; one that ended or is gone needs none."""
        try:
            self.patient(partial(self.coolify.cancel_deployment, deployment_uuid), deadline)
        except CoolifyNotFound:
            pass
        except CoolifyError as e:
            if e.status != 400:  # 400: "cannot be cancelled", it ended meanwhile
                raise

    def _all_ended(self, deployment_uuids: list[str]) -> list[DeploymentState] | None:
        """The deployments once every one has ended (a gone one has), else None."""
        ended = []
        for deployment_uuid in deployment_uuids:
            try:
                deployment = self.coolify.get_deployment(deployment_uuid)
            except CoolifyNotFound:
                continue
            if not deployment.status.is_terminal:
                return None
            ended.append(deployment)
        return ended

    def clear(self, app_uuid: str, *, in_flight: bool = True) -> None:
        """No container runs and no lease's configuration stays. Bounded by
        ``stop_timeout_s`` (:class:`DeployFailed`); an application that is gone is clear.

        What deploys is cancelled (``in_flight``: a deployment may still run). A cancel
        leaves a container the deployment already started running while the status
        still shows what was before, so after cancelling a running deployment the
        status gets ``status_lag_s`` to show one (a sweep looks by then). Then, if the
        status shows a container, stop it and wait until Coolify shows it gone: stop is
        a job in Coolify's queue that writes ``exited`` when it has run. An application
        that shows ``exited`` gets no stop: a stop job that runs late removes whatever
        container the application has by then, the next lease's too."""
        deadline = time.monotonic() + self.stop_timeout_s
        try:
            ran = self.cancel_active(app_uuid, deadline) if in_flight else False
            shown = time.monotonic() + (self.status_lag_s if ran else 0.0)
            status = self.wait(
                lambda: self._status_by(app_uuid, shown),
                deadline,
                lambda: DeployFailed("Coolify did not show the application", "coolify_timeout"),
            )
            if status.is_exited:
                log.info("application %s: no container runs; no stop needed", app_uuid)
            else:
                self.patient(partial(self.coolify.stop, app_uuid), deadline)
                self._wait_exited(app_uuid, deadline)
            self.wipe(app_uuid, deadline)
        except CoolifyNotFound:
            log.info("application %s is gone; nothing runs", app_uuid)

    def _status_by(self, app_uuid: str, shown: float) -> ContainerState | None:
        """The status once it shows a container, or at ``shown`` whatever it is."""
        status = self.coolify.get_application(app_uuid).status
        return status if not status.is_exited or time.monotonic() >= shown else None

    def _wait_exited(self, app_uuid: str, deadline: float) -> None:
        seen: list[str] = []

        def exited() -> bool | None:
            status = self.coolify.get_application(app_uuid).status
            seen.append(str(status))
            return True if status.is_exited else None

        self.wait(
            exited,
            deadline,
            lambda: DeployFailed(
                f"container still {seen[-1] if seen else 'unknown'} "
                f"{self.stop_timeout_s:.0f}s after its stop",
                "stop_timeout",
            ),
        )


def _retry_after(error: Exception) -> float:
    hint = getattr(error, "retry_after", None)
    return float(hint) if isinstance(hint, int | float) else 0.0
