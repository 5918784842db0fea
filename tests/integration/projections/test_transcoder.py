"""The event store's transcoder on the real stores: a log written with the library's
``JSONTranscoder`` (every log before this one) reads with ours, and a log ours writes
reads with the library's: the same aggregates by replay and from snapshots, a v1 event
upcast, every stored state re-encoded to the same bytes, and the same read models."""

from __future__ import annotations

import json
from collections.abc import Iterator
from uuid import UUID

import pytest
from eventsourcing.persistence import JSONTranscoder, StoredEvent
from eventsourcing.utils import get_topic

from ledger.adapters.transcoding import MsgspecTranscoder
from ledger.application import SlotLedger
from ledger.bootstrap import eventsourcing_env
from ledger.domain import Slot
from ledger.settings import load_settings
from tests.integration.aggregates import assert_same_state, replay
from tests.integration.projections.contract import Store
from tests.integration.test_stored_topics import write_every_kind_of_event

LIBRARY, OURS = JSONTranscoder, MsgspecTranscoder


@pytest.fixture
def store(database_url: str) -> Iterator[Store]:
    made = Store(database_url)
    yield made
    made.close()


def ledger_with(store: Store, transcoder: type[JSONTranscoder]) -> SlotLedger:
    """A ledger on the store whose mapper uses ``transcoder``."""
    settings = load_settings(database_url=store.url)
    env = eventsourcing_env(settings.store, settings) | {"TRANSCODER_TOPIC": get_topic(transcoder)}
    ledger = SlotLedger(env, pool_name=settings.pool_name)
    store.made.append(ledger)
    return ledger


def append_v1_failure(ledger: SlotLedger, slot_id: UUID) -> None:
    """A ``SlotFailed`` as slotledger 0.0 stored it: no ``reason_code``, no class_version."""
    version = ledger.get_slot(slot_id).version + 1
    state = {
        "timestamp": {"_type_": "datetime_iso", "_data_": "2025-01-02T03:04:05.678901+00:00"},
        "actor": "worker",
        "correlation_id": "old",
        "bot_id": None,
        "reason": "written by slotledger 0.0",
    }
    ledger.recorder.insert_events(
        [StoredEvent(slot_id, version, get_topic(Slot.SlotFailed), json.dumps(state).encode())]
    )


@pytest.mark.parametrize(
    ("writer", "reader"), [(LIBRARY, OURS), (OURS, LIBRARY)], ids=["library-wrote", "ours-wrote"]
)
def test_a_log_reads_the_same_with_either_transcoder(
    store: Store, writer: type[JSONTranscoder], reader: type[JSONTranscoder]
) -> None:
    written = ledger_with(store, writer)
    aggregates = write_every_kind_of_event(written)
    recovered = aggregates[1]  # failed, then recovered: idle, so a v1 failure may follow
    append_v1_failure(written, recovered)
    written_models = store.models(written)
    written_models.catch_up()
    rows = written_models.dump()

    read = ledger_with(store, reader)
    assert type(read.mapper.transcoder) is reader
    assert read.snapshots is not None and read.snapshots.get(aggregates[0])
    for aggregate_id in aggregates:
        assert_same_state(replay(read, aggregate_id), replay(written, aggregate_id))
        assert_same_state(read.repository.get(aggregate_id), written.repository.get(aggregate_id))
    [failed] = [e for e in read.events.get(recovered) if e.originator_version > 1][-1:]
    assert isinstance(failed, Slot.SlotFailed)
    assert (failed.reason_code, failed.reason) == ("unspecified", "written by slotledger 0.0")

    stored = read.recorder.select_notifications(0, 10_000)
    assert len(stored) > 10 and stored[-1].topic == get_topic(Slot.SlotFailed)
    for s in stored[:-1]:  # the last is the v1 event, re-encoded as v2
        assert read.mapper.to_stored_event(read.mapper.to_domain_event(s)).state == s.state

    read_models = store.models(read)
    assert read_models.rebuild() == len(stored)
    assert read_models.parked() == []
    assert read_models.dump() == rows
