"""Issue 14's drain and undrain through the real entry points: ``slotledger serve`` with
the fake Coolify (``POST /v1/slots/{id}/drain`` and ``/undrain``, ``POST /v1/pool/drain``
and ``/undrain``) and the installed console script (``drain``, ``undrain``, ``pool
drain``, ``pool undrain``). A drained slot is never acquired, a held one keeps its bot,
requests wait in the queue and are served the moment a slot comes back; every refusal
and every dry run writes nothing."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx

from tests.blackbox import HttpProcess, cluster, events_of, get_json, run_cli, wait_for

REASON = "host under maintenance"


def _post(server: HttpProcess, path: str, body: object) -> httpx.Response:
    return httpx.post(server.url + path, json=body, timeout=60)


def _deploy(server: HttpProcess, bot_id: str) -> httpx.Response:
    return _post(server, "/v1/deployments", {"bot_id": bot_id, "queue_timeout_s": 600})


def _state(server: HttpProcess, bot_id: str) -> str:
    state: str = get_json(server, f"/v1/deployments/{bot_id}")["state"]
    return state


def _slot_of(server: HttpProcess, bot_id: str) -> str:
    wait_for(lambda: _state(server, bot_id) == "busy", what=f"{bot_id} busy")
    name: str = get_json(server, f"/v1/deployments/{bot_id}")["slot"]["name"]
    return name


def _release(server: HttpProcess, bot_id: str, slot: str) -> None:
    released = httpx.delete(f"{server.url}/v1/deployments/{bot_id}", timeout=60)
    assert released.status_code == 200, released.text
    wait_for(lambda: get_json(server, f"/v1/slots/{slot}")["status"] == "idle", what=f"{slot} idle")


def test_drain_and_undrain_over_http(database_url: str, tmp_path: Path) -> None:
    with cluster(tmp_path) as processes:
        env = processes.env(database_url, processes.fake_coolify(), LEDGER_MAX_POOL_SIZE="2")
        server = processes.serve(env)
        assert _deploy(server, "held").status_code == 201
        assert _deploy(server, "brief").status_code == 201
        held, spare = _slot_of(server, "held"), _slot_of(server, "brief")
        _release(server, "brief", spare)
        before = events_of(server)

        dry = _post(server, f"/v1/slots/{spare}/drain", {"reason": REASON, "dry_run": True})
        assert dry.status_code == 200, dry.text
        assert dry.json() == {
            "target": spare,
            "undrain": False,
            "steps": [f"record SlotDrained on {spare} ({REASON})"],
            "slots": [spare],
            "changed": True,
            "dry_run": True,
        }
        for path, body, code in (
            ("/v1/slots/pool-bot-999/drain", {"reason": REASON}, 404),
            (f"/v1/slots/{spare}/drain", {"reason": "nul\x00"}, 422),
            (f"/v1/slots/{spare}/drain", {}, 422),
            (f"/v1/slots/{spare}/drain", {"reason": REASON, "extra": 1}, 422),
            (f"/v1/slots/{spare}/undrain", {"reason": REASON}, 409),  # not drained
        ):
            refused = _post(server, path, body)
            assert refused.status_code == code, (path, body, refused.text)
            assert refused.json()["error"], refused.text
        malformed = httpx.post(
            f"{server.url}/v1/slots/{spare}/drain",
            content=b"{not json",
            headers={"content-type": "application/json"},
            timeout=60,
        )
        assert malformed.status_code == 400, malformed.text
        assert malformed.json()["error"] == "malformed_json"
        assert events_of(server) == before

        for slot in (spare, held):
            drained = _post(server, f"/v1/slots/{slot}/drain", {"reason": REASON})
            assert drained.status_code == 200, drained.text
        assert "'held' keeps it" in drained.json()["steps"][0]
        again = _post(server, f"/v1/slots/{spare}/drain", {"reason": REASON})
        assert again.status_code == 409, again.text
        assert "drained already" in again.json()["detail"]
        event = events_of(server, type="SlotDrained")[-1]
        assert (event["actor"], event["reason"], event["data"]) == (
            "operator",
            REASON,
            {"scope": "slot"},
        )
        assert _state(server, "held") == "busy"  # its lease runs on
        assert {s["name"] for s in get_json(server, "/v1/slots", drained="true")} == {held, spare}

        assert _deploy(server, "waiter").status_code == 202  # the idle slot is drained
        back = _post(server, f"/v1/slots/{spare}/undrain", {"reason": "done"})
        assert back.status_code == 200, back.text
        assert _state(server, "waiter") != "queued"  # served before the answer
        assert get_json(server, "/v1/deployments/waiter")["slot"]["name"] == spare


def test_pool_drain_keeps_new_requests_waiting_until_undrained(
    database_url: str, tmp_path: Path
) -> None:
    with cluster(tmp_path) as processes:
        env = processes.env(database_url, processes.fake_coolify(), LEDGER_MAX_POOL_SIZE="3")
        server = processes.serve(env)
        assert _deploy(server, "held").status_code == 201
        held = _slot_of(server, "held")
        by_name = _post(server, f"/v1/slots/{held}/drain", {"reason": "flaky disk"})
        assert by_name.status_code == 200, by_name.text

        drained = _post(server, "/v1/pool/drain", {"reason": REASON})
        assert drained.status_code == 200, drained.text
        assert drained.json()["steps"] == [f"record PoolDrained ({REASON})"]
        assert drained.json()["slots"] == []  # its one slot was drained by name already
        nothing = _post(server, "/v1/pool/drain", {"reason": REASON})
        assert nothing.json()["changed"] is False, nothing.text

        assert _deploy(server, "waiter").status_code == 202  # room, but no new slot
        assert _state(server, "waiter") == "queued"
        assert get_json(server, "/v1/pool/stats")["total"] == 1

        _release(server, "held", held)
        undrained = _post(server, "/v1/pool/undrain", {"reason": "maintenance over"})
        assert undrained.status_code == 200, undrained.text
        assert undrained.json()["steps"] == ["record PoolUndrained (maintenance over)"]
        wait_for(lambda: _state(server, "waiter") == "busy", what="the waiter served")
        waiter_slot = get_json(server, "/v1/deployments/waiter")["slot"]["name"]
        assert waiter_slot != held  # drained by name: still out
        assert get_json(server, f"/v1/slots/{held}")["drained"] is True
        types = [e["type"] for e in events_of(server)]
        assert (types.count("PoolDrained"), types.count("PoolUndrained")) == (1, 1)


def test_drain_and_undrain_on_the_command_line(database_url: str, tmp_path: Path) -> None:
    env = {"LEDGER_DATABASE_URL": database_url, "LEDGER_MAX_POOL_SIZE": "3"}

    def cli(*args: str) -> Any:
        done = run_cli(*args, "--json", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    cli("provision", "--count", "2")
    first, second = (row["name"] for row in cli("slots"))
    [dry] = cli("drain", first, "--reason", REASON, "--dry-run")
    assert dry == {
        "target": first,
        "dry_run": True,
        "would": f"record SlotDrained on {first} ({REASON})",
    }
    assert not any(row["drained"] for row in cli("slots"))

    for args, code in (
        (("drain", "pool-bot-999", "--reason", REASON), 2),  # unknown slot
        (("drain", first, "--reason", "bell\x07"), 2),  # bad input
        (("undrain", first, "--reason", REASON), 1),  # a conflict with the slot's state
    ):
        refused = run_cli(*args, env=env, cwd=tmp_path)
        assert refused.returncode == code, (args, refused.stdout + refused.stderr)
        assert refused.stderr.startswith("error: "), refused.stderr

    cli("drain", first, "--reason", REASON)
    [acquired] = cli("acquire", "bot-1")
    assert acquired["slot"] == second  # the drained slot is skipped
    [pool] = cli("pool", "drain", "--reason", REASON)
    assert pool["did"] == f"record PoolDrained ({REASON}); record SlotDrained on {second}"
    assert [row["drained"] for row in cli("slots")] == [True, True]
    [back] = cli("pool", "undrain", "--reason", "over")
    assert back["did"] == f"record PoolUndrained (over); record SlotUndrained on {second}"
    assert [row["drained"] for row in cli("slots")] == [True, False]
    [again] = cli("pool", "undrain", "--reason", "over")
    assert again["did"] == "nothing: already so"


def test_a_maximum_lowered_below_the_pool_is_kept_by_draining(
    database_url: str, tmp_path: Path
) -> None:
    """A restart with a smaller ``LEDGER_MAX_POOL_SIZE`` than the pool's slots: the
    ledger drains the excess (``policy:capacity``), so no more bots than the new maximum
    hold slots at once, and the checker finds nothing; a larger setting undrains them."""
    with cluster(tmp_path) as processes:
        fake = processes.fake_coolify()
        env = processes.env(database_url, fake, LEDGER_MAX_POOL_SIZE="4")
        server = processes.serve(env)
        for n in range(4):
            assert _deploy(server, f"first-{n}").status_code == 201
        slots = [_slot_of(server, f"first-{n}") for n in range(4)]
        for n, slot in enumerate(slots):
            _release(server, f"first-{n}", slot)
        server.stop()

        smaller = env | {"LEDGER_MAX_POOL_SIZE": "2"}
        server = processes.serve(smaller, name="serve-smaller")
        drained = get_json(server, "/v1/slots", drained="true")
        assert len(drained) == 2, drained
        assert {s["drain_scope"] for s in drained} == {"size"}
        event = events_of(server, type="SlotDrained")[-1]
        assert event["actor"] == "policy:capacity", event
        assert get_json(server, "/v1/pool/stats")["maxSize"] == 2

        answers = [_deploy(server, f"bot-{n}").status_code for n in range(3)]
        assert answers == [201, 201, 202]  # two at most, the third waits
        refused = _post(server, f"/v1/slots/{drained[0]['name']}/undrain", {"reason": "now"})
        assert refused.status_code == 409, refused.text
        assert "maximum" in refused.json()["detail"]
        _slot_of(server, "bot-0")
        released = httpx.delete(f"{server.url}/v1/deployments/bot-0", timeout=60)
        assert released.status_code == 200, released.text
        wait_for(lambda: _state(server, "bot-2") == "busy", what="the waiting bot served")
        busy = get_json(server, "/v1/slots", status="busy")
        assert len(busy) <= 2, busy

        checked = run_cli("check", "--json", env=smaller, cwd=tmp_path)
        assert checked.returncode == 0, checked.stdout + checked.stderr
        server.stop()

        larger = env | {"LEDGER_MAX_POOL_SIZE": "4"}
        server = processes.serve(larger, name="serve-larger")
        assert get_json(server, "/v1/slots", drained="true") == []
        assert events_of(server, type="SlotUndrained")[-1]["actor"] == "policy:capacity"
