"""Text through the whole pipeline, black box: every string field of every endpoint and of
the CLI commands that take text, with NUL, control characters, a lone surrogate, 10,000
characters, right-to-left text and emoji, against a running ``slotledger serve`` on
SQLite and on PostgreSQL. Each value is either refused with a 4xx (exit 2 on the CLI)
that names the field and writes nothing, or stored, projected (slot, history, events),
exported (``slotledger export``) and shown exactly as sent.

Also the regression of issue 10's defect 1: a reason with NUL was accepted and then froze
every read model; now it is refused, and the models and ``slotledger stats`` stay well.
"""

from __future__ import annotations

import json
import sqlite3
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import quote

import httpx
import psycopg
import pytest

from tests.blackbox import cluster, run_cli, wait_for
from tests.hostile import HOSTILE

REASON_OK = {"rtl", "emoji", "tab_newline"}
CONFIG_VALUE_OK = {"rtl", "emoji"}
CLI_HOSTILE = {
    **{k: v for k, v in HOSTILE.items() if k not in ("nul", "surrogate")},
    "surrogate": "a\udcff",  # argv cannot carry NUL; a byte that is no UTF-8 arrives so
}
"""What argv can carry: an undecodable byte reaches Python as a lone surrogate."""
MAX_POOL = 2


@dataclass
class Served:
    client: httpx.Client
    env: dict[str, str]
    slot_ids: list[str]
    """The pool's slots, each held by a holder bot: the pool is full, so a request waits
    in the queue and its configuration is in the log."""

    def post(self, url: str, body: Any) -> httpx.Response:
        """JSON as a client library writes it: non-ASCII and lone surrogates escaped."""
        content = json.dumps(body).encode()
        return self.client.post(url, content=content, headers={"content-type": "application/json"})

    def events(self, **params: str) -> list[dict[str, Any]]:
        answer = self.client.get("/v1/events", params={"limit": "10000", **params})
        assert answer.status_code == 200, answer.text
        records: list[dict[str, Any]] = answer.json()
        return records

    def slot(self, slot_id: str) -> dict[str, Any]:
        answer = self.client.get(f"/v1/slots/{slot_id}")
        assert answer.status_code == 200, answer.text
        state: dict[str, Any] = answer.json()
        return state

    def settled(self) -> Served:
        """Once the holders' deploys are done (their slots busy) the log is quiet, so a
        count of events before and after a request shows what it wrote."""
        for slot_id in self.slot_ids:
            wait_for(lambda s=slot_id: self.slot(s)["status"] == "busy", what="busy slots")
        return self

    def exported(self, *args: str) -> list[dict[str, Any]]:
        done = run_cli("export", *args, env=self.env)
        assert done.returncode == 0, done.stderr
        return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def _path(value: str) -> str:
    """A path segment or query value as a client would encode it (a lone surrogate as
    its UTF-8-style bytes, which the server cannot decode as UTF-8)."""
    return quote(value, safe="", errors="surrogatepass")


def _database(request: pytest.FixtureRequest, where: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{where / 'ledger.db'}"
        return
    base: str = request.getfixturevalue("postgres_base_url")
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(base, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{base}?schema={schema}"
    finally:
        with psycopg.connect(base, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def served(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Served]:
    logs = tmp_path_factory.mktemp(f"text-{request.param}")
    for url in _database(request, logs):
        with cluster(logs) as running:
            fake = running.fake_coolify()
            # Policies tick hourly: no recovery turns a failed slot idle behind the test.
            env = running.env(
                url, fake, LEDGER_MAX_POOL_SIZE=str(MAX_POOL), LEDGER_POLICY_TICK_S="3600"
            )
            server = running.serve(env)
            with server.client() as client:
                stack = Served(client, env, [])
                for n in range(MAX_POOL):
                    answer = stack.post("/v1/deployments", {"bot_id": f"holder-{n}"})
                    assert answer.status_code == 201, answer.text
                    stack.slot_ids.append(answer.json()["slot_id"])
                yield stack.settled()


def assert_refused(served: Served, answer: httpx.Response, field: str, before: int) -> None:
    """A 4xx naming the field, and not one event more in the log."""
    assert 400 <= answer.status_code < 500, answer.text
    body = answer.json()
    assert body["error"] in ("bad_input", "malformed_json"), body
    assert field in body["detail"], body
    assert len(body["detail"]) < 1000, "the error must not echo a long value"
    assert len(served.events()) == before


# --- bodies ------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HOSTILE))
def test_fail_reason(served: Served, name: str) -> None:
    value, slot_id = HOSTILE[name], served.slot_ids[0]
    before, version = len(served.events()), served.slot(slot_id)["version"]
    answer = served.post(f"/v1/slots/{slot_id}/fail", {"reason": value})
    if name not in REASON_OK:
        assert_refused(served, answer, "body.reason", before)
        assert served.slot(slot_id)["version"] == version
        return
    assert answer.status_code == 200, answer.text
    assert answer.json()["last_error"] == value
    assert served.slot(slot_id)["last_error"] == value
    history = served.client.get(f"/v1/slots/{slot_id}/history").json()
    assert history["events"][-1]["type"] == "SlotFailed"
    assert history["events"][-1]["reason"] == value
    assert served.events(slot=slot_id, type="SlotFailed")[-1]["reason"] == value
    failed = [r for r in served.exported("--slot", slot_id) if r["fields"].get("reason_code")]
    assert failed[-1]["fields"]["reason"] == value


@pytest.mark.parametrize("name", list(HOSTILE))
def test_config_value(served: Served, name: str) -> None:
    value, bot = HOSTILE[name], f"config-value-{name}"
    before = len(served.events())
    answer = served.post("/v1/deployments", {"bot_id": bot, "config": {"GREETING": value}})
    if name not in CONFIG_VALUE_OK:
        assert_refused(served, answer, "body.config.GREETING", before)
        assert "GREETING" in answer.json()["detail"] and value not in answer.json()["detail"]
        return
    assert answer.status_code == 202, answer.text  # the pool is full: it waits
    [enqueued] = served.events(bot=bot, type="QueueEntryEnqueued")
    assert enqueued["data"]["config"] == {"GREETING": "[redacted]"}  # an open read
    [exported] = [r for r in served.exported("--bot", bot) if "config" in r["fields"]]
    assert exported["fields"]["config"] == {"GREETING": value}
    cancelled = served.client.delete(f"/v1/deployments/{bot}")
    assert cancelled.status_code == 200 and cancelled.json()["outcome"] == "cancelled"


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize(
    ("where", "body"),
    [
        ("body.bot_id", lambda v: {"bot_id": v}),
        ("body.platform", lambda v: {"bot_id": "b-platform", "platform": v}),
        ("body.config", lambda v: {"bot_id": "b-config-key", "config": {v: "x"}}),
    ],
    ids=["bot_id", "platform", "config_key"],
)
def test_deployment_identifiers(served: Served, name: str, where: str, body: Any) -> None:
    """Identifiers are ASCII of a fixed form: every hostile value is refused, even the
    international ones."""
    before = len(served.events())
    assert_refused(served, served.post("/v1/deployments", body(HOSTILE[name])), where, before)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("priority", "5"),
        ("priority", True),
        ("priority", 1.5),
        ("priority", None),
        ("priority", [1]),
        ("queue_timeout_s", "5"),
        ("queue_timeout_s", False),
        ("bot_id", 5),
        ("bot_id", None),
        ("platform", 7),
        ("config", ["A", "b"]),
        ("config", "A=b"),
    ],
)
def test_deployment_types(served: Served, field: str, value: object) -> None:
    """Wrong JSON types are refused, not coerced: what is stored is what was sent."""
    before = len(served.events())
    answer = served.post("/v1/deployments", {"bot_id": "b-types", field: value})
    assert_refused(served, answer, f"body.{field}", before)


@pytest.mark.parametrize("name", list(HOSTILE))
def test_heartbeat_bot_id(served: Served, name: str) -> None:
    before = len(served.events())
    url = f"/v1/slots/{served.slot_ids[1]}/heartbeat"
    assert_refused(served, served.post(url, {"bot_id": HOSTILE[name]}), "body.bot_id", before)


# --- paths and queries ---------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HOSTILE))
def test_path_parameters(served: Served, name: str) -> None:
    value, before = _path(HOSTILE[name]), len(served.events())
    assert_refused(served, served.client.delete(f"/v1/deployments/{value}"), "bot_id", before)
    beat = served.post(f"/v1/slots/{value}/heartbeat", {"bot_id": "holder-1"})
    assert_refused(served, beat, "slot_id", before)
    fail = served.post(f"/v1/slots/{value}/fail", {"reason": "r"})
    assert_refused(served, fail, "slot_id", before)
    for url in (f"/v1/slots/{value}", f"/v1/slots/{value}/history"):
        assert_refused(served, served.client.get(url), "slot_id", before)


@pytest.mark.parametrize("name", list(HOSTILE))
@pytest.mark.parametrize(
    ("path", "param", "named"),
    [
        ("/v1/events", "slot", "query.slot"),
        ("/v1/events", "bot", "query.bot"),
        ("/v1/events", "type", "type"),
        ("/v1/events", "since", "query.since"),
        ("/v1/events", "until", "query.until"),
        ("/v1/pool/at", "t", "query.t"),
    ],
)
def test_query_parameters(served: Served, name: str, path: str, param: str, named: str) -> None:
    before = len(served.events())
    answer = served.client.get(f"{path}?{param}={_path(HOSTILE[name])}")
    assert_refused(served, answer, named, before)


# --- the CLI -------------------------------------------------------------------------------


@dataclass
class Store:
    env: dict[str, str]
    path: Path
    slot: str

    def event_count(self) -> int:
        with sqlite3.connect(self.path) as conn:
            (count,) = conn.execute("SELECT count(*) FROM stored_events").fetchone()
        return int(count)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> Store:
    """A store of its own for the CLI's refusals: the checks are the domain's, whatever
    the store, and no server competes with the CLI for it."""
    path = tmp_path_factory.mktemp("text-cli") / "ledger.db"
    env = {"LEDGER_DATABASE_URL": f"sqlite:///{path}"}
    done = run_cli("provision", "--json", env=env)
    assert done.returncode == 0, done.stderr
    return Store(env, path, json.loads(done.stdout)["slot"])


CLI_REFUSED = {
    "fail --reason": (
        lambda v, slot: ["fail", slot, "--reason", v],
        "reason",
        [k for k in CLI_HOSTILE if k not in REASON_OK],
    ),
    "acquire BOT": (lambda v, slot: ["acquire", v], "bot_id", list(CLI_HOSTILE)),
    "acquire --platform": (
        lambda v, slot: ["acquire", "cli-bot", "--platform", v],
        "platform",
        ["escape", "surrogate", "long", "rtl"],
    ),
    "release BOT": (lambda v, slot: ["release", v], "bot_id", ["escape", "surrogate", "long"]),
    "provision --platform": (
        lambda v, slot: ["provision", "--platform", v],
        "platform",
        ["escape", "surrogate", "long", "emoji"],
    ),
}
"""Every hostile value for the free-text reason and for the bot id; a few for the rest,
whose checks are the same functions (``tests/unit/test_text.py`` tries every value on
every field): each CLI process costs seconds."""


@pytest.mark.parametrize("command", list(CLI_REFUSED))
def test_cli_refuses_hostile_text_naming_the_field(store: Store, command: str) -> None:
    """Exit 2 with one line on stderr that names the field; nothing written."""
    argv, field, names = CLI_REFUSED[command]
    before = store.event_count()

    def run(name: str) -> Any:
        return run_cli(*argv(CLI_HOSTILE[name], store.slot), env=store.env)

    with ThreadPoolExecutor(max_workers=2) as pool:
        done = dict(zip(names, pool.map(run, names), strict=True))
    for name, result in done.items():
        lines = result.stderr.strip().splitlines()
        assert result.returncode == 2, (name, result.stdout, result.stderr)
        assert len(lines) == 1 and lines[0].startswith(f"error: bad_input: {field} "), name
        assert "\x1b" not in result.stderr, "a control character reached the terminal"
    assert store.event_count() == before


@pytest.mark.parametrize("name", sorted(REASON_OK))
def test_cli_fail_keeps_a_legal_reason_intact(served: Served, name: str) -> None:
    value, slot_id = HOSTILE[name], served.slot_ids[0]
    done = run_cli("fail", slot_id, "--reason", value, "--json", env=served.env)
    assert done.returncode == 0, done.stderr
    wait_for(lambda: served.slot(slot_id)["last_error"] == value, what="the reason projected")
    assert served.events(slot=slot_id, type="SlotFailed")[-1]["reason"] == value


# --- defect 1 ------------------------------------------------------------------------------


def test_a_nul_reason_is_refused_and_the_read_side_stays_well(served: Served) -> None:
    """Issue 10, defect 1: ``{"reason": "a\\u0000"}`` answered 200, and the NUL then
    stopped every read model (PostgreSQL COPY refuses it)."""
    slot_id = served.slot_ids[1]
    before = len(served.events())
    answer = served.post(f"/v1/slots/{slot_id}/fail", {"reason": "a\u0000"})
    assert_refused(served, answer, "body.reason", before)
    assert "U+0000" in answer.json()["detail"]
    wait_for(lambda: served.client.get("/readyz").status_code == 200, what="ready")
    stats = run_cli("stats", "--json", env=served.env)
    assert stats.returncode == 0, stats.stderr
    assert json.loads(stats.stdout)["total"] == MAX_POOL
    # a write after the refusal is projected: the models did not stop
    assert served.post(f"/v1/slots/{slot_id}/fail", {"reason": "after"}).status_code == 200
    assert served.events(slot=slot_id, type="SlotFailed")[-1]["reason"] == "after"
