"""Every command group's errors through the installed console script, printed by the one
output layer (``ledger.output``): exactly one line ``error: <code>: <detail>`` on stderr,
exit 2 for bad input or configuration, 1 for a refusal or a store that does not answer,
never a traceback."""

from __future__ import annotations

from pathlib import Path

import pytest

from ledger.bootstrap import build_ledger
from ledger.settings import load_settings
from tests.blackbox import free_port, run_cli

UNREACHABLE = f"postgresql://postgres@127.0.0.1:{free_port()}/test"
"""A PostgreSQL URL nobody listens on (the port was free a moment ago)."""

CASES = [
    # core commands (ledger/entrypoints/cli/core.py)
    pytest.param(["fail", "ghost", "--reason", "x"], {}, "slot_not_found", 2, id="core-bad-input"),
    pytest.param(["acquire", "bot-1"], {}, "bot_already_holds_slot", 1, id="core-refusal"),
    pytest.param(
        ["slots"], {"LEDGER_DATABASE_URL": UNREACHABLE}, "store_unavailable", 1, id="core-outage"
    ),
    # read side (ledger/entrypoints/cli/readside.py)
    pytest.param(["at", "yesterday"], {}, "bad_input", 2, id="read-side-bad-input"),
    pytest.param(["history", "UNKNOWN"], {}, "slot_not_found", 2, id="read-side-unknown-slot"),
    pytest.param(
        ["history", "x"],
        {"LEDGER_DATABASE_URL": UNREACHABLE},
        "store_unavailable",
        1,
        id="read-side-outage",
    ),
    pytest.param(
        ["audit"],
        {"LEDGER_DATABASE_URL": "mysql://nope"},
        "bad_configuration",
        2,
        id="read-side-bad-configuration",
    ),
    # service (serve.py) and policies (policy.py)
    pytest.param(
        ["stats"],
        {"LEDGER_DATABASE_URL": "mysql://nope"},
        "bad_configuration",
        2,
        id="stats-bad-configuration",
    ),
    pytest.param(
        ["stats"], {"LEDGER_DATABASE_URL": UNREACHABLE}, "store_unavailable", 1, id="stats-outage"
    ),
    pytest.param(
        ["policy", "run"],
        {"LEDGER_COOLIFY_TOKEN": ""},
        "bad_configuration",
        2,
        id="policy-bad-configuration",
    ),
    pytest.param(
        ["stats"],
        {"DEPLOYING_TIMEOUT": "5"},
        "bad_configuration",
        2,
        id="configuration-names-the-alias",
    ),
]


@pytest.mark.parametrize(("args", "env", "code", "exit_code"), CASES)
def test_errors_are_one_line_with_the_exit_code_of_their_kind(
    args: list[str],
    env: dict[str, str],
    code: str,
    exit_code: int,
    sqlite_url: str,
    tmp_path: Path,
) -> None:
    ledger = build_ledger(load_settings(database_url=sqlite_url))
    try:
        ledger.provision("bot", ctx=ledger.context("operator"))
        ledger.acquire("bot-1")
    finally:
        ledger.close()

    done = run_cli(*args, env={"LEDGER_DATABASE_URL": sqlite_url, **env}, cwd=tmp_path)

    assert done.returncode == exit_code, done.stderr
    lines = done.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), done.stderr
