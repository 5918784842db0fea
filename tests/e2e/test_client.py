"""The orchestrators' client (``ledger.client``) against a running ``slotledger serve``
with the fake Coolify: request, wait until busy, heartbeat, release, and the retries it
promises (a 503, an answer lost on the way back) without a second slot."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from ledger.client import (
    BotNotFound,
    BotStatus,
    ClientError,
    Queued,
    Release,
    SlotLedgerClient,
    SlotView,
    Unavailable,
)
from tests.blackbox import HttpProcess, cluster

TOKEN = "client-test-token"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HttpProcess]:
    logs: Path = tmp_path_factory.mktemp("client")
    with cluster(logs) as processes:
        env = processes.env(
            f"sqlite:///{logs / 'ledger.db'}",
            processes.fake_coolify(),
            LEDGER_MAX_POOL_SIZE="2",
            LEDGER_API_TOKEN=TOKEN,
        )
        yield processes.serve(env)


class Flaky(httpx.BaseTransport):
    """Forwards to the real server; the first calls fail as a network would: a 503
    before reaching it, or the server's answer lost after it did the work."""

    def __init__(self, faults: list[str]) -> None:
        self.real = httpx.HTTPTransport()
        self.faults = faults
        self.reached = 0

    def handle_request(self, request: httpx.Request) -> httpx.Response:
        fault = self.faults.pop(0) if self.faults else None
        if fault == "503":
            return httpx.Response(503, headers={"Retry-After": "0"}, json={"error": "x"})
        response = self.real.handle_request(request)
        response.read()
        self.reached += 1
        if fault == "lost":
            raise httpx.ReadError("connection reset after the server answered")
        return response


def client(server: HttpProcess, *faults: str) -> tuple[SlotLedgerClient, Flaky]:
    transport = Flaky(list(faults))
    made = SlotLedgerClient(
        server.url, token=TOKEN, transport=transport, sleep=lambda _: None, timeout=60
    )
    return made, transport


def test_request_wait_heartbeat_release(server: HttpProcess) -> None:
    api, _ = client(server)
    with api:
        placed = api.request("client-bot-1", config={"MEETING_URL": "https://m.example/1"})
        assert placed.slot is not None and placed.slot.bot_id == "client-bot-1"
        busy = api.wait_until_busy("client-bot-1", timeout=120, poll_s=0.1)
        assert busy.state == "busy" and busy.slot is not None
        assert busy.slot.slot_id == placed.slot.slot_id
        beat = api.heartbeat(placed.slot.slot_id, "client-bot-1")
        assert beat.slot.status == "busy" and not beat.started
        released = api.release("client-bot-1")
        assert released.outcome == "released" and released.confirmed


def test_retries_a_503_and_a_lost_answer_without_a_second_slot(server: HttpProcess) -> None:
    api, transport = client(server, "503", "lost")
    with api:
        placed = api.request("client-bot-2")
        assert transport.reached == 2  # the lost answer's request did the work once
        assert placed.slot is not None and placed.existing  # the retry got the same slot
        again = api.request("client-bot-2")
        assert again.slot is not None and again.slot.slot_id == placed.slot.slot_id
        lost_release, _ = client(server, "lost")
        with lost_release:
            released = lost_release.release("client-bot-2")
        assert released.outcome == "released" and not released.confirmed
        with pytest.raises(BotNotFound):
            api.release("client-bot-2")


def test_queued_when_full_and_cancelled_on_release(server: HttpProcess) -> None:
    api, _ = client(server)
    with api:
        holders = [api.request(f"client-holder-{i}") for i in range(2)]
        waiting = api.request("client-waiter")
        try:
            assert waiting.queued is not None and waiting.slot is None
            assert api.status("client-waiter").state == "queued"
            assert api.release("client-waiter").outcome == "cancelled"
        finally:
            for i, held in enumerate(holders):
                if held.slot is not None:
                    api.release(f"client-holder-{i}")


def test_errors_are_typed(server: HttpProcess) -> None:
    api, _ = client(server)
    with api:
        with pytest.raises(ClientError) as bad:
            api.request("bad bot id with spaces\x00")
        assert bad.value.status == 422
        with pytest.raises(BotNotFound):
            api.release("client-never-seen")
    anonymous = SlotLedgerClient(server.url, sleep=lambda _: None)
    with anonymous, pytest.raises(ClientError) as refused:
        anonymous.request("client-bot-3")
    assert refused.value.status == 401
    assert TOKEN not in repr(api)


def test_gives_up_when_the_server_stays_down() -> None:
    down = SlotLedgerClient("http://127.0.0.1:9", retries=2, sleep=lambda _: None)
    with down, pytest.raises(Unavailable):
        down.request("client-bot-4")


def test_models_match_the_openapi_document(server: HttpProcess) -> None:
    """Every field the client reads is one the server documents, with the same name."""
    schemas = httpx.get(server.url + "/openapi.json").json()["components"]["schemas"]
    assert set(SlotView.model_fields) <= set(schemas["SlotOut"]["properties"])
    assert set(BotStatus.model_fields) <= set(schemas["DeploymentStatusOut"]["properties"])
    assert set(Queued.model_fields) <= set(schemas["QueuedOut"]["properties"])
    assert set(Release.model_fields) - {"confirmed"} <= set(schemas["ReleaseOut"]["properties"])
