"""The always-on invariant checker through real processes.

The ledger refuses to write a bad log, so the bad events are written straight into the
store (``HandCraftedLog``, at instants of 2025-01-01), beside the running processes; the
processes are the installed console script: ``serve`` on SQLite (which runs the policy
worker's leader, and so the checker, in process), and on PostgreSQL ``serve`` beside two
``slotledger worker --port`` processes, one leading. What is watched is what an operator
sees: ``InvariantViolated`` in ``/v1/events``, the counter in ``/metrics``, the line in
``/readyz`` (which stays 200), the checker's loop, the red banner in headless Chromium.
A restarted or replaced checker records nothing twice; ordinary traffic records nothing.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
from playwright.sync_api import Browser, expect

from ledger.bootstrap import build_ledger
from ledger.domain import Slot
from ledger.settings import load_settings
from tests.blackbox import HttpProcess, cluster, wait_for
from tests.e2e.web.chromium import WAIT_MS
from tests.e2e.web.conftest import browser  # noqa: F401  (the dashboard tests' browser)
from tests.integration.test_invariants import HandCraftedLog

QUICK = {"LEDGER_POLICY_TICK_S": "0.2", "LEDGER_INVARIANT_CHECKPOINT_EVENTS": "100"}


@contextmanager
def crafted(url: str) -> Iterator[HandCraftedLog]:
    ledger = build_ledger(load_settings(database_url=url))
    try:
        yield HandCraftedLog(ledger)
    finally:
        ledger.close()


def double_lease(log: HandCraftedLog) -> UUID:
    """Bot b acquires the slot bot a holds (also an illegal transition); the slot then
    stays deploying for a year: stuck, no decision."""
    slot = log.provision(0)
    log.slot(slot, Slot.SlotAcquired, 1, "bot-a")
    log.slot(slot, Slot.SlotAcquired, 2, "bot-b")
    return slot


def released_while_idle(log: HandCraftedLog) -> UUID:
    """One illegal transition; the slot stays idle."""
    slot = log.provision(0)
    log.slot(slot, Slot.SlotReleased, 1, "bot-x")
    return slot


def violated(server: HttpProcess) -> list[dict[str, Any]]:
    answer = httpx.get(f"{server.url}/v1/events", params={"type": "InvariantViolated"}, timeout=30)
    answer.raise_for_status()
    events: list[dict[str, Any]] = answer.json()
    return events


def keys(events: list[dict[str, Any]]) -> Counter[str]:
    return Counter(e["data"]["key"] for e in events)


def kinds(events: list[dict[str, Any]]) -> list[str]:
    return sorted(e["data"]["kind"] for e in events)


def readyz(process: HttpProcess) -> tuple[int, dict[str, Any]]:
    answer = httpx.get(process.url + "/readyz", timeout=30)
    body: dict[str, Any] = answer.json()
    return answer.status_code, body


def loop(body: Mapping[str, Any], name: str = "invariant-checker") -> dict[str, Any]:
    entry: dict[str, Any] = next(e for e in body["loops"] if e["name"] == name)
    return entry


def counted(process: HttpProcess, kind: str) -> float | None:
    text = httpx.get(process.url + "/metrics", timeout=30).text
    prefix = f'slotledger_invariant_violations_total{{kind="{kind}"}} '
    values = [float(line[len(prefix) :]) for line in text.splitlines() if line.startswith(prefix)]
    return values[0] if values else None


def until_checked(server: HttpProcess, log: HandCraftedLog, before: int) -> list[dict[str, Any]]:
    """Write one more violation and wait for it: every event before it was checked."""
    marker = released_while_idle(log)
    wait_for(
        lambda: any(e["slot_id"] == str(marker) for e in violated(server)),
        what="the marker's violation",
    )
    events = violated(server)
    assert len(events) == before + 1, kinds(events)
    return events


def test_serve_on_sqlite_records_shows_and_never_repeats_a_violation(
    tmp_path: Path,
    sqlite_url: str,
    browser: Browser,  # noqa: F811
) -> None:
    with crafted(sqlite_url) as log:
        slot = double_lease(log)
    with cluster(tmp_path) as running:
        fake = running.fake_coolify()
        env = running.env(sqlite_url, fake, **QUICK)
        server = running.serve(env)

        found = wait_for(lambda: len(violated(server)) == 3 and violated(server), what="3")
        assert kinds(found) == ["deploying_stuck", "illegal_transition", "slot_two_bots"]
        two_bots = next(e for e in found if e["data"]["kind"] == "slot_two_bots")
        assert (two_bots["slot_id"], two_bots["bot_id"]) == (str(slot), "bot-b")
        assert two_bots["actor"] == "policy:invariants"
        assert two_bots["data"]["positions"] == [log.positions[1], log.positions[2]]
        assert "'bot-a' held it" in two_bots["data"]["detail"]

        status, body = readyz(server)
        assert status == 200 and body["status"] == "ready", body["problems"]
        assert loop(body)["state"] == "running"
        assert sorted(v["kind"] for v in body["violations"]) == kinds(found)
        assert any(p.startswith("invariant violated: slot_two_bots") for p in body["problems"])
        assert counted(server, "slot_two_bots") == 1.0
        assert counted(server, "queue_starved") == 0.0

        page = browser.new_page(viewport={"width": 1280, "height": 900})
        try:
            page.goto(server.url)
            banner = page.get_by_test_id("violations-banner")
            expect(banner).to_be_visible(timeout=WAIT_MS)
            expect(banner.locator('[data-testid="violation"]')).to_have_count(3)
            expect(banner.locator('[data-kind="slot_two_bots"]')).to_contain_text(
                "acquired by 'bot-b' while 'bot-a' held it"
            )
            expect(page.get_by_test_id("violations-count")).to_have_text("3")
            recent = page.locator('[data-testid="event"][data-type="InvariantViolated"]')
            expect(recent.first).to_be_visible(timeout=WAIT_MS)
            red = banner.evaluate("el => getComputedStyle(el).borderTopColor")
            assert red == "rgb(220, 38, 38)", red
        finally:
            page.close()

        server.stop()
        again = running.serve(env, name="serve-again")  # reads the whole log again
        with crafted(sqlite_url) as log:
            after = until_checked(again, log, before=3)
        assert set(keys(after).values()) == {1}
        assert counted(again, "illegal_transition") == 2.0


def test_ordinary_traffic_records_no_violation(tmp_path: Path, sqlite_url: str) -> None:
    with cluster(tmp_path) as running:
        fake = running.fake_coolify()
        env = running.env(
            sqlite_url,
            fake,
            LEDGER_MAX_POOL_SIZE="2",
            LEDGER_STATUS_LAG_S="1",
            LEDGER_POLL_INITIAL_S="0.05",
            LEDGER_POLL_MAX_S="0.25",
            **QUICK,
        )
        server = running.serve(env)
        bots = {f"bot-{n}" for n in range(5)}  # three of them wait in the queue
        with server.client() as http:
            for bot in sorted(bots):
                assert http.post("/v1/deployments", json={"bot_id": bot}).status_code < 300
            waiting = set(bots)

            def release_the_busy() -> bool:
                for bot in sorted(waiting):
                    state = http.get(f"/v1/deployments/{bot}").json()["state"]
                    assert state not in ("failed", "released"), (bot, state)
                    if state == "busy":
                        assert http.delete(f"/v1/deployments/{bot}").status_code == 200
                        waiting.discard(bot)
                return not waiting

            wait_for(release_the_busy, what="every bot served and released")
            wait_for(
                lambda: all(s["status"] == "idle" for s in http.get("/v1/slots").json()),
                what="every slot idle again",
            )
        with crafted(sqlite_url) as log:
            (marker,) = until_checked(server, log, before=0)
        assert marker["data"]["kind"] == "illegal_transition"
        assert readyz(server)[0] == 200


def test_on_postgres_the_leading_worker_checks_and_a_successor_repeats_nothing(
    tmp_path: Path, postgres_url: str
) -> None:
    with crafted(postgres_url) as log:
        for t in range(120):  # more than a checkpoint's worth
            log.provision(t)
        double_lease(log)
    with cluster(tmp_path) as running:
        fake = running.fake_coolify()
        env = running.env(postgres_url, fake, **QUICK)
        server = running.serve(env)  # runs no worker on PostgreSQL, shows what they record
        first = running.worker_http(env, name="worker-1")
        second = running.worker_http(env, name="worker-2")

        found = wait_for(lambda: len(violated(server)) == 3 and violated(server), what="3")
        assert kinds(found) == ["deploying_stuck", "illegal_transition", "slot_two_bots"]
        leader, standby = (first, second) if readyz(first)[1]["leader"] else (second, first)
        status, body = readyz(leader)
        assert status == 200 and body["status"] == "ready", body["problems"]
        assert loop(body)["state"] == "running"
        assert sorted(v["kind"] for v in body["violations"]) == kinds(found)
        assert loop(readyz(standby)[1])["state"] == "standby"
        assert counted(leader, "slot_two_bots") == 1.0
        assert counted(server, "deploying_stuck") == 1.0
        status, body = readyz(server)
        assert status == 200 and len(body["violations"]) == 3

        leader.kill()  # a crash: the standby takes over, from the checkpoint
        wait_for(lambda: readyz(standby)[1]["leader"], what="the standby leads")
        with crafted(postgres_url) as log:
            after = until_checked(server, log, before=3)
        assert set(keys(after).values()) == {1}
        started = re.findall(
            r"invariant checker of pool default starts after position (\d+)", standby.output()
        )
        assert started and int(started[-1]) >= 100, started  # from the checkpoint
        assert counted(standby, "illegal_transition") == 2.0
