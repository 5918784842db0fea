"""Check requests against Coolify's official OpenAPI spec, minus the documented errors.

openapi-core 0.23 has no httpx adapter, so :class:`HttpxOpenAPIRequest` and
:class:`HttpxOpenAPIResponse` implement its protocols over httpx. :class:`SpecValidator` is an
httpx request event hook: installed on the client, it fails the test on the first request the
spec rejects. :func:`response_problems` checks the shape of the fake's answers, minus
:data:`KNOWN_RESPONSE_DEVIATIONS`.

The spec is generated from controller attributes and is wrong in places (API.md). Where the
client follows the code instead, :data:`KNOWN_SPEC_DEVIATIONS` excuses exactly that error, with
the reason. Other API.md corrections need no excuse here, because they do not concern requests
or the spec already agrees:
- PATCH ``/applications/{uuid}`` with only ``description``: the spec requires no key.
- start/stop/restart: the spec documents them as POST (since the v4.2.0 switch).
- ``/deployments/applications/{uuid}`` returns ``{"count","deployments"}``, the create call
  returns ``domains``, DELETE says "deletion request queued", ``/version`` has no ``v``: these
  are responses; the fake answers as API.md says and the client tests rely on it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
from openapi_core import OpenAPI
from openapi_core.datatypes import RequestParameters
from openapi_core.validation.request.exceptions import InvalidRequestBody
from openapi_core.validation.response.exceptions import InvalidData
from openapi_core.validation.schemas.exceptions import InvalidSchemaValue
from werkzeug.datastructures import Headers, ImmutableMultiDict

SPEC_PATH = Path("/work/shared/coolify/openapi.yaml")
SPEC_HOST_URL = "https://app.coolify.io"
"""Scheme and host of the spec's ``servers[0]``; requests are rebased onto it to match."""


class HttpxOpenAPIRequest:
    """openapi-core's ``Request`` protocol for an ``httpx.Request``."""

    def __init__(self, request: httpx.Request) -> None:
        self._request = request
        self.parameters = RequestParameters(
            query=ImmutableMultiDict(list(request.url.params.multi_items())),
            header=Headers(dict(request.headers)),
            cookie=ImmutableMultiDict(),
        )

    @property
    def host_url(self) -> str:
        return SPEC_HOST_URL

    @property
    def path(self) -> str:
        return self._request.url.path

    @property
    def method(self) -> str:
        return self._request.method.lower()

    @property
    def body(self) -> bytes | None:
        return self._request.content or None

    @property
    def content_type(self) -> str:
        return str(self._request.headers.get("content-type", ""))


@dataclass(frozen=True)
class SpecDeviation:
    """One schema error the spec raises for a request that the real code accepts."""

    method: str
    path: str
    schema_error: str
    excused_if_body_has: str
    reason: str

    def excuses(self, request: httpx.Request, body: dict[str, Any], error: str) -> bool:
        return (
            request.method == self.method
            and request.url.path == self.path
            and error == self.schema_error
            and self.excused_if_body_has in body
        )


_ENVIRONMENT_REASON = (
    "API.md §2: the spec lists environment_name and environment_uuid both as required, "
    "but the code needs only one of them (looked up by name first, then by uuid)"
)
KNOWN_SPEC_DEVIATIONS = (
    SpecDeviation(
        method="POST",
        path="/api/v1/applications/dockerimage",
        schema_error="'environment_uuid' is a required property",
        excused_if_body_has="environment_name",
        reason=_ENVIRONMENT_REASON,
    ),
    SpecDeviation(
        method="POST",
        path="/api/v1/applications/dockerimage",
        schema_error="'environment_name' is a required property",
        excused_if_body_has="environment_uuid",
        reason=_ENVIRONMENT_REASON,
    ),
)


def load_spec() -> OpenAPI:
    return OpenAPI.from_file_path(str(SPEC_PATH))


def spec_problems(spec: OpenAPI, request: httpx.Request) -> list[str]:
    """Every way ``request`` breaks the spec, after the known deviations are excused."""
    problems: list[str] = []
    for error in spec.iter_request_errors(HttpxOpenAPIRequest(request)):
        cause = error.__cause__
        if isinstance(error, InvalidRequestBody) and isinstance(cause, InvalidSchemaValue):
            body = json.loads(request.content)
            messages = [str(getattr(e, "message", e)) for e in cause.schema_errors]
            problems.extend(
                message
                for message in messages
                if not any(
                    deviation.excuses(request, body, message) for deviation in KNOWN_SPEC_DEVIATIONS
                )
            )
        else:
            problems.append(f"{type(error).__name__}: {error}")
    return problems


class HttpxOpenAPIResponse:
    """openapi-core's ``Response`` protocol for a read ``httpx.Response``."""

    def __init__(self, response: httpx.Response) -> None:
        self._response = response

    @property
    def status_code(self) -> int:
        return self._response.status_code

    @property
    def content_type(self) -> str:
        return str(self._response.headers.get("content-type", ""))

    @property
    def headers(self) -> Headers:
        return Headers(dict(self._response.headers))

    @property
    def data(self) -> bytes:
        return self._response.content


KNOWN_RESPONSE_DEVIATIONS: tuple[tuple[str, str, str], ...] = (
    (
        "",
        "None is not of type",
        "the spec marks few columns nullable; Coolify answers the database's nulls "
        "(description, git_type, comment, ...)",
    ),
    ("", "'dockerimage' is not one of", "API.md §3: the build_pack enum leaves dockerimage out"),
    (
        "/api/v1/deployments/applications/",
        "is not of type 'array'",
        "API.md §8: the body is {count, deployments}, not an array of Application",
    ),
)
"""Schema errors of answers that Coolify gives although the spec says otherwise:
(path prefix, part of the message, why)."""


def response_problems(spec: OpenAPI, response: httpx.Response) -> list[str]:
    """Every way a successful JSON ``response`` breaks the spec's shape, after the known
    deviations are excused (errors, text bodies and undocumented statuses are not checked)."""
    content_type = response.headers.get("content-type", "")
    if not response.is_success or "json" not in content_type:
        return []
    request = HttpxOpenAPIRequest(response.request)
    problems: list[str] = []
    for error in spec.iter_response_errors(request, HttpxOpenAPIResponse(response)):
        cause = error.__cause__
        if not (isinstance(error, InvalidData) and isinstance(cause, InvalidSchemaValue)):
            problems.append(f"{type(error).__name__}: {error}")
            continue
        path = response.request.url.path
        for schema_error in cause.schema_errors:
            text = str(getattr(schema_error, "message", schema_error))
            if not any(
                path.startswith(prefix) and fragment in text
                for prefix, fragment, _ in KNOWN_RESPONSE_DEVIATIONS
            ):
                problems.append(text)
    return problems


class SpecValidator:
    """httpx request hook: rejects requests the spec rejects, remembers what it checked."""

    def __init__(self, spec: OpenAPI) -> None:
        self._spec = spec
        self.checked: list[tuple[str, str]] = []

    def __call__(self, request: httpx.Request) -> None:
        problems = spec_problems(self._spec, request)
        if problems:
            raise AssertionError(
                f"{request.method} {request.url.path} breaks the Coolify spec: "
                + "; ".join(problems)
            )
        self.checked.append((request.method, request.url.path))
