"""200 bots through a pool of 20 slots while the fake Coolify misbehaves: 20% of calls
answer 500, the throttle answers 429 with Retry-After (hard, in short windows), calls in
those windows take 2 s, some connections hang until the client's short timeout and some
are reset.

Bots request, deploy (or queue, or fail), hold their slot briefly and release it; the
queue is drained and the policies recover failed slots meanwhile. At the end nothing is
stuck deploying, the index agrees with the aggregates, every failure says why, no
acknowledged command is missing from the log and the invariant checker finds nothing.
"""

from __future__ import annotations

import random
import threading
import time
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

import pytest

from ledger.adapters.coolify import CoolifyClient
from ledger.application import SlotLedger, new_correlation_id
from ledger.application.deploy import (
    Acquired,
    CoolifySlotRuntime,
    LocalDeployPermits,
    Polling,
    SlotDeployer,
    SlotTemplate,
)
from ledger.application.policies import PolicyEngine, StaleDeployingRule
from ledger.bootstrap import build_ledger, policy_config
from ledger.devtools.fake_coolify import FakeCoolifyServer, FakeSettings
from ledger.domain import SlotStatus
from ledger.errors import BotNotFound
from ledger.service import Periodic
from ledger.settings import load_settings
from tests.faults.support import ClientLog, assert_log_sound, inconsistent_slots

BOTS = 200
POOL = 20
CONCURRENT_BOTS = 40
FLOW_DEADLINE_S = 90.0
"""Only a bound: bots settle as soon as they are busy or lost; a slow machine needs room."""
FAKE = FakeSettings(
    deploy_delay=0.05,
    delete_delay=0.05,
    stop_delay=0.1,
    status_interval=0.1,
    rate_limit=60,
    rate_window=1.0,
    seed=7,
)
QUICK = Polling(0.1, 0.1)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCoolifyServer]:
    with FakeCoolifyServer(FAKE) as server:
        yield server


class Bots:
    """Drives one bot at a time per worker thread and logs what the ledger acknowledged."""

    def __init__(self, ledger: SlotLedger, deployer: SlotDeployer, deadline: float) -> None:
        self.ledger = ledger
        self.deployer = deployer
        self.deadline = deadline
        self.client = ClientLog()
        self.ends: Counter[str] = Counter()
        self._lock = threading.Lock()

    def run(self, index: int) -> None:
        bot = f"bot-{index:03d}"
        cid = new_correlation_id()
        result = self.deployer.request(bot, ctx=self.ledger.context("api").under(cid))
        self.client.requested(bot, cid, result)
        end = self.settle(bot)
        if end in ("busy", "waiting"):
            time.sleep(random.uniform(0.05, 0.3) if end == "busy" else 0)
            try:
                self.release(bot)
            except BotNotFound:  # its slot failed meanwhile, its retries too: 404, as told
                end = "lost"
        with self._lock:
            self.ends[end] += 1

    def settle(self, bot: str) -> str:
        """Wait until the bot's slot is busy, or it lost its slot or queue entry (a
        failed deploy, an expiry), or the flow's deadline passes while it still waits."""
        while time.monotonic() < self.deadline:
            row = self.ledger.index.slot_for_bot(bot)
            if row is not None and row.status is not SlotStatus.DEPLOYING:
                return "busy"
            if row is None and self.ledger.index.waiting_entry_for_bot(bot) is None:
                return "lost"
            time.sleep(0.25)
        return "waiting"

    def release(self, bot: str) -> None:
        cid = new_correlation_id()
        self.client.released(
            bot, cid, self.deployer.release(bot, ctx=self.ledger.context("api").under(cid))
        )


class FaultWindows:
    """Every ``every_s``: Coolify answers 2 s late for ``open_s``, and throttles hard
    (10 requests per second) until it has answered at least one 429 (bounded), so latency
    and 429s with Retry-After happen in every run, however fast the machine is."""

    def __init__(
        self,
        fake: FakeCoolifyServer,
        seen: Counter[int],
        open_s: float = 0.4,
        every_s: float = 3.0,
    ) -> None:
        self.fake, self.seen, self.open_s = fake, seen, open_s
        self.periodic = Periodic("fault-windows", self.open_window, every_s)

    def open_window(self) -> None:
        throttled = self.seen[429]
        self.fake.fake.configure(rate_limit=10)
        self.fake.fake.set_faults(latency=2.0)
        time.sleep(self.open_s)
        self.fake.fake.set_faults(latency=0.0)
        deadline = time.monotonic() + 10.0
        while self.seen[429] == throttled and time.monotonic() < deadline:
            time.sleep(0.05)
        self.fake.fake.configure(rate_limit=FAKE.rate_limit)


@pytest.mark.timeout(300)
def test_two_hundred_bots_through_a_faulty_coolify(
    postgres_url: str, fake: FakeCoolifyServer
) -> None:
    settings = load_settings(
        database_url=postgres_url,
        max_pool_size=POOL,
        postgres_pool_size=4,
        postgres_max_overflow=16,
        recovery_interval_s=1,
        recovery_max_attempts=3,
    )
    ledger = build_ledger(settings)
    statuses: Counter[int] = Counter()
    coolify = CoolifyClient(
        fake.base_url,
        fake.token,
        timeout=2.5,
        max_retries=4,
        backoff_base=0.02,
        backoff_max=0.25,
        on_response=lambda method, path, status: statuses.update([status]),
    )
    deployer = SlotDeployer(
        ledger,
        coolify,
        SlotTemplate(FAKE.project_uuid, FAKE.server_uuid, FAKE.environment_name, "bot", "1"),
        LocalDeployPermits(POOL),
        queue_timeout_s=FLOW_DEADLINE_S,
        polling=QUICK,
        ready_timeout_s=15,
        exited_grace_s=2.0,
        stop_timeout_s=15.0,
        status_lag_s=0.5,
    )
    runtime = CoolifySlotRuntime(coolify, deployer.app)
    policies = PolicyEngine(ledger, runtime, policy_config(settings))
    background = [
        Periodic("drain", deployer.drain, 0.25),
        Periodic("policies", policies.tick, 0.25),
        FaultWindows(fake, statuses).periodic,
    ]
    fake.fake.set_faults(error_rate=0.2, hang_rate=0.01, reset_rate=0.02)
    bots = Bots(ledger, deployer, time.monotonic() + FLOW_DEADLINE_S)
    started = time.monotonic()
    try:
        for periodic in background:
            periodic.start()
        with ThreadPoolExecutor(CONCURRENT_BOTS, thread_name_prefix="bot") as pool:
            for done in [pool.submit(bots.run, i) for i in range(BOTS)]:
                done.result()
        deployer.wait_idle()
    finally:
        for periodic in reversed(background):
            periodic.stop()
        fake.fake.set_faults(error_rate=0.0, hang_rate=0.0, reset_rate=0.0, latency=0.0)
    flow_s = time.monotonic() - started

    # Nothing the flow started may still be deploying; the policy, run as if long after,
    # would fail what is stuck (and says how many it found).
    stale = StaleDeployingRule(settings.deploying_timeout_s)
    later = ledger.clock() + timedelta(seconds=settings.deploying_timeout_s + 60)
    stuck = [stale.apply(ledger, d) for d in stale.decide(ledger, later)]
    deployer.close()
    coolify.close()

    print(
        f"\n{BOTS} bots, {POOL} slots, {flow_s:.1f}s: ends {dict(bots.ends)}; Coolify "
        f"answered {dict(sorted(statuses.items()))}; stuck deploying at the end: {len(stuck)}"
    )
    assert statuses[500] > 0 and statuses[429] > 0, "the faults were not injected"
    assert sum(bots.ends.values()) == BOTS
    assert bots.ends["busy"] >= BOTS // 4, "too few bots got a running slot"
    assert ledger.waiting() == []
    assert inconsistent_slots(ledger, {SlotStatus.IDLE, SlotStatus.BUSY, SlotStatus.ERROR}) == []
    requests = sum(a.outcome in ("acquired", "queued") for a in bots.client.acks)
    assert requests == BOTS
    assert_log_sound(ledger, bots.client)
    ledger.close()


def test_a_request_its_own_drain_dispatches_is_acknowledged(
    sqlite_url: str, fake: FakeCoolifyServer
) -> None:
    fake.fake.reset()
    ledger = build_ledger(load_settings(database_url=sqlite_url, max_pool_size=1))
    coolify = CoolifyClient(fake.base_url, fake.token)
    deployer = SlotDeployer(
        ledger,
        coolify,
        SlotTemplate(FAKE.project_uuid, FAKE.server_uuid, FAKE.environment_name, "bot", "1"),
        LocalDeployPermits(1),
        polling=Polling(0.02, 0.02),
    )
    try:
        assert isinstance(deployer.request("bot-a"), Acquired)
        assert not isinstance(deployer.request("bot-b"), Acquired)  # the pool is full
        deployer.wait_idle()
        ledger.release("bot-a")  # a slot frees up; no drain has run yet
        # bot-c queues behind bot-b but goes first (lower priority value), so the drain
        # inside its own request hands it the free slot
        result = deployer.request("bot-c", priority=-1)
        assert isinstance(result, Acquired)
        assert ledger.slot_of_bot("bot-c").slot_id == result.slot.id
    finally:
        deployer.close()
        coolify.close()
        ledger.close()
