"""PostgreSQL leader election, in one process: one leader per ledger and pool, lost with
its session, and respected by ``policy run``."""

from __future__ import annotations

import time
from collections.abc import Iterator

import psycopg
import pytest
import typer
from typer.testing import CliRunner

from ledger.adapters.postgres import PostgresLeaderElection
from ledger.bootstrap import build_ledger
from ledger.entrypoints.cli.policy import register
from ledger.settings import load_settings
from tests.integration.policies.support import lock_holder, store_of, terminate_holder
from tests.unit.policies.support import RecordingRuntime


def _election(url: str, pool: str) -> PostgresLeaderElection:
    store = store_of(url)
    return PostgresLeaderElection(store.conninfo(), store.schema, pool)


@pytest.fixture
def elections(postgres_url: str) -> Iterator[list[PostgresLeaderElection]]:
    made = [_election(postgres_url, pool) for pool in ("default", "default", "other")]
    yield made
    for election in made:
        election.release()


def test_one_leader_per_pool_until_it_releases(
    postgres_url: str, elections: list[PostgresLeaderElection]
) -> None:
    first, second, other_pool = elections

    assert [first.try_lead(), second.try_lead(), other_pool.try_lead()] == [True, False, True]
    assert first.try_lead() and not second.try_lead()  # the keepalive keeps it
    with psycopg.connect(store_of(postgres_url).conninfo()) as conn:
        assert lock_holder(conn, first.key) is not None
        first.release()
        assert lock_holder(conn, first.key) is None
    assert second.try_lead()
    assert not first.try_lead()


def test_another_ledger_schema_has_its_own_leader(
    postgres_url: str, elections: list[PostgresLeaderElection]
) -> None:
    elsewhere = _election(postgres_url + "_b", "default")
    try:
        assert elections[0].try_lead() and elsewhere.try_lead()
    finally:
        elsewhere.release()


def _terminate_and_wait_until_freed(url: str, key: int) -> None:
    with psycopg.connect(store_of(url).conninfo(), autocommit=True) as conn:
        terminate_holder(conn, key)
        deadline = time.monotonic() + 60  # the server frees the lock as the backend exits
        while lock_holder(conn, key) is not None:
            assert time.monotonic() < deadline
            time.sleep(0.01)


def test_leadership_is_lost_with_the_session(
    postgres_url: str, elections: list[PostgresLeaderElection]
) -> None:
    leader, standby, _ = elections
    assert leader.try_lead()
    _terminate_and_wait_until_freed(postgres_url, leader.key)

    assert standby.try_lead()
    assert not leader.try_lead()  # its dead session replaced at once, as a standby
    assert not leader.is_leader


def test_a_leader_whose_idle_session_died_leads_again_without_a_failed_check(
    postgres_url: str, elections: list[PostgresLeaderElection]
) -> None:
    leader, standby, _ = elections
    assert leader.try_lead()
    _terminate_and_wait_until_freed(postgres_url, leader.key)

    assert leader.try_lead()
    assert not standby.try_lead()
    with psycopg.connect(store_of(postgres_url).conninfo()) as conn:
        assert lock_holder(conn, leader.key) is not None


def test_a_store_that_does_not_answer_fails_the_check_and_gives_leadership_up(
    postgres_url: str, elections: list[PostgresLeaderElection]
) -> None:
    leader = elections[0]
    assert leader.try_lead()
    _terminate_and_wait_until_freed(postgres_url, leader.key)
    leader.conninfo += " port=1"  # nothing listens there: the fresh session fails too

    with pytest.raises(psycopg.OperationalError):
        leader.try_lead()
    assert not leader.is_leader


def test_policy_run_does_nothing_while_a_worker_leads(
    postgres_url: str, elections: list[PostgresLeaderElection]
) -> None:
    settings = load_settings(database_url=postgres_url)
    app = typer.Typer()
    register(app, lambda: (build_ledger(settings), RecordingRuntime(), settings))
    runner = CliRunner()
    assert elections[0].try_lead()

    refused = runner.invoke(app, ["policy", "run"])
    dry = runner.invoke(app, ["policy", "run", "--dry-run"])
    elections[0].release()
    ran = runner.invoke(app, ["policy", "run"])

    assert (refused.exit_code, refused.stderr) == (
        1,
        "error: conflict: a worker leads pool default: nothing done\n",
    )
    assert (dry.exit_code, dry.stdout) == (0, "no decisions\n")
    assert (ran.exit_code, ran.stdout) == (0, "no decisions\n")
