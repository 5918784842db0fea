"""The deploy flow on Coolify: the seed's acquireOrCreateSlot, configureAndStartSlot and
releaseSlot, with every step recorded in the ledger before or after the Coolify call
(the Coolify side of each step: :mod:`ledger.application.containers`).

- ``request``: an idle slot, else a new slot while under the maximum size, else the queue.
  ``SlotAcquired`` is recorded before Coolify is called; the rest runs in the background.
- ``configure_and_start``: create the application if the slot has none (or recreate it if
  it vanished outside), make its env vars exactly this lease's configuration, start,
  record ``SlotDeploying`` with the deployment uuid, follow it to ``finished`` and a
  container Coolify saw running after it, then ``SlotStarted``. A failure ends in
  ``SlotFailed`` with its reason, and the bot's request is retried on another slot or put
  back at the head of the queue (``deploy_retries`` times). Each step carries the slot's
  lease, so a deploy that outlives its bot's release cannot touch the next lease.
- ``release``: ``SlotReleasing`` ends the bot's lease at once, without calling Coolify;
  in the background the lease's deployment is cancelled, the container stopped and
  awaited until Coolify reports it gone, the configuration deleted, then ``SlotReleased``
  and the freed slot goes to the queue. A container that does not go within
  ``stop_timeout_s`` fails the slot with the reason (the error-recovery policy takes it).

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
from dataclasses import dataclass, replace
from functools import partial
from typing import Any
from uuid import UUID

from ledger.application import Context, Outcome, SlotLedger
from ledger.application.containers import ATTEMPT_KEY, AppDriver, Closed, DeployFailed, Polling
from ledger.application.ports import Coolify, CreateDockerImageApp, SlotRow
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
    StaleLease,
    store_unavailable,
)
from ledger.loops import Backoff, log_failure

__all__ = [
    "Acquired",
    "CoolifySlotRuntime",
    "DeployFailed",
    "DeployPermits",
    "IdempotencyKeyReused",
    "LocalDeployPermits",
    "Polling",
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


_LEFT = (
    "the slot stays releasing until the stale-releasing policy fails it for recovery,"
    " which stops its container"
)
"""What becomes of a release whose process stopped or whose store failed before the
container was gone."""


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


_HIGHEST_PRIORITY = -1000
"""The lowest priority value a queue entry takes: the first served."""


@dataclass(frozen=True)
class _Request:
    """A bot's request as a deploy carries it, so that a failed deploy can be retried."""

    bot_id: str
    platform: str | None
    priority: int
    queue_timeout_s: float
    config: dict[str, str]
    attempt: int = 0
    """Deploys of this request that failed before this one; through the queue it rides
    in the entry's configuration (:data:`ATTEMPT_KEY`), so whichever process dispatches
    the retry knows it."""

    @classmethod
    def of_entry(cls, entry: QueueEntry, queue_timeout_s: float) -> _Request:
        config = dict(entry.config)
        attempt = config.pop(ATTEMPT_KEY, "0")
        return cls(
            entry.bot_id,
            entry.platform,
            entry.priority,
            queue_timeout_s,
            config,
            int(attempt) if attempt.isdigit() else 0,
        )

    def again(self) -> _Request:
        return replace(self, attempt=self.attempt + 1)

    def env(self, slot_id: UUID, lease: int) -> dict[str, str]:
        """The container's environment: the bot's configuration, then the ledger's keys."""
        return {
            **self.config,
            "SLOTLEDGER_BOT_ID": self.bot_id,
            "SLOTLEDGER_SLOT_ID": str(slot_id),
            "SLOTLEDGER_LEASE": str(lease),
            ATTEMPT_KEY: str(self.attempt),
        }

    def queued_config(self) -> dict[str, str]:
        return {**self.config, ATTEMPT_KEY: str(self.attempt)}


@dataclass(frozen=True)
class _Lease:
    slot_id: UUID
    lease: int
    bot_id: str


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
        polling: Polling | None = None,
        ready_timeout_s: float = 900.0,
        exited_grace_s: float = 120.0,
        stop_timeout_s: float = 180.0,
        status_lag_s: float = 60.0,
        deploy_retries: int = 1,
        workers: int = 16,
        actor: str = "worker",
    ) -> None:
        self.ledger = ledger
        self.coolify = coolify
        self.template = template
        self.permits = permits
        self.queue_timeout_s = queue_timeout_s
        self.ready_timeout_s = ready_timeout_s
        self.exited_grace_s = exited_grace_s
        self.deploy_retries = deploy_retries
        self.actor = actor
        self.app = AppDriver(
            coolify, polling, stop_timeout_s=stop_timeout_s, status_lag_s=status_lag_s
        )
        self.releases = ReleaseRate()
        self._executor = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="deploy")
        self._tasks: set[Future[None]] = set()
        self._tasks_lock = threading.Lock()
        self._turns: dict[UUID, threading.Lock] = {}
        self._turns_lock = threading.Lock()
        self._draining = threading.Lock()
        """Drains of this process take turns: run together they would all try the same
        head entry, and all but one would lose the race and decide again."""
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
        config = {k: v for k, v in (config or {}).items() if k != ATTEMPT_KEY}
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
        wanted = _Request(
            bot_id,
            platform or self.ledger.default_platform,
            priority,
            queue_timeout_s or self.queue_timeout_s,
            config,
        )

        def attempt(_: Attempt) -> Acquired | Queued:
            held = self._held(bot_id, existing=True)
            if held is not None:
                if idempotency_key is not None:
                    self._check_key(held, bot_id, ctx.correlation_id)
                return held
            try:
                return self._new_request(wanted, ctx)
            except (BotAlreadyHoldsSlot, BotAlreadyQueued):
                # A concurrent request of this bot came first: answer with its result.
                raise LostRace(f"bot {bot_id!r} asked twice at once") from None

        return self.ledger.uow.retrying(f"request of bot {bot_id!r}", attempt)

    def _new_request(self, wanted: _Request, ctx: Context) -> Acquired | Queued:
        if not self._queue_ahead(wanted.platform):
            try:
                outcome = self._take_slot(wanted, ctx)
            except (NoIdleSlot, PoolFull):
                pass
            else:
                task = self.start_in_background(outcome.slot, wanted, ctx)
                return Acquired(outcome.slot, outcome.position, task)
        entry = self._enqueue(wanted, wanted.priority, ctx)
        return self._after_enqueue(entry)

    def _enqueue(self, wanted: _Request, priority: int, ctx: Context) -> QueueEntry:
        return self.ledger.enqueue(
            wanted.bot_id,
            platform=wanted.platform,
            priority=priority,
            timeout_s=wanted.queue_timeout_s,
            config=wanted.queued_config() if wanted.attempt else wanted.config,
            ctx=ctx,
        )

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
                return Acquired(self.ledger.slot_of(held), head, existing=existing)
            try:
                return self.queued(self.ledger.entry_of(held), head)
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

    def _queue_ahead(self, platform: str | None) -> bool:
        return any(r.platform in (None, platform) for r in self.ledger.waiting())

    def _take_slot(self, wanted: _Request, ctx: Context) -> Outcome:
        try:
            return self.ledger.acquire(wanted.bot_id, platform=wanted.platform, ctx=ctx)
        except NoIdleSlot:
            return self.ledger.provision(
                wanted.platform or self.ledger.default_platform,
                acquire_for=wanted.bot_id,
                ctx=ctx,
            )

    def drain(self) -> dict[UUID, Acquired]:
        """Give free capacity to waiting requests, as many as it allows; returns what
        each dispatched queue entry got. Each deploy carries its request's correlation id."""
        ctx = self.ledger.context(self.actor)
        with self._draining:
            dispatched = self.ledger.dispatch_waiting(ctx=ctx)
        return {
            entry.id: Acquired(
                outcome.slot,
                outcome.position,
                self.start_in_background(
                    outcome.slot,
                    _Request.of_entry(entry, self.queue_timeout_s),
                    ctx.under(entry.correlation_id),
                ),
            )
            for entry, outcome in dispatched
        }

    # --- release -------------------------------------------------------------------------

    def release(self, bot_id: str, *, ctx: Context | None = None) -> Outcome | QueueEntry:
        """End what the bot holds at this moment (``SlotLedger.release_or_cancel``):
        cancel its queue entry, or end its lease (``SlotReleasing``) and clear its slot
        in the background. Answers without calling Coolify."""
        ctx = self.ledger.ensure_context(ctx, "api")
        result = self.ledger.release_or_cancel(bot_id, staged=True, ctx=ctx)
        if isinstance(result, Outcome):
            slot = result.slot
            self._submit(self.finish_release, slot, bot_id, ctx.acting_as(self.actor))
        return result

    def finish_release(self, slot: Slot, bot_id: str, ctx: Context) -> None:
        """The second step of a release: the container gone and the configuration
        deleted, then ``SlotReleased`` and the queue drained; a container that does not
        go fails the slot with the reason. An outage of the store is waited out (each
        step is idempotent, the outcome fenced by the lease) until the stop timeout,
        past which the stale-releasing policy settles it. Never raises."""
        backoff = Backoff(min_s=0.5, max_s=10.0)
        deadline = time.monotonic() + self.app.stop_timeout_s
        while not self._release_once(slot, bot_id, ctx):
            if time.monotonic() >= deadline:
                log.warning("release of slot %s lease %d: %s", slot.name, slot.lease, _LEFT)
                return
            try:
                self.app.pause(backoff.next())
            except Closed:
                log.info("slot %s lease %d: %s", slot.name, slot.lease, _LEFT)
                return

    def _release_once(self, slot: Slot, bot_id: str, ctx: Context) -> bool:
        """One try at the second step; False when the store failed and it is worth
        another."""
        lease = _Lease(slot.id, slot.lease, bot_id)
        try:
            with self._turn(slot.id):
                app_uuid = self.ledger.current_slot(slot.id).coolify_uuid  # its deploy may add one
                if app_uuid is not None:
                    self.app.clear(app_uuid, in_flight=slot.status is SlotStatus.DEPLOYING)
                self.ledger.complete_release(slot.id, bot_id, lease=slot.lease, ctx=ctx)
        except Conflict as e:
            log.info(
                "slot %s lease %d settled elsewhere during its release: %s",
                slot.name,
                slot.lease,
                e,
            )
            return True
        except (DeployFailed, CoolifyError) as e:
            code = e.reason_code if isinstance(e, DeployFailed) else "stop_failed"
            fail = partial(self.ledger.fail_release, slot.id, f"release: {e.detail}")
            self._settle(partial(fail, reason_code=code, lease=slot.lease, ctx=ctx), lease, _LEFT)
            return True
        except Closed:
            log.info("slot %s lease %d: %s", slot.name, slot.lease, _LEFT)
            return True
        except Exception as e:
            if store_unavailable(e) is None:
                log.exception("release of slot %s failed unexpectedly", slot.name)
                return True
            log_failure(log, f"release of slot {slot.name} lease {slot.lease}", e, "retrying")
            return False
        self.releases.record()
        try:
            self.drain()
        except Exception:  # the release is committed; the periodic drain will run
            log.warning("drain after the release of bot %r failed", bot_id, exc_info=True)
        return True

    # --- configure and start -----------------------------------------------------------

    def start_in_background(self, slot: Slot, wanted: _Request, ctx: Context) -> Future[None]:
        return self._submit(self.configure_and_start, slot.id, slot.lease, wanted, ctx)

    def _submit(self, work: Callable[..., None], *args: Any) -> Future[None]:
        task = self._executor.submit(work, *args)
        with self._tasks_lock:
            self._tasks.add(task)
        task.add_done_callback(self._forget)
        return task

    def _forget(self, task: Future[None]) -> None:
        with self._tasks_lock:
            self._tasks.discard(task)

    def running_deploys(self) -> int:
        """Deploys and releases in flight now (their health, with ``failed_deploys``)."""
        with self._tasks_lock:
            return len(self._tasks)

    def wait_idle(self, timeout: float = 60.0) -> None:
        """Wait for background deploys and releases (tests, shutdown)."""
        deadline = time.monotonic() + timeout
        while True:
            with self._tasks_lock:
                pending = list(self._tasks)
            if not pending:
                return
            pending[0].result(timeout=max(0.0, deadline - time.monotonic()))

    def configure_and_start(
        self, slot_id: UUID, lease: int, wanted: _Request, request: Context
    ) -> None:
        """The deploying phase of one lease, carried on by the worker under the request's
        correlation id; never raises (outcomes are events)."""
        ctx = request.acting_as(self.actor)
        mine = _Lease(slot_id, lease, wanted.bot_id)
        try:
            with self.permits.hold(self.ready_timeout_s):
                deadline = time.monotonic() + self.ready_timeout_s
                with self._turn(slot_id):
                    self._check(mine)  # a release may have had its turn first
                    app_uuid = self._prepare(mine, wanted, deadline, ctx)
                    self._check(mine)
                    deployment_uuid = self.app.start(app_uuid, deadline)
                    self._record_deploying(mine, deployment_uuid, deadline, ctx)
                guard = partial(self._check, mine)
                finished = self.app.wait_finished(deployment_uuid, deadline, guard)
                self.app.wait_running(app_uuid, finished, deadline, self.exited_grace_s, guard)
                self.ledger.mark_started(slot_id, lease=lease, ctx=ctx)
        except Conflict as e:
            log.info("slot %s lease %d moved on during its deploy: %s", slot_id, lease, e)
        except Closed:
            log.info("slot %s lease %d: deploy interrupted; %s", slot_id, lease, _SETTLED_LATER)
        except DeployFailed as e:
            self._failed(mine, wanted, e.detail, e.reason_code, ctx)
        except CoolifyError as e:
            self._failed(mine, wanted, str(e), f"coolify_{e.status or 'unavailable'}", ctx)
        except Exception as e:
            if store_unavailable(e) is not None:
                log_failure(log, f"deploy of slot {slot_id} lease {lease}", e, _SETTLED_LATER)
                return
            log.exception("deploy of slot %s failed unexpectedly", slot_id)
            # A bug must not leave the slot deploying until the policy runs.
            self._failed(mine, wanted, "internal error during deploy", "internal_error", ctx)

    @contextmanager
    def _turn(self, slot_id: UUID) -> Iterator[None]:
        """One slot's Coolify steps that must not interleave in this process: a deploy's
        configuration and start (until its deployment is recorded) and a release's
        clearing. A release that meets a deploy starting then finds either its
        deployment recorded (and cancels it) or a deploy that stopped at the lease check;
        never configuration written after it deleted the configuration."""
        with self._turns_lock:
            turn = self._turns.setdefault(slot_id, threading.Lock())
        with turn:
            yield

    def _record_deploying(
        self, mine: _Lease, deployment_uuid: str, deadline: float, ctx: Context
    ) -> None:
        """A lease that ended before its deployment was recorded cancels that deployment
        itself: its release may have looked for deployments before this one existed."""
        try:
            self.ledger.mark_deploying(mine.slot_id, deployment_uuid, lease=mine.lease, ctx=ctx)
        except Conflict:
            self.app.cancel(deployment_uuid, deadline)
            raise

    def _check(self, mine: _Lease) -> None:
        """The lease still deploys for its bot (an index read: cheap, before every poll)."""
        row = self.ledger.index.slot_row(mine.slot_id)
        if row is None or row.status is not SlotStatus.DEPLOYING or row.bot_id != mine.bot_id:
            raise StaleLease(f"slot {mine.slot_id} left bot {mine.bot_id!r}'s deploy")

    def _failed(self, mine: _Lease, wanted: _Request, reason: str, code: str, ctx: Context) -> None:
        """Fail the slot (while the bot still holds it), then retry the bot's request."""
        self.failed_deploys += 1
        recorded = self._settle(
            lambda: self.ledger.fail(
                mine.slot_id,
                reason,
                reason_code=code,
                lease=mine.lease,
                holder=mine.bot_id,
                ctx=ctx,
            ),
            mine,
            _SETTLED_LATER,
        )
        if recorded:
            self._settle(
                lambda: self._retry(wanted, reason, ctx), mine, "the request is not retried"
            )

    def _retry(self, wanted: _Request, reason: str, ctx: Context) -> None:
        """Another slot for a request whose deploy failed, within ``deploy_retries``: a
        free one now, else a place at the head of the queue (ahead of every waiting
        entry: the request was served once already). Past the bound it failed for good,
        and the bot's status shows the reason."""
        if wanted.attempt >= self.deploy_retries:
            log.info(
                "bot %r: deploy failed %d times; not retried: %s",
                wanted.bot_id,
                wanted.attempt + 1,
                reason,
            )
            return
        again = wanted.again()
        try:
            try:
                outcome = self._take_slot(again, ctx)
            except (NoIdleSlot, PoolFull):
                head = min((r.priority for r in self.ledger.waiting()), default=again.priority)
                priority = max(min(head - 1, again.priority), _HIGHEST_PRIORITY)
                self._after_enqueue(self._enqueue(again, priority, ctx))
            else:
                self.start_in_background(outcome.slot, again, ctx)
        except (BotAlreadyHoldsSlot, BotAlreadyQueued):
            log.info("bot %r asked again meanwhile; its new request stands", wanted.bot_id)

    def _settle(self, write: Callable[[], object], mine: _Lease, otherwise: str) -> bool:
        """Record an outcome; one the slot moved past, or that the store could not take
        (the lifecycle's rules settle it later), is logged. True when recorded."""
        try:
            write()
        except Conflict as e:
            log.info("slot %s lease %d already moved on: %s", mine.slot_id, mine.lease, e)
        except Exception as e:
            if store_unavailable(e) is None:
                raise
            what = f"recording an outcome of slot {mine.slot_id} lease {mine.lease}"
            log_failure(log, what, e, otherwise)
        else:
            return True
        return False

    def _prepare(self, mine: _Lease, wanted: _Request, deadline: float, ctx: Context) -> str:
        """The slot's application, existing and configured for this lease only."""
        slot = self.ledger.current_slot(mine.slot_id)
        slot.check_lease(mine.lease)
        env = wanted.env(slot.id, slot.lease)
        app_uuid = slot.coolify_uuid or self._create_app(slot, ctx)
        try:
            self.app.configure(app_uuid, env, deadline)
        except CoolifyNotFound:
            log.warning("slot %s: application %s vanished; recreating it", slot.name, app_uuid)
            app_uuid = self._create_app(slot, ctx)
            self.app.configure(app_uuid, env, deadline)
        return app_uuid

    def _create_app(self, slot: Slot, ctx: Context) -> str:
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
        self.ledger.app_created(slot.id, created.uuid, lease=slot.lease, ctx=ctx)
        return created.uuid

    def close(self) -> None:
        """Stop: waits in progress end at once, and the policies settle their slots."""
        self.app.closing.set()
        self._executor.shutdown(wait=True, cancel_futures=False)


class CoolifySlotRuntime:
    """What the policies need of Coolify: clear a slot's container (cancel, stop, wait
    until it is gone, delete its configuration) and delete an application. Both treat
    "not found" as done, since the goal state already holds."""

    def __init__(self, coolify: Coolify, driver: AppDriver | None = None) -> None:
        self.coolify = coolify
        self.driver = driver or AppDriver(coolify)

    def stop(self, coolify_uuid: str) -> None:
        self.driver.clear(coolify_uuid)

    def delete(self, coolify_uuid: str) -> None:
        try:
            self.coolify.delete_application(coolify_uuid)
        except CoolifyNotFound:
            log.info("application %s is gone; nothing to delete", coolify_uuid)
