"""Argument parsing, result types and bundle parsing: no database."""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import UTC, datetime, timedelta, timezone
from uuid import uuid4

import pytest

from ledger.domain import SlotStatus
from ledger.errors import BadInput
from projections.bundle import parse
from projections.inputs import check_event_type, check_window, parse_instant, parse_until
from projections.jsonable import encode, jsonable
from projections.models.records import Interval, Lag, ParkedStatus, PoolStats, Progress
from projections.stores.postgres import _check_prefix

T0 = datetime(2025, 12, 17, 22, 0, tzinfo=UTC)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2025-12-17T22:00:00Z", T0),
        ("2025-12-17 23:00+01:00", T0),
        ("2025-12-17T22:00", T0),  # naive: UTC
        (" 2025-12-17T22:00:00.000000+00:00 ", T0),
    ],
)
def test_parse_instant(text: str, expected: datetime) -> None:
    parsed = parse_instant(text)
    assert parsed == expected and parsed.tzinfo == UTC


@pytest.mark.parametrize("text", ["yesterday", "", "2025-13-01", "12:00"])
def test_unparseable_instants_are_bad_input(text: str) -> None:
    with pytest.raises(BadInput, match="cannot parse timestamp"):
        parse_instant(text)


def test_until_is_a_position_or_an_instant() -> None:
    assert parse_until("1234") == 1234
    assert parse_until("2025-12-17T22:00:00Z") == T0
    with pytest.raises(BadInput):
        parse_until("-5")


def test_event_types_and_windows_are_checked() -> None:
    assert check_event_type("SlotFailed") == "SlotFailed"
    with pytest.raises(BadInput, match=r"known types: .*SlotFailed"):
        check_event_type("slotfailed")
    later = T0 + timedelta(hours=1)
    assert check_window(T0, later) == (T0, later)
    naive = datetime(2025, 12, 17, 22, 0)
    assert check_window(naive, None) == (T0, None)
    with pytest.raises(BadInput, match="after it ends"):
        check_window(later, T0)
    assert check_window(T0.astimezone(timezone(timedelta(hours=2))), None)[0] == T0


def test_pool_stats_keep_the_seeds_shape() -> None:
    stats = PoolStats.count([SlotStatus.IDLE, SlotStatus.BUSY, SlotStatus.IDLE], 10)
    assert stats.as_dict() == {
        "total": 3,
        "idle": 2,
        "deploying": 0,
        "busy": 1,
        "error": 0,
        "maxSize": 10,
    }


def test_lag_progress_and_interval_arithmetic() -> None:
    assert Lag(head=10, position=7, seconds=1.0).behind == 3
    assert Lag(head=3, position=7, seconds=None).behind == 0
    assert Progress(events=500, total=1000, seconds=0.5).rate == 1000
    assert Progress(events=0, total=0, seconds=0).rate == 0
    open_ = Interval(uuid4(), 1, SlotStatus.IDLE, T0, None, None, None)
    assert open_.seconds(T0 + timedelta(seconds=90)) == 90
    closed = open_._replace(to_ts=T0 + timedelta(seconds=5), to_position=2)
    assert closed.seconds(T0 + timedelta(days=1)) == 5


def _record(position: int, **changes: object) -> str:
    record = {
        "position": position,
        "originator_id": str(uuid4()),
        "originator_version": 1,
        "topic": "ledger.domain:Slot.SlotProvisioned",
        "type": "SlotProvisioned",
        "state": {},
    }
    return json.dumps(record | changes)


def test_bundle_lines_are_checked() -> None:
    bundle = parse([_record(5), "", _record(2)])
    assert [r["position"] for r in bundle.records] == [2, 5]
    with pytest.raises(BadInput, match="line 1 is not a bundle record"):
        parse(["{not json"])
    with pytest.raises(BadInput, match="line 2 is not a bundle record"):
        parse([_record(1), _record(2, originator_id="nope")])
    with pytest.raises(BadInput, match="repeats position 1"):
        parse([_record(1), _record(1)])
    with pytest.raises(BadInput, match="no events"):
        parse(["", "  "])


def test_encode() -> None:
    slot_id = uuid4()
    assert json.dumps({"at": T0, "id": slot_id}, default=encode) == json.dumps(
        {"at": T0.isoformat(), "id": str(slot_id)}
    )
    with pytest.raises(TypeError):
        encode(object())


def test_jsonable_makes_nested_records_json_ready() -> None:
    """The CLI's tables and NDJSON: enum values, dataclasses, tuples; the rest as is."""
    slot_id = uuid4()
    stats = PoolStats.count([SlotStatus.IDLE, SlotStatus.BUSY], max_size=4)
    plain = jsonable({"stats": stats, "ids": (slot_id,), "status": ParkedStatus.PARKED})
    assert plain == {"stats": asdict(stats), "ids": [str(slot_id)], "status": "parked"}
    assert type(plain["status"]) is str
    marker = object()
    assert jsonable([marker, None, 1.5]) == [marker, None, 1.5]


def test_postgres_prefixes_keep_every_name_within_63_characters() -> None:
    _check_prefix("rm_")
    with pytest.raises(BadInput, match="too long"):
        _check_prefix("read_models_")
    with pytest.raises(BadInput, match="lowercase"):
        _check_prefix("RM")
