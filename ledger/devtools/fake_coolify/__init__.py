"""A fake Coolify v4 API that behaves like the real code (API.md), for tests and the demo.

It keeps applications, env vars, containers and deployments in memory and lags and queues
as Coolify does: deployments wait for a build slot, stop is a job that runs later and kills
whatever runs then, and the status the API shows comes from a periodic sweep (see
:class:`FakeSettings` and :mod:`.timeline`). It throttles like Laravel and can inject the
failures a pool manager must survive (see :class:`Faults`).

Control endpoints (not Coolify's): ``POST /_fake/faults`` and ``POST /_fake/settings``
(JSON objects of changes, validated), ``POST /_fake/apps/{uuid}`` with
``{"container": "no_healthcheck" | "healthy" | "unhealthy" | "crashloop" | "degraded" |
"exits"}`` (how that app's containers behave from its next deployment on),
``POST /_fake/reset``, and ``GET /_fake/state``, which shows everything, including each app's
running containers and a log of every request received (without the Authorization header).

Run it in-process with :class:`FakeCoolifyServer`, or standalone with :func:`main`.

Modules: :mod:`.settings` (what it is told, and the faults), :mod:`.calls` (one request and
the framework's answers), :mod:`.validation` (Coolify's field rules), :mod:`.state` (what it
remembers), :mod:`.timeline` (the queue, the jobs and the status sweep), :mod:`.handlers`
(auth and the route table), :mod:`.applications` and :mod:`.deployments` (the routes) and
:mod:`.server` (ASGI app, thread, main).
"""

from ledger.devtools.fake_coolify.calls import RecordedRequest
from ledger.devtools.fake_coolify.handlers import FAKE_VERSION
from ledger.devtools.fake_coolify.server import FakeCoolify, FakeCoolifyServer, main
from ledger.devtools.fake_coolify.settings import DEFAULT_TOKEN, FakeSettings, Faults

__all__ = [
    "DEFAULT_TOKEN",
    "FAKE_VERSION",
    "FakeCoolify",
    "FakeCoolifyServer",
    "FakeSettings",
    "Faults",
    "RecordedRequest",
    "main",
]
