"""Soak, black box: three ``slotledger serve`` processes and one ``slotledger worker`` on
one PostgreSQL database with the fake Coolify, 32 clients doing request -> heartbeat ->
release for a minute, while a server and the worker are SIGKILLed (and restarted) and
every database connection is terminated once.

Only what a user can see is used: HTTP answers, the console script, the fake's state.
Afterwards no answer was a 5xx but 503s while a fault was being recovered from, every
acknowledged write is in the log, no slot is held by a bot whose last acknowledged
operation was a release or a refusal, ``slotledger check`` is clean, every server's read
models equal the ledger and a rebuild, and every Coolify description equals the ledger.
"""

from __future__ import annotations

import json
import random
import threading
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any
from uuid import UUID

import httpx
import psycopg
import pytest

from ledger.adapters.descriptions import describe
from ledger.application.ports import SlotRow
from ledger.domain import SlotStatus
from ledger.settings import PostgresStore, load_settings
from tests.blackbox import Cluster, HttpProcess, Process, cluster, run_cli, wait_for

pytestmark = [pytest.mark.slow, pytest.mark.postgres, pytest.mark.timeout(900)]

CLIENTS = 32
SERVERS = 3
POOL = 8
LOAD_S = 60.0
"""The load runs this long, or until ``MAX_OPERATIONS``, whichever comes first."""
MAX_OPERATIONS = 40_000
KILL_AT_S, RESTART_AFTER_S, TERMINATE_AT_S = 15.0, 3.0, 38.0
RECOVERY_GRACE_S = 10.0
"""503s are allowed from a fault until this long after its recovery was observed."""
QUEUE_TIMEOUT_S = 60
DEPLOY_DELAY_S = 0.2
WRITES = {"request", "heartbeat", "release"}


@dataclass(frozen=True)
class Answer:
    """One HTTP answer a client got (retried ones included)."""

    bot: str
    op: str
    server: str
    status: int
    at: float
    latency_s: float
    error: str | None = None
    body: str = ""


@dataclass(frozen=True)
class Ack:
    """An operation the service acknowledged: the answer the client acted on."""

    bot: str
    op: str
    status: int
    at: float
    correlation_id: str | None
    slot_id: str | None = None
    version: int | None = None
    outcome: str | None = None
    ambiguous: bool = False
    """Some earlier attempt of the same operation failed without an answer, or with a
    5xx: it may have landed."""


def correlation_id(response: httpx.Response, body: Any) -> str | None:
    found = response.headers.get("x-correlation-id")
    if found is None and isinstance(body, dict):
        found = body.get("correlation_id")
    return found


def outcome_of(body: Any) -> str | None:
    """A release's outcome, or ``started`` for a heartbeat that started its slot."""
    if not isinstance(body, dict):
        return None
    return body.get("outcome") or ("started" if body.get("started") else None)


def error_code(body: Any) -> str | None:
    return body.get("error") if isinstance(body, dict) else None


@dataclass
class Load:
    """What every client shares: the servers to spread over, the logs, the budget."""

    urls: list[str]
    started: float = field(default_factory=time.monotonic)
    answers: list[Answer] = field(default_factory=list)
    acks: list[Ack] = field(default_factory=list)
    transport_errors: list[tuple[str, float, str]] = field(default_factory=list)
    stop: threading.Event = field(default_factory=threading.Event)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def server(self, n: int) -> str:
        with self.lock:
            return self.urls[n % len(self.urls)]

    def replace(self, old: str, new: str) -> None:
        with self.lock:
            self.urls[self.urls.index(old)] = new

    def record(self, item: Answer | Ack | tuple[str, float, str]) -> None:
        with self.lock:
            if isinstance(item, Answer):
                self.answers.append(item)
            elif isinstance(item, Ack):
                self.acks.append(item)
            else:
                self.transport_errors.append(item)

    def over(self) -> bool:
        elapsed = time.monotonic() - self.started
        return self.stop.is_set() or elapsed >= LOAD_S or len(self.acks) >= MAX_OPERATIONS


class SoakClient:
    """One bot at a time: request, wait for the slot if queued, heartbeat, hold briefly,
    heartbeat again, release. A bot id is reused until a cycle ends doubtfully (a refused
    request or release): then the client moves to a fresh id, so that whatever the old
    one still holds stays visible as a leak instead of being healed by the next cycle."""

    def __init__(self, load: Load, index: int) -> None:
        self.load = load
        self.index = index
        self.generation = 0
        self.attempt = index
        self.http = httpx.Client(timeout=60)
        self.rng = random.Random(index)
        self.failure: BaseException | None = None

    @property
    def bot(self) -> str:
        return f"soak-{self.index:02d}-{self.generation}"

    def run(self) -> None:
        try:
            while not self.load.over():
                self.cycle()
        except BaseException as e:  # a client's crash must reach the test
            self.failure = e
        finally:
            self.http.close()

    def call(
        self, op: str, method: str, path: str, body: dict[str, Any] | None = None
    ) -> tuple[httpx.Response, Any, bool]:
        """One operation, retried on the next server after a connection error or a 5xx
        until it gets an answer below 500; the answer, its body and whether an earlier
        attempt may have landed."""
        ambiguous = False
        deadline = time.monotonic() + 300
        while True:
            assert time.monotonic() < deadline, f"{self.bot} {op}: no answer for 300 s"
            self.attempt += 1  # each call to the next server: all of them get load
            url = self.load.server(self.attempt)
            sent = time.monotonic()
            try:
                response = self.http.request(method, url + path, json=body)
            except httpx.TransportError as e:
                self.load.record((url, sent, f"{op}: {e!r}"))
                ambiguous = True
                time.sleep(0.05)
                continue
            try:
                parsed: Any = response.json()
            except ValueError:
                parsed = None
            self.load.record(
                Answer(
                    self.bot,
                    op,
                    url,
                    response.status_code,
                    sent,
                    time.monotonic() - sent,
                    error_code(parsed),
                    response.text[:300] if response.status_code >= 500 else "",
                )
            )
            if response.status_code < 500:
                return response, parsed, ambiguous
            ambiguous = True
            retry_after = response.headers.get("retry-after", "")
            time.sleep(min(float(retry_after), 1.0) if retry_after.isdigit() else 0.1)

    def ack(self, op: str, response: httpx.Response, body: Any, ambiguous: bool) -> None:
        slot = body.get("slot") if isinstance(body, dict) and op != "request" else body
        slot = slot if isinstance(slot, dict) else {}
        self.load.record(
            Ack(
                self.bot,
                op,
                response.status_code,
                time.monotonic(),
                correlation_id(response, body),
                slot.get("slot_id"),
                slot.get("version"),
                outcome_of(body),
                ambiguous,
            )
        )

    def cycle(self) -> None:
        bot = self.bot
        request = {"bot_id": bot, "queue_timeout_s": QUEUE_TIMEOUT_S}
        response, body, ambiguous = self.call("request", "POST", "/v1/deployments", request)
        self.ack("request", response, body, ambiguous)
        code = error_code(body)
        slot_id: str | None = None
        if response.status_code == 201:
            slot_id = body["slot_id"]
        elif response.status_code == 202 or (ambiguous and code == "bot_already_queued"):
            slot_id = self.wait_for_dispatch()
        elif ambiguous and code == "bot_already_holds_slot":
            slot_id = self.own_slot()  # an earlier attempt landed
        else:  # refused: whatever the bot may hold now is a leak
            self.generation += 1
            return
        if slot_id is not None:
            self.heartbeat(slot_id)
            time.sleep(self.rng.uniform(0.05, 0.3))
            self.heartbeat(slot_id)
        response, body, ambiguous = self.call("release", "DELETE", f"/v1/deployments/{bot}")
        self.ack("release", response, body, ambiguous)
        if response.status_code not in (200, 404):
            self.generation += 1

    def heartbeat(self, slot_id: str) -> None:
        path = f"/v1/slots/{slot_id}/heartbeat"
        response, body, ambiguous = self.call("heartbeat", "POST", path, {"bot_id": self.bot})
        self.ack("heartbeat", response, body, ambiguous)

    def own_slot(self) -> str | None:
        response, body, _ = self.call("read", "GET", "/v1/slots")
        assert response.status_code == 200, response.text
        mine = [s["slot_id"] for s in body if s["bot_id"] == self.bot]
        return mine[0] if mine else None

    def wait_for_dispatch(self) -> str | None:
        """Poll until the queued bot holds a slot, or no longer waits (it expired)."""
        deadline = time.monotonic() + QUEUE_TIMEOUT_S + 30
        while time.monotonic() < deadline:
            slot_id = self.own_slot()
            if slot_id is not None:
                return slot_id
            response, body, _ = self.call("read", "GET", "/v1/queue")
            if response.status_code == 200 and all(e["bot_id"] != self.bot for e in body):
                return self.own_slot()
            time.sleep(0.25)
        return None


# --- the processes -------------------------------------------------------------------------


@dataclass
class Fault:
    name: str
    at: float
    recovered_at: float | None = None
    figures: dict[str, float] = field(default_factory=dict)

    def window(self) -> tuple[float, float]:
        end = self.recovered_at if self.recovered_at is not None else float("inf")
        return self.at, end + RECOVERY_GRACE_S


@dataclass
class Deployment:
    """The running processes, restartable."""

    running: Cluster
    env: dict[str, str]
    servers: list[HttpProcess]
    worker: Process
    restarts: int = 0

    def restart_server(self, index: int) -> HttpProcess:
        self.restarts += 1
        server = self.running.serve(self.env, name=f"serve-{index}-r{self.restarts}")
        self.servers[index] = server
        return server

    def restart_worker(self) -> Process:
        self.restarts += 1
        self.worker = self.running.worker(self.env, name=f"worker-r{self.restarts}")
        return self.worker

    def pids(self) -> set[int]:
        return {p.popen.pid for p in [*self.servers, self.worker] if p.alive()}


def first_2xx_after(load: Load, server: str | None, after: float) -> float | None:
    with load.lock:
        times = [
            a.at + a.latency_s
            for a in load.answers
            if a.at >= after and 200 <= a.status < 300 and a.op in WRITES
            if server is None or a.server == server
        ]
    return min(times) if times else None


def worker_leads(worker: Process, seen: int) -> bool:
    return worker.output().count("is now leader") > seen


def worker_lock_session(admin: psycopg.Connection[Any], worker: Process) -> int | None:
    """The backend pid of the worker's election session while it holds an advisory lock
    (it re-takes leadership on a fresh session without logging a change, so its log
    cannot tell)."""
    row = admin.execute(
        "SELECT l.pid FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
        " WHERE l.locktype = 'advisory' AND l.granted AND a.application_name = %s",
        (f"slotledger worker pid={worker.popen.pid}",),
    ).fetchone()
    return None if row is None else int(row[0])


def kill_server_and_worker(load: Load, deployment: Deployment, fault: Fault) -> None:
    victim = deployment.servers[1]
    victim.kill()
    deployment.worker.kill()
    time.sleep(RESTART_AFTER_S)  # the outage lasts this long on purpose
    restarted_at = time.monotonic()
    worker = deployment.restart_worker()
    server = deployment.restart_server(1)
    fault.figures["server_ready_after_restart_s"] = time.monotonic() - restarted_at
    load.replace(victim.url, server.url)
    wait_for(lambda: worker_leads(worker, 0), what="the restarted worker leads")
    fault.figures["worker_leads_after_restart_s"] = time.monotonic() - restarted_at
    served = wait_for(
        lambda: first_2xx_after(load, server.url, restarted_at), what="a write on the new server"
    )
    fault.figures["first_write_on_restarted_server_s"] = served - restarted_at
    fault.recovered_at = time.monotonic()


def terminate_connections(
    load: Load, admin: psycopg.Connection[Any], deployment: Deployment, fault: Fault
) -> None:
    before = worker_lock_session(admin, deployment.worker)
    assert before is not None, "the worker held no leader lock before the termination"
    fault.at = time.monotonic()
    rows = admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
        " WHERE datname = current_database() AND pid <> pg_backend_pid()"
    ).fetchall()
    fault.figures["terminated"] = len(rows)
    for server in deployment.servers:
        served = wait_for(
            lambda s=server: first_2xx_after(load, s.url, fault.at),
            what=f"a write on {server.name}",
        )
        fault.figures[f"first_write_on_{server.name}_s"] = served - fault.at
    ready = wait_for(
        lambda: all(
            httpx.get(s.url + "/readyz", timeout=10).status_code == 200 for s in deployment.servers
        ),
        what="every server ready",
    )
    assert ready
    fault.figures["all_ready_s"] = time.monotonic() - fault.at
    fault.recovered_at = time.monotonic()
    # the worker lost its leader lock with its session: it must lead again
    wait_for(
        lambda: worker_lock_session(admin, deployment.worker) not in (None, before),
        what="the worker leads again on a new session",
    )
    fault.figures["worker_leads_again_s"] = time.monotonic() - fault.at


def count_backends(admin: psycopg.Connection[Any], schema: str, pids: set[int]) -> tuple[int, int]:
    """Connections this test's processes hold (by the application names they set), and
    all of the server's."""
    names = admin.execute("SELECT application_name FROM pg_stat_activity").fetchall()
    ours = sum(
        1 for (name,) in names if schema in name or any(name.endswith(f"pid={p}") for p in pids)
    )
    return ours, len(names)


# --- the checks ----------------------------------------------------------------------------


def ledger_slots(env: dict[str, str]) -> list[dict[str, Any]]:
    """The ledger's own state (its inline index), through the console script."""
    result = run_cli("slots", "--json", env=env)
    assert result.returncode == 0, result.stderr
    return [json.loads(line) for line in result.stdout.splitlines() if line.strip()]


def get(server: HttpProcess, path: str) -> Any:
    response = httpx.get(server.url + path, timeout=30)
    assert response.status_code == 200, f"{server.name} {path}: {response.text}"
    return response.json()


def instant(value: str | None) -> datetime | None:
    return None if value is None else datetime.fromisoformat(value)


def last_acks(acks: list[Ack]) -> dict[str, Ack]:
    last: dict[str, Ack] = {}
    for a in sorted(acks, key=lambda a: a.at):
        last[a.bot] = a
    return last


def leaked_slots(rows: list[dict[str, Any]], acks: list[Ack]) -> list[str]:
    """Slots held by a bot whose last acknowledged operation was a release or a refusal."""
    last = last_acks(acks)
    leaks = []
    for row in rows:
        final = last.get(row["bot"]) if row["bot"] is not None else None
        if row["bot"] is not None and (
            final is None or final.op == "release" or final.status >= 400
        ):
            leaks.append(f"{row['name']} ({row['status']}) held by {row['bot']}; last ack {final}")
    return leaks


def missing_from_log(server: HttpProcess, acks: list[Ack]) -> list[str]:
    """Acknowledged writes the event log does not show, per bot: each acknowledged
    change on its slot at or before the version the answer showed (an answer may show
    later changes already, such as the deploy that followed an acquisition), and each
    kind by count."""
    expected_type = {
        ("request", 201): "SlotAcquired",
        ("request", 202): "QueueEntryEnqueued",
        ("heartbeat", 200): "SlotStarted",
        ("heartbeat", 409): "SlotHeartbeatRefused",
        ("release", 200): "SlotReleased",
    }
    outcome_type = {
        "released": "SlotReleasing",
        "failed": "SlotFailed",
        "cancelled": "QueueEntryCancelled",
    }
    by_bot: dict[str, list[Ack]] = {}
    for a in acks:
        by_bot.setdefault(a.bot, []).append(a)
    missing = []
    for bot, mine in sorted(by_bot.items()):
        events = get(server, f"/v1/events?bot={bot}&limit=10000")
        assert len(events) < 10_000, f"{bot}: too many events to check"
        counts = Counter(e["type"] for e in events)
        changes = {(e["originator_id"], e["type"], e["originator_version"]) for e in events}
        cids = {e["correlation_id"] for e in events}
        wanted: Counter[str] = Counter()
        for a in mine:
            kind = expected_type.get((a.op, a.status))
            if a.op == "release" and a.status == 200:
                kind = outcome_type.get(a.outcome or "")
            if a.op == "heartbeat" and a.status == 200 and a.outcome is None:
                continue  # a heartbeat of a busy slot changes nothing
            if kind is None:
                continue
            wanted[kind] += 1
            recorded = kind != "SlotHeartbeatRefused"  # all but one a minute: counted
            if recorded and a.correlation_id is not None and a.correlation_id not in cids:
                missing.append(f"{bot}: {a.op} {a.status} cid {a.correlation_id} not in the log")
            checked = a.slot_id is not None and kind not in (
                "QueueEntryEnqueued",
                "QueueEntryCancelled",
                "SlotHeartbeatRefused",
            )
            versions = range(1, (a.version or 0) + 1)
            if checked and not any((a.slot_id, kind, v) in changes for v in versions):
                missing.append(
                    f"{bot}: {a.op} {a.status}: no {kind} on {a.slot_id} at or before v{a.version}"
                )
        if wanted["SlotHeartbeatRefused"]:  # one event a minute per slot and bot, the rest counted
            wanted["SlotHeartbeatRefused"] = 1
        for kind, n in wanted.items():
            if counts[kind] < n:
                missing.append(f"{bot}: {n} acknowledged {kind}, {counts[kind]} in the log")
    return missing


def model_view(server: HttpProcess) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    slots = sorted(
        (
            s["slot_id"],
            s["name"],
            s["status"],
            s["bot_id"],
            instant(s["status_since"]),
            instant(s["last_used"]),
            s["coolify_uuid"],
        )
        for s in get(server, "/v1/slots")
        if not s["retired"]
    )
    return slots, get(server, "/v1/pool/stats")


def ledger_view(rows: list[dict[str, Any]]) -> tuple[list[tuple[Any, ...]], dict[str, int]]:
    slots = sorted(
        (
            r["id"],
            r["name"],
            r["status"],
            r["bot"],
            instant(r["since"]),
            instant(r["last_used"]),
            r["coolify_uuid"],
        )
        for r in rows
    )
    statuses = Counter(r["status"] for r in rows)
    stats = {"total": len(rows), **{s.value: statuses[s.value] for s in SlotStatus}}
    return slots, {**stats, "maxSize": POOL}


def models_equal_ledger(servers: list[HttpProcess], env: dict[str, str]) -> bool:
    expected = ledger_view(ledger_slots(env))
    return all(model_view(s) == expected for s in servers)


def description_problems(fake: HttpProcess, env: dict[str, str], server: HttpProcess) -> list[str]:
    apps = get(fake, "/_fake/state")["apps"]
    errors = {s["slot_id"]: s["last_error"] for s in get(server, "/v1/slots")}
    problems = []
    for r in ledger_slots(env):
        if r["coolify_uuid"] is None:
            continue
        row = SlotRow(
            slot_id=UUID(r["id"]),
            pool="",
            name=r["name"],
            platform="",
            coolify_uuid=r["coolify_uuid"],
            status=SlotStatus(r["status"]),
            bot_id=r["bot"],
            status_since=instant(r["since"]),
            last_used=instant(r["last_used"]),  # type: ignore[arg-type]
            retired=False,
            version=0,
        )
        expected = describe(row, errors.get(r["id"]))
        found = apps.get(r["coolify_uuid"], {}).get("description")
        if found != expected:
            problems.append(f"{r['name']}: Coolify says {found!r}, the ledger {expected!r}")
    return problems


def percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def bad_answers(load: Load, faults: list[Fault]) -> tuple[list[Answer], list[Answer]]:
    """500s and other non-503 5xx anywhere; 503s outside every fault's window."""
    windows = [f.window() for f in faults]
    errors = [a for a in load.answers if a.status >= 500 and a.status != 503]
    stray = [
        a
        for a in load.answers
        if a.status == 503 and not any(lo <= a.at <= hi for lo, hi in windows)
    ]
    return errors, stray


# --- the test ------------------------------------------------------------------------------


def test_soak_three_servers_a_worker_and_faults(postgres_url: str, tmp_path: Path) -> None:
    store = load_settings(database_url=postgres_url).store
    assert isinstance(store, PostgresStore)
    conninfo = store.conninfo()
    problems: dict[str, list[str]] = {}
    with cluster(tmp_path) as running:
        fake = running.fake_coolify(deploy_delay=DEPLOY_DELAY_S, rate_limit=0)
        # A release the SIGKILLed server had begun is failed and recovered after twice
        # the stop timeout: short, so that it is settled within the test's waits.
        env = running.env(
            postgres_url, fake, LEDGER_MAX_POOL_SIZE=str(POOL), LEDGER_STOP_TIMEOUT_S="15"
        )
        servers = [running.serve(env, name=f"serve-{n}") for n in range(SERVERS)]
        deployment = Deployment(running, env, servers, running.worker(env))
        wait_for(lambda: worker_leads(deployment.worker, 0), what="the worker leads")

        load = Load([s.url for s in servers])
        clients = [SoakClient(load, i) for i in range(CLIENTS)]
        threads = [threading.Thread(target=c.run, name=f"client-{c.index}") for c in clients]
        backends: list[tuple[int, int]] = []
        # opened before the load, so neither sampling nor the fault can be refused a slot
        admin: psycopg.Connection[Any] = psycopg.connect(conninfo, autocommit=True)
        max_connections = int(admin.execute("SHOW max_connections").fetchone()[0])  # type: ignore[index]

        def run_until(at_s: float) -> None:
            while time.monotonic() - load.started < at_s and not load.over():
                backends.append(count_backends(admin, store.schema, deployment.pids()))
                time.sleep(1.0)

        for t in threads:
            t.start()
        faults: list[Fault] = []
        recoveries: list[str] = []
        problems["fault not recovered from"] = recoveries

        monitors: list[threading.Thread] = []

        def inject(at_s: float, name: str, step: Callable[[Fault], None]) -> None:
            """At ``at_s`` into the load, whatever became of earlier faults: ``step`` does
            the harm and waits for the recovery beside the load. A fault whose recovery
            fails is a finding; the load and the checks go on."""
            run_until(at_s)
            fault = Fault(name, time.monotonic())
            faults.append(fault)

            def run() -> None:
                try:
                    step(fault)
                except AssertionError as e:
                    recoveries.append(f"{name}: {e}")

            monitors.append(threading.Thread(target=run, name=name))
            monitors[-1].start()

        try:
            inject(
                KILL_AT_S,
                "sigkill serve-1 and the worker",
                lambda f: kill_server_and_worker(load, deployment, f),
            )
            inject(
                TERMINATE_AT_S,
                "pg_terminate_backend of every connection",
                lambda f: terminate_connections(load, admin, deployment, f),
            )
            run_until(LOAD_S)
        finally:
            load.stop.set()
            for t in threads:
                t.join(timeout=QUEUE_TIMEOUT_S + 300)
            load_s = time.monotonic() - load.started  # the last cycle included
            for t in monitors:
                t.join(timeout=QUEUE_TIMEOUT_S + 300)
            admin.close()
        crashed = [f"client {c.index}: {c.failure!r}" for c in clients if c.failure is not None]
        problems["clients crashed"] = crashed + [t.name for t in threads if t.is_alive()]

        dead = [s for s in deployment.servers if not s.alive()]
        problems["servers that died"] = [f"{s.name}: {s.output()[-1500:]}" for s in dead]
        servers = [s for s in deployment.servers if s.alive()]
        assert servers, "no server is left to check"
        wait_for(lambda: get(servers[0], "/v1/queue") == [], what="an empty queue")
        rows = ledger_slots(env)
        leaks = leaked_slots(rows, load.acks)
        problems["leaked slots"] = leaks
        still_held = sorted({r["bot"] for r in rows if r["bot"] is not None})
        for bot in still_held:
            answer = httpx.delete(f"{servers[0].url}/v1/deployments/{bot}", timeout=60)
            if answer.status_code not in (200, 404):
                problems.setdefault("final releases refused", []).append(f"{bot}: {answer.text}")
        try:
            wait_for(
                lambda: all(
                    r["bot"] is None and r["status"] in ("idle", "error") for r in ledger_slots(env)
                ),
                what="the pool to drain",
            )
        except AssertionError as e:
            problems["pool did not drain"] = [str(e), *map(str, ledger_slots(env))]
        # Quiet from here on: no policy acts behind the checks' backs. (The worker ran
        # until now: a release the SIGKILLed server had begun is its stale-releasing
        # policy's to settle.)
        deployment.worker.stop()

        errors, stray_503s = bad_answers(load, faults)
        problems["5xx other than 503"] = [str(a) for a in errors]
        logs = {path.name: path.read_text(errors="replace") for path in tmp_path.glob("*.log")}
        problems["the database ran out of connections"] = [
            f"{name}: {text.count('too many clients')} refusals"
            for name, text in sorted(logs.items())
            if "too many clients" in text
        ]
        problems["503 outside the fault windows"] = [str(a) for a in stray_503s]
        check = run_cli("check", env=env)
        problems["slotledger check"] = (
            [] if check.returncode == 0 else [check.stdout + check.stderr]
        )
        try:
            wait_for(lambda: models_equal_ledger(servers, env), what="read models = ledger")
        except AssertionError as e:
            ledger = ledger_view(ledger_slots(env))
            problems["read models differ from the ledger"] = [
                str(e),
                f"ledger {ledger}",
                *(f"{s.name} {model_view(s)}" for s in servers),
            ]
        before = [model_view(s) for s in servers]
        replay = run_cli("replay", env=env)
        problems["slotledger replay"] = [] if replay.returncode == 0 else [replay.stderr]
        after = [model_view(s) for s in servers]
        problems["read models differ from a rebuild"] = [
            f"{s.name}: {b} before, {a} after the rebuild"
            for s, b, a in zip(servers, before, after, strict=True)
            if a != b
        ]
        problems["missing from the log"] = missing_from_log(servers[0], load.acks)
        try:
            wait_for(
                lambda: not description_problems(fake, env, servers[0]),
                what="Coolify descriptions = ledger",
            )
        except AssertionError:
            problems["Coolify descriptions differ"] = description_problems(fake, env, servers[0])

    classes = Counter(f"{a.status // 100}xx" for a in load.answers)
    latencies = [a.latency_s for a in load.answers if a.op in WRITES]
    summary = {
        "load_s": round(load_s, 1),
        "clients": CLIENTS,
        "servers": SERVERS,
        "pool": POOL,
        "operations": len(load.acks),
        "operations_by_kind": dict(Counter(f"{a.op} {a.status}" for a in load.acks)),
        "answers": len(load.answers),
        "answers_by_class": dict(sorted(classes.items())),
        "answers_by_status": dict(sorted(Counter(a.status for a in load.answers).items())),
        "error_codes": dict(Counter(a.error for a in load.answers if a.error)),
        "transport_errors": len(load.transport_errors),
        "leaked_slots": len(leaks),
        "latency_p50_ms": round(percentile(latencies, 0.50) * 1000, 1),
        "latency_p99_ms": round(percentile(latencies, 0.99) * 1000, 1),
        "max_backends_of_this_test": max((ours for ours, _ in backends), default=0),
        "max_backends_of_the_server": max((every for _, every in backends), default=0),
        "max_connections": max_connections,
        "tracebacks_in_logs": {n: t.count("Traceback") for n, t in sorted(logs.items())},
        "faults": [
            {"name": f.name, **{k: round(v, 2) for k, v in f.figures.items()}} for f in faults
        ],
        "problems": {k: len(v) for k, v in problems.items() if v},
    }
    print("\nsoak summary:", json.dumps(summary, indent=2))
    (tmp_path / "soak-summary.json").write_text(json.dumps(summary, indent=2))
    (tmp_path / "soak-problems.json").write_text(json.dumps(problems, indent=2, default=str))
    (tmp_path / "soak-acks.ndjson").write_text(
        "".join(json.dumps(asdict(a)) + "\n" for a in load.acks)
    )
    found = {k: v[:20] for k, v in problems.items() if v}
    assert not found, f"logs in {tmp_path}:\n" + json.dumps(found, indent=2, default=str)
