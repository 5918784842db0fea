"""The composition root of a running slotledger process (``slotledger serve``).

:class:`Service` turns settings into the parts a long-running process needs and runs
their threads between :meth:`Service.start` and :meth:`Service.stop`:

- the ledger (write side) and the read models with their live follower;
- the Coolify client (its responses feed the metrics), the deployer, the description
  mirror;
- the policy worker, in-process on the embedded SQLite store (one process, always the
  leader) and in the demo; on PostgreSQL, ``slotledger worker`` processes run it with
  leader election (``worker=True`` runs one here too, as a candidate);
- a periodic queue drain, because capacity also frees up outside this process's own
  releases (recovered slots, other processes);
- the transition log, whose listener feeds the deploying-time histogram;
- with a :class:`~ledger.demo.Demo`: the fake Coolify in-process, a small pool and
  simulated bots, so a newcomer's dashboard moves.

Parts are started in dependency order and stopped in reverse, also when a start fails
half-way, so a failed start leaves no threads behind.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Self

from ledger.application import SlotLedger
from ledger.bootstrap import build_coolify, build_ledger, build_permits, follower_env, slot_template
from ledger.coolify import CoolifyClient
from ledger.coolify.fake import FakeCoolifyServer
from ledger.demo import Demo, SimulatedBots
from ledger.deploy import CoolifySlotRuntime, SlotDeployer
from ledger.descriptions import DescriptionMirror
from ledger.domain import SlotStatus
from ledger.errors import SlotLedgerError
from ledger.logs import TransitionLog
from ledger.metrics import Gauges, Metrics
from ledger.settings import Settings, SQLiteStore
from ledger.worker import Worker, election_for
from projections import Lag, ReadModels, ReadModelTimeout, build_follower, build_read_models
from projections.follower import Follower

__all__ = ["NotStarted", "Periodic", "Readiness", "Service", "lag_seconds"]

log = logging.getLogger("ledger.service")


class NotStarted(SlotLedgerError):
    """A part that only exists while the service runs was asked for before start."""

    code = "not_started"
    http_status = 503


class Periodic:
    """Runs ``action`` every ``interval_s`` in a daemon thread; an error is logged and
    the next round still runs, because a background duty that dies silently is worse
    than one that complains every round."""

    def __init__(self, name: str, action: Callable[[], object], interval_s: float) -> None:
        self.name = name
        self.action = action
        self.interval_s = interval_s
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            try:
                self.action()
            except Exception:
                log.exception("%s failed; retrying in %.1fs", self.name, self.interval_s)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


def lag_seconds(lag: Lag) -> float:
    """How late the read models are, in seconds: 0 when caught up, else the age of the
    newest projected event (an upper bound). ``Lag.seconds`` alone grows while the log
    is quiet, which is not lag."""
    return 0.0 if lag.behind == 0 else lag.seconds or 0.0


@dataclass(frozen=True)
class Readiness:
    """Whether the service can answer correctly now, and if not, why."""

    ready: bool
    problems: list[str] = field(default_factory=list)
    lag: Lag | None = None


class Service:
    """Everything one ``slotledger serve`` process runs."""

    MAX_BEHIND_EVENTS = 1000
    """Readiness fails when the read models are further behind than this..."""
    MAX_HEARTBEAT_AGE_S = 15.0
    """...or when their follower has not looked at the log for this long while they are
    more than ``CURRENT_EVENTS`` behind."""
    CURRENT_EVENTS = 10

    def __init__(
        self,
        settings: Settings,
        *,
        demo: Demo | None = None,
        worker: bool | None = None,
        deploy_poll_s: float = 1.0,
        status_grace_s: float = 90.0,
        drain_interval_s: float = 1.0,
    ) -> None:
        self.demo = demo
        self.settings = demo.configure(settings) if demo else settings
        embedded = isinstance(self.settings.store, SQLiteStore)
        self.run_worker = (embedded or demo is not None) if worker is None else worker
        self.deploy_poll_s = deploy_poll_s
        self.status_grace_s = status_grace_s
        self.drain_interval_s = drain_interval_s
        self.metrics = Metrics()
        self.ledger: SlotLedger = build_ledger(self.settings)
        # Many API requests at once: their acquires and releases share transactions.
        self.ledger.enable_group_commit()
        self.models: ReadModels = build_read_models(self.settings, self.ledger)
        self.follower: Follower = build_follower(self.models)
        self.transitions = TransitionLog(
            self.ledger, [self.metrics.transition], active=lambda: self.follower.is_leader
        )
        self.metrics.watch(self.gauges)
        self.fake: FakeCoolifyServer | None = None
        self._deployer: SlotDeployer | None = None
        self._stops: list[Callable[[], None]] = []
        self._lock = threading.Lock()
        self.started = False
        self._closed = False

    # --- life cycle ----------------------------------------------------------------------

    def start(self) -> None:
        """Start every part; idempotent. On failure, what started is stopped again."""
        with self._lock:
            if self.started:
                return
            if self._closed:
                raise NotStarted("a stopped service cannot start again: build a new one")
            try:
                self._start()
            except BaseException:
                self._stop_parts()
                self._deployer = None
                raise
            self.started = True
        log.info("service started: store %s", self.settings.store.redacted())

    def _start(self) -> None:
        settings = self.settings
        if self.demo is not None:
            self.fake = FakeCoolifyServer(self.demo.fake_settings())
            self.fake.start()
            self._stops.append(self.fake.stop)
            settings = self.demo.point_at(settings, self.fake)
        coolify = build_coolify(settings, on_response=self.metrics.coolify_response)
        self._stops.append(coolify.close)
        deployer = self._build_deployer(settings, coolify)
        self._stops.append(deployer.close)
        self._deployer = deployer

        self.follower.start()
        self._stops.append(self.follower.stop)
        self.transitions.start_at()
        self._every("transition-log", self.transitions.catch_up, 0.2)
        mirror = DescriptionMirror(
            self.ledger, coolify, follower_env(settings.store, DescriptionMirror.NAME, settings)
        )
        mirror.start()
        self._stops.append(mirror.stop)
        if self.run_worker:
            self._start_worker(settings, coolify)
        self._every("queue-drain", deployer.drain, self.drain_interval_s)
        if self.demo is not None and self.fake is not None:
            self._start_demo(self.demo, self.fake, deployer)

    def _start_demo(self, demo: Demo, fake: FakeCoolifyServer, deployer: SlotDeployer) -> None:
        demo.prepare(self.ledger, deployer)
        if demo.bots:
            bots = SimulatedBots(self.ledger, deployer, demo, fake.fake)
            bots.start()
            self._stops.append(bots.stop)

    def _build_deployer(self, settings: Settings, coolify: CoolifyClient) -> SlotDeployer:
        return SlotDeployer(
            self.ledger,
            coolify,
            slot_template(settings),
            build_permits(settings),
            queue_timeout_s=settings.queue_timeout_s,
            poll_s=self.deploy_poll_s,
            status_grace_s=self.status_grace_s,
        )

    def _start_worker(self, settings: Settings, coolify: CoolifyClient) -> None:
        worker = Worker(settings, self.ledger, CoolifySlotRuntime(coolify), election_for(settings))
        stop = threading.Event()
        thread = threading.Thread(
            target=worker.run, args=(stop,), name="policy-worker", daemon=True
        )
        thread.start()

        def stop_worker() -> None:
            stop.set()
            thread.join(timeout=10)

        self._stops.append(stop_worker)

    def _every(self, name: str, action: Callable[[], object], interval_s: float) -> None:
        periodic = Periodic(name, action, interval_s)
        periodic.start()
        self._stops.append(periodic.stop)

    def stop(self) -> None:
        """Stop every part, newest first, then close the stores. The service cannot be
        started again: build a new one."""
        with self._lock:
            if self._closed:
                return
            self._stop_parts()
            self.started, self._closed = False, True
            self._deployer = None
            self.models.close()
            self.ledger.close()
        log.info("service stopped")

    def _stop_parts(self) -> None:
        while self._stops:
            stop = self._stops.pop()
            try:
                stop()
            except Exception:
                log.exception("stopping %r failed", stop)

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- what the surfaces use -----------------------------------------------------------

    @property
    def deployer(self) -> SlotDeployer:
        if self._deployer is None:
            raise NotStarted("the service is not running: deployments are unavailable")
        return self._deployer

    def settle(self, position: int | None = None, timeout: float = 2.0) -> None:
        """Wait until the read models include a write (its position, or by default the
        log's head, which includes every write made so far), so a client that acted
        reads its own write next; a slow projection delays the answer, never fails it."""
        if position is None:
            position = self.ledger.recorder.max_notification_id() or 0
        try:
            self.follower.wait(position, timeout)
        except ReadModelTimeout as e:
            log.warning("answering before the read models caught up: %s", e.detail)

    def lag(self) -> Lag:
        return self.follower.lag()

    def gauges(self) -> Gauges:
        """The state the metrics expose, read from the read models."""
        stats, queue, lag = self.models.pool_stats(), self.models.queue_stats(), self.lag()
        return Gauges(
            slots={
                SlotStatus.IDLE: stats.idle,
                SlotStatus.DEPLOYING: stats.deploying,
                SlotStatus.BUSY: stats.busy,
                SlotStatus.ERROR: stats.error,
            },
            max_size=stats.max_size,
            queue_length=queue.length,
            lag_events=lag.behind,
            lag_seconds=lag_seconds(lag),
            heartbeat_age_s=lag.heartbeat_s,
        )

    def readiness(self) -> Readiness:
        """Ready when running, the store answers and the read models keep up."""
        if not self.started:
            return Readiness(False, ["the service is not running"])
        try:
            lag = self.lag()  # reads the log's head (the store) and the models' position
        except Exception as e:
            return Readiness(False, [f"store unreachable: {type(e).__name__}"])
        problems = []
        silent = lag.heartbeat_s is None or lag.heartbeat_s > self.MAX_HEARTBEAT_AGE_S
        if silent and lag.behind > self.CURRENT_EVENTS:
            # A silent follower matters once the models fall behind the log's head (which
            # is read from the store itself, so a frozen follower cannot look current).
            problems.append("the read model follower is not following the log")
        if lag.behind > self.MAX_BEHIND_EVENTS:
            problems.append(f"the read models are {lag.behind} events behind")
        return Readiness(not problems, problems, lag)
