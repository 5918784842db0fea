"""What the routes depend on: the running service and, for a mutating operation, the
bearer token. The service lives on ``app.state`` (:func:`~ledger.entrypoints.web.app.
create_app` puts it there), so the routers are plain modules, not closures."""

from __future__ import annotations

import hmac
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from ledger.entrypoints.web.errors import Unauthorized
from ledger.service import Service

__all__ = ["MUTATING", "ServiceDep", "authorized", "service_of"]


async def service_of(request: Request) -> Service:
    """Async, so FastAPI resolves it on the event loop, not in its thread pool."""
    service: Service = request.app.state.service
    return service


ServiceDep = Annotated[Service, Depends(service_of)]
Bearer = Annotated[
    HTTPAuthorizationCredentials | None,
    Depends(HTTPBearer(auto_error=False, description="Needed when LEDGER_API_TOKEN is set.")),
]


async def authorized(service: ServiceDep, credentials: Bearer) -> None:
    """Compares in constant time, so response timing does not leak the token. Async,
    as it does no I/O: FastAPI runs it on the event loop, not through its thread pool
    (a hop there and back on every mutating request)."""
    expected = service.settings.api_token.get_secret_value()
    if not expected:
        return
    given = credentials.credentials if credentials is not None else ""
    if not hmac.compare_digest(given.encode(), expected.encode()):
        raise Unauthorized("a valid token is required: Authorization: Bearer <token>")


MUTATING = [Depends(authorized)]
"""The ``dependencies`` of every operation that writes."""
