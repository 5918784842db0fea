"""The deploy flow end to end: the real client over HTTP against the fake Coolify, on
both real stores. The seed's scenarios: pool of 3, 10 bots at once, queue by priority,
descriptions mirroring the ledger, Coolify failures recorded with their reasons."""

from __future__ import annotations

import statistics
import time
from collections.abc import Iterator
from dataclasses import dataclass

import pytest

from ledger.adapters.coolify import CoolifyClient
from ledger.adapters.descriptions import DescriptionMirror, describe
from ledger.application import SlotLedger
from ledger.application.deploy import (
    Acquired,
    LocalDeployPermits,
    Polling,
    Queued,
    SlotDeployer,
    SlotTemplate,
)
from ledger.bootstrap import build_ledger, follower_env
from ledger.devtools.fake_coolify import FakeCoolifyServer, FakeSettings
from ledger.domain import SlotStatus
from ledger.domain.invariants import check_events, iter_log
from ledger.settings import load_settings

FAKE = FakeSettings(
    deploy_delay=0.05,
    delete_delay=0.05,
    stop_delay=0.1,
    status_interval=0.1,
    rate_limit=0,
    seed=3,
)
"""Coolify's lags, short: the stop job runs 0.1 s after the request, the status sweep
every 0.1 s (a container is seen running by the second sweep after its deployment)."""
QUICK = Polling(0.02, 0.02)


@dataclass
class Stack:
    ledger: SlotLedger
    deployer: SlotDeployer
    mirror: DescriptionMirror
    fake: FakeCoolifyServer

    def busy_bots(self) -> set[str]:
        return {r.bot_id for r in self.ledger.slots() if r.status is SlotStatus.BUSY and r.bot_id}

    def history(self, slot_name: str) -> list[object]:
        slot_id = self.ledger.resolve_slot(slot_name)
        return [e for _, e in iter_log(self.ledger) if getattr(e, "originator_id", None) == slot_id]


@pytest.fixture(scope="module")
def fake_coolify() -> Iterator[FakeCoolifyServer]:
    with FakeCoolifyServer(FAKE) as server:
        yield server


@pytest.fixture
def stack(database_url: str, fake_coolify: FakeCoolifyServer) -> Iterator[Stack]:
    fake_coolify.fake.reset()
    fake_coolify.fake.configure(
        deploy_delay=FAKE.deploy_delay,
        stop_delay=FAKE.stop_delay,
        status_interval=FAKE.status_interval,
    )
    settings = load_settings(database_url=database_url, max_pool_size=3)
    ledger = build_ledger(settings)
    coolify = CoolifyClient(fake_coolify.base_url, fake_coolify.token, backoff_base=0.01)
    template = SlotTemplate(
        project_uuid=FAKE.project_uuid,
        server_uuid=FAKE.server_uuid,
        environment_name=FAKE.environment_name,
        image="ghcr.io/example/meeting-bot",
        image_tag="1.0",
    )
    deployer = SlotDeployer(
        ledger,
        coolify,
        template,
        LocalDeployPermits(4),
        polling=QUICK,
        exited_grace_s=2.0,
        stop_timeout_s=30.0,
        status_lag_s=0.5,
    )
    mirror = DescriptionMirror(ledger, coolify, follower_env(settings.store, "mirror", settings))
    yield Stack(ledger, deployer, mirror, fake_coolify)
    deployer.close()
    coolify.close()
    ledger.close()


def wait_for(condition, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached in time"
        time.sleep(0.02)


def assert_descriptions_mirror_the_ledger(stack: Stack) -> None:
    stack.mirror.sync()
    for row in stack.ledger.slots():
        assert row.coolify_uuid is not None
        app = stack.fake.fake.application(row.coolify_uuid)
        assert app is not None
        expected = describe(row, stack.ledger.get_slot(row.slot_id).last_error)
        assert app["description"] == expected
        assert len(expected) <= 255 and "<" not in expected


def test_three_slots_ten_bots_queue_by_priority(stack: Stack) -> None:
    results = {
        f"bot-{i}": stack.deployer.request(f"bot-{i}", priority=10 - i, config={"N": str(i)})
        for i in range(10)
    }
    acquired = [b for b, r in results.items() if isinstance(r, Acquired)]
    queued = {b: r for b, r in results.items() if isinstance(r, Queued)}
    assert acquired == ["bot-0", "bot-1", "bot-2"]
    assert len(queued) == 7
    # each saw its place on arrival; lower priority values go first
    assert [queued[f"bot-{i}"].position for i in range(3, 10)] == [1, 1, 1, 1, 1, 1, 1]
    assert [r.bot_id for r in stack.ledger.waiting()] == [f"bot-{i}" for i in range(9, 2, -1)]
    assert all(r.estimated_wait_ms > 0 for r in queued.values())
    stack.deployer.wait_idle()
    assert stack.busy_bots() == {"bot-0", "bot-1", "bot-2"}
    assert_descriptions_mirror_the_ledger(stack)

    served: list[str] = []
    for holder in ["bot-0", "bot-1", "bot-2", "bot-9", "bot-8", "bot-7", "bot-6"]:
        before = stack.busy_bots()
        stack.deployer.release(holder)
        stack.deployer.wait_idle()
        served += sorted(stack.busy_bots() - before)
    assert served == ["bot-9", "bot-8", "bot-7", "bot-6", "bot-5", "bot-4", "bot-3"]
    assert stack.ledger.waiting() == []
    # the bot's configuration reached its container's environment
    row = stack.ledger.slot_of_bot("bot-3")
    envs = {e["key"]: e["value"] for e in stack.fake.fake.env_vars(row.coolify_uuid or "")}
    assert envs["N"] == "3" and envs["SLOTLEDGER_BOT_ID"] == "bot-3"
    assert_descriptions_mirror_the_ledger(stack)
    report = check_events(iter_log(stack.ledger))
    assert report.ok, report.violations


def test_coolify_failure_leaves_the_slot_in_error_with_the_reason(stack: Stack) -> None:
    stack.fake.fake.set_faults(fail_next_deployments=1)
    result = stack.deployer.request("bot-a")
    assert isinstance(result, Acquired)
    stack.deployer.wait_idle()
    row = stack.ledger.index.slot_row(result.slot.id)
    assert row is not None and row.status is SlotStatus.ERROR
    failed = [e for e in stack.history(row.name) if type(e).__name__ == "SlotFailed"]
    assert len(failed) == 1
    assert "failed" in failed[0].reason and failed[0].reason_code == "deployment_failed"  # type: ignore[attr-defined]
    assert_descriptions_mirror_the_ledger(stack)
    app = stack.fake.fake.application(row.coolify_uuid or "")
    assert app is not None and app["description"].startswith("[ERROR] Coolify deployment")


def test_exited_container_and_queue_full_bug_are_failures_or_retries(stack: Stack) -> None:
    stack.fake.fake.set_faults(exit_after_deploy=True)
    exited = stack.deployer.request("bot-x")
    stack.deployer.wait_idle()
    assert isinstance(exited, Acquired)
    slot = stack.ledger.get_slot(exited.slot.id)
    assert slot.status is SlotStatus.ERROR and "exited" in (slot.last_error or "")
    stack.fake.fake.set_faults(exit_after_deploy=False, queue_full_next=1)
    retried = stack.deployer.request("bot-y")
    stack.deployer.wait_idle()
    assert isinstance(retried, Acquired)
    assert stack.ledger.get_slot(retried.slot.id).status is SlotStatus.BUSY


def test_application_deleted_outside_is_recreated_and_history_says_so(stack: Stack) -> None:
    first = stack.deployer.request("bot-1")
    stack.deployer.wait_idle()
    stack.deployer.release("bot-1")
    stack.deployer.wait_idle()  # the release's second step: the slot is idle again
    assert isinstance(first, Acquired)
    old_uuid = stack.ledger.get_slot(first.slot.id).coolify_uuid
    assert old_uuid is not None
    stack.deployer.coolify.delete_application(old_uuid)
    wait_for(lambda: stack.fake.fake.application(old_uuid) is None)
    again = stack.deployer.request("bot-2")
    stack.deployer.wait_idle()
    assert isinstance(again, Acquired) and again.slot.id == first.slot.id
    slot = stack.ledger.get_slot(first.slot.id)
    assert slot.status is SlotStatus.BUSY and slot.coolify_uuid != old_uuid
    recreated = [e for e in stack.history(slot.name) if type(e).__name__ == "SlotAppCreated"]
    assert [e.previous_uuid for e in recreated][-1] == old_uuid  # type: ignore[attr-defined]


def test_release_of_unknown_bot_is_typed(stack: Stack) -> None:
    from ledger.errors import BotNotFound

    with pytest.raises(BotNotFound, match="waits in no queue"):
        stack.deployer.release("nobody")


def test_repeated_cycles_reuse_one_slot(stack: Stack) -> None:
    """acquire -> busy -> release with a 0 s deployment delay, again and again; prints the
    median cycle time (``make bench`` measures it over 100 cycles)."""
    stack.fake.fake.configure(deploy_delay=0.0, stop_delay=0.0, status_interval=0.0)
    stack.deployer.app.polling = Polling(0.005, 0.005)
    times = []
    for i in range(20):
        started = time.perf_counter()
        result = stack.deployer.request(f"cycle-{i}")
        assert isinstance(result, Acquired) and result.task is not None
        result.task.result(timeout=60)
        stack.deployer.release(f"cycle-{i}")
        stack.deployer.wait_idle()
        times.append(time.perf_counter() - started)
    median_ms = statistics.median(times) * 1000
    print(f"\nfull acquire->busy->release cycle against the fake: median {median_ms:.1f} ms")
    assert [(r.name, r.status) for r in stack.ledger.slots()] == [("pool-bot-001", SlotStatus.IDLE)]


def test_release_during_deploy_ends_that_deploy_and_the_slot_stays_idle(stack: Stack) -> None:
    stack.fake.fake.configure(deploy_delay=30.0)
    result = stack.deployer.request("bot-r")
    assert isinstance(result, Acquired) and result.task is not None
    wait_for(lambda: stack.ledger.get_slot(result.slot.id).deployment_uuid is not None)
    stack.deployer.release("bot-r")
    result.task.result(timeout=60)  # the follow loop noticed the lease ended
    stack.deployer.wait_idle()
    events = [type(e).__name__ for e in stack.history(result.slot.name)]
    assert events[-3:] == ["SlotDeploying", "SlotReleasing", "SlotReleased"]
    slot = stack.ledger.get_slot(result.slot.id)
    assert slot.status is SlotStatus.IDLE
    deployments = stack.fake.fake.deployments(slot.coolify_uuid or "")
    assert [d["status"] for d in deployments if d["deployment_uuid"] == slot.deployment_uuid] == [
        "cancelled-by-user"
    ]


def test_a_queued_bot_cannot_also_take_a_slot(stack: Stack) -> None:
    for i in range(3):
        stack.deployer.request(f"holder-{i}")
    first = stack.deployer.request("waiter")
    assert isinstance(first, Queued)
    stack.deployer.wait_idle()
    again = stack.deployer.request("waiter", platform="other")  # answered with its entry
    assert isinstance(again, Queued) and again.entry.id == first.entry.id
    assert stack.ledger.index.slot_for_bot("waiter") is None
