"""Read-side commands for the ``slotledger`` CLI: replay, history, audit, at, diff, export,
import, and ``parked`` (the events the log's consumers could not take: list, retry,
skip). ``ledger.cli`` calls ``register(app, get_context)`` to add them to the one app.

Tables by default (rich), NDJSON with ``--json``; "nothing found" is exit 0 with a
message on stderr, a bad argument is exit 2 with one line.
"""

from __future__ import annotations

import functools
import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from datetime import UTC, datetime
from typing import Annotated, Any, ParamSpec, Protocol, TypeVar

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn
from rich.table import Table

from ledger.adapters.coolify import CoolifyClient
from ledger.adapters.descriptions import DescriptionMirror
from ledger.adapters.logs import TransitionLog
from ledger.application import SlotLedger
from ledger.bootstrap import build_follower, build_mirror, import_bundle
from ledger.entrypoints.cli.output import failing_cleanly
from ledger.errors import BadInput, SlotLedgerError
from ledger.loops import describe_error
from ledger.settings import Settings
from projections.bundle import export
from projections.engine.follower import TrackedConsumer
from projections.engine.follower import log as follower_log
from projections.engine.readmodels import ReadModels
from projections.inputs import parse_instant, parse_until
from projections.jsonable import encode
from projections.models.records import ParkedEvent, ParkedStatus
from projections.models.records import Progress as ProgressReport

__all__ = ["ReadSideContext", "caught_up", "register"]

P = ParamSpec("P")
R = TypeVar("R")

Replayed = Annotated[
    str | None,
    typer.Option("--models", help="query what `replay --into` built in this schema or file"),
]
JSONOutput = Annotated[bool, typer.Option("--json", help="NDJSON output")]
ConsumerOption = Annotated[
    str | None, typer.Option("--consumer", help="only this consumer's, e.g. read-models")
]


class ReadSideContext(Protocol):
    """What the commands need from the CLI's context: the read models; the ledger, the
    settings and Coolify to retry the parked events of the description mirror and the
    transition log."""

    @property
    def ledger(self) -> SlotLedger: ...

    @property
    def read_models(self) -> ReadModels: ...

    @property
    def settings(self) -> Settings: ...

    @property
    def coolify(self) -> CoolifyClient: ...


class StillParked(SlotLedgerError):
    """A retried parked event failed again: it stays parked, with the new error."""

    code = "still_parked"
    http_status = 409


def _fail_cleanly(command: Callable[P, R]) -> Callable[P, R]:
    """Errors print and exit as every command's do (``ledger.output.failing_cleanly``)."""

    @functools.wraps(command)
    def run(*args: P.args, **kwargs: P.kwargs) -> R:
        with failing_cleanly():
            return command(*args, **kwargs)

    return run


def _instant(text: str | None) -> datetime | None:
    return None if text is None else parse_instant(text)


def _ndjson(records: Iterable[Any]) -> None:
    for record in records:
        typer.echo(json.dumps(record, default=encode))


def _nothing(message: str) -> None:
    typer.echo(message, err=True)


def _when(at: datetime | None) -> str:
    return "" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S.%f")[:-3]


def _duration(seconds: float) -> str:
    minutes, s = divmod(seconds, 60)
    hours, m = divmod(int(minutes), 60)
    return f"{hours}h{m:02d}m{s:06.3f}s" if hours else f"{m}m{s:06.3f}s" if m else f"{s:.3f}s"


def _table(title: str, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> None:
    table = Table(title=title)
    for column in columns:
        table.add_column(column, no_wrap=True)
    for row in rows:
        table.add_row(*("" if v is None else str(v) for v in row))
    console = Console()
    if not console.is_terminal:  # piped: no terminal width to fit, so nothing to truncate
        console = Console(width=max(console.width, 240))
    console.print(table)


def _rebuild_progress(console: Console) -> tuple[Progress, Callable[[ProgressReport], None]]:
    bar = Progress(
        TextColumn("[bold]projecting"),
        BarColumn(),
        MofNCompleteColumn(),
        TextColumn("{task.fields[rate]:>10,.0f} events/s"),
        TimeElapsedColumn(),
        console=console,
    )
    task = bar.add_task("replay", total=None, rate=0.0)

    def report(p: ProgressReport) -> None:
        bar.update(task, completed=p.events, total=p.total, rate=p.rate)

    return bar, report


def caught_up(models: ReadModels, *, warn: bool = True) -> ReadModels:
    """The live models brought up to the log's head by the follower's own rounds, so an
    event they cannot take is parked here exactly as a server would park it, and the
    command answers without it. The follower's log lines are a server's; a command says
    it in one line on stderr (unless ``warn`` is off: ``parked`` lists them anyway)."""
    level = follower_log.level
    follower_log.setLevel(logging.CRITICAL)
    try:
        build_follower(models).catch_up()
    finally:
        follower_log.setLevel(level)
    if warn and (missed := models.parked_counts().get(models.CONSUMER, 0)):
        typer.echo(
            f"warning: {missed} event(s) parked: the read models leave them out "
            "(see `slotledger parked`)",
            err=True,
        )
    return models


def register(app: typer.Typer, get_context: Callable[[], ReadSideContext]) -> None:
    """Add the read-side commands to ``app``; ``get_context`` is called once per command."""

    def models(replayed: str | None) -> ReadModels:
        """The live models, caught up with the log; or what a replay built, as it is."""
        read_models = get_context().read_models
        if replayed is not None:
            return read_models.replayed(replayed)
        return caught_up(read_models)

    @app.command("replay")
    @_fail_cleanly
    def replay(
        until: Annotated[
            str | None, typer.Option(help="ISO timestamp or log position to stop at")
        ] = None,
        into: Annotated[
            str | None, typer.Option(help="schema (PostgreSQL) or file (SQLite) to build into")
        ] = None,
    ) -> None:
        """Rebuild every read model from the log beside the live ones, then swap; with
        --into, build them (as of --until) somewhere else instead."""
        if until is not None and into is None:
            raise BadInput("--until needs --into: the live models always follow the whole log")
        read_models = get_context().read_models
        bar, report = _rebuild_progress(Console(stderr=True))
        if into is not None:
            with bar:
                target = read_models.replay(parse_until(until) if until else None, into, report)
            typer.echo(f"built the read models into {into}, up to log position {target.position()}")
            target.close()
            return
        started = datetime.now(UTC)
        with bar:
            events = read_models.rebuild(report)
        seconds = (datetime.now(UTC) - started).total_seconds()
        typer.echo(
            f"rebuilt the read models from {events:,} events in {seconds:.1f}s "
            f"({events / max(seconds, 1e-9):,.0f} events/s) and swapped them in"
        )

    @app.command("history")
    @_fail_cleanly
    def history(
        slot: Annotated[str, typer.Argument(help="slot id or name")],
        json_: JSONOutput = False,
        replayed: Replayed = None,
    ) -> None:
        """A slot's timeline: every status it was in, from when, for how long."""
        result = models(replayed).history(slot)
        if result.slot is None:
            _nothing(f"no slot {slot!r} in the read models")
            return
        now = datetime.now(UTC)
        if json_:
            _ndjson({**i._asdict(), "seconds": i.seconds(now)} for i in result.intervals)
            return
        s = result.slot
        _table(
            f"{s.name} ({s.slot_id}) {s.status.value}{' retired' if s.retired else ''}",
            ["from", "to", "status", "time", "bot", "positions"],
            (
                (
                    _when(i.from_ts),
                    _when(i.to_ts) or "(now)",
                    i.status.value,
                    _duration(i.seconds(now)),
                    i.bot_id,
                    f"{i.from_position}-{i.to_position or ''}",
                )
                for i in result.intervals
            ),
        )
        totals = ", ".join(f"{k.value} {_duration(v)}" for k, v in result.time_in_status.items())
        typer.echo(f"time in status: {totals}")

    @app.command("audit")
    @_fail_cleanly
    def audit(
        slot: Annotated[str | None, typer.Option(help="slot id or name")] = None,
        bot: Annotated[str | None, typer.Option(help="bot id")] = None,
        type_: Annotated[
            str | None, typer.Option("--type", help="event type, e.g. SlotFailed")
        ] = None,
        since: Annotated[str | None, typer.Option(help="ISO timestamp")] = None,
        until: Annotated[str | None, typer.Option(help="ISO timestamp")] = None,
        limit: Annotated[int, typer.Option(help="most events to show")] = 1000,
        slots: Annotated[bool, typer.Option("--slots", help="which slots --bot used")] = False,
        failures: Annotated[
            bool, typer.Option("--failures", help="failures in the window, with reasons")
        ] = False,
        json_: JSONOutput = False,
        replayed: Replayed = None,
    ) -> None:
        """Events by slot, bot, type and time window; or a bot's slots; or failures."""
        start, end = _instant(since), _instant(until)
        read_models = models(replayed)
        if slots:
            if bot is None:
                raise BadInput("--slots needs --bot")
            leases = read_models.slots_of_bot(bot)
            if not leases:
                return _nothing(f"bot {bot!r} never held a slot")
            if json_:
                return _ndjson(vars(lease) for lease in leases)
            return _table(
                f"slots used by {bot}",
                ["slot", "acquired", "ended", "ended by", "position"],
                (
                    (
                        lease.slot_name or lease.slot_id,
                        _when(lease.acquired_at),
                        _when(lease.ended_at),
                        lease.ended_by or "(holding)",
                        lease.acquired_position,
                    )
                    for lease in leases
                ),
            )
        if failures:
            found = read_models.failures(start, end, limit=limit)
            if not found:
                return _nothing("no failures in that window")
            if json_:
                return _ndjson(vars(f) for f in found)
            return _table(
                "failures",
                ["at", "slot", "type", "code", "reason", "bot", "actor", "position"],
                (
                    (
                        _when(f.occurred_at),
                        f.slot_name or f.slot_id,
                        f.type,
                        f.reason_code,
                        f.reason,
                        f.bot_id,
                        f.actor,
                        f.position,
                    )
                    for f in found
                ),
            )
        records = read_models.audit(
            slot=slot, bot=bot, type=type_, since=start, until=end, limit=limit
        )
        if not records:
            return _nothing("no events match")
        if json_:
            return _ndjson({**r._asdict(), "data": r.fields} for r in records)
        return _table(
            "events",
            ["position", "at", "type", "slot", "bot", "actor", "correlation", "reason"],
            (
                (
                    r.position,
                    _when(r.occurred_at),
                    r.type,
                    r.slot_id,
                    r.bot_id,
                    r.actor,
                    r.correlation_id,
                    r.reason,
                )
                for r in records
            ),
        )

    @app.command("at")
    @_fail_cleanly
    def at(
        instant: Annotated[str, typer.Argument(help="ISO timestamp")],
        json_: JSONOutput = False,
        replayed: Replayed = None,
    ) -> None:
        """Every slot's status and the pool's stats at an instant."""
        snapshot = models(replayed).pool_at(parse_instant(instant))
        stats = snapshot.stats.as_dict()
        if json_:
            _ndjson(vars(s) for s in snapshot.slots)
            return _ndjson([{"at": snapshot.at, "pool": snapshot.pool, "stats": stats}])
        if not snapshot.slots:
            _nothing(f"pool {snapshot.pool} had no slots at {snapshot.at.isoformat()}")
        else:
            _table(
                f"pool {snapshot.pool} at {_when(snapshot.at)}",
                ["slot", "status", "since", "bot"],
                ((s.name, s.status.value, _when(s.since), s.bot_id) for s in snapshot.slots),
            )
        typer.echo(" ".join(f"{k}={v}" for k, v in stats.items()))

    @app.command("diff")
    @_fail_cleanly
    def diff(
        t1: Annotated[str, typer.Argument(help="ISO timestamp")],
        t2: Annotated[str, typer.Argument(help="ISO timestamp")],
        json_: JSONOutput = False,
        replayed: Replayed = None,
    ) -> None:
        """What changed per slot between two instants."""
        changes = models(replayed).diff(parse_instant(t1), parse_instant(t2))
        if not changes:
            return _nothing("nothing changed between those instants")
        if json_:
            return _ndjson(vars(c) for c in changes)
        return _table(
            f"changes {t1} -> {t2}",
            ["slot", "before", "after", "bot before", "bot after", "events"],
            (
                (
                    c.name,
                    (c.before and c.before.value) or "-",
                    (c.after and c.after.value) or "-",
                    c.bot_before,
                    c.bot_after,
                    c.events,
                )
                for c in changes
            ),
        )

    @app.command("export")
    @_fail_cleanly
    def export_(
        slot: Annotated[str | None, typer.Option(help="slot id or name")] = None,
        bot: Annotated[str | None, typer.Option(help="bot id")] = None,
        since: Annotated[str | None, typer.Option(help="ISO timestamp")] = None,
        until: Annotated[str | None, typer.Option(help="ISO timestamp")] = None,
    ) -> None:
        """Write an incident bundle (NDJSON) of every related event to stdout."""
        records = export(
            models(None), slot=slot, bot=bot, since=_instant(since), until=_instant(until)
        )
        count = 0
        for record in records:
            typer.echo(json.dumps(record))
            count += 1
        if not count:
            _nothing("no events match: the bundle is empty")

    @app.command("import")
    @_fail_cleanly
    def import_(
        bundle: Annotated[str, typer.Argument(help="NDJSON bundle file, or - for stdin")],
        into: Annotated[str, typer.Option(help="new SQLite file for the local ledger")],
    ) -> None:
        """Load an incident bundle into a new local SQLite ledger."""
        try:
            with sys.stdin if bundle == "-" else open(bundle, encoding="utf-8") as lines:
                result = import_bundle(lines, into)
        except OSError as e:
            raise BadInput(f"cannot read {bundle}: {e.strerror}") from None
        typer.echo(
            f"imported {result.events} events of {result.aggregates} aggregates into "
            f"{result.path}; use LEDGER_DATABASE_URL=sqlite:///{result.path}"
        )

    register_parked(app, get_context)


def _retried_consumer(context: ReadSideContext, name: str) -> TrackedConsumer[SlotLedger]:
    """The consumer that parked an event, built to take it again in this process."""
    if name == DescriptionMirror.name:
        return build_mirror(context.settings, context.ledger, context.coolify)
    if name == TransitionLog.name:
        return TransitionLog(context.ledger)
    raise BadInput(f"no retry for consumer {name!r}: skip its events instead")


def _retry(context: ReadSideContext, entries: Sequence[ParkedEvent]) -> list[str]:
    """Reprocess parked events into their consumers; the errors of those that failed
    again (they stay parked, with that error). The read models take theirs back through
    a rebuild, which replays the log in order: applying an old event on top of the
    models' later state would be wrong."""
    models = context.read_models
    failed: list[str] = []
    ours = [e for e in entries if e.consumer == models.CONSUMER]
    if ours:
        try:
            models.rebuild(retry=[e.position for e in ours])
        except Exception as e:
            failed += [_still_parked(models, entry, e) for entry in ours]
        else:
            for entry in ours:
                models.resolve_parked(entry, ParkedStatus.RETRIED)
    for entry in entries:
        if entry.consumer == models.CONSUMER:
            continue
        consumer = _retried_consumer(context, entry.consumer)
        notification = models.ledger.recorder.select_notifications(entry.position, 1)[0]
        try:
            consumer.retry((entry.position, models.ledger.mapper.to_domain_event(notification)))
        except Exception as e:
            failed.append(_still_parked(models, entry, e))
        else:
            models.resolve_parked(entry, ParkedStatus.RETRIED)
    return failed


def _still_parked(models: ReadModels, entry: ParkedEvent, error: Exception) -> str:
    again = entry._replace(error=describe_error(error), attempts=entry.attempts + 1)
    models.park(again)
    return f"{entry.consumer} event {entry.position}: {again.error}"


def register_parked(app: typer.Typer, get_context: Callable[[], ReadSideContext]) -> None:
    """``parked`` (list), ``parked retry POS|--all`` and ``parked skip POS``."""
    parked = typer.Typer(
        help="Events a consumer of the log could not take and went on past.",
        invoke_without_command=True,
    )

    def chosen(position: int | None, every: bool, consumer: str | None) -> list[ParkedEvent]:
        if (position is None) == (not every):
            raise BadInput("give a log position or --all, not both")
        entries = get_context().read_models.parked(position)
        entries = [e for e in entries if consumer in (None, e.consumer)]
        if not entries:
            raise BadInput(
                "no parked events" if position is None else f"no parked event at {position}"
            )
        return entries

    @parked.callback()
    @_fail_cleanly
    def listing(context: typer.Context, json_: JSONOutput = False) -> None:
        """List the parked events: consumer, position, topic, error, attempts, when."""
        if context.invoked_subcommand is not None:
            return
        entries = caught_up(get_context().read_models, warn=False).parked()
        if not entries:
            return _nothing("no parked events")
        if json_:
            return _ndjson(e._asdict() for e in entries)
        return _table(
            "parked events",
            ["position", "consumer", "topic", "error", "attempts", "parked at"],
            (
                (e.position, e.consumer, e.topic, e.error, e.attempts, _when(e.parked_at))
                for e in entries
            ),
        )

    @parked.command("retry")
    @_fail_cleanly
    def retry(
        position: Annotated[int | None, typer.Argument(help="log position")] = None,
        every: Annotated[bool, typer.Option("--all", help="every parked event")] = False,
        consumer: ConsumerOption = None,
    ) -> None:
        """Reprocess parked events into their consumers (after a fix); those that fail
        again stay parked (exit 1)."""
        entries = chosen(position, every, consumer)
        failed = _retry(get_context(), entries)
        typer.echo(f"retried {len(entries) - len(failed)} of {len(entries)} parked event(s)")
        if failed:
            raise StillParked("still parked: " + "; ".join(failed))

    @parked.command("skip")
    @_fail_cleanly
    def skip(
        position: Annotated[int, typer.Argument(help="log position")],
        consumer: ConsumerOption = None,
    ) -> None:
        """Accept that a parked event is never taken: it no longer counts as parked."""
        models = get_context().read_models
        for entry in chosen(position, False, consumer):
            models.resolve_parked(entry, ParkedStatus.SKIPPED)
            typer.echo(f"skipped event {entry.position} for {entry.consumer}")

    app.add_typer(parked, name="parked")
