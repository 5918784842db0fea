"""Real processes for black-box tests: the installed ``slotledger`` console script run as
subprocesses (``fake-coolify``, ``serve``, ``worker``, any CLI command), nothing wired by
hand. Every wait polls a condition with a generous deadline, never a fixed sleep, so a
loaded machine makes a test slower, not red.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

SCRIPT = str(Path(sys.executable).with_name("slotledger"))
"""The console script installed beside the interpreter that runs the tests."""
FAKE_TOKEN = "fake-coolify-token"
FAKE_PROJECT = "fake-project"
FAKE_SERVER = "fake-server"
DEADLINE_S = 120.0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def wait_for(condition: Callable[[], Any], timeout: float = DEADLINE_S, what: str = "") -> Any:
    """Poll until ``condition()`` is truthy (exceptions count as not yet); its value."""
    deadline = time.monotonic() + timeout
    last: BaseException | None = None
    while time.monotonic() < deadline:
        try:
            value = condition()
        except Exception as e:  # not up yet
            last = e
        else:
            if value:
                return value
        time.sleep(0.05)
    raise AssertionError(
        f"timed out after {timeout:.0f}s waiting for {what or condition} ({last!r})"
    )


class Process:
    """One subprocess of the console script, its output in a file for post-mortems."""

    def __init__(self, name: str, args: list[str], env: Mapping[str, str], logs: Path) -> None:
        self.name = name
        self.log_path = logs / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.popen = subprocess.Popen(
            [SCRIPT, *args],
            env={**os.environ, **env},
            stdout=self._log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def output(self) -> str:
        return self.log_path.read_text(errors="replace")

    def alive(self) -> bool:
        return self.popen.poll() is None

    def kill(self) -> None:
        """SIGKILL: no clean-up runs, as in a crash."""
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGKILL)
        self.popen.wait(timeout=30)

    def stop(self) -> None:
        if self.alive():
            os.killpg(self.popen.pid, signal.SIGTERM)
            try:
                self.popen.wait(timeout=15)
            except subprocess.TimeoutExpired:
                self.kill()
        self._log.close()


class HttpProcess(Process):
    """A process that serves HTTP on ``port``; started means ``ready_path`` answers."""

    def __init__(
        self,
        name: str,
        args: list[str],
        env: Mapping[str, str],
        logs: Path,
        port: int,
        ready_path: str = "/healthz",
    ) -> None:
        super().__init__(name, args, env, logs)
        self.port = port
        self.url = f"http://127.0.0.1:{port}"
        self.ready_path = ready_path

    def wait_ready(self, timeout: float = DEADLINE_S) -> None:
        def up() -> bool:
            if not self.alive():
                raise AssertionError(f"{self.name} exited:\n{self.output()[-3000:]}")
            return httpx.get(self.url + self.ready_path, timeout=5).status_code < 500

        try:
            wait_for(up, timeout, f"{self.name} at {self.url}")
        except AssertionError as e:
            raise AssertionError(f"{e}\n--- {self.name} log ---\n{self.output()[-3000:]}") from e

    def client(self, **kwargs: Any) -> httpx.Client:
        return httpx.Client(base_url=self.url, timeout=30, **kwargs)


class Cluster:
    """The processes of one test, all stopped when it ends (also when it fails)."""

    def __init__(self, logs: Path) -> None:
        self.logs = logs
        self.processes: list[Process] = []

    def fake_coolify(
        self,
        *,
        deploy_delay: float = 0.05,
        rate_limit: int = 0,
        name: str = "fake-coolify",
        stop_delay: float = 0.3,
        status_interval: float = 0.3,
    ) -> HttpProcess:
        """The fake lags like Coolify, briefly: the stop job runs ``stop_delay`` after the
        request, the status sweep every ``status_interval``."""
        port = free_port()
        args = ["fake-coolify", "--port", str(port), "--deploy-delay", str(deploy_delay)]
        args += ["--rate-limit", str(rate_limit)]
        args += ["--stop-delay", str(stop_delay), "--status-interval", str(status_interval)]
        fake = HttpProcess(
            name,
            args,
            {"LEDGER_COOLIFY_TOKEN": FAKE_TOKEN},
            self.logs,
            port,
            ready_path="/api/health",
        )
        self.processes.append(fake)
        fake.wait_ready()
        return fake

    def env(self, database_url: str, coolify: HttpProcess | None, **extra: str) -> dict[str, str]:
        """The settings of a ledger process pointed at the store and the fake."""
        values = {
            "LEDGER_DATABASE_URL": database_url,
            "LEDGER_MAX_POOL_SIZE": "8",
            # The tests' fake has no rate limit unless asked; the budget tests set their own.
            "LEDGER_COOLIFY_REQUESTS_PER_MINUTE": "10000",
        }
        if coolify is not None:
            values |= {
                "LEDGER_COOLIFY_URL": coolify.url + "/api/v1",
                "LEDGER_COOLIFY_TOKEN": FAKE_TOKEN,
                "LEDGER_COOLIFY_PROJECT_UUID": FAKE_PROJECT,
                "LEDGER_COOLIFY_SERVER_UUID": FAKE_SERVER,
            }
        return values | extra

    def serve(
        self, env: Mapping[str, str], *, name: str = "serve", wait: bool = True
    ) -> HttpProcess:
        port = free_port()
        server = HttpProcess(name, ["serve", "--port", str(port)], env, self.logs, port)
        self.processes.append(server)
        if wait:
            server.wait_ready()
        return server

    def worker(self, env: Mapping[str, str], *, name: str = "worker") -> Process:
        worker = Process(name, ["worker"], env, self.logs)
        self.processes.append(worker)
        return worker

    def worker_http(self, env: Mapping[str, str], *, name: str = "worker") -> HttpProcess:
        """A worker with its HTTP endpoint (``worker --port``), started when it answers."""
        port = free_port()
        worker = HttpProcess(name, ["worker", "--port", str(port)], env, self.logs, port)
        self.processes.append(worker)
        worker.wait_ready()
        return worker

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()


def get_json(server: HttpProcess, path: str, **params: Any) -> Any:
    """A GET that must answer 200: its JSON."""
    answer = httpx.get(server.url + path, params=params, timeout=60)
    assert answer.status_code == 200, answer.text
    return answer.json()


def events_of(server: HttpProcess, **params: Any) -> list[dict[str, Any]]:
    """``GET /v1/events`` (up to 10,000), filtered by ``params``."""
    found: list[dict[str, Any]] = get_json(server, "/v1/events", limit=10_000, **params)
    return found


def run_cli(
    *args: str, env: Mapping[str, str] | None = None, cwd: Path | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """One CLI command through the installed console script."""
    return subprocess.run(
        [SCRIPT, *args],
        env={**os.environ, **(env or {})},
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@contextmanager
def cluster(logs: Path) -> Iterator[Cluster]:
    running = Cluster(logs)
    try:
        yield running
    finally:
        running.stop()
