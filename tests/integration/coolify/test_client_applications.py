"""Application calls of the real client against the fake: create, read, update, delete."""

from __future__ import annotations

import pytest

from ledger.adapters.coolify import (
    DESCRIPTION_MAX_LENGTH,
    CoolifyClient,
    CoolifyNotFound,
    EnvVar,
    clean_description,
)
from ledger.devtools.fake_coolify import FakeCoolify
from tests.integration.coolify.support import app_request, wait_until


def test_create_sends_only_set_whitelisted_keys_and_returns_uuid_and_domain(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    created = client.create_dockerimage_application(app_request(limits_memory="256m"))

    assert created.domains == f"http://{created.uuid}.127.0.0.1.sslip.io"
    (sent,) = [r for r in fake.requests() if r.method == "POST"]
    assert sent.body == {
        "project_uuid": "fake-project",
        "server_uuid": "fake-server",
        "environment_name": "production",
        "docker_registry_image_name": "ghcr.io/example/bot",
        "docker_registry_image_tag": "1.4.2",
        "ports_exposes": "8080",
        "name": "slot-1",
        "limits_memory": "256m",
    }
    assert sent.headers["content-type"] == "application/json"
    stored = fake.application(created.uuid)
    assert stored is not None
    assert stored["limits_memory"] == "256m"


def test_create_by_environment_uuid_with_explicit_domain(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    request = app_request(
        environment_name=None,
        environment_uuid="fake-environment",
        domains="https://slot-7.example.test",
    )

    created = client.create_dockerimage_application(request)

    assert created.domains == "https://slot-7.example.test"
    assert "environment_name" not in fake.requests()[-1].body


def test_create_cleans_the_description(client: CoolifyClient, fake: FakeCoolify) -> None:
    created = client.create_dockerimage_application(app_request(description="<slot> " + "d" * 400))

    stored = fake.application(created.uuid)
    assert stored is not None
    assert stored["description"] == "slot " + "d" * (DESCRIPTION_MAX_LENGTH - 5)


def test_get_application_parses_status_and_image(client: CoolifyClient) -> None:
    created = client.create_dockerimage_application(app_request())

    app = client.get_application(created.uuid)

    assert app.uuid == created.uuid
    assert app.name == "slot-1"
    assert app.build_pack == "dockerimage"
    assert (app.docker_registry_image_name, app.docker_registry_image_tag) == (
        "ghcr.io/example/bot",
        "1.4.2",
    )
    assert app.ports_exposes == "8080"
    assert app.fqdn == created.domains
    assert str(app.status) == "exited:unhealthy"
    assert app.status.is_exited and not app.status.is_running


def test_get_unknown_application_is_not_found(client: CoolifyClient) -> None:
    with pytest.raises(CoolifyNotFound) as caught:
        client.get_application("no-such-app")

    assert caught.value.status == 404
    assert caught.value.message == "Application not found."
    assert caught.value.path == "/api/v1/applications/no-such-app"


def test_update_description_patches_only_the_cleaned_description(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    created = client.create_dockerimage_application(app_request())
    description = "  slot=3 <b>bot</b>=alice " + "x" * 300

    client.update_description(created.uuid, description)

    patch = fake.requests()[-1]
    assert (patch.method, patch.body) == ("PATCH", {"description": clean_description(description)})
    assert client.get_application(created.uuid).description == clean_description(description)
    assert len(clean_description(description)) == DESCRIPTION_MAX_LENGTH


def test_update_description_of_unknown_app_is_not_found(client: CoolifyClient) -> None:
    with pytest.raises(CoolifyNotFound) as caught:
        client.update_description("gone", "slot=1")

    assert caught.value.message == "Application not found"


def test_update_envs_bulk_upserts_and_sends_every_flag(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    created = client.create_dockerimage_application(app_request())

    first = client.update_envs_bulk(
        created.uuid, [EnvVar(key="SLOT_ID", value="3"), EnvVar(key="BOT", value="alice")]
    )
    second = client.update_envs_bulk(
        created.uuid, [EnvVar(key="BOT", value="bob", is_literal=True)]
    )

    assert [(env.key, env.value) for env in first] == [("SLOT_ID", "3"), ("BOT", "alice")]
    assert second[0].uuid == first[1].uuid
    assert {env["key"]: env["value"] for env in fake.env_vars(created.uuid)} == {
        "SLOT_ID": "3",
        "BOT": "bob",
    }
    sent_item = fake.requests()[-1].body["data"][0]
    assert sent_item == {
        "key": "BOT",
        "value": "bob",
        "is_preview": False,
        "is_literal": True,
        "is_multiline": False,
        "is_shown_once": False,
        "is_runtime": True,
        "is_buildtime": True,
    }


def test_update_envs_bulk_refuses_an_empty_list_without_calling(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    with pytest.raises(ValueError, match="at least one"):
        client.update_envs_bulk("any", [])

    assert fake.requests() == []


def test_delete_is_queued_then_the_app_and_its_deployments_disappear(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    created = client.create_dockerimage_application(app_request())
    deployment_uuid = client.start(created.uuid).deployment_uuid
    assert deployment_uuid is not None

    client.delete_application(created.uuid, delete_volumes=False)

    delete = fake.requests()[-1]
    assert (delete.method, delete.query["delete_volumes"], delete.query["docker_cleanup"]) == (
        "DELETE",
        "false",
        "true",
    )
    wait_until(lambda: fake.application(created.uuid) is None)
    with pytest.raises(CoolifyNotFound):
        client.get_application(created.uuid)
    with pytest.raises(CoolifyNotFound):
        client.get_deployment(deployment_uuid)


def test_empty_uuid_is_refused_before_any_request(client: CoolifyClient, fake: FakeCoolify) -> None:
    with pytest.raises(ValueError, match="must not be empty"):
        client.delete_application("")

    assert fake.requests() == []
