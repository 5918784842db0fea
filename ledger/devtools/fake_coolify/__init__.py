"""A fake Coolify v4 API that behaves like the real code (API.md), for tests and the demo.

It keeps applications, env vars and deployments in memory, runs deployments on a timer
(queued, then in_progress, then finished after ``deploy_delay``), throttles like Laravel, and
can inject the failures a pool manager must survive (see :class:`Faults`). Faults can be set
from Python or over HTTP (``POST /_fake/faults``); ``GET /_fake/state`` shows everything,
including a log of every request received (without the Authorization header).

Run it in-process with :class:`FakeCoolifyServer`, or standalone with :func:`main`.

Modules: :mod:`.settings` (what it is told, and the faults), :mod:`.calls` (one request and
the framework's answers), :mod:`.validation` (Coolify's field rules), :mod:`.state` (what it
remembers), :mod:`.handlers` (the API routes) and :mod:`.server` (ASGI app, thread, main).
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
