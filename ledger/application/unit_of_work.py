"""The unit of work: load, decide, save; after a lost race, decide again.

Every write of the ledger (each command, each policy decision, a batch of group commit
falling back to single commands) goes through :meth:`UnitOfWork.run`. A conflict, the
library's ``IntegrityError`` (another writer saved first) or :class:`LostRace` (a read
that moved on before the decision), re-runs the whole decision against fresh state after
a short jittered pause, a bounded number of times; domain errors from a fresh decision
propagate unchanged.
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, Protocol, TypeVar
from uuid import UUID

from eventsourcing.domain import Aggregate
from eventsourcing.persistence import IntegrityError, Recording

from ledger.errors import ConcurrencyExhausted, SlotLedgerError

__all__ = ["Attempt", "Change", "Done", "LostRace", "Store", "UnitOfWork"]

T = TypeVar("T")


class LostRace(Exception):
    """What a decision read moved on before it could be saved: decide again."""


class Store(Protocol):
    """What the unit of work needs of the application; read on every attempt, so a
    changed ``max_attempts`` or a wrapped ``save`` takes effect at once."""

    max_attempts: int

    def save(self, *objs: Any, **kwargs: Any) -> list[Recording[UUID]]: ...


@dataclass(frozen=True)
class Attempt:
    """The attempt's number: 0 first, more after each lost race."""

    number: int

    @property
    def first(self) -> bool:
        return self.number == 0


@dataclass(frozen=True)
class Change(Generic[T]):
    """A decision: the ``answer`` and the aggregates to save for it (none: nothing to
    write). A ``refusal`` is raised once the aggregates are saved: the refusal itself is
    recorded."""

    answer: T
    aggregates: Sequence[Aggregate] = ()
    refusal: SlotLedgerError | None = None


@dataclass(frozen=True)
class Done(Generic[T]):
    """A saved decision: its answer, and the log position of its last event (0 when it
    wrote nothing)."""

    answer: T
    position: int


class UnitOfWork:
    """The one retry rule for conflicts."""

    PAUSE_S = 0.002
    """The jitter grows by this much per lost race, up to ten times."""
    CONTENDED_S = 1.0
    """How long after a lost race the store counts as contended (:meth:`contended`)."""

    def __init__(self, store: Store) -> None:
        self.store = store
        self._lost_at = float("-inf")

    def contended(self) -> bool:
        """Whether a race was lost here within ``CONTENDED_S``: callers that all want the
        same first choice (the least recently used slot) should spread out at once."""
        return time.monotonic() - self._lost_at < self.CONTENDED_S

    def run(self, what: str, decide: Callable[[Attempt], Change[T]]) -> Done[T]:
        """Decide, save the decision's aggregates in one transaction, answer."""

        def attempt(at: Attempt) -> Done[T]:
            change = decide(at)
            saved = self.store.save(*change.aggregates) if change.aggregates else []
            if change.refusal is not None:
                raise change.refusal
            return Done(change.answer, saved[-1].notification.id if saved else 0)

        return self.retrying(what, attempt)

    def retrying(self, what: str, attempt: Callable[[Attempt], T]) -> T:
        """Run ``attempt`` again after a lost race; ``what`` names it in the error when
        every attempt lost."""
        attempts = self.store.max_attempts
        for number in range(attempts):
            try:
                return attempt(Attempt(number))
            except (IntegrityError, LostRace):
                self._lost_at = time.monotonic()
                time.sleep(random.uniform(0, self.PAUSE_S * min(number + 1, 10)))
        raise ConcurrencyExhausted(f"{what} lost {attempts} races in a row; try again")
