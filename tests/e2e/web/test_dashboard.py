"""The dashboard in headless Chromium (Debian's package, driven by Python playwright)
against a real server: a demo-like service (fake Coolify in-process, a pool of six),
commands sent through the API, and the page expected to follow without a reload.

Also writes ``docs/dashboard.png`` (the README's screenshot) and checks its pixels.
The browser is ``conftest.py``'s.
"""

from __future__ import annotations

import base64
import struct
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, ViewportSize, expect

from ledger.devtools.demo import Demo
from ledger.entrypoints.web import create_app
from ledger.service import Service
from ledger.settings import load_settings
from tests.e2e.web.chromium import OVERFLOWING, WAIT_MS
from tests.integration.web.support import ServerThread

SCREENSHOT = Path(__file__).resolve().parents[3] / "docs" / "dashboard.png"
VIEWPORT: ViewportSize = {"width": 1440, "height": 900}
COLOURS = {  # ledger/static/dashboard.css
    "idle": (22, 163, 74),
    "deploying": (245, 158, 11),
    "busy": (37, 99, 235),
    "error": (220, 38, 38),
}


@pytest.fixture
def server(tmp_path: Path) -> Iterator[tuple[Service, ServerThread]]:
    """``serve --demo`` without the simulated bots (the test is the only traffic) and
    without the policies (a failed slot stays failed for the screenshot)."""
    settings = load_settings(database_url=f"sqlite:///{tmp_path / 'ledger.db'}")
    service = Service(
        settings,
        demo=Demo(bots=False, deploy_delay_s=0.3),
        worker=False,
        deploy_poll_s=0.05,
        status_grace_s=30.0,  # the demo fake sweeps statuses every 5 s
        drain_interval_s=0.2,
    )
    with ServerThread(create_app(service)) as running:
        yield service, running


def tile(page: Page, name: str) -> Any:
    return page.locator(f'[data-testid="tile-{name}"] .tile-value')


def cells(page: Page, status: str | None = None) -> Any:
    selector = '[data-testid="slot"]' + (f'[data-status="{status}"]' if status else "")
    return page.locator(selector)


def expect_tiles(page: Page, **values: int) -> None:
    for name, value in values.items():
        expect(tile(page, name)).to_have_text(str(value), timeout=WAIT_MS)


def screenshot_pixels(page: Page, png: bytes, points: list[tuple[int, int]]) -> list[list[int]]:
    """The colours at ``points`` of a PNG, decoded by the browser itself."""
    url = "data:image/png;base64," + base64.b64encode(png).decode()
    pixels: list[list[int]] = page.evaluate(
        """async ([url, points]) => {
            const image = new Image();
            image.src = url;
            await image.decode();
            const canvas = document.createElement("canvas");
            canvas.width = image.width;
            canvas.height = image.height;
            const context = canvas.getContext("2d");
            context.drawImage(image, 0, 0);
            const rgb = ([x, y]) => Array.from(context.getImageData(x, y, 1, 1).data.slice(0, 3));
            return points.map(rgb);
        }""",
        [url, points],
    )
    return pixels


def test_the_dashboard_follows_the_pool_live(
    browser: Browser, server: tuple[Service, ServerThread]
) -> None:
    service, running = server
    with (
        httpx.Client(base_url=running.url, timeout=10) as api,
        browser.new_page(viewport=VIEWPORT, device_scale_factor=1) as page,
    ):
        follow_the_pool(service, api, page)


def follow_the_pool(service: Service, api: httpx.Client, page: Page) -> None:
    """The scenario; ``api`` talks to the server the page shows."""
    errors: list[str] = []
    page.on("pageerror", lambda e: errors.append(str(e)))
    page.goto(str(api.base_url))

    # the pool as provisioned: six idle slots, nothing queued, projections caught up
    expect(cells(page)).to_have_count(6, timeout=WAIT_MS)
    expect_tiles(page, total=6, idle=6, deploying=0, busy=0, error=0, queue=0)
    expect(page.get_by_test_id("lag")).to_have_text("0 s")
    expect(page.get_by_test_id("connection")).to_have_text("live")
    for cell in cells(page).all():
        assert cell.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(22, 163, 74)"
    page.evaluate("window.__sameDocument = true")
    idle_from = datetime.now(UTC)
    time.sleep(1.0)
    idle_until = datetime.now(UTC)

    # changes made through the API appear without a reload
    first = api.post("/v1/deployments", json={"bot_id": "e2e-bot-1"}).json()
    expect_tiles(page, idle=5)
    expect(page.locator(f'[data-name="{first["name"]}"][data-status="busy"]')).to_have_count(
        1, timeout=WAIT_MS
    )
    assert api.post("/v1/deployments", json={"bot_id": "e2e-bot-2"}).status_code == 201
    service.ledger.acquire("e2e-bot-3")  # acquired, never deployed: stays deploying
    queued = api.post("/v1/deployments", json={"bot_id": "e2e-gpu-bot", "platform": "gpu"})
    assert queued.status_code == 202  # no gpu slot and the pool is at its maximum size
    idle_name = next(s["name"] for s in api.get("/v1/slots").json() if s["status"] == "idle")
    failed = api.post(f"/v1/slots/{idle_name}/fail", json={"reason": "disk full"})
    assert failed.status_code == 200
    expect_tiles(page, total=6, idle=2, deploying=1, busy=2, error=1, queue=1)
    stats = api.get("/v1/pool/stats").json()
    assert {k: int(tile(page, k).inner_text()) for k in ("idle", "deploying", "busy", "error")} == {
        k: stats[k] for k in ("idle", "deploying", "busy", "error")
    }
    expect(page.locator('[data-testid="queue-entry"][data-bot="e2e-gpu-bot"]')).to_have_count(1)
    expect(page.locator('[data-testid="event"][data-type="SlotFailed"]')).to_have_count(1)
    assert page.evaluate("window.__sameDocument") is True

    # a click on a slot opens its timeline
    error_cell = page.locator(f'[data-name="{idle_name}"]')
    assert error_cell.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(220, 38, 38)"
    error_cell.click()
    timeline = page.get_by_test_id("timeline")
    expect(timeline).to_be_visible()
    expect(page.get_by_test_id("timeline-title")).to_have_text(idle_name)
    expect(
        timeline.locator('[data-testid="timeline-event"][data-type="SlotFailed"]')
    ).to_have_count(1)
    expect(timeline.locator('[data-testid="interval"][data-status="error"]')).to_have_count(1)
    assert "disk full" in timeline.inner_text()
    page.get_by_test_id("timeline-close").click()
    expect(timeline).to_be_hidden()

    # the time slider shows the pool as it was while every slot was idle
    first_event = datetime.fromisoformat(
        api.get("/v1/events", params={"limit": 1}).json()[0]["occurred_at"]
    )
    instant = idle_from + (idle_until - idle_from) / 2
    share = (instant - first_event) / (datetime.now(UTC) - first_event)
    page.get_by_test_id("time-slider").evaluate(
        "(e, v) => { e.value = v; e.dispatchEvent(new Event('input')); }", round(share * 1000)
    )
    expect(page.get_by_test_id("history-banner")).to_be_visible(timeout=WAIT_MS)
    expect_tiles(page, total=6, idle=6, deploying=0, busy=0, error=0)
    expect(cells(page, "idle")).to_have_count(6)
    assert page.get_by_test_id("time-label").inner_text() != "live"
    page.get_by_test_id("back-to-live").click()
    expect_tiles(page, idle=2, error=1)
    expect(page.get_by_test_id("history-banner")).to_be_hidden()

    # the README's screenshot, and its pixels carry the status colours
    page.mouse.move(0, 0)
    page.wait_for_timeout(300)  # hover transitions settle
    SCREENSHOT.parent.mkdir(exist_ok=True)
    page.screenshot(path=str(SCREENSHOT))
    png = SCREENSHOT.read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and 30_000 < len(png) < 5_000_000
    width, height = struct.unpack(">II", png[16:24])
    assert (width, height) == (VIEWPORT["width"], VIEWPORT["height"])
    samples: list[tuple[str, tuple[int, int]]] = []
    for status in COLOURS:
        box = cells(page, status).first.bounding_box()
        assert box is not None
        samples.append((status, (int(box["x"] + box["width"] - 6), int(box["y"] + 6))))
    colours = screenshot_pixels(page, png, [point for _, point in samples])
    for (status, point), colour in zip(samples, colours, strict=True):
        assert tuple(colour) == COLOURS[status], (status, point, colour)
    assert errors == []


NARROW: ViewportSize = {"width": 390, "height": 844}
SLOT_SELECTORS = ".tile, .tile > *, .slot, .slot > *, .slot-state > *"


def expect_drained(page: Page, api: httpx.Client, count: int) -> None:
    """The page shows ``count`` drained slots, as many as the API lists."""
    drained = page.locator('[data-testid="slot"][data-drained="true"]')
    expect(drained).to_have_count(count, timeout=WAIT_MS)
    expect(page.get_by_test_id("slot-drained")).to_have_count(count)
    listed = api.get("/v1/slots", params={"drained": "true"}).json()
    assert len(listed) == count
    assert {d.get_attribute("data-name") for d in drained.all()} == {s["name"] for s in listed}
    pill = page.get_by_test_id("drained-count")
    if count:
        expect(pill).to_be_visible()
        expect(pill).to_have_attribute("data-count", str(count))
        expect(pill).to_have_text(f"{count} drained")
    else:
        expect(pill).to_be_hidden()


def test_the_dashboard_marks_drained_slots(
    browser: Browser, server: tuple[Service, ServerThread]
) -> None:
    _, running = server
    with (
        httpx.Client(base_url=running.url, timeout=10) as api,
        browser.new_page(viewport=VIEWPORT, device_scale_factor=1) as page,
    ):
        errors: list[str] = []
        page.on("pageerror", lambda e: errors.append(str(e)))
        page.goto(running.url)
        expect(cells(page)).to_have_count(6, timeout=WAIT_MS)
        expect_tiles(page, total=6, idle=6)
        expect_drained(page, api, 0)

        # a busy slot drained by name keeps its colour and its bot, and is marked
        busy = api.post("/v1/deployments", json={"bot_id": "e2e-drain-bot"}).json()["name"]
        answer = api.post(f"/v1/slots/{busy}/drain", json={"reason": "host maintenance"})
        assert answer.status_code == 200, answer.text
        expect_drained(page, api, 1)
        cell = page.locator(f'[data-testid="slot"][data-name="{busy}"]')
        expect(cell).to_have_attribute("data-status", "busy")
        expect(cell).to_have_attribute("data-drain-scope", "slot")
        expect(cell.get_by_test_id("slot-drained")).to_have_attribute("title", "drained by name")
        expect(cell.get_by_test_id("slot-drained")).to_have_text("drained")
        expect(cell.locator(".slot-bot")).to_have_text("e2e-drain-bot")
        assert "drained by name" in (cell.get_attribute("title") or "")
        assert cell.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(37, 99, 235)"
        expect(tile(page, "busy")).to_have_text("1")
        expect(page.locator('[data-testid="event"][data-type="SlotDrained"]')).to_have_count(1)

        # the pool drained: the others drained with it, the idle ones still idle and green
        answer = api.post("/v1/pool/drain", json={"reason": "upgrade"})
        assert answer.status_code == 200, answer.text
        expect_drained(page, api, 6)
        with_pool = page.locator('[data-testid="slot"][data-drain-scope="pool"]')
        expect(with_pool).to_have_count(5)
        for other in with_pool.all():
            assert other.get_attribute("data-status") == "idle"
            expect(other.get_by_test_id("slot-drained")).to_have_attribute(
                "title", "drained with the pool"
            )
            assert other.evaluate("e => getComputedStyle(e).backgroundColor") == "rgb(22, 163, 74)"
        expect_tiles(page, total=6, idle=5, busy=1)

        # usable at 390 px: the marks and the count stay inside the viewport
        page.set_viewport_size(NARROW)
        expect(page.get_by_test_id("drained-count")).to_be_visible()
        page.wait_for_function(  # the charts redraw for the new width once resizing stops
            "() => document.documentElement.scrollWidth <= 390", timeout=WAIT_MS
        )
        found = page.evaluate(OVERFLOWING, SLOT_SELECTORS)
        assert found["out"] == [] and found["scrollWidth"] <= found["width"] == 390, found

        # undraining the pool leaves the slot drained by name; undrained, no mark is left
        assert api.post("/v1/pool/undrain", json={"reason": "done"}).status_code == 200
        expect_drained(page, api, 1)
        expect(cell).to_have_attribute("data-drain-scope", "slot")
        assert api.post(f"/v1/slots/{busy}/undrain", json={"reason": "done"}).status_code == 200
        expect_drained(page, api, 0)
        expect(cell).to_have_attribute("data-drained", "false")
        assert errors == []
