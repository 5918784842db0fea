"""The dashboard's charts, black box: a real ``slotledger serve`` and ``fake-coolify``
(tests/blackbox.py) on SQLite and on PostgreSQL, traffic through the API (deploys, a
queue, releases, a failed slot), then

- the chart endpoints (``/v1/pool/timeline``, ``/v1/stats/deploy-times``,
  ``/v1/stats/queue-wait``) checked against what the slots' own histories and the audit
  say, and their bad parameters refused with a 422 naming the parameter;
- the page in headless Chromium (Debian's package, on SQLite): each chart's data equals
  what the API answers for the same range, the slider moves a cursor over the charts, an
  error card shows its reason, events show reasons and whole bot ids, scrollbars are dark,
  and at 390 px wide nothing leaves the viewport. Screenshots at 1280 and 390 px go to
  the temp directory (``dash-1280.png``, ``dash-390.png``).
"""

from __future__ import annotations

import math
import re
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from tests.blackbox import cluster, wait_for
from tests.e2e.web.chromium import OVERFLOWING, WAIT_MS

REASON = "disk full on /var/lib/docker (checked by the operator)"
LONG_BOT = "orchestrator-eu-west-1.meeting-bot:7f3c9a2e-5b1d-4e8f-9a6c-2d4b8e1f0a37@tenant-42"
BOTS = ("chart-bot-1", "chart-bot-2", LONG_BOT)
QUEUED = "chart-bot-4"
STATUSES = ("idle", "deploying", "busy", "error")
SHOTS = Path(tempfile.gettempdir())
NARROW: ViewportSize = {"width": 390, "height": 844}
WIDE: ViewportSize = {"width": 1280, "height": 900}


@dataclass
class Served:
    """A server after the traffic, and what the traffic left: three slots, four deploys,
    one queue entry served, one slot in error."""

    api: httpx.Client
    url: str
    failed_slot: str

    def get(self, path: str, **params: Any) -> Any:
        answer = self.api.get(path, params=params)
        assert answer.status_code == 200, answer.text
        return answer.json()

    def histories(self) -> list[dict[str, Any]]:
        return [self.get(f"/v1/slots/{s['slot_id']}/history") for s in self.get("/v1/slots")]

    def first_event(self) -> datetime:
        return instant(self.get("/v1/events", limit=1)[0]["occurred_at"])


def instant(text: str) -> datetime:
    return datetime.fromisoformat(text)


def slot_of(api: httpx.Client, name: str) -> dict[str, Any]:
    found: dict[str, Any] = api.get(f"/v1/slots/{name}").json()
    return found


def holder(api: httpx.Client, bot: str, status: str) -> bool:
    return any(s["bot_id"] == bot and s["status"] == status for s in api.get("/v1/slots").json())


def release(api: httpx.Client, bot: str) -> str:
    """Release the bot's slot; returns the slot's name."""
    answer = api.delete(f"/v1/deployments/{bot}")
    assert answer.status_code == 200, answer.text
    return str(answer.json()["slot"]["name"])


def drive(api: httpx.Client) -> str:
    """The traffic; returns the name of the slot it fails."""
    for bot in BOTS:
        assert api.post("/v1/deployments", json={"bot_id": bot}).status_code == 201
    wait_for(lambda: all(holder(api, bot, "busy") for bot in BOTS), what="three busy slots")
    assert api.post("/v1/deployments", json={"bot_id": QUEUED}).status_code == 202
    release(api, BOTS[0])
    wait_for(lambda: holder(api, QUEUED, "busy"), what="the queued bot served and busy")
    name = release(api, BOTS[1])
    wait_for(lambda: slot_of(api, name)["status"] == "idle", what=f"{name} idle")
    failed = api.post(f"/v1/slots/{name}/fail", json={"reason": REASON})
    assert failed.status_code == 200, failed.text
    return name


def serve(logs: Path, database_url: str) -> Iterator[Served]:
    with cluster(logs) as running:
        fake = running.fake_coolify(deploy_delay=0.3)
        env = running.env(
            database_url,
            fake,
            LEDGER_MAX_POOL_SIZE="3",
            LEDGER_RECOVERY_INTERVAL="3600",  # the failed slot stays failed
        )
        server = running.serve(env)
        with server.client() as api:
            yield Served(api, server.url, drive(api))


@pytest.fixture(scope="module")
def on_sqlite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    logs = tmp_path_factory.mktemp("charts-sqlite")
    yield from serve(logs, f"sqlite:///{logs / 'ledger.db'}")


@pytest.fixture(scope="module")
def on_postgres(
    postgres_base_url: str, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_base_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield from serve(
            tmp_path_factory.mktemp("charts-postgres"), f"{postgres_base_url}?schema={schema}"
        )
    finally:
        with psycopg.connect(postgres_base_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(params=["sqlite", "postgres"])
def served(request: pytest.FixtureRequest) -> Served:
    found: Served = request.getfixturevalue(f"on_{request.param}")
    return found


# --- what the API should answer, worked out from the slots' histories --------------------


def expected_timeline(
    histories: list[dict[str, Any]], answer: dict[str, Any]
) -> list[dict[str, float]]:
    """Each bucket's mean slots per status, from every interval of every slot."""
    since, until, step = instant(answer["since"]), instant(answer["until"]), answer["step_s"]
    span = (until - since).total_seconds()
    intervals = [
        (
            i["status"],
            (instant(i["start"]) - since).total_seconds(),
            span if i["end"] is None else (instant(i["end"]) - since).total_seconds(),
        )
        for h in histories
        for i in h["intervals"]
    ]
    buckets = []
    for k in range(math.ceil(span / step)):
        a, b = k * step, min((k + 1) * step, span)
        spent = dict.fromkeys(STATUSES, 0.0)
        for status, start, end in intervals:
            spent[status] += max(0.0, min(end, b) - max(start, a))
        buckets.append({s: spent[s] / (b - a) for s in STATUSES})
    return buckets


def deploy_durations(histories: list[dict[str, Any]]) -> dict[str, float]:
    """Each bot's deploy (deploying -> busy) in seconds, to the millisecond."""
    found = {}
    for h in histories:
        for before, after in zip(h["intervals"], h["intervals"][1:], strict=False):
            if (before["status"], after["status"]) == ("deploying", "busy"):
                seconds = (instant(before["end"]) - instant(before["start"])).total_seconds()
                found[before["bot_id"]] = round(seconds, 3)
    return found


def nearest_rank(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(share * len(ordered)) - 1]


# --- the endpoints -----------------------------------------------------------------------


def test_the_timeline_integrates_the_status_intervals(served: Served) -> None:
    since = served.first_event() - timedelta(seconds=2)
    answer = served.get(
        "/v1/pool/timeline", since=since.isoformat(), until=datetime.now(UTC).isoformat(), step=1
    )
    assert instant(answer["since"]) == since and answer["step_s"] == 1
    assert answer["max_size"] == 3 and answer["pool"] == "default"
    expected = expected_timeline(served.histories(), answer)
    assert len(answer["buckets"]) == len(expected) > 2
    for got, want in zip(answer["buckets"], expected, strict=True):
        assert {s: got[s] for s in STATUSES} == pytest.approx(want, abs=0.002), got["start"]
    assert sum(answer["buckets"][0][s] for s in STATUSES) == 0  # before the first slot
    failed_at = instant(served.get("/v1/events", type="SlotFailed")[0]["occurred_at"])
    after = served.get("/v1/pool/timeline", since=failed_at.isoformat(), step=3600)
    assert [{s: b[s] for s in STATUSES} for b in after["buckets"]] == [
        {"idle": 0, "deploying": 0, "busy": 2, "error": 1}  # the pool since the failure
    ]


def test_a_huge_range_is_cut_into_at_most_500_buckets(served: Served) -> None:
    answer = served.get("/v1/pool/timeline", since="2000-01-01T00:00:00Z", step=1)
    span = (instant(answer["until"]) - instant(answer["since"])).total_seconds()
    assert answer["step_s"] == math.ceil(span / 500)
    assert len(answer["buckets"]) == math.ceil(span / answer["step_s"]) <= 500
    later = served.get(
        "/v1/stats/queue-wait", until=(datetime.now(UTC) + timedelta(days=3)).isoformat()
    )
    assert instant(later["until"]) <= datetime.now(UTC)  # the future is not known yet
    assert (instant(later["until"]) - instant(later["since"])) == timedelta(hours=1)


def test_deploy_times_are_the_deploying_intervals_that_ended_busy(served: Served) -> None:
    durations = deploy_durations(served.histories())
    assert set(durations) == {*BOTS, QUEUED}
    answer = served.get("/v1/stats/deploy-times", window=3600)
    assert answer["count"] == 4
    assert {s["bot_id"]: s["seconds"] for s in answer["samples"]} == durations
    values = list(durations.values())
    assert answer["p50_s"] == nearest_rank(values, 0.50)
    assert answer["p95_s"] == nearest_rank(values, 0.95) == answer["max_s"] == max(values)
    assert sum(b["count"] for b in answer["histogram"]) == 4
    assert answer["histogram"][0]["start_s"] <= min(values)
    assert answer["histogram"][-1]["end_s"] >= max(values)
    assert min(values) >= 0.3  # the fake's deploy delay
    earlier = served.get("/v1/stats/deploy-times", until=served.first_event().isoformat())
    assert (earlier["count"], earlier["p50_s"], earlier["histogram"]) == (0, None, [])


def test_queue_wait_shows_the_entry_that_waited(served: Served) -> None:
    events = served.get("/v1/events", bot=QUEUED, limit=100)
    at = {e["type"]: instant(e["occurred_at"]) for e in events}
    waited = (at["SlotAcquired"] - at["QueueEntryEnqueued"]).total_seconds()
    answer = served.get(
        "/v1/stats/queue-wait",
        since=(served.first_event() - timedelta(seconds=1)).isoformat(),
        until=datetime.now(UTC).isoformat(),
        step=1,
    )
    served_in = [b for b in answer["buckets"] if b["dispatched"]]
    assert len(served_in) == 1 and served_in[0]["dispatched"] == 1
    assert served_in[0]["mean_wait_s"] == pytest.approx(waited, abs=0.05)
    assert served_in[0]["longest_wait_s"] >= served_in[0]["mean_wait_s"]
    assert sum(b["waiting"] for b in answer["buckets"]) == pytest.approx(waited, abs=0.05)
    assert all(b["mean_wait_s"] is None for b in answer["buckets"] if not b["dispatched"])


@pytest.mark.parametrize(
    ("path", "params", "named"),
    [
        ("/v1/pool/timeline", {"step": "0"}, "query.step"),
        ("/v1/pool/timeline", {"step": "soon"}, "query.step"),
        ("/v1/pool/timeline", {"step": str(400 * 86400)}, "query.step"),
        ("/v1/pool/timeline", {"since": "yesterday"}, "query.since"),
        ("/v1/pool/timeline", {"since": "1700000000"}, "query.since"),
        (
            "/v1/pool/timeline",
            {"since": "2025-01-02T00:00:00Z", "until": "2025-01-01T00:00:00Z"},
            "since",
        ),
        ("/v1/stats/queue-wait", {"step": "-5"}, "query.step"),
        ("/v1/stats/queue-wait", {"until": "2025-13-01T00:00:00Z"}, "query.until"),
        ("/v1/stats/deploy-times", {"window": "0"}, "query.window"),
        ("/v1/stats/deploy-times", {"window": str(31 * 86400)}, "query.window"),
        ("/v1/stats/deploy-times", {"until": "not-a-time"}, "query.until"),
    ],
)
def test_bad_parameters_are_a_422_naming_them(
    on_sqlite: Served, path: str, params: dict[str, str], named: str
) -> None:
    answer = on_sqlite.api.get(path, params=params)
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert body["error"] == "bad_input" and body["detail"].startswith(named), body


# --- the page ----------------------------------------------------------------------------


def chart(page: Page, name: str) -> dict[str, Any]:
    """A chart's range and data as the page holds them, read at one moment."""
    element = page.get_by_test_id(name)
    expect(element).to_have_attribute("data-buckets", re.compile(r"^\[\{"), timeout=WAIT_MS)
    data: dict[str, Any] = element.evaluate(
        """e => ({since: e.dataset.since, until: e.dataset.until, step: Number(e.dataset.step),
                  buckets: JSON.parse(e.dataset.buckets)})"""
    )
    return data


def same_range(served: Served, path: str, shown: dict[str, Any]) -> dict[str, Any]:
    answer: dict[str, Any] = served.get(
        path, since=shown["since"], until=shown["until"], step=shown["step"]
    )
    return answer


@contextmanager
def opened(browser: Browser, served: Served, viewport: ViewportSize) -> Iterator[Page]:
    """The dashboard once it shows the traffic; no script error may happen on it."""
    page = browser.new_page(viewport=viewport, device_scale_factor=1)
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    try:
        page.goto(served.url)
        expect(page.locator('[data-testid="slot"]')).to_have_count(3, timeout=WAIT_MS)
        expect(page.get_by_test_id("deploy-count")).to_have_text("4", timeout=WAIT_MS)
        yield page
        assert errors == []
    finally:
        page.close()


def test_the_charts_show_what_the_api_answers(browser: Browser, on_sqlite: Served) -> None:
    with opened(browser, on_sqlite, WIDE) as page:
        timeline = chart(page, "timeline-chart")
        answer = same_range(on_sqlite, "/v1/pool/timeline", timeline)
        assert answer["buckets"] == timeline["buckets"]
        assert page.locator('[data-testid="timeline-chart"] polygon[data-status]').count() == 4
        queue = chart(page, "queue-chart")
        assert same_range(on_sqlite, "/v1/stats/queue-wait", queue)["buckets"] == queue["buckets"]
        assert any(b["dispatched"] for b in queue["buckets"])

        deploys = on_sqlite.get("/v1/stats/deploy-times", window=3600)
        for name in ("p50", "p95"):
            shown = page.get_by_test_id(f"deploy-{name}")
            assert float(shown.get_attribute("data-value") or "nan") == deploys[f"{name}_s"]
            assert shown.inner_text() == f"{deploys[f'{name}_s']:.2f} s"
        bins = page.locator('[data-testid="deploy-bin"]')
        assert [int(b.get_attribute("data-count") or -1) for b in bins.all()] == [
            b["count"] for b in deploys["histogram"]
        ]

        # an error card shows its reason; events show reasons and whole bot ids
        failed = page.locator(f'[data-testid="slot"][data-name="{on_sqlite.failed_slot}"]')
        expect(failed).to_have_attribute("data-status", "error")
        expect(failed.get_by_test_id("slot-reason")).to_have_text(REASON)
        event = page.locator('[data-testid="event"][data-type="SlotFailed"]')
        expect(event.get_by_test_id("event-reason")).to_have_text(REASON)
        long_ids = page.locator('[data-testid="event-bot"]', has_text=LONG_BOT)
        assert long_ids.count() >= 1
        assert {t.strip() for t in long_ids.all_inner_texts()} == {LONG_BOT}

        # the slider's ends and ticks are labelled; moving it moves a cursor over the charts
        ticks = page.get_by_test_id("slider-tick")
        expect(ticks).to_have_count(5)
        assert all(t.strip() for t in ticks.all_inner_texts())
        assert ticks.last.inner_text() == "now"
        slider = page.get_by_test_id("time-slider")
        slider.evaluate("e => { e.value = 500; e.dispatchEvent(new Event('input')); }")
        expect(page.get_by_test_id("history-banner")).to_be_visible(timeout=WAIT_MS)
        for name in ("timeline-chart", "queue-chart"):
            cursor = page.get_by_test_id(name).get_by_test_id("chart-cursor")
            expect(cursor).to_have_count(1)
            box, plot = cursor.bounding_box(), page.get_by_test_id(name).bounding_box()
            assert box is not None and plot is not None
            share = (box["x"] + box["width"] / 2 - plot["x"] - 7) / (plot["width"] - 14)
            assert share == pytest.approx(0.5, abs=0.05), name
        page.get_by_test_id("back-to-live").click()
        expect(page.get_by_test_id("chart-cursor")).to_have_count(0)

        # dark scrollbars
        scrollbars = page.get_by_test_id("events").evaluate(
            """e => [getComputedStyle(e).scrollbarColor,
                     getComputedStyle(document.documentElement).colorScheme]"""
        )
        assert scrollbars[0] not in ("", "auto") and scrollbars[1] == "dark", scrollbars
        page.mouse.move(0, 0)
        page.screenshot(path=str(SHOTS / "dash-1280.png"), full_page=True)


NARROW_SELECTORS = (
    ".topbar > *, .tile, .card, .slot, .slot > *, .chart svg, .ticks .tick,"
    " [data-testid=event], [data-testid=event] > *, [data-testid=queue-entry], .readout"
)


def test_at_390_px_nothing_leaves_the_viewport(browser: Browser, on_sqlite: Served) -> None:
    with opened(browser, on_sqlite, NARROW) as page:
        chart(page, "timeline-chart")
        chart(page, "queue-chart")
        found = page.evaluate(OVERFLOWING, NARROW_SELECTORS)
        assert found["out"] == [] and found["scrollWidth"] <= found["width"] == 390, found
        card = page.locator('[data-testid="slot"]', has_text=LONG_BOT)
        assert card.locator(".slot-bot").inner_text() == LONG_BOT  # whole, wrapped
        expect(page.get_by_test_id("slider-tick")).to_have_count(3)
        page.screenshot(path=str(SHOTS / "dash-390.png"), full_page=True)
