"""Typed errors, bad bodies, and the bearer token never leaking into error text or logs."""

from __future__ import annotations

import logging
import traceback

import pytest

from ledger.adapters.coolify import (
    CoolifyBadResponse,
    CoolifyClient,
    CoolifyConflict,
    CoolifyError,
    CoolifyForbidden,
    CoolifyUnauthorized,
    CoolifyUnavailable,
    CoolifyValidationError,
)
from ledger.devtools.fake_coolify import FakeCoolify, FakeCoolifyServer
from ledger.errors import SlotLedgerError
from tests.integration.coolify.spec_check import SpecValidator
from tests.integration.coolify.support import MakeClient, app_request


def _all_text(error: BaseException) -> str:
    """What a log or a crash report could show: message, repr and the whole chain."""
    return "\n".join([str(error), repr(error), *traceback.format_exception(error)])


def test_wrong_token_is_unauthorized(make_client: MakeClient) -> None:
    client = make_client(token="not-the-token")

    with pytest.raises(CoolifyUnauthorized) as caught:
        client.get_application("any")

    error = caught.value
    assert (error.status, error.message, error.method) == (401, "Unauthenticated.", "GET")
    assert isinstance(error, SlotLedgerError)
    assert error.code == "coolify_unauthorized"


def test_read_only_token_is_forbidden_to_deploy(
    make_client: MakeClient, client: CoolifyClient, fake_server: FakeCoolifyServer
) -> None:
    app_uuid = client.create_dockerimage_application(app_request()).uuid
    reader = make_client(token=fake_server.fake.settings.read_only_token)

    assert reader.get_application(app_uuid).uuid == app_uuid
    with pytest.raises(CoolifyForbidden) as caught:
        reader.start(app_uuid)
    assert (caught.value.status, caught.value.message) == (
        403,
        "Missing required permissions: deploy",
    )


def test_validation_error_keeps_coolify_field_errors(client: CoolifyClient) -> None:
    with pytest.raises(CoolifyValidationError) as caught:
        client.create_dockerimage_application(
            app_request(docker_registry_image_name="Not An Image")
        )

    error = caught.value
    assert (error.status, error.message) == (422, "Validation failed.")
    assert error.errors == {
        "docker_registry_image_name": ["The docker registry image name field format is invalid."]
    }
    assert "docker_registry_image_name" in str(error)


def test_domain_conflict_is_a_conflict(client: CoolifyClient) -> None:
    client.create_dockerimage_application(app_request(domains="https://bot.example.test"))

    with pytest.raises(CoolifyConflict) as caught:
        client.create_dockerimage_application(app_request(domains="https://bot.example.test"))

    assert caught.value.status == 409
    assert caught.value.message.startswith("Domain conflicts detected.")


def test_html_instead_of_json_is_a_bad_response_with_a_short_excerpt(
    client: CoolifyClient, fake: FakeCoolify, fake_server: FakeCoolifyServer
) -> None:
    app_uuid = client.create_dockerimage_application(app_request()).uuid
    fake.set_faults(html_next=1)

    with pytest.raises(CoolifyBadResponse) as caught:
        client.get_application(app_uuid)

    error = caught.value
    assert error.status == 200
    assert "expected JSON, got text/html" in error.message
    assert "<!DOCTYPE html>" in error.message
    excerpt = error.message.split(": ", 1)[1]
    assert len(excerpt) <= 200
    assert "authorization: Bearer [REDACTED]" in error.message
    assert fake_server.token not in _all_text(error)


def test_truncated_json_is_a_bad_response(client: CoolifyClient, fake: FakeCoolify) -> None:
    app_uuid = client.create_dockerimage_application(app_request()).uuid
    fake.set_faults(garbage_next=1)

    with pytest.raises(CoolifyBadResponse) as caught:
        client.start(app_uuid)

    assert caught.value.message.startswith('invalid JSON: {"message":')
    assert caught.value.__cause__ is None
    assert len(fake.deployments(app_uuid)) == 1  # the work was done; only the answer broke


def test_missing_required_field_is_a_bad_response(client: CoolifyClient, fake: FakeCoolify) -> None:
    app_uuid = client.create_dockerimage_application(app_request()).uuid
    fake.set_faults(drop_field_next="status")

    with pytest.raises(CoolifyBadResponse) as caught:
        client.get_application(app_uuid)

    assert caught.value.message.startswith("unexpected CoolifyApplication (status: Field required)")
    assert caught.value.__cause__ is None


def test_token_echoed_by_coolify_is_redacted_everywhere(
    client: CoolifyClient,
    fake: FakeCoolify,
    fake_server: FakeCoolifyServer,
    caplog: pytest.LogCaptureFixture,
) -> None:
    fake.set_faults(echo_auth_next=1)

    with caplog.at_level(logging.DEBUG), pytest.raises(CoolifyError) as caught:
        client.version()

    error = caught.value
    assert error.status == 400
    assert error.message == "Invalid request. Authorization: Bearer [REDACTED]"
    assert fake_server.token not in _all_text(error)
    assert fake_server.token not in caplog.text
    assert fake_server.token not in repr(client)


def test_transport_error_chain_carries_no_token(
    make_client: MakeClient, fake: FakeCoolify, fake_server: FakeCoolifyServer
) -> None:
    client = make_client(max_retries=0)
    fake.set_faults(reset_rate=1.0)

    with pytest.raises(CoolifyUnavailable) as caught:
        client.version()

    assert caught.value.code == "coolify_unavailable"
    assert fake_server.token not in _all_text(caught.value)


def test_nothing_listening_is_unavailable(spec_validator: SpecValidator) -> None:
    hooks = {"request": [spec_validator]}
    with (
        CoolifyClient(
            "http://127.0.0.1:9/api/v1", "t0ken", max_retries=0, event_hooks=hooks
        ) as client,
        pytest.raises(CoolifyUnavailable) as caught,
    ):
        client.health()

    assert caught.value.message.startswith("ConnectError")
    assert "t0ken" not in _all_text(caught.value)
