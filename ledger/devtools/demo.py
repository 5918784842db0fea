"""The ``serve --demo`` world: fake Coolify, a small pool, and bots that come and go.

A newcomer should see every part of the lifecycle within a minute of ``make run``:
slots deploying and busy, a queue when the pool is full, the occasional failed deploy
and its recovery. :class:`Demo` holds the few knobs and adjusts the settings (a pool
small enough to fill, policies quick enough to watch) and is the service's
:class:`~ledger.service.Sidecar`: it starts the fake Coolify and the bots beside the
service's parts (``serve --demo`` hands it in); :class:`SimulatedBots` is the traffic.

The fake Coolify lives in memory and starts empty each run, so ``serve --demo`` gives the
demo its own store, emptied at each start (:data:`DEMO_STORE`): the ledger and the fake
always agree, and a second run shows no application of the first one as vanished. The
banner (:meth:`Demo.banner`) says so, and gives the fake's URL and token and a ``curl``
that requests a bot. Handed a store of its own (``store=None``, as tests do), the demo
keeps it: a second run continues it, and the deploy flow recreates the applications the
new fake does not know.
"""

from __future__ import annotations

import itertools
import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from uuid import UUID

from pydantic import SecretStr

from ledger.application import SlotLedger
from ledger.application.deploy import Acquired, SlotDeployer
from ledger.devtools.fake_coolify import FakeCoolify, FakeCoolifyServer, FakeSettings
from ledger.errors import SlotLedgerError
from ledger.settings import Settings

__all__ = ["DEMO_BOT_PREFIX", "DEMO_STORE", "Demo", "SimulatedBots"]

log = logging.getLogger("ledger.demo")

DEMO_BOT_PREFIX = "demo-bot-"
DEMO_STORE = Path(".slotledger") / "demo"
"""The folder of ``serve --demo``'s own store, relative to where it runs (beside the
default store, never it)."""


@dataclass(eq=False)
class Demo:
    """How the demo world behaves; while a service runs it, the fake Coolify and the
    bots too (one service per demo)."""

    pool_size: int = 6
    deploy_delay_s: float = 2.5
    bots: bool = True
    arrival_s: tuple[float, float] = (2.0, 5.0)
    """Pause between two new bots, drawn uniformly."""
    hold_s: tuple[float, float] = (10.0, 40.0)
    """How long a bot keeps its slot once it has one."""
    queue_timeout_s: tuple[float, float] = (20.0, 90.0)
    heartbeat_s: float = 5.0
    failure_rate: float = 0.07
    """Share of requests whose deploy the fake Coolify fails, to show error and recovery."""
    seed: int | None = None
    store: Path | None = None
    """The folder of the demo's own store, emptied at each start; None: the settings' store,
    kept as it is."""
    _fake: FakeCoolifyServer | None = field(default=None, init=False, repr=False)
    _bots: SimulatedBots | None = field(default=None, init=False, repr=False)

    def configure(self, settings: Settings) -> Settings:
        """A pool the bots can fill, policies that act within the minute, and the demo's
        own store emptied (when it has one)."""
        update: dict[str, object] = {
            "max_pool_size": self.pool_size,
            "recovery_interval_s": 15.0,
            "deploying_timeout_s": 60.0,
            "policy_tick_s": 2.0,
            # the demo's fake has no rate limit: no need to spread its requests out
            "coolify_requests_per_minute": 6000,
        }
        if self.store is not None:
            update["database_url"] = f"sqlite:///{self._fresh_store(self.store)}"
        return settings.model_copy(update=update)

    @staticmethod
    def _fresh_store(folder: Path) -> Path:
        """The demo's ledger file in ``folder``, with the files of an earlier run (the
        ledger, its read models, the mirror's tracking, their journals) removed."""
        folder.mkdir(parents=True, exist_ok=True)
        for old in folder.glob("ledger*.db*"):
            old.unlink()
        return (folder / "ledger.db").resolve()

    def banner(self, *, dashboard: str, store: str, api_token: bool, program: str) -> list[str]:
        """What to try the running demo with: its ``store`` (as shown to a person), the
        fake Coolify's URL and token (the fake's own, never the configured
        ``LEDGER_COOLIFY_TOKEN``), a ``curl`` that requests a bot from the ``dashboard``'s
        server (with the API token's header, by reference, when one is set) and the CLI
        (``program``) on the demo's store."""
        if self._fake is None:
            return []
        kept = (
            "the demo's own, fresh each run: the fake Coolify starts empty too"
            if self.store is not None
            else "kept: a second run continues it"
        )
        auth = ' -H "authorization: Bearer $LEDGER_API_TOKEN"' if api_token else ""
        body = '{"bot_id": "my-bot"}'
        return [
            f"demo store: {store} ({kept})",
            f"fake Coolify: {self._fake.base_url}  token: {self._fake.token} "
            "(the fake's own, not a secret)",
            f"request a bot: curl -sS -X POST {dashboard}v1/deployments{auth} "
            f"-H 'content-type: application/json' -d '{body}'",
            f"the CLI on this store: LEDGER_DATABASE_URL={store} {program} stats",
        ]

    def fake_settings(self) -> FakeSettings:
        return FakeSettings(
            deploy_delay=self.deploy_delay_s, delete_delay=0.5, rate_limit=0, seed=self.seed
        )

    @staticmethod
    def point_at(settings: Settings, fake: FakeCoolifyServer) -> Settings:
        """The settings with Coolify replaced by the started fake."""
        fs = fake.fake.settings
        return settings.model_copy(
            update={
                "coolify_url": fake.base_url,
                "coolify_token": SecretStr(fake.token),
                "coolify_project_uuid": fs.project_uuid,
                "coolify_server_uuid": fs.server_uuid,
                "coolify_environment_name": fs.environment_name,
            }
        )

    def start(self, settings: Settings) -> Settings:
        """Start the fake Coolify; the settings pointing at it."""
        self._fake = FakeCoolifyServer(self.fake_settings())
        self._fake.start()
        return self.point_at(settings, self._fake)

    def attach(self, ledger: SlotLedger, deployer: SlotDeployer) -> None:
        """Fill the pool, then let the bots come (unless ``bots`` is off)."""
        self.prepare(ledger, deployer)
        if self.bots and self._fake is not None:
            self._bots = SimulatedBots(ledger, deployer, self, self._fake.fake)
            self._bots.start()

    def detach(self) -> None:
        """Stop the bots; nothing when none run."""
        bots, self._bots = self._bots, None
        if bots is not None:
            bots.stop()

    def stop(self) -> None:
        """Stop the fake Coolify; nothing when never started."""
        fake, self._fake = self._fake, None
        if fake is not None:
            fake.stop()

    def prepare(self, ledger: SlotLedger, deployer: SlotDeployer) -> None:
        """Fill the pool up to its size, and end the previous run's bots: their slots
        and queue entries would otherwise stay taken by bots that no longer exist."""
        operator = ledger.context("operator")
        ledger.ensure_pool(ctx=operator)
        for _ in range(self.pool_size - len(ledger.slots())):
            ledger.provision(ledger.default_platform, ctx=operator)
        leftovers = {r.bot_id for r in ledger.slots() if r.bot_id} | {
            r.bot_id for r in ledger.waiting()
        }
        for bot_id in sorted(b for b in leftovers if b.startswith(DEMO_BOT_PREFIX)):
            try:
                deployer.release(bot_id, ctx=operator)
            except SlotLedgerError as e:
                log.info("demo: could not end %s from the last run: %s", bot_id, e.detail)


@dataclass
class _Bot:
    bot_id: str
    slot_id: UUID | None = None
    leave_at: float = 0.0
    next_heartbeat: float = 0.0


class SimulatedBots:
    """Requests slots for new bots now and then, heartbeats while they hold one, and
    releases it after a while, all through the same deployer the API uses."""

    TICK_S = 0.5

    def __init__(
        self, ledger: SlotLedger, deployer: SlotDeployer, demo: Demo, fake: FakeCoolify
    ) -> None:
        self.ledger = ledger
        self.deployer = deployer
        self.demo = demo
        self.fake = fake
        self.random = random.Random(demo.seed)
        self.bots: dict[str, _Bot] = {}
        self._numbers = itertools.count(1)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="demo-bots", daemon=True)

    def start(self) -> None:
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=10)

    def _run(self) -> None:
        next_arrival = time.monotonic()
        while not self._stop.wait(self.TICK_S):
            now = time.monotonic()
            if now >= next_arrival:
                self._guarded(self.arrive)
                next_arrival = now + self.random.uniform(*self.demo.arrival_s)
            for bot in list(self.bots.values()):
                self._guarded(partial(self.step, bot, now))

    @staticmethod
    def _guarded(action: Callable[[], None]) -> None:
        """Refusals are part of the demo (a slot failed under its bot); bugs are logged.
        Either way the other bots carry on."""
        try:
            action()
        except SlotLedgerError as e:
            log.info("demo bots: %s", e.detail)
        except Exception:
            log.exception("demo bots: a step failed")

    def arrive(self) -> None:
        bot = _Bot(f"{DEMO_BOT_PREFIX}{time.strftime('%H%M%S')}-{next(self._numbers)}")
        if self.random.random() < self.demo.failure_rate:
            self.fake.set_faults(fail_next_deployments=1)
        result = self.deployer.request(
            bot.bot_id,
            priority=self.random.choice((0, 0, 0, 5, 10)),
            queue_timeout_s=self.random.uniform(*self.demo.queue_timeout_s),
            config={"MEETING_URL": f"https://meet.example.com/{bot.bot_id}"},
            ctx=self.ledger.context("api"),
        )
        self.bots[bot.bot_id] = bot
        if isinstance(result, Acquired):
            self._seated(bot, result.slot.id, time.monotonic())

    def _seated(self, bot: _Bot, slot_id: UUID, now: float) -> None:
        bot.slot_id = slot_id
        bot.leave_at = now + self.random.uniform(*self.demo.hold_s)
        bot.next_heartbeat = now + self.demo.heartbeat_s

    def step(self, bot: _Bot, now: float) -> None:
        """Advance one bot: seated from the queue, heartbeat, leave, or gone."""
        row = self.ledger.index.slot_for_bot(bot.bot_id)
        if row is None:
            waiting = self.ledger.index.waiting_entry_for_bot(bot.bot_id)
            if bot.slot_id is not None or waiting is None:
                del self.bots[bot.bot_id]  # its slot failed, or its wait expired
            return
        if bot.slot_id is None:
            self._seated(bot, row.slot_id, now)
        if now >= bot.leave_at:
            self.deployer.release(bot.bot_id, ctx=self.ledger.context("api"))
            del self.bots[bot.bot_id]
        elif now >= bot.next_heartbeat:
            bot.next_heartbeat = now + self.demo.heartbeat_s
            self.ledger.heartbeat(row.slot_id, bot.bot_id, ctx=self.ledger.context("api"))
