"""The lock-free write path on PostgreSQL (``ledger.adapters.postgres``).

Saves take no table lock and commit side by side, so positions can commit out of order;
readers must still never pass an event that commits later under a lower position. These
tests check that from the outside: the library's non-interleaving case, many times; a
writer stalled in the middle of its transaction (also across the 2^32 boundary of the
in-flight register); a reader tailing concurrent writers with a tracking recorder
(every event once, in order); the notification after the commit, and after a failure;
and a database made by the previous version (events table lock, the library's default
on ``notification_id``) migrated in place.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import replace
from datetime import UTC, datetime
from typing import Any, ClassVar

import psycopg
import pytest
from eventsourcing.persistence import (
    ApplicationRecorder,
    InfrastructureFactory,
    IntegrityError,
    StoredEvent,
    Tracking,
    TrackingRecorder,
)
from eventsourcing.postgres import PostgresApplicationRecorder
from eventsourcing.tests.persistence import NonInterleavingNotificationIDsBaseCase
from eventsourcing.utils import Environment
from psycopg.sql import SQL

from ledger.adapters.postgres import PostgresLedgerFactory, PostgresLedgerRecorder
from ledger.application.ports import INDEX_ROWS, SlotRow
from ledger.bootstrap import build_ledger, eventsourcing_env
from ledger.domain import SlotStatus
from ledger.pglocks import DDL_LOCK_KEY
from ledger.settings import load_settings
from tests.blackbox import wait_for

NAME = "WritePath"


def _env(url: str) -> dict[str, str]:
    settings = load_settings(database_url=url)
    return eventsourcing_env(settings.store, settings)


@pytest.fixture
def factories() -> Iterator[list[InfrastructureFactory[Any]]]:
    made: list[InfrastructureFactory[Any]] = []
    yield made
    for factory in made:
        factory.close()


@pytest.fixture
def make(
    postgres_url: str, factories: list[InfrastructureFactory[Any]]
) -> Callable[[], PostgresLedgerFactory]:
    def factory() -> PostgresLedgerFactory:
        made = PostgresLedgerFactory(Environment(NAME, _env(postgres_url)))
        factories.append(made)
        return made

    return factory


@pytest.fixture
def recorder(make: Callable[[], PostgresLedgerFactory]) -> PostgresLedgerRecorder:
    made = make().application_recorder()
    assert isinstance(made, PostgresLedgerRecorder)
    return made


def _events(originator: uuid.UUID, versions: Sequence[int]) -> list[StoredEvent]:
    return [StoredEvent(originator, v, "write-path-test", b"{}") for v in versions]


def _slot_row(slot_id: uuid.UUID, version: int) -> SlotRow:
    return SlotRow(
        slot_id=slot_id,
        pool="p",
        name=f"s-{slot_id.hex[:8]}",
        platform="bot",
        coolify_uuid=None,
        status=SlotStatus.IDLE,
        bot_id=None,
        status_since=datetime.now(UTC),
        last_used=None,
        retired=False,
        version=version,
    )


def _ids(recorder: ApplicationRecorder) -> list[int]:
    return [n.id for n in recorder.select_notifications(None, 10_000)]


# --- the library's non-interleaving case ------------------------------------------------


class _LibraryNonInterleaving(NonInterleavingNotificationIDsBaseCase):
    """The library's case, on a recorder our factory builds for the given environment
    (run by the test below, not collected on its own)."""

    __test__ = False
    env: ClassVar[dict[str, str]]
    made: ClassVar[list[InfrastructureFactory[Any]]]

    def create_recorder(self) -> ApplicationRecorder:
        factory = PostgresLedgerFactory(Environment(NAME, self.env))
        self.made.append(factory)
        return factory.application_recorder()


@pytest.mark.parametrize("run", range(20))
def test_the_librarys_non_interleaving_case_passes(
    postgres_url: str, factories: list[InfrastructureFactory[Any]], run: int
) -> None:
    """Two writers of 1,000 events each race: each one's positions are contiguous."""
    _LibraryNonInterleaving.env = _env(postgres_url)
    _LibraryNonInterleaving.made = factories
    _LibraryNonInterleaving("test").debug()


# --- a writer stalled in its transaction ---------------------------------------------------


@contextmanager
def _held(conninfo: str, statement: str, params: Sequence[Any]) -> Iterator[str]:
    """Another session runs ``statement`` and keeps its transaction open (so writers of
    what it touched stall); yields its transaction id."""
    with psycopg.connect(conninfo) as conn:
        conn.execute(statement.encode(), params)
        row = conn.execute("SELECT pg_current_xact_id()::text").fetchone()
        assert row is not None
        yield str(row[0])
        conn.rollback()


def _event_held(conninfo: str, recorder: PostgresLedgerRecorder, originator: uuid.UUID) -> Any:
    """The first event of ``originator`` inserted by another session, uncommitted: a save
    that also writes it stalls at its events, so after allocating its positions."""
    events = f'"{recorder.datastore.schema}"."{NAME.lower()}_events"'
    return _held(
        conninfo,
        f"INSERT INTO {events} (originator_id, originator_version, topic, state, "
        "notification_id) VALUES (%s, 1, 'blocker', '', -1)",
        (originator,),
    )


def _waiter(conninfo: str, xid: str) -> str | None:
    """The transaction id of a session waiting for transaction ``xid``, if any."""
    with psycopg.connect(conninfo, autocommit=True) as conn:
        row = conn.execute(
            "SELECT a.backend_xid::text FROM pg_locks l JOIN pg_stat_activity a USING (pid) "
            "WHERE l.locktype = 'transactionid' AND NOT l.granted "
            "AND l.transactionid = %s::xid8::xid",
            (xid,),
        ).fetchone()
        return None if row is None else str(row[0])


def _waits_on(conninfo: str, xid: str) -> bool:
    return _waiter(conninfo, xid) is not None


@pytest.mark.parametrize("head", [None, 2**32 - 3], ids=["fresh", "across-2^32"])
def test_readers_stop_before_a_writer_still_in_flight(
    postgres_base_url: str, recorder: PostgresLedgerRecorder, head: int | None
) -> None:
    """A writer that allocated positions but has not committed holds every reader back,
    while a later writer commits higher positions; once it commits, readers get both,
    in order. The register keeps positions modulo 2^32, hence the second case."""
    if head is not None:
        with recorder.datastore.get_connection() as conn:
            conn.execute(
                "SELECT setval(pg_get_serial_sequence(%s, 'notification_id'), %s)",
                (f'"{recorder.datastore.schema}"."{NAME.lower()}_events"', head),
            )
    first = recorder.insert_events(_events(uuid.uuid4(), [1]))
    assert first is not None
    before = recorder.max_notification_id()
    assert before == first[-1]
    stalled: list[Sequence[int] | None] = []
    blocked = uuid.uuid4()
    with _event_held(postgres_base_url, recorder, blocked) as holder:
        writer = threading.Thread(
            target=lambda: stalled.append(
                recorder.insert_events([*_events(uuid.uuid4(), [1, 2]), *_events(blocked, [1])])
            )
        )
        writer.start()
        wait_for(lambda: _waits_on(postgres_base_url, holder), what="the writer to stall")
        later = recorder.insert_events(_events(uuid.uuid4(), [1, 2, 3, 4, 5, 6]))
        assert later is not None
        assert recorder.max_notification_id() == before
        assert _ids(recorder) == first
        assert [n.id for n in recorder.select_notifications(None, 100, stop=later[-1])] == first
    writer.join(timeout=30)
    assert stalled and stalled[0] is not None
    assert _ids(recorder) == [*first, *stalled[0], *later]
    assert recorder.max_notification_id() == later[-1]


def test_a_save_that_waited_for_another_comes_after_it_in_the_log(
    postgres_base_url: str, recorder: PostgresLedgerRecorder
) -> None:
    """A bot's slot is released by one save while another save gives the bot a second
    slot: the second waits for the first (the bot is unique in the index) and may then
    commit. Its events must come after the release in the log, as they do in fact, or
    the log would show the bot holding two slots."""
    released, acquired, other = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    held = replace(_slot_row(released, 1), bot_id="b", status=SlotStatus.DEPLOYING)
    recorder.insert_events(_events(released, [1]), **{INDEX_ROWS: [held]})
    recorder.insert_events(_events(acquired, [1]), **{INDEX_ROWS: [_slot_row(acquired, 1)]})
    # The release also writes the first event of an aggregate another session holds,
    # so it stalls at its events, after its index rows.
    saved: dict[str, Sequence[int] | None] = {}

    def save(
        name: str, originator: uuid.UUID, row: SlotRow, *more: StoredEvent
    ) -> threading.Thread:
        def run() -> None:
            saved[name] = recorder.insert_events(
                [*_events(originator, [2]), *more], **{INDEX_ROWS: [row]}
            )

        thread = threading.Thread(target=run)
        thread.start()
        return thread

    with _event_held(postgres_base_url, recorder, other) as holder:
        release = save("release", released, _slot_row(released, 2), *_events(other, [1]))
        releaser = wait_for(lambda: _waiter(postgres_base_url, holder), what="the release to stall")
        acquire = save("acquire", acquired, replace(_slot_row(acquired, 2), bot_id="b"))
        wait_for(lambda: _waits_on(postgres_base_url, releaser), what="the acquire to wait")
    release.join(timeout=30)
    acquire.join(timeout=30)
    first, second = saved["release"], saved["acquire"]
    assert first is not None
    assert second is not None
    assert max(first) < min(second)


# --- tailing concurrent writers ------------------------------------------------------------


def _write(recorder: PostgresLedgerRecorder, saves: int, errors: list[BaseException]) -> None:
    """Saves of one to three events; every fourth repeats a version (a lost race)."""
    try:
        for i in range(saves):
            originator = uuid.uuid4()
            recorder.insert_events(_events(originator, range(1, 2 + i % 3)))
            if i % 4 == 0:
                with pytest.raises(IntegrityError):
                    recorder.insert_events(_events(originator, [1]))
    except BaseException as e:
        errors.append(e)


@pytest.mark.parametrize("run", range(10))
def test_a_tailing_reader_takes_every_event_once_and_in_order(
    make: Callable[[], PostgresLedgerFactory], run: int
) -> None:
    """Writers in threads commit side by side while a reader follows the log the way the
    followers do (after its last position) and records each position with the library's
    tracking recorder, which refuses any position not above the last one."""
    factory = make()
    recorder = factory.application_recorder()
    assert isinstance(recorder, PostgresLedgerRecorder)
    tracking: TrackingRecorder = factory.tracking_recorder()
    errors: list[BaseException] = []
    writers = [threading.Thread(target=_write, args=(recorder, 40, errors)) for _ in range(6)]
    seen: list[int] = []
    done = threading.Event()

    def tail() -> None:
        last = 0
        try:
            while True:
                finished = done.is_set()
                batch = recorder.select_notifications(last, 25, inclusive_of_start=False)
                for n in batch:
                    tracking.insert_tracking(Tracking(NAME, n.id))
                    seen.append(n.id)
                    last = n.id
                if finished and not batch:
                    return
        except BaseException as e:
            errors.append(e)

    reader = threading.Thread(target=tail)
    reader.start()
    for w in writers:
        w.start()
    for w in writers:
        w.join(timeout=120)
    done.set()
    reader.join(timeout=120)
    assert not errors, errors
    assert seen == _ids(recorder)
    assert len(seen) == 6 * sum(1 + i % 3 for i in range(40))
    assert tracking.max_tracking_id(NAME) == seen[-1]


# --- notifications --------------------------------------------------------------------------


@contextmanager
def _listening(
    conninfo: str, recorder: PostgresLedgerRecorder
) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(conninfo, autocommit=True) as conn:
        conn.execute(f'LISTEN "{recorder.channel_name}"')
        yield conn


def _notified(conn: psycopg.Connection[Any]) -> bool:
    return any(True for _ in conn.notifies(timeout=10, stop_after=1))


def test_the_notification_comes_after_the_commit(
    postgres_base_url: str, recorder: PostgresLedgerRecorder
) -> None:
    """A follower woken by the notification reads the event it announces."""
    with _listening(postgres_base_url, recorder) as listener:
        ids = recorder.insert_events(_events(uuid.uuid4(), [1]))
        assert _notified(listener)
        assert _ids(recorder) == ids


def test_a_failed_save_still_wakes_the_readers(
    postgres_base_url: str, recorder: PostgresLedgerRecorder
) -> None:
    """Readers held back by a writer that then fails are told to look again."""
    originator = uuid.uuid4()
    recorder.insert_events(_events(originator, [1]))
    with _listening(postgres_base_url, recorder) as listener:
        with pytest.raises(IntegrityError):
            recorder.insert_events(_events(originator, [1]))
        assert _notified(listener)


def test_a_save_whose_notification_fails_after_the_commit_is_saved(
    recorder: PostgresLedgerRecorder, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The commit went through: the caller gets its positions, not an error (a retry
    would be refused as a conflict although the command took effect)."""
    monkeypatch.setattr(recorder, "_notify", SQL("SELECT 1/0"))
    ids = recorder.insert_events(_events(uuid.uuid4(), [1, 2]))
    assert ids is not None
    assert _ids(recorder) == ids


# --- a database of the previous version -----------------------------------------------------


def test_a_database_of_the_previous_version_opens_migrated(postgres_url: str) -> None:
    """Tables made by the library's own recorder, with events written under its table
    lock, open in place: positions go on after the old ones, old and new read back in
    order, and a writer of the old kind is refused instead of breaking readers."""
    old_env = _env(postgres_url) | {"PERSISTENCE_MODULE": "eventsourcing.postgres"}
    old_factory = InfrastructureFactory.construct(Environment("SlotLedger", old_env))
    old = old_factory.application_recorder()
    assert type(old) is PostgresApplicationRecorder
    assert old.insert_events(_events(uuid.uuid4(), [1, 2, 3])) == [1, 2, 3]
    ledger = build_ledger(load_settings(database_url=postgres_url))
    try:
        recorder = ledger.recorder
        assert isinstance(recorder, PostgresLedgerRecorder)
        with recorder.datastore.get_connection() as conn:
            assert not recorder.needs_migration(conn)
        outcome = ledger.provision("bot")
        assert outcome.position > 3
        positions = _ids(recorder)
        assert positions[:3] == [1, 2, 3]
        assert positions == sorted(positions)
        assert ledger.get_slot(outcome.slot.id).version == outcome.slot.version
        with pytest.raises(IntegrityError):
            old.insert_events(_events(uuid.uuid4(), [1]))
    finally:
        ledger.close()
        old_factory.close()


def test_a_migrated_database_opens_without_the_ddl_lock(
    postgres_url: str, postgres_base_url: str
) -> None:
    """Once in place, opening runs no DDL: it does not wait for the DDL lock."""
    build_ledger(load_settings(database_url=postgres_url)).close()
    opened = threading.Event()

    def open_ledger() -> None:
        build_ledger(load_settings(database_url=postgres_url)).close()
        opened.set()

    with psycopg.connect(postgres_base_url, autocommit=True) as holder:
        holder.execute("SELECT pg_advisory_lock(%s)", (DDL_LOCK_KEY,))
        threading.Thread(target=open_ledger, daemon=True).start()
        assert opened.wait(timeout=60)
