"""The fake as a running thing: :class:`FakeCoolify` (the ASGI application, its faults and
its Python API for tests), :class:`FakeCoolifyServer` (uvicorn in a thread) and :func:`main`
(``slotledger fake-coolify``)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import socket
import struct
import threading
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any

import uvicorn
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from ledger.devtools.fake_coolify.calls import (
    API,
    NOT_FOUND_BODY,
    Abort,
    Call,
    RecordedRequest,
    html_page,
    wants_json,
)
from ledger.devtools.fake_coolify.handlers import route
from ledger.devtools.fake_coolify.settings import DEFAULT_TOKEN, FakeSettings, Faults
from ledger.devtools.fake_coolify.state import (
    CONTAINER_BEHAVIOURS,
    State,
    app_json,
    deployment_json,
    env_json,
)
from ledger.devtools.fake_coolify.timeline import advance

__all__ = ["FakeCoolify", "FakeCoolifyServer", "main"]


class FakeCoolify:
    """The fake as an ASGI application plus a thread-safe Python API for tests.

    All state sits behind one lock: handlers are synchronous and short, so uvicorn's event
    loop and test threads can share it. Deployments, stop jobs and status sweeps advance
    lazily (:mod:`.timeline`), on every request and every inspection.
    """

    def __init__(self, settings: FakeSettings | None = None) -> None:
        self._lock = threading.Lock()
        self._state = State(settings or FakeSettings())

    # Python API

    @property
    def settings(self) -> FakeSettings:
        return self._state.settings

    @property
    def faults(self) -> Faults:
        with self._lock:
            return self._state.faults

    def configure(self, **changes: Any) -> None:
        """Change settings at runtime (delays, rate limit, token, ...), unchecked."""
        with self._lock:
            advance(self._state)
            self._state.apply_settings(dataclasses.replace(self._state.settings, **changes))

    def update_settings(self, changes: Mapping[str, object]) -> FakeSettings:
        """Change settings as ``POST /_fake/settings`` does; raises ValueError for unknown
        names, ``seed``, wrong types or negative numbers."""
        with self._lock:
            advance(self._state)
            self._state.apply_settings(self._state.settings.updated(changes))
            return self._state.settings

    def set_container(self, app_uuid: str, container: object) -> None:
        """How the app's containers behave from its next deployment on (see
        :data:`~ledger.devtools.fake_coolify.state.ContainerBehaviour`); raises LookupError
        for an unknown app, ValueError for an unknown behaviour."""
        if container not in CONTAINER_BEHAVIOURS:
            raise ValueError(f"container must be one of {', '.join(CONTAINER_BEHAVIOURS)}")
        with self._lock:
            advance(self._state)
            app = self._state.apps.get(app_uuid)
            if app is None:
                raise LookupError(f"no application {app_uuid!r}")
            app.container = container

    def set_faults(self, **changes: Any) -> Faults:
        """Update some faults; raises ValueError for unknown names or wrong types."""
        with self._lock:
            self._state.faults = self._state.faults.updated(changes)
            return self._state.faults

    def reset(self) -> None:
        """Forget apps, deployments, requests, faults and the throttle window."""
        with self._lock:
            self._state.reset()

    def reset_throttle(self) -> None:
        """Open a fresh rate-limit window, as if it had expired."""
        with self._lock:
            self._state.window_hits = 0

    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._state.requests)

    def application(self, uuid: str) -> dict[str, Any] | None:
        """The app as ``GET /applications/{uuid}`` shows it to the root token, or None once
        deleted."""
        with self._lock:
            advance(self._state)
            app = self._state.apps.get(uuid)
            return None if app is None else app_json(app, sensitive=True)

    def env_vars(self, app_uuid: str) -> list[dict[str, Any]]:
        with self._lock:
            app = self._state.apps.get(app_uuid)
            return [] if app is None else [env_json(env, sensitive=True) for env in app.envs]

    def containers(self, app_uuid: str) -> list[str]:
        """The deployment uuids of the containers Docker runs for the app now (what a stop
        removes; the API only shows them through the lagging status)."""
        with self._lock:
            advance(self._state)
            app = self._state.apps.get(app_uuid)
            return [] if app is None else [c.deployment_uuid for c in app.containers]

    def deployments(self, app_uuid: str) -> list[dict[str, Any]]:
        """The app's deployments as the API shows them, oldest first."""
        with self._lock:
            advance(self._state)
            return [
                deployment_json(deployment, self._state.settings, sensitive=True)
                for deployment in self._state.deployments.values()
                if deployment.app_uuid == app_uuid
            ]

    def snapshot(self) -> dict[str, Any]:
        """Everything, as JSON-ready data (served at ``GET /_fake/state``)."""
        with self._lock:
            advance(self._state)
            return self._state.snapshot()

    # ASGI

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        request = Request(scope, receive)
        raw_body = await request.body()
        call = Call(
            method=request.method,
            path=request.url.path,
            params={},
            query=dict(request.query_params),
            headers=dict(request.headers),
            raw_body=raw_body,
        )
        if call.path.startswith("/_fake/"):
            await self._control(call)(scope, receive, send)
            return
        fault, latency = self._draw_fault(call)
        if latency:
            await asyncio.sleep(latency)
        if fault == "reset":
            await _drop_connection(send)
        elif fault == "hang":
            await self._hang(receive)
        else:
            await self._answer(call, fault)(scope, receive, send)

    def _draw_fault(self, call: Call) -> tuple[str | None, float]:
        """Record the request; pick at most one fault for it, and its added latency."""
        with self._lock:
            state = self._state
            state.requests.append(RecordedRequest.of(call))
            faults = state.faults
            if state.random.random() < faults.reset_rate:
                return "reset", faults.latency
            if state.random.random() < faults.hang_rate:
                return "hang", faults.latency
            if state.use_up("html_next"):
                return "html", faults.latency
            if state.use_up("echo_auth_next"):
                return "echo", faults.latency
            if state.random.random() < faults.error_rate:
                return "error", faults.latency
            return None, faults.latency

    @staticmethod
    async def _hang(receive: Receive) -> None:
        """Never answer: wait for the client to give up (uvicorn cancels this on shutdown)."""
        while (await receive())["type"] != "http.disconnect":
            pass

    def _answer(self, call: Call, fault: str | None) -> Response:
        if fault == "html":
            lines = "".join(f"{name}: {value}\n" for name, value in sorted(call.headers.items()))
            return html_page("Whoops!", f"<h1>Whoops!</h1><pre>{lines}</pre>", 200)
        if fault == "echo":
            echoed = f"Invalid request. Authorization: {call.headers.get('authorization', '')}"
            return JSONResponse({"message": echoed, "error": echoed}, 400)
        if fault == "error":
            return _server_error(call)
        with self._lock:
            advance(self._state)
            try:
                response = route(self._state, call)
            except Abort as abort:
                response = abort.response
            return self._corrupt(response)

    def _corrupt(self, response: Response) -> Response:
        """Apply ``garbage_next`` / ``drop_field_next`` to a successful JSON answer."""
        state = self._state
        if not (200 <= response.status_code < 300 and isinstance(response, JSONResponse)):
            return response
        if state.use_up("garbage_next"):
            cut = bytes(response.body)[: max(1, len(response.body) // 2)]
            return Response(cut, response.status_code, media_type="application/json")
        drop = state.faults.drop_field_next
        if drop:
            data = json.loads(bytes(response.body))
            if isinstance(data, dict) and drop in data:
                state.faults = dataclasses.replace(state.faults, drop_field_next="")
                del data[drop]
                return JSONResponse(data, response.status_code)
        return response

    def _control(self, call: Call) -> Response:
        """``GET /_fake/state``; ``POST /_fake/faults``, ``/_fake/settings`` (a JSON object of
        changes), ``/_fake/apps/{uuid}`` (``{"container": ...}``) and ``/_fake/reset``."""
        if call.method == "GET" and call.path == "/_fake/state":
            return JSONResponse(self.snapshot())
        if call.method != "POST":
            return JSONResponse(NOT_FOUND_BODY, 404)
        try:
            if call.path == "/_fake/reset":
                self.reset()
                return JSONResponse({"message": "Reset."})
            changes = _control_object(call)
            if call.path == "/_fake/faults":
                return JSONResponse(dataclasses.asdict(self.set_faults(**changes)))
            if call.path == "/_fake/settings":
                return JSONResponse(self.update_settings(changes).public())
            app_uuid = call.path.removeprefix("/_fake/apps/")
            if app_uuid != call.path and "/" not in app_uuid:
                self.set_container(app_uuid, changes.get("container"))
                return JSONResponse({"uuid": app_uuid, "container": changes["container"]})
        except LookupError as exc:
            return JSONResponse({"message": str(exc)}, 404)
        except ValueError as exc:
            return JSONResponse({"message": str(exc)}, 422)
        return JSONResponse(NOT_FOUND_BODY, 404)


def _control_object(call: Call) -> dict[str, Any]:
    changes = json.loads(call.raw_body or b"{}")
    if not isinstance(changes, dict):
        raise ValueError("the body must be a JSON object")
    return changes


def _server_error(call: Call) -> Response:
    if wants_json(call.headers):
        return JSONResponse({"message": "Server Error"}, 500)
    return html_page("Server Error", "<h1>500 | Server Error</h1>", 500)


async def _drop_connection(send: Send) -> None:
    """Abort the TCP connection with a RST, as a crashed proxy would.

    ASGI has no way to do this, so it reaches uvicorn's transport through the ``send`` bound
    method of its request cycle (h11 and httptools both keep it as ``.transport``).
    """
    transport = getattr(getattr(send, "__self__", None), "transport", None)
    if not isinstance(transport, asyncio.Transport):
        raise RuntimeError("reset_rate needs uvicorn: no transport behind the ASGI send")
    sock = transport.get_extra_info("socket")
    if sock is not None:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    transport.abort()
    await asyncio.sleep(0)  # let uvicorn see the disconnect, so it does not log a missing answer


class FakeCoolifyServer:
    """Runs a :class:`FakeCoolify` with uvicorn in a background thread on a free port."""

    def __init__(
        self, settings: FakeSettings | None = None, *, host: str = "127.0.0.1", port: int = 0
    ) -> None:
        self.fake = FakeCoolify(settings)
        self._host = host
        self._port = port
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        """``http://host:port/api/v1``, the client's base URL (valid once started)."""
        return f"http://{self._host}:{self._port}{API}"

    @property
    def token(self) -> str:
        return self.fake.settings.token

    def start(self, timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("fake Coolify server already started")
        sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        # Accepted sockets inherit this; without it every keep-alive answer waits ~40 ms
        # for the client's delayed ACK (uvicorn only sets it on sockets it creates).
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        sock.bind((self._host, self._port))
        self._port = sock.getsockname()[1]
        config = uvicorn.Config(
            self.fake,
            lifespan="off",
            http="h11",
            log_level="warning",
            access_log=False,
            timeout_graceful_shutdown=1,
        )
        self._server = uvicorn.Server(config)
        self._thread = threading.Thread(
            target=self._server.run,
            kwargs={"sockets": [sock]},
            name="fake-coolify",
            daemon=True,
        )
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("fake Coolify server did not start")
            time.sleep(0.01)

    def stop(self) -> None:
        if self._server is None or self._thread is None:
            return
        self._server.should_exit = True
        self._thread.join(timeout=10)
        self._server = self._thread = None

    def __enter__(self) -> FakeCoolifyServer:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.stop()


def main(
    host: str = "127.0.0.1",
    port: int = 8765,
    *,
    token: str = DEFAULT_TOKEN,
    deploy_delay: float = 2.0,
    delete_delay: float = 1.0,
    stop_delay: float = FakeSettings.stop_delay,
    status_interval: float = FakeSettings.status_interval,
    rate_limit: int = 200,
    seed: int | None = None,
) -> None:
    """Serve the fake in the foreground (``slotledger fake-coolify``) until interrupted."""
    settings = FakeSettings(
        token=token,
        deploy_delay=deploy_delay,
        delete_delay=delete_delay,
        stop_delay=stop_delay,
        status_interval=status_interval,
        rate_limit=rate_limit,
        seed=seed,
    )
    fake = FakeCoolify(settings)
    uvicorn.run(
        fake,
        host=host,
        port=port,
        lifespan="off",
        http="h11",
        log_level="info",
        timeout_graceful_shutdown=1,
    )
