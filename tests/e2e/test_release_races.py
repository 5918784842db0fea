"""Issue 10, defects 3 and 4, through running ``slotledger serve`` processes: two servers
on one PostgreSQL database, a pool of two slots, the fake Coolify, many clients.

Before the fix a release that met its entry's dispatch answered 409 while the bot kept
the slot (every slot of a pool leaked within seconds), and a repeated request answered
409 instead of the slot or entry the bot already had."""

from __future__ import annotations

import queue
import random
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from tests.blackbox import HttpProcess, cluster, run_cli, wait_for

CLIENTS = 8
"""Four at a time per server: well within a server's default connection pool, so a
loaded machine makes the run slower, never short of connections."""
BOTS = 12
CYCLES = 240
"""request -> (repeat) -> release -> (repeat) cycles in all: the run is bounded by work."""
QUICK_RELEASE = {
    "LEDGER_STATUS_LAG_S": "1",
    "LEDGER_POLL_INITIAL_S": "0.05",
    "LEDGER_POLL_MAX_S": "0.25",
}
"""A release clears its slot in the background (cancel, stop, wait until gone) at the
fake's short lags, so the next request soon finds the slot again."""


@dataclass
class Tally:
    """What the clients saw; each bot is used by one client at a time, so its last
    acknowledged operation is the last one recorded for it."""

    statuses: Counter[tuple[str, int]] = field(default_factory=Counter)
    problems: list[str] = field(default_factory=list)
    last: dict[str, str] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def saw(self, what: str, answer: httpx.Response) -> None:
        with self.lock:
            self.statuses[(what, answer.status_code)] += 1

    def problem(self, text: str) -> None:
        with self.lock:
            self.problems.append(text)


def same_request(first: dict[str, Any], again: httpx.Response) -> str | None:
    """Why a repeated request's answer does not match the first one, if it does not."""
    body = again.json()
    if "slot_id" in first:  # a slot: the repeat answers with that same slot
        if again.status_code != 200 or body.get("slot_id") != first["slot_id"]:
            return f"slot {first['slot_id']} repeated as {again.status_code} {body}"
        return None
    if again.status_code == 202:  # still waiting: the same entry
        return None if body["queued_at"] == first["queued_at"] else f"a second entry: {body}"
    if again.status_code == 200 and body.get("bot_id") == first["bot_id"]:
        return None  # dispatched in between: the slot it was given
    return f"queued entry repeated as {again.status_code} {body}"


def cycle(bot: str, http: list[httpx.Client], tally: Tally, rng: random.Random) -> None:
    """One bot's request and release, each on a server drawn at random, each sometimes
    repeated as a client would after losing an answer."""
    body = {"bot_id": bot, "queue_timeout_s": 600}
    asked = rng.choice(http).post("/v1/deployments", json=body)
    tally.saw("request", asked)
    if asked.status_code not in (201, 202):
        tally.problem(f"request {bot}: {asked.status_code} {asked.text}")
        return
    tally.last[bot] = "request"
    if rng.random() < 0.3:
        again = rng.choice(http).post("/v1/deployments", json=body)
        tally.saw("repeated request", again)
        if (why := same_request(asked.json(), again)) is not None:
            tally.problem(f"repeat {bot}: {why}")
    released = rng.choice(http).delete(f"/v1/deployments/{bot}")
    tally.saw("release", released)
    if released.status_code != 200:
        tally.problem(f"release {bot}: {released.status_code} {released.text}")
        return
    if asked.status_code == 202 and released.json()["outcome"] == "released":
        tally.saw("release met the dispatch", released)
    tally.last[bot] = "release"
    if rng.random() < 0.3:
        again = rng.choice(http).delete(f"/v1/deployments/{bot}")
        tally.saw("repeated release", again)
        if again.status_code != 404 or again.json()["error"] != "bot_not_found":
            tally.problem(f"repeated release {bot}: {again.status_code} {again.text}")


def run_clients(servers: list[HttpProcess]) -> Tally:
    tally = Tally()
    bots: queue.SimpleQueue[str] = queue.SimpleQueue()
    for n in range(BOTS):
        bots.put(f"racer-{n}")
    work = iter(range(CYCLES))
    work_lock = threading.Lock()

    def client(seed: int) -> None:
        rng = random.Random(seed)
        http = [s.client() for s in servers]
        try:
            while True:
                with work_lock:
                    if next(work, None) is None:
                        return
                bot = bots.get()
                try:
                    cycle(bot, http, tally, rng)
                except httpx.HTTPError as e:
                    tally.problem(f"{bot}: {type(e).__name__}: {e}")
                finally:
                    bots.put(bot)
        finally:
            for h in http:
                h.close()

    threads = [threading.Thread(target=client, args=(n,)) for n in range(CLIENTS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return tally


def holders(server: HttpProcess) -> dict[str, str]:
    slots = httpx.get(server.url + "/v1/slots", timeout=30).json()
    return {s["bot_id"]: s["name"] for s in slots if s["bot_id"]}


def test_releases_that_race_dispatches_leak_no_slot(tmp_path: Path, postgres_url: str) -> None:
    with cluster(tmp_path) as running:
        fake = running.fake_coolify(deploy_delay=0.05)
        env = running.env(postgres_url, fake, LEDGER_MAX_POOL_SIZE="2", **QUICK_RELEASE)
        servers = [running.serve(env, name="serve-a"), running.serve(env, name="serve-b")]

        tally = run_clients(servers)
        print(f"\nrelease races: {dict(sorted(tally.statuses.items()))}")

        server_errors = {k: n for k, n in tally.statuses.items() if k[1] >= 500}
        assert not server_errors, (server_errors, tally.problems[:5])
        assert not tally.problems, (len(tally.problems), tally.problems[:10], tally.statuses)
        released = {bot for bot, op in tally.last.items() if op == "release"}
        assert len(released) == BOTS
        for server in servers:  # what a release gave back stays given back
            wait_for(
                lambda server=server: not (set(holders(server)) & released),
                what=f"no slot held by a released bot on {server.name}",
            )
            assert httpx.get(server.url + "/v1/queue", timeout=30).json() == []
        checked = run_cli("check", env=env)
        assert checked.returncode == 0, checked.stdout + checked.stderr


def test_a_repeated_request_answers_with_the_same_slot_or_entry(
    tmp_path: Path, postgres_url: str
) -> None:
    with cluster(tmp_path) as running:
        fake = running.fake_coolify(deploy_delay=3600)  # slots stay deploying, held
        env = running.env(postgres_url, fake, LEDGER_MAX_POOL_SIZE="2", **QUICK_RELEASE)
        server = running.serve(env)
        key = {"Idempotency-Key": "order-17"}
        with server.client() as http:
            first = http.post("/v1/deployments", json={"bot_id": "bot-a"})
            assert first.status_code == 201, first.text
            again = http.post("/v1/deployments", json={"bot_id": "bot-a"})
            assert again.status_code == 200, again.text
            assert again.json()["slot_id"] == first.json()["slot_id"]

            keyed = http.post("/v1/deployments", json={"bot_id": "bot-b"}, headers=key)
            assert keyed.status_code == 201, keyed.text
            repeat = http.post("/v1/deployments", json={"bot_id": "bot-b"}, headers=key)
            assert repeat.status_code == 200, repeat.text
            for name in ("slot_id", "bot_id", "lease"):
                assert repeat.json()[name] == keyed.json()[name], name
            other = http.post(
                "/v1/deployments", json={"bot_id": "bot-b", "priority": 5}, headers=key
            )
            assert other.status_code == 422, other.text
            assert other.json()["error"] == "idempotency_key_reused"

            queued = http.post("/v1/deployments", json={"bot_id": "bot-q"}, headers=key)
            assert queued.status_code == 202 and queued.json()["position"] == 1, queued.text
            for headers in (key, {}):
                same = http.post("/v1/deployments", json={"bot_id": "bot-q"}, headers=headers)
                assert same.status_code == 202, same.text
                for name in ("bot_id", "position", "queued_at"):
                    assert same.json()[name] == queued.json()[name], name
            other = http.post(
                "/v1/deployments", json={"bot_id": "bot-q", "platform": "zoom"}, headers=key
            )
            assert other.status_code == 422 and other.json()["error"] == "idempotency_key_reused"
            assert [q["bot_id"] for q in http.get("/v1/queue").json()] == ["bot-q"]

            cancelled = http.delete("/v1/deployments/bot-q")
            assert cancelled.status_code == 200 and cancelled.json()["outcome"] == "cancelled"
            gone = http.delete("/v1/deployments/bot-q")
            assert gone.status_code == 404 and gone.json()["error"] == "bot_not_found"
            assert http.get("/v1/queue").json() == []
