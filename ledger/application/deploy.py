"""The deploy flow on Coolify: the seed's acquireOrCreateSlot, configureAndStartSlot and
releaseSlot, with every step recorded in the ledger before or after the Coolify call.

- ``request``: an idle slot, else a new slot while under the maximum size, else the queue.
  ``SlotAcquired`` is recorded before Coolify is called; the rest runs in the background.
- ``configure_and_start``: create the application if the slot has none (or recreate it if
  it vanished outside), write the bot's configuration as env vars, start, record
  ``SlotDeploying`` with the deployment uuid, follow it to ``finished`` and a ``running:*``
  container, then ``SlotStarted``. Any Coolify failure ends in ``SlotFailed`` with
  Coolify's reason. Each step carries the slot's lease, so a deploy that outlives its
  bot's release cannot touch the next lease.
- ``release``: stop the container, then ``SlotReleased``; the freed slot goes to the queue.

Concurrent Coolify deployments are capped by :class:`DeployPermits` (Coolify's own cap is
unreliable): in-process on SQLite, PostgreSQL advisory locks across processes otherwise.
"""

from __future__ import annotations

import hashlib
import json
import logging
import threading
import time
from abc import ABC, abstractmethod
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any
from uuid import UUID

from ledger.application import Context, Outcome, SlotLedger
from ledger.application.ports import (
    Coolify,
    CreateDockerImageApp,
    DeploymentStatus,
    EnvVar,
    SlotRow,
)
from ledger.application.unit_of_work import Attempt, LostRace
from ledger.domain import QueueEntry, Slot, SlotStatus
from ledger.errors import (
    BadInput,
    BotAlreadyHoldsSlot,
    BotAlreadyQueued,
    BotNotFound,
    Conflict,
    CoolifyError,
    CoolifyNotFound,
    NoIdleSlot,
    PoolFull,
    SlotLedgerError,
    StaleLease,
    store_unavailable,
)
from ledger.loops import log_failure

__all__ = [
    "Acquired",
    "CoolifySlotRuntime",
    "DeployFailed",
    "DeployPermits",
    "IdempotencyKeyReused",
    "LocalDeployPermits",
    "Queued",
    "ReleaseRate",
    "SlotDeployer",
    "SlotTemplate",
]

log = logging.getLogger("ledger.deploy")

_SETTLED_LATER = (
    "the slot stays deploying until its bot's heartbeat starts it"
    " or, once the store answers, the stale-deploying policy fails it for recovery"
)
"""What becomes of a deploy that the store's outage interrupted: nothing is lost, since
the ledger's state is the store's, and the lifecycle's own rules settle it."""


class DeployFailed(SlotLedgerError):
    """A deployment did not give a running container; ``reason_code`` groups failures."""

    code = "deploy_failed"
    http_status = 502

    def __init__(self, detail: str, reason_code: str) -> None:
        super().__init__(detail)
        self.reason_code = reason_code


class IdempotencyKeyReused(BadInput):
    """An idempotency key came back with a different request for the same bot."""

    code = "idempotency_key_reused"


KEY_DIGITS = 16
"""A keyed request's correlation id: this many hex digits of the key's digest, then as
many of the request's."""


def keyed_correlation_id(idempotency_key: str, request: dict[str, Any]) -> str:
    """The correlation id of a request made under an idempotency key: a retry carries
    the id of the request it repeats, and the same key with another request differs
    from it only after the key's digits."""
    key = hashlib.sha256(idempotency_key.encode()).hexdigest()[:KEY_DIGITS]
    body = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return key + hashlib.sha256(body.encode()).hexdigest()[:KEY_DIGITS]


@dataclass(frozen=True)
class SlotTemplate:
    """What every slot's Coolify application is created from."""

    project_uuid: str
    server_uuid: str
    environment_name: str
    image: str
    image_tag: str


@dataclass(frozen=True)
class Acquired:
    """The request got a slot; it is ``deploying`` until the container runs.
    ``existing``: the bot held it already (a repeated request), nothing was written."""

    slot: Slot
    position: int
    task: Future[None] | None = None
    existing: bool = False


@dataclass(frozen=True)
class Queued:
    """The pool is full: the request waits in the queue at ``position``; 0 when the
    entry no longer waits, or its place could not be read once it was written.
    ``log_position`` is a log position that includes the entry (0: none known)."""

    entry: QueueEntry
    position: int
    estimated_wait_ms: int
    log_position: int = 0


class DeployPermits(ABC):
    """A counting semaphore over concurrent Coolify deployments."""

    @abstractmethod
    @contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
        """Hold one permit; raise :class:`DeployFailed` when none frees up in time."""


class LocalDeployPermits(DeployPermits):
    """In-process permits, for the embedded single-process mode."""

    def __init__(self, limit: int) -> None:
        self._semaphore = threading.BoundedSemaphore(limit)

    @contextmanager
    def hold(self, timeout: float) -> Iterator[None]:
        if not self._semaphore.acquire(timeout=timeout):
            raise DeployFailed("no deployment permit within the timeout", "deploy_capacity")
        try:
            yield
        finally:
            self._semaphore.release()


class ReleaseRate:
    """Releases observed over a sliding window, for the queue's estimated wait."""

    def __init__(self, window_s: float = 900.0, clock: Callable[[], float] = time.monotonic):
        self._window_s = window_s
        self._clock = clock
        self._seen: deque[float] = deque()
        self._lock = threading.Lock()

    def record(self) -> None:
        with self._lock:
            self._seen.append(self._clock())

    def per_second(self) -> float:
        now = self._clock()
        with self._lock:
            while self._seen and self._seen[0] < now - self._window_s:
                self._seen.popleft()
            return len(self._seen) / self._window_s

    def estimated_wait_ms(self, position: int, pool_size: int) -> int:
        """Position over the observed release rate; before any release is seen, assume
        each slot frees up once every ten minutes."""
        rate = self.per_second() or max(pool_size, 1) / 600.0
        return int(position / rate * 1000)


@dataclass(frozen=True)
class _Lease:
    slot_id: UUID
    bot_id: str


_ACTIVE = frozenset({DeploymentStatus.QUEUED, DeploymentStatus.IN_PROGRESS})


class SlotDeployer:
    """Drives Coolify from the ledger; every decision is an event first."""

    def __init__(
        self,
        ledger: SlotLedger,
        coolify: Coolify,
        template: SlotTemplate,
        permits: DeployPermits,
        *,
        queue_timeout_s: float = QueueEntry.DEFAULT_TIMEOUT_S,
        poll_s: float = 1.0,
        ready_timeout_s: float = 900.0,
        status_grace_s: float = 90.0,
        start_attempts: int = 3,
        workers: int = 16,
        actor: str = "worker",
    ) -> None:
        self.ledger = ledger
        self.coolify = coolify
        self.template = template
        self.permits = permits
        self.queue_timeout_s = queue_timeout_s
        self.poll_s = poll_s
        self.ready_timeout_s = ready_timeout_s
        self.status_grace_s = status_grace_s
        self.start_attempts = start_attempts
        self.actor = actor
        self.releases = ReleaseRate()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deploy")
        self._tasks: set[Future[None]] = set()
        self._tasks_lock = threading.Lock()
        self.failed_deploys = 0
        """Deploys that ended with the slot failed, for ``/metrics`` and ``/readyz``."""

    # --- requests ----------------------------------------------------------------------

    def request(
        self,
        bot_id: str,
        *,
        platform: str | None = None,
        priority: int = 0,
        queue_timeout_s: float | None = None,
        config: dict[str, str] | None = None,
        ctx: Context | None = None,
        idempotency_key: str | None = None,
    ) -> Acquired | Queued:
        """A slot for a bot: idle, else new while under max size, else a queue entry.
        Requests never overtake waiting ones of the same platform.

        Repeating a request is safe: a bot that already holds a slot or waits in the
        queue gets that slot or that entry, and nothing is written. An
        ``idempotency_key`` names the request (it becomes the correlation id): the same
        key with a different request for the bot is :class:`IdempotencyKeyReused`."""
        config = config or {}
        ctx = self.ledger.ensure_context(ctx, "api")
        if idempotency_key is not None:
            request: dict[str, Any] = {
                "bot_id": bot_id,
                "platform": platform,
                "priority": priority,
                "queue_timeout_s": queue_timeout_s,
                "config": config,
            }
            ctx = ctx.under(keyed_correlation_id(idempotency_key, request))

        def attempt(_: Attempt) -> Acquired | Queued:
            held = self._held(bot_id, existing=True)
            if held is not None:
                if idempotency_key is not None:
                    self._check_key(held, bot_id, ctx.correlation_id)
                return held
            try:
                return self._new_request(
                    bot_id,
                    platform or self.ledger.default_platform,
                    priority,
                    queue_timeout_s or self.queue_timeout_s,
                    config,
                    ctx,
                )
            except (BotAlreadyHoldsSlot, BotAlreadyQueued):
                # A concurrent request of this bot came first: answer with its result.
                raise LostRace(f"bot {bot_id!r} asked twice at once") from None

        return self.ledger.uow.retrying(f"request of bot {bot_id!r}", attempt)

    def _new_request(
        self,
        bot_id: str,
        platform: str,
        priority: int,
        queue_timeout_s: float,
        config: dict[str, str],
        ctx: Context,
    ) -> Acquired | Queued:
        if not self._queue_ahead(platform):
            try:
                outcome = self._take_slot(bot_id, platform, ctx)
            except (NoIdleSlot, PoolFull):
                pass
            else:
                task = self.start_in_background(outcome.slot, bot_id, config, ctx)
                return Acquired(outcome.slot, outcome.position, task)
        entry = self.ledger.enqueue(
            bot_id,
            platform=platform,
            priority=priority,
            timeout_s=queue_timeout_s,
            config=config,
            ctx=ctx,
        )
        return self._after_enqueue(entry)

    def _after_enqueue(self, entry: QueueEntry) -> Acquired | Queued:
        """The answer once the entry is written, which must not be an error: the entry
        stands and may be dispatched any moment, here or by another process. A slot may
        have freed up meanwhile, so this entry is offered to it first. What cannot be
        read now is left out of the answer (position 0); repeating the request reads it."""
        try:
            mine = self.drain().get(entry.id)
            if mine is not None:
                return mine
            return self._held(entry.bot_id, existing=False) or Queued(entry, 0, 0)
        except Exception as e:  # the commit stands whatever failed after it
            log_failure(log, f"placing queued bot {entry.bot_id!r}", e, "answered unplaced")
            return Queued(entry, 0, 0)

    def _held(self, bot_id: str, *, existing: bool) -> Acquired | Queued | None:
        """The answer from what the bot holds now (see ``SlotLedger.holding``), or None
        when it holds nothing. An entry dispatched between the reads is read again."""

        def attempt(_: Attempt) -> Acquired | Queued | None:
            held = self.ledger.holding(bot_id)
            if held is None:
                return None
            head = self.ledger.recorder.max_notification_id() or 0
            if isinstance(held, SlotRow):
                return Acquired(self.ledger.get_slot(held.slot_id), head, existing=existing)
            try:
                return self.queued(self.ledger.repository.get(held.entry_id), head)
            except BotNotFound:
                raise LostRace(f"the entry of bot {bot_id!r} left the queue") from None

        return self.ledger.uow.retrying(f"answer for bot {bot_id!r}", attempt)

    def _check_key(self, held: Acquired | Queued, bot_id: str, cid: str) -> None:
        """Refuse a key that made the bot's slot or entry for a different request."""
        if isinstance(held, Queued):
            made_by: str | None = held.entry.correlation_id
        else:
            made_by = self.ledger.lease_correlation_id(held.slot.id)
        if made_by is not None and made_by[:KEY_DIGITS] == cid[:KEY_DIGITS] and made_by != cid:
            raise IdempotencyKeyReused(
                f"this Idempotency-Key was used for bot {bot_id!r} with a different request"
            )

    def queued(self, entry: QueueEntry, log_position: int = 0) -> Queued:
        """The entry's place in the queue; :class:`BotNotFound` once it left the queue."""
        position = self.ledger.queue_position(entry.bot_id)
        wait = self.releases.estimated_wait_ms(position, len(self.ledger.slots()))
        return Queued(entry, position, wait, log_position)

    def _queue_ahead(self, platform: str) -> bool:
        return any(r.platform in (None, platform) for r in self.ledger.waiting())

    def _take_slot(self, bot_id: str, platform: str, ctx: Context) -> Outcome:
        try:
            return self.ledger.acquire(bot_id, platform=platform, ctx=ctx)
        except NoIdleSlot:
            return self.ledger.provision(platform, acquire_for=bot_id, ctx=ctx)

    def release(self, bot_id: str, *, ctx: Context | None = None) -> Outcome | QueueEntry:
        """End what the bot holds at this moment (``SlotLedger.release_or_cancel``):
        stop its container and release its slot, or cancel its queue entry. A failed
        stop leaves the slot in ``error`` with Coolify's reason."""
        ctx = self.ledger.ensure_context(ctx, "api")

        def stop_container(row: SlotRow) -> Outcome | None:
            if row.coolify_uuid is None:
                return None
            try:
                self.coolify.stop(row.coolify_uuid)
            except CoolifyNotFound:
                pass  # nothing left to stop; the next deploy recreates the application
            except CoolifyError as e:
                return self.ledger.fail(
                    row.slot_id,
                    f"stop failed: {e}",
                    reason_code="stop_failed",
                    ctx=ctx.acting_as(self.actor),
                )
            return None

        result = self.ledger.release_or_cancel(bot_id, before_release=stop_container, ctx=ctx)
        if isinstance(result, Outcome) and result.slot.status is SlotStatus.IDLE:
            self.releases.record()
            try:
                self.drain()
            except Exception:  # the release is committed; the periodic drain will run
                log.warning("drain after the release of bot %r failed", bot_id, exc_info=True)
        return result

    def drain(self) -> dict[UUID, Acquired]:
        """Give free capacity to waiting requests, as many as it allows; returns what
        each dispatched queue entry got. Each deploy carries its request's correlation id."""
        ctx = self.ledger.context(self.actor)
        dispatched = self.ledger.dispatch_waiting(ctx=ctx)
        return {
            entry.id: Acquired(
                outcome.slot,
                outcome.position,
                self.start_in_background(
                    outcome.slot, entry.bot_id, entry.config, ctx.under(entry.correlation_id)
                ),
            )
            for entry, outcome in dispatched
        }

    # --- configure and start -----------------------------------------------------------

    def start_in_background(
        self, slot: Slot, bot_id: str, config: dict[str, str], ctx: Context
    ) -> Future[None]:
        task = self._executor.submit(
            self.configure_and_start, slot.id, slot.lease, bot_id, config, ctx
        )
        with self._tasks_lock:
            self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: Future[None]) -> None:
        with self._tasks_lock:
            self._tasks.discard(task)

    def running_deploys(self) -> int:
        """Deploys in flight now (their health, with ``failed_deploys``)."""
        with self._tasks_lock:
            return len(self._tasks)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for background deploys (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._tasks_lock:
                pending = list(self._tasks)
            if not pending:
                return
            pending[0].result(timeout=max(0.0, deadline - time.monotonic()))

    def configure_and_start(
        self, slot_id: UUID, lease: int, bot_id: str, config: dict[str, str], request: Context
    ) -> None:
        """The deploying phase of one lease, carried on by the worker under the request's
        correlation id; never raises (outcomes are events)."""
        ctx = request.acting_as(self.actor)
        try:
            with self.permits.hold(self.ready_timeout_s):
                app_uuid = self._prepare(slot_id, lease, bot_id, config, ctx)
                deployment_uuid = self._start(app_uuid)
                self.ledger.mark_deploying(slot_id, deployment_uuid, lease=lease, ctx=ctx)
                self._follow(deployment_uuid, app_uuid, _Lease(slot_id, bot_id))
                self.ledger.mark_started(slot_id, lease=lease, ctx=ctx)
        except Conflict as e:
            log.info("slot %s lease %d moved on during its deploy: %s", slot_id, lease, e)
        except DeployFailed as e:
            self._fail(slot_id, lease, e.detail, e.reason_code, ctx)
        except CoolifyError as e:
            self._fail(slot_id, lease, str(e), f"coolify_{e.status or 'unavailable'}", ctx)
        except Exception as e:
            if store_unavailable(e) is not None:
                log_failure(log, f"deploy of slot {slot_id} lease {lease}", e, _SETTLED_LATER)
                return
            log.exception("deploy of slot %s failed unexpectedly", slot_id)
            # A bug must not leave the slot deploying until the policy runs.
            self._fail(slot_id, lease, "internal error during deploy", "internal_error", ctx)

    def _fail(self, slot_id: UUID, lease: int, reason: str, code: str, ctx: Context) -> None:
        self.failed_deploys += 1
        try:
            self.ledger.fail(slot_id, reason, reason_code=code, lease=lease, ctx=ctx)
        except Conflict as e:
            log.info("slot %s lease %d already moved on; not failing it: %s", slot_id, lease, e)
        except Exception as e:
            if store_unavailable(e) is None:
                raise
            what = f"recording the failed deploy of slot {slot_id} lease {lease}"
            log_failure(log, what, e, _SETTLED_LATER)

    def _prepare(
        self, slot_id: UUID, lease: int, bot_id: str, config: dict[str, str], ctx: Context
    ) -> str:
        """The slot's application, existing and configured for this bot."""
        slot = self.ledger.get_slot(slot_id)
        slot.check_lease(lease)
        envs = [
            EnvVar(key=key, value=value)
            for key, value in {
                **config,
                "SLOTLEDGER_BOT_ID": bot_id,
                "SLOTLEDGER_SLOT_ID": str(slot_id),
                "SLOTLEDGER_LEASE": str(lease),
            }.items()
        ]
        app_uuid = slot.coolify_uuid or self._create_app(slot, lease, ctx)
        try:
            self.coolify.update_envs_bulk(app_uuid, envs)
        except CoolifyNotFound:
            log.warning("slot %s: application %s vanished; recreating it", slot.name, app_uuid)
            app_uuid = self._create_app(slot, lease, ctx)
            self.coolify.update_envs_bulk(app_uuid, envs)
        return app_uuid

    def _create_app(self, slot: Slot, lease: int, ctx: Context) -> str:
        t = self.template
        created = self.coolify.create_dockerimage_application(
            CreateDockerImageApp(
                project_uuid=t.project_uuid,
                server_uuid=t.server_uuid,
                environment_name=t.environment_name,
                docker_registry_image_name=t.image,
                docker_registry_image_tag=t.image_tag,
                name=slot.name,
                description="[DEPLOYING] Provisioning slot...",
                instant_deploy=False,
            )
        )
        self.ledger.app_created(slot.id, created.uuid, lease=lease, ctx=ctx)
        return created.uuid

    def _start(self, app_uuid: str) -> str:
        """Start and return a deployment uuid that exists (API.md §5: a 200 without one
        means one is already queued; one that 404s means Coolify's queue was full)."""
        for attempt in range(self.start_attempts):
            result = self.coolify.start(app_uuid)
            deployment_uuid = result.deployment_uuid or self._active_deployment(app_uuid)
            if deployment_uuid is not None:
                try:
                    self.coolify.get_deployment(deployment_uuid)
                except CoolifyNotFound:
                    log.warning(
                        "deployment %s does not exist: Coolify's queue is full", deployment_uuid
                    )
                else:
                    return deployment_uuid
            time.sleep(self.poll_s * (attempt + 1))
        raise DeployFailed(
            f"Coolify queued no deployment after {self.start_attempts} start requests "
            "(deployment queue full)",
            "coolify_queue_full",
        )

    def _active_deployment(self, app_uuid: str) -> str | None:
        page = self.coolify.list_application_deployments(app_uuid, take=10)
        return next((d.deployment_uuid for d in page.deployments if d.status in _ACTIVE), None)

    def _follow(self, deployment_uuid: str, app_uuid: str, lease: _Lease) -> None:
        """Until the deployment finished and the container runs; Coolify's status lags,
        so an ``exited`` container is only believed after ``status_grace_s``. Stops as
        soon as the lease ends (the bot released, or a policy failed the slot)."""
        deadline = time.monotonic() + self.ready_timeout_s
        while True:
            deployment = self.coolify.get_deployment(deployment_uuid)
            if deployment.status is DeploymentStatus.FINISHED:
                break
            if deployment.status is DeploymentStatus.FAILED:
                raise DeployFailed(
                    f"Coolify deployment {deployment_uuid} failed", "deployment_failed"
                )
            if deployment.status is DeploymentStatus.CANCELLED_BY_USER:
                raise DeployFailed(
                    f"Coolify deployment {deployment_uuid} was cancelled", "deployment_cancelled"
                )
            self._pause(deadline, lease, f"deployment {deployment_uuid} still {deployment.status}")
        grace = time.monotonic() + self.status_grace_s
        while True:
            status = self.coolify.get_application(app_uuid).status
            if status.is_running:
                return
            if time.monotonic() > grace:
                raise DeployFailed(
                    f"container not running after deploy: {status}", "container_exited"
                )
            self._pause(deadline, lease, f"container {status}")

    def _pause(self, deadline: float, lease: _Lease, waiting_for: str) -> None:
        row = self.ledger.index.slot_row(lease.slot_id)
        if row is None or row.status is not SlotStatus.DEPLOYING or row.bot_id != lease.bot_id:
            raise StaleLease(f"slot {lease.slot_id} left bot {lease.bot_id!r}'s deploy")
        if time.monotonic() > deadline:
            raise DeployFailed(
                f"not ready after {self.ready_timeout_s:.0f}s: {waiting_for}", "ready_timeout"
            )
        time.sleep(self.poll_s)

    def close(self) -> None:
        self._executor.shutdown(wait=True, cancel_futures=False)


class CoolifySlotRuntime:
    """What the policies need of Coolify: stop a container, delete an application.
    Both treat "not found" as done, since the goal state already holds."""

    def __init__(self, coolify: Coolify) -> None:
        self.coolify = coolify

    def stop(self, coolify_uuid: str) -> None:
        try:
            self.coolify.stop(coolify_uuid)
        except CoolifyNotFound:
            log.info("application %s is gone; nothing to stop", coolify_uuid)

    def delete(self, coolify_uuid: str) -> None:
        try:
            self.coolify.delete_application(coolify_uuid)
        except CoolifyNotFound:
            log.info("application %s is gone; nothing to delete", coolify_uuid)
