"""Headless Chromium for the dashboard's tests: Debian's package, driven by Python
playwright (never ``playwright install``, which downloads a browser build)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "OVERFLOWING", "WAIT_MS"]

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]
WAIT_MS = 60_000  # a generous deadline: a loaded machine makes the test slower, not red

OVERFLOWING = """(selectors) => {
    const width = document.documentElement.clientWidth;
    const out = [];
    for (const e of document.querySelectorAll(selectors)) {
        const r = e.getBoundingClientRect();
        const clipped = e.scrollWidth > e.clientWidth + 1;
        if (r.width && (r.left < -0.5 || r.right > width + 0.5 || clipped))
            out.push(`${e.className || e.tagName} ${Math.round(r.left)}..${Math.round(r.right)}`);
    }
    return {width, scrollWidth: document.documentElement.scrollWidth, out};
}"""
"""``page.evaluate(OVERFLOWING, selectors)``: the elements matching ``selectors`` that
stick out of the viewport's width or clip their own content, and the page's widths."""
