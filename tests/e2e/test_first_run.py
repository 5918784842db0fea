"""A newcomer's first run, through the real entry points: ``make run`` says what it is
doing, and ``slotledger serve --demo`` (what ``make run`` starts) twice in one folder
stays consistent (a fresh demo store each run, so the empty fake Coolify never makes the
first run's applications look vanished), with a banner that gives the fake Coolify's URL
and token and a ``curl`` that requests a bot, and that works as printed."""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import httpx
import pytest

from tests.blackbox import Cluster, HttpProcess, cluster, free_port, wait_for

ROOT = Path(__file__).parents[2]
REAL_TOKEN = "real-coolify-token-never-shown"
"""A Coolify token as an operator would configure it: the demo must never print it."""
API_TOKEN = "api-token-of-the-second-run"
BANNER = re.compile(r"^(demo store|fake Coolify|request a bot|the CLI on this store): (.*)$", re.M)


def banner_of(output: str) -> dict[str, str]:
    """The banner's lines by their label, once all four are printed."""
    found = dict(BANNER.findall(output))
    return found if len(found) == 4 else {}


@pytest.fixture
def fresh_shell(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A new folder as the working directory, and no slotledger setting inherited."""
    for name in list(os.environ):
        if name.startswith("LEDGER_") or name in ("DEPLOYING_TIMEOUT", "RETIRE_MODE"):
            monkeypatch.delenv(name)
    folder = tmp_path / "project"
    folder.mkdir()
    monkeypatch.chdir(folder)  # the servers below inherit it
    return folder


def run_demo(running: Cluster, name: str, extra: dict[str, str], folder: Path) -> str:
    """One ``serve --demo`` in ``folder``: its banner checked and tried, and the demo's
    own deploys waited for, then stopped; its output."""
    port = free_port()
    server = HttpProcess(
        name,
        ["serve", "--demo", "--port", str(port)],
        {"LEDGER_COOLIFY_TOKEN": REAL_TOKEN, **extra},
        running.logs,
        port,
        ready_path="/readyz",
    )
    running.processes.append(server)
    server.wait_ready()
    banner = wait_for(lambda: banner_of(server.output()), what="the demo's banner")

    store = folder / ".slotledger" / "demo" / "ledger.db"
    assert banner["demo store"] == (
        f"sqlite:///{store} (the demo's own, fresh each run: the fake Coolify starts empty too)"
    )
    fake = re.fullmatch(
        r"(http://127\.0\.0\.1:\d+/api/v1)  token: (\S+) \(the fake's own, not a secret\)",
        banner["fake Coolify"],
    )
    assert fake, banner["fake Coolify"]
    listed = httpx.get(fake[1] + "/applications", headers={"Authorization": f"Bearer {fake[2]}"})
    assert listed.status_code == 200, listed.text

    curl = banner["request a bot"]
    assert curl.startswith(f"curl -sS -X POST {server.url}/v1/deployments")
    assert ("$LEDGER_API_TOKEN" in curl) == bool(extra)
    done = subprocess.run(
        ["sh", "-c", curl], env={**os.environ, **extra}, capture_output=True, text=True, timeout=60
    )
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["bot_id"] == "my-bot", done.stdout
    assert banner["the CLI on this store"].startswith(f"LEDGER_DATABASE_URL=sqlite:///{store} ")

    with server.client() as client:  # the demo deploys: its applications exist in the fake

        def started() -> bool:
            return len(client.get("/v1/events", params={"type": "SlotStarted"}).json()) >= 2

        wait_for(started, what="two slots started by the demo")
    server.stop()
    return server.output()


def test_serve_demo_twice_is_consistent_and_its_banner_works(
    fresh_shell: Path, tmp_path: Path
) -> None:
    logs = tmp_path / "logs"
    logs.mkdir()
    with cluster(logs) as running:
        outputs = [
            run_demo(running, "demo-1", {}, fresh_shell),
            run_demo(running, "demo-2", {"LEDGER_API_TOKEN": API_TOKEN}, fresh_shell),
        ]
    for output in outputs:
        assert REAL_TOKEN not in output and API_TOKEN not in output
        assert "slotledger dashboard: http://127.0.0.1:" in output
    assert not re.search(r"application \S+ (vanished|not found)", outputs[1]), outputs[1]


def test_make_says_what_it_installs_before_it_does_it() -> None:
    """``make -n``: the commands ``make run`` would run on a clean machine (as if
    pyproject.toml were new), without running them."""
    done = subprocess.run(
        ["make", "-n", "-W", "pyproject.toml", "run"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    lines = done.stdout.splitlines()

    def first(pattern: str) -> int:
        return next(i for i, line in enumerate(lines) if re.search(pattern, line))

    assert first(r"^echo .*setting up") < first(r"-m venv ") < first(r"pip install")
    for step in (r"-m venv ", r"--upgrade pip", r"pip install -e", r"^\S+/slotledger serve"):
        at = first(step)
        assert lines[at - 1].startswith("echo "), (step, lines[at - 1])
    assert "--quiet" not in lines[first(r"pip install -e")]  # pip's own progress shows
