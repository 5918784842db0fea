"""The dashboard's server-sent events, read from a real uvicorn server."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx

from ledger.entrypoints.web import create_app
from tests.integration.web.support import Api, ServerThread


def sse_events(lines: Iterator[str]) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event name, decoded data) for each event of a text/event-stream."""
    name, data = "message", []
    for line in lines:
        if line.startswith("event:"):
            name = line.partition(":")[2].strip()
        elif line.startswith("data:"):
            data.append(line.partition(":")[2].strip())
        elif not line and data:
            yield name, json.loads("\n".join(data))
            name, data = "message", []


def test_the_stream_pushes_a_snapshot_on_every_projected_change(sqlite_api: Api) -> None:
    sqlite_api.provision(2)
    with (
        ServerThread(create_app(sqlite_api.service)) as server,
        httpx.Client(base_url=server.url, timeout=10) as client,
        client.stream("GET", "/v1/stream") as answer,
    ):
        assert answer.headers["content-type"].startswith("text/event-stream")
        events = sse_events(answer.iter_lines())
        name, first = next(events)
        assert name == "snapshot"
        assert first["stats"]["total"] == 2 and len(first["slots"]) == 2
        assert set(first) >= {"position", "server_time", "queue", "waiting", "events", "lag"}
        assert first["events"][0]["position"] == first["position"]  # newest first

        sqlite_api.service.ledger.provision(
            "bot", ctx=sqlite_api.service.ledger.context("operator")
        )
        name, second = next(e for e in events if e[0] == "snapshot")
        assert second["stats"]["total"] == 3 and second["position"] > first["position"]
        name, lag = next(events)  # nothing changes: the lag comes every few seconds
        assert name == "lag" and lag["behind"] == 0
