"""Issue 12 through a running ``slotledger serve`` and the fake Coolify over HTTP, with the
fake lagging and queueing like Coolify: the stop job runs ``STOP_DELAY_S`` after the
request, the status sweep runs every ``SWEEP_S`` (until then a new container reads the
bare ``running`` its deployment wrote), per-app container behaviour is set through the
fake's control endpoint. After every test, every request the server sent to the fake is
checked against Coolify's official OpenAPI spec.

- item 1: each lease's configuration replaces the last one completely, and none stays on
  an idle slot;
- item 2 (with item 1): a deployment the fake says is already queued is cancelled, never
  adopted;
- items 3 and 4: a release cancels the lease's deployment, and the slot is available again
  only once the container is gone: no container runs on an idle slot, a late stop job
  never kills the next lease's container (and how long a slot stays unavailable);
- item 5: a crash-looping or degraded container is never busy;
- item 6 (the deploy flow's part): a release answers while Coolify throttles, and waiting
  out the throttle fails nothing;
- item 7: a failed deploy is retried on another slot or at the head of the queue, and
  ``GET /v1/deployments/{bot}`` shows where the bot stands.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.blackbox import HttpProcess, cluster, wait_for
from tests.integration.coolify.spec_check import load_spec, spec_problems

STOP_DELAY_S = 1.0
SWEEP_S = 0.3
DEPLOY_S = 0.4
LEDGER_KEYS = {"SLOTLEDGER_BOT_ID", "SLOTLEDGER_SLOT_ID", "SLOTLEDGER_LEASE", "SLOTLEDGER_ATTEMPT"}
QUICK = {
    "LEDGER_POLL_INITIAL_S": "0.05",
    "LEDGER_POLL_MAX_S": "0.25",
    "LEDGER_EXITED_GRACE_S": "4",
    "LEDGER_STOP_TIMEOUT_S": "60",
    "LEDGER_STATUS_LAG_S": "1.5",
    "LEDGER_RECOVERY_INTERVAL": "1",
    "LEDGER_POLICY_TICK_S": "0.2",
    "LEDGER_COOLIFY_TIMEOUT_S": "5",
}
"""The deploy flow and the policies at test speed; the lag settings cover the fake's."""


@dataclass
class Pool:
    """One server, its fake Coolify, and what the tests ask of both."""

    server: HttpProcess
    fake: HttpProcess
    http: httpx.Client

    def request(self, bot: str, **body: Any) -> httpx.Response:
        return self.http.post("/v1/deployments", json={"bot_id": bot, **body})

    def release(self, bot: str) -> httpx.Response:
        return self.http.delete(f"/v1/deployments/{bot}")

    def status(self, bot: str) -> dict[str, Any]:
        answer = self.http.get(f"/v1/deployments/{bot}")
        assert answer.status_code == 200, answer.text
        found: dict[str, Any] = answer.json()
        return found

    def wait_state(self, bot: str, *states: str, timeout: float = 60) -> dict[str, Any]:
        found: dict[str, Any] = wait_for(
            lambda: (s := self.status(bot))["state"] in states and s,
            timeout,
            f"bot {bot} {' or '.join(states)}",
        )
        return found

    def slot(self, ref: str) -> dict[str, Any]:
        found: dict[str, Any] = self.http.get(f"/v1/slots/{ref}").json()
        return found

    def history(self, ref: str) -> list[dict[str, Any]]:
        events: list[dict[str, Any]] = self.http.get(f"/v1/slots/{ref}/history").json()["events"]
        return events

    def coolify(self) -> dict[str, Any]:
        """The fake's whole state: apps with their env vars and containers, deployments,
        pending stop jobs, the request log."""
        state: dict[str, Any] = httpx.get(self.fake.url + "/_fake/state", timeout=30).json()
        return state

    def app(self, app_uuid: str) -> dict[str, Any]:
        found: dict[str, Any] = self.coolify()["apps"][app_uuid]
        return found

    def control(self, what: str, changes: dict[str, Any]) -> None:
        answer = httpx.post(f"{self.fake.url}/_fake/{what}", json=changes, timeout=30)
        assert answer.status_code == 200, answer.text


def envs(app: dict[str, Any]) -> dict[str, str]:
    return {e["key"]: e["value"] for e in app["envs"]}


def assert_every_request_follows_the_spec(fake: HttpProcess) -> int:
    """Every API request the fake received, checked against the official spec (the fake
    logs them without the token; a placeholder stands in for it). ``/api/health``, which
    the harness polls, is outside the spec's server."""
    spec = load_spec()
    logged = httpx.get(fake.url + "/_fake/state", timeout=30).json()["requests"]
    requests = [r for r in logged if r["path"].startswith("/api/v1/")]  # the spec's server
    problems = []
    for r in requests:
        body = r["body"]
        request = httpx.Request(
            r["method"],
            f"https://app.coolify.io{r['path']}",
            params=r["query"],
            headers={
                **{k: v for k, v in r["headers"].items() if k != "content-length"},
                "authorization": "Bearer checked",
            },
            json=body if isinstance(body, dict | list) else None,
        )
        problems += [f"{r['method']} {r['path']}: {p}" for p in spec_problems(spec, request)]
    assert problems == []
    return len(requests)


@contextmanager
def start(tmp_path: Path, database_url: str, pool_size: int, **settings: str) -> Iterator[Pool]:
    """A server with a pool of ``pool_size`` on the fake; every request it sent is checked
    against the spec at the end."""
    with cluster(tmp_path) as running:
        fake = running.fake_coolify(
            deploy_delay=DEPLOY_S, stop_delay=STOP_DELAY_S, status_interval=SWEEP_S
        )
        env = running.env(
            database_url, fake, LEDGER_MAX_POOL_SIZE=str(pool_size), **QUICK, **settings
        )
        server = running.serve(env)
        with server.client() as http:
            yield Pool(server, fake, http)
        assert_every_request_follows_the_spec(fake)


@pytest.fixture
def one_slot(tmp_path: Path, sqlite_url: str) -> Iterator[Pool]:
    with start(tmp_path, sqlite_url, 1) as pool:
        yield pool


def serve_one_bot(pool: Pool, bot: str, config: dict[str, str]) -> dict[str, Any]:
    """Request a slot for ``bot`` and wait until it is busy; its status."""
    answer = pool.request(bot, config=config)
    assert answer.status_code in (201, 202), answer.text
    return pool.wait_state(bot, "busy")


# --- item 1 (and 2): one lease's configuration, nothing of the others -------------------

CONFIGS = [
    ("bot-a", {"MEETING_URL": "https://meet.example/a", "TOKEN": "secret-a"}),
    ("bot-b", {"MEETING_URL": "https://meet.example/b"}),  # overlaps; TOKEN absent
    ("bot-c", {}),  # nothing of its own
    ("bot-d", {"TOKEN": "secret-d", "LANGUAGE": "fr"}),
]


def test_each_lease_sees_exactly_its_own_configuration(one_slot: Pool) -> None:
    pool = one_slot
    per_lease: list[Counter[str]] = []
    for lease, (bot, config) in enumerate(CONFIGS, 1):
        seen = len(pool.coolify()["requests"])
        slot = serve_one_bot(pool, bot, config)["slot"]
        app = pool.app(slot["coolify_uuid"])
        assert envs(app) == {
            **config,
            "SLOTLEDGER_BOT_ID": bot,
            "SLOTLEDGER_SLOT_ID": slot["slot_id"],
            "SLOTLEDGER_LEASE": str(lease),
            "SLOTLEDGER_ATTEMPT": "0",
        }, f"lease {lease} of {bot}"
        assert pool.release(bot).json()["outcome"] == "released"
        pool.wait_state(bot, "released")
        idle = pool.app(slot["coolify_uuid"])
        assert set(envs(idle)) == LEDGER_KEYS, "a bot's configuration stayed on the idle slot"
        assert idle["containers"] == [] and idle["status"].startswith("exited")
        per_lease.append(
            Counter(
                f"{r['method']} {_template(r['path'])}"
                for r in pool.coolify()["requests"][seen:]
                if r["path"].startswith(("/api/v1/applications/", "/api/v1/deployments/"))
            )
        )
    print("\nrequests about the slot's application per lease (request to released):")
    for lease, counts in enumerate(per_lease[1:], 2):
        print(f"  lease {lease} ({sum(counts.values())}): {dict(sorted(counts.items()))}")


def _template(path: str) -> str:
    """A request path with its uuids replaced, to count requests by route."""
    parts = path.removeprefix("/api/v1").split("/")
    named = {"applications", "deployments", "envs", "bulk", "start", "stop", "cancel", ""}
    return "/".join(p if p in named else "{id}" for p in parts)


def test_a_deployment_queued_by_someone_else_is_cancelled_not_adopted(one_slot: Pool) -> None:
    """Item 2: a deployment queued before this lease's configuration was written (here by
    hand in Coolify, between two leases) is cancelled; the lease starts its own."""
    pool = one_slot
    slot = serve_one_bot(pool, "bot-a", {"MEETING_URL": "https://meet.example/a"})["slot"]
    app_uuid = slot["coolify_uuid"]
    pool.release("bot-a")
    pool.wait_state("bot-a", "released")
    pool.control("settings", {"deploy_delay": 30.0})
    foreign = httpx.post(
        f"{pool.fake.url}/api/v1/applications/{app_uuid}/start",
        headers={"Authorization": "Bearer fake-coolify-token", "Accept": "application/json"},
        timeout=30,
    ).json()["deployment_uuid"]
    pool.control("settings", {"deploy_delay": DEPLOY_S})

    mine = serve_one_bot(pool, "bot-b", {"MEETING_URL": "https://meet.example/b"})["slot"]

    deployments = pool.coolify()["deployments"]
    assert deployments[foreign]["status"] == "cancelled-by-user"
    assert mine["deployment_uuid"] != foreign
    assert deployments[mine["deployment_uuid"]]["status"] == "finished"
    assert envs(pool.app(app_uuid))["MEETING_URL"] == "https://meet.example/b"


# --- items 3 and 4: a release ends the deployment and waits for the container -----------


def watch_idle_slot(pool: Pool, slot_id: str, until: Callable[[], bool]) -> list[str]:
    """Poll the ledger and the fake together until ``until()``: whenever the ledger shows
    the slot idle, the fake must show its application without a container and exited.
    Returns what was wrong, as seen."""
    wrong = []
    deadline = time.monotonic() + 60
    while not until():
        assert time.monotonic() < deadline, "the slot never settled"
        slot = pool.slot(slot_id)
        if slot["status"] == "idle" and slot["coolify_uuid"]:
            app = pool.app(slot["coolify_uuid"])
            if app["containers"] or not app["status"].startswith("exited"):
                wrong.append(f"idle with {app['status']}, containers {app['containers']}")
        time.sleep(0.05)
    return wrong


@pytest.mark.parametrize("when", ["deployment_in_flight", "right_after_the_201"])
def test_a_release_during_the_deploy_cancels_it_and_no_container_runs_idle(
    one_slot: Pool, when: str
) -> None:
    pool = one_slot
    serve_one_bot(pool, "warm-up", {})  # the slot's application exists, its status exited
    pool.release("warm-up")
    pool.wait_state("warm-up", "released")
    pool.control("settings", {"deploy_delay": 4.0})
    answer = pool.request("bot-r", config={"MEETING_URL": "https://meet.example/r"})
    assert answer.status_code == 201, answer.text
    slot_id = answer.json()["slot_id"]
    if when == "deployment_in_flight":
        # past half the deployment: its container is up, the status still says exited
        wait_for(lambda: pool.slot(slot_id)["deployment_uuid"], what="the deployment")
        app_uuid = pool.slot(slot_id)["coolify_uuid"]
        wait_for(lambda: pool.app(app_uuid)["containers"], what="its container")
    released = pool.release("bot-r")
    assert released.status_code == 200 and released.json()["outcome"] == "released"

    def settled() -> bool:
        state = pool.coolify()
        active = [
            d for d in state["deployments"].values() if d["status"] in ("queued", "in_progress")
        ]
        return pool.slot(slot_id)["status"] == "idle" and not active and not state["stops_pending"]

    assert watch_idle_slot(pool, slot_id, settled) == []
    state = pool.coolify()
    deployment = pool.slot(slot_id)["deployment_uuid"]
    cancels = [r["path"] for r in state["requests"] if r["path"].endswith("/cancel")]
    if deployment is not None:  # the lease's deployment was recorded: it was cancelled
        assert state["deployments"][deployment]["status"] == "cancelled-by-user"
        assert f"/api/v1/deployments/{deployment}/cancel" in cancels
    app = state["apps"][pool.slot(slot_id)["coolify_uuid"]]
    assert app["containers"] == [] and set(envs(app)) == LEDGER_KEYS
    events = pool.history(slot_id)
    assert [e["type"] for e in events][-2:] == ["SlotReleasing", "SlotReleased"]
    assert pool.status("bot-r")["state"] == "released"
    print(f"\n{when}: slot unavailable {_at(events[-1]) - _at(events[-2]):.2f}s after release")


def test_a_late_stop_job_never_kills_the_next_lease(one_slot: Pool) -> None:
    """The next bot waits while the stop job is still queued in Coolify; it is served
    only once the job has run, so the job cannot remove its container."""
    pool = one_slot
    first = serve_one_bot(pool, "bot-1", {"MEETING_URL": "https://meet.example/1"})["slot"]
    app_uuid = first["coolify_uuid"]
    released = pool.release("bot-1")
    assert released.json()["slot"]["status"] == "busy"  # the container still occupies it
    queued = pool.request("bot-2", config={"MEETING_URL": "https://meet.example/2"})
    assert queued.status_code == 202, "the slot was available before its container was gone"

    second = pool.wait_state("bot-2", "busy")["slot"]
    wait_for(lambda: not pool.coolify()["stops_pending"], what="every stop job has run")
    app = pool.app(app_uuid)
    assert second["slot_id"] == first["slot_id"] and second["lease"] == first["lease"] + 1
    assert app["containers"] == [second["deployment_uuid"]], "the stop removed bot-2's container"
    assert app["status"].startswith("running")
    assert pool.slot(second["slot_id"])["status"] == "busy"

    events = {e["type"]: e for e in pool.history(first["slot_id"]) if e["bot_id"] == "bot-1"}
    unavailable = _at(events["SlotReleased"]) - _at(events["SlotReleasing"])
    print(
        f"\nslot unavailable after release for {unavailable:.2f}s "
        f"(the fake's stop job runs {STOP_DELAY_S:.1f}s after the request)"
    )
    assert unavailable >= STOP_DELAY_S


def _at(event: dict[str, Any]) -> float:
    return datetime.fromisoformat(event["occurred_at"]).timestamp()


# --- item 5: running after its own deployment, never a crash loop -----------------------


@pytest.mark.parametrize("container", ["crashloop", "degraded", "exits"])
def test_a_container_that_does_not_run_is_never_busy(
    tmp_path: Path, sqlite_url: str, container: str
) -> None:
    with start(tmp_path, sqlite_url, 1, LEDGER_DEPLOY_RETRIES="0") as pool:
        slot = serve_one_bot(pool, "warm-up", {})["slot"]
        pool.release("warm-up")
        pool.wait_state("warm-up", "released")
        pool.control(f"apps/{slot['coolify_uuid']}", {"container": container})

        assert pool.request("bot-x").status_code == 201
        failed = pool.wait_state("bot-x", "failed")

        lease = [e for e in pool.history(slot["slot_id"]) if e["bot_id"] == "bot-x"]
        assert "SlotStarted" not in [e["type"] for e in lease]
        assert failed["reason"].startswith("container not running 4s after its deployment")
        shown = {"crashloop": ("restarting", "degraded"), "degraded": ("degraded",)}
        assert failed["reason"].split(": ")[-1].startswith(shown.get(container, ("exited",)))


# --- item 6 (the deploy flow's part): answers that never wait for Coolify ---------------


def test_a_release_answers_while_coolify_throttles_and_waiting_fails_nothing(
    one_slot: Pool,
) -> None:
    pool = one_slot
    slot = serve_one_bot(pool, "bot-t", {"TOKEN": "secret-t"})["slot"]
    pool.control("settings", {"rate_limit": 1, "rate_window": 2.0})
    httpx.get(pool.fake.url + "/api/v1/version", timeout=30)  # the window's one request

    answer = pool.release("bot-t")

    assert answer.status_code == 200 and answer.json()["outcome"] == "released"
    assert pool.app(slot["coolify_uuid"])["status"].startswith("running")  # no stop ran yet
    assert pool.status("bot-t")["state"] == "releasing"
    throttled = len(pool.coolify()["requests"])
    wait_for(lambda: len(pool.coolify()["requests"]) > throttled + 2, what="more 429s")
    pool.control("settings", {"rate_limit": 0})
    pool.wait_state("bot-t", "released")
    assert pool.slot(slot["slot_id"])["status"] == "idle"  # not failed on the 429s


# --- item 7: a failed deploy does not drop the bot --------------------------------------


def test_a_failed_deploy_is_retried_on_another_slot(tmp_path: Path, sqlite_url: str) -> None:
    with start(tmp_path, sqlite_url, 2) as pool:
        pool.control("faults", {"fail_next_deployments": 1})
        first = pool.request("bot-f", config={"MEETING_URL": "https://meet.example/f"})
        assert first.status_code == 201
        busy = pool.wait_state("bot-f", "busy")

        assert busy["slot"]["slot_id"] != first.json()["slot_id"]
        failed = pool.slot(first.json()["slot_id"])
        assert failed["status"] in ("error", "idle")  # failed, perhaps recovered already
        app = pool.app(busy["slot"]["coolify_uuid"])
        assert envs(app)["MEETING_URL"] == "https://meet.example/f"  # its config came along
        assert envs(app)["SLOTLEDGER_ATTEMPT"] == "1"
        assert pool.http.get("/v1/deployments/nobody").json()["error"] == "bot_not_found"


def test_a_failed_deploy_goes_back_to_the_head_of_the_queue(
    tmp_path: Path, sqlite_url: str
) -> None:
    with start(tmp_path, sqlite_url, 1) as pool:
        serve_one_bot(pool, "warm-up", {})
        pool.control("settings", {"deploy_delay": 3.0})  # room to queue bot-q2 meanwhile
        pool.control("faults", {"fail_next_deployments": 1})
        pool.release("warm-up")
        assert pool.request("bot-q1").status_code == 202  # waits for the releasing slot
        pool.wait_state("bot-q1", "deploying")
        assert pool.request("bot-q2").status_code == 202
        # bot-q1's deploy fails; no other slot: it waits again, ahead of bot-q2
        queued = pool.wait_state("bot-q1", "queued")
        assert queued["position"] == 1 and queued["estimated_wait_ms"] >= 0
        assert queued["reason"].startswith("retry after a failed deploy: Coolify deployment")
        assert pool.status("bot-q2")["position"] == 2

        pool.wait_state("bot-q1", "busy", timeout=120)  # the slot recovered: q1 first
        assert pool.status("bot-q2")["state"] == "queued"


def test_a_deploy_that_keeps_failing_ends_failed_with_its_reason(
    tmp_path: Path, sqlite_url: str
) -> None:
    with start(tmp_path, sqlite_url, 2, LEDGER_DEPLOY_RETRIES="1") as pool:
        pool.control("faults", {"fail_next_deployments": 2})
        assert pool.request("bot-k").status_code == 201
        failed = pool.wait_state("bot-k", "failed")
        assert failed["reason"].startswith("Coolify deployment") and "failed" in failed["reason"]
        assert failed["since"] is not None and failed["slot"] is None
        slots = pool.http.get("/v1/slots").json()
        assert len(slots) == 2  # tried on both, once each
