"""Parsing and checking of what callers pass to the read side (CLI and Python API alike).

Anything that cannot be acted on raises :class:`ledger.errors.BadInput` with a message
naming the value, so the CLI can exit 2 with one line.
"""

from __future__ import annotations

from datetime import UTC, datetime

from ledger.errors import BadInput
from projections.engine.fold import EVENT_TYPES

__all__ = ["check_event_type", "check_window", "parse_instant", "parse_until", "utc"]


def utc(at: datetime) -> datetime:
    """Instants are UTC; a naive datetime is taken to be UTC already."""
    return at.replace(tzinfo=UTC) if at.tzinfo is None else at.astimezone(UTC)


def parse_instant(text: str) -> datetime:
    """An ISO 8601 timestamp (``2025-12-17T22:00:00Z``, ``2025-12-17 22:00+01:00`` ...)."""
    try:
        return utc(datetime.fromisoformat(text.strip()))
    except ValueError:
        msg = f"cannot parse timestamp {text!r}: use ISO 8601, e.g. 2025-12-17T22:00:00Z"
        raise BadInput(msg) from None


def parse_until(text: str) -> datetime | int:
    """A log position (digits) or an ISO timestamp."""
    stripped = text.strip()
    return int(stripped) if stripped.isdigit() else parse_instant(stripped)


def check_event_type(name: str) -> str:
    if name not in EVENT_TYPES:
        known = ", ".join(sorted(EVENT_TYPES))
        msg = f"unknown event type {name[:64]!a}; known types: {known}"  # short, escaped
        raise BadInput(msg, field="type")
    return name


def check_window(
    since: datetime | None, until: datetime | None
) -> tuple[datetime | None, datetime | None]:
    since, until = (None if t is None else utc(t) for t in (since, until))
    if since is not None and until is not None and since > until:
        raise BadInput(
            f"the window starts ({since.isoformat()}) after it ends ({until.isoformat()})"
        )
    return since, until
