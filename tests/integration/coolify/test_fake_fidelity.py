"""The fake lags and queues as real Coolify does (issue 12 items 4, 5 and 11), over HTTP.

Each test names the Coolify code it mirrors. Time-based behaviour is polled with deadlines;
where a test needs one event to land before another, the delays leave seconds of margin.
Requests to routes the client has are sent with the client; the others with ``spec_http``
(spec-checked) or, for deliberately bad input, ``raw_http``.
"""

from __future__ import annotations

import itertools
from typing import Any

import httpx
import pytest

from ledger.adapters.coolify import CoolifyClient, CoolifyNotFound, DeploymentStatus
from ledger.devtools.fake_coolify import FakeCoolify, FakeCoolifyServer
from tests.integration.coolify.support import app_request, wait_until

QUEUED, IN_PROGRESS, FINISHED = (
    DeploymentStatus.QUEUED,
    DeploymentStatus.IN_PROGRESS,
    DeploymentStatus.FINISHED,
)


def _app(client: CoolifyClient, **overrides: Any) -> str:
    return client.create_dockerimage_application(app_request(**overrides)).uuid


def _start(client: CoolifyClient, app_uuid: str, **options: bool) -> str:
    deployment_uuid = client.start(app_uuid, **options).deployment_uuid
    assert deployment_uuid is not None
    return deployment_uuid


def _status(client: CoolifyClient, app_uuid: str) -> str:
    return str(client.get_application(app_uuid).status)


def _finished(client: CoolifyClient, deployment_uuid: str) -> bool:
    return client.get_deployment(deployment_uuid).is_terminal


def _control(fake_server: FakeCoolifyServer, path: str, body: object) -> httpx.Response:
    return httpx.post(fake_server.base_url.removesuffix("/api/v1") + "/_fake" + path, json=body)


def _as(fake_server: FakeCoolifyServer, token: str) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}", "Accept": "application/json"}
    return httpx.Client(base_url=fake_server.base_url, headers=headers, timeout=30.0)


# Item 4: stop is a delayed job (StopApplication)


def test_stop_answers_at_once_and_the_job_exits_the_app_later_without_a_sweep(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    app_uuid = _app(client)
    deployment_uuid = _start(client, app_uuid)
    wait_until(lambda: _finished(client, deployment_uuid))
    wait_until(lambda: _status(client, app_uuid) == "running:unknown")
    fake.configure(stop_delay=3.0, status_interval=600.0)  # no sweep during the test

    client.stop(app_uuid)

    assert fake.containers(app_uuid) == [deployment_uuid]  # the job has not run yet
    assert _status(client, app_uuid) == "running:unknown"
    # StopApplication stores `exited` itself at its end: no sweep is needed to see it.
    wait_until(lambda: _status(client, app_uuid) == "exited:unhealthy")
    assert fake.containers(app_uuid) == []


def test_a_stop_never_cancels_the_deployment_it_races(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=3.0, stop_delay=0.0)
    app_uuid = _app(client)
    deployment_uuid = _start(client, app_uuid)

    client.stop(app_uuid)  # runs at once, before the deployment's container is up

    wait_until(lambda: _finished(client, deployment_uuid))
    assert client.get_deployment(deployment_uuid).status is FINISHED
    assert fake.containers(app_uuid) == [deployment_uuid]
    wait_until(lambda: _status(client, app_uuid) == "running:unknown")


def test_a_late_stop_kills_the_container_of_the_deployment_that_followed_it(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    app_uuid = _app(client)
    first = _start(client, app_uuid)
    wait_until(lambda: _finished(client, first))
    fake.configure(stop_delay=2.0)

    client.stop(app_uuid)  # a release: the stop job waits in Coolify's queue
    second = _start(client, app_uuid)  # the next lease's deployment, a moment later

    wait_until(lambda: _finished(client, second))
    wait_until(lambda: fake.containers(app_uuid) == [])
    assert client.get_deployment(second).status is FINISHED
    wait_until(lambda: _status(client, app_uuid) == "exited:unhealthy")


def test_a_stop_landing_mid_deployment_leaves_running_reported_with_nothing_running(
    fake_server: FakeCoolifyServer, client: CoolifyClient, fake: FakeCoolify
) -> None:
    # The container comes up at 1.5 s, the stop runs at 2.25 s, the job ends at 3 s.
    fake.configure(deploy_delay=3.0, stop_delay=2.25, status_interval=600.0)
    app_uuid = _app(client)
    deployment_uuid = _start(client, app_uuid)
    client.stop(app_uuid)

    wait_until(lambda: _finished(client, deployment_uuid))

    assert client.get_deployment(deployment_uuid).status is FINISHED
    assert fake.containers(app_uuid) == []
    assert _status(client, app_uuid) == "running:unhealthy"  # the job's bare `running`
    _control(fake_server, "/settings", {"status_interval": 0.05})
    wait_until(lambda: _status(client, app_uuid) == "exited:unhealthy")


# Item 5: status semantics with lag (GetContainersStatus, ContainerStatusAggregator)


def test_after_a_deployment_the_status_is_running_unhealthy_until_a_sweep(
    fake_server: FakeCoolifyServer, client: CoolifyClient, fake: FakeCoolify
) -> None:
    fake.configure(status_interval=600.0)
    app_uuid = _app(client)
    deployment_uuid = _start(client, app_uuid)

    wait_until(lambda: _finished(client, deployment_uuid))

    assert _status(client, app_uuid) == "running:unhealthy"
    assert _control(fake_server, "/settings", {"status_interval": 0.05}).status_code == 200
    wait_until(lambda: _status(client, app_uuid) == "running:unknown")


def test_last_online_at_is_written_on_every_status_change_and_every_sweep_that_finds_it(
    raw_http: httpx.Client, client: CoolifyClient, fake: FakeCoolify
) -> None:
    fake.configure(status_interval=600.0)  # no sweep until the deployment has finished
    app_uuid = _app(client)
    deployment_uuid = _start(client, app_uuid)
    wait_until(lambda: _finished(client, deployment_uuid))
    deployment = raw_http.get(f"/deployments/{deployment_uuid}").json()
    after_job = raw_http.get(f"/applications/{app_uuid}").json()
    fake.configure(status_interval=0.0)  # from now on, one sweep before every answer

    def swept() -> dict[str, Any]:
        app: dict[str, Any] = raw_http.get(f"/applications/{app_uuid}").json()
        return app

    # Whole seconds, as Coolify's columns: a later sweep shows once the second has turned.
    wait_until(lambda: swept()["last_online_at"] > after_job["last_online_at"])
    again = swept()

    # The job's bare `running` is a status change: Application::saving wrote last_online_at.
    assert after_job["status"] == "running:unhealthy"
    assert after_job["last_online_at"] == deployment["finished_at"] == deployment["updated_at"]
    assert deployment["finished_at"] >= deployment["created_at"]
    # Sweeps that find the same status write it too (GetContainersStatus), and updated_at.
    assert again["status"] == "running:unknown"
    assert again["last_online_at"] == again["updated_at"] >= after_job["last_online_at"]


@pytest.mark.parametrize(
    ("container", "status", "restarts"),
    [
        ("no_healthcheck", "running:unknown", 0),
        ("healthy", "running:healthy", 0),
        ("unhealthy", "running:unhealthy", 0),
        ("degraded", "degraded:unhealthy", 1),
        ("exits", "exited:unhealthy", 0),
    ],
)
def test_each_container_behaviour_reads_as_coolify_words_it(
    fake_server: FakeCoolifyServer,
    client: CoolifyClient,
    fake: FakeCoolify,
    container: str,
    status: str,
    restarts: int,
) -> None:
    app_uuid = _app(client)
    assert _control(fake_server, f"/apps/{app_uuid}", {"container": container}).status_code == 200
    deployment_uuid = _start(client, app_uuid)

    wait_until(lambda: _finished(client, deployment_uuid))

    assert client.get_deployment(deployment_uuid).status is FINISHED
    wait_until(lambda: _status(client, app_uuid) == status)
    assert fake.application(app_uuid)["restart_count"] == restarts  # type: ignore[index]


def test_a_crash_loop_reads_restarting_then_degraded_and_counts_restarts(
    fake_server: FakeCoolifyServer, client: CoolifyClient, fake: FakeCoolify
) -> None:
    app_uuid = _app(client)
    _control(fake_server, f"/apps/{app_uuid}", {"container": "crashloop"})
    deployment_uuid = _start(client, app_uuid)
    wait_until(lambda: _finished(client, deployment_uuid))
    fake.configure(status_interval=0.0)  # one sweep before every answer

    seen = [fake.application(app_uuid) for _ in range(4)]

    statuses = [app["status"] for app in seen if app is not None]
    assert set(statuses) == {"restarting:unknown", "degraded:unhealthy"}
    assert all(a != b for a, b in itertools.pairwise(statuses))  # alternating
    counts = [app["restart_count"] for app in seen if app is not None]
    assert counts == sorted(counts) and len(set(counts)) == 4
    assert {app["last_restart_type"] for app in seen if app is not None} == {"crash"}


def test_the_app_control_endpoint_refuses_unknown_apps_and_behaviours(
    fake_server: FakeCoolifyServer, client: CoolifyClient, fake: FakeCoolify
) -> None:
    app_uuid = _app(client)

    unknown = _control(fake_server, "/apps/nope", {"container": "healthy"})
    bad = _control(fake_server, f"/apps/{app_uuid}", {"container": "zombie"})
    missing = _control(fake_server, f"/apps/{app_uuid}", {})
    good = _control(fake_server, f"/apps/{app_uuid}", {"container": "healthy"})

    assert unknown.status_code == 404
    assert (bad.status_code, missing.status_code) == (422, 422)
    assert good.json() == {"uuid": app_uuid, "container": "healthy"}
    assert fake.snapshot()["apps"][app_uuid]["container"] == "healthy"


def test_the_settings_endpoint_validates_like_the_faults_one(
    fake_server: FakeCoolifyServer, fake: FakeCoolify
) -> None:
    refused = [
        _control(fake_server, "/settings", changes)
        for changes in (
            {"explode": 1},
            {"seed": 3},
            {"stop_delay": "soon"},
            {"status_interval": -1},
            {"api_enabled": 1},
            [1, 2],
        )
    ]
    accepted = _control(fake_server, "/settings", {"stop_delay": 1, "concurrent_builds": 4})

    assert [r.status_code for r in refused] == [422] * len(refused)
    assert accepted.status_code == 200
    assert (accepted.json()["stop_delay"], accepted.json()["concurrent_builds"]) == (1.0, 4)
    assert "token" not in accepted.json() and "deploy_token" not in accepted.json()
    assert fake.settings.stop_delay == 1.0


# Item 11: fidelity of the queue and the routes


def test_concurrent_builds_and_one_per_app_queue_the_rest(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=30.0, concurrent_builds=2)
    apps = [_app(client, name=f"slot-{n}") for n in range(3)]
    first, second, third = (_start(client, app) for app in apps)
    again = _start(client, apps[0], force=True)
    instant = _start(client, apps[2], instant_deploy=True)

    states = [client.get_deployment(d).status for d in (first, second, third, again, instant)]

    # no_questions_asked skips the queue and the build limit.
    assert states == [IN_PROGRESS, IN_PROGRESS, QUEUED, QUEUED, IN_PROGRESS]
    client.cancel_deployment(first)
    assert client.get_deployment(third).status is QUEUED  # the instant one holds a slot
    client.cancel_deployment(instant)
    assert client.get_deployment(third).status is IN_PROGRESS  # oldest queuable first
    assert client.get_deployment(again).status is QUEUED  # the slot went to the older one


def test_queue_full_is_checked_before_already_queued(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=30.0, concurrent_builds=1, deployment_queue_limit=1)
    running, waiting = _app(client, name="a"), _app(client, name="b")
    _start(client, running)
    _start(client, waiting)  # queued: the server's one build slot is taken

    # b has a deployment queued, but the full queue answers first: start hands out a fresh
    # uuid that was never created (the queue_full bug), not "already queued".
    again = client.start(waiting)

    assert not again.skipped
    with pytest.raises(CoolifyNotFound):
        client.get_deployment(again.deployment_uuid or "")
    assert client.list_application_deployments(waiting).count == 1


def test_patch_answers_404_before_validating_and_merges_not_allowed_keys(
    raw_http: httpx.Client, client: CoolifyClient
) -> None:
    app_uuid = _app(client)

    unknown = raw_http.patch("/applications/nope", json={"name": 5, "git_branch": "x"})
    merged = raw_http.patch(f"/applications/{app_uuid}", json={"name": 5, "git_branch": "x"})
    ports = raw_http.patch(f"/applications/{app_uuid}", json={"ports_exposes": "80,x"})

    assert (unknown.status_code, unknown.json()) == (404, {"message": "Application not found"})
    assert (merged.status_code, merged.json()) == (
        422,
        {
            "message": "Validation failed.",
            "errors": {
                "name": ["The name field must be a string."],
                "git_branch": ["This field is not allowed."],
            },
        },
    )
    assert ports.json()["errors"] == {
        "ports_exposes": "The ports_exposes should be a comma separated list of numbers."
    }


def test_app_deployments_list_validates_first_then_404_without_a_period(
    raw_http: httpx.Client,
) -> None:
    both = raw_http.get("/deployments/applications/nope", params={"skip": "x", "take": 0})
    take = raw_http.get("/deployments/applications/nope", params={"take": 0})
    unknown = raw_http.get("/deployments/applications/nope")

    assert both.status_code == 422
    assert both.json() == {
        "message": "The skip field must be an integer. (and 1 more error)",
        "errors": {
            "skip": ["The skip field must be an integer."],
            "take": ["The take field must be at least 1."],
        },
    }
    assert take.json()["message"] == "The take field must be at least 1."
    assert (unknown.status_code, unknown.json()) == (404, {"message": "Application not found"})


def test_list_applications_by_name_with_a_tag_filter_and_hidden_secrets(
    fake_server: FakeCoolifyServer, spec_http: httpx.Client, client: CoolifyClient
) -> None:
    plain = _app(client, name="zeta")
    body = {**app_request(name="alpha", tags=["pool-a"]).to_json(), "custom_labels": "bGFiZWw="}
    tagged = spec_http.post("/applications/dockerimage", json=body).json()["uuid"]

    listed = client.list_applications()
    by_tag = spec_http.get("/applications", params={"tag": "pool-a"}).json()
    with _as(fake_server, fake_server.fake.settings.deploy_token) as deployer:
        hidden = deployer.get("/applications").json()

    assert [app.uuid for app in listed] == [tagged, plain]  # by name (ownedByCurrentTeamAPI)
    assert [app["uuid"] for app in by_tag] == [tagged]
    assert by_tag[0]["custom_labels"] == "bGFiZWw="
    assert all("custom_labels" not in app for app in hidden)
    assert spec_http.get("/applications", params={"tag": "pool-b"}).json() == []


def test_list_deployments_shows_the_queued_and_running_ones_only(
    spec_http: httpx.Client, client: CoolifyClient, fake: FakeCoolify
) -> None:
    done = _start(client, _app(client, name="done"))
    wait_until(lambda: _finished(client, done))
    fake.configure(deploy_delay=30.0, concurrent_builds=1)
    running = _start(client, _app(client, name="running"))
    waiting = _start(client, _app(client, name="waiting"))
    cancelled = _start(client, _app(client, name="cancelled"))
    client.cancel_deployment(cancelled)

    listed = spec_http.get("/deployments").json()

    assert [(d["deployment_uuid"], d["status"]) for d in listed] == [
        (running, "in_progress"),
        (waiting, "queued"),
    ]


def test_env_routes_create_update_list_and_delete_as_api_md_says(
    fake_server: FakeCoolifyServer,
    spec_http: httpx.Client,
    raw_http: httpx.Client,
    client: CoolifyClient,
) -> None:
    app_uuid = _app(client)
    envs = f"/applications/{app_uuid}/envs"
    flags = {"is_preview": False, "is_literal": False, "is_shown_once": False}

    created = spec_http.post(envs, json={"key": "MEETING_URL", "value": "u1", **flags})
    duplicate = spec_http.post(envs, json={"key": "MEETING_URL", "value": "u2"})
    spec_http.post(envs, json={"key": "TEXT", "value": "a", "is_multiline": True})
    updated = spec_http.patch(envs, json={"key": "TEXT", "value": "b"})
    absent = spec_http.patch(envs, json={"key": "NOPE", "value": "x"})
    not_allowed = raw_http.post(envs, json={"key": "K", "colour": "red"})
    listed = client.list_envs(app_uuid)
    with _as(fake_server, fake_server.fake.settings.deploy_token) as deployer:
        hidden = deployer.get(envs).json()
    client.delete_env(app_uuid, created.json()["uuid"])
    gone = raw_http.delete(f"{envs}/{created.json()['uuid']}")
    no_app = raw_http.delete(f"/applications/nope/envs/{created.json()['uuid']}")

    assert created.status_code == 201 and set(created.json()) == {"uuid"}
    assert duplicate.status_code == 409
    assert duplicate.json()["message"].startswith("Environment variable already exists.")
    assert updated.status_code == 201
    assert (updated.json()["value"], updated.json()["is_multiline"]) == ("b", False)  # reset
    assert (absent.status_code, absent.json()) == (
        404,
        {"message": "Environment variable not found."},
    )
    assert not_allowed.json()["errors"] == {"colour": ["This field is not allowed."]}
    assert [(env.key, env.value) for env in listed] == [("MEETING_URL", "u1"), ("TEXT", "b")]
    assert [("value" in env, "real_value" in env) for env in hidden] == [(False, False)] * 2
    assert [env.key for env in client.list_envs(app_uuid)] == ["TEXT"]
    assert (gone.status_code, gone.json()) == (404, {"message": "Environment variable not found."})
    assert (no_app.status_code, no_app.json()) == (404, {"message": "Application not found."})


def test_deploy_by_uuid_queues_skips_with_a_phantom_uuid_and_answers_429_when_full(
    spec_http: httpx.Client, raw_http: httpx.Client, client: CoolifyClient, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=30.0)
    app_uuid = _app(client, name="slot-9")

    queued = spec_http.post("/deploy", params={"uuid": app_uuid})
    skipped = spec_http.post("/deploy", params={"uuid": f"{app_uuid},nope"})
    fake.set_faults(queue_full_next=1)
    full = spec_http.post("/deploy", params={"uuid": app_uuid, "force": True})

    (entry,) = queued.json()["deployments"]
    assert entry["message"] == "Application slot-9 deployment queued."
    assert client.get_deployment(entry["deployment_uuid"]).status is IN_PROGRESS
    (again,) = skipped.json()["deployments"]  # the unknown uuid is left out silently
    assert again["message"] == "Deployment already queued for this commit."
    with pytest.raises(CoolifyNotFound):  # handed out, never created
        client.get_deployment(again["deployment_uuid"])
    assert full.status_code == 429 and full.headers["retry-after"] == "60"
    assert full.json() == {
        "message": "Deployment queue is full. Please wait for existing deployments to complete."
    }
    assert raw_http.get("/deploy", params={"uuid": app_uuid}).status_code == 405
    assert raw_http.post("/deploy", params={"uuid": "nope"}).json() == {
        "message": "No resources found."
    }
    assert raw_http.post("/deploy").json() == {"message": "You must provide uuid or tag."}
    assert client.list_application_deployments(app_uuid).count == 1


def test_deploy_casts_force_the_php_way_and_deploys_by_tag(
    spec_http: httpx.Client, client: CoolifyClient, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=30.0)
    app_uuid = _app(client, name="tagged", tags=["pool-a"])
    _start(client, app_uuid)

    # "false" is a non-empty string, so PHP casts it to true: the request forces a rebuild.
    forced = spec_http.post("/deploy", params={"uuid": app_uuid, "force": "false"}).json()
    by_tag = spec_http.post("/deploy", params={"tag": "pool-a"}).json()

    (entry,) = forced["deployments"]
    assert client.get_deployment(entry["deployment_uuid"]).status is QUEUED
    assert by_tag["message"] == ["Deployment already queued for this commit."]
    assert [d["resource_uuid"] for d in by_tag["details"]] == [app_uuid]


def test_cancel_answers_200_then_400_and_only_a_running_one_gets_finished_at(
    client: CoolifyClient, raw_http: httpx.Client, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=30.0)
    app_uuid = _app(client)
    running = _start(client, app_uuid)
    waiting = _start(client, app_uuid, force=True)

    first = raw_http.post(f"/deployments/{waiting}/cancel")
    client.cancel_deployment(running)
    fake.configure(deploy_delay=0.1)
    done = _start(client, app_uuid)
    wait_until(lambda: _finished(client, done))
    finished = raw_http.post(f"/deployments/{done}/cancel")

    assert first.json() == {
        "message": "Deployment cancelled successfully.",
        "deployment_uuid": waiting,
        "status": "cancelled-by-user",
    }
    assert client.get_deployment(waiting).finished_at is None  # its job never ran
    assert client.get_deployment(running).finished_at is not None
    assert (finished.status_code, finished.json()) == (
        400,
        {"message": "Deployment cannot be cancelled. Current status: finished"},
    )


def test_a_disabled_api_answers_403_after_authentication(
    fake_server: FakeCoolifyServer, raw_http: httpx.Client, fake: FakeCoolify
) -> None:
    fake.configure(api_enabled=False)

    disabled = raw_http.get("/version")
    unauthenticated = httpx.get(f"{fake_server.base_url}/version")
    health = httpx.get(f"{fake_server.base_url}/health")

    assert (disabled.status_code, disabled.json()) == (
        403,
        {"success": True, "message": "API is disabled."},
    )
    assert unauthenticated.status_code == 401
    assert health.text == "OK"


def test_deployment_logs_only_for_a_token_that_reads_sensitive_data(
    fake_server: FakeCoolifyServer, client: CoolifyClient
) -> None:
    deployment_uuid = _start(client, _app(client))
    path = f"/deployments/{deployment_uuid}"
    settings = fake_server.fake.settings

    with _as(fake_server, settings.token) as root, _as(fake_server, settings.deploy_token) as dep:
        as_root, as_deployer = root.get(path).json(), dep.get(path).json()
        listed = dep.get("/deployments").json()

    assert "logs" in as_root
    assert "logs" not in as_deployer and all("logs" not in d for d in listed)
    assert as_deployer["deployment_uuid"] == deployment_uuid


def test_an_api_start_records_no_image_tag_and_a_restart_is_restart_only(
    client: CoolifyClient, raw_http: httpx.Client
) -> None:
    app_uuid = _app(client)  # the app itself has tag 1.4.2
    started = _start(client, app_uuid)
    wait_until(lambda: _finished(client, started))
    restarted = client.restart(app_uuid).deployment_uuid or ""
    forced = _start(client, app_uuid, force=True)

    started_row, restarted_row, forced_row = (
        raw_http.get(f"/deployments/{d}").json() for d in (started, restarted, forced)
    )

    assert client.get_application(app_uuid).docker_registry_image_tag == "1.4.2"
    rows = (started_row, restarted_row, forced_row)
    assert [row["docker_registry_image_tag"] for row in rows] == [None, None, None]
    assert [row["restart_only"] for row in rows] == [False, True, False]
    assert [row["force_rebuild"] for row in rows] == [False, False, True]
