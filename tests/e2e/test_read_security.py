"""Issue 14, security of reads, through a running ``slotledger serve``: no read endpoint
shows a bot's configuration values, and the live stream has a connection cap."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from tests.blackbox import HttpProcess, cluster, wait_for

SECRET = "https://meet.example/room?pwd=hunter2-secret"
TOKEN = "read-security-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpProcess]:
    logs: Path = tmp_path_factory.mktemp("reads")
    with cluster(logs) as processes:
        env = processes.env(
            f"sqlite:///{logs / 'ledger.db'}",
            processes.fake_coolify(),
            LEDGER_MAX_POOL_SIZE="1",
            LEDGER_API_TOKEN=TOKEN,
            LEDGER_MAX_STREAMS="2",
        )
        yield processes.serve(env)


def first_snapshot(server: HttpProcess) -> str:
    with (
        httpx.Client(base_url=server.url, timeout=30) as client,
        client.stream("GET", "/v1/stream") as stream,
    ):
        for line in stream.iter_lines():
            if line.startswith("data:") and '"stats"' in line:
                return line
    raise AssertionError("the stream ended without a snapshot")


def test_configuration_values_never_shown(server: HttpProcess) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    with server.client(headers=auth) as client:
        holder = client.post("/v1/deployments", json={"bot_id": "holder", "config": {"A": SECRET}})
        assert holder.status_code == 201, holder.text
        queued = client.post("/v1/deployments", json={"bot_id": "waiter", "config": {"B": SECRET}})
        assert queued.status_code == 202, queued.text
        slot_id = holder.json()["slot_id"]
        reads = {
            path: client.get(path)
            for path in ("/v1/events", "/v1/queue", f"/v1/slots/{slot_id}/history", "/v1/slots")
        }
        for path, answer in reads.items():
            assert answer.status_code == 200, (path, answer.text)
            assert "hunter2" not in answer.text, path
        enqueued = [e for e in reads["/v1/events"].json() if e["data"].get("config")]
        assert enqueued and all(
            set(e["data"]["config"].values()) == {"[redacted]"} for e in enqueued
        )
        assert "B" in enqueued[0]["data"]["config"]  # the keys stay, for debugging
        assert "hunter2" not in first_snapshot(server)
        for bot in ("waiter", "holder"):
            assert client.delete(f"/v1/deployments/{bot}").status_code == 200


def test_stream_connections_are_capped(server: HttpProcess) -> None:
    with contextlib.ExitStack() as open_streams:
        client = open_streams.enter_context(httpx.Client(base_url=server.url, timeout=30))
        for _ in range(2):
            stream = open_streams.enter_context(client.stream("GET", "/v1/stream"))
            assert stream.status_code == 200
        refused = httpx.get(server.url + "/v1/stream", timeout=30)
        assert refused.status_code == 503
        assert refused.headers["Retry-After"]
        assert json.loads(refused.text)["error"] == "too_many_streams"
        assert httpx.get(server.url + "/healthz", timeout=30).status_code == 200

    def reopened() -> bool:
        with (
            httpx.Client(base_url=server.url, timeout=30) as again,
            again.stream("GET", "/v1/stream") as stream,
        ):
            return stream.status_code == 200

    wait_for(reopened, what="a stream slot freed once the streams closed")
