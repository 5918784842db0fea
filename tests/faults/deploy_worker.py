"""The deploy flow in a process of its own, for the crash test to kill with SIGKILL.

    python -m tests.faults.deploy_worker DATABASE_URL COOLIFY_URL TOKEN CLIENT_LOG SEED

Builds what ``slotledger serve`` builds for the write side (ledger, read models with
their live follower, deployer with advisory-lock permits, a periodic queue drain) against
the fake Coolify over HTTP, prints ``ready``, then loops until killed: bots request slots,
hold them for a random moment (often less than a deploy takes) and release them.
Acknowledged commands are appended to CLIENT_LOG as they return.
"""

from __future__ import annotations

import random
import sys
import threading
import time
from pathlib import Path

from ledger.application import new_correlation_id
from ledger.application.deploy import Polling, SlotDeployer
from ledger.bootstrap import (
    build_coolify,
    build_follower,
    build_ledger,
    build_permits,
    build_read_models,
    slot_template,
)
from ledger.devtools.fake_coolify import FakeSettings
from ledger.errors import SlotLedgerError
from ledger.service import Periodic
from ledger.settings import Settings, load_settings
from tests.faults.support import ClientLog

POOL = 4
BOT_THREADS = 3


def worker_settings(database_url: str, coolify_url: str, token: str) -> Settings:
    fake = FakeSettings()
    return load_settings(
        database_url=database_url,
        coolify_url=coolify_url,
        coolify_token=token,
        coolify_project_uuid=fake.project_uuid,
        coolify_server_uuid=fake.server_uuid,
        max_pool_size=POOL,
        postgres_pool_size=2,
        postgres_max_overflow=8,
    )


def bot_loop(deployer: SlotDeployer, client: ClientLog, rng: random.Random, name: str) -> None:
    for n in range(1_000_000):
        bot = f"{name}-{n}"
        cid = new_correlation_id()
        try:
            client.requested(
                bot, cid, deployer.request(bot, ctx=deployer.ledger.context("api").under(cid))
            )
        except SlotLedgerError:
            continue
        time.sleep(rng.uniform(0.0, 0.4))
        cid = new_correlation_id()
        try:
            client.released(
                bot, cid, deployer.release(bot, ctx=deployer.ledger.context("api").under(cid))
            )
        except SlotLedgerError:
            continue  # its deploy failed (the slot is in error) or its entry expired


def main(database_url: str, coolify_url: str, token: str, client_log: str, seed: str) -> None:
    settings = worker_settings(database_url, coolify_url, token)
    ledger = build_ledger(settings)
    ledger.ensure_pool()
    build_follower(build_read_models(settings, ledger)).start()
    deployer = SlotDeployer(
        ledger,
        build_coolify(settings),
        slot_template(settings),
        build_permits(settings),
        polling=Polling(0.05, 0.05),
        exited_grace_s=2.0,
        stop_timeout_s=20.0,
        status_lag_s=0.5,
    )
    Periodic("queue-drain", deployer.drain, 0.1).start()
    client = ClientLog(Path(client_log))
    rng = random.Random(seed)
    for t in range(BOT_THREADS):
        args = (deployer, client, random.Random(rng.random()), f"s{seed}-t{t}")
        threading.Thread(target=bot_loop, args=args, daemon=True).start()
    print("ready", flush=True)
    threading.Event().wait()


if __name__ == "__main__":
    main(*sys.argv[1:6])
