"""Issue 10 follow-ups through a running ``slotledger serve`` and the installed console
script, on the real stores.

- A bot config of exactly ``{"_type_": ..., "_data_": ...}`` was accepted and saved, and
  the event store's JSON transcoder then read it back as an encoded object: the queue
  entry could never be loaded, and every reader of the log failed on it.
- ``slotledger acquire`` took a slot for a bot that waited in the queue, so the bot
  held a slot and a waiting entry at once, and each drain retried that entry in vain.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.blackbox import HttpProcess, cluster, run_cli


@pytest.fixture
def full_pool(database_url: str, tmp_path: Path) -> Iterator[tuple[HttpProcess, dict[str, str]]]:
    """A server whose pool of two is full: ``holder`` holds the ``meet`` slot and the
    ``zoom`` slot is idle, so a ``meet`` request waits in the queue."""
    with cluster(tmp_path) as processes:
        env = processes.env(database_url, processes.fake_coolify(), LEDGER_MAX_POOL_SIZE="2")
        server = processes.serve(env)
        answer = _deploy(server, {"bot_id": "holder", "platform": "meet"})
        assert answer.status_code == 201, answer.text
        provisioned = run_cli("provision", "--platform", "zoom", env=env)
        assert provisioned.returncode == 0, provisioned.stderr
        yield server, env


def _deploy(server: HttpProcess, body: dict[str, object]) -> httpx.Response:
    return httpx.post(server.url + "/v1/deployments", json=body, timeout=60)


def _queue(server: HttpProcess) -> list[dict[str, object]]:
    answer = httpx.get(server.url + "/v1/queue", timeout=60)
    assert answer.status_code == 200, answer.text
    entries: list[dict[str, object]] = answer.json()
    return entries


RESERVED = [
    {"_type_": "nope", "_data_": "x"},
    {"_type_": "datetime_iso", "_data_": "2024-01-01T00:00:00+00:00"},
    {"_type_": "x"},
    {"_data_": "x", "MODE": "y"},
]
"""The shape the transcoder decodes (exactly those two keys), and each key on its own."""


def test_a_config_with_the_store_s_reserved_keys_is_a_422_naming_config(
    full_pool: tuple[HttpProcess, dict[str, str]],
) -> None:
    server, env = full_pool
    for config in RESERVED:
        answer = _deploy(server, {"bot_id": "b0", "platform": "meet", "config": config})
        assert answer.status_code == 422, (config, answer.text)
        assert answer.json()["error"] == "bad_input"
        assert answer.json()["detail"].startswith("body.config."), answer.text
        assert "reserves" in answer.json()["detail"]

    assert _queue(server) == []
    checked = run_cli("check", env=env)  # reads the whole log
    assert checked.returncode == 0, checked.stdout + checked.stderr
    queued = _deploy(server, {"bot_id": "b0", "platform": "meet", "config": {"MODE": "y"}})
    assert queued.status_code == 202, queued.text


def test_a_bot_that_waits_in_the_queue_cannot_also_acquire_a_slot(
    full_pool: tuple[HttpProcess, dict[str, str]],
) -> None:
    server, env = full_pool
    queued = _deploy(server, {"bot_id": "b0", "platform": "meet"})
    assert queued.status_code == 202, queued.text

    acquired = run_cli("acquire", "b0", "--platform", "zoom", env=env)
    assert acquired.returncode == 1, acquired.stdout
    assert acquired.stderr.startswith("error: bot_already_queued: "), acquired.stderr

    assert [e["bot_id"] for e in _queue(server)] == ["b0"]
    slots = httpx.get(server.url + "/v1/slots", timeout=60).json()
    assert {s["platform"]: s["bot_id"] for s in slots} == {"meet": "holder", "zoom": None}
    repeated = _deploy(server, {"bot_id": "b0", "platform": "meet"})
    assert repeated.status_code == 202, repeated.text  # the same request answers its entry
    assert repeated.json()["queued_at"] == queued.json()["queued_at"]
