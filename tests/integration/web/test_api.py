"""The HTTP API against a running service, on SQLite and PostgreSQL (``api``) and, for
the HTTP layer alone, on SQLite (``sqlite_api``): every endpoint, and its error cases."""

from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from ledger.adapters.coolify import CoolifyClient
from ledger.devtools.fake_coolify import FakeCoolifyServer
from tests.integration.web.conftest import MakeApi
from tests.integration.web.support import Api, wait_until

ERROR_KEYS = {"error", "detail"}


def deploy(api: Api, bot_id: str, **fields: Any) -> httpx.Response:
    return api.client.post("/v1/deployments", json={"bot_id": bot_id, **fields})


def assert_error(answer: httpx.Response, status: int, code: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert set(body) == ERROR_KEYS and body["error"] == code, body


def holder_slot(api: Api, bot_id: str) -> dict[str, Any] | None:
    slots = api.client.get("/v1/slots").json()
    return next((s for s in slots if s["bot_id"] == bot_id), None)


def wait_for_status(api: Api, ref: str, status: str) -> None:
    wait_until(lambda: api.slot(ref)["status"] == status, what=f"{ref} {status}")


# --- deployments ---------------------------------------------------------------------------


def test_a_request_gets_a_deploying_slot_and_a_repeat_gets_the_same_one(api: Api) -> None:
    api.provision(1)
    answer = deploy(api, "bot-1", config={"MEETING_URL": "https://meet.example.com/1"})
    assert answer.status_code == 201, answer.text
    slot = answer.json()
    assert slot["status"] == "deploying" and slot["bot_id"] == "bot-1" and slot["lease"] == 1
    # the answer waited for the read models: the client reads its own write
    location = answer.headers["location"]
    assert api.client.get(location).json()["slot_id"] == slot["slot_id"]
    repeated = deploy(api, "bot-1")  # a safe retry: the same slot, nothing new
    assert repeated.status_code == 200 and repeated.json()["slot_id"] == slot["slot_id"]
    wait_for_status(api, slot["name"], "busy")  # the deploy ran on the fake Coolify


def test_a_full_pool_queues_and_a_release_dispatches_the_queue(api: Api) -> None:
    for bot in ("bot-a", "bot-b", "bot-c"):  # max size 3: the pool grows on demand
        assert deploy(api, bot).status_code == 201
    queued = deploy(api, "bot-d", priority=5, queue_timeout_s=120)
    assert queued.status_code == 202, queued.text
    body = queued.json()
    assert body["position"] == 1 and body["estimated_wait_ms"] > 0 and body["priority"] == 5
    repeated = deploy(api, "bot-d", priority=5, queue_timeout_s=120)
    assert repeated.status_code == 202 and repeated.json()["queued_at"] == body["queued_at"]
    assert [q["bot_id"] for q in api.client.get("/v1/queue").json()] == ["bot-d"]
    stats = api.client.get("/v1/queue/stats").json()
    assert stats["length"] == 1 and stats["oldest_queued_at"] is not None

    released = api.client.delete("/v1/deployments/bot-a")
    assert released.status_code == 200, released.text
    assert released.json()["outcome"] == "released"
    # the lease ended at once; the slot is free once its container is gone
    assert released.json()["slot"]["bot_id"] is None
    assert released.json()["slot"]["status"] in ("deploying", "busy")
    wait_until(lambda: holder_slot(api, "bot-d") is not None, what="bot-d dispatched")
    assert api.client.get("/v1/queue").json() == []
    assert_error(api.client.delete("/v1/deployments/bot-a"), 404, "bot_not_found")
    assert api.client.get("/v1/queue/stats").json()["average_wait_s"] is not None


def test_a_queued_request_can_be_cancelled(api: Api) -> None:
    for bot in ("bot-a", "bot-b", "bot-c"):
        deploy(api, bot)
    assert deploy(api, "bot-q").status_code == 202
    answer = api.client.delete("/v1/deployments/bot-q")
    assert answer.status_code == 200
    assert answer.json() == {"bot_id": "bot-q", "outcome": "cancelled", "slot": None}
    assert api.client.get("/v1/queue").json() == []


# --- heartbeats and failures -----------------------------------------------------------------


def test_the_holders_heartbeat_starts_its_slot_and_strangers_are_refused(api: Api) -> None:
    (name,) = api.provision(1)
    outcome = api.service.ledger.acquire("bot-h")  # deploying, without a Coolify deploy
    api.service.settle(outcome.position)

    stranger = api.client.post(f"/v1/slots/{name}/heartbeat", json={"bot_id": "bot-x"})
    assert_error(stranger, 409, "wrong_bot")
    first = api.client.post(f"/v1/slots/{name}/heartbeat", json={"bot_id": "bot-h"})
    assert first.status_code == 200, first.text
    assert first.json()["started"] is True and first.json()["slot"]["status"] == "busy"
    again = api.client.post(f"/v1/slots/{outcome.slot.id}/heartbeat", json={"bot_id": "bot-h"})
    assert again.json()["started"] is False and again.json()["slot"]["status"] == "busy"

    for ref in ("pool-bot-999", str(uuid.uuid4())):
        missing = api.client.post(f"/v1/slots/{ref}/heartbeat", json={"bot_id": "bot-h"})
        assert_error(missing, 404, "slot_not_found")
    for _ in range(5):  # a stranger repeating itself: answered alike, recorded once
        assert_error(
            api.client.post(f"/v1/slots/{name}/heartbeat", json={"bot_id": "bot-x"}),
            409,
            "wrong_bot",
        )
    events = api.client.get(f"/v1/slots/{name}/history").json()["events"]
    assert [e["type"] for e in events].count("SlotHeartbeatRefused") == 1
    metrics = api.client.get("/metrics").text
    assert "slotledger_heartbeat_refusals_unrecorded_total 5.0" in metrics


def test_an_operator_fails_a_slot_and_a_retired_one_refuses_the_transition(api: Api) -> None:
    first, second = api.provision(2)
    failed = api.client.post(f"/v1/slots/{first}/fail", json={"reason": "disk full"})
    assert failed.status_code == 200, failed.text
    assert failed.json()["status"] == "error" and failed.json()["last_error"] == "disk full"
    assert api.client.get("/v1/pool/stats").json()["error"] == 1

    ledger = api.service.ledger
    ledger.retire(ledger.resolve_slot(second), "worn out")
    refused = api.client.post(f"/v1/slots/{second}/fail", json={"reason": "again"})
    assert_error(refused, 409, "illegal_transition")
    assert_error(api.client.post(f"/v1/slots/{first}/fail", json={"reason": " "}), 422, "bad_input")


# --- queries ---------------------------------------------------------------------------------


def test_pool_stats_are_exactly_the_seed_keys(api: Api) -> None:
    api.provision(3)
    assert deploy(api, "bot-s").status_code == 201
    stats = api.client.get("/v1/pool/stats").json()
    assert list(stats) == ["total", "idle", "deploying", "busy", "error", "maxSize"]
    assert stats["total"] == 3 and stats["idle"] == 2 and stats["error"] == 0
    assert stats["deploying"] + stats["busy"] == 1 and stats["maxSize"] == 3


def test_the_pool_at_an_earlier_instant(api: Api) -> None:
    api.provision(2)
    before = datetime.now(UTC)
    time.sleep(0.01)
    slot = deploy(api, "bot-t").json()
    wait_for_status(api, slot["name"], "busy")

    past = api.client.get("/v1/pool/at", params={"t": before.isoformat()})
    assert past.status_code == 200, past.text
    assert {s["status"] for s in past.json()["slots"]} == {"idle"}
    assert past.json()["stats"]["idle"] == 2
    now = api.client.get("/v1/pool/at", params={"t": datetime.now(UTC).isoformat()}).json()
    assert now["stats"]["busy"] == 1
    naive = api.client.get("/v1/pool/at", params={"t": before.replace(tzinfo=None).isoformat()})
    assert naive.json()["stats"] == past.json()["stats"]  # naive instants are UTC
    empty = api.client.get("/v1/pool/at", params={"t": "2000-01-01T00:00:00Z"}).json()
    assert empty["slots"] == [] and empty["stats"]["total"] == 0

    for bad in ({"t": "yesterday"}, {}, {"t": "9999-12-31T23:59:59-14:00"}):
        assert_error(api.client.get("/v1/pool/at", params=bad), 422, "bad_input")


def test_slots_by_id_and_name_and_their_history(api: Api) -> None:
    api.provision(2)
    slot = deploy(api, "bot-y").json()
    wait_for_status(api, slot["name"], "busy")

    assert len(api.client.get("/v1/slots").json()) == 2
    busy = api.client.get("/v1/slots", params={"status": "busy"}).json()
    assert [s["slot_id"] for s in busy] == [slot["slot_id"]]
    both = api.client.get("/v1/slots", params=[("status", "busy"), ("status", "idle")]).json()
    assert len(both) == 2
    other = api.client.get("/v1/slots", params={"platform": "no-such-platform"}).json()
    assert other == []
    assert_error(api.client.get("/v1/slots", params={"status": "asleep"}), 422, "bad_input")
    assert api.slot(slot["name"]) == api.slot(slot["slot_id"])
    history = api.client.get(f"/v1/slots/{slot['name']}/history").json()
    assert [i["status"] for i in history["intervals"]] == ["idle", "deploying", "busy"]
    assert history["intervals"][-1]["end"] is None
    assert set(history["time_in_status"]) == {"idle", "deploying", "busy"}
    types = [e["type"] for e in history["events"]]
    assert types[0] == "SlotProvisioned" and {"SlotAcquired", "SlotStarted"} <= set(types)

    assert_error(api.client.get("/v1/slots/pool-bot-404"), 404, "slot_not_found")
    assert_error(api.client.get(f"/v1/slots/{uuid.uuid4()}/history"), 404, "slot_not_found")
    assert_error(api.client.get("/v1/slots/bad%20ref"), 422, "bad_input")


def test_events_by_slot_bot_type_window_and_limit(api: Api) -> None:
    names = api.provision(2)
    slot = deploy(api, "bot-e").json()
    wait_for_status(api, slot["name"], "busy")
    get = api.client.get

    everything = get("/v1/events").json()
    assert [e["position"] for e in everything] == sorted(e["position"] for e in everything)
    assert {e["bot_id"] for e in get("/v1/events", params={"bot": "bot-e"}).json()} == {"bot-e"}
    provisioned = get("/v1/events", params={"type": "SlotProvisioned"}).json()
    assert len(provisioned) == 2
    by_slot = get("/v1/events", params={"slot": names[1]}).json()
    assert by_slot and {e["slot_id"] for e in by_slot} == {api.slot(names[1])["slot_id"]}
    assert get("/v1/events", params={"limit": 1}).json() == everything[:1]
    future = (datetime.now(UTC) + timedelta(hours=1)).isoformat()
    assert get("/v1/events", params={"since": future}).json() == []
    assert get("/v1/events", params={"slot": "pool-bot-404"}).json() == []

    earlier = (datetime.now(UTC) - timedelta(hours=1)).isoformat()
    for bad in (
        {"since": future, "until": earlier},
        {"type": "SlotExploded"},
        {"since": "not-a-time"},
        {"limit": 0},
        {"bot": "bad bot"},
    ):
        assert_error(get("/v1/events", params=bad), 422, "bad_input")


# --- operations ------------------------------------------------------------------------------


def test_metrics_expose_the_pool_the_latencies_and_coolify_errors(
    api: Api, fake_coolify: FakeCoolifyServer
) -> None:
    api.provision(2)
    slot = deploy(api, "bot-m").json()
    wait_for_status(api, slot["name"], "busy")
    app_uuid = api.slot(slot["name"])["coolify_uuid"]
    with CoolifyClient(fake_coolify.base_url, fake_coolify.token) as coolify:
        coolify.delete_application(app_uuid)
    wait_until(lambda: fake_coolify.fake.application(app_uuid) is None, what="app deleted")
    api.client.delete("/v1/deployments/bot-m")  # clearing the vanished app: a 404

    def scraped() -> str:
        answer = api.client.get("/metrics")
        assert answer.status_code == 200 and answer.headers["content-type"].startswith("text/plain")
        return answer.text

    released = 'slotledger_transitions_total{source="busy",target="idle"} 1.0'
    wait_until(lambda: released in scraped(), what="the release in the transition log")
    text = scraped()
    for line in (
        'slotledger_deploying_seconds_count{to="busy"} 1.0',
        'slotledger_slots{status="idle"} 2.0',
        'slotledger_slots{status="busy"} 0.0',
        "slotledger_pool_max_size 3.0",
        "slotledger_queue_length 0.0",
        'slotledger_acquire_latency_seconds_count{outcome="acquired"} 1.0',
        'slotledger_coolify_errors_total{method="GET",path="/applications/{uuid}",'
        'status="404"} 1.0',
        "slotledger_projection_lag_events 0.0",
    ):
        assert line in text, line
    assert "slotledger_projection_lag_seconds" in text


def test_health_and_readiness(api: Api) -> None:
    assert api.client.get("/healthz").json() == {"status": "ok"}
    wait_until(lambda: api.client.get("/readyz").status_code == 200, what="ready")
    ready = api.client.get("/readyz").json()
    assert ready["status"] == "ready" and ready["problems"] == [] and ready["lag"]["behind"] == 0


def test_a_stopped_service_is_not_ready_and_refuses_commands(
    sqlite_url: str, make_api: MakeApi
) -> None:
    api = make_api(sqlite_url, start=False)
    answer = api.client.get("/readyz")
    assert answer.status_code == 503 and answer.json()["status"] == "not_ready"
    assert answer.json()["problems"] == ["the service is not running"]
    assert_error(deploy(api, "bot-n"), 503, "not_started")


def test_readiness_fails_at_once_when_the_projection_stops_following(sqlite_api: Api) -> None:
    wait_until(lambda: sqlite_api.client.get("/readyz").status_code == 200)
    ready = sqlite_api.client.get("/readyz").json()
    states = {loop["name"]: loop["state"] for loop in ready["loops"]}
    core = ("read-models", "transition-log", "description-mirror", "policy-worker")
    assert {name: states[name] for name in (*core, "queue-drain", "deploys")} == dict.fromkeys(
        (*core, "queue-drain", "deploys"), "running"
    )
    assert {"coolify", "drift-reconciler", "invariant-checker"} <= set(states), states
    sqlite_api.service.follower.stop()
    answer = sqlite_api.client.get("/readyz")  # no grace period, no lag needed
    assert answer.status_code == 503
    assert answer.json()["problems"] == ["read-models has stopped"]


# --- the HTTP layer --------------------------------------------------------------------------


def test_malformed_json_is_a_400(sqlite_api: Api) -> None:
    answer = sqlite_api.client.post(
        "/v1/deployments", content=b'{"bot_id": ', headers={"content-type": "application/json"}
    )
    assert_error(answer, 400, "malformed_json")


@pytest.mark.parametrize(
    "body",
    [
        {},
        {"bot_id": "has space"},
        {"bot_id": "b", "colour": "red"},
        {"bot_id": "b", "priority": 5000},
        {"bot_id": "b", "queue_timeout_s": 0},
        {"bot_id": "b", "queue_timeout_s": 601},
        {"bot_id": "b", "platform": "Not_Valid"},
        {"bot_id": "b", "config": {"1BAD": "x"}},
        {"bot_id": "b", "config": {"OK": "nul\u0000inside"}},
        {"bot_id": "b", "config": {"OK": 3}},
        ["bot_id"],
    ],
)
def test_invalid_requests_are_422(sqlite_api: Api, body: Any) -> None:
    assert_error(sqlite_api.client.post("/v1/deployments", json=body), 422, "bad_input")


def test_nan_is_not_a_timeout(sqlite_api: Api) -> None:
    answer = sqlite_api.client.post(
        "/v1/deployments",
        content=b'{"bot_id": "b", "queue_timeout_s": NaN}',
        headers={"content-type": "application/json"},
    )
    assert answer.status_code in (400, 422) and set(answer.json()) == ERROR_KEYS


def test_unknown_routes_and_methods_answer_json(sqlite_api: Api) -> None:
    assert_error(sqlite_api.client.get("/v1/nothing-here"), 404, "not_found")
    wrong = sqlite_api.client.put("/v1/pool/stats")
    assert_error(wrong, 405, "method_not_allowed")
    assert wrong.headers["allow"] == "GET"


def test_a_bug_is_a_500_that_reveals_nothing(
    sqlite_api: Api, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken() -> None:
        raise RuntimeError("secret internals")

    monkeypatch.setattr(sqlite_api.service.models, "pool_stats", broken)
    answer = sqlite_api.client.get("/v1/pool/stats")
    assert_error(answer, 500, "internal_error")
    assert "secret" not in answer.text


def test_mutations_need_the_token_when_one_is_set(sqlite_url: str, make_api: MakeApi) -> None:
    api = make_api(sqlite_url, api_token="s3cret-token")
    (name,) = api.provision(1)
    attempts = [
        ("POST", "/v1/deployments", {"bot_id": "bot-1"}),
        ("DELETE", "/v1/deployments/bot-1", None),
        ("POST", f"/v1/slots/{name}/heartbeat", {"bot_id": "bot-1"}),
        ("POST", f"/v1/slots/{name}/fail", {"reason": "x"}),
        ("POST", f"/v1/slots/{name}/drain", {"reason": "x"}),
        ("POST", "/v1/pool/undrain", {"reason": "x"}),
    ]
    for headers in ({}, {"Authorization": "Bearer wrong"}, {"Authorization": "Basic s3cret-token"}):
        for method, path, body in attempts:
            answer = api.client.request(method, path, json=body, headers=headers)
            assert_error(answer, 401, "unauthorized")
            assert answer.headers["www-authenticate"] == "Bearer"
            assert "s3cret" not in answer.text
    good = {"Authorization": "Bearer s3cret-token"}
    accepted = api.client.post("/v1/deployments", json={"bot_id": "bot-1"}, headers=good)
    assert accepted.status_code == 201
    assert api.client.get("/v1/pool/stats").status_code == 200  # reads stay open
    assert api.client.delete("/v1/deployments/bot-1", headers=good).status_code == 200


def test_openapi_documents_every_endpoint(sqlite_api: Api) -> None:
    spec = sqlite_api.client.get("/openapi.json").json()
    assert set(spec["paths"]) == {
        "/v1/deployments",
        "/v1/deployments/{bot_id}",
        "/v1/slots/{slot_id}/heartbeat",
        "/v1/slots/{slot_id}/fail",
        "/v1/pool/stats",
        "/v1/pool/at",
        "/v1/queue/stats",
        "/v1/queue",
        "/v1/slots",
        "/v1/slots/{slot_id}",
        "/v1/slots/{slot_id}/history",
        "/v1/events",
        "/v1/pool",
        "/v1/pool/drain",
        "/v1/pool/undrain",
        "/v1/slots/{slot_id}/drain",
        "/v1/slots/{slot_id}/undrain",
        "/v1/pool/timeline",
        "/v1/stats/deploy-times",
        "/v1/stats/queue-wait",
        "/metrics",
        "/healthz",
        "/readyz",
    }
    post = spec["paths"]["/v1/deployments"]["post"]
    assert {"201", "202", "409", "401", "422"} <= set(post["responses"])
    assert post["security"] == [{"HTTPBearer": []}]


def test_the_dashboard_and_its_assets_are_served(sqlite_api: Api) -> None:
    page = sqlite_api.client.get("/")
    assert page.status_code == 200 and "slotledger" in page.text
    for asset in ("/static/dashboard.js", "/static/dashboard.css"):
        assert sqlite_api.client.get(asset).status_code == 200
