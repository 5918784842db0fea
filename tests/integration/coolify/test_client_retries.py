"""Retry policy: 429 always, 5xx and transport errors only for idempotent calls."""

from __future__ import annotations

import logging

import httpx
import pytest

from ledger.adapters.coolify import (
    CoolifyClient,
    CoolifyNotFound,
    CoolifyRateLimited,
    CoolifyServerError,
    CoolifyUnavailable,
    CoolifyValidationError,
)
from ledger.devtools.fake_coolify import FakeCoolify
from tests.integration.coolify.support import MakeClient, SleepRecorder, app_request


def _new_app(client: CoolifyClient) -> str:
    return client.create_dockerimage_application(app_request()).uuid


def _count(fake: FakeCoolify, method: str, suffix: str) -> int:
    return sum(1 for r in fake.requests() if r.method == method and r.path.endswith(suffix))


def test_429_waits_for_retry_after_then_succeeds(
    client: CoolifyClient,
    fake: FakeCoolify,
    sleeps: SleepRecorder,
    caplog: pytest.LogCaptureFixture,
) -> None:
    app_uuid = _new_app(client)
    fake.configure(rate_limit=1, rate_window=3.0)
    fake.reset_throttle()
    client.get_application(app_uuid)  # uses up the window
    sleeps.on_sleep = fake.reset_throttle

    with caplog.at_level(logging.WARNING, logger="ledger.coolify"):
        app = client.get_application(app_uuid)

    assert app.uuid == app_uuid
    assert sleeps.delays == [3.0]
    (line,) = caplog.records
    assert line.name == "ledger.coolify"
    assert line.getMessage() == (
        f"Coolify GET /api/v1/applications/{app_uuid} answered 429; retry 1 of 4 in 3.00s"
    )


def test_retry_after_is_capped_at_four_times_backoff_max(
    make_client: MakeClient, fake: FakeCoolify, sleeps: SleepRecorder
) -> None:
    client = make_client(backoff_max=0.5)
    fake.configure(rate_limit=1, rate_window=600.0)
    client.version()  # uses up the window: the next one gets Retry-After: 600
    sleeps.on_sleep = fake.reset_throttle

    assert client.version() == "4.3.11"
    assert sleeps.delays == [2.0]


def test_429_on_start_is_retried_and_queues_exactly_one_deployment(
    client: CoolifyClient, fake: FakeCoolify, sleeps: SleepRecorder
) -> None:
    app_uuid = _new_app(client)
    fake.configure(rate_limit=1, rate_window=5.0)
    fake.reset_throttle()
    client.get_application(app_uuid)
    sleeps.on_sleep = fake.reset_throttle

    result = client.start(app_uuid)

    assert result.deployment_uuid is not None
    assert _count(fake, "POST", "/start") == 2
    assert len(fake.deployments(app_uuid)) == 1
    assert sleeps.delays == [5.0]


def test_429_gives_up_after_max_retries_with_the_hint(
    make_client: MakeClient, fake: FakeCoolify, sleeps: SleepRecorder
) -> None:
    client = make_client(max_retries=2)
    fake.configure(rate_limit=1, rate_window=7.0)
    client.version()

    with pytest.raises(CoolifyRateLimited) as caught:
        client.version()

    assert (caught.value.status, caught.value.retry_after) == (429, 7.0)
    assert caught.value.message == "Too Many Attempts."
    assert sleeps.delays == [7.0, 7.0]
    assert _count(fake, "GET", "/version") == 4


def test_5xx_on_get_is_retried_with_jittered_exponential_backoff(
    make_client: MakeClient, fake: FakeCoolify, sleeps: SleepRecorder
) -> None:
    client = make_client(max_retries=3, backoff_base=0.5, backoff_max=1.0)
    fake.set_faults(error_rate=1.0)

    with pytest.raises(CoolifyServerError) as caught:
        client.get_application("any")

    assert (caught.value.status, caught.value.message) == (500, "Server Error")
    assert _count(fake, "GET", "/applications/any") == 4
    ceilings = [0.5, 1.0, 1.0]
    assert len(sleeps.delays) == 3
    assert all(0 <= d <= c for d, c in zip(sleeps.delays, ceilings, strict=True))


def test_5xx_on_get_recovers_when_coolify_does(
    client: CoolifyClient, fake: FakeCoolify, sleeps: SleepRecorder
) -> None:
    app_uuid = _new_app(client)
    fake.set_faults(error_rate=1.0)
    sleeps.on_sleep = lambda: fake.set_faults(error_rate=0.0)

    assert client.get_application(app_uuid).uuid == app_uuid
    assert len(sleeps.delays) == 1


def test_idempotent_patches_are_retried_on_5xx(
    client: CoolifyClient, fake: FakeCoolify, sleeps: SleepRecorder
) -> None:
    app_uuid = _new_app(client)
    fake.set_faults(error_rate=1.0)
    sleeps.on_sleep = lambda: fake.set_faults(error_rate=0.0)

    client.update_description(app_uuid, "slot=9")

    assert _count(fake, "PATCH", app_uuid) == 2
    assert client.get_application(app_uuid).description == "slot=9"


@pytest.mark.parametrize("call", ["start", "restart", "stop", "create"])
def test_5xx_on_post_is_not_retried(
    client: CoolifyClient, fake: FakeCoolify, sleeps: SleepRecorder, call: str
) -> None:
    app_uuid = _new_app(client)
    fake.set_faults(error_rate=1.0)
    posts_before = _count(fake, "POST", "")

    with pytest.raises(CoolifyServerError):
        if call == "create":
            client.create_dockerimage_application(app_request())
        else:
            getattr(client, call)(app_uuid)

    assert _count(fake, "POST", "") == posts_before + 1
    assert sleeps.delays == []
    assert fake.deployments(app_uuid) == []


def test_dropped_connections_are_retried_for_get_only(
    make_client: MakeClient, fake: FakeCoolify, sleeps: SleepRecorder
) -> None:
    client = make_client(max_retries=2)
    app_uuid = _new_app(client)
    fake.set_faults(reset_rate=1.0)

    with pytest.raises(CoolifyUnavailable) as on_get:
        client.get_application(app_uuid)
    with pytest.raises(CoolifyUnavailable) as on_start:
        client.start(app_uuid)

    assert on_get.value.status is None
    assert isinstance(on_get.value.__cause__, httpx.TransportError)
    assert _count(fake, "GET", app_uuid) == 3
    assert _count(fake, "POST", "/start") == 1
    assert on_start.value.path == f"/api/v1/applications/{app_uuid}/start"
    assert len(sleeps.delays) == 2


def test_a_hanging_coolify_times_out_as_unavailable(
    make_client: MakeClient, fake: FakeCoolify, sleeps: SleepRecorder
) -> None:
    client = make_client(timeout=0.2, max_retries=1)
    fake.set_faults(hang_rate=1.0)

    with pytest.raises(CoolifyUnavailable) as caught:
        client.version()

    assert caught.value.message.startswith("ReadTimeout")
    assert _count(fake, "GET", "/version") == 2
    assert len(sleeps.delays) == 1


def test_client_errors_other_than_429_are_never_retried(
    client: CoolifyClient, fake: FakeCoolify, sleeps: SleepRecorder
) -> None:
    with pytest.raises(CoolifyNotFound):
        client.get_application("missing")
    with pytest.raises(CoolifyValidationError):
        client.create_dockerimage_application(app_request(docker_registry_image_name="Bad Name"))

    assert len(fake.requests()) == 2
    assert sleeps.delays == []


def test_on_response_sees_every_attempt_by_path_template(
    make_client: MakeClient, fake: FakeCoolify, sleeps: SleepRecorder
) -> None:
    seen: list[tuple[str, str, int]] = []
    client = make_client(on_response=lambda *event: seen.append(event))
    app_uuid = _new_app(client)
    fake.set_faults(error_rate=1.0)
    sleeps.on_sleep = lambda: fake.set_faults(error_rate=0.0)

    client.get_application(app_uuid)

    assert seen == [
        ("POST", "/applications/dockerimage", 201),
        ("GET", "/applications/{uuid}", 500),
        ("GET", "/applications/{uuid}", 200),
    ]
