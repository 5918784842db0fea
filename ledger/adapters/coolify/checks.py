"""The Coolify settings checked at start, and the probe that shows Coolify in ``/readyz``.

A wrong ``LEDGER_COOLIFY_PROJECT_UUID`` used to start fine, then fail every slot on first
use ("Project not found") and drop its bot. :func:`check_coolify` asks, without changing
anything in Coolify:

1. ``GET /projects``: the token is accepted and can read, and the project is among its
   team's (``GET /projects/{uuid}`` cannot say "missing": the code loads a relation on the
   null it found and answers 500);
2. ``GET /projects/{uuid}/{environment}``: the environment exists (by name, then uuid);
3. ``GET /servers/{uuid}``: the server exists;
4. ``PATCH /projects/{uuid}`` with a key the controller refuses: the ``api.ability:write``
   middleware runs first, so 403 means the token cannot write and 422 that it can, and
   the controller rejects the body before it reads or changes the project;
5. ``POST /deployments/{uuid}/cancel`` for a uuid no deployment can have: 403 means the
   token cannot deploy, 404 that it can.

A wrong answer is a :class:`~ledger.errors.ConfigurationError` that names the setting
(never the token's value: the client redacts it from everything Coolify says), and the
command exits 2. When Coolify does not answer usefully (no connection, 5xx, a 429 that
outlasted the retries, a body that is not Coolify's), whether the settings are right is
not known: the process starts, says so in its log, and :class:`CoolifyProbe` runs the
checks once Coolify answers.

Readiness: an unreachable or misconfigured Coolify shows as the failing ``coolify`` loop
in ``/readyz`` and ``/metrics`` (``slotledger_loop_up{loop="coolify"} 0``) but does not make
the process not ready. Reads, the queue and releases work without Coolify, and every
``serve`` process shares the one Coolify: failing readiness would take all of them out of
their load balancer and turn a Coolify outage into a full outage (the same rule as the
other Coolify-bound loops, :class:`ledger.service.Service`).
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TypeVar

from ledger.adapters.coolify.client import CoolifyClient
from ledger.errors import (
    ConfigurationError,
    CoolifyBadResponse,
    CoolifyError,
    CoolifyNotFound,
    CoolifyRateLimited,
    CoolifyServerError,
    CoolifyUnavailable,
)
from ledger.loops import LoopHealth, describe_error

__all__ = ["UNANSWERED", "CoolifyProbe", "CoolifyTarget", "check_at_start", "check_coolify"]

log = logging.getLogger("ledger.coolify.checks")

T = TypeVar("T")

UNANSWERED: tuple[type[CoolifyError], ...] = (
    CoolifyUnavailable,
    CoolifyServerError,
    CoolifyRateLimited,
    CoolifyBadResponse,
)
"""Errors that say nothing about the settings: Coolify did not answer usefully."""

_TOKEN = "LEDGER_COOLIFY_TOKEN"


@dataclass(frozen=True)
class CoolifyTarget:
    """Where the slots' applications go: what the checks look for."""

    project_uuid: str
    server_uuid: str
    environment_name: str


def check_coolify(client: CoolifyClient, target: CoolifyTarget) -> None:
    """Raise ConfigurationError for the first wrong setting; raise one of
    :data:`UNANSWERED` when Coolify did not answer usefully."""
    for setting, value in (
        ("LEDGER_COOLIFY_PROJECT_UUID", target.project_uuid),
        ("LEDGER_COOLIFY_SERVER_UUID", target.server_uuid),
        ("LEDGER_COOLIFY_ENVIRONMENT_NAME", target.environment_name),
    ):
        if not value:
            raise ConfigurationError(f"{setting} is not set: the slots' applications need it")
    projects = _ask(
        "read",
        client.list_project_uuids,
        "LEDGER_COOLIFY_URL does not look like Coolify's API (it must end in /api/v1)",
    )
    if target.project_uuid not in projects:
        raise ConfigurationError(
            f"LEDGER_COOLIFY_PROJECT_UUID={target.project_uuid!r}: no such project among the "
            f"{len(projects)} the token's team has"
        )
    _ask(
        "read",
        lambda: client.get_environment(target.project_uuid, target.environment_name),
        f"LEDGER_COOLIFY_ENVIRONMENT_NAME={target.environment_name!r}: project "
        f"{target.project_uuid!r} has no such environment",
    )
    _ask(
        "read",
        lambda: client.get_server(target.server_uuid),
        f"LEDGER_COOLIFY_SERVER_UUID={target.server_uuid!r}: no such server for the token's team",
    )
    _ask(
        "write",
        lambda: client.check_write_ability(target.project_uuid),
        f"LEDGER_COOLIFY_PROJECT_UUID={target.project_uuid!r}: no such project",
    )
    _ask("deploy", client.check_deploy_ability, "LEDGER_COOLIFY_URL: unexpected 404")


def _ask(ability: str, call: Callable[[], T], if_missing: str) -> T:
    """``call``, with a refusal turned into the setting to fix. A 404 means what
    ``if_missing`` says; any other refusal (401, 403, a 400 "Invalid token.") is the
    token's, worded with Coolify's own message (the API switched off, an IP not allowed,
    a missing ability or team role)."""
    try:
        return call()
    except UNANSWERED:
        raise
    except CoolifyNotFound as e:
        raise ConfigurationError(f"{if_missing} ({e.detail})") from None
    except CoolifyError as e:
        raise ConfigurationError(
            f"{_TOKEN} cannot {ability}: Coolify answered {e.method} {e.path} with "
            f"HTTP {e.status}: {e.message}"
        ) from None


def check_at_start(client: CoolifyClient, target: CoolifyTarget) -> bool:
    """The checks as a process runs them at start: a wrong setting raises; Coolify not
    answering is logged and returns False (the probe checks later)."""
    try:
        check_coolify(client, target)
    except UNANSWERED as e:
        log.warning(
            "Coolify did not answer the start-up checks (%s); starting anyway: /readyz "
            "shows Coolify as unreachable until it answers and the checks pass",
            describe_error(e),
        )
        return False
    log.info(
        "Coolify checks passed: project %s, environment %s, server %s; the token reads, "
        "writes and deploys",
        target.project_uuid,
        target.environment_name,
        target.server_uuid,
    )
    return True


class CoolifyProbe:
    """The action of the periodic ``coolify`` loop: the full checks until they passed
    once, then reachability. Any answer below 500 in the last interval, to any request of
    the process, proves Coolify reachable and costs nothing; otherwise ``GET /health``
    asks. Every request draws from the budget, so the probe stays cheap under load."""

    NAME = "coolify"

    def __init__(self, client: CoolifyClient, target: CoolifyTarget, interval_s: float) -> None:
        self.client = client
        self.target = target
        self.interval_s = interval_s
        self.checked = False

    def __call__(self) -> None:
        if not self.checked:
            check_coolify(self.client, self.target)
            self.checked = True
            log.info("Coolify answers and its settings check out")
        elif not self.client.answered_within(self.interval_s):
            self.client.health()

    def shown(self, health: LoopHealth) -> LoopHealth:
        """The loop's health with what it means for Coolify in ``detail``."""
        if health.state == "failing":
            detail = "Coolify is unreachable or its settings are wrong: see last_error"
        elif health.last_success_age_s is None:
            detail = "not probed yet"
        else:
            detail = "Coolify answers"
        return replace(health, detail=detail)
