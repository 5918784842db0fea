"""The HTTP API keeps its contract: every path, operation, parameter, response and schema
of tests/fixtures/openapi-reference.json (the document before the restructure of issue
11) stands unchanged in today's document. Additions are allowed: new paths, operations,
parameters, responses, schemas, new properties of a schema, and new values of an enum
(an event type a filter accepts)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ledger.entrypoints.web import create_app
from tests.integration.web.conftest import MakeApi

REFERENCE = Path(__file__).parents[2] / "fixtures" / "openapi-reference.json"

Document = Mapping[str, Any]


def _same(reference: object, current: object) -> bool:
    """Equal, except that an ``enum`` may have gained values."""
    if isinstance(reference, Mapping) and isinstance(current, Mapping):
        return reference.keys() == current.keys() and all(
            set(v) <= set(current[k]) if k == "enum" else _same(v, current[k])
            for k, v in reference.items()
        )
    return reference == current


def _differences(
    where: str, reference: Document, current: Document, grows: tuple[str, ...]
) -> list[str]:
    """Where ``current`` differs from ``reference``: each key equal, except under the keys
    ``grows``, where each of the reference's entries must be present and equal."""
    found = []
    for key, value in reference.items():
        if key not in current:
            found.append(f"{where}: {key} is missing")
        elif key in grows:
            found += [
                f"{where}.{key}: {entry!r} " + ("changed" if entry in current[key] else "missing")
                for entry in value
                if not _same(value[entry], current[key].get(entry))
            ]
        elif not _same(value, current[key]):
            found.append(f"{where}.{key} changed: {value!r} -> {current[key]!r}")
    return found


def _by_name(operation: Document) -> dict[str, Any]:
    """The operation with its parameters keyed by where and name, as they are unique."""
    parameters = {(p["in"], p["name"]): p for p in operation.get("parameters", [])}
    return {**operation, "parameters": parameters}


def differences(reference: Document, current: Document) -> list[str]:
    """Everything of ``reference`` that ``current`` lacks or changed."""
    found = [f"{key} changed" for key in ("openapi", "info") if reference[key] != current.get(key)]
    for path, operations in reference["paths"].items():
        for method, operation in operations.items():
            here = current["paths"].get(path, {}).get(method)
            if here is None:
                found.append(f"{method.upper()} {path} is missing")
            else:
                found += _differences(
                    f"{method.upper()} {path}",
                    _by_name(operation),
                    _by_name(here),
                    grows=("parameters", "responses"),
                )
    components = current.get("components", {})
    for name, schema in reference["components"]["schemas"].items():
        here = components.get("schemas", {}).get(name)
        if here is None:
            found.append(f"schema {name} is missing")
        else:
            found += _differences(f"schema {name}", schema, here, grows=("properties",))
    for name, scheme in reference["components"]["securitySchemes"].items():
        if components.get("securitySchemes", {}).get(name) != scheme:
            found.append(f"security scheme {name} changed or missing")
    return found


def test_the_openapi_document_keeps_everything_of_the_reference(
    sqlite_url: str, make_api: MakeApi
) -> None:
    reference = json.loads(REFERENCE.read_text())
    current = create_app(make_api(sqlite_url, start=False).service).openapi()
    assert differences(reference, current) == []


def test_changes_and_removals_are_differences_additions_are_not() -> None:
    reference = json.loads(REFERENCE.read_text())
    current = json.loads(REFERENCE.read_text())
    current["paths"]["/v1/deployments"]["post"]["operationId"] = "renamed"
    del current["paths"]["/healthz"]
    current["paths"]["/v1/events"]["get"]["parameters"].pop()
    current["paths"]["/v1/slots/{slot_id}"]["get"]["parameters"][0]["description"] = "Id."
    del current["components"]["schemas"]["PoolAtOut"]
    current["paths"]["/v1/new"] = {"get": {}}
    current["components"]["schemas"]["SlotOut"]["properties"]["new"] = {"type": "string"}
    events = current["paths"]["/v1/events"]["get"]["parameters"]
    next(p for p in events if p["name"] == "type")["schema"]["enum"].append("SlotNew")
    assert differences(reference, current) == [
        "GET /healthz is missing",
        "POST /v1/deployments.operationId changed: 'request_deployment' -> 'renamed'",
        "GET /v1/events.parameters: ('query', 'limit') missing",
        "GET /v1/slots/{slot_id}.parameters: ('path', 'slot_id') changed",
        "schema PoolAtOut is missing",
    ]
