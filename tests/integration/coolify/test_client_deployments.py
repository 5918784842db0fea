"""Lifecycle and deployment calls of the real client against the fake."""

from __future__ import annotations

import pytest

from ledger.adapters.coolify import (
    CoolifyClient,
    CoolifyError,
    CoolifyNotFound,
    DeploymentStatus,
)
from ledger.devtools.fake_coolify import FakeCoolify
from tests.integration.coolify.support import app_request, wait_until


def _new_app(client: CoolifyClient) -> str:
    return client.create_dockerimage_application(app_request()).uuid


def _finished(client: CoolifyClient, deployment_uuid: str) -> bool:
    return client.get_deployment(deployment_uuid).is_terminal


def test_start_queues_a_deployment_that_finishes_and_runs_the_app(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=0.4)
    app_uuid = _new_app(client)

    result = client.start(app_uuid)

    assert result.message == "Deployment request queued."
    assert result.deployment_uuid is not None and not result.skipped
    first = client.get_deployment(result.deployment_uuid)
    assert first.status in {DeploymentStatus.QUEUED, DeploymentStatus.IN_PROGRESS}
    assert not first.is_terminal
    wait_until(lambda: _finished(client, result.deployment_uuid or ""))
    done = client.get_deployment(result.deployment_uuid)
    assert done.status is DeploymentStatus.FINISHED
    assert done.finished_at is not None
    assert client.get_application(app_uuid).status.is_running
    wait_until(lambda: str(client.get_application(app_uuid).status) == "running:unknown")
    (start,) = [r for r in fake.requests() if r.path.endswith("/start")]
    assert (start.method, start.query) == ("POST", {"force": "false", "instant_deploy": "false"})


def test_start_while_one_is_queued_is_skipped_without_deployment_uuid(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=5.0)
    app_uuid = _new_app(client)
    queued = client.start(app_uuid)

    again = client.start(app_uuid)

    assert again.skipped
    assert again.deployment_uuid is None
    assert again.message == "Deployment already queued for this commit."
    page = client.list_application_deployments(app_uuid)
    assert page.count == 1
    assert page.deployments[0].deployment_uuid == queued.deployment_uuid


def test_forced_start_is_never_skipped(client: CoolifyClient, fake: FakeCoolify) -> None:
    fake.configure(deploy_delay=5.0)
    app_uuid = _new_app(client)
    client.start(app_uuid)

    forced = client.start(app_uuid, force=True)

    assert forced.deployment_uuid is not None
    assert fake.requests()[-1].query["force"] == "true"
    assert client.get_deployment(forced.deployment_uuid).status is DeploymentStatus.QUEUED


def test_restart_is_a_redeploy_with_its_own_message(client: CoolifyClient) -> None:
    app_uuid = _new_app(client)

    result = client.restart(app_uuid)

    assert result.message == "Restart request queued."
    assert result.deployment_uuid is not None
    wait_until(lambda: _finished(client, result.deployment_uuid or ""))
    assert client.get_application(app_uuid).status.is_running


def test_stop_exits_the_app_and_sends_docker_cleanup(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    app_uuid = _new_app(client)
    deployment_uuid = client.start(app_uuid).deployment_uuid or ""
    wait_until(lambda: _finished(client, deployment_uuid))

    client.stop(app_uuid, docker_cleanup=False)

    stop = fake.requests()[-1]
    assert (stop.method, stop.path, stop.query) == (
        "POST",
        f"/api/v1/applications/{app_uuid}/stop",
        {"docker_cleanup": "false"},
    )
    wait_until(lambda: str(client.get_application(app_uuid).status) == "exited:unhealthy")


def test_list_deployments_is_newest_first_and_pages(client: CoolifyClient) -> None:
    app_uuid = _new_app(client)
    started = [client.start(app_uuid, force=True).deployment_uuid for _ in range(3)]

    page = client.list_application_deployments(app_uuid, skip=1, take=1)
    everything = client.list_application_deployments(app_uuid)

    assert page.count == 3
    assert [d.deployment_uuid for d in page.deployments] == [started[1]]
    assert [d.deployment_uuid for d in everything.deployments] == started[::-1]


def test_deployment_uuid_of_a_full_queue_is_not_found(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    app_uuid = _new_app(client)
    fake.set_faults(queue_full_next=1)

    result = client.start(app_uuid)

    assert result.deployment_uuid is not None
    with pytest.raises(CoolifyNotFound) as caught:
        client.get_deployment(result.deployment_uuid)
    assert caught.value.message == "Deployment not found."
    assert client.list_application_deployments(app_uuid).count == 0


def test_failed_deployment_leaves_the_app_exited(client: CoolifyClient, fake: FakeCoolify) -> None:
    app_uuid = _new_app(client)
    fake.set_faults(fail_next_deployments=1)

    deployment_uuid = client.start(app_uuid).deployment_uuid or ""

    wait_until(lambda: _finished(client, deployment_uuid))
    assert client.get_deployment(deployment_uuid).status is DeploymentStatus.FAILED
    assert client.get_application(app_uuid).status.is_exited
    assert fake.faults.fail_next_deployments == 0


def test_app_can_exit_although_its_deployment_finished(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    app_uuid = _new_app(client)
    fake.set_faults(exit_after_deploy=True)

    deployment_uuid = client.start(app_uuid).deployment_uuid or ""

    wait_until(lambda: _finished(client, deployment_uuid))
    assert client.get_deployment(deployment_uuid).status is DeploymentStatus.FINISHED
    assert str(client.get_application(app_uuid).status) == "exited:unhealthy"


def test_instant_deploy_on_create_starts_a_deployment_at_once(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=5.0)
    created = client.create_dockerimage_application(app_request(instant_deploy=True))

    page = client.list_application_deployments(created.uuid)

    assert page.count == 1
    assert page.deployments[0].status is DeploymentStatus.IN_PROGRESS


def test_cancel_a_queued_deployment_but_not_a_cancelled_one(
    client: CoolifyClient, fake: FakeCoolify
) -> None:
    fake.configure(deploy_delay=5.0)
    app_uuid = _new_app(client)
    deployment_uuid = client.start(app_uuid).deployment_uuid or ""

    client.cancel_deployment(deployment_uuid)

    assert client.get_deployment(deployment_uuid).status is DeploymentStatus.CANCELLED_BY_USER
    with pytest.raises(CoolifyError) as caught:
        client.cancel_deployment(deployment_uuid)
    assert caught.value.status == 400
    assert (
        caught.value.message == "Deployment cannot be cancelled. Current status: cancelled-by-user"
    )


def test_health_and_version_are_plain_text(client: CoolifyClient) -> None:
    assert client.health() == "OK"
    assert client.version() == "4.3.11"
