"""Hostile text in every text field of the domain: refused with a ``BadInput`` that names
the field and changes nothing, or kept exactly as sent (free text may hold right-to-left
text, emoji and, in reasons, tab and newline). Each field is driven through the command
that takes it, so a call site that forgets its check fails here."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any
from uuid import uuid4

import httpx
import pytest

from ledger import domain
from ledger.adapters.coolify import CoolifyClient, CoolifyError
from ledger.adapters.coolify.client import MAX_MESSAGE
from ledger.domain import (
    REASON_RULE,
    Pool,
    QueueEntry,
    Slot,
    SlotStatus,
    TextRule,
    check_text,
    fit_text,
)
from ledger.errors import BadInput
from tests.hostile import HOSTILE

AT = datetime(2025, 12, 17, 22, 30, tzinfo=UTC)
META: dict[str, Any] = {"at": AT, "actor": "worker", "correlation_id": "c-1"}


FREE_TEXT_OK = {"rtl", "emoji", "tab_newline"}
ONE_LINE_OK = {"rtl", "emoji"}


def new_slot(**changes: Any) -> Slot:
    fields: dict[str, Any] = {
        "slot_id": uuid4(),
        "pool": "default",
        "name": "pool-meet-001",
        "platform": "meet",
        "coolify_uuid": "app-1",
        "at": AT,
        "actor": "operator",
        "correlation_id": "c-0",
    }
    return Slot.provision(**(fields | changes))


def in_status(status: SlotStatus) -> Slot:
    slot = new_slot()
    if status is not SlotStatus.IDLE:
        slot.acquire("bot-1", **META)
    if status is SlotStatus.ERROR:
        slot.fail("broken", **META)
    return slot


def new_pool(**changes: Any) -> Pool:
    fields: dict[str, Any] = {
        "name": "default",
        "prefix": "pool",
        "max_size": 5,
        "at": AT,
        "correlation_id": "c",
    }
    return Pool.create(**(fields | changes))


def enqueue(**changes: Any) -> QueueEntry:
    fields: dict[str, Any] = {
        "bot_id": "b1",
        "pool": "default",
        "platform": None,
        "priority": 0,
        "timeout_s": 300,
        "config": {},
        "at": AT,
        "actor": "api",
        "correlation_id": "c",
    }
    return QueueEntry.enqueue(**(fields | changes))


Write = Callable[[str], object]
"""Puts one text into one field through the command that takes it; returns what was
stored there (the event's field), so intact storage can be checked too."""


def _last(aggregate: Slot | Pool | QueueEntry, name: str) -> object:
    return getattr(aggregate.pending_events[-1], name)


def _on_slot(status: SlotStatus, command: Callable[[Slot, str], None], name: str) -> Write:
    def write(text: str) -> object:
        slot = in_status(status)
        before = len(slot.pending_events)
        try:
            command(slot, text)
        except BadInput:
            assert len(slot.pending_events) == before, "a refused command emitted an event"
            raise
        return _last(slot, name)

    return write


def _created(make: Callable[[str], Slot | Pool | QueueEntry], name: str) -> Write:
    return lambda text: _last(make(text), name)


FIELDS: dict[str, tuple[Write, set[str]]] = {
    "reason (fail)": (
        _on_slot(SlotStatus.BUSY, lambda s, t: s.fail(t, **META), "reason"),
        FREE_TEXT_OK,
    ),
    "reason (recovery_failed)": (
        _on_slot(SlotStatus.ERROR, lambda s, t: s.recovery_failed(t, **META), "reason"),
        FREE_TEXT_OK,
    ),
    "reason (retire)": (
        _on_slot(SlotStatus.IDLE, lambda s, t: s.retire(t, **META), "reason"),
        FREE_TEXT_OK,
    ),
    "reason (refuse_heartbeat)": (
        _on_slot(SlotStatus.BUSY, lambda s, t: s.refuse_heartbeat("bot-2", t, **META), "reason"),
        FREE_TEXT_OK,
    ),
    "reason (queue expire)": (lambda t: _expire(t), FREE_TEXT_OK),
    "reason (queue cancel)": (lambda t: _cancel(t), FREE_TEXT_OK),
    "reason_code": (
        _on_slot(SlotStatus.BUSY, lambda s, t: s.fail("r", reason_code=t, **META), "reason_code"),
        set(),
    ),
    "bot_id (acquire)": (
        _on_slot(SlotStatus.IDLE, lambda s, t: s.acquire(t, **META), "bot_id"),
        set(),
    ),
    "bot_id (release)": (
        _on_slot(SlotStatus.BUSY, lambda s, t: s.release(t, **META), "bot_id"),
        set(),
    ),
    "bot_id (heartbeat)": (
        _on_slot(SlotStatus.DEPLOYING, lambda s, t: s.heartbeat(t, **META), "bot_id"),
        set(),
    ),
    "bot_id (refuse_heartbeat)": (
        _on_slot(SlotStatus.BUSY, lambda s, t: s.refuse_heartbeat(t, "r", **META), "bot_id"),
        set(),
    ),
    "bot_id (enqueue)": (_created(lambda t: enqueue(bot_id=t), "bot_id"), set()),
    "actor": (
        _on_slot(SlotStatus.IDLE, lambda s, t: s.acquire("b", **(META | {"actor": t})), "actor"),
        set(),
    ),
    "correlation_id": (
        _on_slot(
            SlotStatus.IDLE,
            lambda s, t: s.acquire("b", **(META | {"correlation_id": t})),
            "correlation_id",
        ),
        set(),
    ),
    "correlation_id (enqueue)": (
        _created(lambda t: enqueue(correlation_id=t), "correlation_id"),
        set(),
    ),
    "platform (provision)": (_created(lambda t: new_slot(platform=t), "platform"), set()),
    "platform (admit)": (lambda t: new_pool().admit(uuid4(), t, **META), set()),
    "platform (enqueue)": (_created(lambda t: enqueue(platform=t), "platform"), set()),
    "pool (provision)": (_created(lambda t: new_slot(pool=t), "pool"), set()),
    "pool (enqueue)": (_created(lambda t: enqueue(pool=t), "pool"), set()),
    "pool (create)": (_created(lambda t: new_pool(name=t), "name"), set()),
    "prefix": (_created(lambda t: new_pool(prefix=t), "prefix"), set()),
    "name": (_created(lambda t: new_slot(name=t), "name"), set()),
    "coolify_uuid (provision)": (
        _created(lambda t: new_slot(coolify_uuid=t), "coolify_uuid"),
        set(),
    ),
    "coolify_uuid (app_created)": (
        _on_slot(SlotStatus.DEPLOYING, lambda s, t: s.app_created(t, **META), "coolify_uuid"),
        set(),
    ),
    "deployment_uuid": (
        _on_slot(SlotStatus.DEPLOYING, lambda s, t: s.mark_deploying(t, **META), "deployment_uuid"),
        set(),
    ),
    "config": (lambda t: enqueue(config={t: "v"}).config, set()),
    "config.KEY": (lambda t: enqueue(config={"KEY": t}).config["KEY"], ONE_LINE_OK),
}


def _expire(text: str) -> object:
    entry = enqueue()
    entry.expire(text, **META)
    return _last(entry, "reason")


def _cancel(text: str) -> object:
    entry = enqueue()
    entry.cancel(text, **META)
    return _last(entry, "reason")


def _field_name(label: str) -> str:
    return label.split(" (")[0]


@pytest.mark.parametrize("value_name", list(HOSTILE))
@pytest.mark.parametrize("label", list(FIELDS))
def test_hostile_text_is_refused_naming_the_field_or_kept_intact(
    label: str, value_name: str
) -> None:
    write, legal = FIELDS[label]
    value = HOSTILE[value_name]
    field = _field_name(label)
    if value_name in legal:
        assert write(value) == value
        return
    with pytest.raises(BadInput) as refused:
        write(value)
    assert refused.value.field == field
    assert refused.value.detail.startswith(field + " ")
    assert len(refused.value.detail) < 300, "the error must not echo a long value"


@pytest.mark.parametrize(
    ("value", "problem"),
    [
        ("a\x00", "U+0000 at character 2"),
        ("a\ud800", "lone surrogate U+D800 at character 2"),
        ("x" * 1001, "1001 characters long; at most 1000"),
        ("   ", "must not be blank"),
        ("\r\n", "U+000D at character 1"),
    ],
)
def test_the_message_says_what_and_where(value: str, problem: str) -> None:
    with pytest.raises(BadInput, match=re.escape(problem)):
        check_text(value, REASON_RULE, field="reason")


def test_a_reason_is_stored_as_sent_not_trimmed() -> None:
    """No silent repair: what the caller sent is what it reads back."""
    slot = in_status(SlotStatus.BUSY)
    slot.fail("  spaced out \n", **META)
    assert slot.last_error == "  spaced out \n"


def test_config_values_are_never_shown_in_errors() -> None:
    secret = "hunter2\x00"
    with pytest.raises(BadInput) as refused:
        enqueue(config={"TOKEN": secret})
    assert "hunter2" not in refused.value.detail
    assert refused.value.field == "config.TOKEN"


def test_an_empty_config_value_is_legal() -> None:
    assert enqueue(config={"EMPTY": ""}).config == {"EMPTY": ""}


RULES = [v for v in vars(domain).values() if isinstance(v, TextRule)]


@pytest.mark.parametrize("rule", RULES, ids=[r.what for r in RULES])
def test_the_documented_pattern_agrees_with_the_check(rule: TextRule) -> None:
    """The HTTP schema states each rule as one pattern: it must accept exactly what the
    domain accepts (within the length), or clients and fuzzers are misled. Lone
    surrogates aside: no valid Unicode text holds one, and a pattern that named them
    would refuse every emoji in a UTF-16 regex engine (JavaScript's)."""
    samples = [*HOSTILE.values(), "", " ", "ok", "bot-1", "a\nb", "MEETING_URL", "policy:x"]
    for sample in samples:
        if len(sample) > rule.max_len or sample == HOSTILE["surrogate"]:
            continue
        documented = re.fullmatch(rule.pattern, sample) is not None
        assert documented == (rule.problem(sample) is None), (rule.what, sample)


def test_upstream_text_is_made_fit_for_a_reason_visibly() -> None:
    fitted = fit_text("bad\x00\x1b[0m" + "y" * 2000 + "\ud800", 100)
    assert len(fitted) == 100 and fitted.endswith("\u2026")
    assert check_text(fitted, REASON_RULE, field="reason") == fitted
    assert fit_text("short", 100) == "short"


def test_coolify_messages_are_fitted_where_they_enter() -> None:
    """A reason the ledger words from a Coolify error (deploy failures, recovery) must
    pass the domain's checks, whatever Coolify answered."""
    answer = httpx.Response(500, json={"message": "x\x00" * 5000})
    transport = httpx.MockTransport(lambda request: answer)
    client = CoolifyClient("http://coolify/api/v1", "t", max_retries=0, transport=transport)
    with client, pytest.raises(CoolifyError) as raised:
        client.get_application("app-1")
    error = raised.value
    assert len(error.message) == MAX_MESSAGE and "\x00" not in error.message
    slot = in_status(SlotStatus.BUSY)
    slot.fail(f"deploy failed: {error.detail}", **META)
    assert slot.status is SlotStatus.ERROR
