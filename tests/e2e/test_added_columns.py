"""A store made before a column was added gains it at the next start, on every backend:
the command side's ``drained`` (slot index) and the read models' ``drained`` and
``drain_scope`` (``slot_status``). Simulated by dropping the columns from a store made
now, then using it through the installed console script."""

from __future__ import annotations

import json
import sqlite3
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import psycopg

from tests.blackbox import run_cli

ADDED = ("drained", "drain_scope")


def _drop_added_columns(database_url: str) -> int:
    """Drop the added columns wherever they are; how many were dropped."""
    dropped = 0
    if database_url.startswith("sqlite:///"):
        ledger = Path(database_url.removeprefix("sqlite:///"))
        for path in (ledger, ledger.with_suffix(".views.db")):
            with sqlite3.connect(path) as conn:
                tables = [
                    r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")
                ]
                for table in tables:
                    for row in conn.execute(f'PRAGMA table_info("{table}")').fetchall():
                        if row[1] in ADDED:
                            conn.execute(f'ALTER TABLE "{table}" DROP COLUMN {row[1]}')
                            dropped += 1
        return dropped
    schema = parse_qs(urlsplit(database_url).query)["schema"][0]
    base = database_url.split("?", 1)[0]
    with psycopg.connect(base, autocommit=True) as conn:
        rows = conn.execute(
            "SELECT table_name, column_name FROM information_schema.columns "
            "WHERE table_schema = %s AND column_name = ANY(%s)",
            (schema, list(ADDED)),
        ).fetchall()
        for table, column in rows:
            conn.execute(f'ALTER TABLE "{schema}"."{table}" DROP COLUMN {column}')
            dropped += 1
    return dropped


def test_an_earlier_store_gains_the_added_columns(database_url: str, tmp_path: Path) -> None:
    env = {"LEDGER_DATABASE_URL": database_url}

    def cli(*args: str) -> list[Any]:
        done = run_cli(*args, "--json", env=env, cwd=tmp_path)
        assert done.returncode == 0, done.stdout + done.stderr
        return [json.loads(line) for line in done.stdout.splitlines()]

    cli("provision", "--count", "2")
    cli("stats")  # the read models exist and are caught up
    assert _drop_added_columns(database_url) == 3  # the index's one, the read models' two

    cli("drain", "pool-bot-001", "--reason", "disk failing")
    assert [row["drained"] for row in cli("slots")] == [True, False]
    [acquired] = cli("acquire", "bot-1")
    assert acquired["slot"] == "pool-bot-002"
    drained = cli("audit", "--type", "SlotDrained")
    assert [row["reason"] for row in drained] == ["disk failing"]
    assert cli("stats")[0]["total"] == 2
