"""Models: status parsing, description cleaning, request whitelists."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from ledger.adapters.coolify import AppStatus, DeploymentStatus, EnvVar, clean_description
from tests.integration.coolify.support import app_request


@pytest.mark.parametrize(
    ("raw", "state", "health", "excluded", "running", "exited"),
    [
        ("running:unknown", "running", "unknown", False, True, False),
        ("running:healthy:excluded", "running", "healthy", True, True, False),
        ("exited:unhealthy", "exited", "unhealthy", False, False, True),
        ("exited", "exited", "unhealthy", False, False, True),
        ("degraded:excluded", "degraded", "unknown", True, False, False),
        ("restarting:unknown", "restarting", "unknown", False, False, False),
    ],
)
def test_app_status_parsing(
    raw: str, state: str, health: str, excluded: bool, running: bool, exited: bool
) -> None:
    status = AppStatus.parse(raw)

    assert (status.state, status.health, status.excluded) == (state, health, excluded)
    assert (status.is_running, status.is_exited, str(status)) == (running, exited, raw)


def test_terminal_deployment_statuses() -> None:
    assert [s.value for s in DeploymentStatus if s.is_terminal] == [
        "finished",
        "failed",
        "cancelled-by-user",
    ]
    assert DeploymentStatus("cancelled-by-user") is DeploymentStatus.CANCELLED_BY_USER


@pytest.mark.parametrize(
    ("text", "cleaned"),
    [
        ("<b>slot</b> 3", "bslot/b 3"),
        ("  a > b  ", "a  b"),
        ("x" * 300, "x" * 255),
        ("y" * 254 + "  z", "y" * 254),
    ],
)
def test_clean_description(text: str, cleaned: str) -> None:
    assert clean_description(text) == cleaned


def test_create_request_needs_an_environment_and_forbids_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="environment_name or environment_uuid"):
        app_request(environment_name=None)
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        app_request(git_branch="main")
    with pytest.raises(ValidationError, match="ports_exposes"):
        app_request(ports_exposes="80,http")


def test_create_request_json_leaves_out_unset_keys() -> None:
    body = app_request(description="<i>slot</i>", docker_registry_image_tag=None).to_json()

    assert "docker_registry_image_tag" not in body
    assert "instant_deploy" not in body
    assert body["description"] == "islot/i"


def test_env_var_rejects_keys_coolify_rejects() -> None:
    with pytest.raises(ValidationError):
        EnvVar(key="1BAD", value="x")
    assert EnvVar(key="A.B_1", value="").model_dump()["is_runtime"] is True
