"""The event store's transcoder (``ledger.adapters.transcoding``) against the library's.

It must write exactly what the library's ``JSONTranscoder`` writes (so either reads the
other's log), and read every document the way the library does: every event class and
snapshot of the ledger round-trips with its types, and arbitrary JSON, tagged values,
documents only the ``json`` module takes, and malformed tags all decode to the same value
or fail with the same error.
"""

from __future__ import annotations

import json
import math
from dataclasses import fields
from datetime import UTC, datetime, timedelta, timezone
from decimal import Decimal
from types import UnionType
from typing import Any, Union, get_args, get_origin, get_type_hints
from uuid import UUID, uuid4

import pytest
from eventsourcing.domain import Aggregate
from eventsourcing.persistence import (
    DatetimeAsISO,
    DecimalAsStr,
    JSONTranscoder,
    Mapper,
    Transcoder,
    UUIDAsHex,
)
from hypothesis import given
from hypothesis import strategies as st

from ledger.adapters.transcoding import MsgspecTranscoder
from ledger.application import SlotLedger
from ledger.bootstrap import memory_env
from ledger.domain import Pool, QueueEntry, Slot, pool_id

AT = datetime(2025, 3, 4, 5, 6, 7, 890123, tzinfo=UTC)


def transcoder(kind: type[JSONTranscoder]) -> JSONTranscoder:
    """A transcoder with the transcodings the library's application registers."""
    made = kind()
    for transcoding in (UUIDAsHex(), DecimalAsStr(), DatetimeAsISO()):
        made.register(transcoding)
    return made


OLD, NEW = transcoder(JSONTranscoder), transcoder(MsgspecTranscoder)


def typed(value: Any) -> Any:
    """``value`` with each part's type spelled out, so ``==`` compares types too (NaN
    equal to NaN)."""
    if isinstance(value, dict):
        return dict, [(typed(k), typed(v)) for k, v in value.items()]
    if isinstance(value, list):
        return list, [typed(v) for v in value]
    if isinstance(value, float) and math.isnan(value):
        return float, "nan"
    return type(value), value


def fields_of(obj: object) -> dict[str, Any]:
    """An object's attributes, in name order (a decoded event sets the ids last)."""
    return dict(sorted(vars(obj).items()))


def leaf_event_classes() -> list[type[Any]]:
    """Every concrete event class of the ledger's aggregates."""
    classes = [
        v
        for aggregate in (Slot, Pool, QueueEntry)
        for v in vars(aggregate).values()
        if isinstance(v, type) and issubclass(v, Aggregate.Event)
    ]
    return [c for c in classes if not any(o is not c and issubclass(o, c) for o in classes)]


def sample(hint: Any, *, optional_as_none: bool) -> Any:
    """A value of the type ``hint``, with text that JSON must escape or keep as UTF-8."""
    if get_origin(hint) in (Union, UnionType):
        if optional_as_none and type(None) in get_args(hint):
            return None
        (hint,) = (a for a in get_args(hint) if a is not type(None))
    if get_origin(hint) is dict:
        return {"MEETING_URL": 'https://é.example/☃?a=1&b="2"', "EMPTY": ""}
    values: dict[Any, Any] = {
        str: 'tëxt "quoted" \\ back\tslash ☃ \U0001f600',
        int: 7,
        datetime: AT,
        UUID: uuid4(),
    }
    return values[hint]


def sample_event(cls: type[Any], *, optional_as_none: bool) -> Any:
    hints = get_type_hints(cls)
    values = {
        f.name: sample(hints[f.name], optional_as_none=optional_as_none)
        for f in fields(cls)
        if f.name not in ("originator_id", "originator_version", "timestamp")
    }
    return cls(originator_id=uuid4(), originator_version=3, timestamp=AT, **values)


EVENTS = [
    pytest.param(cls, none, id=f"{cls.__qualname__}{'-none' if none else ''}")
    for cls in leaf_event_classes()
    for none in (False, True)
]


def test_the_ledger_is_wired_to_it() -> None:
    transcoder = SlotLedger(memory_env()).mapper.transcoder
    assert type(transcoder) is MsgspecTranscoder
    assert set(transcoder.names) == {"uuid_hex", "decimal_str", "datetime_iso"}


@pytest.mark.parametrize(("cls", "optional_as_none"), EVENTS)
def test_every_event_class_is_written_as_the_library_writes_it_and_read_back_typed(
    cls: type[Any], optional_as_none: bool
) -> None:
    event = sample_event(cls, optional_as_none=optional_as_none)
    stored = Mapper[UUID](transcoder=NEW).to_stored_event(event)
    assert stored == Mapper[UUID](transcoder=OLD).to_stored_event(event)
    for reader in (NEW, OLD):
        decoded = Mapper[UUID](transcoder=reader).to_domain_event(stored)
        assert type(decoded) is cls
        assert typed(fields_of(decoded)) == typed(fields_of(event))


def test_every_aggregates_snapshot_round_trips_with_its_types() -> None:
    ledger = SlotLedger(memory_env())
    slot_id = ledger.provision("meet").slot.id
    ledger.acquire("bot-1")
    entry_id = ledger.enqueue("bot-2").id
    for aggregate_id in (slot_id, pool_id(ledger.pool_name), entry_id):
        aggregate: Any = ledger.repository.get(aggregate_id)
        snapshot = type(aggregate).Snapshot.take(aggregate)
        stored = Mapper[UUID](transcoder=NEW).to_stored_event(snapshot)
        assert stored == Mapper[UUID](transcoder=OLD).to_stored_event(snapshot)
        decoded: Any = Mapper[UUID](transcoder=NEW).to_domain_event(stored)
        restored = decoded.mutate(None)
        assert typed(fields_of(restored)) == typed(fields_of(aggregate))


def test_a_v1_slot_failed_event_is_upcast() -> None:
    """Written before ``reason_code`` existed: no class_version in the state."""
    v1 = {
        "timestamp": {"_type_": "datetime_iso", "_data_": AT.isoformat()},
        "actor": "worker",
        "correlation_id": "old",
        "bot_id": None,
        "reason": "written by slotledger 0.0",
    }
    stored = Mapper[UUID](transcoder=OLD).to_stored_event(
        sample_event(Slot.SlotFailed, optional_as_none=True)
    )
    old = type(stored)(stored.originator_id, 4, stored.topic, json.dumps(v1).encode())
    event = Mapper[UUID](transcoder=NEW).to_domain_event(old)
    assert isinstance(event, Slot.SlotFailed)
    assert (event.reason_code, event.reason, event.timestamp) == (
        "unspecified",
        "written by slotledger 0.0",
        AT,
    )


def decoded(transcoder: Transcoder, document: bytes) -> Any:
    """What a transcoder makes of a document: its value, or the type of its error."""
    try:
        return typed(transcoder.decode(document))
    except Exception as e:
        return type(e)


TAGGED_VALUES = st.one_of(
    st.datetimes(timezones=st.sampled_from([UTC, timezone(timedelta(hours=-3, minutes=-30))])),
    st.uuids(),
    st.decimals(allow_nan=False),
)
JSON_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats()
    | st.text()
    | TAGGED_VALUES
    | st.builds(
        lambda n, d: {"_type_": n, "_data_": d}, st.sampled_from(["x", "uuid_hex"]), st.text()
    ),
    lambda children: (
        st.lists(children, max_size=4)
        | st.dictionaries(
            st.sampled_from(["_type_", "_data_", "a", "é"]) | st.text(), children, max_size=4
        )
    ),
    max_leaves=12,
)


@given(JSON_VALUES)
def test_any_value_reads_back_as_the_library_reads_it(value: Any) -> None:
    """Registered types tagged; look-alike tags (unknown names, bad data, extra keys);
    big integers and NaN, which only the ``json`` module parses."""
    document = OLD.encode(value)
    assert NEW.encode(value) == document
    assert decoded(NEW, document) == decoded(OLD, document)


@pytest.mark.parametrize(
    "document",
    [
        b'{"a": NaN, "b": -Infinity}',
        b'{"big": 123456789012345678901234567890}',
        b'"\\ud800 lone surrogate"',
        b'[{"_type_": "datetime_iso", "_data_": "2025-01-01T00:00:00+00:00"}]',
        b'{"_type_": "datetime_iso", "_data_": "2025-01-01T00:00:00+00:00"}',
        b'{"_type_": "nope", "_data_": 1}',
        b'{"_type_": ["unhashable"], "_data_": 1}',
        b'{"_type_": "uuid_hex", "_data_": {"_type_": "uuid_hex", "_data_": "00"}}',
        b'{"_type_": "uuid_hex", "_data_": 12}',
        b'{"_type_": "decimal_str", "_data_": "1.10", "more": 1}',
        b'{"a": 1, "a": 2}',
        b"\xff not utf-8",
        b"",
        b"[1, 2,]",
        b"  7  ",
    ],
)
def test_edge_documents_decode_like_the_library(document: bytes) -> None:
    assert decoded(NEW, document) == decoded(OLD, document)


def test_decimals_keep_their_digits() -> None:
    document = OLD.encode({"price": Decimal("1.10")})
    assert typed(NEW.decode(document)) == typed({"price": Decimal("1.10")})
