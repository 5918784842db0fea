"""Start-up checks of the Coolify settings, and Coolify's reachability in ``/readyz``.

In process, the checks' requests go through the spec-checking client against the fake;
through real processes, ``serve`` and ``worker`` exit 2 with a line naming the setting to
fix (never the token), start anyway when Coolify does not answer, and ``/readyz`` shows
the ``coolify`` loop failing once the fake is stopped, while the process stays ready.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from ledger.adapters.coolify import CoolifyClient
from ledger.adapters.coolify.checks import CoolifyProbe, CoolifyTarget, check_coolify
from ledger.devtools.fake_coolify import FakeCoolifyServer, FakeSettings
from ledger.errors import ConfigurationError, CoolifyUnavailable
from tests.blackbox import FAKE_TOKEN, cluster, free_port, run_cli, wait_for
from tests.integration.coolify.spec_check import SpecValidator, load_spec

FAKE = FakeSettings(rate_limit=0, seed=5)
TARGET = CoolifyTarget(FAKE.project_uuid, FAKE.server_uuid, FAKE.environment_name)


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeCoolifyServer]:
    with FakeCoolifyServer(FAKE) as server:
        yield server


@pytest.fixture(scope="module")
def validator() -> SpecValidator:
    return SpecValidator(load_spec())


def _client(fake: FakeCoolifyServer, validator: SpecValidator, token: str) -> CoolifyClient:
    return CoolifyClient(fake.base_url, token, event_hooks={"request": [validator]})


def test_the_checks_pass_on_the_right_settings_with_requests_the_spec_accepts(
    fake: FakeCoolifyServer, validator: SpecValidator
) -> None:
    fake.fake.reset()
    with _client(fake, validator, fake.token) as client:
        check_coolify(client, TARGET)
        environment_by_uuid = CoolifyTarget(FAKE.project_uuid, FAKE.server_uuid, "fake-environment")
        check_coolify(client, environment_by_uuid)
    sent = [(r.method, r.path) for r in fake.fake.requests()]
    assert ("PATCH", f"/api/v1/projects/{FAKE.project_uuid}") in sent
    assert fake.fake.snapshot()["apps"] == {}  # nothing was created or changed
    assert len(validator.checked) == len(sent)


@pytest.mark.parametrize(
    ("target", "setting"),
    [
        (CoolifyTarget("nope", FAKE.server_uuid, "production"), "LEDGER_COOLIFY_PROJECT_UUID"),
        (CoolifyTarget(FAKE.project_uuid, "nope", "production"), "LEDGER_COOLIFY_SERVER_UUID"),
        (
            CoolifyTarget(FAKE.project_uuid, FAKE.server_uuid, "staging"),
            "LEDGER_COOLIFY_ENVIRONMENT_NAME",
        ),
        (CoolifyTarget("", FAKE.server_uuid, "production"), "LEDGER_COOLIFY_PROJECT_UUID"),
    ],
)
def test_a_wrong_setting_is_named(
    fake: FakeCoolifyServer, validator: SpecValidator, target: CoolifyTarget, setting: str
) -> None:
    with _client(fake, validator, fake.token) as client, pytest.raises(ConfigurationError) as info:
        check_coolify(client, target)
    assert info.value.detail.startswith(setting)


@pytest.mark.parametrize(
    ("token", "ability"),
    [(FAKE.read_only_token, "write"), ("not-a-token", "read")],
)
def test_a_token_that_cannot_is_named_by_its_ability_never_by_its_value(
    fake: FakeCoolifyServer, validator: SpecValidator, token: str, ability: str
) -> None:
    with _client(fake, validator, token) as client, pytest.raises(ConfigurationError) as info:
        check_coolify(client, TARGET)
    assert info.value.detail.startswith(f"LEDGER_COOLIFY_TOKEN cannot {ability}:")
    assert token not in info.value.detail


def test_the_probe_checks_once_then_asks_only_when_nothing_answered(
    fake: FakeCoolifyServer, validator: SpecValidator
) -> None:
    fake.fake.reset()
    with _client(fake, validator, fake.token) as client:
        probe = CoolifyProbe(client, TARGET, interval_s=3600)
        probe()
        assert probe.checked
        checks = len(fake.fake.requests())
        probe()  # the checks' own answers prove Coolify reachable
        assert len(fake.fake.requests()) == checks
        wrong = CoolifyProbe(client, CoolifyTarget("nope", FAKE.server_uuid, "production"), 1)
        with pytest.raises(ConfigurationError, match="LEDGER_COOLIFY_PROJECT_UUID"):
            wrong()
    unreachable = CoolifyClient(f"http://127.0.0.1:{free_port()}/api/v1", "t", max_retries=0)
    with unreachable, pytest.raises(CoolifyUnavailable):
        CoolifyProbe(unreachable, TARGET, 1)()


# --- through real processes --------------------------------------------------------------


def _start(command: str, env: dict[str, str]) -> Any:
    args = ["serve", "--port", str(free_port())] if command == "serve" else ["worker"]
    return run_cli(*args, env=env, timeout=120)


@pytest.mark.parametrize(
    ("command", "setting", "value"),
    [
        ("serve", "LEDGER_COOLIFY_PROJECT_UUID", "no-such-project"),
        ("worker", "LEDGER_COOLIFY_PROJECT_UUID", "no-such-project"),
        ("serve", "LEDGER_COOLIFY_SERVER_UUID", "no-such-server"),
        ("worker", "LEDGER_COOLIFY_ENVIRONMENT_NAME", "staging"),
    ],
)
def test_a_wrong_coolify_setting_stops_the_start_with_exit_2_naming_it(
    tmp_path: Path, postgres_url: str, command: str, setting: str, value: str
) -> None:
    with cluster(tmp_path) as running:
        fake = running.fake_coolify()
        done = _start(command, running.env(postgres_url, fake) | {setting: value})
    assert done.returncode == 2, done
    assert f"error: bad_configuration: {setting}={value!r}" in done.stderr
    assert FAKE_TOKEN not in done.stdout + done.stderr
    assert "Traceback" not in done.stderr


@pytest.mark.parametrize("command", ["serve", "worker"])
def test_a_read_only_token_stops_the_start_naming_the_missing_ability(
    tmp_path: Path, postgres_url: str, command: str
) -> None:
    read_only = FakeSettings().read_only_token
    with cluster(tmp_path) as running:
        fake = running.fake_coolify()
        env = running.env(postgres_url, fake, LEDGER_COOLIFY_TOKEN=read_only)
        done = _start(command, env)
    assert done.returncode == 2, done
    assert "error: bad_configuration: LEDGER_COOLIFY_TOKEN cannot write:" in done.stderr
    assert "Missing required permissions: write" in done.stderr
    assert read_only not in done.stdout + done.stderr


def _coolify_loop(server_url: str) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(server_url + "/readyz", timeout=10)
    loops = {loop["name"]: loop for loop in answer.json()["loops"]}
    return answer.status_code, loops["coolify"]


def test_readyz_shows_coolify_unreachable_once_the_fake_stops_and_stays_ready(
    tmp_path: Path, sqlite_url: str
) -> None:
    with cluster(tmp_path) as running:
        fake = running.fake_coolify()
        server = running.serve(running.env(sqlite_url, fake, LEDGER_COOLIFY_PROBE_INTERVAL_S="0.5"))
        wait_for(
            lambda: _coolify_loop(server.url)[1]["detail"] == "Coolify answers",
            what="the probe to see Coolify",
        )
        fake.stop()
        wait_for(
            lambda: _coolify_loop(server.url)[1]["state"] == "failing",
            what="the probe to see Coolify gone",
        )
        status, loop = _coolify_loop(server.url)
        assert status == 200  # reads, the queue and releases work without Coolify
        assert "CoolifyUnavailable" in loop["last_error"]
        assert loop["detail"].startswith("Coolify is unreachable")
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert 'slotledger_loop_up{loop="coolify"} 0.0' in metrics


def test_serve_starts_when_coolify_does_not_answer_and_says_so(
    tmp_path: Path, sqlite_url: str
) -> None:
    env = {
        "LEDGER_DATABASE_URL": sqlite_url,
        "LEDGER_COOLIFY_URL": f"http://127.0.0.1:{free_port()}/api/v1",
        "LEDGER_COOLIFY_TOKEN": FAKE_TOKEN,
        "LEDGER_COOLIFY_PROJECT_UUID": "p",
        "LEDGER_COOLIFY_SERVER_UUID": "s",
        "LEDGER_COOLIFY_PROBE_INTERVAL_S": "0.5",
    }
    with cluster(tmp_path) as running:
        server = running.serve(env)
        wait_for(lambda: _coolify_loop(server.url)[1]["state"] == "failing", what="coolify loop")
        assert _coolify_loop(server.url)[0] == 200
        assert "did not answer the start-up checks" in server.output()
