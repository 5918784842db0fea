"""SIGKILL a process in the middle of the deploy flow, then restart and look.

Each trial starts ``tests.faults.deploy_worker`` on a fresh schema, lets it work until the
fake Coolify has seen a random number of its requests (so the kill lands between two
steps of some deploy or release), and kills it. The restarted side then finds: read
models that, once caught up, equal a full rebuild; slots left deploying by the dead
process failed by the stale-deploying policy and slots it left releasing by the
stale-releasing policy (its clock ahead), then recovered; no slot leased twice; and
every command the dead process saw acknowledged, in the log.
"""

from __future__ import annotations

import random
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from ledger.application.containers import AppDriver, Polling
from ledger.application.deploy import CoolifySlotRuntime
from ledger.application.policies import PolicyEngine
from ledger.bootstrap import build_coolify, build_ledger, build_read_models, policy_config
from ledger.devtools.fake_coolify import FakeCoolifyServer, FakeSettings
from ledger.domain import Slot, SlotStatus
from ledger.domain.invariants import iter_log
from ledger.domain.slot import OCCUPIED
from tests.faults.deploy_worker import worker_settings
from tests.faults.support import ClientLog, assert_log_sound, inconsistent_slots

ROOT = Path(__file__).parents[2]
TRIALS = 10


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCoolifyServer]:
    settings = FakeSettings(  # Coolify's lags, short
        deploy_delay=0.1, delete_delay=0.05, stop_delay=0.1, status_interval=0.1, rate_limit=0
    )
    with FakeCoolifyServer(settings) as s:
        yield s


def start_worker(
    url: str, fake: FakeCoolifyServer, client_log: Path, seed: int
) -> subprocess.Popen[str]:
    command = [sys.executable, "-m", "tests.faults.deploy_worker"]
    args = [url, fake.base_url, fake.token, str(client_log), str(seed)]
    process = subprocess.Popen(
        [*command, *args], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True
    )
    assert process.stdout is not None
    if process.stdout.readline().strip() != "ready":
        process.kill()
        pytest.fail(f"the deploy worker did not start (exit code {process.wait()})")
    return process


def kill_after_requests(process: subprocess.Popen[str], fake: FakeCoolifyServer, n: int) -> int:
    """SIGKILL once the fake has received ``n`` more requests; returns how many it saw."""
    target = len(fake.fake.requests()) + n
    deadline = time.monotonic() + 30
    while len(fake.fake.requests()) < target and process.poll() is None:
        assert time.monotonic() < deadline, "the deploy worker made no progress"
        time.sleep(0.002)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    return len(fake.fake.requests())


@pytest.mark.timeout(90)
@pytest.mark.parametrize("trial", range(TRIALS))
def test_sigkill_during_the_deploy_flow(
    postgres_url: str, fake: FakeCoolifyServer, tmp_path: Path, trial: int
) -> None:
    rng = random.Random(trial)
    client_log = tmp_path / "acks.jsonl"
    worker = start_worker(postgres_url, fake, client_log, trial)
    kill_after_requests(worker, fake, rng.randint(4, 60))

    settings = worker_settings(postgres_url, fake.base_url, fake.token)
    ledger = build_ledger(settings)
    models = build_read_models(settings, ledger)
    models.catch_up()  # what the restarted follower does first
    projected = models.dump()
    models.rebuild()
    assert models.dump() == projected

    stuck = [r.slot_id for r in ledger.slots() if r.status is SlotStatus.DEPLOYING and r.bot_id]
    releasing = [r.slot_id for r in ledger.slots() if r.status in OCCUPIED and not r.bot_id]
    config = policy_config(settings)
    ahead = timedelta(seconds=max(config.deploying_timeout_s, config.releasing_timeout_s) + 1)
    coolify = build_coolify(settings)
    quick = AppDriver(coolify, Polling(0.05, 0.2), stop_timeout_s=20.0, status_lag_s=0.5)
    policies = PolicyEngine(
        ledger,
        CoolifySlotRuntime(coolify, quick),
        config,
        clock=lambda: ledger.clock() + ahead,
    )
    policies.tick()
    coolify.close()

    def failed(reason_code: str) -> set[object]:
        return {
            e.originator_id
            for _, e in iter_log(ledger)
            if isinstance(e, Slot.SlotFailed) and e.reason_code == reason_code
        }

    assert failed("deploying_timeout") == set(stuck)
    assert failed("releasing_timeout") == set(releasing)
    assert inconsistent_slots(ledger, {SlotStatus.IDLE, SlotStatus.BUSY}) == []
    acks = ClientLog.read(client_log)
    assert acks.acks, "the worker acknowledged nothing before it was killed"
    # A kill between a release's SlotReleased and its drain leaves a slot idle beside
    # waiting entries until a drain runs; here none does, and the policies' clock jumped
    # ahead: that wait is the jump, not starvation.
    assert_log_sound(ledger, acks, queue_grace_s=ahead.total_seconds() + 30)
    print(
        f"\ntrial {trial}: {len(acks.acks)} acknowledged commands, {len(stuck)} stuck "
        f"deploying, {len(releasing)} left releasing"
    )
    models.close()
    ledger.close()
