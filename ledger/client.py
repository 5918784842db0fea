"""A typed client for orchestrators: ask for a bot's slot, give it back, report in,
follow it until its container runs.

It needs only httpx and pydantic, so an orchestrator imports it without the server.
Every call is safe to retry, and the client retries what is safe by itself: a 503
(honouring ``Retry-After``) and a dropped connection. A request carries an
``Idempotency-Key`` (one is made when none is given), so a retry after a lost answer
gets the same slot, never a second one. Errors are one hierarchy,
:class:`SlotLedgerClientError`, with the server's machine code in ``code``::

    with SlotLedgerClient("http://127.0.0.1:8000", token="…") as client:
        placed = client.request("bot-42", config={"MEETING_URL": "…"})
        status = client.wait_until_busy("bot-42", timeout=120)
        ...
        client.release("bot-42")
"""

from __future__ import annotations

import random
import time
import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from types import TracebackType
from typing import Any, Literal, Self, TypeVar
from urllib.parse import quote

import httpx
from pydantic import BaseModel, ConfigDict, ValidationError

__all__ = [
    "BotNotFound",
    "BotStatus",
    "ClientError",
    "Conflict",
    "Heartbeat",
    "Queued",
    "Release",
    "SlotLedgerClient",
    "SlotLedgerClientError",
    "SlotView",
    "Unavailable",
    "WaitFailed",
]

DEFAULT_RETRIES = 5
RETRY_AFTER_MAX_S = 30.0


class _Model(BaseModel):
    """Answers keep unknown keys out, so a newer server does not break an older client."""

    model_config = ConfigDict(extra="ignore", frozen=True)


class SlotView(_Model):
    """A slot as the API shows it."""

    slot_id: uuid.UUID
    name: str
    platform: str
    status: Literal["idle", "deploying", "busy", "error"]
    bot_id: str | None
    lease: int
    last_error: str | None = None


class Queued(_Model):
    """The pool was full: the request waits at ``position`` (0: not known yet)."""

    bot_id: str
    position: int
    estimated_wait_ms: int
    queued_at: datetime
    timeout_at: datetime


class Placement(_Model):
    """What a request got: a slot (``slot``, ``existing`` when the bot held it already)
    or a place in the queue (``queued``)."""

    slot: SlotView | None = None
    queued: Queued | None = None
    existing: bool = False


class Release(_Model):
    """``released``, ``failed`` (stopping failed; the slot is in error), ``cancelled``
    (a queue entry). ``confirmed`` is False when an earlier attempt's answer was lost
    and a retry found nothing left to release."""

    bot_id: str
    outcome: str
    slot: SlotView | None = None
    confirmed: bool = True


class Heartbeat(_Model):
    """``started``: this heartbeat moved the slot from deploying to busy."""

    slot: SlotView
    started: bool


class BotStatus(_Model):
    """Where a bot stands (``GET /v1/deployments/{bot_id}``)."""

    bot_id: str
    state: str
    position: int | None = None
    estimated_wait_ms: int | None = None
    slot: SlotView | None = None
    reason: str | None = None


_M = TypeVar("_M", bound=_Model)


class SlotLedgerClientError(Exception):
    """Every error of this client."""


class ClientError(SlotLedgerClientError):
    """The server refused the call: ``status`` and its machine ``code`` say why."""

    def __init__(self, status: int, code: str, detail: str) -> None:
        super().__init__(f"{status} {code}: {detail}")
        self.status = status
        self.code = code
        self.detail = detail


class BotNotFound(ClientError):
    """The bot holds nothing, waits for nothing, or was never seen."""


class Conflict(ClientError):
    """The call does not fit the slot's or the bot's state now (409)."""


class Unavailable(SlotLedgerClientError):
    """The server stayed unavailable (503 or no connection) through every retry."""


class WaitFailed(SlotLedgerClientError):
    """A bot did not become busy: it failed, was released, or the time ran out."""

    def __init__(self, message: str, status: BotStatus | None) -> None:
        super().__init__(message)
        self.status = status


class SlotLedgerClient:
    """One slotledger server (or a load balancer in front of several)."""

    def __init__(
        self,
        base_url: str,
        *,
        token: str | None = None,
        timeout: float = 10.0,
        retries: int = DEFAULT_RETRIES,
        backoff_s: float = 0.2,
        transport: httpx.BaseTransport | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        headers = {"Accept": "application/json"}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self._http = httpx.Client(
            base_url=base_url.rstrip("/"), headers=headers, timeout=timeout, transport=transport
        )
        self._retries = retries
        self._backoff_s = backoff_s
        self._sleep = sleep

    def __repr__(self) -> str:  # never the token
        return f"SlotLedgerClient({str(self._http.base_url)!r})"

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.close()

    # --- calls -------------------------------------------------------------------------

    def request(
        self,
        bot_id: str,
        *,
        config: Mapping[str, str] | None = None,
        platform: str | None = None,
        priority: int = 0,
        queue_timeout_s: float | None = None,
        idempotency_key: str | None = None,
    ) -> Placement:
        """A slot for the bot, or its place in the queue; repeating it is safe."""
        body: dict[str, Any] = {
            "bot_id": bot_id,
            "priority": priority,
            "config": dict(config or {}),
        }
        if platform is not None:
            body["platform"] = platform
        if queue_timeout_s is not None:
            body["queue_timeout_s"] = queue_timeout_s
        key = idempotency_key or str(uuid.uuid4())
        response = self._call("POST", "/v1/deployments", json=body, key=key)
        data = self._json(response)
        if response.status_code == 202:
            return Placement(queued=self._model(Queued, data))
        return Placement(slot=self._model(SlotView, data), existing=response.status_code == 200)

    def release(self, bot_id: str) -> Release:
        """End what the bot holds: its slot is released or its queue entry cancelled."""
        try:
            response = self._call("DELETE", f"/v1/deployments/{_segment(bot_id)}")
        except _LostThenNotFound:
            return Release(bot_id=bot_id, outcome="released", confirmed=False)
        return self._model(Release, self._json(response))

    def heartbeat(self, slot_id: str | uuid.UUID, bot_id: str) -> Heartbeat:
        """The holder reports in; the first heartbeat of a deploying slot starts it."""
        path = f"/v1/slots/{_segment(str(slot_id))}/heartbeat"
        response = self._call("POST", path, json={"bot_id": bot_id})
        return self._model(Heartbeat, self._json(response))

    def status(self, bot_id: str) -> BotStatus:
        """Where the bot stands: queued, deploying, busy, releasing, failed or released."""
        response = self._call("GET", f"/v1/deployments/{_segment(bot_id)}")
        return self._model(BotStatus, self._json(response))

    def wait_until_busy(
        self, bot_id: str, *, timeout: float = 600.0, poll_s: float = 1.0
    ) -> BotStatus:
        """Poll the bot's status until its container runs; :class:`WaitFailed` when it
        failed, was released, or ``timeout`` passed."""
        deadline = time.monotonic() + timeout
        status: BotStatus | None = None
        while time.monotonic() < deadline:
            status = self.status(bot_id)
            if status.state == "busy":
                return status
            if status.state in ("failed", "released"):
                why = f": {status.reason}" if status.reason else ""
                raise WaitFailed(f"bot {bot_id!r} is {status.state}{why}", status)
            self._sleep(min(poll_s, max(0.0, deadline - time.monotonic())))
        raise WaitFailed(f"bot {bot_id!r} not busy within {timeout:.0f}s", status)

    # --- transport ---------------------------------------------------------------------

    def _call(
        self, method: str, path: str, *, json: object = None, key: str | None = None
    ) -> httpx.Response:
        """Send, retrying 503s and dropped connections. A release whose earlier attempt
        may have reached the server and whose retry finds nothing is
        :class:`_LostThenNotFound`."""
        headers = {"Idempotency-Key": key} if key else None
        maybe_done = False
        for attempt in range(self._retries + 1):
            last = attempt == self._retries
            try:
                response = self._http.request(method, path, json=json, headers=headers)
            except httpx.TransportError as e:
                maybe_done = True
                if last:
                    raise Unavailable(f"{method} {path}: {type(e).__name__}") from e
                self._sleep(self._delay(attempt, None))
                continue
            if response.status_code == 503 and not last:
                self._sleep(self._delay(attempt, response.headers.get("Retry-After")))
                continue
            if response.is_success:
                return response
            raise self._error(response, maybe_done and method == "DELETE")
        raise AssertionError("unreachable")  # pragma: no cover

    def _delay(self, attempt: int, retry_after: str | None) -> float:
        if retry_after is not None:
            try:
                return min(max(float(retry_after), 0.0), RETRY_AFTER_MAX_S)
            except ValueError:
                pass
        return float(self._backoff_s * 2**attempt * random.uniform(0.8, 1.2))

    def _error(self, response: httpx.Response, lost_release: bool) -> SlotLedgerClientError:
        if response.status_code == 503:
            return Unavailable(f"server unavailable: {_detail(response)[1]}")
        code, detail = _detail(response)
        if response.status_code == 404 and code == "bot_not_found":
            if lost_release:
                return _LostThenNotFound(response.status_code, code, detail)
            return BotNotFound(response.status_code, code, detail)
        if response.status_code == 409:
            return Conflict(response.status_code, code, detail)
        return ClientError(response.status_code, code, detail)

    @staticmethod
    def _json(response: httpx.Response) -> Any:
        try:
            return response.json()
        except ValueError as e:
            raise SlotLedgerClientError(f"answer is not JSON ({response.status_code})") from e

    @staticmethod
    def _model(model: type[_M], data: Any) -> _M:
        try:
            return model.model_validate(data)
        except ValidationError as e:
            raise SlotLedgerClientError(f"unexpected answer for {model.__name__}: {e}") from e


class _LostThenNotFound(BotNotFound):
    """A release retried after a lost answer found nothing: the first one went through."""


def _segment(value: str) -> str:
    return quote(value, safe="")


def _detail(response: httpx.Response) -> tuple[str, str]:
    try:
        body = response.json()
    except ValueError:
        return "http_error", response.reason_phrase
    if isinstance(body, dict):
        return str(body.get("error", "http_error")), str(body.get("detail", ""))
    return "http_error", response.reason_phrase
