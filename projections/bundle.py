"""Incident bundles: the events around a slot, bot or time window as NDJSON, and their
import into a fresh local SQLite ledger where the ledger and every read-side query work.

A bundle holds the matching events plus, for every aggregate they belong to, all of its
earlier events up to the last match, so each aggregate can be rebuilt from version 1 and
all of them are cut at the same log position (a consistent state: no bot holds two slots).
Each record carries the stored topic, originator id and version, position and timestamp,
the decoded fields for people (``fields``) and for re-import (``state``: the transcoder's
JSON of the upcast event, so it carries no cipher or compression of the source store).
Import keeps the original log positions.
"""

from __future__ import annotations

import json
from collections import defaultdict
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any, cast
from uuid import UUID

from eventsourcing.domain import DomainEventProtocol
from eventsourcing.persistence import IntegrityError, Mapper, StoredEvent

from ledger.errors import BadInput
from projections.engine.eventlog import WritableLog
from projections.engine.readmodels import ReadModels
from projections.jsonable import jsonable
from projections.stores.sqlite import restore_positions

__all__ = ["Bundle", "Imported", "export", "load", "parse"]

_NOT_FIELDS = frozenset({"originator_id", "originator_version"})


def export(
    models: ReadModels,
    *,
    slot: UUID | str | None = None,
    bot: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
) -> Iterator[dict[str, Any]]:
    """Bundle records in log order; nothing when no event matches."""
    matched = models.audit(slot=slot, bot=bot, since=since, until=until, limit=None)
    if not matched:
        return
    matched_positions = {r.position for r in matched}
    originators = sorted({r.originator_id for r in matched})
    records = list(models.audit_rows(originators, matched[-1].position))
    last_version: dict[UUID, int] = {}
    for r in records:
        last_version[r.originator_id] = max(
            last_version.get(r.originator_id, 0), r.originator_version
        )
    recorder = models.ledger.recorder
    stored = {
        (s.originator_id, s.originator_version): s
        for originator, version in last_version.items()
        for s in recorder.select_events(originator, lte=version)
    }
    portable: Mapper[UUID] = Mapper(transcoder=models.ledger.mapper.transcoder)
    for r in records:
        event = models.ledger.mapper.to_domain_event(
            stored[(r.originator_id, r.originator_version)]
        )
        yield {
            "position": r.position,
            "originator_id": str(r.originator_id),
            "originator_version": r.originator_version,
            "topic": stored[(r.originator_id, r.originator_version)].topic,
            "type": r.type,
            "timestamp": r.occurred_at.isoformat(),
            "matched": r.position in matched_positions,
            "fields": {k: jsonable(v) for k, v in vars(event).items() if k not in _NOT_FIELDS},
            "state": json.loads(portable.to_stored_event(event).state),
        }


@dataclass(frozen=True)
class Imported:
    events: int
    aggregates: int
    path: str
    views_path: str


@dataclass(frozen=True)
class Bundle:
    """A bundle's records by position, and the pool they belong to."""

    records: list[dict[str, Any]]
    pool_name: str


def parse(lines: Iterable[str]) -> Bundle:
    """The records of an NDJSON bundle, checked; BadInput names the line at fault."""
    records = _records(lines)
    return Bundle(records, _pool_name(records))


def load(bundle: Bundle, ledger: WritableLog) -> tuple[int, int]:
    """Save a bundle into a new, empty SQLite ledger with the original originator ids,
    versions and positions; how many events and aggregates."""
    portable: Mapper[UUID] = Mapper(transcoder=ledger.mapper.transcoder)
    events = [(r["position"], _decode(portable, r)) for r in bundle.records]
    streams: dict[UUID, list[DomainEventProtocol[UUID]]] = defaultdict(list)
    for _, event in events:
        streams[event.originator_id].append(event)
    aggregates = [_aggregate(originator, stream) for originator, stream in streams.items()]
    try:
        recordings = ledger.save(*aggregates, *(e for _, e in events))
    except IntegrityError as e:
        raise BadInput(f"the bundle contradicts itself: {e}") from None
    restore_positions(
        ledger.recorder,
        [(r.notification.id, p) for r, (p, _) in zip(recordings, events, strict=True)],
    )
    return len(events), len(aggregates)


def _records(lines: Iterable[str]) -> list[dict[str, Any]]:
    records: dict[int, dict[str, Any]] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
            position = int(record["position"])
            UUID(record["originator_id"])
            int(record["originator_version"])
            str(record["topic"])
            dict(record["state"])
        except (ValueError, KeyError, TypeError) as e:
            raise BadInput(f"bundle line {number} is not a bundle record: {e}") from None
        if position in records:
            raise BadInput(f"bundle line {number} repeats position {position}")
        records[position] = record
    if not records:
        raise BadInput("the bundle holds no events")
    return [records[p] for p in sorted(records)]


def _pool_name(records: list[dict[str, Any]]) -> str:
    pools = [r["state"].get("pool") for r in records if r["type"] == "SlotProvisioned"]
    return next((p for p in pools if isinstance(p, str)), "default")


def _decode(mapper: Mapper[UUID], record: dict[str, Any]) -> DomainEventProtocol[UUID]:
    stored = StoredEvent(
        originator_id=UUID(record["originator_id"]),
        originator_version=int(record["originator_version"]),
        topic=record["topic"],
        state=json.dumps(record["state"]).encode(),
    )
    try:
        return mapper.to_domain_event(stored)
    except Exception as e:
        msg = f"cannot decode the event at position {record['position']}: {e}"
        raise BadInput(msg) from None


def _aggregate(originator: UUID, stream: list[DomainEventProtocol[UUID]]) -> Any:
    """The aggregate the stream leaves behind; the stream must start at version 1."""
    versions = [e.originator_version for e in stream]
    if versions != list(range(1, len(stream) + 1)):
        msg = f"the bundle does not hold every event of {originator} from version 1 on"
        raise BadInput(msg)
    aggregate: Any = None
    for event in stream:
        aggregate = cast(Any, event).mutate(aggregate)
    return aggregate
