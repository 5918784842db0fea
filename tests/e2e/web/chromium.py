"""Headless Chromium for the dashboard's tests: Debian's package, driven by Python
playwright (never ``playwright install``, which downloads a browser build)."""

from __future__ import annotations

from pathlib import Path

__all__ = ["CHROMIUM", "CHROMIUM_ARGS", "WAIT_MS"]

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
