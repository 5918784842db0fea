"""Schemathesis against /openapi.json: every operation, valid and invalid input, a fixed
number of deterministic examples each. No answer may be a 5xx; every answer must also
conform to the document (status code, content type, body schema)."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field

import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import APIOperation, Case, GenerationMode
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Ok

from ledger.errors import BadInput
from projections.inputs import parse_instant
from tests.integration.web.conftest import MakeApi

MAX_EXAMPLES = 30
TOKEN = "fuzz-token"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
"""The API runs with a token, so the auth checks see it enforced; cases carry it."""


def inverted_window(case: Case) -> bool:
    """``since`` after ``until``: schema-valid, refused with a 422 on purpose (a rule
    JSON Schema cannot state), so "schema-valid request rejected" is expected here."""
    query = case.query or {}
    since, until = query.get("since"), query.get("until")
    if not (isinstance(since, str) and isinstance(until, str)):
        return False
    try:
        return parse_instant(since) > parse_instant(until)
    except BadInput:
        return False


def reused_key(response: object) -> bool:
    """A generated ``Idempotency-Key`` met again with another body: refused with the
    documented 422 on purpose, which no schema can state."""
    try:
        return bool(response.json().get("error") == "idempotency_key_reused")  # type: ignore[attr-defined]
    except ValueError:
        return False


@dataclass
class Tally:
    cases: Counter[str] = field(default_factory=Counter)
    statuses: Counter[int] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)
    nonconforming: list[str] = field(default_factory=list)

    def record(self, label: str, case: Case) -> None:
        response = case.call()
        self.cases[label] += 1
        self.statuses[response.status_code] += 1
        where = f"{label}: {case.as_curl_command()}"
        if response.status_code >= 500:
            self.server_errors.append(f"{where} -> {response.status_code} {response.text[:200]}")
        try:
            case.validate_response(response, headers=AUTH)  # the auth is ours, not generated
        except FailureGroup as e:
            if not (inverted_window(case) or reused_key(response)):
                self.nonconforming.append(f"{where} -> {response.status_code}: {e}"[:1500])


def fuzz(operation: APIOperation, mode: GenerationMode, tally: Tally) -> None:
    label = f"{operation.label} [{mode.value}]"

    @settings(
        max_examples=MAX_EXAMPLES,
        derandomize=True,
        database=None,
        deadline=None,
        phases=[Phase.explicit, Phase.generate],
        suppress_health_check=list(HealthCheck),
    )
    @given(case=operation.as_strategy(generation_mode=mode, headers=AUTH))
    def run(case: Case) -> None:
        tally.record(label, case)

    try:
        run()
    except Unsatisfiable:
        assert mode is GenerationMode.NEGATIVE, label  # an operation without inputs


def test_schemathesis_finds_no_server_errors(database_url: str, make_api: MakeApi) -> None:
    api = make_api(database_url, api_token=TOKEN)
    api.provision(2)  # so that some slot operations hit real slots
    schema = schemathesis.openapi.from_asgi("/openapi.json", api.client.app)
    tally = Tally()
    operations = [r.ok() for r in schema.get_all_operations() if isinstance(r, Ok)]
    for operation in operations:
        for mode in GenerationMode:
            fuzz(operation, mode, tally)

    print(
        f"\nschemathesis: {len(operations)} operations, {sum(tally.cases.values())} cases, "
        f"{len(tally.server_errors)} server errors, {len(tally.nonconforming)} nonconforming; "
        f"statuses {dict(sorted(tally.statuses.items()))}"
    )
    for problem in tally.server_errors + tally.nonconforming:
        print(problem)
    assert len(operations) == 25
    assert not tally.server_errors
    assert not tally.nonconforming
