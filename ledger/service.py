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
- the health of every background loop (:meth:`Service.loops`), which ``/readyz`` and
  ``/metrics`` show;
- with a :class:`Sidecar` (``serve --demo`` hands in ``ledger.devtools.demo.Demo``): what
  runs beside the parts, such as a fake Coolify and simulated bots, which this module
  does not know of.

Every part is built by :mod:`ledger.bootstrap`, which alone chooses the backends.

Parts are started in dependency order and stopped in reverse, also when a start fails
half-way, so a failed start leaves no threads behind.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol, Self

from ledger import bootstrap
from ledger.adapters.coolify import CoolifyClient
from ledger.adapters.coolify.checks import CoolifyProbe
from ledger.adapters.leadership import WorkerLeadership
from ledger.adapters.logs import TransitionLog
from ledger.adapters.metrics import Gauges, Metrics
from ledger.application import SlotLedger
from ledger.application.checker import ViolationBoard
from ledger.application.deploy import CoolifySlotRuntime, SlotDeployer
from ledger.application.operations import Operator
from ledger.application.worker import Worker
from ledger.domain import SlotStatus
from ledger.domain.invariants import KINDS
from ledger.domain.violations import OpenViolation
from ledger.errors import SlotLedgerError, store_unavailable
from ledger.loops import Backoff, Health, LoopHealth, describe_error, log_failure
from ledger.settings import Settings
from projections import Follower, Lag, ReadModels, ReadModelTimeout

__all__ = [
    "NotStarted",
    "Periodic",
    "Readiness",
    "Service",
    "Sidecar",
    "lag_seconds",
    "loop_problem",
    "start_service",
    "violation_problem",
]

log = logging.getLogger("ledger.service")


class NotStarted(SlotLedgerError):
    """A part that only exists while the service runs was asked for before start."""

    code = "not_started"
    http_status = 503


class Periodic:
    """Runs ``action`` every ``interval_s`` in a daemon thread. Any error is recorded in
    its health and logged, and the next round comes after the shared backoff (at most
    about 2 s), because a background duty that dies silently is worse than one that
    complains every round."""

    def __init__(
        self, name: str, action: Callable[[], object], interval_s: float, max_backoff_s: float = 2.0
    ) -> None:
        self.name = name
        self.action = action
        self.interval_s = interval_s
        self.health_record = Health(name)
        self._backoff = Backoff(max_s=max_backoff_s)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    def _run(self) -> None:
        delay = self.interval_s
        while not self._stop.wait(delay):
            try:
                self.action()
            except Exception as e:
                failures = self.health_record.failed(e)
                delay = self._backoff.next()
                if failures == 1:
                    log_failure(log, self.name, e, f"retrying in {delay:.2f}s")
                else:
                    log.warning(
                        "%s failed %d times in a row, retrying in %.2fs: %s",
                        self.name,
                        failures,
                        delay,
                        describe_error(e),
                    )
                continue
            self.health_record.succeeded()
            self._backoff.reset()
            delay = self.interval_s

    def health(self) -> LoopHealth:
        return self.health_record.snapshot(alive=self._thread.is_alive())

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)


class Sidecar(Protocol):
    """What runs beside the service's own parts and shapes its settings: the demo's fake
    Coolify and simulated bots, handed in by ``serve --demo``."""

    def configure(self, settings: Settings) -> Settings:
        """The settings every part is built from (the demo: a small pool, quick policies)."""

    def start(self, settings: Settings) -> Settings:
        """Start before the Coolify client is built; the settings it is built from (the
        demo: the URL and token of the fake Coolify it started)."""

    def attach(self, ledger: SlotLedger, deployer: SlotDeployer) -> None:
        """Once the deployer runs: act through it (the demo: fill the pool, start bots)."""

    def detach(self) -> None:
        """Stop what :meth:`attach` began; first thing on the way out."""

    def stop(self) -> None:
        """Stop what :meth:`start` began; last thing on the way out."""


def loop_problem(health: LoopHealth) -> str:
    """Why a loop makes a process not ready, in one line."""
    if health.state == "stopped":
        return f"{health.name} has stopped"
    return f"{health.name} is failing ({health.consecutive_failures} in a row): {health.last_error}"


def violation_problem(violation: OpenViolation) -> str:
    """An open invariant violation, in one line of ``/readyz``'s problems."""
    v = violation
    return f"invariant violated: {v.kind} at position {v.position}: {v.detail}"


def lag_seconds(lag: Lag) -> float:
    """How late the read models are, in seconds: 0 when caught up, else the age of the
    newest projected event (an upper bound). ``Lag.seconds`` alone grows while the log
    is quiet, which is not lag."""
    return 0.0 if lag.behind == 0 else lag.seconds or 0.0


@dataclass(frozen=True)
class Readiness:
    """Whether the service can answer correctly now, and if not, why; with the health of
    every loop, the parked events per consumer and the open invariant violations (also
    among the problems, which they leave ready)."""

    ready: bool
    problems: list[str] = field(default_factory=list)
    lag: Lag | None = None
    loops: list[LoopHealth] = field(default_factory=list)
    parked: dict[str, int] = field(default_factory=dict)
    violations: list[OpenViolation] = field(default_factory=list)


def start_service(build: Callable[[], Service], timeout_s: float) -> Service:
    """A service built and started, retrying while the store is unavailable (a server
    that starts during a database restart or a connection storm must come up when the
    store answers again, not exit): one log line per attempt, pauses of at most about
    2 s, for ``timeout_s`` seconds; then the outage is raised. Any other error, such as
    bad configuration, is raised at once."""
    deadline = time.monotonic() + timeout_s
    backoff = Backoff(min_s=0.25, max_s=2.0)
    attempt = 0
    while True:
        attempt += 1
        service: Service | None = None
        try:
            service = build()
            service.start()
            return service
        except Exception as e:
            outage = store_unavailable(e)
            remaining = deadline - time.monotonic()
            if outage is None or remaining <= 0:
                raise  # the process exits: a failed start has stopped its parts already
            if service is not None:
                service.stop()  # closes its pools before the next attempt opens new ones
            delay = min(backoff.next(), remaining)
            log.warning(
                "start attempt %d failed, retrying in %.2fs for up to %.0fs more: %s",
                attempt,
                delay,
                remaining,
                outage.detail,
            )
            time.sleep(delay)


class Service:
    """Everything one ``slotledger serve`` process runs.

    Readiness means this process answers correctly now. So it fails at once when a loop
    has stopped, when a loop the answers depend on fails (``ESSENTIAL``: the read-model
    follower, whose models the queries read, and the queue drain, which hands freed
    slots to waiting bots), and while the read models miss a parked event. The other
    loops (description mirror, transition log, policy worker, deploys) depend on Coolify
    or only feed logs and metrics: their failures and parked events are shown (and
    counted in ``/metrics``) but keep the process in its load balancer, where taking
    every server out during a Coolify outage would turn it into a full outage. For the
    same reason "no worker leads" (:class:`WorkerLeadership`) is shown, not a problem.
    An open invariant violation (read from the log, whoever checks) is listed among the
    problems and keeps the process ready: the data is suspect, the API still answers, and
    taking it away would not make the data better.
    """

    ESSENTIAL = frozenset({ReadModels.CONSUMER, "queue-drain"})
    MAX_BEHIND_EVENTS = 1000
    """Readiness fails when the read models are further behind than this..."""
    MAX_HEARTBEAT_AGE_S = 15.0
    """...or when their follower, alive and not failing, has not finished a round for
    this long while they are more than ``CURRENT_EVENTS`` behind (a stuck thread)."""
    CURRENT_EVENTS = 10

    def __init__(
        self,
        settings: Settings,
        *,
        demo: Sidecar | None = None,
        worker: bool | None = None,
        deploy_poll_s: float | None = None,
        status_grace_s: float | None = None,
        drain_interval_s: float = 1.0,
    ) -> None:
        self.demo = demo
        self.settings = settings if demo is None else demo.configure(settings)
        embedded = bootstrap.is_embedded(self.settings)
        self.run_worker = (embedded or demo is not None) if worker is None else worker
        self.deploy_poll_s = deploy_poll_s
        self.status_grace_s = status_grace_s
        self.drain_interval_s = drain_interval_s
        self.metrics = Metrics()
        self.ledger: SlotLedger = bootstrap.build_ledger(self.settings)
        try:
            self.models: ReadModels = bootstrap.build_read_models(self.settings, self.ledger)
        except BaseException:
            self.ledger.close()  # a start retried after an outage must not leak pools
            raise
        self.follower: Follower = bootstrap.build_follower(self.models)
        self.transitions = TransitionLog(self.ledger, [self.metrics.transition])
        self.metrics.watch(self.gauges)
        self.metrics.watch_loops(lambda: self.loops())
        self.violations = ViolationBoard(self.ledger, self.settings.pool_name)
        self.metrics.watch_violations(self.violations.totals, KINDS)
        self._secrets = bootstrap.secrets_of(self.settings)
        self._loops: list[Callable[[int | None], LoopHealth]] = []
        self._deployer: SlotDeployer | None = None
        self._operator: Operator | None = None
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
                self._loops.clear()
                self._deployer = None
                self._operator = None
                raise
            self.started = True
        log.info("service started: store %s", self.settings.store.redacted())

    def _start(self) -> None:
        settings = self.settings
        # Many API requests at once: their acquires and releases share transactions.
        self.ledger.enable_group_commit()
        self._stops.append(self.ledger.disable_group_commit)
        if self.demo is not None:
            self._stops.append(self.demo.stop)
            settings = self.demo.start(settings)
        coolify = bootstrap.build_coolify(settings, on_response=self.metrics.coolify_response)
        self._stops.append(coolify.close)
        if coolify.budget is not None:
            self.metrics.watch_budget(coolify.budget.stats)
        self._probe_coolify(settings, coolify)
        # A changed LEDGER_MAX_POOL_SIZE takes effect as one PoolResized (and the pool
        # exists, so its maxSize shows, before its first slot).
        self.ledger.ensure_pool(ctx=self.ledger.context("operator"))
        runtime = CoolifySlotRuntime(coolify)
        operator = Operator(self.ledger, lambda: runtime, settings.retire_mode, background=True)
        self._stops.append(operator.close)
        self._operator = operator
        deployer = bootstrap.build_deployer(
            settings,
            self.ledger,
            coolify,
            poll_s=self.deploy_poll_s,
            status_grace_s=self.status_grace_s,
        )
        self._stops.append(deployer.close)
        self._deployer = deployer

        self.follower.start()
        self._stops.append(self.follower.stop)
        self._loops.append(self.follower.health)
        transitions = self.transitions.follower(self.follower, self.models)
        transitions.start()
        self._stops.append(transitions.stop)
        self._loops.append(transitions.health)
        mirror = bootstrap.build_mirror(
            settings, self.ledger, coolify, leader=self.follower, parking=self.models
        )
        mirror.start()
        self._stops.append(mirror.stop)
        self._loops.append(mirror.health)
        if self.run_worker:
            self._start_worker(settings, coolify)
        else:
            self._watch_workers(settings)
        self._every("queue-drain", deployer.drain, self.drain_interval_s)
        self._loops.append(lambda head: self._deploys_health(deployer))
        if self.demo is not None:
            self._stops.append(self.demo.detach)
            self.demo.attach(self.ledger, deployer)

    def _start_worker(self, settings: Settings, coolify: CoolifyClient) -> None:
        election = bootstrap.election_for(settings)
        config = bootstrap.policy_config(settings)
        duties = bootstrap.leader_duties(settings, self.ledger, coolify)
        runtime = CoolifySlotRuntime(coolify)
        worker = Worker(config, self.ledger, runtime, election, duties=duties)
        stop = threading.Event()
        thread = threading.Thread(
            target=worker.run, args=(stop,), name="policy-worker", daemon=True
        )
        thread.start()

        def stop_worker() -> None:
            stop.set()
            thread.join(timeout=10)

        self._stops.append(stop_worker)
        for index in range(1 + len(duties)):  # the policy loop, then each duty
            self._loops.append(self._worker_loop(worker, thread, index))

    @staticmethod
    def _worker_loop(
        worker: Worker, thread: threading.Thread, index: int
    ) -> Callable[[int | None], LoopHealth]:
        return lambda head: worker.loops(alive=thread.is_alive())[index]

    def _probe_coolify(self, settings: Settings, coolify: CoolifyClient) -> None:
        """Coolify's reachability (and, until they pass, the start-up checks) as the
        ``coolify`` loop: shown in ``/readyz`` and ``/metrics``, never making the process
        not ready (:mod:`ledger.adapters.coolify.checks` says why). A failing probe
        retries with backoff up to its interval, not every two seconds."""
        interval = settings.coolify_probe_interval_s
        probe = CoolifyProbe(coolify, bootstrap.coolify_target(settings), interval)
        self._every(probe.NAME, probe, interval, probe.shown, max_backoff_s=interval)

    def _watch_workers(self, settings: Settings) -> None:
        """Show whether a ``slotledger worker`` leads (see :class:`WorkerLeadership`);
        where no worker can run (SQLite), nothing to show."""
        watch = bootstrap.build_leadership_watch(settings, self.ledger)
        if watch is not None:
            self._every(f"{Worker.NAME}-check", watch.check, watch.CHECK_S, watch.health)

    def _every(
        self,
        name: str,
        action: Callable[[], object],
        interval_s: float,
        shown: Callable[[LoopHealth], LoopHealth] = lambda health: health,
        max_backoff_s: float = 2.0,
    ) -> None:
        periodic = Periodic(name, action, interval_s, max_backoff_s)
        periodic.start()
        self._stops.append(periodic.stop)
        self._loops.append(lambda head: shown(periodic.health()))

    @staticmethod
    def _deploys_health(deployer: SlotDeployer) -> LoopHealth:
        """The per-deployment threads as one loop: how many run, how many failed."""
        return LoopHealth(
            name="deploys",
            state="running",
            failures_total=deployer.failed_deploys,
            consecutive_failures=0,
            last_error=None,
            last_success_age_s=None,
            running_tasks=deployer.running_deploys(),
        )

    def stop(self) -> None:
        """Stop every part, newest first, then close the stores. The service cannot be
        started again: build a new one."""
        with self._lock:
            if self._closed:
                return
            self._stop_parts()
            self._loops.clear()
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

    @property
    def operator(self) -> Operator:
        if self._operator is None:
            raise NotStarted("the service is not running: operator actions are unavailable")
        return self._operator

    def settle(self, position: int | None = None) -> None:
        """Read-your-writes, on the command path: a write (at ``position``; by default
        the latest) was committed, so the follower takes it now, without waiting for a
        notification or its poll. The command's answer does not wait for the read
        models: it is built from the command's own result. The queries wait instead,
        only while the models are behind (:meth:`caught_up`)."""
        self.follower.wake(position)

    def caught_up(self, timeout: float = 2.0) -> None:
        """The read barrier of every query: return once the read models include every
        write committed before this call, in any process on the store (the log's head is
        read from the store), so a client reads its own writes, and on PostgreSQL every
        server answers with every write any server acknowledged first. Woken by the
        follower, never polled. A slow projection delays the query by ``timeout`` at
        most; a failing follower or store does not delay it (the query answers stale,
        or fails on its own with a 503)."""
        if not self.started or self.follower.health_record.consecutive_failures:
            return
        try:
            head = self.ledger.recorder.max_notification_id() or 0
            self.follower.wait(head, timeout)
        except ReadModelTimeout as e:
            log.warning("answering before the read models caught up: %s", e.detail)
        except Exception as e:
            if store_unavailable(e) is None:
                raise

    def lag(self) -> Lag:
        return self.follower.lag()

    def loops(self, head: int | None = None) -> list[LoopHealth]:
        """The health of every background loop that runs, configured secrets blanked
        from their errors; lags need the log's ``head``."""
        return [health(head).redacted(self._secrets) for health in list(self._loops)]

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
            parked=self.models.parked_counts(),
            loop_lags={h.name: h.lag_events for h in self.loops(lag.head)},
            heartbeat_refusals_unrecorded=self.ledger.refusals.unrecorded,
        )

    def readiness(self) -> Readiness:
        """Ready when running, the store answers, no loop has stopped, the essential
        loops do not fail, and the read models keep up and miss no parked event."""
        if not self.started:
            return Readiness(False, ["the service is not running"])
        try:
            lag = self.lag()  # reads the log's head (the store) and the models' position
            parked = self.models.parked_counts()
            violations = self.violations.open()
        except Exception as e:
            return Readiness(False, [f"store unreachable: {type(e).__name__}"], loops=self.loops())
        loops = self.loops(lag.head)
        problems = [
            loop_problem(h)
            for h in loops
            if (h.state == "stopped" and h.detail != WorkerLeadership.UNLED)
            or (h.state == "failing" and h.name in self.ESSENTIAL)
        ]
        silent = lag.heartbeat_s is None or lag.heartbeat_s > self.MAX_HEARTBEAT_AGE_S
        if silent and lag.behind > self.CURRENT_EVENTS:
            # A thread stuck inside a round: alive, not failing, yet the models fall
            # behind the log's head (read from the store itself, so it cannot look current).
            problems.append("the read model follower is not following the log")
        if lag.behind > self.MAX_BEHIND_EVENTS:
            problems.append(f"the read models are {lag.behind} events behind")
        if missed := parked.get(ReadModels.CONSUMER, 0):
            problems.append(
                f"the read models miss {missed} parked event(s): see `slotledger parked`"
            )
        ready = not problems  # a violation shows, and leaves the API available
        problems += [violation_problem(v) for v in violations]
        return Readiness(ready, problems, lag, loops, parked, violations)
