"""Read-side commands for the ``slotledger`` CLI: replay, history, audit, at, diff, export,
import, and ``parked`` (the events the log's consumers could not take: list, retry,
skip). ``ledger.cli`` calls ``register(app, get_context)`` to add them to the one app.

Tables by default (``ledger.output``: short UTC times, slot names, 80 columns), NDJSON
with ``--json``; "nothing found" is exit 0 with a message on stderr, a bad argument
(an unknown slot, an instant in the future) is exit 2 with one line.
"""

from __future__ import annotations

import functools
import logging
import sys
import time
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Annotated, ParamSpec, Protocol, TypeVar
from uuid import UUID

import typer
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

from ledger.adapters.coolify import CoolifyClient
from ledger.adapters.descriptions import DescriptionMirror
from ledger.adapters.logs import TransitionLog
from ledger.application import SlotLedger
from ledger.bootstrap import build_follower, build_mirror, import_bundle
from ledger.entrypoints.cli.output import JsonOption, failing_cleanly, ndjson, note, table
from ledger.errors import BadInput, SlotLedgerError, SlotNotFound
from ledger.loops import describe_error
from ledger.settings import Settings
from projections.bundle import export
from projections.engine.follower import TrackedConsumer
from projections.engine.follower import log as follower_log
from projections.engine.readmodels import ReadModels
from projections.inputs import parse_instant, parse_until
from projections.models.records import ParkedEvent, ParkedStatus, SlotState
from projections.models.records import Progress as ProgressReport

__all__ = ["ReadSideContext", "caught_up", "register"]

P = ParamSpec("P")
R = TypeVar("R")

Replayed = Annotated[
    str | None,
    typer.Option("--models", help="query what `replay --into` built in this schema or file"),
]
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


def _past(text: str) -> datetime:
    """An instant the ledger can know: not after now (the pool's future is unknown)."""
    at, now = parse_instant(text), datetime.now(UTC)
    if at > now:
        raise BadInput(
            f"{text} is in the future (now is {now:%Y-%m-%dT%H:%M:%SZ}): the ledger knows "
            "the pool up to now; `slotledger slots` shows it as it is"
        )
    return at


def _known(models: ReadModels, ref: str) -> SlotState:
    """The slot named (by id or name) in the read models; exit 2 for an unknown one."""
    state = models.slot(ref)
    if state is None:
        raise SlotNotFound(f"no slot {ref!r} in pool {models.pool_name}'s read models")
    return state


def _duration(seconds: float) -> str:
    """``12.345s``, ``4m05s``, ``2h03m``: as precise as a person reads it."""
    if seconds < 60:
        return f"{seconds:.3f}s"
    minutes, s = divmod(int(seconds), 60)
    hours, m = divmod(minutes, 60)
    return f"{hours}h{m:02d}m" if hours else f"{m}m{s:02d}s"


class _Meter:
    """The progress bar of a rebuild or replay and its summary, from one count and one
    clock: the bar shows each batch's report, and ends on the count and rate the summary
    line prints."""

    def __init__(self, console: Console) -> None:
        self.bar = Progress(
            TextColumn("[bold]projecting"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("{task.fields[rate]:>10,.0f} events/s"),
            TextColumn("{task.fields[seconds]:.1f}s"),
            console=console,
        )
        self.task = self.bar.add_task("replay", total=None, rate=0.0, seconds=0.0)
        self.started = time.monotonic()
        self.events = 0

    def report(self, progress: ProgressReport) -> None:
        self.events = progress.events
        self._show(progress.events, progress.total)

    def finish(self, events: int) -> str:
        """The bar's last frame and the summary's words: ``628 events in 0.4s (1,716
        events/s)``."""
        seconds, rate = self._show(events, events)
        return f"{events:,} events in {seconds:.1f}s ({rate:,.0f} events/s)"

    def _show(self, events: int, total: int) -> tuple[float, float]:
        seconds = time.monotonic() - self.started
        rate = events / max(seconds, 1e-9)
        self.bar.update(self.task, completed=events, total=total, rate=rate, seconds=seconds)
        return seconds, rate


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
        note(
            f"warning: {missed} event(s) parked: the read models leave them out "
            "(see `slotledger parked`)"
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
        meter = _Meter(Console(stderr=True))
        if into is not None:
            with meter.bar:
                target = read_models.replay(
                    parse_until(until) if until else None, into, meter.report
                )
                summary = meter.finish(meter.events)
            typer.echo(
                f"built the read models into {into} from {summary}, "
                f"up to log position {target.position()}"
            )
            target.close()
            return
        with meter.bar:
            summary = meter.finish(read_models.rebuild(meter.report))
        typer.echo(f"rebuilt the read models from {summary} and swapped them in")

    @app.command("history")
    @_fail_cleanly
    def history(
        slot: Annotated[str, typer.Argument(help="slot id or name")],
        json_: JsonOption = False,
        replayed: Replayed = None,
    ) -> None:
        """A slot's timeline: every status it was in, from when, for how long, and why."""
        read_models = models(replayed)
        s = _known(read_models, slot)
        result = read_models.history(s.slot_id)
        now = datetime.now(UTC)
        if json_:
            return ndjson({**i._asdict(), "seconds": i.seconds(now)} for i in result.intervals)
        reasons = {e.position: e.reason for e in result.events}
        table(
            f"{s.name} {s.status.value}{' retired' if s.retired else ''} (id {s.slot_id})",
            ["from", "status", "for", "bot", "reason", "position"],
            (
                (
                    i.from_ts,
                    i.status,
                    _duration(i.seconds(now)) + ("" if i.to_ts else " (now)"),
                    i.bot_id,
                    reasons.get(i.from_position),
                    i.from_position,
                )
                for i in result.intervals
            ),
            wrap={"bot", "reason"},
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
        json_: JsonOption = False,
        replayed: Replayed = None,
    ) -> None:
        """Events by slot, bot, type and time window; or a bot's slots; or failures.

        The table names slots and leaves out ids and correlation ids: --json has them."""
        start, end = _instant(since), _instant(until)
        read_models = models(replayed)
        if slots:
            if bot is None:
                raise BadInput("--slots needs --bot")
            leases = read_models.slots_of_bot(bot)
            if not leases:
                return note(f"bot {bot!r} never held a slot")
            if json_:
                return ndjson(vars(lease) for lease in leases)
            return table(
                f"slots used by {bot}",
                ["slot", "acquired", "ended", "ended by", "position"],
                (
                    (
                        lease.slot_name or lease.slot_id,
                        lease.acquired_at,
                        lease.ended_at,
                        lease.ended_by or "(holding)",
                        lease.acquired_position,
                    )
                    for lease in leases
                ),
            )
        if failures:
            found = read_models.failures(start, end, limit=limit)
            if not found:
                return note("no failures in that window")
            if json_:
                return ndjson(vars(f) for f in found)
            return table(
                "failures",
                ["at", "slot", "type", "code", "bot", "actor", "reason"],
                (
                    (
                        f.occurred_at,
                        f.slot_name or f.slot_id,
                        f.type,
                        f.reason_code,
                        f.bot_id,
                        f.actor,
                        f.reason,
                    )
                    for f in found
                ),
                wrap={"bot", "actor", "reason"},
            )
        if slot is not None:
            _known(read_models, slot)
        records = read_models.audit(
            slot=slot, bot=bot, type=type_, since=start, until=end, limit=limit
        )
        if not records:
            return note("no events match")
        if json_:
            return ndjson({**r._asdict(), "data": r.fields} for r in records)
        names: dict[UUID | None, str] = {s.slot_id: s.name for s in read_models.slots()}
        return table(
            "events",
            ["at", "slot", "type", "bot", "actor", "reason"],
            (
                (
                    r.occurred_at,
                    names.get(r.slot_id, r.slot_id),
                    r.type,
                    r.bot_id,
                    r.actor,
                    r.reason,
                )
                for r in records
            ),
            wrap={"bot", "actor", "reason"},
        )

    @app.command("at")
    @_fail_cleanly
    def at(
        instant: Annotated[str, typer.Argument(help="ISO timestamp, not in the future")],
        json_: JsonOption = False,
        replayed: Replayed = None,
    ) -> None:
        """Every slot's status and the pool's stats at an instant.

        An instant in the future is refused (exit 2): the ledger knows the pool up to now."""
        snapshot = models(replayed).pool_at(_past(instant))
        stats = snapshot.stats.as_dict()
        if json_:
            ndjson(vars(s) for s in snapshot.slots)
            return ndjson([{"at": snapshot.at, "pool": snapshot.pool, "stats": stats}])
        if not snapshot.slots:
            note(f"pool {snapshot.pool} had no slots at {snapshot.at.isoformat()}")
        else:
            table(
                f"pool {snapshot.pool} at {snapshot.at:%Y-%m-%d %H:%M:%S}",
                ["slot", "status", "since", "bot"],
                ((s.name, s.status, s.since, s.bot_id) for s in snapshot.slots),
                wrap={"bot"},
            )
        typer.echo(" ".join(f"{k}={v}" for k, v in stats.items()))

    @app.command("diff")
    @_fail_cleanly
    def diff(
        t1: Annotated[str, typer.Argument(help="ISO timestamp")],
        t2: Annotated[str, typer.Argument(help="ISO timestamp, not in the future")],
        json_: JsonOption = False,
        replayed: Replayed = None,
    ) -> None:
        """What changed per slot between two instants."""
        start, end = _past(t1), _past(t2)
        changes = models(replayed).diff(start, end)
        if not changes:
            return note("nothing changed between those instants")
        if json_:
            return ndjson(vars(c) for c in changes)
        return table(
            f"changes {start:%Y-%m-%d %H:%M:%S} -> {end:%Y-%m-%d %H:%M:%S} UTC",
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
            wrap={"bot before", "bot after"},
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
            ndjson([record])
            count += 1
        if not count:
            note("no events match: the bundle is empty")

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
            f"{result.path}; use LEDGER_DATABASE_URL=sqlite:///{Path(result.path).resolve()}"
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
    def listing(context: typer.Context, json_: JsonOption = False) -> None:
        """List the parked events: consumer, position, topic, error, attempts, when."""
        if context.invoked_subcommand is not None:
            return
        entries = caught_up(get_context().read_models, warn=False).parked()
        if not entries:
            return note("no parked events")
        if json_:
            return ndjson(e._asdict() for e in entries)
        return table(
            "parked events",
            ["position", "consumer", "topic", "error", "attempts", "parked at"],
            ((e.position, e.consumer, e.topic, e.error, e.attempts, e.parked_at) for e in entries),
            wrap={"topic", "error"},
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
