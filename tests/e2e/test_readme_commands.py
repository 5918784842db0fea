"""README.md as a test: every ``slotledger`` command and option it shows exists in the
installed console script, every command the script has is in the README's CLI table, the
examples run against a demo store, and the ``make`` targets it names are in the Makefile.

The README is parsed, not copied: a command added to the table (or its examples) without
being registered, or registered without being documented, fails here.
"""

from __future__ import annotations

import functools
import json
import re
import shlex
import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

from ledger.bootstrap import build_ledger, build_read_models
from ledger.settings import load_settings
from projections.bundle import export
from tests.blackbox import Cluster, run_cli

ROOT = Path(__file__).parents[2]
README = (ROOT / "README.md").read_text(encoding="utf-8")
MAKEFILE = (ROOT / "Makefile").read_text(encoding="utf-8")
PROGRAM = "slotledger"
LONG_RUNNING = frozenset({"serve", "worker", "fake-coolify"})
"""Commands that run until stopped: the examples only ask them for ``--help``."""
WIDE = {"COLUMNS": "200"}
"""Help panels wide enough that no option or command name is cut."""

_FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.MULTILINE | re.DOTALL)
_SHELL_FENCE = re.compile(r"^```(?:sh|bash|shell)\n(.*?)^```", re.MULTILINE | re.DOTALL)
_CODE_SPAN = re.compile(r"`([^`\n]+)`")
_CELL = re.compile(r"(?<!\\)\|")
_WORD = re.compile(r"[a-z][a-z-]*")
_OPTION = re.compile(r"--[a-z][a-z0-9-]*")
_PANEL = re.compile(r"^╭─ (.+?) ─")
_ROW = re.compile(r"^│ {1,4}(?:\* +)?(\S+(?: +--\S+)?)")
"""A help panel's row: its first names (``--deploy  --no-deploy``, ``run``), not the
continuation lines of a description (indented further)."""
_MAKE = re.compile(r"\bmake ([a-z][a-z-]*)")


@dataclass(frozen=True)
class Usage:
    """One command line as the README shows it: the command words, and its options."""

    words: tuple[str, ...]
    options: frozenset[str]
    shown: str


def usage(text: str) -> Usage:
    """``policy run [--dry-run]`` -> words (policy, run), options {--dry-run}; the words
    end at the first option or placeholder (``SLOT``, ``T\\|POS``, ``…``)."""
    tokens = [t for t in re.split(r"[\s\[\]|\\/]+", text) if t]
    if tokens and tokens[0] == PROGRAM:
        tokens = tokens[1:]
    words: list[str] = []
    for token in tokens:
        if not _WORD.fullmatch(token):
            break
        words.append(token)
    return Usage(tuple(words), frozenset(t for t in tokens if _OPTION.fullmatch(t)), text)


def cli_table(markdown: str) -> list[list[str]]:
    """The code spans of the first cell of each row of the table headed ``| command |``."""
    lines = markdown.splitlines()
    start = lines.index("| command | what it does |") + 2
    rows = []
    for line in lines[start:]:
        if not line.startswith("|"):
            break
        rows.append(_CODE_SPAN.findall(_CELL.split(line)[1]))
    return rows


def prose(markdown: str) -> str:
    return _FENCE.sub("", markdown)


def examples(markdown: str) -> list[str]:
    """Every line of a shell code block (```sh) that runs the program, in the README's
    order; blocks of printed output (```text) are not commands."""
    return [
        line.strip()
        for block in _SHELL_FENCE.findall(markdown)
        for line in block.splitlines()
        if line.strip().startswith(PROGRAM + " ")
    ]


def documented_usages() -> list[Usage]:
    """The CLI table's usages, and every inline mention of one of its commands."""
    table = [usage(span) for row in cli_table(README) for span in row]
    commands = {u.words[0] for u in table}
    inline = [usage(span) for span in _CODE_SPAN.findall(prose(README))]
    mentioned = [
        u for u in inline if u.shown.startswith(PROGRAM) or (u.words and u.words[0] in commands)
    ]
    return list({u.shown: u for u in table + mentioned}.values())


@functools.cache
def help_of(words: tuple[str, ...]) -> subprocess.CompletedProcess[str]:
    return run_cli(*words, "--help", env=WIDE)


def panels(help_text: str) -> dict[str, set[str]]:
    """The names in each panel of a rich help screen: {"Options": {"--json", ...}, ...}."""
    found: dict[str, set[str]] = {}
    names: set[str] = set()
    for line in help_text.splitlines():
        if title := _PANEL.match(line):
            names = found.setdefault(title.group(1), set())
        elif row := _ROW.match(line):
            names.update(row.group(1).split())
    return found


def checked_help(words: tuple[str, ...]) -> dict[str, set[str]]:
    done = help_of(words)
    shown = " ".join((PROGRAM, *words))
    assert done.returncode == 0, f"`{shown} --help` exited {done.returncode}:\n{done.stderr}"
    assert f"Usage: {shown} " in done.stdout, done.stdout
    return panels(done.stdout)


def test_the_readme_is_parsed() -> None:
    """A parser that finds nothing would make the tests below pass vacuously."""
    words = {u.words for u in documented_usages()}
    assert {("history",), ("audit",), ("import",), ("policy", "run"), ("serve",)} <= words
    assert any(u.options == {"--log-json"} for u in documented_usages())  # inline in prose
    assert len(examples(README)) >= 10
    assert usage(r"replay [--until T\|POS --into X]") == Usage(
        ("replay",), frozenset({"--until", "--into"}), r"replay [--until T\|POS --into X]"
    )
    assert panels(help_of(("policy",)).stdout)["Commands"] == {"run"}


@pytest.mark.parametrize("shown", [pytest.param(u, id=u.shown) for u in documented_usages()])
def test_every_command_and_option_the_readme_shows_is_in_the_cli(shown: Usage) -> None:
    for depth in range(len(shown.words) + 1):  # `policy --help`, then `policy run --help`
        names = checked_help(shown.words[:depth])
    missing = shown.options - names.get("Options", set())
    assert not missing, f"`{shown.shown}`: the CLI has no {sorted(missing)}"


def test_every_command_of_the_cli_is_in_the_readme_table() -> None:
    documented = {u.words for row in cli_table(README) for u in map(usage, row)}
    commands = checked_help(())["Commands"]
    assert commands, "no commands in `slotledger --help`"
    for command in sorted(commands):
        subcommands = checked_help((command,)).get("Commands", set())
        paths: set[tuple[str, ...]] = {(command, sub) for sub in subcommands} or {(command,)}
        assert paths <= documented, f"not in README's CLI table: {sorted(paths - documented)}"


@pytest.fixture
def demo_store(tmp_path: Path, sqlite_url: str) -> dict[str, str]:
    """A SQLite store with three slots, some acquire/release history, a slot still held,
    and an exported bundle (``incident.ndjson``) in the working directory. Made in this
    process, to start fewer: only the README's commands go through the console script."""
    ledger = build_ledger(load_settings(database_url=sqlite_url))
    models = build_read_models(load_settings(database_url=sqlite_url), ledger)
    try:
        for _ in range(3):
            ledger.provision("bot", ctx=ledger.context("operator"))
        for bot in ("demo-1", "demo-2"):
            ledger.acquire(bot)
            ledger.release(bot)
        ledger.acquire("demo-3")
        models.catch_up()
        bundle = [json.dumps(record) + "\n" for record in export(models, bot="demo-1")]
    finally:
        models.close()
        ledger.close()
    assert bundle
    (tmp_path / "incident.ndjson").write_text("".join(bundle), encoding="utf-8")
    return Cluster(tmp_path).env(sqlite_url, None, LEDGER_COOLIFY_TOKEN="readme-token", **WIDE)


def test_the_readme_examples_run_on_a_demo_store(
    demo_store: dict[str, str], tmp_path: Path
) -> None:
    failed = []
    for line in examples(README):
        args = shlex.split(line, comments=True)[1:]
        if args and args[0] in LONG_RUNNING:
            args.append("--help")
        target = None
        if ">" in args:
            at = args.index(">")
            args, target = args[:at], tmp_path / args[at + 1]
        done = run_cli(*args, env=demo_store, cwd=tmp_path)
        if target is not None:
            target.write_text(done.stdout, encoding="utf-8")
        if done.returncode != 0:
            failed.append(f"{line}\n  exit {done.returncode}: {done.stderr.strip()}")
    assert not failed, "README examples that fail:\n" + "\n".join(failed)


def test_the_make_targets_the_readme_names_exist() -> None:
    named = set(_MAKE.findall(README))
    targets = set(re.findall(r"^([a-z][a-z-]*):", MAKEFILE, re.MULTILINE))
    assert {"run", "test", "bench", "lint"} <= named
    assert named <= targets, f"README names make targets the Makefile lacks: {named - targets}"
