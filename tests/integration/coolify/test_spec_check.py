"""The spec check is not vacuous: it rejects what the spec rejects and covers every call."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from openapi_core import OpenAPI

from ledger.adapters.coolify import CoolifyClient, EnvVar
from ledger.devtools.fake_coolify import FakeCoolify, FakeCoolifyServer
from tests.integration.coolify.spec_check import (
    SpecValidator,
    response_problems,
    spec_problems,
)
from tests.integration.coolify.support import app_request

_BASE = "http://127.0.0.1:1/api/v1"
_AUTH = {"Authorization": "Bearer t"}
_DOCKERIMAGE = {"project_uuid": "p", "server_uuid": "s", "docker_registry_image_name": "n"}


def _problems(
    spec: OpenAPI,
    method: str,
    path: str,
    *,
    json: object = None,
    params: dict[str, str | int] | None = None,
) -> list[str]:
    request = httpx.Request(method, _BASE + path, headers=_AUTH, json=json, params=params)
    return spec_problems(spec, request)


def test_only_the_documented_environment_deviation_is_excused(openapi_spec: OpenAPI) -> None:
    by_name = _problems(
        openapi_spec,
        "POST",
        "/applications/dockerimage",
        json={**_DOCKERIMAGE, "environment_name": "production"},
    )
    by_uuid = _problems(
        openapi_spec,
        "POST",
        "/applications/dockerimage",
        json={**_DOCKERIMAGE, "environment_uuid": "e"},
    )
    neither = _problems(openapi_spec, "POST", "/applications/dockerimage", json=_DOCKERIMAGE)

    assert by_name == by_uuid == []
    assert sorted(neither) == [
        "'environment_name' is a required property",
        "'environment_uuid' is a required property",
    ]


@pytest.mark.parametrize(
    ("method", "path", "options", "problem"),
    [
        ("GET", "/applications/a/start", {}, "OperationNotFound"),
        ("POST", "/applications/a/start", {"params": {"force": "maybe"}}, "force"),
        ("GET", "/deployments/applications/a", {"params": {"take": 0}}, "take"),
        (
            "POST",
            "/applications/dockerimage",
            {"json": {**_DOCKERIMAGE, "environment_name": "e", "ports_exposes": 80}},
            "80 is not of type 'string'",
        ),
    ],
)
def test_spec_violations_are_reported(
    openapi_spec: OpenAPI, method: str, path: str, options: dict[str, Any], problem: str
) -> None:
    problems = _problems(openapi_spec, method, path, **options)

    assert any(problem in text for text in problems), problems


def test_missing_bearer_token_breaks_the_spec(openapi_spec: OpenAPI) -> None:
    request = httpx.Request("GET", _BASE + "/version")

    assert spec_problems(openapi_spec, request)[0].startswith("SecurityValidationError")


def test_every_client_call_is_checked(
    client: CoolifyClient, fake: FakeCoolify, spec_validator: SpecValidator
) -> None:
    fake.configure(deploy_delay=5.0)
    app_uuid = client.create_dockerimage_application(app_request()).uuid
    client.get_application(app_uuid)
    client.update_description(app_uuid, "slot=1")
    (env,) = client.update_envs_bulk(app_uuid, [EnvVar(key="SLOT", value="1")])
    client.list_envs(app_uuid)
    client.delete_env(app_uuid, env.uuid)
    client.list_applications()
    deployment_uuid = client.start(app_uuid, force=True, instant_deploy=True).deployment_uuid
    client.cancel_deployment(deployment_uuid or "")
    restarted = client.restart(app_uuid).deployment_uuid or ""
    client.get_deployment(restarted)
    client.list_application_deployments(app_uuid, skip=0, take=5)
    client.stop(app_uuid)
    client.health()
    client.version()
    client.delete_application(app_uuid)

    operations = {
        (method, path.replace(app_uuid, "{app}")) for method, path in spec_validator.checked
    }
    assert {
        ("POST", "/api/v1/applications/dockerimage"),
        ("GET", "/api/v1/applications/{app}"),
        ("PATCH", "/api/v1/applications/{app}"),
        ("PATCH", "/api/v1/applications/{app}/envs/bulk"),
        ("GET", "/api/v1/applications/{app}/envs"),
        ("DELETE", f"/api/v1/applications/{{app}}/envs/{env.uuid}"),
        ("GET", "/api/v1/applications"),
        ("POST", "/api/v1/applications/{app}/start"),
        ("POST", "/api/v1/applications/{app}/restart"),
        ("POST", "/api/v1/applications/{app}/stop"),
        ("GET", "/api/v1/deployments/applications/{app}"),
        ("POST", f"/api/v1/deployments/{deployment_uuid}/cancel"),
        ("GET", f"/api/v1/deployments/{restarted}"),
        ("GET", "/api/v1/health"),
        ("GET", "/api/v1/version"),
        ("DELETE", "/api/v1/applications/{app}"),
    } <= operations
    assert len(spec_validator.checked) == len(fake.requests())


def test_the_hook_fails_the_request_that_breaks_the_spec(spec_validator: SpecValidator) -> None:
    request = httpx.Request("GET", _BASE + "/applications/a/stop", headers=_AUTH)

    with pytest.raises(AssertionError, match="GET /api/v1/applications/a/stop breaks"):
        spec_validator(request)
    assert spec_validator.checked == []


def test_the_fakes_answers_have_the_spec_shapes_but_for_known_deviations(
    fake_server: FakeCoolifyServer, fake: FakeCoolify, openapi_spec: OpenAPI
) -> None:
    fake.configure(deploy_delay=5.0)
    problems: list[str] = []
    seen: set[tuple[str, str]] = set()

    def check(response: httpx.Response) -> None:
        response.read()
        seen.add((response.request.method, response.request.url.path))
        problems.extend(response_problems(openapi_spec, response))

    headers = {"Authorization": f"Bearer {fake_server.token}", "Accept": "application/json"}
    hooks = {"response": [check]}
    with httpx.Client(base_url=fake_server.base_url, headers=headers, event_hooks=hooks) as http:
        app = http.post("/applications/dockerimage", json=app_request().to_json()).json()["uuid"]
        env = http.post(f"/applications/{app}/envs", json={"key": "A", "value": "1"}).json()
        http.patch(f"/applications/{app}/envs", json={"key": "A", "value": "2"})
        http.patch(f"/applications/{app}/envs/bulk", json={"data": [{"key": "B", "value": "1"}]})
        for path in (f"/applications/{app}", "/applications", f"/applications/{app}/envs"):
            http.get(path)
        deployment = http.post(f"/applications/{app}/start").json()["deployment_uuid"]
        for path in (
            f"/deployments/{deployment}",
            "/deployments",
            f"/deployments/applications/{app}",
        ):
            http.get(path)
        http.post("/deploy", params={"uuid": app, "force": True})
        http.post(f"/deployments/{deployment}/cancel")
        http.delete(f"/applications/{app}/envs/{env['uuid']}")
        http.post(f"/applications/{app}/stop")
        http.delete(f"/applications/{app}")

    assert problems == []
    assert len(seen) == 16


def test_the_response_check_reports_a_wrong_shape(openapi_spec: OpenAPI) -> None:
    request = httpx.Request("GET", _BASE + "/deployments/d", headers=_AUTH)
    response = httpx.Response(200, json={"deployment_uuid": 5, "status": None}, request=request)

    assert response_problems(openapi_spec, response) == ["5 is not of type 'string'"]
