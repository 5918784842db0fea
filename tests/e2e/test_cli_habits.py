"""The CLI as a person at a terminal uses it, through the installed console script: it
says which store it uses when that is not obvious and never makes an empty one by
accident, a dry run needs no Coolify token, tables fit 80 columns, unknown slots and
future instants are refused, help reads cleanly, configuration errors name the variable
the user set, and ``replay`` reports one count and one rate."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from ledger.bootstrap import build_ledger
from ledger.settings import load_settings
from tests.blackbox import run_cli

NARROW = {"COLUMNS": "80"}
UUID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")


@pytest.fixture
def no_store_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    """The commands run as in a fresh shell: no ``LEDGER_DATABASE_URL`` anywhere."""
    monkeypatch.delenv("LEDGER_DATABASE_URL", raising=False)


@pytest.fixture
def store(sqlite_url: str) -> Iterator[dict[str, str]]:
    """A SQLite store with history: three slots, a bot that came and went, one slot
    failed with a reason, one slot still deploying for ten minutes (stale for the
    policies), and the environment to reach it (no Coolify token at all)."""
    past = datetime.now(UTC) - timedelta(minutes=10)
    ledger = build_ledger(load_settings(database_url=sqlite_url), clock=lambda: past)
    try:
        operator = ledger.context("operator")
        names = [ledger.provision("bot", ctx=operator).slot.name for _ in range(3)]
        ledger.acquire("bot-gone")
        ledger.release("bot-gone")
        ledger.fail(ledger.resolve_slot(names[1]), "disk full", reason_code="operator")
        ledger.acquire("bot-stuck")
    finally:
        ledger.close()
    yield {"LEDGER_DATABASE_URL": sqlite_url, "LEDGER_COOLIFY_TOKEN": "", **NARROW}


def one_error_line(done: object, code: str) -> str:
    stderr: str = done.stderr  # type: ignore[attr-defined]
    lines = [line for line in stderr.splitlines() if line.startswith("error: ")]
    assert len(lines) == 1 and lines[0].startswith(f"error: {code}: "), stderr
    return lines[0]


# --- which store ----------------------------------------------------------------------


@pytest.mark.usefixtures("no_store_variable")
def test_read_commands_outside_the_project_folder_refuse_and_create_nothing(
    tmp_path: Path,
) -> None:
    default = tmp_path / ".slotledger" / "ledger.db"
    for args in (
        ["stats"],
        ["slots", "--json"],
        ["history", "pool-bot-001"],
        ["audit"],
        ["check"],
        ["policy", "run", "--dry-run"],
        ["parked"],
    ):
        done = run_cli(*args, cwd=tmp_path)
        assert done.returncode == 2, (args, done.stderr)
        line = one_error_line(done, "store_not_found")
        assert str(default) in line and "LEDGER_DATABASE_URL" in line, line
        assert done.stdout == "", (args, done.stdout)
    assert not (tmp_path / ".slotledger").exists()

    typo = tmp_path / "typo.db"
    done = run_cli("stats", env={"LEDGER_DATABASE_URL": f"sqlite:///{typo}"}, cwd=tmp_path)
    assert done.returncode == 2
    assert f"no store at {typo} (from LEDGER_DATABASE_URL)" in one_error_line(
        done, "store_not_found"
    )
    assert not typo.exists()


@pytest.mark.usefixtures("no_store_variable")
def test_the_default_store_is_named_on_stderr_but_never_with_json(tmp_path: Path) -> None:
    shown = f"store: sqlite:///{tmp_path / '.slotledger' / 'ledger.db'}"

    created = run_cli("provision", "--count", "2", cwd=tmp_path)  # creates it, on purpose
    assert created.returncode == 0, created.stderr
    assert created.stderr.splitlines() == [shown]
    assert "pool-bot-002" in created.stdout

    listed = run_cli("slots", cwd=tmp_path)
    assert listed.returncode == 0 and listed.stderr.splitlines() == [shown]

    as_json = run_cli("slots", "--json", cwd=tmp_path)
    assert as_json.returncode == 0 and as_json.stderr == ""
    assert [json.loads(line)["name"] for line in as_json.stdout.splitlines()] == [
        "pool-bot-001",
        "pool-bot-002",
    ]

    url = f"sqlite:///{tmp_path / '.slotledger' / 'ledger.db'}"
    named = run_cli("stats", env={"LEDGER_DATABASE_URL": url}, cwd=tmp_path)
    assert named.returncode == 0 and named.stderr == ""  # the user named it: obvious


# --- policies without Coolify ---------------------------------------------------------


def test_a_policy_dry_run_needs_no_coolify_token(store: dict[str, str], tmp_path: Path) -> None:
    planned = run_cli("policy", "run", "--dry-run", "--json", env=store, cwd=tmp_path)
    assert planned.returncode == 0, planned.stderr
    decisions = [json.loads(line) for line in planned.stdout.splitlines()]
    assert {(d["rule"], d["target"]) for d in decisions} >= {
        ("stale-deploying", "pool-bot-003"),
        ("error-recovery", "pool-bot-002"),
    }

    real = run_cli("policy", "run", env=store, cwd=tmp_path)
    assert real.returncode == 2
    assert "LEDGER_COOLIFY_TOKEN" in one_error_line(real, "bad_configuration")
    again = run_cli("policy", "run", "--dry-run", "--json", env=store, cwd=tmp_path)
    replanned = [json.loads(line) for line in again.stdout.splitlines()]
    assert [(d["rule"], d["target"], d["event"]) for d in replanned] == [
        (d["rule"], d["target"], d["event"]) for d in decisions
    ]  # neither run changed the ledger


# --- output ---------------------------------------------------------------------------


def test_check_json_prints_its_summary(store: dict[str, str], tmp_path: Path) -> None:
    done = run_cli("check", "--json", env=store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    [summary] = [json.loads(line) for line in done.stdout.splitlines()]
    assert summary == {
        "checked_events": summary["checked_events"],
        "acquisitions": 2,
        "violations": 0,
    }
    assert summary["checked_events"] > 6


def test_tables_fit_80_columns_with_names_and_short_times(
    store: dict[str, str], tmp_path: Path
) -> None:
    today = datetime.now(UTC) - timedelta(minutes=10)
    commands = [
        ["slots"],
        ["stats"],
        ["history", "pool-bot-002"],
        ["audit"],
        ["audit", "--failures"],
        ["audit", "--bot", "bot-gone", "--slots"],
        ["at", (today + timedelta(seconds=1)).isoformat()],
        ["diff", (today - timedelta(minutes=1)).isoformat(), datetime.now(UTC).isoformat()],
        ["policy", "run", "--dry-run"],
        ["check"],
    ]
    for args in commands:
        done = run_cli(*args, env=store, cwd=tmp_path)
        assert done.returncode == 0, (args, done.stderr)
        lines = done.stdout.splitlines()
        assert lines, args
        wide = [line for line in lines if len(line) > 80]
        assert not wide, (args, wide)
        assert "…" not in done.stdout, (args, done.stdout)
        assert not re.search(r"\d{4}-\d\d-\d\dT\d\d:", done.stdout), (args, done.stdout)

    audit = run_cli("audit", env=store, cwd=tmp_path).stdout
    assert "pool-bot-001" in audit and not UUID.search(audit), audit
    assert re.search(rf"^{today:%H:%M}:\d\d +pool-bot-001 +SlotProvisioned", audit, re.M), audit

    history = run_cli("history", "pool-bot-002", env=store, cwd=tmp_path).stdout
    header = next(line for line in history.splitlines() if line.startswith("from"))
    assert header.split() == ["from", "status", "for", "bot", "reason", "position"]
    assert re.search(r"^\d\d:\d\d:\d\d +error +\d+m\d\ds \(now\) +disk full", history, re.M), (
        history
    )


def test_unknown_slots_and_future_instants_exit_2(store: dict[str, str], tmp_path: Path) -> None:
    for args in (["history", "UNKNOWN"], ["audit", "--slot", "UNKNOWN"]):
        done = run_cli(*args, env=store, cwd=tmp_path)
        assert done.returncode == 2 and "UNKNOWN" in one_error_line(done, "slot_not_found")

    future = (datetime.now(UTC) + timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    for args in (["at", future], ["diff", "2025-01-01T00:00:00Z", future]):
        done = run_cli(*args, env=store, cwd=tmp_path)
        assert done.returncode == 2, done.stderr
        assert f"{future} is in the future" in one_error_line(done, "bad_input")


def test_replay_reports_one_count_and_one_rate(store: dict[str, str], tmp_path: Path) -> None:
    done = run_cli("replay", env=store, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    summary = re.search(
        r"from (\d+) events in ([\d.]+)s \(([\d,]+) events/s\) and swapped", done.stdout
    )
    assert summary, done.stdout
    frames = re.findall(r"(\d+)/(\d+) +([\d,]+) events/s +([\d.]+)s", done.stderr)
    assert frames, done.stderr
    events, total, rate, seconds = frames[-1]
    assert (events, total) == (summary[1], summary[1])
    assert (rate, seconds) == (summary[3], summary[2])


# --- help -----------------------------------------------------------------------------


def command_paths() -> list[tuple[str, ...]]:
    """Every command and sub-command of the installed script, from its own help: one
    level at a time, the help screens of a level fetched side by side."""
    found: list[tuple[str, ...]] = []
    level: list[tuple[str, ...]] = [()]
    with ThreadPoolExecutor(max_workers=4) as pool:
        while level:
            found += level
            helps = dict(zip(level, pool.map(help_of, level), strict=True))
            level = [
                (*path, name)
                for path, text in helps.items()
                for name in re.findall(r"^│ (\S+) ", commands_panel(text), re.M)
            ]
    return found


_HELP: dict[tuple[str, ...], str] = {}


def help_of(path: tuple[str, ...]) -> str:
    if path not in _HELP:
        done = run_cli(*path, "--help", env={"COLUMNS": "200"})
        assert done.returncode == 0, (path, done.stderr)
        _HELP[path] = done.stdout
    return _HELP[path]


def commands_panel(text: str) -> str:
    return text.partition("╭─ Commands")[2].partition("╰")[0]


@pytest.mark.timeout(900)  # one process per command: about 30 of them
def test_help_has_no_bool_metavars_and_no_sentence_broken_mid_line() -> None:
    """At 200 columns every paragraph of a description and every row of a panel fits on
    one line, so a second line could only be a break in the middle of a sentence."""
    paths = command_paths()
    assert ("policy", "run") in paths and ("parked", "retry") in paths and len(paths) > 20
    for path in paths:
        text = help_of(path)
        assert "<bool>" not in text, (path, text)
        description = text.partition("Usage:")[2].partition("╭")[0].strip("\n").splitlines()[1:]
        paragraphs = "\n".join(line.strip() for line in description).strip().split("\n\n")
        broken = [p for p in paragraphs if "\n" in p]
        assert not broken, (path, broken)
        rows = [line for line in text.splitlines() if line.startswith("│")]
        continued = [row for row in rows if re.match(r"^│ {9,}\S", row) and "[" not in row]
        assert not continued, (path, continued)
    assert "Usage: slotledger history [OPTIONS] {SLOT}" in help_of(("history",))


# --- configuration errors -------------------------------------------------------------


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("DEPLOYING_TIMEOUT", "5", "Input should be greater than or equal to 10"),
        ("LEDGER_DEPLOYING_TIMEOUT", "5", "Input should be greater than or equal to 10"),
        ("RETIRE_MODE", "shred", "Input should be 'delete' or 'quarantine'"),
    ],
)
def test_a_configuration_error_names_the_variable_the_user_set_once(
    store: dict[str, str], tmp_path: Path, variable: str, value: str, message: str
) -> None:
    done = run_cli("stats", env={**store, variable: value}, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [f"error: bad_configuration: {variable}: {message}"]


def test_a_configuration_error_from_dotenv_names_its_variable(
    store: dict[str, str], tmp_path: Path
) -> None:
    (tmp_path / ".env").write_text("RECOVERY_INTERVAL=0\n", encoding="utf-8")
    done = run_cli("stats", env=store, cwd=tmp_path)
    assert done.returncode == 2
    assert done.stderr.splitlines() == [
        "error: bad_configuration: RECOVERY_INTERVAL: Input should be greater than or equal to 1"
    ]
