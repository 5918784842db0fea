"""Shared fixtures: real stores for integration tests.

PostgreSQL: the server at 127.0.0.1:5432 when it answers (``LEDGER_TEST_POSTGRES_URL``
overrides), else a throwaway cluster from the local binaries (initdb + pg_ctl, run as
``postgres`` under root, which PostgreSQL refuses to run as), else the
Postgres tests skip loudly, except under ``CI=true``, where they fail instead.
Each test gets a schema of its own, dropped afterwards.
"""

from __future__ import annotations

import os
import shutil
import tempfile
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import psycopg
import pytest

DEFAULT_PG_URL = "postgresql://postgres@127.0.0.1:5432/test"


def _answers(url: str) -> bool:
    try:
        with psycopg.connect(url, connect_timeout=3):
            return True
    except psycopg.Error:
        return False


def _throwaway_cluster(tmp: Path) -> tuple[str, Callable[[], None]] | None:
    """Start a private cluster from the local PostgreSQL binaries, if there are any."""
    from tests.faults.cluster import Cluster, pg_bin

    bin_dir = pg_bin()
    if bin_dir is None:
        return None
    cluster = Cluster(bin_dir, tmp)
    cluster.init()
    cluster.start()
    with psycopg.connect(cluster.url(), autocommit=True) as conn:
        conn.execute("CREATE DATABASE test")
    return cluster.url("test"), lambda: cluster.stop(check=False)


@pytest.fixture(scope="session")
def postgres_base_url() -> Iterator[str]:
    url = os.environ.get("LEDGER_TEST_POSTGRES_URL", DEFAULT_PG_URL)
    if _answers(url):
        yield url
        return
    tmp = Path(tempfile.mkdtemp(prefix="slotledger-pg-"))
    started = None
    try:
        started = _throwaway_cluster(tmp)
    except Exception as e:
        reason = f"could not start a throwaway PostgreSQL cluster: {e}"
    else:
        reason = "no PostgreSQL server answers and no initdb/pg_ctl binaries were found"
    if started is None:
        message = f"PostgreSQL UNAVAILABLE at {url}: {reason}"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message + " (CI=true: Postgres tests must run)")
        pytest.skip(message)
    started_url, stop = started
    try:
        yield started_url
    finally:
        stop()
        shutil.rmtree(tmp, ignore_errors=True)


@pytest.fixture
def postgres_url(postgres_base_url: str) -> Iterator[str]:
    """A database URL whose ``schema`` is fresh for this test."""
    schema = f"t_{uuid.uuid4().hex[:12]}"
    with psycopg.connect(postgres_base_url, autocommit=True) as conn:
        conn.execute(f"CREATE SCHEMA {schema}")
    try:
        yield f"{postgres_base_url}?schema={schema}"
    finally:
        with psycopg.connect(postgres_base_url, autocommit=True) as conn:
            conn.execute(f"DROP SCHEMA IF EXISTS {schema} CASCADE")


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    return f"sqlite:///{tmp_path / 'ledger.db'}"


@pytest.fixture(params=["sqlite", "postgres"])
def database_url(request: pytest.FixtureRequest) -> str:
    """Both real stores, for contract tests."""
    if request.param == "sqlite":
        return str(request.getfixturevalue("sqlite_url"))
    return str(request.getfixturevalue("postgres_url"))


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """Commands under test (``serve``, ``worker``) configure logging for the process;
    put it back so later tests capture logs as pytest set them up."""
    import logging

    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
