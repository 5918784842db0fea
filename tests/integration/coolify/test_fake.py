"""The fake itself answers as API.md says Coolify does (plain httpx, deliberately bad input)."""

from __future__ import annotations

import time
from typing import Any

import httpx
import pytest

from ledger.devtools.fake_coolify import FakeCoolify, FakeCoolifyServer
from tests.integration.coolify.support import TEST_SETTINGS, wait_until

VALID_APP = {
    "project_uuid": TEST_SETTINGS.project_uuid,
    "server_uuid": TEST_SETTINGS.server_uuid,
    "environment_name": TEST_SETTINGS.environment_name,
    "docker_registry_image_name": "nginx",
}


def _create(raw_http: httpx.Client, **extra: Any) -> str:
    response = raw_http.post("/applications/dockerimage", json={**VALID_APP, **extra})
    assert response.status_code == 201, response.text
    uuid: str = response.json()["uuid"]
    return uuid


def test_missing_or_wrong_token_is_401(fake_server: FakeCoolifyServer, fake: FakeCoolify) -> None:
    for headers in ({}, {"Authorization": "Bearer wrong"}):
        response = httpx.get(f"{fake_server.base_url}/version", headers=headers)
        assert (response.status_code, response.json()) == (401, {"message": "Unauthenticated."})


def test_health_needs_no_token_on_both_paths(fake_server: FakeCoolifyServer) -> None:
    for path in ("/api/health", "/api/v1/health"):
        response = httpx.get(fake_server.base_url.removesuffix("/api/v1") + path)
        assert (response.status_code, response.text) == (200, "OK")
        assert response.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("content", "content_type", "error"),
    [
        (b'{"name": "x"}', "text/plain", "Content-Type must be application/json."),
        (b"{not json", "application/json", "Invalid JSON."),
        (b"{}", "application/json", "Empty JSON."),
    ],
)
def test_create_needs_a_non_empty_json_body(
    raw_http: httpx.Client, content: bytes, content_type: str, error: str
) -> None:
    response = raw_http.post(
        "/applications/dockerimage", content=content, headers={"Content-Type": content_type}
    )

    assert response.status_code == 400
    assert response.json() == {"message": "Invalid request.", "error": error}


def test_create_rejects_unknown_keys_alone(raw_http: httpx.Client) -> None:
    response = raw_http.post("/applications/dockerimage", json={**VALID_APP, "git_branch": "x"})

    assert response.status_code == 422
    assert response.json() == {
        "message": "Validation failed.",
        "errors": {"git_branch": ["This field is not allowed."]},
    }


def test_create_checks_required_keys_and_types(raw_http: httpx.Client) -> None:
    body = {"environment_name": "production", "ports_exposes": 8080, "instant_deploy": "maybe"}

    response = raw_http.post("/applications/dockerimage", json=body)

    assert response.status_code == 422
    assert response.json()["errors"] == {
        "project_uuid": ["The project uuid field is required."],
        "server_uuid": ["The server uuid field is required."],
        "docker_registry_image_name": ["The docker registry image name field is required."],
        "ports_exposes": ["The ports exposes field must be a string."],
        "instant_deploy": ["The instant deploy field must be true or false."],
    }


def test_create_needs_one_environment_key_and_known_places(raw_http: httpx.Client) -> None:
    no_env = {k: v for k, v in VALID_APP.items() if k != "environment_name"}

    missing = raw_http.post("/applications/dockerimage", json=no_env)
    unknown_project = raw_http.post(
        "/applications/dockerimage", json={**VALID_APP, "project_uuid": "nope"}
    )

    assert missing.status_code == 422
    assert missing.json() == {
        "message": "You need to provide at least one of environment_name or environment_uuid."
    }
    assert (unknown_project.status_code, unknown_project.json()) == (
        404,
        {"message": "Project not found."},
    )


def test_patch_whitelist_strip_tags_and_long_description(
    raw_http: httpx.Client, fake: FakeCoolify
) -> None:
    uuid = _create(raw_http)

    moved = raw_http.patch(f"/applications/{uuid}", json={"project_uuid": "p"})
    tagged = raw_http.patch(
        f"/applications/{uuid}", json={"description": " <i>slot</i> 4 ", "name": "<b>bot</b>"}
    )
    too_long = raw_http.patch(f"/applications/{uuid}", json={"description": "x" * 256})

    assert moved.json()["errors"] == {"project_uuid": ["This field is not allowed."]}
    assert (tagged.status_code, tagged.json()) == (200, {"uuid": uuid})
    assert (too_long.status_code, too_long.json()) == (500, {"message": "Server Error"})
    stored = fake.application(uuid)
    assert stored is not None
    assert (stored["description"], stored["name"]) == ("slot 4", "bot")


def test_env_bulk_needs_data_and_string_values_and_is_not_atomic(
    raw_http: httpx.Client, fake: FakeCoolify
) -> None:
    uuid = _create(raw_http)

    empty = raw_http.patch(f"/applications/{uuid}/envs/bulk", json={"data": []})
    partial = raw_http.patch(
        f"/applications/{uuid}/envs/bulk",
        json={"data": [{"key": "GOOD", "value": " v "}, {"key": "BAD", "value": 5}]},
    )

    assert (empty.status_code, empty.json()) == (400, {"message": "Bulk data is required."})
    assert partial.status_code == 422
    assert partial.json()["errors"] == {"value": ["The value field must be a string."]}
    assert [(e["key"], e["value"]) for e in fake.env_vars(uuid)] == [("GOOD", "v")]


def test_lifecycle_routes_answer_405_to_get(raw_http: httpx.Client) -> None:
    uuid = _create(raw_http)

    for action in ("start", "stop", "restart"):
        response = raw_http.get(f"/applications/{uuid}/{action}")
        assert response.status_code == 405
        assert response.headers["allow"] == "POST"
        assert response.json() == {"message": "This endpoint has changed to a POST request."}


def test_unknown_path_and_wrong_method_hit_the_catch_all(raw_http: httpx.Client) -> None:
    for response in (raw_http.get("/healthcheck"), raw_http.put("/version")):
        assert response.status_code == 404
        assert response.json() == {"message": "Not found.", "docs": "https://coolify.io/docs"}


def test_deployment_goes_queued_in_progress_finished(
    raw_http: httpx.Client, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=0.6)
    uuid = _create(raw_http)
    first = raw_http.post(f"/applications/{uuid}/start").json()["deployment_uuid"]
    second = raw_http.post(f"/applications/{uuid}/start?force=1").json()["deployment_uuid"]
    seen: list[str] = []

    def status() -> str:
        value: str = raw_http.get(f"/deployments/{second}").json()["status"]
        if not seen or seen[-1] != value:
            seen.append(value)
        return value

    # Nothing else runs: the first leaves the queue at once; the second waits behind it.
    assert raw_http.get(f"/deployments/{first}").json()["status"] == "in_progress"
    wait_until(lambda: status() == "finished")
    assert seen == ["queued", "in_progress", "finished"]
    wait_until(lambda: raw_http.get(f"/applications/{uuid}").json()["status"] == "running:unknown")


def test_deployments_of_one_app_run_one_after_another(
    raw_http: httpx.Client, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=0.6)
    uuid = _create(raw_http)
    first = raw_http.post(f"/applications/{uuid}/start").json()["deployment_uuid"]
    second = raw_http.post(f"/applications/{uuid}/start?force=1").json()["deployment_uuid"]

    wait_until(lambda: raw_http.get(f"/deployments/{first}").json()["status"] == "in_progress")
    assert raw_http.get(f"/deployments/{second}").json()["status"] == "queued"
    wait_until(lambda: raw_http.get(f"/deployments/{second}").json()["status"] == "finished")


def test_throttle_answers_429_as_json_or_html(raw_http: httpx.Client, fake: FakeCoolify) -> None:
    fake.configure(rate_limit=2, rate_window=30.0)
    assert raw_http.get("/version").headers["x-ratelimit-remaining"] == "1"
    raw_http.get("/version")

    as_json = raw_http.get("/version")
    as_html = raw_http.get("/version", headers={"Accept": "text/html"})

    assert (as_json.status_code, as_json.json()) == (429, {"message": "Too Many Attempts."})
    assert 1 <= int(as_json.headers["retry-after"]) <= 30
    assert as_json.headers["x-ratelimit-limit"] == "2"
    assert as_html.status_code == 429
    assert as_html.headers["content-type"].startswith("text/html")


def test_server_errors_render_html_without_json_accept(
    raw_http: httpx.Client, fake: FakeCoolify
) -> None:
    fake.set_faults(error_rate=1.0)

    as_json = raw_http.get("/version")
    as_html = raw_http.get("/version", headers={"Accept": "*/*"})

    assert (as_json.status_code, as_json.json()) == (500, {"message": "Server Error"})
    assert as_html.status_code == 500
    assert "500 | Server Error" in as_html.text


def test_latency_fault_delays_answers(raw_http: httpx.Client, fake: FakeCoolify) -> None:
    fake.set_faults(latency=0.15)
    started = time.monotonic()

    assert raw_http.get("/version").status_code == 200
    assert time.monotonic() - started >= 0.15


def test_deployment_list_validates_paging(raw_http: httpx.Client) -> None:
    uuid = _create(raw_http)

    response = raw_http.get(f"/deployments/applications/{uuid}", params={"take": 0, "skip": "x"})

    assert response.status_code == 422
    assert response.json()["errors"] == {
        "skip": ["The skip field must be an integer."],
        "take": ["The take field must be at least 1."],
    }


def test_control_endpoints_set_faults_and_show_state(
    fake_server: FakeCoolifyServer, raw_http: httpx.Client, fake: FakeCoolify
) -> None:
    control = fake_server.base_url.removesuffix("/api/v1") + "/_fake"
    uuid = _create(raw_http, description="slot=1")

    updated = httpx.post(f"{control}/faults", json={"latency": 0, "html_next": 2})
    rejected = httpx.post(f"{control}/faults", json={"explode": True})
    state = httpx.get(f"{control}/state").json()

    assert updated.json()["html_next"] == 2
    assert fake.faults.html_next == 2
    assert rejected.status_code == 422
    assert state["apps"][uuid]["description"] == "slot=1"
    assert state["faults"]["html_next"] == 2
    (logged,) = state["requests"]
    assert (logged["method"], logged["path"]) == ("POST", "/api/v1/applications/dockerimage")
    assert logged["body"]["description"] == "slot=1"
    assert "authorization" not in logged["headers"]
    assert logged["headers"]["accept"] == "application/json"
    assert httpx.post(f"{control}/reset").status_code == 200
    assert fake.snapshot()["apps"] == {}


def test_cancelling_frees_the_queue_for_the_next_deployment(
    raw_http: httpx.Client, fake: FakeCoolify
) -> None:
    delay = 6.0  # in progress after 3 s if the queue is freed, 6 s if not: room for a stall
    fake.configure(deploy_delay=delay, rate_limit=0)  # the poll below is not throttled
    uuid = _create(raw_http)
    first_started = time.monotonic()
    first = raw_http.post(f"/applications/{uuid}/start").json()["deployment_uuid"]

    cancelled = raw_http.post(f"/deployments/{first}/cancel")
    second = raw_http.post(f"/applications/{uuid}/start").json()["deployment_uuid"]

    assert cancelled.json() == {
        "message": "Deployment cancelled successfully.",
        "deployment_uuid": first,
        "status": "cancelled-by-user",
    }
    # Queued for half the delay, not behind the cancelled deployment's full slot.
    wait_until(
        lambda: raw_http.get(f"/deployments/{second}").json()["status"] == "in_progress",
        timeout=60,
    )
    assert time.monotonic() - first_started < delay
