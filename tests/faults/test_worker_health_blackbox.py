"""The policy worker's health seen from outside: ``slotledger worker --port`` answers
/readyz and /metrics, and ``serve`` on PostgreSQL says whether some worker leads, all
through real processes (tests/blackbox.py), with the worker's database backends
terminated and the worker SIGKILLed."""

from __future__ import annotations

import os
import socket
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import psycopg

from ledger.settings import PostgresStore, parse_database_url
from tests.blackbox import HttpProcess, Process, cluster, run_cli, wait_for

POSTGRES_PORT = 5432


def _readyz(process: HttpProcess) -> tuple[int, dict[str, Any]]:
    response = httpx.get(process.url + "/readyz", timeout=10)
    return response.status_code, response.json()


def _worker_loop(process: HttpProcess) -> dict[str, Any]:
    code, body = _readyz(process)
    (loop,) = [entry for entry in body["loops"] if entry["name"] == "policy-worker"]
    return {"code": code, **body, **loop}


def _served_policy_worker(server: HttpProcess) -> tuple[int, str]:
    """Serve's /readyz status and what its policy-worker entry says."""
    code, body = _readyz(server)
    (loop,) = [h for h in body["loops"] if h["name"] == "policy-worker"]
    return code, loop["detail"]


def _socket_inodes(pid: int) -> set[str]:
    inodes = set()
    for fd in os.listdir(f"/proc/{pid}/fd"):
        try:
            target = os.readlink(f"/proc/{pid}/fd/{fd}")
        except OSError:  # closed meanwhile
            continue
        if target.startswith("socket:["):
            inodes.add(target[len("socket:[") : -1])
    return inodes


def _database_ports(process: Process) -> set[int]:
    """The local ports of the process's TCP connections to PostgreSQL, from /proc: what
    pg_stat_activity.client_port shows for its backends, whatever their names."""
    inodes = _socket_inodes(process.popen.pid)
    ports = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        with open(table) as rows:
            for row in list(rows)[1:]:
                fields = row.split()
                local, remote, inode = fields[1], fields[2], fields[9]
                if inode in inodes and int(remote.rsplit(":", 1)[1], 16) == POSTGRES_PORT:
                    ports.add(int(local.rsplit(":", 1)[1], 16))
    return ports


def _terminate_backends_of(admin: psycopg.Connection[Any], process: Process) -> list[int]:
    """pg_terminate_backend of every session the process has open; their pids."""
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE client_port = ANY(%s) AND pid <> pg_backend_pid()",
        (sorted(_database_ports(process)),),
    ).fetchall()
    pids = [int(r[0]) for r in rows]
    # Apart from the selection: the planner may run a function in WHERE on any row.
    admin.execute("SELECT pg_terminate_backend(pid) FROM unnest(%s::int[]) AS pid", (pids,))
    return pids


def _election_backend(admin: psycopg.Connection[Any], process: Process) -> int | None:
    row = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE application_name = %s",
        (f"slotledger worker pid={process.popen.pid}",),
    ).fetchone()
    return None if row is None else int(row[0])


def test_worker_endpoint_and_serve_show_who_leads_through_terminations_and_a_kill(
    postgres_url: str, tmp_path: Path
) -> None:
    store = parse_database_url(postgres_url)
    assert isinstance(store, PostgresStore)
    with (
        cluster(tmp_path) as c,
        psycopg.connect(store.conninfo(), autocommit=True) as admin,
    ):
        env = c.env(postgres_url, c.fake_coolify(), LEDGER_POLICY_TICK_S="0.2")
        server = c.serve(env)
        first = c.worker_http(env, name="worker-1")
        led = wait_for(lambda: (w := _worker_loop(first))["leader"] and w, what="worker-1 leads")
        assert led["code"] == 200 and led["status"] == "ready", led
        assert led["state"] == "running" and led["last_tick_at"] is not None

        second = c.worker_http(env, name="worker-2")
        standby = wait_for(
            lambda: (w := _worker_loop(second))["last_success_age_s"] is not None and w,
            what="worker-2 finishes a round",
        )
        assert standby["code"] == 200 and standby["leader"] is False, standby
        assert standby["state"] == "standby"

        metrics = httpx.get(first.url + "/metrics", timeout=10).text
        for family in ("up", "failures_total", "consecutive_failures"):
            assert f'slotledger_loop_{family}{{loop="policy-worker"}}' in metrics, family
        assert 'slotledger_loop_up{loop="policy-worker"} 1.0' in metrics
        assert 'slotledger_loop_last_success_age_seconds{loop="policy-worker"}' in metrics

        wait_for(
            lambda: _served_policy_worker(server) == (200, "led by another process"),
            what="serve shows a worker leading",
        )

        # Terminate every database session of the leader, as a failover would.
        cut_at = datetime.now(UTC)
        terminated = _terminate_backends_of(admin, first)
        assert terminated, "worker-1 had no database session to terminate"
        workers = (first, second)

        def recovered() -> bool:
            states = [_worker_loop(w) for w in workers]
            leaders = [s for s in states if s["leader"]]
            return (
                all(s["code"] == 200 and s["consecutive_failures"] == 0 for s in states)
                and len(leaders) == 1
                and datetime.fromisoformat(leaders[0]["last_tick_at"]) > cut_at
            )

        wait_for(recovered, what="one worker leads and ticks again after the termination")
        session = wait_for(lambda: _election_backend(admin, first), what="worker-1 reconnects")
        assert session not in terminated

        # Stop the standby cleanly, then SIGKILL the leader: nobody leads any more.
        leader, other = sorted(workers, key=lambda w: not _worker_loop(w)["leader"])
        other.stop()
        leader.kill()

        wait_for(
            lambda: _served_policy_worker(server) == (200, "no worker leads"),
            what="serve shows that no worker leads, and stays ready",
        )
        metrics = httpx.get(server.url + "/metrics", timeout=10).text
        assert 'slotledger_loop_up{loop="policy-worker"} 0.0' in metrics


def test_worker_on_a_taken_port_fails_at_once_with_one_line(sqlite_url: str) -> None:
    with socket.create_server(("127.0.0.1", 0)) as taken:
        port = taken.getsockname()[1]
        env = {
            "LEDGER_DATABASE_URL": sqlite_url,
            "LEDGER_COOLIFY_URL": "http://127.0.0.1:9/api/v1",
            "LEDGER_COOLIFY_TOKEN": "unused-token",
            "LEDGER_COOLIFY_PROJECT_UUID": "p",
            "LEDGER_COOLIFY_SERVER_UUID": "s",
        }
        result = run_cli("worker", "--port", str(port), env=env, timeout=60)
    assert result.returncode == 2, result
    assert f"--port: cannot listen on 127.0.0.1:{port}" in result.stderr
    assert "Traceback" not in result.stderr
