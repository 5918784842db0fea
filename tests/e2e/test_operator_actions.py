"""Issue 14's operator actions through the real entry points: ``slotledger serve`` with
the fake Coolify (``PUT /v1/pool``, ``DELETE /v1/slots/{id}``) and the installed console
script (``slotledger pool resize``, ``slotledger retire``). Each action is an event with
the operator as actor and a reason; each dry run, and each refusal, writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.blackbox import (
    FAKE_TOKEN,
    Cluster,
    HttpProcess,
    cluster,
    events_of,
    get_json,
    run_cli,
    wait_for,
)

REASON = "capacity for the board meeting"


def _deploy(server: HttpProcess, bot_id: str) -> httpx.Response:
    return httpx.post(server.url + "/v1/deployments", json={"bot_id": bot_id}, timeout=60)


def _wait_busy(server: HttpProcess, bot_id: str) -> None:
    """Until the bot's deploy ends: its events come before the ones a test compares."""
    path = f"/v1/deployments/{bot_id}"
    wait_for(lambda: get_json(server, path)["state"] == "busy", what=f"{bot_id} busy")


def _resize(server: HttpProcess, body: dict[str, Any]) -> httpx.Response:
    return httpx.put(server.url + "/v1/pool", json=body, timeout=60)


def _retire(server: HttpProcess, slot: str, reason: str, **params: Any) -> httpx.Response:
    query = {"reason": reason, **params}
    return httpx.delete(f"{server.url}/v1/slots/{slot}", params=query, timeout=60)


def _serve(processes: Cluster, database_url: str, size: int) -> tuple[HttpProcess, dict[str, str]]:
    env = processes.env(database_url, processes.fake_coolify(), LEDGER_MAX_POOL_SIZE=str(size))
    return processes.serve(env), env


def test_resize_up_over_http_serves_the_waiting_request_at_once(
    database_url: str, tmp_path: Path
) -> None:
    with cluster(tmp_path) as processes:
        server, _ = _serve(processes, database_url, 1)
        assert get_json(server, "/v1/pool/stats")["maxSize"] == 1  # before the first slot
        assert _deploy(server, "holder").status_code == 201
        assert _deploy(server, "waiting").status_code == 202
        _wait_busy(server, "holder")
        before = events_of(server)

        dry = _resize(server, {"max_size": 2, "reason": REASON, "dry_run": True})
        assert dry.status_code == 200, dry.text
        assert dry.json() == {
            "old_max_size": 1,
            "new_max_size": 2,
            "size": 1,
            "changed": True,
            "dry_run": True,
        }
        for bad, code in (
            ({"max_size": -1, "reason": REASON}, 422),
            ({"max_size": 2, "reason": "bell\x07"}, 422),
            ({"max_size": 2}, 422),
            ({"max_size": 0, "reason": REASON, "dry_run": True}, 422),
        ):
            refused = _resize(server, bad)
            assert refused.status_code == code, (bad, refused.text)
        assert events_of(server) == before
        assert len(get_json(server, "/v1/queue")) == 1

        grown = _resize(server, {"max_size": 2, "reason": REASON})
        assert grown.status_code == 200, grown.text
        assert grown.json()["changed"] is True
        assert get_json(server, "/v1/queue") == []  # dispatched before the answer
        assert get_json(server, "/v1/deployments/waiting")["state"] != "queued"
        resized = events_of(server, type="PoolResized")
        assert [e["data"] for e in resized] == [{"old_max_size": 1, "new_max_size": 2}]
        assert (resized[0]["actor"], resized[0]["reason"]) == ("operator", REASON)
        assert get_json(server, "/v1/pool/stats")["maxSize"] == 2

        too_small = _resize(server, {"max_size": 1, "reason": "shrink"})
        assert too_small.status_code == 409, too_small.text
        assert too_small.json()["error"] == "pool_too_small"


def test_a_restart_with_a_larger_setting_records_one_pool_resized(
    database_url: str, tmp_path: Path
) -> None:
    with cluster(tmp_path) as processes:
        server, env = _serve(processes, database_url, 2)
        assert get_json(server, "/v1/pool/stats")["maxSize"] == 2
        server.stop()
        larger = env | {"LEDGER_MAX_POOL_SIZE": "5"}
        started = [processes.serve(larger, name=f"serve-{n}", wait=False) for n in range(2)]
        for process in started:
            process.wait_ready()

        resized = events_of(started[0], type="PoolResized")
        assert len(resized) == 1, resized
        assert resized[0]["data"]["old_max_size"] == 2
        assert resized[0]["data"]["new_max_size"] == 5
        for process in started:
            assert get_json(process, "/v1/pool/stats")["maxSize"] == 5

        processes.worker(env | {"LEDGER_MAX_POOL_SIZE": "7"})  # a worker records it too
        wait_for(
            lambda: len(events_of(started[0], type="PoolResized")) == 2,
            what="the worker's PoolResized",
        )
        last = events_of(started[0], type="PoolResized")[-1]
        assert last["data"] == {"old_max_size": 5, "new_max_size": 7}


def test_retire_over_http_deletes_the_app_and_refuses_a_slot_in_use(
    database_url: str, tmp_path: Path
) -> None:
    with cluster(tmp_path) as processes:
        env = processes.env(database_url, fake := processes.fake_coolify())
        server = processes.serve(env)
        assert _deploy(server, "bot-a").status_code == 201
        _wait_busy(server, "bot-a")
        slot = get_json(server, "/v1/deployments/bot-a")["slot"]
        name, app = slot["name"], slot["coolify_uuid"]
        before = events_of(server)

        busy = _retire(server, name, REASON)
        assert busy.status_code == 409, busy.text
        assert "bot-a" in busy.json()["detail"]
        for ref, reason, code in (
            ("pool-bot-999", REASON, 404),
            (name, "tab\x1bescape", 422),
        ):
            refused = _retire(server, ref, reason)
            assert refused.status_code == code, (ref, refused.text)
        assert events_of(server) == before

        released = httpx.delete(server.url + "/v1/deployments/bot-a", timeout=60)
        assert released.status_code == 200, released.text
        wait_for(
            lambda: get_json(server, f"/v1/slots/{name}")["status"] == "idle", what="slot idle"
        )
        before = events_of(server)
        dry = _retire(server, name, REASON, dry_run="true")
        assert dry.status_code == 200, dry.text
        assert dry.json()["dry_run"] is True
        assert dry.json()["steps"][-1] == f"delete application {app}"
        assert events_of(server) == before

        retired = _retire(server, name, REASON)
        assert retired.status_code == 200, retired.text
        event = events_of(server, type="SlotRetired")[-1]
        assert (event["actor"], event["reason"]) == ("operator", REASON)
        assert get_json(server, f"/v1/slots/{name}")["retired"] is True
        headers = {"Authorization": f"Bearer {FAKE_TOKEN}"}
        wait_for(
            lambda: (
                httpx.get(f"{fake.url}/api/v1/applications/{app}", headers=headers).status_code
                == 404
            ),
            what="the retired slot's application deleted",
        )
        again = _retire(server, name, REASON)
        assert again.status_code == 409, again.text


def test_retire_and_resize_on_the_command_line(database_url: str, tmp_path: Path) -> None:
    env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_MAX_POOL_SIZE": "3"}
    for _ in range(2):
        made = run_cli("provision", env=env, cwd=tmp_path)
        assert made.returncode == 0, made.stderr
    listed = run_cli("slots", "--json", env=env, cwd=tmp_path)
    first = json.loads(listed.stdout.splitlines()[0])["name"]

    dry = run_cli("retire", first, "--reason", REASON, "--dry-run", "--json", env=env, cwd=tmp_path)
    assert dry.returncode == 0, dry.stderr
    assert json.loads(dry.stdout)["dry_run"] is True
    assert run_cli("slots", "--json", env=env, cwd=tmp_path).stdout == listed.stdout

    bad = run_cli("retire", first, "--reason", "a\x07b", env=env, cwd=tmp_path)
    assert bad.returncode == 2, bad.stdout + bad.stderr
    unknown = run_cli("retire", "pool-bot-999", "--reason", REASON, env=env, cwd=tmp_path)
    assert unknown.returncode == 2, unknown.stdout + unknown.stderr

    done = run_cli("retire", first, "--reason", REASON, "--json", env=env, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    left = [
        json.loads(line)["name"] for line in run_cli("slots", "--json", env=env).stdout.splitlines()
    ]
    assert first not in left and len(left) == 1

    shrink = run_cli("pool", "resize", "0", "--reason", REASON, env=env, cwd=tmp_path)
    assert shrink.returncode == 2, shrink.stdout + shrink.stderr
    grow = run_cli("pool", "resize", "6", "--reason", REASON, "--json", env=env, cwd=tmp_path)
    assert grow.returncode == 0, grow.stderr
    assert json.loads(grow.stdout) == {
        "old_max_size": 3,
        "new_max_size": 6,
        "slots": 1,
        "changed": True,
        "dry_run": False,
    }
    stats = json.loads(run_cli("stats", "--json", env=env, cwd=tmp_path).stdout.splitlines()[0])
    assert stats["maxSize"] == 6, stats
